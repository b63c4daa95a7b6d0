import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { VirtualClock } from '../../src/clock';
import { Engine } from '../../src/engine';
import { RecordingFirewall } from '../../src/firewall/recording';
import { decodePacket } from '../../src/packet';
import { Hole, Level, Packet } from '../../src/types';
import { KeepWarm, rehearsalPacket, WARM_WINDOW_MS } from '../../src/warm';

const tick = async () => { for (let i = 0; i < 5; i++) await Promise.resolve(); };

test('the rehearsal packet is a server 229 that the engine answers with one hole, in both modes', () => {
  const p = rehearsalPacket(40000, 1234);
  const r = decodePacket(p);
  assert.ok(r.ok, 'decodes');
  if (!r.ok) return;
  assert.is(r.seg.sport, 21);
  assert.is(r.seg.dport, 40000);
  assert.is(Buffer.from(r.seg.payload).toString('latin1'), '229 Entering Extended Passive Mode (|||50000|)\r\n');
  for (const selective of [false, true]) {
    const e = new Engine({ logger: { log: () => undefined }, selective });
    const d = e.process({ data: p, time: 0 });
    assert.is(d.length, 1, `selective ${selective}`);
    const h = d[0];
    assert.is(h.type, 'hole');
    if (h.type === 'hole') assert.equal([h.hole.src, h.hole.dst, h.hole.port], ['2001:db8::1', '2001:db8::2', 50000]);
  }
});

function setup(intervalMs = 2) {
  const clock = new VirtualClock(1_000_000);
  const fw = new RecordingFirewall();
  const rehearsed: Hole[] = [];
  (fw as RecordingFirewall & { rehearse: (h: Hole) => void }).rehearse = (h) => void rehearsed.push(h);
  const logs: Array<[Level, string]> = [];
  const w = new KeepWarm({ intervalMs, clock, firewall: fw, selective: true, timeoutSec: 2, logger: { log: (l, m) => void logs.push([l, m]) } });
  const seen: Packet[] = [];
  const handle = w.wrap((pkt) => void seen.push(pkt));
  const pkt: Packet = { data: new Uint8Array(0), time: 0 };
  return { clock, fw, rehearsed, logs, w, seen, handle, pkt };
}

test('KeepWarm: rehearses every interval while packets come, then sleeps until the next one', async () => {
  const { clock, fw, rehearsed, logs, w, seen, handle, pkt } = setup();
  assert.is(clock.next(), undefined, 'asleep before the first packet');
  assert.is(handle(pkt), undefined, 'the handler\'s own result');
  assert.is(seen.length, 1);
  assert.is(clock.next(), undefined, 'the timer is armed after the packet\'s turn, not during it');
  await tick();
  clock.advance(clock.now() + 10);
  assert.is(w.rehearsals, 5);
  assert.is(w.opened, 5, 'each rehearsal reached the firewall\'s open');
  assert.is(rehearsed.length, 5);
  assert.equal([rehearsed[0].src, rehearsed[0].dst, rehearsed[0].port], ['2001:db8::1', '2001:db8::2', 50000]);
  assert.equal(fw.ops, [], 'the real firewall saw nothing but rehearse()');
  // one packet every second keeps the window open
  for (let s = 0; s < 5; s++) {
    clock.advance(clock.now() + 1000);
    handle(pkt);
  }
  const during = w.rehearsals;
  assert.ok(during > 2000, `${during} rehearsals in 5 s`);
  // then quiet: rehearsals end one window after the last packet
  clock.advance(clock.now() + WARM_WINDOW_MS + 100);
  const after = w.rehearsals;
  assert.ok(after - during <= WARM_WINDOW_MS / 2 + 2, `${after - during} rehearsals in the last window`);
  assert.is(clock.next(), undefined, 'no timer left: an idle gateway is not woken');
  clock.advance(clock.now() + 60_000);
  assert.is(w.rehearsals, after);
  // the next packet opens the window again
  handle(pkt);
  await tick();
  clock.advance(clock.now() + 4);
  assert.is(w.rehearsals, after + 2);
  w.stop();
  assert.is(clock.next(), undefined, 'stop() cancels the timer');
  handle(pkt);
  await tick();
  assert.is(clock.next(), undefined, 'and no packet restarts it');
  assert.equal(logs, []);
});

test('KeepWarm: a firewall whose rehearse() throws is contained; an interval of 0 is refused', async () => {
  const { clock, fw, w, handle, pkt, logs } = setup(1);
  (fw as RecordingFirewall & { rehearse: (h: Hole) => void }).rehearse = () => {
    throw new Error('boom');
  };
  handle(pkt);
  await tick();
  clock.advance(clock.now() + 3);
  assert.is(w.rehearsals, 3, 'the failure stays inside the private hole manager');
  assert.equal(logs, []);
  w.stop();
  assert.throws(() => new KeepWarm({ intervalMs: 0, clock, firewall: fw, selective: false, timeoutSec: 2, logger: { log: () => undefined } }), /interval/);
});

test.run();
