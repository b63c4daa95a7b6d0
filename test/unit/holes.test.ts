import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { VirtualClock } from '../../src/clock';
import { HoleManager, HoleEvent } from '../../src/holes';
import { RecordingFirewall } from '../../src/firewall/recording';
import { Engine } from '../../src/engine';
import { ControlProxy } from '../../src/proxy';
import { Firewall, Hole, HoleSpec, Level, Logger } from '../../src/types';
import { TcpFlow } from './build-packet';

function setup(opts: { count?: number; fw?: RecordingFirewall; timeoutSec?: number } = {}) {
  const clock = new VirtualClock(1000);
  const logs: Array<[Level, string]> = [];
  const logger: Logger = { log: (l, m) => logs.push([l, m]) };
  const events: HoleEvent[] = [];
  const fw = opts.fw ?? new RecordingFirewall();
  const hm = new HoleManager({
    firewall: fw, clock, logger, base: 64000, count: opts.count ?? 3, timeoutSec: opts.timeoutSec ?? 2,
    onEvent: (e) => events.push(e),
  });
  return { clock, logs, events, fw, hm };
}

const spec = (port: number): HoleSpec => ({ family: 6, src: 'fd00:c1::2', dst: 'fd00:5e::2', port });
const flush = async () => { for (let i = 0; i < 20; i++) await Promise.resolve(); };

test('lowest free rule first, closes after -t, numbers reused only after release', async () => {
  const { clock, hm, events, fw } = setup();
  const a = await hm.request(1, '229', spec(40001));
  const b = await hm.request(1, '229', spec(40002));
  assert.is(a?.rule, 64000);
  assert.is(b?.rule, 64001);
  clock.advance(2500);
  const c = await hm.request(2, 'PORT', spec(40003));
  assert.is(c?.rule, 64002);
  clock.advance(3000); // a and b close at 3000
  await flush();
  assert.equal(fw.openRules(), [64002]);
  const d = await hm.request(2, 'PORT', spec(40004));
  assert.is(d?.rule, 64000, 'released number reused, lowest first');
  assert.equal(events.filter((e) => e.type === 'close').map((e) => [e.hole.rule, e.time]), [[64000, 3000], [64001, 3000]]);
});

test('random opens, renewals and closes: always the lowest free number, pendingFor counts each session\'s holes', async () => {
  const COUNT = 12; // about as many as -t holds at this rate: full now and then
  const { clock, hm } = setup({ count: COUNT });
  let full = 0;
  let seed = 99;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  for (let i = 0; i < 3000; i++) {
    const held = new Set(hm.holes().map((h) => h.rule));
    let lowest: number | undefined;
    for (let n = 64000; n < 64000 + COUNT; n++) if (!held.has(n)) { lowest = n; break; }
    if (lowest === undefined) full++;
    const session = 1 + rnd(12);
    const port = 40000 + rnd(30);
    const renewal = hm.holes().find((h) => h.session === session && h.port === port);
    const h = await hm.request(session, '229', spec(port));
    if (renewal !== undefined) assert.is(h?.rule, renewal.rule, `renewal #${i}`);
    else assert.is(h?.rule ?? undefined, lowest, `open #${i}: held ${[...held].sort().join(',')}`);
    for (let s2 = 1; s2 <= 12; s2++) assert.is(hm.pendingFor(s2), hm.holes().filter((x) => x.session === s2).length);
    clock.advance(clock.now() + (rnd(4) === 0 ? 700 : 40)); // advance() takes a time, not a step
    await flush();
  }
  assert.ok(full > 50 && hm.stats().closed > 2000, `pool full ${full} times, ${hm.stats().closed} closed`);
});

test('pool exhausted: no hole, one log line per burst, recovers after release', async () => {
  const { clock, hm, logs } = setup({ count: 2 });
  await hm.request(1, '227', spec(41000));
  await hm.request(1, '227', spec(41001));
  assert.is(await hm.request(1, '227', spec(41002)), null);
  assert.is(await hm.request(2, '227', spec(41003)), null);
  assert.is(logs.filter(([, m]) => m.includes('pool exhausted')).length, 1);
  assert.is(hm.stats().exhausted, 2);
  clock.advance(3000);
  await flush();
  assert.ok(await hm.request(3, '227', spec(41004)));
  await hm.request(3, '227', spec(41005));
  assert.is(await hm.request(3, '227', spec(41006)), null);
  assert.is(logs.filter(([, m]) => m.includes('pool exhausted')).length, 2, 'a new burst logs again');
});

test('a failing firewall call is logged and the request still resolves', async () => {
  const { hm, logs } = setup({ fw: new RecordingFirewall({ failOpen: true }) });
  const h = await hm.request(1, 'EPRT', spec(42000));
  assert.ok(h);
  assert.ok(logs.some(([l, m]) => l === 'err' && m.includes('open failed')));
});

test('a hanging firewall call is given up after the bounded wait', async () => {
  const { hm, clock, logs } = setup({ fw: new RecordingFirewall({ hangOpen: true }) });
  let done = false;
  const p = hm.request(1, 'EPRT', spec(42000)).then(() => { done = true; });
  await flush();
  assert.is(done, false);
  clock.advance(clock.now() + 1000);
  await p;
  assert.is(done, true);
  assert.ok(logs.some(([, m]) => m.includes('no answer within 1000 ms')));
});

test('a backend bounded by itself (settlesWithinMs) gets no timer of the manager; a longer own bound is still cut short', async () => {
  const waits: number[] = [];
  const clock = new VirtualClock(1000);
  const counting = { now: () => clock.now(), setTimer: (ms: number, fn: () => void) => { waits.push(ms); return clock.setTimer(ms, fn); } };
  const logs: string[] = [];
  const make = (fw: RecordingFirewall) =>
    new HoleManager({ firewall: fw, clock: counting, logger: { log: (_l, m) => logs.push(m) }, base: 1, count: 4, timeoutSec: 2 });
  const quick = Object.assign(new RecordingFirewall(), { settlesWithinMs: 1000 });
  await make(quick).request(1, '229', spec(40001));
  assert.equal(waits, [2000], 'only the -t timer of the hole');
  waits.length = 0;
  const slow = Object.assign(new RecordingFirewall({ hangOpen: true }), { settlesWithinMs: 5000 });
  const p = make(slow).request(1, '229', spec(40002));
  await flush();
  assert.equal(waits, [2000, 1000], 'its own 5 s is longer than the 1 s the packet may wait');
  clock.advance(clock.now() + 1000);
  assert.ok(await p);
  assert.ok(logs.some((m) => m.includes('no answer within 1000 ms')));
});

/** A RecordingFirewall whose openNow answers at once, or fails at once, or defers to open(). */
function nowFirewall(mode: 'now' | 'throw' | 'later'): RecordingFirewall & { openNow: NonNullable<Firewall['openNow']> } {
  const fw = new RecordingFirewall();
  return Object.assign(fw, {
    openNow: (h: Hole, t: number): Promise<void> | undefined => {
      if (mode === 'throw') throw new Error('set is gone');
      const p = fw.open(h, t);
      return mode === 'later' ? p : undefined;
    },
  });
}

test('requestNow: a hole the backend opened at once is returned as it is, no promise, no timer but -t', () => {
  const waits: number[] = [];
  const clock = new VirtualClock(1000);
  const counting = { now: () => clock.now(), setTimer: (ms: number, fn: () => void) => { waits.push(ms); return clock.setTimer(ms, fn); } };
  const fw = nowFirewall('now');
  const hm = new HoleManager({ firewall: fw, clock: counting, logger: { log: () => undefined }, base: 1, count: 2, timeoutSec: 2 });
  const h = hm.requestNow(1, '229', spec(40001));
  assert.not.instance(h, Promise);
  assert.is((h as Hole).rule, 1);
  assert.equal(fw.openRules(), [1]);
  assert.equal(waits, [2000]);
  // renewing takes the same way
  const again = hm.requestNow(1, '229', spec(40001));
  assert.is((again as Hole).rule, 1);
  // pool exhausted: null, at once
  hm.requestNow(2, '229', spec(40002));
  assert.is(hm.requestNow(3, '229', spec(40003)), null);
});

test('requestNow: a backend that fails at once is logged and counted, never thrown; one that answers later gives a promise', async () => {
  const logs: string[] = [];
  const mk = (fw: RecordingFirewall) =>
    new HoleManager({ firewall: fw, clock: new VirtualClock(1000), logger: { log: (l, m) => logs.push(`${l}: ${m}`) }, base: 1, count: 4, timeoutSec: 2 });
  const failing = mk(nowFirewall('throw'));
  const h = failing.requestNow(1, '229', spec(40001));
  assert.is((h as Hole).rule, 1, 'the hole is kept and closed at its time, as for any failed open');
  assert.is(failing.stats().failed, 1);
  assert.ok(logs.some((l) => l.startsWith('err: ') && l.includes('open failed: set is gone')), logs.join('\n'));
  const later = mk(nowFirewall('later')).requestNow(1, '229', spec(40002));
  assert.instance(later, Promise);
  assert.is((await later)?.rule, 1);
  // request() keeps its promise for every backend
  assert.instance(mk(nowFirewall('now')).request(1, '229', spec(40003)), Promise);
});

test('ControlProxy: the verdict needs no promise when the 229\'s hole opened at once; it waits for one that did not', async () => {
  const proxyWith = (fw: RecordingFirewall) => {
    const hm = new HoleManager({ firewall: fw, clock: new VirtualClock(1000), logger: { log: () => undefined }, base: 1, count: 4, timeoutSec: 2 });
    const engine = new Engine({ logger: { log: () => undefined }, pendingFor: (s) => hm.pendingFor(s) });
    return { proxy: new ControlProxy(engine, hm), fw };
  };
  const run = (proxy: ControlProxy): Array<Promise<void> | undefined> => {
    const f = new TcpFlow({ family: 6, client: 'fd00:c1::10', server: 'fd00:5e::10', clientPort: 40000 });
    return [...f.open(), f.server('220 hi\r\n'), f.client('EPSV\r\n'), f.server('229 Entering Extended Passive Mode (|||40123|)\r\n')]
      .map((p) => proxy.handle({ data: p.data, time: 1000 }));
  };
  const now = proxyWith(nowFirewall('now'));
  const r = run(now.proxy);
  assert.ok(r.every((x) => x === undefined), 'every packet handled in its own turn');
  assert.equal(now.fw.openRules(), [1]);
  assert.is(now.proxy.counters.holesRequested, 1);
  const later = proxyWith(nowFirewall('later'));
  const r2 = run(later.proxy);
  assert.instance(r2[r2.length - 1], Promise, 'the 229 waits for its hole');
  await r2[r2.length - 1];
  assert.equal(later.fw.openRules(), [1]);
});

test('pending holes per session are counted', async () => {
  const { hm, clock } = setup();
  await hm.request(7, '229', spec(40001));
  await hm.request(7, '229', spec(40002));
  assert.is(hm.pendingFor(7), 2);
  assert.is(hm.pendingFor(8), 0);
  clock.advance(5000);
  await flush();
  assert.is(hm.pendingFor(7), 0);
});

test('the same announcement again renews its hole instead of taking a new rule', async () => {
  const { hm, clock, fw } = setup();
  const a = await hm.request(1, 'PORT', spec(40001));
  clock.advance(2500);
  const b = await hm.request(1, 'PORT', spec(40001));
  assert.is(b?.rule, a?.rule);
  clock.advance(3500);
  await flush();
  assert.equal(fw.openRules(), [64000], 'still open: renewed at 2500, closes at 4500');
  clock.advance(4600);
  await flush();
  assert.equal(fw.openRules(), []);
});

test('closeAll closes everything at once', async () => {
  const { hm, fw } = setup();
  await hm.request(1, '229', spec(40001));
  await hm.request(2, '229', spec(40002));
  await hm.closeAll();
  assert.equal(fw.openRules(), []);
  assert.is(hm.stats().inUse, 0);
});

test('one timer for all holes: each closes at its own -t, in order, renewals and releases included', async () => {
  const { clock, hm, events } = setup({ count: 10 });
  const timers = (): number => (clock as unknown as { timers: Array<{ cancelled: boolean }> }).timers.filter((t) => !t.cancelled).length;
  await hm.request(1, '229', spec(40001)); // t=1000, closes 3000
  clock.advance(1300);
  await hm.request(2, '229', spec(40002)); // closes 3300
  clock.advance(1700);
  await hm.request(3, '229', spec(40003)); // closes 3700
  await hm.request(1, '229', spec(40001)); // renewed at 1700: closes 3700, not 3000
  assert.is(timers(), 1, 'one timer, whatever the number of holes');
  const closes = async (to: number): Promise<number[][]> => {
    clock.advance(to);
    await flush();
    return events.filter((e) => e.type === 'close').map((e) => [e.hole.session, e.time]);
  };
  assert.equal(await closes(3000), [], 'the renewed hole does not close at its first time');
  assert.equal(await closes(3300), [[2, 3300]]);
  assert.equal(await closes(3700), [[2, 3300], [3, 3700], [1, 3700]]);
  assert.is(timers(), 0, 'no timer once every hole is closed');
});

test('one timer for all holes: a wall clock that went back does not keep holes open longer', async () => {
  // timers run on elapsed time (libuv's monotonic clock), now() is the wall clock
  const v = new VirtualClock(1000);
  let offset = 0;
  const clock = { now: () => v.now() + offset, setTimer: (ms: number, fn: () => void) => v.setTimer(ms, fn) };
  const fw = new RecordingFirewall();
  const hm = new HoleManager({ firewall: fw, clock, logger: { log: () => undefined }, base: 64000, count: 3, timeoutSec: 2 });
  await hm.request(1, '229', spec(40001)); // wall 1000: closes at wall 3000
  await hm.request(1, '229', spec(40002));
  v.advance(1500);
  offset = -3_600_000; // the wall clock goes back an hour
  await hm.request(2, '229', spec(40003)); // armed in the past, by the wall clock
  v.advance(3000);
  await flush();
  assert.equal(fw.openRules(), [64002], 'the first two closed on time, not an hour later');
  v.advance(3600);
  await flush();
  assert.equal(fw.openRules(), [], 'and the third at its -t');
});

test('closeAll leaves no expiry timer behind', async () => {
  const { clock, hm } = setup();
  await hm.request(1, '229', spec(40001));
  await hm.closeAll();
  assert.is(clock.next(), undefined);
});

test.run();
