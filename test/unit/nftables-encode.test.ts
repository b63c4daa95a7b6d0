/**
 * Byte-level tests of the nftables messages (src/firewall/nftables.ts).
 * Expected bytes are written out by hand for a little-endian host; layouts:
 * include/uapi/linux/netlink.h (headers, host order),
 * include/uapi/linux/netfilter/nfnetlink.h (nfgenmsg, batch),
 * include/uapi/linux/netfilter/nf_tables.h (NFTA_* attributes, big-endian values).
 * The NEWSETELEM layout matches what `nft --debug=mnl add element` sends.
 */
import * as os from 'os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  KEY_LENS,
  KEY_TYPES,
  NFT_SET_INTERVAL,
  NFT_SET_MAP,
  NFT_SET_TIMEOUT,
  concatType,
  decodeSet,
  encodeFlushBatch,
  encodeGetSet,
  encodeGetTable,
  encodeKey,
  encodeSetElemBatch,
  nftConfigSnippet,
  parseTable,
  SetElemBatch,
  setProblem,
} from '../../src/firewall/nftables';
import { NlBuilder, NlMessage } from '../../src/netlink';
import { FtpProxyError, HoleSpec } from '../../src/types';

function hex(s: string): Buffer {
  return Buffer.from(s.replace(/#[^\n]*/g, '').replace(/[^0-9a-fA-F]/g, ''), 'hex');
}
function eqBytes(actual: Buffer, expected: Buffer): void {
  assert.is(actual.toString('hex'), expected.toString('hex'));
}

if (os.endianness() !== 'LE') {
  console.log('SKIP: the hand-written byte layouts are for little-endian hosts');
  process.exit(0);
}

const INET_FILTER = { family: 1, name: 'filter' }; // NFPROTO_INET
const H4: HoleSpec = { family: 4, src: '198.18.0.1', dst: '198.18.0.2', port: 50000 };
const H6: HoleSpec = { family: 6, src: 'fd00:1::1', dst: 'fd00:2::2', port: 50001 };

test('concatenated key types as nft(8) stores them (6 bits per member; seen in a kernel dump)', () => {
  // ipv4_addr=7, ipv6_addr=8, inet_service=13 (nftables include/datatype.h)
  assert.is(concatType([7, 7, 13]), (7 << 12) | (7 << 6) | 13);
  assert.is(KEY_TYPES[4], 29133);
  assert.is(KEY_TYPES[6], 33293);
  assert.is(KEY_LENS[4], 12);
  assert.is(KEY_LENS[6], 36);
});

test('set keys: fields padded to 32-bit registers, port big-endian in the first 2 of 4 bytes', () => {
  const cases: [HoleSpec, string][] = [
    [H4, 'c6120001 c6120002 c3500000'],
    [{ family: 4, src: '0.0.0.0', dst: '255.255.255.255', port: 1024 }, '00000000 ffffffff 04000000'],
    [H6, 'fd000001000000000000000000000001 fd000002000000000000000000000002 c3510000'],
    [{ family: 6, src: '::ffff:198.18.0.1', dst: '2001:db8:1:2:3:4:5:6', port: 65535 },
      '00000000000000000000ffffc6120001 20010db8000100020003000400050006 ffff0000'],
    [{ family: 6, src: '::', dst: 'fd00::', port: 2000 }, '00000000000000000000000000000000 fd000000000000000000000000000000 07d00000'],
  ];
  for (const [h, want] of cases) eqBytes(encodeKey(h), hex(want));
});

test('bad holes are refused, not encoded', () => {
  const bad: HoleSpec[] = [
    { family: 4, src: 'fd00::1', dst: '198.18.0.2', port: 2000 },
    { family: 6, src: '198.18.0.1', dst: 'fd00::2', port: 2000 },
    { family: 4, src: '198.18.0.256', dst: '198.18.0.2', port: 2000 },
    { family: 4, src: '198.18.0.1', dst: '198.18.0.2', port: 70000 },
    { family: 6, src: 'fd00::1', dst: 'fd00:::2', port: 2000 },
  ];
  for (const h of bad) assert.throws(() => encodeKey(h), (e: unknown) => e instanceof FtpProxyError && e.code === 'bad-hole');
});

test('set keys from a hole with address bytes equal those from its text; bytes of the wrong size are not used', () => {
  const v4 = (t: string): Uint8Array => Uint8Array.from(t.split('.').map(Number));
  const withBytes4: HoleSpec = { ...H4, srcBytes: v4(H4.src), dstBytes: v4(H4.dst) };
  eqBytes(encodeKey(withBytes4), encodeKey(H4));
  const six = (k: number): Uint8Array => Uint8Array.from(hex(`fd00000${k}000000000000000000000${k}`));
  eqBytes(encodeKey({ ...H6, srcBytes: six(1), dstBytes: Uint8Array.from(hex('fd000002000000000000000000000002')) }), encodeKey(H6));
  // 4 bytes on an IPv6 hole: the text is parsed instead
  eqBytes(encodeKey({ ...H6, srcBytes: v4('198.18.0.1'), dstBytes: v4('198.18.0.2') }), encodeKey(H6));
  // and the text still has to be an address of the family when the bytes are not used
  assert.throws(() => encodeKey({ ...H4, src: 'fd00::1', srcBytes: new Uint8Array(3) }), (e: unknown) => e instanceof FtpProxyError && e.code === 'bad-hole');
});

test('SetElemBatch.fill gives encodeSetElemBatch\'s bytes (add, delete and destroy, both families, any seq/key/timeout)', () => {
  let seed = 11;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  for (const family of [4, 6] as const) {
    const set = `ftp6proxy${family}`;
    const add = new SetElemBatch(INET_FILTER, set, KEY_LENS[family], 'add');
    const del = new SetElemBatch(INET_FILTER, set, KEY_LENS[family], 'delete');
    const destroy = new SetElemBatch(INET_FILTER, set, KEY_LENS[family], 'destroy');
    const seqs = [1, 0x7ffffffe, 0xfffffffd, 123456789];
    for (let i = 0; i < 200; i++) {
      const key = Buffer.alloc(KEY_LENS[family]);
      for (let j = 0; j < key.length; j++) key[j] = rnd(256);
      const seq = i < seqs.length ? seqs[i] : rnd(0x7fffffff) + 1;
      const ms = [1, 2000, 3600000, 0x1ffffffff][i % 4];
      const b = new NlBuilder(64);
      const ack = encodeSetElemBatch(b, seq, INET_FILTER, set, key, ms);
      assert.is(ack, seq + 1);
      eqBytes(add.fill(seq, key, ms), b.bytes());
      encodeSetElemBatch(b.reset(), seq, INET_FILTER, set, key, 'delete');
      eqBytes(del.fill(seq, key), b.bytes());
      encodeSetElemBatch(b.reset(), seq, INET_FILTER, set, key, 'destroy');
      eqBytes(destroy.fill(seq, key), b.bytes());
    }
    assert.throws(() => add.fill(1, Buffer.alloc(KEY_LENS[family] + 1), 2000), (e: unknown) => e instanceof FtpProxyError && e.code === 'bad-hole');
  }
});

test('NEWSETELEM batch for an IPv4 hole, 2 s timeout', () => {
  const b = new NlBuilder();
  const ack = encodeSetElemBatch(b, 1, INET_FILTER, 'ftp6proxy4', encodeKey(H4), 2000);
  assert.is(ack, 2, 'the element message is the one ACKed');
  eqBytes(
    b.bytes(),
    hex(`
      14 00 00 00  10 00  01 00  01 00 00 00  00 00 00 00   # NFNL_MSG_BATCH_BEGIN, seq 1
      00 00  00 0a                                          # res_id NFNL_SUBSYS_NFTABLES
      58 00 00 00  0c 0a  05 04  02 00 00 00  00 00 00 00   # len 88, NFT_MSG_NEWSETELEM, REQUEST|ACK|CREATE, seq 2
      01 00  00 00                                          # NFPROTO_INET, NFNETLINK_V0, res_id 0
      0b 00 01 00  66 69 6c 74 65 72 00 00                  # NFTA_SET_ELEM_LIST_TABLE "filter"
      0f 00 02 00  66 74 70 36 70 72 6f 78 79 34 00 00      # NFTA_SET_ELEM_LIST_SET "ftp6proxy4"
      28 00 03 80                                           # NFTA_SET_ELEM_LIST_ELEMENTS (nested), len 40
        24 00 01 80                                         #   NFTA_LIST_ELEM (nested), len 36
          14 00 01 80                                       #     NFTA_SET_ELEM_KEY (nested), len 20
            10 00 01 00                                     #       NFTA_DATA_VALUE, len 16
            c6 12 00 01  c6 12 00 02  c3 50 00 00           #       198.18.0.1 . 198.18.0.2 . 50000
          0c 00 04 00  00 00 00 00 00 00 07 d0              #     NFTA_SET_ELEM_TIMEOUT 2000 ms (__be64)
      14 00 00 00  11 00  01 00  03 00 00 00  00 00 00 00   # NFNL_MSG_BATCH_END, seq 3
      00 00  00 0a
    `),
  );
});

test('NEWSETELEM batch for an IPv6 hole', () => {
  const b = new NlBuilder();
  encodeSetElemBatch(b, 0x100, INET_FILTER, 'ftp6proxy6', encodeKey(H6), 65000);
  eqBytes(
    b.bytes(),
    hex(`
      14 00 00 00  10 00  01 00  00 01 00 00  00 00 00 00   # BEGIN, seq 256
      00 00  00 0a
      70 00 00 00  0c 0a  05 04  01 01 00 00  00 00 00 00   # len 112, NEWSETELEM, seq 257
      01 00  00 00
      0b 00 01 00  66 69 6c 74 65 72 00 00
      0f 00 02 00  66 74 70 36 70 72 6f 78 79 36 00 00      # "ftp6proxy6"
      40 00 03 80                                           # ELEMENTS, len 64
        3c 00 01 80                                         #   LIST_ELEM, len 60
          2c 00 01 80                                       #     KEY, len 44
            28 00 01 00                                     #       DATA_VALUE, len 40
            fd 00 00 01 00 00 00 00 00 00 00 00 00 00 00 01 #       fd00:1::1
            fd 00 00 02 00 00 00 00 00 00 00 00 00 00 00 02 #       fd00:2::2
            c3 51 00 00                                     #       50001
          0c 00 04 00  00 00 00 00 00 00 fd e8              #     TIMEOUT 65000 ms
      14 00 00 00  11 00  01 00  02 01 00 00  00 00 00 00   # END, seq 258
      00 00  00 0a
    `),
  );
});

test('DELSETELEM batch: the key without timeout, no NLM_F_CREATE', () => {
  const b = new NlBuilder();
  encodeSetElemBatch(b, 1, INET_FILTER, 'ftp6proxy4', encodeKey(H4), 'delete');
  eqBytes(
    b.bytes().subarray(20, 20 + 0x4c),
    hex(`
      4c 00 00 00  0e 0a  05 00  02 00 00 00  00 00 00 00   # len 76, NFT_MSG_DELSETELEM, REQUEST|ACK
      01 00  00 00
      0b 00 01 00  66 69 6c 74 65 72 00 00
      0f 00 02 00  66 74 70 36 70 72 6f 78 79 34 00 00
      1c 00 03 80  18 00 01 80  14 00 01 80  10 00 01 00    # ELEMENTS 28 > ELEM 24 > KEY 20 > VALUE 16
      c6 12 00 01  c6 12 00 02  c3 50 00 00
    `),
  );
  assert.is(b.bytes().length, 20 + 76 + 20);
});

test('DESTROYSETELEM batch: DELSETELEM\'s bytes but the type, 30 (Linux 6.3: no ENOENT)', () => {
  const del = new NlBuilder();
  const destroy = new NlBuilder();
  encodeSetElemBatch(del, 1, INET_FILTER, 'ftp6proxy4', encodeKey(H4), 'delete');
  encodeSetElemBatch(destroy, 1, INET_FILTER, 'ftp6proxy4', encodeKey(H4), 'destroy');
  const a = Buffer.from(del.bytes());
  const b = Buffer.from(destroy.bytes());
  // the element message's nlmsg_type, after BEGIN (20 bytes) and its nlmsg_len
  eqBytes(b.subarray(24, 26), hex('1e 0a'));
  eqBytes(a.subarray(24, 26), hex('0e 0a'));
  b[24] = a[24];
  eqBytes(b, a);
});

test('flush: DELSETELEM without an element list', () => {
  const b = new NlBuilder();
  const ack = encodeFlushBatch(b, 7, { family: 2, name: 'gw' }, 'ftp6proxy4');
  assert.is(ack, 8);
  eqBytes(
    b.bytes().subarray(20, 20 + 44),
    hex(`
      2c 00 00 00  0e 0a  05 00  08 00 00 00  00 00 00 00   # len 44, DELSETELEM, seq 8
      02 00  00 00                                          # NFPROTO_IPV4
      07 00 01 00  67 77 00 00                              # table "gw"
      0f 00 02 00  66 74 70 36 70 72 6f 78 79 34 00 00      # set
    `),
  );
});

test('GETTABLE and GETSET (single object, with ACK)', () => {
  eqBytes(
    encodeGetTable(new NlBuilder(), 3, INET_FILTER).bytes(),
    hex(`
      20 00 00 00  01 0a  05 00  03 00 00 00  00 00 00 00   # NFT_MSG_GETTABLE
      01 00  00 00
      0b 00 01 00  66 69 6c 74 65 72 00 00                  # NFTA_TABLE_NAME
    `),
  );
  eqBytes(
    encodeGetSet(new NlBuilder(), 4, INET_FILTER, 'ftp6proxy6').bytes(),
    hex(`
      30 00 00 00  0a 0a  05 00  04 00 00 00  00 00 00 00   # NFT_MSG_GETSET
      01 00  00 00
      0b 00 01 00  66 69 6c 74 65 72 00 00                  # NFTA_SET_TABLE
      0f 00 02 00  66 74 70 36 70 72 6f 78 79 36 00 00      # NFTA_SET_NAME
    `),
  );
});

function newSet(payload: Buffer): NlMessage {
  return { type: 0x0a09, flags: 0, seq: 4, pid: 0, payload };
}

test('decodeSet on a hand-built NFT_MSG_NEWSET, and on hostile input', () => {
  const good = hex(`
    01 00 00 00
    0b 00 01 00  66 69 6c 74 65 72 00 00
    0f 00 02 00  66 74 70 36 70 72 6f 78 79 34 00 00
    08 00 03 00  00 00 00 10                              # NFTA_SET_FLAGS = NFT_SET_TIMEOUT
    08 00 04 00  00 00 71 cd                              # NFTA_SET_KEY_TYPE 29133
    08 00 05 00  00 00 00 0c                              # NFTA_SET_KEY_LEN 12
  `);
  assert.equal(decodeSet(newSet(good)), { name: 'ftp6proxy4', flags: 16, keyType: 29133, keyLen: 12 });
  assert.is(decodeSet(newSet(good.subarray(0, good.length - 2))), null, 'truncated attribute');
  assert.is(decodeSet(newSet(good.subarray(0, 3))), null, 'no nfgenmsg');
  assert.is(decodeSet(newSet(hex('01 00 00 00  08 00 03 00  00 00 00 10'))), null, 'no name');
  assert.is(decodeSet({ ...newSet(good), type: 0x0a0c }), null, 'wrong type');
});

test('setProblem: what check() refuses', () => {
  const ok = { name: 'ftp6proxy4', flags: NFT_SET_TIMEOUT, keyType: KEY_TYPES[4], keyLen: 12 };
  const cases: [number, typeof ok, RegExp | null][] = [
    [4, ok, null],
    [4, { ...ok, keyType: undefined as unknown as number }, null],
    [6, { ...ok, name: 'ftp6proxy6', keyType: KEY_TYPES[6], keyLen: 36 }, null],
    [4, { ...ok, keyLen: 8 }, /wrong type/],
    [4, { ...ok, keyType: KEY_TYPES[4] + 1 }, /wrong type/],
    [6, ok, /wrong type \(want ipv6_addr/],
    [4, { ...ok, flags: 0 }, /lacks "flags timeout"/],
    [4, { ...ok, flags: NFT_SET_TIMEOUT | NFT_SET_INTERVAL }, /interval/],
    [4, { ...ok, flags: NFT_SET_TIMEOUT | NFT_SET_MAP }, /map/],
  ];
  for (const [fam, s, want] of cases) {
    const p = setProblem(fam as 4 | 6, s);
    if (want === null) assert.is(p, null);
    else assert.match(p ?? '', want);
  }
});

test('parseTable and the admin snippet', () => {
  assert.equal(parseTable('inet/filter'), { familyName: 'inet', family: 1, name: 'filter', families: [4, 6] });
  assert.equal(parseTable('ip6/gw').families, [6]);
  assert.equal(parseTable('filter').familyName, 'inet');
  for (const bad of ['inet/', 'foo/filter', 'inet/a/b', 'inet/fil ter', '']) {
    assert.throws(() => parseTable(bad), (e: unknown) => e instanceof FtpProxyError && e.code === 'usage', bad);
  }
  assert.is(
    nftConfigSnippet('inet/filter'),
    [
      'table inet filter {',
      '  set ftp6proxy4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }',
      '  set ftp6proxy6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }',
      '  # and in the chain that forwards (policy drop), after "ct state established accept":',
      '  #   ip  saddr . ip  daddr . tcp dport @ftp6proxy4 ct state new accept',
      '  #   ip6 saddr . ip6 daddr . tcp dport @ftp6proxy6 ct state new accept',
      '}',
    ].join('\n'),
  );
  assert.match(nftConfigSnippet('ip6/gw'), /^table ip6 gw \{/);
  assert.not.match(nftConfigSnippet('ip6/gw'), /ftp6proxy4/);
});

test.run();
