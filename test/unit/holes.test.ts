import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { VirtualClock } from '../../src/clock';
import { HoleManager, HoleEvent } from '../../src/holes';
import { RecordingFirewall } from '../../src/firewall/recording';
import { HoleSpec, Level, Logger } from '../../src/types';

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

test.run();
