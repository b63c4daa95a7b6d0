import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decodePacket, TCP_ACK, TCP_PSH, TCP_SYN } from '../../src/packet';
import { formatAddr } from '../../src/addr';
import { buildTcp, checksum, type TcpSpec } from './build-packet';

const text = (b: Uint8Array) => Buffer.from(b).toString('latin1');

const base4: TcpSpec = { family: 4, src: '198.18.1.2', dst: '198.18.2.2', sport: 40012, dport: 21, seq: 0xfffffff0, ack: 77, payload: 'PORT 198,18,1,2,195,80\r\n' };
const base6: TcpSpec = { family: 6, src: 'fd00:1::2', dst: 'fd00:2::2', sport: 21, dport: 40012, seq: 1, payload: '229 Entering Extended Passive Mode (|||50000|)\r\n' };

test('IPv4 TCP decodes fields, payload is a view', () => {
  const p = buildTcp(base4);
  const r = decodePacket(p);
  assert.ok(r.ok);
  if (!r.ok) return;
  const s = r.seg;
  assert.is(s.family, 4);
  assert.is(formatAddr(4, s.src), '198.18.1.2');
  assert.is(formatAddr(4, s.dst), '198.18.2.2');
  assert.is(s.sport, 40012);
  assert.is(s.dport, 21);
  assert.is(s.seq, 0xfffffff0);
  assert.is(s.ack, 77);
  assert.is(s.flags, TCP_PSH | TCP_ACK);
  assert.is(text(s.payload), 'PORT 198,18,1,2,195,80\r\n');
  assert.is(s.payload.buffer, p.buffer);
  // the builder's checksums are right: summing over a header with its checksum gives 0
  assert.is(checksum(p.subarray(0, 20)), 0);
});

test('IPv4 with options, TCP options, and link padding after total length', () => {
  const p = buildTcp({ ...base4, tcpOptions: 12 });
  // add 8 bytes of IP options (NOP) by rebuilding the header
  const withOpts = new Uint8Array(p.length + 8 + 6);
  withOpts.set(p.subarray(0, 20), 0);
  withOpts[0] = 0x47;
  withOpts.fill(1, 20, 28);
  withOpts.set(p.subarray(20), 28);
  const total = p.length + 8;
  withOpts[2] = total >> 8;
  withOpts[3] = total & 0xff;
  withOpts.fill(0xee, total); // padding that must not become payload
  const r = decodePacket(withOpts);
  assert.ok(r.ok);
  if (r.ok) assert.is(text(r.seg.payload), 'PORT 198,18,1,2,195,80\r\n');
});

test('IPv6 extension header chains', () => {
  const chains: number[][] = [[], [0], [0, 60], [0, 43, 60], [51], [0, 51, 60], [60, 43, 51, 60]];
  for (const types of chains) {
    const p = buildTcp({ ...base6, ext: types.map((type) => ({ type })) });
    const r = decodePacket(p);
    assert.ok(r.ok, `chain ${types}`);
    if (!r.ok) continue;
    assert.is(r.seg.family, 6);
    assert.is(formatAddr(6, r.seg.src), 'fd00:1::2');
    assert.is(r.seg.sport, 21);
    assert.is(text(r.seg.payload), '229 Entering Extended Passive Mode (|||50000|)\r\n', `chain ${types}`);
  }
  // longer headers: 24-byte destination options, 24-byte AH
  const r = decodePacket(buildTcp({ ...base6, ext: [{ type: 60, length: 24 }, { type: 51, length: 24 }] }));
  assert.ok(r.ok && text(r.seg.payload).startsWith('229 '));
});

test('fragments: first fragment decoded, non-first skipped', () => {
  const rows: [TcpSpec, boolean][] = [
    [{ ...base4, fragment: { offset: 0, more: true } }, true],
    [{ ...base4, fragment: { offset: 0, more: false } }, true],
    [{ ...base4, fragment: { offset: 185, more: true } }, false],
    [{ ...base4, fragment: { offset: 1, more: false } }, false],
    [{ ...base6, fragment: { offset: 0, more: true } }, true],
    [{ ...base6, ext: [{ type: 0 }], fragment: { offset: 0, more: true } }, true],
    [{ ...base6, fragment: { offset: 100, more: true } }, false],
    [{ ...base6, ext: [{ type: 0 }, { type: 60 }], fragment: { offset: 1 } }, false],
  ];
  for (const [spec, ok] of rows) {
    const r = decodePacket(buildTcp(spec));
    assert.is(r.ok, ok, JSON.stringify(spec.fragment));
    if (!r.ok) {
      assert.is(r.skip, true);
      assert.is(r.reason, 'non-first fragment');
    }
  }
});

test('not TCP is skipped, not an error', () => {
  const rows: Uint8Array[] = [
    buildTcp({ ...base4, protocol: 17 }),
    buildTcp({ ...base6, protocol: 17 }),
    buildTcp({ ...base6, ext: [{ type: 59 }] }), // no next header
    buildTcp({ ...base6, ext: [{ type: 50 }] }), // ESP: opaque
    buildTcp({ ...base6, ext: [{ type: 0 }, { type: 135 }] }), // mobility: unknown to us
  ];
  for (const p of rows) {
    const r = decodePacket(p);
    assert.is(r.ok, false);
    if (!r.ok) assert.is(r.skip, true, r.reason);
  }
});

test('every truncation of valid packets is refused without throwing', () => {
  const packets = [
    buildTcp(base4),
    buildTcp({ ...base4, tcpOptions: 12 }),
    buildTcp({ ...base6, ext: [{ type: 0 }, { type: 51 }, { type: 60, length: 16 }] }),
    buildTcp({ ...base6, payload: '' }),
  ];
  for (const p of packets) {
    for (let n = 0; n < p.length; n++) {
      const r = decodePacket(p.subarray(0, n));
      assert.is(r.ok, false, `length ${n} of ${p.length}`);
      if (!r.ok) assert.is(r.skip, false, `${n}: ${r.reason}`);
    }
    assert.ok(decodePacket(p).ok);
  }
});

test('bogus header fields', () => {
  const mk = (spec: TcpSpec, edit: (p: Uint8Array) => void): Uint8Array => {
    const p = buildTcp(spec);
    edit(p);
    return p;
  };
  const rows: [string, Uint8Array, string][] = [
    ['empty', new Uint8Array(0), 'empty packet'],
    ['version 5', mk(base4, (p) => (p[0] = 0x55)), 'ip version 5'],
    ['IHL 4', mk(base4, (p) => (p[0] = 0x44)), 'bad ipv4 header length'],
    ['IHL 15: no room for TCP', mk(base4, (p) => (p[0] = 0x4f)), 'truncated tcp header'],
    ['total < IHL', mk(base4, (p) => { p[2] = 0; p[3] = 10; }), 'bad ipv4 total length'],
    ['total > data', mk(base4, (p) => { p[2] = 0xff; }), 'truncated ipv4 packet'],
    ['tcp doff 4', mk(base4, (p) => (p[20 + 12] = 0x40)), 'bad tcp data offset'],
    ['tcp doff 15', mk(base4, (p) => (p[20 + 12] = 0xf0)), 'truncated tcp options'],
    ['ipv6 plen 0', mk(base6, (p) => { p[4] = 0; p[5] = 0; }), 'ipv6 payload length 0'],
    ['ipv6 plen too big', mk(base6, (p) => { p[4] = 0xff; }), 'truncated ipv6 packet'],
    ['ipv6 ext len beyond', mk({ ...base6, ext: [{ type: 60 }] }, (p) => (p[41] = 200)), 'truncated ipv6 extension header'],
    ['ipv6 AH len beyond', mk({ ...base6, ext: [{ type: 51 }] }, (p) => (p[41] = 200)), 'truncated ipv6 AH'],
  ];
  for (const [name, p, reason] of rows) {
    const r = decodePacket(p);
    assert.is(r.ok, false, name);
    if (!r.ok) assert.is(r.reason, reason, name);
  }
});

test('random bytes never throw', () => {
  let x = 12345;
  const rnd = () => ((x = (x * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  const valid = [buildTcp(base4), buildTcp({ ...base6, ext: [{ type: 0 }, { type: 44 }] })];
  for (let i = 0; i < 20000; i++) {
    const p = valid[i % 2].slice();
    for (let k = 0; k < 4; k++) p[rnd() % p.length] = rnd(); // mutate a few bytes
    if (i % 5 === 0) p[0] = (i % 3 === 0 ? 0x40 : 0x60) | (rnd() & 0x0f);
    decodePacket(p.subarray(0, rnd() % (p.length + 1)));
    decodePacket(p);
  }
});

test('SYN flag and empty payload', () => {
  const r = decodePacket(buildTcp({ ...base6, flags: 'S', payload: '' }));
  assert.ok(r.ok);
  if (r.ok) {
    assert.is(r.seg.flags, TCP_SYN);
    assert.is(r.seg.payload.length, 0);
  }
});

test.run();
