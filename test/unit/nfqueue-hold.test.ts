/** NFQUEUE's backstop: a handler that never settles still gets its packet released, once. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FakeNetlinkNative, nfqPacketMessage } from '../fuzz/fakes';
import { NfqueueSource, DEFAULT_HOLD_LIMIT_MS } from '../../src/capture/nfqueue';
import { VirtualClock } from '../../src/clock';
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

test('one backstop timer serves every held packet: not cancelled per packet, armed again only while packets are held', async () => {
  const clock = new VirtualClock(0);
  const waits: number[] = [];
  const counting = { now: () => clock.now(), setTimer: (ms: number, fn: () => void) => { waits.push(ms); return clock.setTimer(ms, fn); } };
  const k = new FakeNetlinkNative();
  const lines: string[] = [];
  const src = new NfqueueSource({ queue: 3, logger: { log: (l: Level, m: string) => lines.push(`${l}: ${m}`) }, native: k.native, clock: counting, holdLimitMs: 150 });
  await src.open();
  waits.length = 0; // whatever open() armed for its own requests
  let settle: () => void = () => undefined;
  const running = src.run((pkt) => (pkt.data[19] === 2 ? new Promise<void>((r) => (settle = r)) : new Promise<void>(() => undefined)));
  const ip = (last: number): Uint8Array => Uint8Array.from([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 1, 10, 198, 18, 2, last]);
  const tick = async (): Promise<void> => { for (let i = 0; i < 10; i++) await Promise.resolve(); };
  const io = (): Promise<void> => new Promise((r) => setTimeout(r, 5)); // the fake delivers on a later turn
  k.inject(nfqPacketMessage(3, 1, ip(1))); // never settles
  k.inject(nfqPacketMessage(3, 2, ip(2))); // settles in time
  await io();
  assert.equal(waits, [150], 'one timer for both');
  clock.advance(10);
  settle();
  await tick();
  assert.equal(k.verdicts, [2]);
  clock.advance(110); // VirtualClock.advance takes the time to move to
  k.inject(nfqPacketMessage(3, 3, ip(3))); // never settles, held from t=110
  await io();
  assert.equal(waits, [150], 'still the same timer');
  clock.advance(150);
  assert.equal(k.verdicts, [2, 1], 'packet 1 at its limit');
  assert.equal(waits, [150, 110], 'armed again for packet 3 only');
  clock.advance(259);
  assert.equal(k.verdicts, [2, 1]);
  clock.advance(260);
  assert.equal(k.verdicts, [2, 1, 3]);
  assert.equal(lines.filter((l) => l.includes('released after 150 ms')).length, 2);
  clock.advance(10000);
  assert.equal(waits, [150, 110], 'nothing held: no timer');
  await src.close();
  await running;
  assert.equal(k.verdicts, [2, 1, 3]);
});

test('the backstop survives the wall clock going back: a held packet is not kept for the jump', async () => {
  const timers = new VirtualClock(0);
  let wall = 1_000_000;
  const clock = { now: () => wall, setTimer: (ms: number, fn: () => void) => timers.setTimer(ms, fn) };
  const k = new FakeNetlinkNative();
  const src = new NfqueueSource({ queue: 3, logger: { log: () => undefined }, native: k.native, clock, holdLimitMs: 150 });
  await src.open();
  const running = src.run(() => new Promise<void>(() => undefined));
  const ip = Uint8Array.from([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 1, 10, 198, 18, 2, 10]);
  k.inject(nfqPacketMessage(3, 1, ip));
  await new Promise((r) => setTimeout(r, 5));
  wall -= 3_600_000; // an hour back
  timers.advance(150);
  assert.equal(k.verdicts, [1], 'released at its time, not an hour later');
  await src.close();
  await running;
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
