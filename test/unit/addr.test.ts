import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { addrEqual, compareAddr, formatIPv4, formatIPv6, parseAnyAddr, parseIPv4, parseIPv6 } from '../../src/addr';
import { escapeUntrusted } from '../../src/escape';

function hex(s: string): Uint8Array {
  const clean = s.replace(/[^0-9a-f]/gi, '');
  return Uint8Array.from(clean.match(/../g)!.map((h) => parseInt(h, 16)));
}

// RFC 5952 section 4 and 5, one row per rule
const rfc5952: [string, string][] = [
  ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'], // 4.1 leading zeros, 4.2.1 longest run
  ['2001:0db8:0000:0000:0000:0000:0002:0001', '2001:db8::2:1'],
  ['2001:0db8:0000:0001:0001:0001:0001:0001', '2001:db8:0:1:1:1:1:1'], // 4.2.2 one group not compressed
  ['2001:0db8:0000:0000:0001:0000:0000:0001', '2001:db8::1:0:0:1'], // 4.2.3 first run on a tie
  ['2001:0db8:0000:0001:0000:0000:0000:0001', '2001:db8:0:1::1'], // 4.2.3 longest run wins
  ['2001:0DB8:AAAA:BBBB:CCCC:DDDD:EEEE:FFFF', '2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff'], // 4.3 lowercase
  ['0000:0000:0000:0000:0000:0000:0000:0000', '::'],
  ['0000:0000:0000:0000:0000:0000:0000:0001', '::1'],
  ['fd00:0000:0000:0000:0000:0000:0000:0000', 'fd00::'],
  ['0000:0000:0000:0000:0000:ffff:c612:0102', '::ffff:198.18.1.2'], // 5 IPv4-mapped
  ['0000:0000:0001:0000:0000:0000:0000:0000', '0:0:1::'],
  ['0001:0000:0002:0000:0003:0000:0004:0000', '1:0:2:0:3:0:4:0'],
  ['fd00:0001:0000:0000:0000:0000:0000:0002', 'fd00:1::2'],
];

test('formatIPv6: RFC 5952 canonical text', () => {
  for (const [raw, want] of rfc5952) {
    assert.is(formatIPv6(hex(raw)), want, raw);
    // and back: the canonical text parses to the same bytes
    assert.equal(Array.from(parseIPv6(want)!), Array.from(hex(raw)), want);
  }
});

test('formatIPv4 and offsets', () => {
  assert.is(formatIPv4(Uint8Array.of(198, 18, 1, 2)), '198.18.1.2');
  assert.is(formatIPv4(Uint8Array.of(9, 9, 0, 255, 0, 1), 2), '0.255.0.1');
  assert.is(formatIPv6(new Uint8Array(20).fill(0).map((_, i) => (i === 19 ? 1 : 0)), 4), '::1');
});

const v4: [string, number[] | null][] = [
  ['198.18.1.2', [198, 18, 1, 2]],
  ['0.0.0.0', [0, 0, 0, 0]],
  ['255.255.255.255', [255, 255, 255, 255]],
  ['256.1.1.1', null],
  ['1.2.3', null],
  ['1.2.3.4.5', null],
  ['01.2.3.4', null],
  ['1.2.3.', null],
  ['1.2.3.4 ', null],
  ['a.b.c.d', null],
  ['1000.1.1.1', null],
  ['', null],
];
test('parseIPv4', () => {
  for (const [t, want] of v4) {
    const got = parseIPv4(t);
    assert.equal(got === null ? null : Array.from(got), want, JSON.stringify(t));
  }
});

const v6ok: [string, string][] = [
  ['FD00::1', 'fd00::1'],
  ['fd00:0:0:0:0:0:0:1', 'fd00::1'],
  ['::ffff:198.18.1.2', '::ffff:198.18.1.2'],
  ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
  ['::2:3:4:5:6:7:8', '0:2:3:4:5:6:7:8'],
  ['64:ff9b::198.18.1.2', '64:ff9b::c612:102'],
];
const v6bad = ['', ':', ':::', '1::2::3', 'fd00::1%eth0', 'fd00::/64', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', '12345::',
  'g::1', '::1.2.3', '::1.2.3.4:5', '1:2:3:4:5:6:7:8::', ':1::', '1::2:', 'fd00::256.1.1.1'];
test('parseIPv6', () => {
  for (const [t, canon] of v6ok) assert.is(formatIPv6(parseIPv6(t)!), canon, t);
  for (const t of v6bad) assert.is(parseIPv6(t), null, JSON.stringify(t));
});

test('parseAnyAddr, addrEqual, compareAddr', () => {
  assert.is(parseAnyAddr('fd00::1')!.family, 6);
  assert.is(parseAnyAddr('198.18.0.1')!.family, 4);
  assert.is(parseAnyAddr('x'), null);
  assert.ok(addrEqual(Uint8Array.of(1, 2, 3, 4), Uint8Array.of(1, 2, 3, 4)));
  assert.not.ok(addrEqual(Uint8Array.of(1, 2, 3, 4), Uint8Array.of(1, 2, 3, 5)));
  assert.not.ok(addrEqual(Uint8Array.of(0, 0, 0, 0), new Uint8Array(16)));
  assert.ok(compareAddr(Uint8Array.of(1, 2, 3, 4), Uint8Array.of(1, 2, 3, 5)) < 0);
  assert.ok(compareAddr(new Uint8Array(16), Uint8Array.of(255, 255, 255, 255)) > 0);
  assert.is(compareAddr(Uint8Array.of(7, 7, 7, 7), Uint8Array.of(7, 7, 7, 7)), 0);
});

const esc: [string | Uint8Array, number | undefined, string][] = [
  ['PORT 1,2,3,4,5,6\r\n', undefined, 'PORT 1,2,3,4,5,6\\r\\n'],
  [Uint8Array.of(0x50, 0, 0x1b, 0xff, 0x09), undefined, 'P\\x00\\x1b\\xff\\t'],
  ['say "hi" \\', undefined, 'say \\"hi\\" \\\\'],
  ['abcdefghij', 5, 'abcde...'],
  ['\u0000abc', 6, '\\x00ab...'],
  ['', undefined, ''],
];
test('escapeUntrusted', () => {
  for (const [input, max, want] of esc) assert.is(escapeUntrusted(input, max), want, String(want));
  const long = escapeUntrusted(new Uint8Array(1000).fill(0x41));
  assert.is(long.length, 83);
  assert.ok(long.endsWith('...'));
});

test.run();
