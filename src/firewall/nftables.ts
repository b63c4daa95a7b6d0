/**
 * Holes for the Linux `nftables` module: elements, with a timeout, of the
 * sets ftp6proxy4 / ftp6proxy6 in the table given by -a (default inet/filter).
 * Elements go in over NETLINK_NETFILTER as one nftables batch per hole — no
 * nft(8) process on the hot path, since the control packet is held meanwhile.
 *
 * Layouts and constants: include/uapi/linux/netfilter/nf_tables.h,
 * include/uapi/linux/netfilter/nfnetlink.h.  nft(8)'s own type numbering
 * (for NFTA_SET_KEY_TYPE) is nftables' include/datatype.h.
 *
 * One-shot holes (optional, for the administrator; verified on Linux 6.18
 * with nft 1.0.6): in the forward chain, use instead of the two DESIGN.md
 * set rules
 *   ip  saddr . ip  daddr . tcp dport @ftp6proxy4 ct state new delete @ftp6proxy4 { ip  saddr . ip  daddr . tcp dport } accept
 *   ip6 saddr . ip6 daddr . tcp dport @ftp6proxy6 ct state new delete @ftp6proxy6 { ip6 saddr . ip6 daddr . tcp dport } accept
 * The first SYN through the hole deletes the element; conntrack then carries
 * the connection.  A retransmitted SYN is still `ct state new` and no longer
 * matches: if the first SYN is lost beyond the gateway, the data connection
 * fails.  close() of an element already deleted this way is ENOENT = success.
 */
import * as net from 'net';
import { Native } from '../native';
import {
  NETLINK_NETFILTER,
  NFGENMSG_LEN,
  NFNL_SUBSYS_NFTABLES,
  NFPROTO_ARP,
  NFPROTO_BRIDGE,
  NFPROTO_INET,
  NFPROTO_IPV4,
  NFPROTO_IPV6,
  NFPROTO_NETDEV,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_REQUEST,
  NLA_HDRLEN,
  NLMSG_HDRLEN,
  NetlinkSocket,
  NlBuilder,
  NlMessage,
  attrMap,
  attrStr,
  attrU32be,
  nfnlType,
  writeBatch,
  writeU32H,
  writeU64BE,
} from '../netlink';
import { Family, Firewall, FtpProxyError, Hole, HoleSpec, Logger } from '../types';

// ---- include/uapi/linux/netfilter/nf_tables.h --------------------------------
/* enum nf_tables_msg_types */
export const NFT_MSG_GETTABLE = 1;
export const NFT_MSG_NEWSET = 9;
export const NFT_MSG_GETSET = 10;
export const NFT_MSG_NEWSETELEM = 12;
export const NFT_MSG_DELSETELEM = 14;
/**
 * Since Linux 6.3: DELSETELEM without the ENOENT for an element that is not
 * there.  It matters for speed, not only for tidiness: a batch that fails
 * is aborted, and the abort waits for an RCU grace period (synchronize_rcu
 * in nf_tables_abort) with the nftables mutex held: about 10 ms on the test
 * machine, during which the daemon sleeps in sendto and every other nft
 * batch in the namespace waits.  Our elements time out on their own at the
 * same -t as the hole's close timer, so a DELSETELEM at close time almost
 * always found nothing and aborted.
 */
export const NFT_MSG_DESTROYSETELEM = 30;
/* enum nft_table_attributes */
export const NFTA_TABLE_NAME = 1;
/* enum nft_set_attributes */
export const NFTA_SET_TABLE = 1;
export const NFTA_SET_NAME = 2;
export const NFTA_SET_FLAGS = 3; // __be32
export const NFTA_SET_KEY_TYPE = 4; // __be32, opaque to the kernel, nft's datatype
export const NFTA_SET_KEY_LEN = 5; // __be32, bytes
/* enum nft_set_flags */
export const NFT_SET_ANONYMOUS = 0x1;
export const NFT_SET_CONSTANT = 0x2;
export const NFT_SET_INTERVAL = 0x4;
export const NFT_SET_MAP = 0x8;
export const NFT_SET_TIMEOUT = 0x10;
export const NFT_SET_OBJECT = 0x40;
/* enum nft_set_elem_list_attributes */
export const NFTA_SET_ELEM_LIST_TABLE = 1;
export const NFTA_SET_ELEM_LIST_SET = 2;
export const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
/* enum nft_list_attributes */
export const NFTA_LIST_ELEM = 1;
/* enum nft_set_elem_attributes */
export const NFTA_SET_ELEM_KEY = 1; // nested nft_data_attributes
export const NFTA_SET_ELEM_TIMEOUT = 4; // __be64, milliseconds
/* enum nft_data_attributes */
export const NFTA_DATA_VALUE = 1;

// ---- nftables include/datatype.h: key type numbers nft(8) stores ---------------
export const TYPE_IPADDR = 7;
export const TYPE_IP6ADDR = 8;
export const TYPE_INET_SERVICE = 13;
/** a concatenation's type is its members' types, 6 bits each, first member highest */
export const TYPE_BITS = 6;
export function concatType(types: number[]): number {
  return types.reduce((acc, t) => acc * (1 << TYPE_BITS) + t, 0);
}

export const SET_NAMES: Record<Family, string> = { 4: 'ftp6proxy4', 6: 'ftp6proxy6' };
/** ipv4_addr . ipv4_addr . inet_service / ipv6_addr . ipv6_addr . inet_service */
export const KEY_TYPES: Record<Family, number> = {
  4: concatType([TYPE_IPADDR, TYPE_IPADDR, TYPE_INET_SERVICE]),
  6: concatType([TYPE_IP6ADDR, TYPE_IP6ADDR, TYPE_INET_SERVICE]),
};
/**
 * nft lays a concatenation out in 32-bit registers: every member is padded to
 * a multiple of 4 bytes, so inet_service (2 bytes) takes 4.
 */
export const KEY_LENS: Record<Family, number> = { 4: 4 + 4 + 4, 6: 16 + 16 + 4 };

const FAMILIES: Record<string, number> = {
  ip: NFPROTO_IPV4,
  ip6: NFPROTO_IPV6,
  inet: NFPROTO_INET,
  arp: NFPROTO_ARP,
  bridge: NFPROTO_BRIDGE,
  netdev: NFPROTO_NETDEV,
};

export interface NftTable {
  familyName: string;
  family: number;
  name: string;
  /** which of our sets this table must hold: ip -> 4, ip6 -> 6, others both */
  families: Family[];
}

/** "inet/filter" (or "filter", meaning inet) -> family and name */
export function parseTable(spec: string): NftTable {
  const parts = spec.split('/');
  const [familyName, name] = parts.length === 1 ? ['inet', parts[0]] : parts;
  const family = FAMILIES[familyName];
  if (parts.length > 2 || family === undefined || name === undefined || !/^[A-Za-z_][A-Za-z0-9_.-]{0,255}$/.test(name)) {
    throw new FtpProxyError('usage', `bad nftables table "${spec}": want family/table, family one of ${Object.keys(FAMILIES).join(', ')}`, { fatal: true });
  }
  const families: Family[] = familyName === 'ip' ? [4] : familyName === 'ip6' ? [6] : [4, 6];
  return { familyName, family, name, families };
}

/** The administrator's nft configuration for `table` ("family/table"). */
export function nftConfigSnippet(table: string): string {
  const t = parseTable(table);
  const lines = [`table ${t.familyName} ${t.name} {`];
  if (t.families.includes(4)) lines.push('  set ftp6proxy4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }');
  if (t.families.includes(6)) lines.push('  set ftp6proxy6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }');
  lines.push('  # and in the chain that forwards (policy drop), after "ct state established accept":');
  if (t.families.includes(4)) lines.push('  #   ip  saddr . ip  daddr . tcp dport @ftp6proxy4 ct state new accept');
  if (t.families.includes(6)) lines.push('  #   ip6 saddr . ip6 daddr . tcp dport @ftp6proxy6 ct state new accept');
  lines.push('}');
  return lines.join('\n');
}

/** IPv4 dotted quad -> 4 bytes; null if not one */
function v4Bytes(s: string, out: Buffer, off: number): boolean {
  if (!net.isIPv4(s)) return false;
  const p = s.split('.');
  for (let i = 0; i < 4; i++) out[off + i] = Number(p[i]);
  return true;
}

/** IPv6 text (any valid form, also with an embedded IPv4 tail) -> 16 bytes */
function v6Bytes(s: string, out: Buffer, off: number): boolean {
  if (!net.isIPv6(s)) return false;
  let text = s;
  const pct = text.indexOf('%');
  if (pct >= 0) text = text.slice(0, pct);
  const words: number[] = [];
  const parseHalf = (h: string): number[] | null => {
    if (h === '') return [];
    const r: number[] = [];
    for (const g of h.split(':')) {
      if (g.includes('.')) {
        const b = Buffer.alloc(4);
        if (!v4Bytes(g, b, 0)) return null;
        r.push((b[0] << 8) | b[1], (b[2] << 8) | b[3]);
      } else r.push(parseInt(g, 16));
    }
    return r;
  };
  const dbl = text.indexOf('::');
  if (dbl >= 0) {
    const head = parseHalf(text.slice(0, dbl));
    const tail = parseHalf(text.slice(dbl + 2));
    if (head === null || tail === null || head.length + tail.length > 7) return false;
    words.push(...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail);
  } else {
    const all = parseHalf(text);
    if (all === null || all.length !== 8) return false;
    words.push(...all);
  }
  for (let i = 0; i < 8; i++) out.writeUInt16BE(words[i], off + 2 * i);
  return true;
}

/**
 * The set key for a hole: src . dst . port in nft's register layout —
 * v4: 4 + 4 + 4 bytes, v6: 16 + 16 + 4, the port big-endian in the first
 * 2 bytes of its 4.  Writes into `out` (KEY_LENS[family] bytes).  The
 * addresses come from the hole's bytes when it has them, else from its text.
 */
export function encodeKey(h: HoleSpec, out: Buffer = Buffer.alloc(KEY_LENS[h.family])): Buffer {
  const alen = h.family === 4 ? 4 : 16;
  let ok: boolean;
  if (h.srcBytes?.length === alen && h.dstBytes?.length === alen) {
    out.set(h.srcBytes, 0);
    out.set(h.dstBytes, alen);
    ok = true;
  } else {
    ok = h.family === 4 ? v4Bytes(h.src, out, 0) && v4Bytes(h.dst, out, 4) : v6Bytes(h.src, out, 0) && v6Bytes(h.dst, out, 16);
  }
  if (!ok || !Number.isInteger(h.port) || h.port < 0 || h.port > 65535) {
    throw new FtpProxyError('bad-hole', `bad hole ${h.src} -> ${h.dst}:${h.port} for IPv${h.family}`);
  }
  out.writeUInt16BE(h.port, 2 * alen);
  out.writeUInt16BE(0, 2 * alen + 2);
  return out;
}

const MSG = {
  GETTABLE: nfnlType(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE),
  NEWSET: nfnlType(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWSET),
  GETSET: nfnlType(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETSET),
  NEWSETELEM: nfnlType(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWSETELEM),
  DELSETELEM: nfnlType(NFNL_SUBSYS_NFTABLES, NFT_MSG_DELSETELEM),
  DESTROYSETELEM: nfnlType(NFNL_SUBSYS_NFTABLES, NFT_MSG_DESTROYSETELEM),
};

/**
 * What a set-element batch does: a number adds the element with that timeout
 * (ms); 'delete' removes it (ENOENT when it is not there), 'destroy' removes
 * it if it is there (Linux 6.3 and later).
 */
export type ElemOp = number | 'delete' | 'destroy';

/**
 * One batch adding (op: the timeout in ms), deleting or destroying one element:
 *   BEGIN; NEWSETELEM|DELSETELEM|DESTROYSETELEM { table, set, elements { elem { key { value }, timeout } } }; END
 * Returns the element message's sequence number (the one that is ACKed).
 *
 * NEWSETELEM carries NLM_F_CREATE without NLM_F_EXCL: an element that is
 * already there (the same hole announced twice) is no error.
 * Same as: nft add element inet filter ftp6proxy4 { 192.0.2.1 . 192.0.2.2 . 50000 timeout 2s }
 * (or nft delete / destroy element ... without the timeout).
 */
export function encodeSetElemBatch(
  b: NlBuilder,
  seq: number,
  t: { family: number; name: string },
  set: string,
  key: Buffer,
  op: ElemOp,
  where?: { key: number; timeout: number },
): number {
  let elemSeq = 0;
  writeBatch(b, seq, (bb, s) => {
    elemSeq = s;
    const add = typeof op === 'number';
    const type = add ? MSG.NEWSETELEM : op === 'destroy' ? MSG.DESTROYSETELEM : MSG.DELSETELEM;
    bb.beginMsg(type, NLM_F_REQUEST | NLM_F_ACK | (add ? NLM_F_CREATE : 0), s)
      .nfgen(t.family, 0)
      .str(NFTA_SET_ELEM_LIST_TABLE, t.name)
      .str(NFTA_SET_ELEM_LIST_SET, set)
      .beginNest(NFTA_SET_ELEM_LIST_ELEMENTS)
      .beginNest(NFTA_LIST_ELEM)
      .beginNest(NFTA_SET_ELEM_KEY);
    // nests and attributes start 4-aligned: the value follows its 4-byte header
    if (where !== undefined) where.key = bb.length + NLA_HDRLEN;
    bb.attr(NFTA_DATA_VALUE, key).endNest();
    if (add) {
      if (where !== undefined) where.timeout = bb.length + NLA_HDRLEN;
      bb.u64be(NFTA_SET_ELEM_TIMEOUT, op);
    }
    bb.endNest().endNest().endMsg();
    return s;
  });
  return elemSeq;
}

/**
 * The add, delete or destroy batch of one set, encoded once.  Holes differ only in
 * their sequence numbers, key and timeout, so fill() writes those in place:
 * the bytes are encodeSetElemBatch's (test/unit/nftables-encode.test.ts
 * compares them), without building the messages again for every hole.
 */
export class SetElemBatch {
  /** what an error of this batch names, as nft(8) would say it */
  readonly what: string;
  private readonly buf: Buffer;
  private readonly keyAt: number;
  private readonly keyLen: number;
  private readonly timeoutAt: number;
  private readonly endAt: number;

  constructor(t: { family: number; name: string }, set: string, keyLen: number, op: 'add' | 'delete' | 'destroy') {
    const b = new NlBuilder(256);
    const where = { key: -1, timeout: -1 };
    encodeSetElemBatch(b, 0, t, set, Buffer.alloc(keyLen), op === 'add' ? 0 : op, where);
    this.buf = Buffer.from(b.bytes());
    this.what = `nft ${op} element ${set}`;
    this.keyAt = where.key;
    this.keyLen = keyLen;
    this.timeoutAt = where.timeout;
    // BEGIN and END are a bare nlmsghdr + nfgenmsg each
    this.endAt = this.buf.length - NLMSG_HDRLEN - NFGENMSG_LEN;
  }

  /**
   * The batch for `key`, BEGIN numbered `seq` (the element message is seq + 1,
   * END seq + 2).  `timeoutMs` is ignored by a delete or destroy batch.  The returned
   * bytes are valid until the next fill.
   */
  fill(seq: number, key: Buffer, timeoutMs = 0): Buffer {
    if (key.length !== this.keyLen) throw new FtpProxyError('bad-hole', `key of ${key.length} bytes, set wants ${this.keyLen}`);
    const b = this.buf;
    writeU32H(b, seq, 8); // nlmsg_seq: offset 8 in struct nlmsghdr
    writeU32H(b, seq + 1, NLMSG_HDRLEN + NFGENMSG_LEN + 8);
    writeU32H(b, seq + 2, this.endAt + 8);
    key.copy(b, this.keyAt);
    if (this.timeoutAt >= 0) writeU64BE(b, timeoutMs, this.timeoutAt); // as NlBuilder.u64be
    return b;
  }
}

/**
 * One batch flushing a set: DELSETELEM with no element list removes every
 * element.  Same as: nft flush set inet filter ftp6proxy4
 */
export function encodeFlushBatch(b: NlBuilder, seq: number, t: { family: number; name: string }, set: string): number {
  let elemSeq = 0;
  writeBatch(b, seq, (bb, s) => {
    elemSeq = s;
    bb.beginMsg(MSG.DELSETELEM, NLM_F_REQUEST | NLM_F_ACK, s)
      .nfgen(t.family, 0)
      .str(NFTA_SET_ELEM_LIST_TABLE, t.name)
      .str(NFTA_SET_ELEM_LIST_SET, set)
      .endMsg();
    return s;
  });
  return elemSeq;
}

/** GETTABLE / GETSET for one object (not a dump), with an ACK. */
export function encodeGetTable(b: NlBuilder, seq: number, t: { family: number; name: string }): NlBuilder {
  return b.beginMsg(MSG.GETTABLE, NLM_F_REQUEST | NLM_F_ACK, seq).nfgen(t.family, 0).str(NFTA_TABLE_NAME, t.name).endMsg();
}

export function encodeGetSet(b: NlBuilder, seq: number, t: { family: number; name: string }, set: string): NlBuilder {
  return b
    .beginMsg(MSG.GETSET, NLM_F_REQUEST | NLM_F_ACK, seq)
    .nfgen(t.family, 0)
    .str(NFTA_SET_TABLE, t.name)
    .str(NFTA_SET_NAME, set)
    .endMsg();
}

export interface NftSetInfo {
  name: string;
  flags: number;
  keyType: number | undefined;
  keyLen: number | undefined;
}

/** Decode an NFT_MSG_NEWSET reply; null if it is not one or is malformed. */
export function decodeSet(msg: NlMessage): NftSetInfo | null {
  if (msg.type !== MSG.NEWSET || msg.payload.length < 4) return null;
  const m = attrMap(msg.payload, 4);
  if (m === null) return null;
  const name = attrStr(m, NFTA_SET_NAME);
  if (name === undefined) return null;
  return { name, flags: attrU32be(m, NFTA_SET_FLAGS) ?? 0, keyType: attrU32be(m, NFTA_SET_KEY_TYPE), keyLen: attrU32be(m, NFTA_SET_KEY_LEN) };
}

/** What is wrong with a set for our use, or null if it fits. */
export function setProblem(family: Family, s: NftSetInfo): string | null {
  const want = family === 4 ? 'ipv4_addr . ipv4_addr . inet_service' : 'ipv6_addr . ipv6_addr . inet_service';
  if (s.keyLen !== KEY_LENS[family] || (s.keyType !== undefined && s.keyType !== KEY_TYPES[family])) {
    return `set ${s.name} has the wrong type (want ${want})`;
  }
  if ((s.flags & NFT_SET_MAP) !== 0 || (s.flags & NFT_SET_OBJECT) !== 0) return `set ${s.name} is a map, want a plain set`;
  if ((s.flags & NFT_SET_INTERVAL) !== 0) return `set ${s.name} has "flags interval", which ftp6proxy does not use`;
  if ((s.flags & NFT_SET_CONSTANT) !== 0) return `set ${s.name} is constant`;
  if ((s.flags & NFT_SET_TIMEOUT) === 0) return `set ${s.name} lacks "flags timeout"`;
  return null;
}

export interface NftablesOptions {
  /** "family/table", e.g. "inet/filter" */
  table: string;
  logger: Logger;
  native?: Native;
  /** how long to wait for the kernel's ACK (default 1000 ms) */
  ackTimeoutMs?: number;
}

/** The set element a hole's key names, as a map key (NftablesFirewall.users). */
function elementId(hole: Hole, key: Buffer): string {
  return `${hole.family}:${key.toString('latin1')}`;
}

export class NftablesFirewall implements Firewall {
  readonly kind = 'nftables';
  private readonly table: NftTable;
  private readonly spec: string;
  private readonly logger: Logger;
  private readonly ackTimeoutMs: number;
  private readonly sock: NetlinkSocket;
  /** reused for every request: sendto copies it synchronously */
  private readonly b = new NlBuilder(512);
  private readonly keys: Record<Family, Buffer> = { 4: Buffer.alloc(KEY_LENS[4]), 6: Buffer.alloc(KEY_LENS[6]) };
  private readonly rehearsalKeys: Record<Family, Buffer> = { 4: Buffer.alloc(KEY_LENS[4]), 6: Buffer.alloc(KEY_LENS[6]) };
  /** the add, delete and destroy batches of each family's set, encoded once */
  private readonly batches: Record<Family, { add: SetElemBatch; del: SetElemBatch; destroy: SetElemBatch }>;
  /** false once the kernel refused DESTROYSETELEM (Linux before 6.3): close() deletes instead */
  private hasDestroy = true;
  /**
   * The holes (rule numbers) behind each set element.  Two sessions may
   * announce the same client, server and port within -t seconds (a client
   * with two sessions to one server, a small passive port range): they share
   * one element, which goes only with the last of them.  Closing the first
   * must not take the second one's hole away before its data connection.
   */
  private readonly users = new Map<string, Set<number>>();

  constructor(opts: NftablesOptions) {
    this.spec = opts.table;
    this.table = parseTable(opts.table);
    this.logger = opts.logger;
    this.ackTimeoutMs = opts.ackTimeoutMs ?? 1000;
    this.sock = new NetlinkSocket({ native: opts.native, logger: opts.logger });
    const batches = (f: Family): { add: SetElemBatch; del: SetElemBatch; destroy: SetElemBatch } => ({
      add: new SetElemBatch(this.table, SET_NAMES[f], KEY_LENS[f], 'add'),
      del: new SetElemBatch(this.table, SET_NAMES[f], KEY_LENS[f], 'delete'),
      destroy: new SetElemBatch(this.table, SET_NAMES[f], KEY_LENS[f], 'destroy'),
    });
    this.batches = { 4: batches(4), 6: batches(6) };
  }

  /** every request settles within its ACK wait (NetlinkSocket.request) */
  get settlesWithinMs(): number {
    return this.ackTimeoutMs;
  }

  private where(): string {
    return `table ${this.table.familyName} ${this.table.name}`;
  }

  private ensureOpen(): void {
    if (this.sock.isOpen) return;
    try {
      this.sock.open(NETLINK_NETFILTER);
    } catch (e) {
      throw new FtpProxyError('nft-open', `cannot open a NETLINK_NETFILTER socket: ${(e as Error).message}`, { fatal: true, cause: e });
    }
  }

  private configError(problem: string): FtpProxyError {
    return new FtpProxyError(
      'nft-config',
      `nftables: ${problem}.  ftp6proxy needs this configuration (nft -f):\n${nftConfigSnippet(this.spec)}`,
      { fatal: true },
    );
  }

  async check(): Promise<void> {
    this.ensureOpen();
    let seq = this.sock.nextSeq();
    try {
      await this.sock.request(encodeGetTable(this.b.reset(), seq, this.table).bytes(), seq, this.ackTimeoutMs, `nft get ${this.where()}`);
    } catch (e) {
      if ((e as FtpProxyError).code === 'ENOENT') throw this.configError(`${this.where()} does not exist`);
      if ((e as FtpProxyError).code === 'EPERM') throw new FtpProxyError('nft-perm', 'nftables: reading the ruleset needs root (CAP_NET_ADMIN)', { fatal: true, cause: e });
      throw e;
    }
    for (const fam of this.table.families) {
      const name = SET_NAMES[fam];
      seq = this.sock.nextSeq();
      let replies: NlMessage[];
      try {
        replies = await this.sock.request(encodeGetSet(this.b.reset(), seq, this.table, name).bytes(), seq, this.ackTimeoutMs, `nft get set ${name}`);
      } catch (e) {
        if ((e as FtpProxyError).code === 'ENOENT') throw this.configError(`set ${name} is missing in ${this.where()}`);
        throw e;
      }
      const info = replies.map(decodeSet).find((s): s is NftSetInfo => s !== null);
      if (info === undefined) throw this.configError(`no description of set ${name} from the kernel`);
      const problem = setProblem(fam, info);
      if (problem !== null) throw this.configError(`${problem} in ${this.where()}`);
    }
  }

  async sweep(): Promise<void> {
    this.ensureOpen();
    this.users.clear();
    for (const fam of this.table.families) {
      const set = SET_NAMES[fam];
      const seq = this.sock.nextSeq(3);
      const ack = encodeFlushBatch(this.b.reset(), seq, this.table, set);
      try {
        await this.sock.request(this.b.bytes(), ack, this.ackTimeoutMs, `nft flush set ${set}`, [seq, ack + 1]);
      } catch (e) {
        if ((e as FtpProxyError).code !== 'ENOENT') throw e;
        this.logger.log('debug', `nftables: set ${set} not there to sweep`);
      }
    }
  }

  private familyOk(hole: Hole): void {
    if (!this.table.families.includes(hole.family)) {
      throw new FtpProxyError('nft-family', `${this.where()} has no set for IPv${hole.family}`);
    }
  }

  /** nft add element <table> ftp6proxyN { src . dst . port timeout <t>s } */
  async open(hole: Hole, timeoutSec: number): Promise<void> {
    await this.openNow(hole, timeoutSec);
  }

  /** open(), done when the kernel's ACK came with the send (the usual case): see Firewall.openNow */
  openNow(hole: Hole, timeoutSec: number): Promise<void> | undefined {
    this.familyOk(hole);
    this.ensureOpen();
    const key = encodeKey(hole, this.keys[hole.family]);
    // Counted before the call: a hole whose open failed is still closed at its time.
    const id = elementId(hole, key);
    const users = this.users.get(id);
    if (users === undefined) this.users.set(id, new Set([hole.rule]));
    else users.add(hole.rule);
    const seq = this.sock.nextSeq(3);
    const add = this.batches[hole.family].add;
    const later = this.sock.requestNow(add.fill(seq, key, Math.max(1, Math.round(timeoutSec * 1000))), seq + 1, this.ackTimeoutMs, add.what, [seq, seq + 2]);
    return later === null ? undefined : later.then(() => undefined);
  }

  /**
   * Firewall.rehearse: openNow's key and batch, written into the same
   * buffers (each real open writes all it sends again) and not sent.  The
   * element ids of open holes are not touched.
   */
  rehearse(hole: Hole): void {
    try {
      const key = encodeKey(hole, this.rehearsalKeys[hole.family]);
      elementId(hole, key);
      this.batches[hole.family].add.fill(0, key, 1000);
    } catch {
      // a hole the real open would refuse too: nothing to keep warm
    }
  }

  /**
   * nft destroy element <table> ftp6proxyN { src . dst . port }, unless another
   * open hole shares the element (then it stays, for that one).  Gone
   * already (timed out, or deleted on use) is fine, and with destroy it is
   * no error either, so the kernel has no batch to abort (see
   * NFT_MSG_DESTROYSETELEM).  A kernel without destroy gets delete, with
   * ENOENT taken as success.
   */
  async close(hole: Hole): Promise<boolean> {
    this.familyOk(hole);
    this.ensureOpen();
    // Its own buffer: the key is used again after an await (delete after a
    // refused destroy), when an open may have written the shared one.
    const key = encodeKey(hole);
    const id = elementId(hole, key);
    const users = this.users.get(id);
    users?.delete(hole.rule);
    if (users !== undefined && users.size > 0) {
      this.logger.log('debug', `nftables: hole ${hole.rule} closed, its element stays for hole ${[...users].join(', ')}`);
      return true;
    }
    this.users.delete(id);
    const batches = this.batches[hole.family];
    try {
      if (this.hasDestroy) {
        try {
          await this.removeElement(batches.destroy, key);
          return true;
        } catch (e) {
          // nfnetlink answers a message type it does not know with EINVAL
          // (nfnetlink_rcv_batch); key and set are the ones add accepted.
          if ((e as FtpProxyError).code !== 'EINVAL') throw e;
          this.hasDestroy = false;
          this.logger.log('info', 'nftables: this kernel has no "destroy element" (new in Linux 6.3): deleting elements instead');
        }
      }
      await this.removeElement(batches.del, key);
    } catch (e) {
      // ENOENT: delete found no element (it timed out, or a one-shot rule
      // deleted it on use), or either found no set or table (the ruleset
      // was reloaded without them): either way the element is not there.
      if ((e as FtpProxyError).code !== 'ENOENT') throw e;
    }
    return true;
  }

  private async removeElement(batch: SetElemBatch, key: Buffer): Promise<void> {
    const seq = this.sock.nextSeq(3);
    await this.sock.request(batch.fill(seq, key), seq + 1, this.ackTimeoutMs, batch.what, [seq, seq + 2]);
  }

  async shutdown(): Promise<void> {
    this.sock.close();
  }
}
