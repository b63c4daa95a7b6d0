/**
 * Generic netlink, in TypeScript over the native shim: message and attribute
 * encoding/decoding, nfnetlink headers and batches, and a small socket class
 * that matches ACKs to requests by sequence number.
 *
 * Layouts and constants come from the Linux UAPI headers, cited next to each
 * group below (values checked against torvalds/linux and /usr/include/linux):
 *   include/uapi/linux/netlink.h
 *   include/uapi/linux/netfilter/nfnetlink.h
 *   include/uapi/linux/netfilter/nfnetlink_queue.h
 *   include/uapi/linux/netfilter/nf_tables.h
 *
 * Byte order: netlink headers (nlmsghdr, nlattr) are in host order; nfnetlink
 * payloads (nfgenmsg.res_id, most netfilter attributes) are big-endian.  Host
 * order is read from os.endianness() once, not assumed.
 */
import * as os from 'os';
import { constants as osConstants } from 'os';
import { loadNative, Native, POLL_READABLE, PollerHandle } from './native';
import { Clock, FtpProxyError, Logger, Timer } from './types';

// ---- include/uapi/linux/netlink.h -------------------------------------------
export const AF_NETLINK = 16; // include/linux/socket.h
export const NETLINK_NETFILTER = 12;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_ECHO = 0x8;
/* modifiers to GET requests */
export const NLM_F_ROOT = 0x100;
export const NLM_F_MATCH = 0x200;
export const NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
/* modifiers to NEW requests */
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_APPEND = 0x800;
/* flags on an NLMSG_ERROR acknowledgement */
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;
export const NLMSG_NOOP = 0x1;
export const NLMSG_ERROR = 0x2;
export const NLMSG_DONE = 0x3;
export const NLMSG_OVERRUN = 0x4;
export const NLA_F_NESTED = 1 << 15;
export const NLA_F_NET_BYTEORDER = 1 << 14;
export const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;
/** sizeof(struct nlmsghdr): u32 len, u16 type, u16 flags, u32 seq, u32 pid */
export const NLMSG_HDRLEN = 16;
/** sizeof(struct nlattr): u16 len, u16 type */
export const NLA_HDRLEN = 4;
/** include/uapi/linux/socket.h: SOL_NETLINK = 270; netlink.h: NETLINK_NO_ENOBUFS = 5 */
export const SOL_NETLINK = 270;
export const NETLINK_NO_ENOBUFS = 5;
/** sizeof(struct sockaddr_nl): u16 family, u16 pad, u32 pid, u32 groups */
export const SOCKADDR_NL_LEN = 12;

// ---- include/uapi/linux/netfilter/nfnetlink.h ---------------------------------
/** sizeof(struct nfgenmsg): u8 nfgen_family, u8 version, __be16 res_id */
export const NFGENMSG_LEN = 4;
export const NFNETLINK_V0 = 0;
export const NFNL_MSG_BATCH_BEGIN = NLMSG_DONE + 13; // NLMSG_MIN_TYPE (0x10)
export const NFNL_MSG_BATCH_END = NLMSG_DONE + 14; // 0x11
export const NFNL_SUBSYS_QUEUE = 3;
export const NFNL_SUBSYS_NFTABLES = 10;
/** nlmsg_type of nfnetlink messages: subsystem in the high byte */
export function nfnlType(subsys: number, msg: number): number {
  return ((subsys & 0xff) << 8) | (msg & 0xff);
}

/** include/uapi/linux/netfilter.h: NFPROTO_* (nfgen_family) */
export const NFPROTO_UNSPEC = 0;
export const NFPROTO_INET = 1;
export const NFPROTO_IPV4 = 2;
export const NFPROTO_ARP = 3;
export const NFPROTO_NETDEV = 5;
export const NFPROTO_BRIDGE = 7;
export const NFPROTO_IPV6 = 10;

const HOST_LE = os.endianness() === 'LE';

/** Inverse of os.constants.errno, built once; read-only afterwards. */
const ERRNO_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(osConstants.errno).map(([name, num]) => [num, name] as [number, string]),
);

/** errno number -> name ("ENOENT"), or "E<n>" when unknown */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}

export function align4(n: number): number {
  return (n + 3) & ~3;
}

// ---- host-order accessors -----------------------------------------------------
export function readU16H(b: Buffer, off: number): number {
  return HOST_LE ? b.readUInt16LE(off) : b.readUInt16BE(off);
}
export function readU32H(b: Buffer, off: number): number {
  return HOST_LE ? b.readUInt32LE(off) : b.readUInt32BE(off);
}
export function readI32H(b: Buffer, off: number): number {
  return HOST_LE ? b.readInt32LE(off) : b.readInt32BE(off);
}
function writeU16H(b: Buffer, v: number, off: number): void {
  if (HOST_LE) b.writeUInt16LE(v, off);
  else b.writeUInt16BE(v, off);
}
export function writeU32H(b: Buffer, v: number, off: number): void {
  if (HOST_LE) b.writeUInt32LE(v >>> 0, off);
  else b.writeUInt32BE(v >>> 0, off);
}
/** a big-endian u64 (netfilter's __be64) from a number: floored, negative as 0 */
export function writeU64BE(b: Buffer, v: number, off: number): void {
  const n = Math.max(0, Math.floor(v));
  if (!(n < 2 ** 64)) throw new RangeError(`${v} does not fit in 64 bits`);
  // two 32-bit halves, each exact, without allocating a BigInt
  b.writeUInt32BE(Math.floor(n / 0x100000000) >>> 0, off);
  b.writeUInt32BE(n >>> 0, off + 4);
}

/** struct sockaddr_nl for the kernel (pid 0, no multicast groups). */
export function sockaddrNl(pid = 0, groups = 0): Buffer {
  const b = Buffer.alloc(SOCKADDR_NL_LEN);
  writeU16H(b, AF_NETLINK, 0); // nl_family; nl_pad stays 0
  writeU32H(b, pid, 4);
  writeU32H(b, groups, 8);
  return b;
}

/**
 * Writes netlink messages into one growable buffer that is reused between
 * calls (reset()), so the hot path allocates nothing once warmed up.
 * Messages and nests are closed in order; lengths are patched on close.
 */
export class NlBuilder {
  private buf: Buffer;
  private pos = 0;
  private msgStart = -1;
  private readonly nests: number[] = [];

  constructor(initialSize = 1024) {
    this.buf = Buffer.alloc(initialSize);
  }

  reset(): this {
    this.pos = 0;
    this.msgStart = -1;
    this.nests.length = 0;
    return this;
  }

  get length(): number {
    return this.pos;
  }

  /** The bytes written so far (a view: valid until the next write or reset). */
  bytes(): Buffer {
    if (this.msgStart >= 0 || this.nests.length > 0) throw new Error('netlink builder: unclosed message or nest');
    return this.buf.subarray(0, this.pos);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const nb = Buffer.alloc(size);
    this.buf.copy(nb, 0, 0, this.pos);
    this.buf = nb;
  }

  private pad(): void {
    const p = align4(this.pos);
    this.ensure(p - this.pos);
    this.buf.fill(0, this.pos, p);
    this.pos = p;
  }

  /** struct nlmsghdr, host order; nlmsg_len patched by endMsg() */
  beginMsg(type: number, flags: number, seq: number, pid = 0): this {
    if (this.msgStart >= 0) throw new Error('netlink builder: message already open');
    this.pad();
    this.ensure(NLMSG_HDRLEN);
    this.msgStart = this.pos;
    writeU32H(this.buf, 0, this.pos);
    writeU16H(this.buf, type, this.pos + 4);
    writeU16H(this.buf, flags, this.pos + 6);
    writeU32H(this.buf, seq, this.pos + 8);
    writeU32H(this.buf, pid, this.pos + 12);
    this.pos += NLMSG_HDRLEN;
    return this;
  }

  endMsg(): this {
    if (this.msgStart < 0 || this.nests.length > 0) throw new Error('netlink builder: no message to end');
    this.pad();
    writeU32H(this.buf, this.pos - this.msgStart, this.msgStart);
    this.msgStart = -1;
    return this;
  }

  /** struct nfgenmsg: family, NFNETLINK_V0, res_id big-endian */
  nfgen(family: number, resId = 0): this {
    this.ensure(NFGENMSG_LEN);
    this.buf[this.pos] = family & 0xff;
    this.buf[this.pos + 1] = NFNETLINK_V0;
    this.buf.writeUInt16BE(resId & 0xffff, this.pos + 2);
    this.pos += NFGENMSG_LEN;
    return this;
  }

  /** raw bytes in the message body (fixed headers such as nfgenmsg) */
  raw(data: Uint8Array): this {
    this.ensure(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
    return this;
  }

  /** struct nlattr + payload, padded to 4 bytes */
  attr(type: number, data: Uint8Array): this {
    const len = NLA_HDRLEN + data.length;
    if (len > 0xffff) throw new Error('netlink attribute too long');
    this.pad();
    this.ensure(len);
    writeU16H(this.buf, len, this.pos);
    writeU16H(this.buf, type, this.pos + 2);
    this.buf.set(data, this.pos + NLA_HDRLEN);
    this.pos += len;
    this.pad();
    return this;
  }

  /** attribute holding a big-endian u32 (netfilter's __be32) */
  u32be(type: number, v: number): this {
    this.pad();
    this.ensure(8);
    writeU16H(this.buf, 8, this.pos);
    writeU16H(this.buf, type, this.pos + 2);
    this.buf.writeUInt32BE(v >>> 0, this.pos + 4);
    this.pos += 8;
    return this;
  }

  /** attribute holding a big-endian u64 (netfilter's __be64), from a number */
  u64be(type: number, v: number): this {
    this.pad();
    this.ensure(12);
    writeU16H(this.buf, 12, this.pos);
    writeU16H(this.buf, type, this.pos + 2);
    writeU64BE(this.buf, v, this.pos + 4);
    this.pos += 12;
    return this;
  }

  /** NUL-terminated string attribute (NLA_STRING / NLA_NUL_STRING) */
  str(type: number, s: string): this {
    const n = Buffer.byteLength(s);
    const len = NLA_HDRLEN + n + 1;
    if (len > 0xffff) throw new Error('netlink attribute too long');
    this.pad();
    this.ensure(len);
    writeU16H(this.buf, len, this.pos);
    writeU16H(this.buf, type, this.pos + 2);
    this.buf.write(s, this.pos + NLA_HDRLEN, 'utf8');
    this.buf[this.pos + NLA_HDRLEN + n] = 0;
    this.pos += len;
    this.pad();
    return this;
  }

  /** open a nested attribute (type | NLA_F_NESTED); close with endNest() */
  beginNest(type: number): this {
    this.pad();
    this.ensure(NLA_HDRLEN);
    this.nests.push(this.pos);
    writeU16H(this.buf, 0, this.pos);
    writeU16H(this.buf, type | NLA_F_NESTED, this.pos + 2);
    this.pos += NLA_HDRLEN;
    return this;
  }

  endNest(): this {
    const start = this.nests.pop();
    if (start === undefined) throw new Error('netlink builder: no nest to end');
    this.pad();
    writeU16H(this.buf, this.pos - start, start);
    return this;
  }
}

/** One decoded netlink message; `payload` is a view into the receive buffer. */
export interface NlMessage {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  payload: Buffer;
}

/**
 * Split a datagram into messages.  Stops (without throwing) at the first
 * header that is short or claims more bytes than there are.
 */
export function parseMessages(buf: Buffer, n = buf.length): NlMessage[] {
  const out: NlMessage[] = [];
  const end = Math.min(n, buf.length);
  for (let off = 0, m = messageAt(buf, off, end); m !== null; off = nextMessage(off, m), m = messageAt(buf, off, end)) out.push(m);
  return out;
}

/** The message at `off` (the payload a view into `buf`), or null at the end or at a malformed header. */
export function messageAt(buf: Buffer, off: number, end: number): NlMessage | null {
  if (off + NLMSG_HDRLEN > end) return null;
  const len = readU32H(buf, off);
  if (len < NLMSG_HDRLEN || off + len > end) return null;
  return {
    type: readU16H(buf, off + 4),
    flags: readU16H(buf, off + 6),
    seq: readU32H(buf, off + 8),
    pid: readU32H(buf, off + 12),
    payload: buf.subarray(off + NLMSG_HDRLEN, off + len),
  };
}

/** Where the message after `m` (found at `off`) starts. */
export function nextMessage(off: number, m: NlMessage): number {
  return off + align4(NLMSG_HDRLEN + m.payload.length);
}

export interface NlAttr {
  /** type without NLA_F_NESTED / NLA_F_NET_BYTEORDER */
  type: number;
  nested: boolean;
  data: Buffer;
}

/**
 * Decode the attributes in buf[offset..].  Returns null when an attribute
 * header is malformed (hostile or truncated input); never throws.
 */
export function parseAttrs(buf: Buffer, offset = 0): NlAttr[] | null {
  const out: NlAttr[] = [];
  const ok = walkAttrs(buf, offset, (type, nested, start, end) => {
    out.push({ type, nested, data: buf.subarray(start, end) });
  });
  return ok ? out : null;
}

/**
 * Visit each attribute from `offset` on: its type (without the flags),
 * whether it is nested, and where its data starts and ends in `buf`.
 * Returns false at the first malformed header (short, or claiming more
 * bytes than there are), after visiting the ones before it.  Builds
 * nothing: the per-packet decoders use it directly.
 */
export function walkAttrs(buf: Buffer, offset: number, visit: (type: number, nested: boolean, start: number, end: number) => void): boolean {
  let off = offset;
  while (off < buf.length) {
    if (off + NLA_HDRLEN > buf.length) return false;
    const len = readU16H(buf, off);
    const rawType = readU16H(buf, off + 2);
    if (len < NLA_HDRLEN || off + len > buf.length) return false;
    visit(rawType & NLA_TYPE_MASK, (rawType & NLA_F_NESTED) !== 0, off + NLA_HDRLEN, off + len);
    off += align4(len);
  }
  return true;
}

/** attributes by type (last one wins), or null when malformed */
export function attrMap(buf: Buffer, offset = 0): Map<number, Buffer> | null {
  const attrs = parseAttrs(buf, offset);
  if (attrs === null) return null;
  const m = new Map<number, Buffer>();
  for (const a of attrs) m.set(a.type, a.data);
  return m;
}

export function attrU32be(m: Map<number, Buffer>, type: number): number | undefined {
  const d = m.get(type);
  return d !== undefined && d.length >= 4 ? d.readUInt32BE(0) : undefined;
}

export function attrStr(m: Map<number, Buffer>, type: number): string | undefined {
  const d = m.get(type);
  if (d === undefined) return undefined;
  const z = d.indexOf(0);
  return d.toString('utf8', 0, z < 0 ? d.length : z);
}

export interface NlError {
  /** positive errno, 0 for an ACK */
  errno: number;
  /** errno name, '' for an ACK */
  code: string;
  /** the request's sequence number, from the echoed header */
  seq: number;
  /** the request's type, from the echoed header */
  reqType: number;
}

/**
 * Decode an NLMSG_ERROR payload: struct nlmsgerr { int error; struct nlmsghdr msg; }.
 * error is a negative errno, or 0 for an ACK.  Returns null if too short.
 */
export function parseError(msg: NlMessage): NlError | null {
  if (msg.type !== NLMSG_ERROR || msg.payload.length < 4 + NLMSG_HDRLEN) return null;
  const err = -readI32H(msg.payload, 0);
  return {
    errno: err,
    code: err === 0 ? '' : errnoName(err),
    seq: readU32H(msg.payload, 4 + 8),
    reqType: readU16H(msg.payload, 4 + 4),
  };
}

/** The FtpProxyError for a netlink error; `code` is the errno name. */
export function netlinkError(e: NlError, what: string): FtpProxyError {
  return new FtpProxyError(e.code, `${what}: ${e.code} (${describeErrno(e.code)})`);
}

function describeErrno(code: string): string {
  // Short texts for the errors the netfilter subsystems return in practice.
  const texts: Record<string, string> = {
    ENOENT: 'no such object',
    EEXIST: 'object exists',
    EPERM: 'operation not permitted',
    EBUSY: 'busy',
    EINVAL: 'invalid argument',
    ENOBUFS: 'no buffer space',
    EOPNOTSUPP: 'not supported',
    ENOSPC: 'set is full',
    ERANGE: 'out of range',
  };
  return texts[code] ?? code;
}

/**
 * Wrap messages in an nftables batch: NFNL_MSG_BATCH_BEGIN / END with
 * nfgenmsg.res_id = NFNL_SUBSYS_NFTABLES (nfnetlink.h), so the kernel applies
 * them as one transaction.  `body` writes the messages, using seq+1.. ;
 * returns the END's sequence number.
 */
export function writeBatch(b: NlBuilder, seq: number, body: (b: NlBuilder, firstSeq: number) => number): number {
  b.beginMsg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq).nfgen(NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES).endMsg();
  const last = body(b, seq + 1);
  b.beginMsg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, last + 1).nfgen(NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES).endMsg();
  return last + 1;
}

/** The real clock: wall milliseconds and setTimeout. */
export function defaultClock(): Clock {
  return {
    now: () => Date.now(),
    setTimer: (ms: number, fn: () => void): Timer => {
      const t = setTimeout(fn, ms);
      return { cancel: () => clearTimeout(t) };
    },
  };
}

/** requestNow()'s request while it reads the answers its send brought */
interface SyncRequest {
  ackSeq: number;
  alsoSeqs: number[];
  done: boolean;
  error: Error | null;
  what: string;
}

/**
 * What an NLMSG_ERROR answering a request means: 'ack' (0 for the ACKed
 * message), an error (any errno, for any message of the request, or a
 * truncated answer), or 'other' (an ACK for another message of a batch,
 * which settles nothing).
 */
function ackOutcome(msg: NlMessage, ackSeq: number, what: string): 'ack' | 'other' | FtpProxyError {
  const e = parseError(msg);
  if (e === null) return new FtpProxyError('netlink-proto', `${what}: truncated netlink error message`);
  if (e.errno !== 0) return netlinkError(e, what);
  return msg.seq === ackSeq ? 'ack' : 'other';
}

interface Pending {
  /** every seq that settles this request: the ACKed one, and a batch's BEGIN/END */
  seqs: number[];
  replies: NlMessage[];
  resolve: (m: NlMessage[]) => void;
  reject: (e: Error) => void;
  /** armed only when the answer did not come with the send */
  timer: Timer | null;
  what: string;
}

export interface NetlinkSocketOptions {
  native?: Native;
  clock?: Clock;
  logger?: Logger;
  /** receive buffer size for one recvfrom; large enough for a 64 KiB packet copy */
  recvBufSize?: number;
}

/**
 * One netlink socket: send, request-with-ACK matched by sequence number, and
 * a receive loop driven by the shim's Poller that hands unsolicited messages
 * (queued packets) to onMessage.
 */
export class NetlinkSocket {
  private readonly native: Native;
  private readonly clock: Clock;
  private readonly logger?: Logger;
  private readonly rbuf: Buffer;
  private readonly kernel = sockaddrNl();
  private fd = -1;
  private poller: PollerHandle | null = null;
  private seq: number;
  private readonly pending = new Map<number, Pending>();
  /** the request whose answer requestNow() is reading with its send, if any */
  private sync: SyncRequest | null = null;
  /** unsolicited messages (seq not awaited) */
  onMessage: (msg: NlMessage) => void = () => undefined;
  /** ENOBUFS on receive: the kernel dropped messages for us */
  onOverrun: () => void = () => undefined;
  /**
   * An error answering a message nobody waits for (a verdict, or a request
   * that timed out).  Default: log a warning.
   */
  onError: (e: NlError) => void = (e) => this.logger?.log('warning', `netlink: unexpected error ${e.code} for seq ${e.seq}`);
  /** any other receive error: the socket is unusable */
  onFatal: (err: Error) => void = () => undefined;

  constructor(opts: NetlinkSocketOptions = {}) {
    this.native = opts.native ?? loadNative();
    this.clock = opts.clock ?? defaultClock();
    this.logger = opts.logger;
    this.rbuf = Buffer.alloc(opts.recvBufSize ?? 256 * 1024);
    // Start from a time-derived sequence so replies to a previous process's
    // requests on a recycled port id cannot match ours.
    this.seq = (Math.floor(Date.now() / 1000) & 0x7fffffff) >>> 0;
  }

  get isOpen(): boolean {
    return this.fd >= 0;
  }

  /** socket(AF_NETLINK, SOCK_RAW, protocol), bound with pid 0 (kernel assigns). */
  open(protocol: number): void {
    if (this.fd >= 0) return;
    const c = this.native.constants;
    const fd = this.native.socket(c.AF_NETLINK ?? AF_NETLINK, c.SOCK_RAW, protocol);
    try {
      this.native.bind(fd, sockaddrNl());
    } catch (e) {
      this.native.close(fd);
      throw e;
    }
    this.fd = fd;
    this.poller = new this.native.Poller(fd, (status) => this.onReadable(status));
    this.poller.start(POLL_READABLE);
  }

  /** SO_RCVBUFFORCE (root, ignores rmem_max), falling back to SO_RCVBUF. */
  setRcvBuf(bytes: number): void {
    const c = this.native.constants;
    const v = Buffer.alloc(4);
    writeU32H(v, bytes, 0);
    try {
      if (c.SO_RCVBUFFORCE === undefined) throw new Error('no SO_RCVBUFFORCE');
      this.native.setsockopt(this.fd, c.SOL_SOCKET, c.SO_RCVBUFFORCE, v);
    } catch {
      this.native.setsockopt(this.fd, c.SOL_SOCKET, c.SO_RCVBUF, v);
    }
  }

  setsockoptInt(level: number, name: number, value: number): void {
    const v = Buffer.alloc(4);
    writeU32H(v, value, 0);
    this.native.setsockopt(this.fd, level, name, v);
  }

  /** reserve `count` consecutive sequence numbers; returns the first */
  nextSeq(count = 1): number {
    const s = this.seq;
    this.seq = (this.seq + count) >>> 0;
    if (this.seq < count) this.seq = 1; // wrapped: skip 0, used by the kernel for events
    return s === 0 ? this.nextSeq(count) : s;
  }

  /** one sendto(2) to the kernel */
  send(data: Buffer): void {
    if (this.fd < 0) throw new FtpProxyError('netlink-closed', 'netlink socket is closed');
    this.native.sendto(this.fd, data, this.kernel);
  }

  /**
   * Send `data` (one message or a whole batch) and wait for the NLMSG_ERROR
   * answering `ackSeq`: resolves with the replies carrying that seq (for
   * GET requests) when the error code is 0 or a dump ends with NLMSG_DONE;
   * rejects with FtpProxyError(errno name) on a negative error, and with
   * 'netlink-timeout' after timeoutMs.  `alsoSeqs`: the other messages of a
   * batch — an error for them (e.g. EPERM on BATCH_BEGIN) also rejects, since
   * the kernel then never answers the ACKed message.
   */
  request(data: Buffer, ackSeq: number, timeoutMs: number, what = 'netlink request', alsoSeqs: number[] = []): Promise<NlMessage[]> {
    return new Promise<NlMessage[]>((resolve, reject) => this.start(data, ackSeq, timeoutMs, what, alsoSeqs, resolve, reject));
  }

  /**
   * request(), settled at once where the kernel allows it: when the answer
   * was read with the send (nfnetlink handles a request in sendto's own
   * context), an ACK returns null and an error is thrown, with no promise
   * and no turn of the microtask queue between the answer and the caller.
   * Otherwise (no answer yet), request()'s promise.
   */
  requestNow(data: Buffer, ackSeq: number, timeoutMs: number, what = 'netlink request', alsoSeqs: number[] = []): Promise<NlMessage[]> | null {
    if (this.fd < 0) throw new FtpProxyError('netlink-closed', `${what}: netlink socket is closed`);
    // The answer is looked for in what the send brought (dispatch() sees
    // this.sync first): no Pending entry, promise or callback for the usual
    // case, which runs while a control packet is held.
    const x: SyncRequest = { ackSeq, alsoSeqs, done: false, error: null, what };
    this.sync = x;
    try {
      this.sendRequest(data, what);
      this.drain();
    } finally {
      this.sync = null;
    }
    if (x.done) {
      if (x.error !== null) throw x.error;
      return null;
    }
    // No answer yet: wait for it as request() does (the data is sent).
    return new Promise<NlMessage[]>((resolve, reject) => this.await(ackSeq, alsoSeqs, timeoutMs, what, resolve, reject));
  }

  /** send(), with a failure as the FtpProxyError named after its errno */
  private sendRequest(data: Buffer, what: string): void {
    try {
      this.send(data);
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      throw new FtpProxyError(typeof code === 'string' ? code : 'netlink-send', `${what}: ${(e as Error).message}`, { cause: e });
    }
  }

  private start(data: Buffer, ackSeq: number, timeoutMs: number, what: string, alsoSeqs: number[],
    resolve: (m: NlMessage[]) => void, reject: (e: Error) => void): void {
    if (this.fd < 0) {
      reject(new FtpProxyError('netlink-closed', `${what}: netlink socket is closed`));
      return;
    }
    const p = this.register(ackSeq, alsoSeqs, what, resolve, reject);
    try {
      this.sendRequest(data, what);
    } catch (e) {
      for (const q of p.seqs) this.pending.delete(q);
      reject(e as Error);
      return;
    }
    // nfnetlink handles a request (and a whole nftables batch) in sendto's
    // own context, so the ACK is normally queued already: read it now rather
    // than one turn of the event loop later.  The control packet is held
    // meanwhile, so this turn is hole latency.
    this.drain();
    // Only a request still unanswered needs its time limit: the usual one
    // costs no timer to arm and cancel.
    if (this.pending.get(ackSeq) === p) this.armTimeout(p, timeoutMs);
  }

  /** Wait for the answer to a request already sent (requestNow found none yet). */
  private await(ackSeq: number, alsoSeqs: number[], timeoutMs: number, what: string,
    resolve: (m: NlMessage[]) => void, reject: (e: Error) => void): void {
    if (this.fd < 0) {
      reject(new FtpProxyError('netlink-closed', `${what}: netlink socket is closed`));
      return;
    }
    this.armTimeout(this.register(ackSeq, alsoSeqs, what, resolve, reject), timeoutMs);
  }

  /** A request waited for: its ACKed seq and the batch's others lead to it. */
  private register(ackSeq: number, alsoSeqs: number[], what: string,
    resolve: (m: NlMessage[]) => void, reject: (e: Error) => void): Pending {
    const p: Pending = { seqs: [ackSeq, ...alsoSeqs], replies: [], resolve, reject, timer: null, what };
    for (const q of p.seqs) this.pending.set(q, p);
    return p;
  }

  private armTimeout(p: Pending, timeoutMs: number): void {
    p.timer = this.clock.setTimer(timeoutMs, () => {
      for (const q of p.seqs) if (this.pending.get(q) === p) this.pending.delete(q);
      p.reject(new FtpProxyError('netlink-timeout', `${p.what}: no answer from the kernel within ${timeoutMs} ms`));
    });
  }

  /** stop the receive loop, fail pending requests, close the descriptor */
  close(): void {
    if (this.poller !== null) {
      this.poller.stop();
      this.poller = null;
    }
    if (this.fd >= 0) {
      try {
        this.native.close(this.fd);
      } catch {
        /* nothing useful to do */
      }
      this.fd = -1;
    }
    const all = new Set(this.pending.values());
    this.pending.clear();
    for (const p of all) {
      p.timer?.cancel();
      p.reject(new FtpProxyError('netlink-closed', `${p.what}: netlink socket closed`));
    }
  }

  /** Read every datagram that is ready (also used to drain at close). */
  drain(): void {
    this.onReadable(0);
  }

  private onReadable(status: number): void {
    if (status < 0) {
      this.fail(new FtpProxyError('netlink-poll', `netlink socket poll error ${status}`));
      return;
    }
    while (this.fd >= 0) {
      let n;
      try {
        n = this.native.recv(this.fd, this.rbuf, 0);
      } catch (e) {
        if ((e as { code?: unknown }).code === 'ENOBUFS') {
          // The socket's receive queue overflowed and the kernel dropped
          // messages for us; the socket itself is fine.
          this.onOverrun();
          continue;
        }
        this.fail(e as Error);
        return;
      }
      if (n < 0) return;
      if (n > this.rbuf.length) this.logger?.log('warning', `netlink: message of ${n} bytes truncated`);
      // parseMessages' walk, without the list (one message per datagram is the usual case)
      const end = Math.min(n, this.rbuf.length);
      for (let off = 0, m = messageAt(this.rbuf, 0, end); m !== null && this.fd >= 0; off = nextMessage(off, m), m = messageAt(this.rbuf, off, end)) this.dispatch(m);
    }
  }

  private dispatch(msg: NlMessage): void {
    const x = this.sync;
    if (x !== null && msg.type === NLMSG_ERROR && (msg.seq === x.ackSeq || x.alsoSeqs.includes(msg.seq))) {
      if (x.done) return;
      const r = ackOutcome(msg, x.ackSeq, x.what);
      if (r === 'ack') x.done = true;
      else if (r !== 'other') {
        x.done = true;
        x.error = r;
      }
      return;
    }
    const p = msg.seq !== 0 ? this.pending.get(msg.seq) : undefined;
    if (p === undefined) {
      if (msg.type === NLMSG_ERROR) {
        const e = parseError(msg);
        // An error for a request whose waiter timed out, or for a fire-and-
        // forget message (a verdict): nobody waits.
        if (e !== null && e.errno !== 0) this.onError(e);
        return;
      }
      this.onMessage(msg);
      return;
    }
    if (msg.type === NLMSG_ERROR) {
      const r = ackOutcome(msg, p.seqs[0], p.what);
      if (r === 'other') return;
      this.settle(p);
      if (r === 'ack') p.resolve(p.replies);
      else p.reject(r);
    } else if (msg.type === NLMSG_DONE) {
      this.settle(p);
      p.resolve(p.replies);
    } else {
      // copy: the payload is a view into the shared receive buffer
      p.replies.push({ ...msg, payload: Buffer.from(msg.payload) });
    }
  }

  private settle(p: Pending): void {
    p.timer?.cancel();
    for (const q of p.seqs) this.pending.delete(q);
  }

  private fail(err: Error): void {
    this.close();
    this.onFatal(err);
  }
}

/** One configuration request of a capture subscription (NFQUEUE, NFLOG). */
export interface CaptureStep {
  /** write the request into the builder with this sequence number */
  build: (b: NlBuilder, seq: number) => NlBuilder;
  what: string;
  /** the error to throw when the kernel refuses it */
  error: (e: unknown) => FtpProxyError;
}

/**
 * Open a NETLINK_NETFILTER socket for a capture: route unsolicited messages
 * to onMessage, enlarge the receive buffer (a warning if refused: bursts wait
 * there while handlers wait for the firewall), then send each configuration
 * request in order and wait for its ACK.  On any failure the socket is closed
 * and the step's error thrown.
 */
export async function openCapture(
  sock: NetlinkSocket,
  o: { name: string; rcvbuf: number; ackTimeoutMs: number; logger: Logger; onMessage: (m: NlMessage) => void; steps: CaptureStep[] },
): Promise<void> {
  try {
    sock.open(NETLINK_NETFILTER);
  } catch (e) {
    throw new FtpProxyError(`${o.name}-open`, `cannot open a NETLINK_NETFILTER socket: ${(e as Error).message}`, { fatal: true, cause: e });
  }
  sock.onMessage = o.onMessage;
  try {
    sock.setRcvBuf(o.rcvbuf);
  } catch (e) {
    o.logger.log('warning', `${o.name}: cannot enlarge the receive buffer: ${(e as Error).message}`);
  }
  const b = new NlBuilder(128);
  for (const step of o.steps) {
    const seq = sock.nextSeq();
    try {
      await sock.request(step.build(b.reset(), seq).bytes(), seq, o.ackTimeoutMs, step.what);
    } catch (e) {
      sock.close();
      throw step.error(e);
    }
  }
}
