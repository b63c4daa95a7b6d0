/**
 * Load (issue 7):
 *
 * - in process (no root needed): RSS and heap with 10,000 control sessions
 *   tracked by the Engine (handshake plus a USER line each, none closed);
 * - in the lab (root): 80 concurrent transfers through the real daemon with
 *   the default pool (-c 100), 20 each of IPv6 EPSV, IPv6 EPRT, IPv4 PASV,
 *   IPv4 PORT, rate-limited so that they all overlap; every one must arrive
 *   complete.  The daemon's RSS before and after is printed.
 *
 * Without root the lab part prints SKIP with the reason (a failure under CI=true).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as v8 from 'v8';
import * as vm from 'vm';
import { Lab, cleanupPrefix, labCannotRun, preflight, withLab } from './lab';
import { sleep, startDaemon } from '../fuzz/labkit';
import { Engine } from '../../src/engine';
import { TcpFlow } from '../unit/build-packet';

const PREFIX = 'f6load';
const QUEUE = 10022;
const SESSIONS = 10_000;
const CONCURRENT = 80;
const BIG = 384 * 1024;
const RATE = '192k';

const mib = (n: number) => (n / 1048576).toFixed(1);

test(`RSS with ${SESSIONS} tracked control sessions (in process)`, () => {
  const engine = new Engine({ logger: { log: () => undefined } });
  // Build the packets first so that only the engine's state is measured.
  const pkts: Uint8Array[][] = [];
  for (let i = 0; i < SESSIONS; i++) {
    const six = i % 2 === 0;
    const f = new TcpFlow({
      family: six ? 6 : 4,
      client: six ? `fd00:c1::${(i >> 8).toString(16)}:${(i & 0xff).toString(16)}` : `198.18.${4 + (i >> 8)}.${i & 0xff}`,
      server: six ? 'fd00:5e::10' : '198.18.2.10',
      clientPort: 20000 + (i % 40000),
    });
    pkts.push([...f.open(), f.server('220 ready\r\n'), f.client('USER anonymous\r\n')].map((p) => p.data));
  }
  // A real collection before each reading, whatever flags node was started
  // with: otherwise garbage from building the packets counts as engine state.
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as (() => void) | undefined;
  gc?.();
  const before = process.memoryUsage();
  let t = 0;
  for (const ps of pkts) for (const p of ps) engine.process({ data: p, time: ++t });
  gc?.();
  const after = process.memoryUsage();
  // keep the packets alive past the second reading, so that only the engine's
  // state is in the difference
  assert.is(pkts.length, SESSIONS);
  const st = engine.stats();
  assert.is(st.sessions, SESSIONS, 'all sessions tracked');
  const drss = after.rss - before.rss;
  const dheap = after.heapUsed - before.heapUsed;
  console.log(`rss: ${SESSIONS} sessions: RSS ${mib(before.rss)} -> ${mib(after.rss)} MiB (+${mib(drss)} MiB, ${Math.round(drss / SESSIONS)} B/session), ` +
    `heap +${mib(dheap)} MiB (${Math.round(dheap / SESSIONS)} B/session)${gc ? '' : ' (no --expose-gc: upper bound)'}`);
  // A bound that catches a leak of buffers per session (a 512-byte line buffer
  // or held segments kept per idle session would show as > 1 KiB each).
  assert.ok(dheap / SESSIONS < 2048, `heap per session ${Math.round(dheap / SESSIONS)} B`);
});

interface Kind { family: 4 | 6; mode: 'epsv' | 'eprt' | 'pasv' | 'port' }
const KINDS: Kind[] = [
  { family: 6, mode: 'epsv' },
  { family: 6, mode: 'eprt' },
  { family: 4, mode: 'pasv' },
  { family: 4, mode: 'port' },
];

function curlArgv(lab: Lab, k: Kind): string[] {
  const host = k.family === 6 ? `[${lab.addr.server[6]}]` : lab.addr.server[4];
  const a = ['curl', '-sS', '--connect-timeout', '10', '--max-time', '40', '--limit-rate', RATE, '-o', '/dev/null', '-w', '%{size_download} %{time_starttransfer} %{time_total}'];
  if (k.mode === 'eprt' || k.mode === 'port') a.push('-P', '-');
  if (k.mode === 'pasv') a.push('--disable-epsv');
  if (k.mode === 'port') a.push('--disable-eprt');
  return [...a, `ftp://${host}/${lab.files.big.name}`];
}

function rssOf(pid: number | undefined): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

const why = preflight();
if (why !== null) {
  labCannotRun('test/lab/load.test (lab part)', why);
} else {
  test(`${CONCURRENT} concurrent transfers (IPv6/IPv4, passive/active) with the default pool`, async () => {
    await withLab({ prefix: PREFIX, policy: 'deny', queueNum: QUEUE, bigSize: BIG }, async (lab) => {
      const srv = await lab.startServer('vsftpd');
      const d = await startDaemon(lab, QUEUE);
      const rss0 = rssOf(d.proc.pid);
      const t0 = Date.now();
      const jobs = Array.from({ length: CONCURRENT }, (_, i) => {
        const k = KINDS[i % KINDS.length];
        const start = Date.now();
        return lab.runAsync(lab.ns.client, curlArgv(lab, k), { timeoutMs: 60000 }).then((r) => ({ k, r, start, end: Date.now() }));
      });
      // sample the holes in use while the transfers run
      let peak = 0;
      let done = false;
      const sampler = (async () => {
        while (!done) {
          const s = lab.run(lab.ns.gateway, ['nft', 'list', 'ruleset']).stdout;
          peak = Math.max(peak, (s.match(/ timeout 2s/g) ?? []).length);
          await sleep(200);
        }
      })();
      const results = await Promise.all(jobs);
      done = true;
      await sampler;
      const secs = (Date.now() - t0) / 1000;
      const rss1 = rssOf(d.proc.pid);
      await srv.stop();
      const bad = results.filter(({ r }) => r.status !== 0 || Number(r.stdout.split(' ')[0]) !== BIG);
      // overlap: how many transfers were running at the same moment
      const firstEnd = Math.min(...results.map((x) => x.end));
      const lastStart = Math.max(...results.map((x) => x.start));
      const byKind = KINDS.map((k) => `${k.mode}/IPv${k.family} ${results.filter((x) => x.k === k && x.r.status === 0).length}`).join(', ');
      console.log(`load: ${CONCURRENT - bad.length}/${CONCURRENT} transfers of ${BIG} bytes ok in ${secs.toFixed(1)} s (${byKind}); ` +
        `all started before the first ended: ${lastStart < firstEnd}; peak set elements seen ${peak}; ` +
        `daemon RSS ${mib(rss0)} -> ${mib(rss1)} MiB; pool exhausted lines: ${(d.log().match(/pool exhausted/g) ?? []).length}`);
      for (const { k, r } of bad.slice(0, 5)) console.log(`  failed ${k.mode}/IPv${k.family}: exit ${r.status} ${r.stdout} ${r.stderr.trim()}`);
      assert.is(bad.length, 0, `${bad.length} transfers failed`);
      assert.ok(lastStart < firstEnd, 'the transfers overlapped');
      assert.not.ok(/pool exhausted/.test(d.log()), 'the default pool was enough');
      assert.not.ok(d.exited(), 'the daemon is still running');
      d.proc.kill('SIGTERM');
      const ex = await d.waitExit(5000);
      assert.is(ex?.code, 0, 'clean exit on SIGTERM');
    });
  });

  test.after(() => {
    cleanupPrefix(PREFIX);
  });
}
test.run();
