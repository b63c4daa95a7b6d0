import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { linkPayload, parsePcap, PcapFormatError } from '../../src/pcap';

const ip4 = Uint8Array.from([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 1, 2, 198, 18, 2, 2]);
const cat = (...parts: ArrayLike<number>[]) => Uint8Array.from(parts.flatMap((p) => Array.from(p)));

test('link layers are stripped', () => {
  const cases: Array<[string, number, Uint8Array, Uint8Array | null]> = [
    ['ethernet', 1, cat(new Array(12).fill(0), [0x08, 0x00], ip4), ip4],
    ['ethernet vlan', 1, cat(new Array(12).fill(0), [0x81, 0x00, 0, 5, 0x86, 0xdd], ip4), ip4],
    ['ethernet arp', 1, cat(new Array(12).fill(0), [0x08, 0x06], ip4), null],
    ['raw', 101, ip4, ip4],
    ['sll', 113, cat(new Array(14).fill(0), [0x08, 0x00], ip4), ip4],
    ['sll2', 276, cat([0x86, 0xdd], new Array(18).fill(0), ip4), ip4],
    ['null le inet6 (FreeBSD 28)', 0, cat([28, 0, 0, 0], ip4), ip4],
    ['null be inet', 0, cat([0, 0, 0, 2], ip4), ip4],
    ['loop', 108, cat([0, 0, 0, 24], ip4), ip4],
    ['short ethernet', 1, Uint8Array.from([1, 2, 3]), null],
    ['unknown', 147, ip4, null],
  ];
  for (const [name, lt, frame, want] of cases) {
    const got = linkPayload(lt, frame);
    assert.equal(got === null ? null : Array.from(got), want === null ? null : Array.from(want), name);
  }
});

function header(le: boolean, nano: boolean, linktype: number): Uint8Array {
  const b = Buffer.alloc(24);
  const w32 = (v: number, o: number) => (le ? b.writeUInt32LE(v, o) : b.writeUInt32BE(v, o));
  w32(nano ? 0xa1b23c4d : 0xa1b2c3d4, 0);
  (le ? b.writeUInt16LE(2, 4) : b.writeUInt16BE(2, 4));
  (le ? b.writeUInt16LE(4, 6) : b.writeUInt16BE(4, 6));
  w32(65535, 16);
  w32(linktype, 20);
  return b;
}
function rec(le: boolean, sec: number, frac: number, data: Uint8Array): Uint8Array {
  const b = Buffer.alloc(16);
  const w32 = (v: number, o: number) => (le ? b.writeUInt32LE(v, o) : b.writeUInt32BE(v, o));
  w32(sec, 0); w32(frac, 4); w32(data.length, 8); w32(data.length, 12);
  return cat(b, data);
}

test('both byte orders, micro and nano seconds', () => {
  for (const le of [true, false]) {
    for (const nano of [false, true]) {
      const f = parsePcap(cat(header(le, nano, 101), rec(le, 10, nano ? 500000000 : 500000, ip4)));
      assert.is(f.records.length, 1);
      assert.is(f.records[0].time, 10500);
      assert.equal(Array.from(f.records[0].ip ?? []), Array.from(ip4));
      assert.is(f.damage, undefined);
    }
  }
});

test('truncated and lying records are reported as damage, not thrown', () => {
  const good = cat(header(true, false, 101), rec(true, 1, 0, ip4));
  assert.match(parsePcap(good.subarray(0, good.length - 3)).damage ?? '', /truncated record/);
  assert.match(parsePcap(cat(good, [1, 2, 3])).damage ?? '', /truncated record header/);
  const lying = Buffer.from(cat(header(true, false, 101), rec(true, 1, 0, ip4)));
  lying.writeUInt32LE(0x7fffffff, 24 + 8);
  assert.match(parsePcap(lying).damage ?? '', /claims/);
});

test('not a pcap file is a format error', () => {
  assert.throws(() => parsePcap(Uint8Array.from([1, 2, 3])), (e: unknown) => e instanceof PcapFormatError);
  assert.throws(() => parsePcap(new Uint8Array(24)), (e: unknown) => e instanceof PcapFormatError);
  const ng = new Uint8Array(28); ng.set([0x0a, 0x0d, 0x0d, 0x0a]);
  assert.throws(() => parsePcap(ng), /pcapng/);
});

test.run();
