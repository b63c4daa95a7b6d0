/**
 * Capture for the Linux `nftables` module: NFQUEUE over NETLINK_NETFILTER.
 *
 * The kernel queues each FTP control packet to us (iptables/ip6tables
 * `-j NFQUEUE --queue-num <p>`), we hand it to the engine and give the
 * ACCEPT verdict once the handler's promise has settled, i.e. once the hole
 * it announced is in place.  The verdict is the reinjection: nothing is
 * rewritten.  Every packet gets exactly one verdict, also when the handler
 * throws or rejects, and at close() the ones still held are accepted.
 *
 * Layouts: include/uapi/linux/netfilter/nfnetlink_queue.h
 */
import * as fs from 'fs';
import { Native } from '../native';
import {
  openCapture,
  NFNL_SUBSYS_QUEUE,
  NFPROTO_UNSPEC,
  NLM_F_ACK,
  NLM_F_REQUEST,
  NetlinkSocket,
  NlBuilder,
  NlMessage,
  defaultClock,
  nfnlType,
  walkAttrs,
  writeU32H,
} from '../netlink';
import { Clock, FtpProxyError, Logger, Packet, PacketHandler, PacketSource, Timer } from '../types';

// ---- include/uapi/linux/netfilter/nfnetlink_queue.h ---------------------------
/* enum nfqnl_msg_types */
export const NFQNL_MSG_PACKET = 0;
export const NFQNL_MSG_VERDICT = 1;
export const NFQNL_MSG_CONFIG = 2;
/* enum nfqnl_attr_type */
export const NFQA_PACKET_HDR = 1; // struct nfqnl_msg_packet_hdr (7 bytes, packed)
export const NFQA_VERDICT_HDR = 2; // struct nfqnl_msg_verdict_hdr (8 bytes)
export const NFQA_MARK = 3; // __be32: the packet's mark (skb->mark); in a verdict, its new mark
export const NFQA_PAYLOAD = 10;
/* enum nfqnl_attr_config */
export const NFQA_CFG_CMD = 1; // struct nfqnl_msg_config_cmd { u8 command; u8 pad; __be16 pf; }
export const NFQA_CFG_PARAMS = 2; // struct nfqnl_msg_config_params { __be32 copy_range; u8 copy_mode; } packed
export const NFQA_CFG_QUEUE_MAXLEN = 3; // __be32
export const NFQA_CFG_MASK = 4; // __be32
export const NFQA_CFG_FLAGS = 5; // __be32
/* enum nfqnl_msg_config_cmds */
export const NFQNL_CFG_CMD_BIND = 1;
export const NFQNL_CFG_CMD_UNBIND = 2;
/* enum nfqnl_config_mode */
export const NFQNL_COPY_PACKET = 2;
export const NFQA_CFG_F_FAIL_OPEN = 1 << 0;
/* include/uapi/linux/netfilter.h */
export const NF_DROP = 0;
export const NF_ACCEPT = 1;

const MSG_PACKET = nfnlType(NFNL_SUBSYS_QUEUE, NFQNL_MSG_PACKET);
const MSG_VERDICT = nfnlType(NFNL_SUBSYS_QUEUE, NFQNL_MSG_VERDICT);
const MSG_CONFIG = nfnlType(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG);

/** NFQNL_MSG_CONFIG with NFQA_CFG_CMD (bind/unbind) for `queue`, asking for an ACK. */
export function encodeNfqCommand(b: NlBuilder, seq: number, queue: number, command: number, pf = 0): NlBuilder {
  const cmd = Buffer.alloc(4);
  cmd[0] = command; // command, then _pad = 0
  cmd.writeUInt16BE(pf, 2); // __be16 pf, only for the obsolete PF_[UN]BIND
  return b
    .beginMsg(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq)
    .nfgen(NFPROTO_UNSPEC, queue)
    .attr(NFQA_CFG_CMD, cmd)
    .endMsg();
}

/**
 * NFQNL_MSG_CONFIG: copy whole packets (up to `range` bytes) and set `flags`
 * (under mask `flags`) — we pass NFQA_CFG_F_FAIL_OPEN.
 */
export function encodeNfqParams(b: NlBuilder, seq: number, queue: number, range: number, flags: number): NlBuilder {
  const params = Buffer.alloc(5);
  params.writeUInt32BE(range >>> 0, 0); // __be32 copy_range
  params[4] = NFQNL_COPY_PACKET; // u8 copy_mode
  return b
    .beginMsg(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq)
    .nfgen(NFPROTO_UNSPEC, queue)
    .attr(NFQA_CFG_PARAMS, params)
    .u32be(NFQA_CFG_MASK, flags)
    .u32be(NFQA_CFG_FLAGS, flags)
    .endMsg();
}

/**
 * NFQNL_MSG_VERDICT: NFQA_VERDICT_HDR { __be32 verdict; __be32 id; }, no ACK.
 * With `mark`, also NFQA_MARK: the packet goes on with that mark (the whole
 * 32 bits: nfqnl_recv_verdict assigns skb->mark).  Selective queueing uses
 * it to tell a later rule what to copy into the connection's mark; NFQA_CT
 * would do it directly but needs CONFIG_NETFILTER_NETLINK_GLUE_CT, which
 * kernels (ours among them) may lack.
 */
export function encodeNfqVerdict(b: NlBuilder, seq: number, queue: number, id: number, verdict: number, mark?: number): NlBuilder {
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32BE(verdict >>> 0, 0);
  hdr.writeUInt32BE(id >>> 0, 4);
  b.beginMsg(MSG_VERDICT, NLM_F_REQUEST, seq).nfgen(NFPROTO_UNSPEC, queue).attr(NFQA_VERDICT_HDR, hdr);
  if (mark !== undefined) b.u32be(NFQA_MARK, mark >>> 0);
  return b.endMsg();
}

/**
 * encodeNfqVerdict's two layouts for one queue (without and with NFQA_MARK),
 * encoded once: a verdict differs only in its sequence number, verdict,
 * packet id and mark, which fill() writes in place.  The bytes are
 * encodeNfqVerdict's (test/unit/netlink.test.ts compares them).  Every
 * packet gets a verdict, so this saves building the message each time.
 */
export class NfqVerdicts {
  private readonly plain: Buffer;
  private readonly marked: Buffer;

  constructor(queue: number) {
    this.plain = Buffer.from(encodeNfqVerdict(new NlBuilder(64), 0, queue, 0, NF_ACCEPT).bytes());
    this.marked = Buffer.from(encodeNfqVerdict(new NlBuilder(64), 0, queue, 0, NF_ACCEPT, 0).bytes());
  }

  /** The verdict message; valid until the next fill. */
  fill(seq: number, id: number, verdict: number, mark?: number): Buffer {
    const b = mark === undefined ? this.plain : this.marked;
    writeU32H(b, seq, 8); // nlmsg_seq (struct nlmsghdr), host order
    // NFQA_VERDICT_HDR's payload after nlmsghdr (16), nfgenmsg (4) and its nlattr (4)
    b.writeUInt32BE(verdict >>> 0, 24);
    b.writeUInt32BE(id >>> 0, 28);
    if (mark !== undefined) b.writeUInt32BE(mark >>> 0, 36); // NFQA_MARK's payload, after its nlattr
    return b;
  }
}

export interface NfqPacket {
  queue: number;
  id: number;
  hwProtocol: number;
  hook: number;
  /** the packet's mark (0 when the kernel sent no NFQA_MARK, i.e. the mark is 0) */
  mark: number;
  /** the packet from its IP header on (a view into the receive buffer) */
  payload: Buffer;
}

/**
 * Decode an NFQNL_MSG_PACKET.  Returns null for anything else or for
 * malformed input; never throws.  A packet without NFQA_PAYLOAD decodes
 * with an empty payload, so it still gets its verdict.
 */
export function decodeNfqPacket(msg: NlMessage): NfqPacket | null {
  if (msg.type !== MSG_PACKET || msg.payload.length < 4) return null;
  const b = msg.payload;
  const queue = b.readUInt16BE(2); // nfgenmsg.res_id
  // The three attributes we use, picked in one pass (attrMap's rules: a
  // malformed attribute fails the message, the last of a type wins), with
  // no list or map built for the others: this runs for every packet.
  let hdrAt = -1;
  let hdrLen = 0;
  let markAt = -1;
  let payAt = -1;
  let payEnd = -1;
  const ok = walkAttrs(b, 4, (type, _nested, start, end) => {
    if (type === NFQA_PACKET_HDR) {
      hdrAt = start;
      hdrLen = end - start;
    } else if (type === NFQA_MARK) {
      markAt = end - start >= 4 ? start : -1;
    } else if (type === NFQA_PAYLOAD) {
      payAt = start;
      payEnd = end;
    }
  });
  if (!ok || hdrAt < 0 || hdrLen < 7) return null;
  return {
    queue,
    id: b.readUInt32BE(hdrAt),
    hwProtocol: b.readUInt16BE(hdrAt + 4),
    hook: b[hdrAt + 6],
    mark: markAt >= 0 ? b.readUInt32BE(markAt) : 0,
    payload: payAt >= 0 ? b.subarray(payAt, payEnd) : Buffer.alloc(0),
  };
}

/** CAP_NET_ADMIN (bit 12) in the effective set, from /proc/self/status */
function hasNetAdmin(): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m !== null) return (BigInt('0x' + m[1]) & (1n << 12n)) !== 0n;
  } catch {
    /* not Linux: fall through */
  }
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export const DEFAULT_HOLD_LIMIT_MS = 5000;

export interface NfqueueOptions {
  queue: number;
  logger: Logger;
  native?: Native;
  clock?: Clock;
  /** wait for the kernel's ACK of each config message (default 2000 ms) */
  ackTimeoutMs?: number;
  /** SO_RCVBUFFORCE size (default 8 MiB) */
  rcvbuf?: number;
  /** longest hold of a packet whose handler has not settled (default 5000 ms) */
  holdLimitMs?: number;
  /**
   * Selective queueing (-s): the mark bit that makes the kernel queue every
   * packet of the server.  A packet's verdict sets or clears it in the
   * packet's mark as the engine's `seeAll` says (the other bits are kept);
   * the ruleset copies it into the connection's mark.  Unset: verdicts
   * leave the mark alone.
   */
  seeAllMark?: number;
}

export class NfqueueSource implements PacketSource {
  readonly kind = 'nfqueue';
  private readonly queue: number;
  private readonly holdLimitMs: number;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly ackTimeoutMs: number;
  private readonly rcvbuf: number;
  private readonly seeAllMark: number;
  private readonly sock: NetlinkSocket;
  /** the verdict messages, filled in for each packet: sendto copies them synchronously */
  private readonly verdicts: NfqVerdicts;
  /** packet ids handed to the handler and not yet given their verdict */
  private readonly inFlight = new Set<number>();
  /** packets held by a handler's promise, in arrival order: when to release them anyway */
  private readonly held = new Map<number, { until: number; done: () => void }>();
  /** the one backstop timer of all held packets, or null */
  private backstop: Timer | null = null;
  private handler: PacketHandler | null = null;
  /** packets that arrived between open() and run(), held for the handler */
  private early: { id: number; mark: number; data: Uint8Array; time: number }[] = [];
  private finish: { resolve: () => void; reject: (e: Error) => void } | null = null;
  private closed = false;

  constructor(opts: NfqueueOptions) {
    if (!Number.isInteger(opts.queue) || opts.queue < 0 || opts.queue > 65535) {
      throw new FtpProxyError('usage', `NFQUEUE number must be 0..65535, not ${opts.queue}`);
    }
    this.queue = opts.queue;
    this.holdLimitMs = opts.holdLimitMs ?? DEFAULT_HOLD_LIMIT_MS;
    this.logger = opts.logger;
    this.clock = opts.clock ?? defaultClock();
    this.ackTimeoutMs = opts.ackTimeoutMs ?? 2000;
    this.rcvbuf = opts.rcvbuf ?? 8 * 1024 * 1024;
    this.seeAllMark = (opts.seeAllMark ?? 0) >>> 0;
    this.verdicts = new NfqVerdicts(this.queue);
    this.sock = new NetlinkSocket({ native: opts.native, clock: this.clock, logger: opts.logger });
  }

  async open(): Promise<void> {
    // NFQNL_CFG_CMD_PF_UNBIND/PF_BIND are no-ops since Linux 3.8; not sent.
    // Copy whole packets.  FAIL_OPEN: when our queue is full the kernel
    // accepts the packet instead of dropping it, so a slow ftp6proxy can
    // miss a hole but never stalls the FTP control connection.
    await openCapture(this.sock, {
      name: 'nfqueue',
      rcvbuf: this.rcvbuf,
      ackTimeoutMs: this.ackTimeoutMs,
      logger: this.logger,
      onMessage: (msg) => this.onMessage(msg),
      steps: [
        {
          build: (b, seq) => encodeNfqCommand(b, seq, this.queue, NFQNL_CFG_CMD_BIND),
          what: `NFQUEUE ${this.queue} bind`,
          error: (e) => this.bindError(e),
        },
        {
          build: (b, seq) => encodeNfqParams(b, seq, this.queue, 0xffff, NFQA_CFG_F_FAIL_OPEN),
          what: `NFQUEUE ${this.queue} config`,
          error: (e) => new FtpProxyError('nfqueue-config', `cannot configure NFQUEUE ${this.queue}: ${(e as Error).message}`, { fatal: true, cause: e }),
        },
      ],
    });
  }

  private bindError(e: unknown): FtpProxyError {
    const code = (e as { code?: unknown }).code;
    if (code === 'EPERM') {
      // nfnetlink refuses without CAP_NET_ADMIN; nfnetlink_queue answers
      // EPERM too when another socket has the queue bound.
      return hasNetAdmin()
        ? new FtpProxyError('nfqueue-busy', `NFQUEUE ${this.queue} is in use (bound by another process)`, { fatal: true, cause: e })
        : new FtpProxyError('nfqueue-perm', `NFQUEUE ${this.queue}: binding a queue needs root (CAP_NET_ADMIN)`, { fatal: true, cause: e });
    }
    if (code === 'EBUSY') {
      return new FtpProxyError('nfqueue-busy', `NFQUEUE ${this.queue} is in use (bound by another process)`, { fatal: true, cause: e });
    }
    return new FtpProxyError('nfqueue-bind', `cannot bind NFQUEUE ${this.queue}: ${(e as Error).message}`, { fatal: true, cause: e });
  }

  run(handler: PacketHandler): Promise<void> {
    if (!this.sock.isOpen || this.closed) return Promise.reject(new FtpProxyError('nfqueue-closed', 'NFQUEUE source is not open'));
    this.handler = handler;
    return new Promise<void>((resolve, reject) => {
      this.finish = { resolve, reject };
      this.sock.onOverrun = () =>
        this.logger.log('warning', `NFQUEUE ${this.queue}: queue overrun: packets lost to the kernel's fail-open/drop`);
      this.sock.onFatal = (err) =>
        this.fail(new FtpProxyError('nfqueue-lost', `NFQUEUE ${this.queue}: capture lost: ${err.message}`, { fatal: true, cause: err }));
      this.sock.onError = (e) => {
        if (e.reqType === MSG_VERDICT && e.code === 'EPERM') {
          // nfnetlink checks CAP_NET_ADMIN of the *sending* process too
          // (netlink_net_capable), so after setuid without keeping the
          // capability no verdict is accepted and every packet stays held.
          this.fail(new FtpProxyError('nfqueue-perm', `NFQUEUE ${this.queue}: the kernel refuses our verdicts (EPERM): this process lacks CAP_NET_ADMIN`, { fatal: true }));
        } else {
          this.logger.log('warning', `NFQUEUE ${this.queue}: netlink error ${e.code} for message type 0x${e.reqType.toString(16)}`);
        }
      };
      const early = this.early;
      this.early = [];
      for (const e of early) this.deliver(e.id, { data: e.data, time: e.time }, e.mark);
      this.sock.drain();
    });
  }

  private fail(err: FtpProxyError): void {
    this.inFlight.clear();
    this.early = [];
    this.closed = true;
    this.sock.close();
    const f = this.finish;
    this.finish = null;
    f?.reject(err);
  }

  private onMessage(msg: NlMessage): void {
    const p = decodeNfqPacket(msg);
    if (p === null) {
      this.logger.log('debug', `NFQUEUE ${this.queue}: ignored netlink message type 0x${msg.type.toString(16)}`);
      return;
    }
    if (this.closed) this.verdict(p.id);
    // Held for run(): a copy, since the receive buffer is reused.
    else if (this.handler === null) this.early.push({ id: p.id, mark: p.mark, data: new Uint8Array(p.payload), time: this.clock.now() });
    // A view into the receive buffer, no copy: the handler reads it while it
    // runs and copies what it keeps (Packet.data), and the buffer is not read
    // into again before the handler has returned.
    // (a plain Uint8Array over the same memory, so that slice() copies as it
    // does for every other source's packets, where a Buffer's would not)
    else this.deliver(p.id, { data: new Uint8Array(p.payload.buffer, p.payload.byteOffset, p.payload.length), time: this.clock.now() }, p.mark);
  }

  private deliver(id: number, pkt: Packet, mark: number): void {
    const handler = this.handler;
    if (handler === null) return;
    this.inFlight.add(id);
    let result: Promise<void> | void;
    try {
      result = handler(pkt);
    } catch (e) {
      this.logger.log('err', `NFQUEUE ${this.queue}: packet handler threw: ${e instanceof Error ? e.message : String(e)}`);
      this.release(id, pkt, mark);
      return;
    }
    if (result === undefined || typeof (result as Promise<void>).then !== 'function') {
      this.release(id, pkt, mark);
      return;
    }
    const done = (): void => this.release(id, pkt, mark);
    // A backstop: whatever the handler waits for, the control packet goes on
    // after holdLimitMs (the hole manager's own bound per firewall call is
    // shorter; this covers a packet that announced several holes).
    this.held.set(id, { until: this.clock.now() + this.holdLimitMs, done });
    if (this.backstop === null) this.armBackstop(this.holdLimitMs);
    (result as Promise<void>).then(
      () => {
        this.held.delete(id);
        done();
      },
      (e: unknown) => {
        this.held.delete(id);
        this.logger.log('err', `NFQUEUE ${this.queue}: packet handler failed: ${e instanceof Error ? e.message : String(e)}`);
        done();
      },
    );
  }

  /**
   * One timer serves every held packet.  A packet released in time (the
   * usual case) leaves it running rather than cancelling it: it fires at
   * most once per holdLimitMs, and arms again only while packets are held.
   */
  private armBackstop(ms: number): void {
    this.backstop = this.clock.setTimer(ms, () => {
      this.backstop = null;
      const now = this.clock.now();
      for (const [id, h] of this.held) {
        // Arrival order is deadline order; 1 ms of slack for the clock's
        // rounding.  A deadline further than holdLimitMs away means the wall
        // clock went back: that packet has waited long enough too.
        const left = h.until - now;
        if (left > 1 && left <= this.holdLimitMs) {
          this.armBackstop(left);
          return;
        }
        this.held.delete(id);
        if (!this.inFlight.has(id)) continue;
        this.logger.log('warning', `NFQUEUE ${this.queue}: packet ${id} released after ${this.holdLimitMs} ms without its holes`);
        h.done();
      }
    });
  }

  /** the verdict for a packet the handler had, unless close() already gave it */
  private release(id: number, pkt: Packet, mark: number): void {
    if (!this.inFlight.delete(id)) return;
    const m = this.seeAllMark;
    this.verdict(id, m !== 0 && pkt.seeAll !== undefined ? ((mark & ~m) | (pkt.seeAll ? m : 0)) >>> 0 : undefined);
  }

  private verdict(id: number, mark?: number): void {
    if (!this.sock.isOpen) return;
    try {
      this.sock.send(this.verdicts.fill(this.sock.nextSeq(), id, NF_ACCEPT, mark));
    } catch (e) {
      // The packet stays queued until the socket closes; then the kernel
      // drops it.  Nothing better to do than say so.
      this.logger.log('err', `NFQUEUE ${this.queue}: verdict for packet ${id} failed: ${(e as Error).message}`);
    }
  }

  async close(): Promise<void> {
    if (this.closed && !this.sock.isOpen) return;
    this.closed = true;
    this.held.clear();
    this.backstop?.cancel();
    this.backstop = null;
    if (this.sock.isOpen) {
      // Accept what the kernel already queued to us and what handlers hold:
      // unbinding would otherwise drop those packets.
      this.sock.drain();
      for (const id of this.inFlight) this.verdict(id);
      this.inFlight.clear();
      for (const e of this.early) this.verdict(e.id);
      this.early = [];
      this.sock.close();
    }
    const f = this.finish;
    this.finish = null;
    f?.resolve();
  }
}
