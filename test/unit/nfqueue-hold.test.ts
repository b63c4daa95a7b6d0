/** NFQUEUE's backstop: a handler that never settles still gets its packet released, once. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FakeNetlinkNative, nfqPacketMessage } from '../fuzz/fakes';
import { NfqueueSource, DEFAULT_HOLD_LIMIT_MS } from '../../src/capture/nfqueue';
import { Level } from '../../src/types';

test('a packet whose handler never settles is released after holdLimitMs, exactly once, and logged', async () => {
  assert.is(DEFAULT_HOLD_LIMIT_MS, 5000);
  const k = new FakeNetlinkNative();
  const lines: string[] = [];
  const src = new NfqueueSource({ queue: 3, logger: { log: (l: Level, m: string) => lines.push(`${l}: ${m}`) }, native: k.native, holdLimitMs: 150 });
  await src.open();
  const running = src.run(() => new Promise<void>(() => undefined));
  k.inject(nfqPacketMessage(3, 7, Uint8Array.from([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 1, 10, 198, 18, 2, 10])));
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(k.verdicts, [], 'still held before the limit');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(k.verdicts, [7]);
  assert.ok(lines.some((l) => /^warning: NFQUEUE 3: packet 7 released after 150 ms/.test(l)), lines.join('\n'));
  await src.close();
  await running;
  assert.equal(k.verdicts, [7], 'not released a second time at close');
});

test('selective queueing: the verdict carries the packet mark with the -s bit set or cleared, other bits kept', async () => {
  const ip = Uint8Array.from([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 1, 10, 198, 18, 2, 10]);
  const run = async (seeAllMark: number | undefined, cases: Array<[number, boolean | undefined]>): Promise<Array<number | undefined>> => {
    const k = new FakeNetlinkNative();
    const src = new NfqueueSource({ queue: 3, logger: { log: () => undefined }, native: k.native, seeAllMark });
    await src.open();
    let i = 0;
    const running = src.run((pkt) => {
      pkt.seeAll = cases[i++][1];
    });
    cases.forEach(([mark], id) => k.inject(nfqPacketMessage(3, id, ip, true, mark)));
    await new Promise((r) => setTimeout(r, 50));
    await src.close();
    await running;
    assert.equal(k.verdicts, cases.map((_, id) => id));
    return k.verdictMarks;
  };
  const M = 0x100000;
  assert.equal(await run(M, [[0, true], [0x80000001, true], [0x80100001, false], [M, false], [0x7, undefined]]),
    [M, 0x80100001, 0x80000001, 0, undefined]);
  // without -s the mark is never touched, whatever the engine says
  assert.equal(await run(undefined, [[0x5, true], [0, false]]), [undefined, undefined]);
});

test.run();
