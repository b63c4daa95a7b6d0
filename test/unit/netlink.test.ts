/**
 * Byte-level tests of the generic netlink encoder/decoder (src/netlink.ts)
 * and of the NFQUEUE messages (src/capture/nfqueue.ts), plus NetlinkSocket
 * and NfqueueSource against a scripted fake of the native shim.
 *
 * Expected bytes are written out by hand for a little-endian host:
 * nlmsghdr and nlattr headers are host order (include/uapi/linux/netlink.h),
 * nfnetlink payload fields are big-endian (include/uapi/linux/netfilter/nfnetlink.h).
 */
import * as os from 'os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  NFQNL_CFG_CMD_BIND,
  NFQA_CFG_F_FAIL_OPEN,
  NF_ACCEPT,
  NfqVerdicts,
  NfqueueSource,
  decodeNfqPacket,
  encodeNfqCommand,
  encodeNfqParams,
  encodeNfqVerdict,
} from '../../src/capture/nfqueue';
import { encodeKey, NftablesFirewall } from '../../src/firewall/nftables';
import { Native, PollerHandle, RecvResult, loadNative } from '../../src/native';
import {
  NLMSG_ERROR,
  NLM_F_ACK,
  NLM_F_REQUEST,
  NetlinkSocket,
  NlBuilder,
  NlMessage,
  attrMap,
  parseAttrs,
  parseError,
  parseMessages,
  sockaddrNl,
  writeBatch,
  writeU64BE,
} from '../../src/netlink';
import { Clock, FtpProxyError, Level, Timer } from '../../src/types';

/** "14 00 | 00 00" -> bytes; anything but hex digits is a separator */
function hex(s: string): Buffer {
  return Buffer.from(s.replace(/#[^\n]*/g, '').replace(/[^0-9a-fA-F]/g, ''), 'hex');
}
function eqBytes(actual: Buffer, expected: Buffer, what = ''): void {
  assert.is(actual.toString('hex'), expected.toString('hex'), what);
}

if (os.endianness() !== 'LE') {
  console.log('SKIP: the hand-written byte layouts are for little-endian hosts');
  process.exit(0);
}

// ---- encoders -----------------------------------------------------------------

test('sockaddr_nl: family AF_NETLINK=16 host order, pad, pid 0, groups 0', () => {
  eqBytes(sockaddrNl(), hex('10 00  00 00  00 00 00 00  00 00 00 00'));
  eqBytes(sockaddrNl(0x01020304, 5), hex('10 00  00 00  04 03 02 01  05 00 00 00'));
});

test('nlmsghdr: len, type, flags, seq, pid in host order', () => {
  const b = new NlBuilder(8); // also exercises growth
  b.beginMsg(0x0a01, NLM_F_REQUEST | NLM_F_ACK, 0x01020304, 7).endMsg();
  // u32 len=16 | u16 type | u16 flags=REQUEST|ACK | u32 seq | u32 pid
  eqBytes(b.bytes(), hex('10 00 00 00  01 0a  05 00  04 03 02 01  07 00 00 00'));
});

test('attributes: header in host order, payload padded to 4 bytes', () => {
  const b = new NlBuilder();
  b.beginMsg(1, 0, 0)
    .attr(1, Buffer.from([0xaa, 0xbb, 0xcc, 0xdd, 0xee])) // len 9, padded to 12
    .str(2, 'ab') // "ab\0": len 7, padded to 8
    .u32be(3, 0x11223344) // netfilter __be32
    .u64be(4, 2000) // netfilter __be64
    .endMsg();
  eqBytes(
    b.bytes(),
    hex(`
      38 00 00 00  01 00  00 00  00 00 00 00  00 00 00 00   # nlmsghdr, len 56
      09 00 01 00  aa bb cc dd  ee 00 00 00                 # nla_len 9, type 1, pad 3
      07 00 02 00  61 62 00 00                              # "ab\\0" + 1 pad
      08 00 03 00  11 22 33 44                              # big-endian value
      0c 00 04 00  00 00 00 00 00 00 07 d0                  # 2000 as __be64
    `),
  );
});

test('writeU64BE: big-endian, floored, negative as 0, above 2^32 exact, 2^64 and up refused', () => {
  const at = (v: number): string => {
    const b = Buffer.alloc(8);
    writeU64BE(b, v, 0);
    return b.toString('hex');
  };
  assert.is(at(2000), '00000000000007d0');
  assert.is(at(0x1ffffffff), '00000001ffffffff');
  assert.is(at(Number.MAX_SAFE_INTEGER), '001fffffffffffff');
  assert.is(at(2 ** 63), '8000000000000000');
  assert.is(at(1.9), '0000000000000001');
  assert.is(at(-5), '0000000000000000');
  assert.throws(() => at(2 ** 64), RangeError);
  assert.throws(() => at(NaN), RangeError);
});

test('nested attributes carry NLA_F_NESTED and the length of their contents', () => {
  const b = new NlBuilder();
  b.beginMsg(1, 0, 0).beginNest(3).beginNest(1).u32be(2, 1).endNest().endNest().endMsg();
  eqBytes(
    b.bytes(),
    hex(`
      20 00 00 00  01 00 00 00  00 00 00 00  00 00 00 00   # len 32
      10 00 03 80                                          # nest 3 | NLA_F_NESTED, len 16
      0c 00 01 80                                          #   nest 1 | NLA_F_NESTED, len 12
      08 00 02 00  00 00 00 01                             #     u32be 1
    `),
  );
});

test('builder refuses unbalanced use', () => {
  const b = new NlBuilder();
  b.beginMsg(1, 0, 0);
  assert.throws(() => b.bytes());
  assert.throws(() => b.beginMsg(1, 0, 0));
  b.beginNest(1);
  assert.throws(() => b.endMsg());
  b.reset();
  assert.throws(() => b.endNest());
});

test('batch: NFNL_MSG_BATCH_BEGIN/END (0x10/0x11) with res_id NFNL_SUBSYS_NFTABLES (10) big-endian', () => {
  const b = new NlBuilder();
  const end = writeBatch(b, 5, (bb, s) => {
    bb.beginMsg(0x0a0e, NLM_F_REQUEST, s).nfgen(1, 0).endMsg();
    return s;
  });
  assert.is(end, 7);
  eqBytes(
    b.bytes(),
    hex(`
      14 00 00 00  10 00  01 00  05 00 00 00  00 00 00 00   # BEGIN, seq 5
      00 00  00 0a                                          # nfgenmsg: AF_UNSPEC, V0, res_id 10 (BE)
      14 00 00 00  0e 0a  01 00  06 00 00 00  00 00 00 00   # the body, seq 6
      01 00  00 00                                          # nfgenmsg: NFPROTO_INET, V0, res_id 0
      14 00 00 00  11 00  01 00  07 00 00 00  00 00 00 00   # END, seq 7
      00 00  00 0a
    `),
  );
});

test('NFQNL_MSG_CONFIG bind: type (3<<8)|2, NFQA_CFG_CMD {command 1, pad, pf 0}, res_id = queue', () => {
  // include/uapi/linux/netfilter/nfnetlink_queue.h: struct nfqnl_msg_config_cmd
  const b = encodeNfqCommand(new NlBuilder(), 9, 10004, NFQNL_CFG_CMD_BIND);
  eqBytes(
    b.bytes(),
    hex(`
      1c 00 00 00  02 03  05 00  09 00 00 00  00 00 00 00   # len 28, REQUEST|ACK
      00 00  27 14                                          # AF_UNSPEC, V0, res_id 10004 BE
      08 00 01 00  01 00  00 00                             # NFQA_CFG_CMD: BIND, _pad, pf 0
    `),
  );
});

test('NFQNL_MSG_CONFIG params: copy_range BE32 0xffff, copy_mode PACKET, mask+flags FAIL_OPEN', () => {
  // struct nfqnl_msg_config_params { __be32 copy_range; __u8 copy_mode; } packed
  const b = encodeNfqParams(new NlBuilder(), 10, 7, 0xffff, NFQA_CFG_F_FAIL_OPEN);
  eqBytes(
    b.bytes(),
    hex(`
      30 00 00 00  02 03  05 00  0a 00 00 00  00 00 00 00   # len 48
      00 00  00 07                                          # queue 7
      09 00 02 00  00 00 ff ff  02 00 00 00                 # NFQA_CFG_PARAMS, len 9 + pad 3
      08 00 04 00  00 00 00 01                              # NFQA_CFG_MASK = FAIL_OPEN
      08 00 05 00  00 00 00 01                              # NFQA_CFG_FLAGS = FAIL_OPEN
    `),
  );
});

test('NFQNL_MSG_VERDICT: type (3<<8)|1, NFQA_VERDICT_HDR {verdict BE32 NF_ACCEPT, id BE32}', () => {
  const b = encodeNfqVerdict(new NlBuilder(), 11, 10004, 0x01020304, NF_ACCEPT);
  eqBytes(
    b.bytes(),
    hex(`
      20 00 00 00  01 03  01 00  0b 00 00 00  00 00 00 00   # len 32, REQUEST only
      00 00  27 14
      0c 00 02 00  00 00 00 01  01 02 03 04                 # verdict 1, packet id
    `),
  );
});

test('NFQNL_MSG_VERDICT with NFQA_MARK (selective queueing)', () => {
  const b = encodeNfqVerdict(new NlBuilder(), 12, 10004, 7, NF_ACCEPT, 0x80100001);
  eqBytes(
    b.bytes(),
    hex(`
      28 00 00 00  01 03  01 00  0c 00 00 00  00 00 00 00   # len 40
      00 00  27 14
      0c 00 02 00  00 00 00 01  00 00 00 07                 # verdict 1, packet 7
      08 00 03 00  80 10 00 01                              # NFQA_MARK 0x80100001
    `),
  );
});

test('NfqVerdicts.fill gives encodeNfqVerdict\'s bytes (with and without a mark, any seq, id, verdict, queue)', () => {
  let seed = 7;
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return ((seed >>> 8) * 0x1001 + seed) >>> 0;
  };
  for (const queue of [0, 10004, 65535]) {
    const v = new NfqVerdicts(queue);
    for (let i = 0; i < 300; i++) {
      const seq = i === 0 ? 0xffffffff : rnd();
      const id = rnd();
      const verdict = i % 2 === 0 ? NF_ACCEPT : rnd() % 6;
      const mark = i % 3 === 0 ? undefined : i === 1 ? 0xffffffff : rnd();
      eqBytes(v.fill(seq, id, verdict, mark), encodeNfqVerdict(new NlBuilder(), seq, queue, id, verdict, mark).bytes(), `queue ${queue} #${i}`);
    }
  }
});

// ---- decoders -----------------------------------------------------------------

/** an NFQNL_MSG_PACKET as the kernel sends it, built by hand */
const PACKET = hex(`
  2c 00 00 00  00 03  00 00  00 00 00 00  00 00 00 00   # len 44, type (3<<8)|0
  02 00  27 14                                          # NFPROTO_IPV4, V0, queue 10004
  0b 00 01 00  00 00 00 2a  08 00  03 00                # PACKET_HDR: id 42, hw 0x0800, hook 3 (+pad)
  0c 00 0a 00  45 00 00 08  de ad be ef                 # NFQA_PAYLOAD, 8 bytes
`);

test('parseMessages + decodeNfqPacket on a hand-built NFQNL_MSG_PACKET', () => {
  const msgs = parseMessages(PACKET);
  assert.is(msgs.length, 1);
  const p = decodeNfqPacket(msgs[0]);
  assert.ok(p !== null);
  assert.is(p?.queue, 10004);
  assert.is(p?.id, 42);
  assert.is(p?.hwProtocol, 0x0800);
  assert.is(p?.hook, 3);
  assert.is(p?.payload.toString('hex'), '45000008deadbeef');
});

test('parseMessages splits several messages and stops at bad headers without throwing', () => {
  const two = Buffer.concat([PACKET, PACKET]);
  assert.is(parseMessages(two).length, 2);
  assert.is(parseMessages(two, PACKET.length + 10).length, 1, 'second one truncated by n');
  const cases: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['short header', PACKET.subarray(0, 10)],
    ['len beyond data', PACKET.subarray(0, 40)],
    ['len < 16', hex('08 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00')],
    ['len 0', Buffer.alloc(32)],
  ];
  for (const [what, buf] of cases) assert.equal(parseMessages(buf), [], what);
});

test('hostile NFQUEUE packets decode to null, never throw', () => {
  const msg = (payload: Buffer, type = 0x0300): NlMessage => ({ type, flags: 0, seq: 0, pid: 0, payload });
  const body = PACKET.subarray(16);
  const cases: [string, NlMessage][] = [
    ['wrong type', msg(body, 0x0301)],
    ['no nfgenmsg', msg(Buffer.alloc(2))],
    ['no PACKET_HDR', msg(hex('02 00 27 14  0c 00 0a 00  45 00 00 08 de ad be ef'))],
    ['short PACKET_HDR', msg(hex('02 00 27 14  08 00 01 00  00 00 00 2a'))],
    ['attr len past end', msg(hex('02 00 27 14  ff 00 01 00  00 00 00 2a'))],
    ['attr len < 4', msg(hex('02 00 27 14  02 00 01 00'))],
    ['dangling bytes', msg(hex('02 00 27 14  0b 00'))],
  ];
  for (const [what, m] of cases) assert.is(decodeNfqPacket(m), null, what);
  // a packet without payload still decodes, so it still gets its verdict
  const p = decodeNfqPacket(msg(hex('02 00 27 14  0b 00 01 00  00 00 00 07 08 00 03 00')));
  assert.is(p?.id, 7);
  assert.is(p?.payload.length, 0);
});

test('decodeNfqPacket reads what attrMap reads, on 5,000 mutated messages (one pass, same rules)', () => {
  // the reading decodeNfqPacket had before its single pass: kept here as the reference
  const reference = (m: NlMessage): unknown => {
    if (m.type !== 0x0300 || m.payload.length < 4) return null;
    const attrs = attrMap(m.payload, 4);
    const hdr = attrs?.get(1);
    if (attrs === null || hdr === undefined || hdr.length < 7) return null;
    const mark = attrs.get(3);
    return {
      queue: m.payload.readUInt16BE(2), id: hdr.readUInt32BE(0), hwProtocol: hdr.readUInt16BE(4), hook: hdr[6],
      mark: mark !== undefined && mark.length >= 4 ? mark.readUInt32BE(0) : 0,
      payload: (attrs.get(10) ?? Buffer.alloc(0)).toString('hex'),
    };
  };
  const read = (m: NlMessage): unknown => {
    const p = decodeNfqPacket(m);
    return p === null ? null : { ...p, payload: p.payload.toString('hex') };
  };
  // PACKET_HDR, MARK, PAYLOAD, then a second MARK (the last one wins)
  const base = hex(`02 00 27 14  0b 00 01 00  00 00 00 2a 08 00 03 00  08 00 03 00  00 00 00 05
    0c 00 0a 00  45 00 00 08 de ad be ef  08 00 03 00  00 00 01 00`);
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  let decoded = 0;
  for (let i = 0; i < 5000; i++) {
    const b = Buffer.from(base.subarray(0, base.length - (i % 7 === 0 ? rnd(base.length) : 0)));
    for (let k = 1 + rnd(3); k > 0 && b.length > 0; k--) b[rnd(b.length)] = rnd(4) === 0 ? rnd(256) : b[rnd(b.length)];
    const m: NlMessage = { type: 0x0300, flags: 0, seq: 0, pid: 0, payload: b };
    const want = reference(m);
    assert.equal(read(m), want, b.toString('hex'));
    if (want !== null) decoded++;
  }
  assert.ok(decoded > 500 && decoded < 4900, `both outcomes exercised (${decoded} decoded)`);
  assert.equal(read({ type: 0x0300, flags: 0, seq: 0, pid: 0, payload: base }), {
    queue: 10004, id: 42, hwProtocol: 0x0800, hook: 3, mark: 0x100, payload: '45000008deadbeef',
  });
});

test('parseAttrs/attrMap: nested flag reported, malformed input gives null', () => {
  const a = parseAttrs(hex('08 00 03 80  01 02 03 04  05 00 01 00  ff 00 00 00'));
  assert.equal(
    a?.map((x) => [x.type, x.nested, x.data.toString('hex')]),
    [
      [3, true, '01020304'],
      [1, false, 'ff'],
    ],
  );
  assert.is(parseAttrs(hex('08 00 01')), null);
  assert.is(attrMap(hex('09 00 01 00 00')), null);
});

/** NLMSG_ERROR: int error; then the request's nlmsghdr */
function errorMsg(errno: number, seq: number, reqType = 0x0a0c): Buffer {
  const b = Buffer.alloc(36);
  b.writeUInt32LE(36, 0);
  b.writeUInt16LE(NLMSG_ERROR, 4);
  b.writeUInt16LE(0x100, 6); // NLM_F_CAPPED
  b.writeUInt32LE(seq, 8);
  b.writeInt32LE(-errno, 16);
  b.writeUInt32LE(20, 20); // echoed request header: len, type, flags, seq, pid
  b.writeUInt16LE(reqType, 24);
  b.writeUInt32LE(seq, 28);
  return b;
}

test('NLMSG_ERROR: ACK, negative errno with its name, truncated', () => {
  const ack = parseError(parseMessages(errorMsg(0, 5))[0]);
  assert.equal(ack, { errno: 0, code: '', seq: 5, reqType: 0x0a0c });
  const enoent = parseError(parseMessages(errorMsg(2, 6))[0]);
  assert.equal(enoent, { errno: 2, code: 'ENOENT', seq: 6, reqType: 0x0a0c });
  assert.is(parseError(parseMessages(errorMsg(1, 6))[0])?.code, 'EPERM');
  assert.is(parseError({ type: NLMSG_ERROR, flags: 0, seq: 1, pid: 0, payload: Buffer.alloc(8) }), null);
  assert.is(parseError({ type: 0x0300, flags: 0, seq: 1, pid: 0, payload: Buffer.alloc(40) }), null);
});

// ---- NetlinkSocket and NfqueueSource against a fake shim -------------------------

class FakeNative {
  sent: Buffer[] = [];
  inbox: (Buffer | { code: string })[] = [];
  closed = false;
  poll: ((status: number, events: number) => void) | null = null;
  /** reply to each sent datagram (called synchronously in sendto) */
  onSend: (data: Buffer) => void = () => undefined;
  bindCode: string | null = null;

  asNative(): Native {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    class Poller implements PollerHandle {
      constructor(_fd: number, cb: (s: number, e: number) => void) {
        self.poll = cb;
      }
      start(): void {}
      stop(): void {
        self.poll = null;
      }
    }
    const err = (code: string): Error => Object.assign(new Error(code), { code });
    return {
      socket: () => 42,
      socketpair: () => [0, 0],
      bind: () => undefined,
      connect: () => undefined,
      sendto: (_fd: number, data: Buffer) => {
        this.sent.push(Buffer.from(data));
        this.onSend(Buffer.from(data));
        return data.length;
      },
      recv: (_fd: number, buf: Buffer): number => {
        const next = this.inbox.shift();
        if (next === undefined) return -1;
        if (!Buffer.isBuffer(next)) throw err(next.code);
        next.copy(buf);
        return next.length;
      },
      recvfrom: (): RecvResult | null => {
        throw err('ENOSYS');
      },
      setsockopt: () => undefined,
      getsockopt: () => Buffer.alloc(4),
      close: () => {
        this.closed = true;
      },
      chroot: () => undefined,
      getpwnam: () => null,
      Poller,
      constants: {
        AF_UNIX: 1, AF_INET: 2, AF_INET6: 10, AF_NETLINK: 16, SOCK_STREAM: 1, SOCK_DGRAM: 2, SOCK_RAW: 3,
        SOL_SOCKET: 1, SO_RCVBUF: 8, SO_SNDBUF: 7, SO_RCVBUFFORCE: 33, SO_ERROR: 4, MSG_DONTWAIT: 64,
        MSG_TRUNC: 32, EAGAIN: 11, ENOBUFS: 105, EAFNOSUPPORT: 97, EPROTONOSUPPORT: 93, EPERM: 1, ENOENT: 2, EINVAL: 22,
      },
      platform: 'linux',
    };
  }

  deliver(...items: (Buffer | { code: string })[]): void {
    this.inbox.push(...items);
    this.poll?.(0, 1);
  }
}

class FakeClock implements Clock {
  t = 0;
  timers: { at: number; fn: () => void; live: boolean }[] = [];
  now(): number {
    return this.t;
  }
  setTimer(ms: number, fn: () => void): Timer {
    const e = { at: this.t + ms, fn, live: true };
    this.timers.push(e);
    return { cancel: () => void (e.live = false) };
  }
  advance(ms: number): void {
    this.t += ms;
    for (const e of this.timers) if (e.live && e.at <= this.t) { e.live = false; e.fn(); }
  }
}

const seqOf = (b: Buffer): number => b.readUInt32LE(8);

test('NetlinkSocket.request: resolves on ACK with the replies, rejects with the errno name, times out', async () => {
  const fake = new FakeNative();
  const clock = new FakeClock();
  const s = new NetlinkSocket({ native: fake.asNative(), clock });
  s.open(12);
  // reply: a data message with the same seq, then the ACK
  fake.onSend = (d) => {
    const seq = seqOf(d);
    const reply = Buffer.from(PACKET);
    reply.writeUInt32LE(seq, 8);
    if (seq % 3 === 0) fake.inbox.push(reply, errorMsg(0, seq));
    else if (seq % 3 === 1) fake.inbox.push(errorMsg(2, seq));
    setImmediate(() => fake.poll?.(0, 1));
  };
  const b = new NlBuilder();
  let seq = s.nextSeq();
  while (seq % 3 !== 0) seq = s.nextSeq();
  const replies = await s.request(b.reset().beginMsg(1, 5, seq).endMsg().bytes(), seq, 100);
  assert.is(replies.length, 1);
  assert.is(replies[0].type, 0x0300);

  seq = s.nextSeq();
  while (seq % 3 !== 1) seq = s.nextSeq();
  try {
    await s.request(b.reset().beginMsg(1, 5, seq).endMsg().bytes(), seq, 100);
    assert.unreachable();
  } catch (e) {
    assert.instance(e, FtpProxyError);
    assert.is((e as FtpProxyError).code, 'ENOENT');
  }

  seq = s.nextSeq();
  while (seq % 3 !== 2) seq = s.nextSeq();
  const p = s.request(b.reset().beginMsg(1, 5, seq).endMsg().bytes(), seq, 100, 'slow thing');
  clock.advance(101);
  try {
    await p;
    assert.unreachable();
  } catch (e) {
    assert.is((e as FtpProxyError).code, 'netlink-timeout');
    assert.match((e as Error).message, 'slow thing');
  }
  s.close();
  assert.ok(fake.closed);
});

/** A NetlinkSocket on the fake native and clock, open, with a builder. */
function fakeSocket(): { fake: FakeNative; clock: FakeClock; s: NetlinkSocket; b: NlBuilder } {
  const fake = new FakeNative();
  const clock = new FakeClock();
  const s = new NetlinkSocket({ native: fake.asNative(), clock });
  s.open(12);
  return { fake, clock, s, b: new NlBuilder() };
}

test('NetlinkSocket.request: an answer read with the send arms no timer; a later answer cancels the one it armed', async () => {
  const { fake, clock, s, b } = fakeSocket();
  // the kernel answers within sendto (nfnetlink): read by request's own drain
  fake.onSend = (d) => void fake.inbox.push(errorMsg(0, seqOf(d)));
  let seq = s.nextSeq();
  await s.request(b.reset().beginMsg(1, 5, seq).endMsg().bytes(), seq, 100);
  assert.is(clock.timers.length, 0, 'no timer for an answer that came with the send');
  // no answer yet: a timer is armed, and the answer arriving later cancels it
  fake.onSend = () => undefined;
  seq = s.nextSeq();
  const p = s.request(b.reset().beginMsg(1, 5, seq).endMsg().bytes(), seq, 100);
  assert.is(clock.timers.length, 1);
  assert.ok(clock.timers[0].live);
  fake.deliver(errorMsg(0, seq));
  await p;
  assert.not.ok(clock.timers[0].live, 'cancelled by the answer');
  clock.advance(1000); // nothing left to fire
  s.close();
});

test('NetlinkSocket.requestNow: an ACK read with the send returns null, an error is thrown, no answer yet is a promise', async () => {
  const { fake, clock, s, b } = fakeSocket();
  fake.onSend = (d) => void fake.inbox.push(errorMsg(0, seqOf(d)));
  let seq = s.nextSeq();
  assert.is(s.requestNow(b.reset().beginMsg(1, 5, seq).endMsg().bytes(), seq, 100), null);
  assert.is(clock.timers.length, 0);
  // an error for the batch's BEGIN, read with the send: thrown, not a rejection
  fake.onSend = (d) => void fake.inbox.push(errorMsg(1, seqOf(d)));
  seq = s.nextSeq(3);
  try {
    s.requestNow(b.reset().beginMsg(1, 5, seq).endMsg().bytes(), seq + 1, 100, 'batch', [seq, seq + 2]);
    assert.unreachable('returned');
  } catch (e) {
    assert.instance(e, FtpProxyError);
    assert.is((e as FtpProxyError).code, 'EPERM');
  }
  // unanswered: the promise, settled by the answer that comes later, or by the timer
  fake.onSend = () => undefined;
  seq = s.nextSeq();
  const p = s.requestNow(b.reset().beginMsg(1, 5, seq).endMsg().bytes(), seq, 100);
  assert.instance(p, Promise);
  fake.deliver(errorMsg(2, seq));
  try {
    await p;
    assert.unreachable('resolved');
  } catch (e) {
    assert.is((e as FtpProxyError).code, 'ENOENT');
  }
  seq = s.nextSeq();
  const q = s.requestNow(b.reset().beginMsg(1, 5, seq).endMsg().bytes(), seq, 100, 'slow thing');
  clock.advance(101);
  try {
    await q;
    assert.unreachable('resolved');
  } catch (e) {
    assert.is((e as FtpProxyError).code, 'netlink-timeout');
  }
  // closed: thrown at once
  s.close();
  assert.throws(() => s.requestNow(Buffer.alloc(16), 1, 100), /closed/);
});

test('NetlinkSocket: ENOBUFS is an overrun and the loop goes on; another error is fatal', () => {
  const fake = new FakeNative();
  const s = new NetlinkSocket({ native: fake.asNative(), clock: new FakeClock() });
  s.open(12);
  const got: number[] = [];
  let overruns = 0;
  let fatal: Error | null = null;
  s.onMessage = (m) => void got.push(m.type);
  s.onOverrun = () => void overruns++;
  s.onFatal = (e) => void (fatal = e);
  fake.deliver(PACKET, { code: 'ENOBUFS' }, PACKET);
  assert.is(overruns, 1);
  assert.equal(got, [0x0300, 0x0300]);
  assert.is(fatal, null);
  fake.deliver({ code: 'EBADF' });
  assert.ok(fatal !== null);
  assert.ok(fake.closed);
});

function packetWithId(id: number): Buffer {
  const b = Buffer.from(PACKET);
  b.writeUInt32BE(id, 24); // PACKET_HDR.packet_id
  return b;
}
/** the ids of the NF_ACCEPT verdicts sent */
function verdicts(fake: FakeNative): number[] {
  return fake.sent.filter((d) => d.readUInt16LE(4) === 0x0301).map((d) => {
    assert.is(d.readUInt32BE(24), NF_ACCEPT);
    return d.readUInt32BE(28);
  });
}

async function openedSource(fake: FakeNative, clock = new FakeClock()): Promise<NfqueueSource> {
  fake.onSend = (d) => {
    if ((d.readUInt16LE(6) & NLM_F_ACK) !== 0) {
      fake.inbox.push(fake.bindCode === null ? errorMsg(0, seqOf(d)) : errorMsg(fake.bindCode === 'EPERM' ? 1 : 16, seqOf(d)));
      setImmediate(() => fake.poll?.(0, 1));
    }
  };
  const logs: string[] = [];
  const src = new NfqueueSource({ queue: 10004, logger: { log: (l: Level, m: string) => void logs.push(m) }, native: fake.asNative(), clock });
  await src.open();
  return src;
}

test('NfqueueSource: exactly one verdict per packet whether the handler returns, throws, rejects or resolves later', async () => {
  const fake = new FakeNative();
  const src = await openedSource(fake);
  const later: (() => void)[] = [];
  const done = src.run((p) => {
    const kind = p.data[4]; // we vary one payload byte per packet
    if (kind === 1) throw new Error('sync');
    if (kind === 2) return Promise.reject(new Error('async'));
    if (kind === 3) return new Promise<void>((r) => later.push(r));
    return undefined;
  });
  const pk = (id: number, kind: number): Buffer => {
    const b = packetWithId(id);
    b[32 + 4 + 4] = kind; // payload byte 4
    return b;
  };
  fake.deliver(pk(1, 0), pk(2, 1), pk(3, 2), pk(4, 3), pk(5, 3));
  await new Promise((r) => setImmediate(r));
  assert.equal(verdicts(fake).sort(), [1, 2, 3]);
  later[1]();
  await new Promise((r) => setImmediate(r));
  assert.equal(verdicts(fake).sort(), [1, 2, 3, 5]);
  await src.close(); // releases 4, still held
  assert.equal(verdicts(fake).sort(), [1, 2, 3, 4, 5]);
  later[0](); // settles after close: no second verdict
  await new Promise((r) => setImmediate(r));
  assert.is(verdicts(fake).length, 5);
  await done;
});

test('NfqueueSource: a fatal socket error rejects run()', async () => {
  const fake = new FakeNative();
  const src = await openedSource(fake);
  const done = src.run(() => undefined);
  fake.deliver({ code: 'EBADF' });
  try {
    await done;
    assert.unreachable();
  } catch (e) {
    assert.is((e as FtpProxyError).code, 'nfqueue-lost');
  }
});

test('NfqueueSource: verdicts refused with EPERM (CAP_NET_ADMIN lost) reject run()', async () => {
  const fake = new FakeNative();
  const src = await openedSource(fake);
  const done = src.run(() => undefined);
  fake.deliver(errorMsg(1, 12345, 0x0301));
  try {
    await done;
    assert.unreachable();
  } catch (e) {
    assert.is((e as FtpProxyError).code, 'nfqueue-perm');
  }
});

test('NetlinkSocket.request: an error on another message of the batch (BEGIN) rejects at once', async () => {
  const fake = new FakeNative();
  const clock = new FakeClock();
  const s = new NetlinkSocket({ native: fake.asNative(), clock });
  s.open(12);
  const seq = s.nextSeq(3);
  const p = s.request(Buffer.alloc(16), seq + 1, 100, 'batch', [seq, seq + 2]);
  fake.deliver(errorMsg(0, seq + 2), errorMsg(1, seq)); // an ACK for END settles nothing; EPERM for BEGIN does
  try {
    await p;
    assert.unreachable();
  } catch (e) {
    assert.is((e as FtpProxyError).code, 'EPERM');
  }
  s.close();
});

test('NfqueueSource: bind errors are clear', async () => {
  const fake = new FakeNative();
  fake.bindCode = 'EBUSY';
  try {
    await openedSource(fake);
    assert.unreachable();
  } catch (e) {
    assert.is((e as FtpProxyError).code, 'nfqueue-busy');
    assert.match((e as Error).message, 'NFQUEUE 10004 is in use');
  }
  assert.throws(() => new NfqueueSource({ queue: 70000, logger: { log: () => undefined }, native: fake.asNative() }), /0\.\.65535/);
});

test('NftablesFirewall.close: destroy element (no error to abort); a kernel without it (EINVAL) gets delete from then on', async () => {
  const fake = new FakeNative();
  const lines: string[] = [];
  const fw = new NftablesFirewall({ table: 'inet/filter', logger: { log: (_l: Level, m: string) => void lines.push(m) }, native: fake.asNative() });
  // each batch: BEGIN (20 bytes), then the element message, whose type is at 20 + 4
  const elemType = (d: Buffer): number => d.readUInt16LE(24);
  const answer: Record<number, number> = {}; // element message type -> errno (0: ACK)
  fake.onSend = (d) => void fake.inbox.push(errorMsg(answer[elemType(d)] ?? 0, seqOf(d) + 1, elemType(d)));
  const hole = { family: 6 as const, src: 'fd00:1::2', dst: 'fd00:2::2', port: 40001, rule: 10000, session: 1 };
  const NEW = 0x0a0c;
  const DEL = 0x0a0e;
  const DESTROY = 0x0a1e;
  const types = (): string => fake.sent.map((d) => elemType(d).toString(16)).join(' ');

  assert.is(fw.openNow(hole, 2), undefined, 'ACKed within the send');
  assert.is(await fw.close(hole), true);
  assert.is(types(), `${NEW.toString(16)} ${DESTROY.toString(16)}`);
  // ENOENT from destroy: no set or table (a ruleset reloaded without them), so no element either
  answer[DESTROY] = 2;
  fw.openNow(hole, 2);
  assert.is(await fw.close(hole), true);
  // an error other than "unknown message type" is the caller's to see
  fake.sent.length = 0;
  answer[DESTROY] = 1;
  fw.openNow(hole, 2);
  try {
    await fw.close(hole);
    assert.unreachable('closed');
  } catch (e) {
    assert.is((e as FtpProxyError).code, 'EPERM');
  }
  // Linux before 6.3: EINVAL for type 30; delete then, with ENOENT as success, and only delete after
  fake.sent.length = 0;
  answer[DESTROY] = 22;
  answer[DEL] = 2;
  fw.openNow(hole, 2);
  assert.is(await fw.close(hole), true);
  assert.is(types(), [NEW, DESTROY, DEL].map((t) => t.toString(16)).join(' '));
  assert.is(lines.filter((l) => /no "destroy element"/.test(l)).length, 1);
  fake.sent.length = 0;
  fw.openNow(hole, 2);
  assert.is(await fw.close(hole), true);
  assert.is(types(), [NEW, DEL].map((t) => t.toString(16)).join(' '));
  assert.is(lines.filter((l) => /no "destroy element"/.test(l)).length, 1, 'said once');
  await fw.shutdown();
});

test('NftablesFirewall: rehearse() sends nothing and leaves the next open\'s bytes alone; close keeps its own key across a refused destroy', async () => {
  const fake = new FakeNative();
  const fw = new NftablesFirewall({ table: 'inet/filter', logger: { log: () => undefined }, native: fake.asNative() });
  const elemType = (d: Buffer): number => d.readUInt16LE(24);
  let held: Buffer | null = null; // the destroy, answered later
  fake.onSend = (d) => {
    if (elemType(d) === 0x0a1e && held === null) held = d;
    else fake.inbox.push(errorMsg(0, seqOf(d) + 1, elemType(d)));
  };
  const a = { family: 6 as const, src: 'fd00:1::2', dst: 'fd00:2::2', port: 40001, rule: 10000, session: 1 };
  const b = { family: 6 as const, src: 'fd00:1::3', dst: 'fd00:2::3', port: 40002, rule: 10001, session: 2 };
  fw.openNow(a, 2);
  const plain = fake.sent[0];
  fake.sent.length = 0;
  fw.rehearse(b);
  assert.is(fake.sent.length, 0, 'a rehearsal sends nothing');
  fw.openNow(a, 2);
  // the sequence numbers differ (bytes 8..11 of each message); the rest is the same request
  const body = (d: Buffer): string => {
    const c = Buffer.from(d);
    for (let off = 0; off + 16 <= c.length; off += (c.readUInt32LE(off) + 3) & ~3) c.writeUInt32LE(0, off + 8);
    return c.toString('hex');
  };
  assert.is(body(fake.sent[0]), body(plain), 'the open after a rehearsal');
  // a kernel before 6.3 refuses destroy (EINVAL) after an open of b wrote the shared key buffer
  fake.sent.length = 0;
  const closing = fw.close(a);
  fw.openNow(b, 2);
  assert.ok(held !== null);
  fake.deliver(errorMsg(22, seqOf(held as unknown as Buffer) + 1, 0x0a1e));
  assert.is(await closing, true);
  const del = fake.sent.find((d) => elemType(d) === 0x0a0e);
  assert.ok(del !== undefined, 'delete after the refused destroy');
  const keyOf = (h: typeof a): string => encodeKey(h).toString('hex');
  assert.ok(del.toString('hex').includes(keyOf(a)), 'the delete names a');
  assert.not.ok(del.toString('hex').includes(keyOf(b)), 'not b, whose open came between');
  await fw.shutdown();
});

test('the shim\'s recv: a datagram\'s length into the caller\'s buffer, -1 when nothing waits, errors thrown', () => {
  const real = loadNative();
  const [a, b] = real.socketpair(real.constants.AF_UNIX, real.constants.SOCK_DGRAM, 0);
  try {
    const buf = Buffer.alloc(64);
    assert.is(real.recv(a, buf, 0), -1, 'nothing there: -1, not an exception');
    real.sendto(b, Buffer.from('hello'), null);
    assert.is(real.recv(a, buf, 0), 5);
    assert.is(buf.subarray(0, 5).toString(), 'hello');
    // a datagram longer than the buffer: truncated to it (MSG_TRUNC gives the real length)
    real.sendto(b, Buffer.alloc(100, 0x41), null);
    assert.is(real.recv(a, Buffer.alloc(10), real.constants.MSG_TRUNC), 100);
  } finally {
    real.close(a);
    real.close(b);
  }
  assert.throws(() => real.recv(a, Buffer.alloc(4), 0), (e: Error & { code?: string }) => e.code === 'EBADF');
});

test.run();
