/**
 * BSD sockaddr_in as divert(4) uses it.  Layout: sys/netinet/in.h
 * (u8 sin_len, u8 sin_family, u16 sin_port, in_addr sin_addr, char sin_zero[8]);
 * port orders: sys/netinet/ip_divert.c (div_bind: network order; divert_packet:
 * "record matching rule, in host format"; sin_zero <- strlcpy(if_xname)).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  decodeDivertAddr,
  encodeDivertAddr,
  encodeDivertBind,
  HOST_LITTLE_ENDIAN,
  SOCKADDR_IN_LEN,
} from '../../src/bsd/sockaddr';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('bind address: sin_len 16, AF_INET 2, htons(port), INADDR_ANY, zero sin_zero', () => {
  const cases: [number, string][] = [
    //        len fam  port(BE)  addr      sin_zero
    [10004, '10' + '02' + '2714' + '00000000' + '0000000000000000'],
    [1, '10' + '02' + '0001' + '00000000' + '0000000000000000'],
    [65535, '10' + '02' + 'ffff' + '00000000' + '0000000000000000'],
  ];
  for (const [port, want] of cases) assert.is(hex(encodeDivertBind(port)), want, `port ${port}`);
  assert.throws(() => encodeDivertBind(65536));
  assert.throws(() => encodeDivertBind(-1));
  assert.throws(() => encodeDivertBind(1.5));
});

test('received address, little-endian host (amd64/arm64): rule in host order, ifname in sin_zero', () => {
  // rule 100 = 0x0064 -> host order LE "6400"; 198.18.0.1; "em0\0" then zeros
  const bytes = Buffer.from('10' + '02' + '6400' + 'c6120001' + '656d300000000000', 'hex');
  const d = decodeDivertAddr(bytes, true);
  assert.is(d.rule, 100);
  assert.is(d.addr, '198.18.0.1');
  assert.is(d.ifname, 'em0');
  assert.is(hex(d.raw), hex(bytes));
  // the same bytes read on a big-endian host give 0x6400
  assert.is(decodeDivertAddr(bytes, false).rule, 0x6400);
});

test('received address table (little-endian)', () => {
  const rows: { bytes: string; rule: number; addr: string; ifname: string }[] = [
    // outgoing packet: sin_addr 0.0.0.0, name of the receiving interface of a forwarded packet
    { bytes: '1002' + '10fa' + '00000000' + '6967623000000000', rule: 64016, addr: '0.0.0.0', ifname: 'igb0' },
    // locally generated packet: no rcvif, empty sin_zero
    { bytes: '1002' + '0100' + '00000000' + '0000000000000000', rule: 1, addr: '0.0.0.0', ifname: '' },
    // 7-character name, the longest strlcpy() can store in 8 bytes
    { bytes: '1002' + 'e803' + '0a000001' + '766c616e31303000', rule: 1000, addr: '10.0.0.1', ifname: 'vlan100' },
    // 8 bytes without a NUL: div_send() would not use it as a name, nor do we
    { bytes: '1002' + 'e803' + '0a000001' + '4141414141414141', rule: 1000, addr: '10.0.0.1', ifname: '' },
  ];
  for (const r of rows) {
    const d = decodeDivertAddr(Buffer.from(r.bytes, 'hex'), true);
    assert.equal({ rule: d.rule, addr: d.addr, ifname: d.ifname }, { rule: r.rule, addr: r.addr, ifname: r.ifname }, r.bytes);
    assert.is(hex(d.raw), r.bytes);
  }
});

test('encodeDivertAddr is the inverse, in both byte orders', () => {
  for (const le of [true, false]) {
    const b = encodeDivertAddr({ rule: 64000, addr: '198.18.1.2', ifname: 'vtnet0' }, le);
    assert.is(b.length, SOCKADDR_IN_LEN);
    assert.is(hex(b.subarray(2, 4)), le ? '00fa' : 'fa00');
    const d = decodeDivertAddr(b, le);
    assert.equal([d.rule, d.addr, d.ifname], [64000, '198.18.1.2', 'vtnet0']);
  }
  assert.throws(() => encodeDivertAddr({ rule: 1, ifname: 'toolong0' }), /sin_zero/);
  assert.throws(() => encodeDivertAddr({ rule: 1, addr: '1.2.3.256' }));
});

test('decoder rejects what a divert socket never returns', () => {
  assert.throws(() => decodeDivertAddr(Buffer.alloc(15)), /16 bytes/);
  assert.throws(() => decodeDivertAddr(Buffer.alloc(16)), /sockaddr_in/); // sin_len 0
  // Linux layout (u16 family, no sin_len) is not accepted
  assert.throws(() => decodeDivertAddr(Buffer.from('0200271400000000' + '0000000000000000', 'hex')), /sockaddr_in/);
});

test('raw is a copy: reusing the receive buffer does not change what is echoed', () => {
  const buf = encodeDivertAddr({ rule: 7, addr: '198.18.0.9', ifname: 'em1' });
  const d = decodeDivertAddr(buf);
  buf.fill(0);
  assert.is(d.raw[0], 16);
  assert.is(d.ifname, 'em1');
  assert.is(typeof HOST_LITTLE_ENDIAN, 'boolean');
});

test.run();
