/**
 * The short fuzz run that is part of `npm test` (a fixed seed, a fraction of
 * a second per target), the self-check that every property rejects its
 * deliberately broken variant, and the fault cases that need no root:
 *
 * - a firewall call that hangs or fails: the real NfqueueSource (over a fake
 *   kernel) still gives the held packet its verdict, after HoleManager's
 *   bounded wait (callTimeoutMs, default 1000 ms) or at once;
 * - the queue socket lost: run() rejects, no busy loop;
 * - a full pool logs "pool exhausted" once per burst and recovers;
 * - mutated traces through the real bin/ftp6proxy-replay exit 0 in bounded time.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fc from 'fast-check';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { TARGETS, arbMutatedTrace } from '../fuzz/targets';
import { FakeNetlinkNative, nfqPacketMessage } from '../fuzz/fakes';
import { NfqueueSource } from '../../src/capture/nfqueue';
import { Engine } from '../../src/engine';
import { HoleManager, DEFAULT_CALL_TIMEOUT_MS } from '../../src/holes';
import { RecordingFirewall } from '../../src/firewall/recording';
import { ControlProxy } from '../../src/proxy';
import { RealClock, VirtualClock } from '../../src/clock';
import { FtpProxyError, type Level, type Logger } from '../../src/types';
import { TcpFlow } from './build-packet';

const SEED = 20240607;
const root = path.resolve(__dirname, '..', '..', '..');

function collect(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, log: (level: Level, msg: string) => lines.push(`${level}: ${msg}`) };
}

for (const t of TARGETS) {
  test(`fuzz ${t.name}: the property holds (short run, seed ${SEED})`, async () => {
    const slow = t.name.startsWith('release');
    const o = await t.real({ seed: SEED, numRuns: slow ? 15 : 300, timeLimitMs: 1500 });
    assert.ok(!o.failed, o.detail);
    assert.ok(o.numRuns >= 10, `only ${o.numRuns} runs`);
  });
  test(`fuzz ${t.name}: the property rejects a deliberately broken variant`, async () => {
    const o = await t.broken({ seed: SEED, numRuns: 2000, timeLimitMs: 5000 });
    assert.ok(o.failed, `the broken variant of ${t.name} passed ${o.numRuns} runs: the property cannot fail`);
  });
}

/** A session through the real NfqueueSource with a fake kernel; returns when the PORT packet got its verdict. */
async function heldPacket(fw: RecordingFirewall, callTimeoutMs?: number): Promise<{ ms: number; log: string[]; verdicts: number[] }> {
  const k = new FakeNetlinkNative();
  const log = collect();
  const clock = new RealClock();
  const holes = new HoleManager({ firewall: fw, clock, logger: log, base: 100, count: 4, timeoutSec: 1, ...(callTimeoutMs === undefined ? {} : { callTimeoutMs }) });
  const engine = new Engine({ logger: log, pendingFor: (s) => holes.pendingFor(s) });
  const proxy = new ControlProxy(engine, holes);
  const src = new NfqueueSource({ queue: 3, logger: log, native: k.native });
  await src.open();
  const running = src.run(proxy.handle);
  const f = new TcpFlow({ family: 4, client: '198.18.1.10', server: '198.18.2.10' });
  const pkts = [...f.open(), f.client('PORT 198,18,1,10,156,64\r\n')];
  pkts.forEach((p, i) => k.inject(nfqPacketMessage(3, i + 1, p.data)));
  const t0 = Date.now();
  while (k.verdicts.length < pkts.length && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 5));
  const ms = Date.now() - t0;
  await src.close();
  await running;
  await holes.closeAll();
  return { ms, log: log.lines, verdicts: [...k.verdicts] };
}

test('a hanging firewall call: the held packet gets its verdict after the bounded wait (default 1000 ms), logged', async () => {
  assert.is(DEFAULT_CALL_TIMEOUT_MS, 1000);
  const r = await heldPacket(new RecordingFirewall({ hangOpen: true }));
  assert.equal(r.verdicts.sort((a, b) => a - b), [1, 2, 3, 4], 'every packet released exactly once');
  assert.ok(r.ms >= 950 && r.ms < 2000, `released after ${r.ms} ms`);
  assert.ok(r.log.some((l) => /^err: .*open failed: no answer within 1000 ms/.test(l)), r.log.join('\n'));
});

test('a failing firewall call: the held packet is released at once, logged, and the next packets flow', async () => {
  const r = await heldPacket(new RecordingFirewall({ failOpen: true }), 1000);
  assert.equal(r.verdicts.sort((a, b) => a - b), [1, 2, 3, 4]);
  assert.ok(r.ms < 500, `released after ${r.ms} ms`);
  assert.ok(r.log.some((l) => /^err: .*open failed: recording firewall told to fail/.test(l)), r.log.join('\n'));
});

test('the queue socket lost: run() rejects with nfqueue-lost (fatal), without spinning', async () => {
  const k = new FakeNetlinkNative();
  const log = collect();
  const src = new NfqueueSource({ queue: 3, logger: log, native: k.native });
  await src.open();
  const running = src.run(() => undefined);
  k.failWith = 'EBADF';
  k.kick();
  let err: unknown;
  await Promise.race([running.catch((e: unknown) => { err = e; }), new Promise((r) => setTimeout(r, 2000))]);
  assert.instance(err, FtpProxyError, 'run() rejected');
  assert.is((err as FtpProxyError).code, 'nfqueue-lost');
  assert.ok((err as FtpProxyError).fatal);
  const calls = k.recvCalls;
  await new Promise((r) => setTimeout(r, 100));
  assert.is(k.recvCalls, calls, 'no more reads after the loss (no busy loop)');
});

test('a full pool (-c 3, 20 PORTs): 3 holes, "pool exhausted" once per burst, every packet handled, recovery after the holes close', async () => {
  const clock = new VirtualClock(0);
  const log = collect();
  const fw = new RecordingFirewall();
  const holes = new HoleManager({ firewall: fw, clock, logger: log, base: 100, count: 3, timeoutSec: 2 });
  const engine = new Engine({ logger: log, pendingFor: (s) => holes.pendingFor(s) });
  const proxy = new ControlProxy(engine, holes);
  const burst = async (first: number, n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const f = new TcpFlow({ family: 4, client: '198.18.1.10', server: '198.18.2.10', clientPort: 30000 + first + i });
      for (const p of [...f.open(), f.client(`PORT 198,18,1,10,${100 + ((first + i) >> 8)},${(first + i) & 0xff}\r\n`)]) {
        await proxy.handle({ data: p.data, time: clock.now() });
      }
    }
  };
  await burst(0, 20);
  const exhausted = () => log.lines.filter((l) => l.includes('pool exhausted')).length;
  assert.is(holes.stats().opened, 3);
  assert.is(holes.stats().exhausted, 17);
  assert.is(exhausted(), 1, 'one log line for the burst');
  assert.is(proxy.counters.packets, 80, 'every packet was handled');
  clock.advance(2000);
  for (let i = 0; i < 20; i++) await Promise.resolve();
  assert.is(holes.stats().inUse, 0, 'holes closed after -t');
  await burst(100, 1);
  assert.is(holes.stats().opened, 4, 'the next transfer gets a hole');
  await burst(200, 5);
  assert.is(exhausted(), 2, 'a new burst logs once more');
});

test('mutated traces through the real bin/ftp6proxy-replay: exit 0, no hang (spawnSync, 20 s timeout)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'f6fuzz-'));
  try {
    const traces = fc.sample(arbMutatedTrace, { seed: SEED, numRuns: 4 });
    traces.forEach((t, i) => {
      const f = path.join(dir, `m${i}.pcap`);
      fs.writeFileSync(f, t);
      const r = spawnSync(process.execPath, [path.join(root, 'bin', 'ftp6proxy-replay'), '-m', 'nftables', f], { encoding: 'utf8', timeout: 20000 });
      assert.is(r.signal, null, `trace ${i} killed (hang?)`);
      assert.is(r.status, 0, `trace ${i}: ${r.stderr}${r.stdout.slice(-300)}`);
      assert.match(r.stdout, /# \d+ packets, \d+ holes/);
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
