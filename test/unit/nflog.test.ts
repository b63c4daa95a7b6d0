/**
 * NFLOG (shadow-mode capture on Linux): encodings byte by byte, decoding of
 * hostile input, and NflogSource over a simulated netlink socket.
 *
 * Expected bytes are written field by field from the headers:
 * - include/uapi/linux/netlink.h: struct nlmsghdr { u32 len; u16 type; u16 flags;
 *   u32 seq; u32 pid } in host order; struct nlattr { u16 len; u16 type } host
 *   order, payload padded to 4; NLM_F_REQUEST 1, NLM_F_ACK 4; NLMSG_ERROR 2,
 *   NLMSG_DONE 3; NLM_F_MULTI 2.
 * - include/uapi/linux/netfilter/nfnetlink.h: struct nfgenmsg { u8 family;
 *   u8 version; __be16 res_id }; NFNL_SUBSYS_ULOG 4; type = subsys << 8 | msg.
 * - include/uapi/linux/netfilter/nfnetlink_log.h: NFULNL_MSG_PACKET 0,
 *   NFULNL_MSG_CONFIG 1; NFULA_PACKET_HDR 1 { __be16 hw_protocol; u8 hook; u8 _pad },
 *   NFULA_PAYLOAD 9, NFULA_PREFIX 10; NFULA_CFG_CMD 1 { u8 command } packed,
 *   NFULA_CFG_MODE 2 { __be32 copy_range; u8 copy_mode; u8 _pad } packed,
 *   NFULA_CFG_TIMEOUT 4 (__be32), NFULA_CFG_QTHRESH 5 (__be32);
 *   NFULNL_CFG_CMD_BIND 1, UNBIND 2; NFULNL_COPY_PACKET 2.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as os from 'os';
import {
  decodeNflogPacket, encodeNflogCommand, encodeNflogMode, NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND, NflogSource,
} from '../../src/capture/nflog';
import { NlBuilder, parseMessages } from '../../src/netlink';
import { loadNative, Native, POLL_READABLE } from '../../src/native';
import { FtpProxyError, Level, Packet } from '../../src/types';
import { buildTcp } from './build-packet';

const LE = os.endianness() === 'LE';
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
/** host-order u16 / u32 as hex */
const h16 = (v: number): string => { const b = Buffer.alloc(2); if (LE) b.writeUInt16LE(v); else b.writeUInt16BE(v); return hex(b); };
const h32 = (v: number): string => { const b = Buffer.alloc(4); if (LE) b.writeUInt32LE(v); else b.writeUInt32BE(v); return hex(b); };
const nlhdr = (len: number, type: number, flags: number, seq: number) => h32(len) + h16(type) + h16(flags) + h32(seq) + h32(0);

test('encodeNflogCommand: bind group 5', () => {
  const got = hex(encodeNflogCommand(new NlBuilder(), 7, 5, NFULNL_CFG_CMD_BIND).bytes());
  const want =
    nlhdr(28, 0x0401, 0x0005, 7) + // NFNL_SUBSYS_ULOG<<8 | NFULNL_MSG_CONFIG, REQUEST|ACK
    '00' + '00' + '0005' + // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id = group (big-endian)
    h16(5) + h16(1) + '01' + '000000'; // NFULA_CFG_CMD { command = BIND }, padded
  assert.is(got, want);
  const unbind = hex(encodeNflogCommand(new NlBuilder(), 8, 65535, NFULNL_CFG_CMD_UNBIND).bytes());
  assert.is(unbind, nlhdr(28, 0x0401, 0x0005, 8) + '0000ffff' + h16(5) + h16(1) + '02000000');
});

test('encodeNflogMode: copy packet, threshold 1, timeout 1/100 s', () => {
  const got = hex(encodeNflogMode(new NlBuilder(), 9, 10004, 0xffff).bytes());
  const want =
    nlhdr(48, 0x0401, 0x0005, 9) +
    '00' + '00' + '2714' + // res_id 10004 = 0x2714
    h16(10) + h16(2) + '0000ffff' + '02' + '00' + '0000' + // NFULA_CFG_MODE { copy_range, COPY_PACKET, _pad } + pad
    h16(8) + h16(5) + '00000001' + // NFULA_CFG_QTHRESH
    h16(8) + h16(4) + '00000001'; // NFULA_CFG_TIMEOUT
  assert.is(got, want);
});

/** An NFULNL_MSG_PACKET as the kernel sends it (nfnetlink_log.c __build_packet_message). */
function packetMsg(seq: number, group: number, payload: Uint8Array, opts: { prefix?: string; family?: number; flags?: number } = {}): Buffer {
  const b = new NlBuilder();
  b.beginMsg(0x0400, opts.flags ?? 0, seq).nfgen(opts.family ?? 10, group);
  b.attr(1, Buffer.from([0x86, 0xdd, 2, 0])); // hw_protocol ETH_P_IPV6, hook NF_INET_FORWARD
  if (opts.prefix !== undefined) b.str(10, opts.prefix);
  b.attr(9, payload);
  b.endMsg();
  return Buffer.from(b.bytes());
}

const SAMPLE = buildTcp({ family: 6, src: 'fd00:c1::10', dst: 'fd00:5e::10', sport: 40000, dport: 21, seq: 1, payload: 'EPSV\r\n' });

test('decodeNflogPacket: fields, and null for anything malformed', () => {
  const [m] = parseMessages(packetMsg(0, 10004, SAMPLE, { prefix: 'ftp' }));
  const p = decodeNflogPacket(m);
  assert.ok(p !== null);
  assert.is(p!.family, 10);
  assert.is(p!.group, 10004);
  assert.is(p!.hwProtocol, 0x86dd);
  assert.is(p!.hook, 2);
  assert.is(p!.prefix, 'ftp');
  assert.is(hex(p!.payload), hex(SAMPLE));

  const bad: Array<[string, Buffer]> = [];
  bad.push(['a config message', Buffer.from(encodeNflogCommand(new NlBuilder(), 1, 1, 1).bytes())]);
  const noPayload = new NlBuilder().beginMsg(0x0400, 0, 0).nfgen(2, 1).attr(1, Buffer.from([8, 0, 2, 0])).endMsg();
  bad.push(['no NFULA_PAYLOAD', Buffer.from(noPayload.bytes())]);
  const broken = packetMsg(0, 1, SAMPLE);
  broken.writeUInt16LE(0xfff0, 20); // first attribute claims more bytes than there are (LE host)
  if (LE) bad.push(['attribute overruns the message', broken]);
  const short = new NlBuilder().beginMsg(0x0400, 0, 0).raw(Buffer.from([2, 0])).endMsg();
  bad.push(['shorter than nfgenmsg', Buffer.from(short.bytes())]);
  for (const [what, buf] of bad) {
    const msgs = parseMessages(buf);
    assert.is(msgs.length, 1, what);
    assert.is(decodeNflogPacket(msgs[0]), null, what);
  }
});

// ---- NflogSource over a simulated kernel --------------------------------------------
// socket() hands out one end of a real AF_UNIX datagram socketpair; the test
// plays the kernel on the other end: it ACKs config messages (or answers an
// errno) and sends packet messages.

interface FakeKernel {
  native: Native;
  configs: Array<{ type: number; flags: number; resId: number; attrs: string }>;
  send: (data: Buffer) => void;
  stop: () => void;
}

function fakeKernel(real: Native, bindErrno = 0): FakeKernel {
  const configs: FakeKernel['configs'] = [];
  let peer = -1;
  let poller: { stop(): void } | null = null;
  const buf = Buffer.alloc(65536);
  const ack = (seq: number, type: number, errno: number): Buffer => {
    const b = Buffer.alloc(36);
    const w32 = (v: number, o: number) => (LE ? b.writeInt32LE(v, o) : b.writeInt32BE(v, o));
    const w16 = (v: number, o: number) => (LE ? b.writeUInt16LE(v, o) : b.writeUInt16BE(v, o));
    w32(36, 0); w16(2, 4); w16(0, 6); w32(seq, 8); w32(0, 12); // NLMSG_ERROR
    w32(-errno, 16); // nlmsgerr.error
    w32(16, 20); w16(type, 24); w32(seq, 28); // echoed request header
    return b;
  };
  const native: Native = {
    ...real,
    socket(): number {
      const [ours, p] = real.socketpair(real.constants.AF_UNIX, real.constants.SOCK_DGRAM, 0);
      peer = p;
      const pl = new real.Poller(p, () => {
        for (;;) {
          const r = real.recvfrom(p, buf, 0);
          if (r === null) return;
          for (const m of parseMessages(buf, r.n)) {
            const attrs = hex(m.payload.subarray(4));
            configs.push({ type: m.type, flags: m.flags, resId: m.payload.readUInt16BE(2), attrs });
            const isBind = m.payload.length >= 9 && m.payload[4 + 4] === NFULNL_CFG_CMD_BIND && m.payload[6] === 1;
            try {
              if ((m.flags & 4) !== 0) real.sendto(p, ack(m.seq, m.type, isBind ? bindErrno : 0), null);
            } catch {
              // the source closed its end after the UNBIND: nobody reads the ACK
            }
          }
        }
      });
      pl.start(POLL_READABLE);
      poller = pl;
      return ours;
    },
    bind(): void {},
    setsockopt(): void {},
    sendto(fd: number, data: Buffer): number {
      return real.sendto(fd, data, null);
    },
    close(fd: number): void {
      real.close(fd);
    },
  };
  return {
    native,
    configs,
    send: (data) => void real.sendto(peer, data, null),
    stop: () => { poller?.stop(); if (peer >= 0) real.close(peer); },
  };
}

const logger = (lines: string[]) => ({ log: (l: Level, m: string) => void lines.push(`${l}: ${m}`) });
const until = async (cond: () => boolean) => {
  for (let i = 0; i < 100 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
};

test('NflogSource: binds, sets copy mode, delivers copies in order, unbinds at close', async () => {
  const k = fakeKernel(loadNative());
  const lines: string[] = [];
  const src = new NflogSource({ group: 10004, logger: logger(lines), native: k.native });
  try {
    await src.open();
    assert.equal(k.configs.map((c) => [c.type, c.flags, c.resId]), [[0x0401, 5, 10004], [0x0401, 5, 10004]]);
    assert.is(k.configs[0].attrs, h16(5) + h16(1) + '01000000');
    const got: Packet[] = [];
    let calls = 0;
    const running = src.run((p) => {
      calls++;
      got.push(p);
      // a failing handler must not stop the capture
      if (calls === 1) return Promise.reject(new Error('boom'));
    });
    const second = buildTcp({ family: 6, src: 'fd00:5e::10', dst: 'fd00:c1::10', sport: 21, dport: 40000, seq: 9, payload: '229 (|||40000|)\r\n' });
    // two packets in one datagram, as a batch ends: NLM_F_MULTI, then NLMSG_DONE
    const done = new NlBuilder().beginMsg(3, 2, 0).raw(Buffer.alloc(4)).endMsg();
    k.send(Buffer.concat([packetMsg(0, 10004, SAMPLE, { flags: 2 }), packetMsg(0, 10004, second, { flags: 2 }), Buffer.from(done.bytes())]));
    k.send(packetMsg(0, 10004, SAMPLE));
    await until(() => got.length >= 3);
    assert.equal(got.map((p) => hex(p.data)), [hex(SAMPLE), hex(second), hex(SAMPLE)]);
    assert.ok(lines.some((l) => /^err: NFLOG group 10004: packet handler failed: boom/.test(l)), lines.join('\n'));
    await src.close();
    await running;
    await until(() => k.configs.length >= 3);
    assert.is(k.configs[2].attrs, h16(5) + h16(1) + '02000000'); // UNBIND
  } finally {
    k.stop();
  }
});

test('NflogSource: a group bound elsewhere is a clear fatal error', async () => {
  const k = fakeKernel(loadNative(), 16 /* EBUSY */);
  try {
    const src = new NflogSource({ group: 3, logger: logger([]), native: k.native });
    await src.open();
    assert.unreachable('opened');
  } catch (e) {
    assert.instance(e, FtpProxyError);
    assert.is((e as FtpProxyError).code, 'nflog-busy');
    assert.ok((e as FtpProxyError).fatal);
  } finally {
    k.stop();
  }
  assert.throws(() => new NflogSource({ group: 70000, logger: logger([]) }), /0\.\.65535/);
});

test.run();
