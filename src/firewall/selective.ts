/**
 * The opt-in "selective" iptables/ip6tables ruleset for Linux: the kernel
 * queues to NFQUEUE only the FTP control packets that may matter and lets
 * the others through, instead of one user-space round trip per packet.
 * Pure: it builds classic BPF programs and argv lists, and runs nothing.
 *
 * What matters to the daemon is a *line* that starts a command or a reply.
 * The parser looks at whole lines, so the kernel must queue
 *   - every segment that ends inside a line ("partial"), and the segments
 *     that continue it until the line ends: a PORT command split in two
 *     segments is only recognisable from both;
 *   - LF-terminated segments that contain PORT / EPRT / LPRT (client) or
 *     227 / 228 / 229 (server): the announcements that open holes;
 *   - on the server side, multi-line replies ("nnn-" ... "nnn "): inside one,
 *     a "227 ..." line is text, not a reply, so the daemon must see every
 *     line of it to know where it ends.
 *
 * Filter table, `C` = <chain>-C (client -> server, P = partialClient) and
 * `S` = <chain>-S (server -> client, P = partialServer, M = seeAll); in
 * iptables-save syntax:
 *
 *   -A FORWARD -p tcp --dport 21 -j C
 *   -A FORWARD -p tcp --sport 21 -j S
 *   -A C -m connmark --mark P/P -j C-CONT           # the previous segment ended inside a line
 *   -A C-CONT -m bpf --bytecode <lf> -j CONNMARK --set-xmark 0x0/P   # ...and this one ends it
 *   -A C-CONT -j NFQUEUE --queue-num q --queue-bypass
 *   -A C -m bpf --bytecode <nolf> -j C-PART         # this segment ends inside a line
 *   -A C-PART -j CONNMARK --set-xmark P/P
 *   -A C-PART -j NFQUEUE --queue-num q --queue-bypass
 *   -A C -m string --algo bm --icase --string PORT -j NFQUEUE ...   # and EPRT, LPRT
 *   (S: the same two first rules with S-CONT / S-PART, then)
 *   -A S -m connmark --mark M/M -j NFQUEUE ...      # the daemon asked to see every packet
 *   -A S -m bpf --bytecode <ts> -m string --algo bm --from 75 --string - -j S-DASH
 *   -A S -m bpf --bytecode <other> -m string --algo bm --from 63 --string - -j S-DASH
 *                                                   # may start a multi-line reply "nnn-"
 *                                                   # (IPv6 offsets; IPv4 55 and 43)
 *   -A S-DASH -j CONNMARK --set-xmark M/M
 *   -A S-DASH -j NFQUEUE ...
 *   -A S -m string --algo bm --string 227 -j NFQUEUE ...          # and 228, 229
 *   -t mangle -A POSTROUTING -p tcp --sport 21 -j CONNMARK --save-mark --nfmask M --ctmask M
 *
 * Why the kernel sets M on a '-' itself: it does so in packet order, before
 * the next packet of the connection is classified, so no line of a
 * multi-line reply slips through while the daemon is still deciding.  The
 * daemon (its -s option names M) keeps M in its verdicts while a reply is
 * open and clears it in the verdict of the packet that ends the reply: the
 * verdict carries the packet's new mark (NFQA_MARK, which every kernel
 * honours), and the POSTROUTING rule copies its M bit into the connection's
 * mark.  (NFQA_CT could set the connection's mark directly, but it needs
 * CONFIG_NETFILTER_NETLINK_GLUE_CT, which not every kernel has.)  So M must
 * be a bit that nothing else uses, in packet marks or connection marks.
 *
 * What is still a race: M is cleared by a verdict, not in packet order.
 * Say packet A ends a multi-line reply and packet B, right behind it,
 * starts a new one ("150-"): B's '-' sets M, but A's verdict, applied
 * afterwards, clears it again until B's verdict sets it back.  A packet C of
 * the new reply that has no '-', no 227/228/229 and no partial line, and
 * passes the rules in those few microseconds, is not queued.  If C held the
 * reply's last line, the daemon stays "inside" the reply and treats the next
 * 227 as text: it opens no hole for it.  A missed hole, never a wrong one.
 *
 * The string matches search the packet from an offset counted from the IP
 * header (xt_string offsets count from the network header).  The '-' rules
 * start where the payload does (layoutProgram); the others start past the
 * smallest headers, so TCP option bytes can match too: that only queues a
 * packet needlessly, as does "PORT" inside "SUPPORT" or a '-' in a file
 * name.  A packet that no rule queues returns to FORWARD and meets the rest
 * of the administrator's rules; with --queue-bypass the NFQUEUE target
 * accepts when no daemon is listening.
 *
 * The BPF programs (xt_bpf, iptables-extensions(8) "bpf") see the packet from
 * the IP header: offset 0 is the version byte, BPF_LEN is the length from
 * there (ip_rcv/ipv6_rcv have trimmed the skb to the IP length by FORWARD).
 */
import { shellQuote } from './runner';
import { FtpProxyError } from '../types';

// ---- include/uapi/linux/bpf_common.h, include/uapi/linux/filter.h ----------
/** Classic BPF opcode parts. */
export const BPF = {
  /* instruction classes, BPF_CLASS(code) = code & 0x07 (bpf_common.h) */
  LD: 0x00,
  LDX: 0x01,
  ST: 0x02,
  STX: 0x03,
  ALU: 0x04,
  JMP: 0x05,
  RET: 0x06,
  MISC: 0x07,
  /* ld/ldx size, BPF_SIZE(code) = code & 0x18 (bpf_common.h) */
  W: 0x00,
  H: 0x08,
  B: 0x10,
  /* ld/ldx mode, BPF_MODE(code) = code & 0xe0 (bpf_common.h, BPF_MSH: filter.h) */
  IMM: 0x00,
  ABS: 0x20,
  IND: 0x40,
  MEM: 0x60,
  LEN: 0x80,
  MSH: 0xa0,
  /* alu/jmp operation, BPF_OP(code) = code & 0xf0 (bpf_common.h) */
  ADD: 0x00,
  SUB: 0x10,
  AND: 0x50,
  RSH: 0x70,
  JA: 0x00,
  JEQ: 0x10,
  JGT: 0x20,
  JSET: 0x40,
  /* source, BPF_SRC(code) = code & 0x08 (bpf_common.h) */
  K: 0x00,
  X: 0x08,
  /* misc operation, BPF_MISCOP(code) = code & 0xf8 (filter.h) */
  TAX: 0x00,
  TXA: 0x80,
  /* scratch memory words M[0..BPF_MEMWORDS-1] (filter.h) */
  MEMWORDS: 16,
} as const;

/** include/uapi/linux/netfilter/xt_bpf.h */
export const XT_BPF_MAX_NUM_INSTR = 64;

/** One classic BPF instruction, struct sock_filter (filter.h). */
export interface BpfInsn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

export type BpfWant = 'lf' | 'nolf';

/** Where a classification ends before it is turned into a return value. */
type Verdict = 'LF' | 'NOLF' | 'NONE' | 'UNKNOWN';
type Target = Verdict | string;

/** A source instruction: jumps name labels, resolved by assemble(). */
interface AsmInsn {
  code: number;
  k?: number;
  jt?: Target;
  jf?: Target;
  label?: string;
}

function assemble(src: readonly AsmInsn[]): BpfInsn[] {
  const at = new Map<string, number>();
  src.forEach((i, n) => {
    if (i.label !== undefined) at.set(i.label, n);
  });
  return src.map((i, n) => {
    const rel = (t: Target | undefined): number => {
      if (t === undefined) return 0;
      const to = at.get(t);
      if (to === undefined) throw new Error(`bpf: no label ${t}`);
      const off = to - n - 1; // cBPF jumps are forward, relative to the next insn
      if (off < 0 || off > 255) throw new Error(`bpf: jump to ${t} out of range (${off})`);
      return off;
    };
    return { code: i.code, jt: rel(i.jt), jf: rel(i.jf), k: (i.k ?? 0) >>> 0 };
  });
}

const { LD, LDX, ST, ALU, JMP, RET, MISC, W, H, B, ABS, IND, MEM, LEN, MSH, ADD, SUB, AND, RSH, JEQ, JGT, JSET, K, X, TAX, TXA } = BPF;

/** Scratch words: the IP total length (from the IP header) and the TCP segment length. */
const M_TOTAL = 0;
const M_TCPLEN = 1;

/**
 * The common tail, with X = data offset (TCP header length, checked >= 20)
 * and M[M_TCPLEN] = TCP segment length (checked >= 20), M[M_TOTAL] = IP
 * total length (checked <= packet length): payload length and last byte.
 */
function tail(): AsmInsn[] {
  return [
    { code: LD | W | MEM, k: M_TCPLEN },
    { code: JMP | JGT | X, jt: 'payload', jf: 'noPayload' }, // tcplen > doff: there is payload
    { code: JMP | JEQ | X, jt: 'NONE', jf: 'UNKNOWN', label: 'noPayload' }, // == : empty; < : doff does not fit
    { code: LD | W | MEM, k: M_TOTAL, label: 'payload' },
    { code: ALU | SUB | K, k: 1 }, // last byte = total - 1 (total >= 41 here, no wraparound)
    { code: MISC | TAX },
    { code: LD | B | IND, k: 0 },
    { code: JMP | JEQ | K, k: 0x0a, jt: 'LF', jf: 'NOLF' },
  ];
}

/**
 * IPv4 (RFC 791, RFC 9293 3.1).  Every load is proven in bounds by the
 * checks before it: packet length >= 20, total length <= packet length,
 * ihl + 20 <= total, and the last byte < total.
 */
function ipv4(): AsmInsn[] {
  return [
    { code: LD | W | LEN },
    { code: JMP | JGT | K, k: 19, jt: 'hasIp', jf: 'UNKNOWN' }, // room for the fixed header
    { code: MISC | TAX, label: 'hasIp' }, // X = packet length
    { code: LD | H | ABS, k: 2 }, // total length
    { code: JMP | JGT | X, jt: 'UNKNOWN', jf: 'fits' }, // total > bytes present: truncated
    { code: ST, k: M_TOTAL, label: 'fits' },
    { code: LD | H | ABS, k: 6 }, // flags + fragment offset
    { code: JMP | JSET | K, k: 0x3fff, jt: 'UNKNOWN', jf: 'whole' }, // MF (0x2000) or offset != 0
    { code: LD | B | ABS, k: 9, label: 'whole' }, // protocol
    { code: JMP | JEQ | K, k: 6, jt: 'tcp', jf: 'UNKNOWN' },
    { code: LDX | B | MSH, k: 0, label: 'tcp' }, // X = 4 * (byte 0 & 0xf) = ihl
    { code: MISC | TXA },
    { code: JMP | JGT | K, k: 19, jt: 'ihlOk', jf: 'UNKNOWN' }, // ihl >= 20
    { code: LD | W | MEM, k: M_TOTAL, label: 'ihlOk' },
    { code: JMP | JGT | X, jt: 'pastIp', jf: 'UNKNOWN' }, // total > ihl, so total - ihl does not wrap
    { code: ALU | SUB | X, label: 'pastIp' }, // A = TCP segment length
    { code: JMP | JGT | K, k: 19, jt: 'segOk', jf: 'UNKNOWN' }, // room for the TCP header
    { code: ST, k: M_TCPLEN, label: 'segOk' },
    { code: LD | B | IND, k: 12 }, // TCP data offset byte at ihl + 12
    { code: ALU | RSH | K, k: 2 },
    { code: ALU | AND | K, k: 0x3c }, // (byte >> 4) * 4
    { code: JMP | JGT | K, k: 19, jt: 'doffOk', jf: 'UNKNOWN' },
    { code: MISC | TAX, label: 'doffOk' },
    ...tail(),
  ];
}

/**
 * IPv6 (RFC 8200): only TCP directly after the fixed header; any extension
 * header (hop-by-hop, routing, fragment, ...) is UNKNOWN.  Checks: packet
 * length >= 60, 40 + payload length <= packet length, payload length >= 20.
 */
function ipv6(): AsmInsn[] {
  return [
    { code: LD | W | LEN },
    { code: JMP | JGT | K, k: 59, jt: 'hasIp', jf: 'UNKNOWN' }, // room for IPv6 + TCP headers
    { code: MISC | TAX, label: 'hasIp' }, // X = packet length
    { code: LD | H | ABS, k: 4 }, // payload length
    { code: ALU | ADD | K, k: 40 }, // total = 40 + payload length
    { code: JMP | JGT | X, jt: 'UNKNOWN', jf: 'fits' },
    { code: ST, k: M_TOTAL, label: 'fits' },
    { code: LD | B | ABS, k: 6 }, // next header
    { code: JMP | JEQ | K, k: 6, jt: 'tcp', jf: 'UNKNOWN' },
    { code: LD | H | ABS, k: 4, label: 'tcp' }, // TCP segment length = payload length
    { code: JMP | JGT | K, k: 19, jt: 'segOk', jf: 'UNKNOWN' },
    { code: ST, k: M_TCPLEN, label: 'segOk' },
    { code: LD | B | ABS, k: 40 + 12 }, // TCP data offset byte
    { code: ALU | RSH | K, k: 2 },
    { code: ALU | AND | K, k: 0x3c },
    { code: JMP | JGT | K, k: 19, jt: 'doffOk', jf: 'UNKNOWN' },
    { code: MISC | TAX, label: 'doffOk' },
    ...tail(),
  ];
}

/**
 * The classic BPF program that matches (returns 1) on
 *   - 'lf':   TCP segments with payload whose last byte is LF (0x0a);
 *   - 'nolf': segments with payload whose last byte is not LF, and every
 *             packet the program cannot read: IPv4 fragments, protocol not
 *             TCP, IPv6 extension headers, lengths that do not fit, an IP
 *             length larger than the bytes present.
 * Neither matches a segment without payload.
 *
 * Loads past the end of the packet make the kernel's program return 0 (no
 * match).  The length checks above keep every load in bounds, so that
 * cannot happen; if it did (a kernel handing xt_bpf an skb shorter than its
 * IP header says), 'lf' would not match, so the packet falls to the 'nolf'
 * rule (queued as partial), and 'nolf' would not match, so the packet would
 * only be queued by the string and mark rules: at worst a missed hole.
 */
export function bpfProgram(family: 4 | 6, want: BpfWant): BpfInsn[] {
  const match = (v: Verdict): boolean => (want === 'lf' ? v === 'LF' : v === 'NOLF' || v === 'UNKNOWN');
  const rets: AsmInsn[] = [];
  for (const v of ['LF', 'NOLF', 'NONE', 'UNKNOWN'] as const) rets.push({ code: RET | K, k: match(v) ? 1 : 0, label: v });
  const prog = assemble([...(family === 4 ? ipv4() : ipv6()), ...rets]);
  if (prog.length > XT_BPF_MAX_NUM_INSTR) throw new Error(`bpf: program of ${prog.length} instructions`);
  return prog;
}

/** The `--bytecode` text of xt_bpf: "N,code jt jf k,..." in decimal, as nfbpf_compile prints. */
export function bpfBytecode(family: 4 | 6, want: BpfWant): string {
  return bytecodeText(bpfProgram(family, want));
}

function bytecodeText(p: readonly BpfInsn[]): string {
  return [String(p.length), ...p.map((i) => `${i.code} ${i.jt} ${i.jf} ${i.k}`)].join(',');
}

// ---- where the payload starts: the dash rules ---------------------------------

/**
 * Where the payload starts in the header layout Linux uses for nearly every
 * segment of an established connection: the minimal IP header and a TCP
 * header with 12 bytes of options (RFC 7323 timestamps, padded; data offset
 * 8).  IPv4: 20 + 32, IPv6: 40 + 32.
 */
export const TS_PAYLOAD: Record<4 | 6, number> = { 4: 52, 6: 72 };
/** Where the payload starts with no IP or TCP options: the earliest it can. */
export const MIN_PAYLOAD: Record<4 | 6, number> = { 4: 40, 6: 60 };

export type LayoutWant = 'ts' | 'other';

/**
 * The classic BPF program that matches
 *   - 'ts':    TCP segments laid out as TS_PAYLOAD says (IPv4: version 4,
 *              ihl 5, not a fragment; IPv6: TCP right after the fixed
 *              header; data offset 8), with at least TS_PAYLOAD bytes;
 *   - 'other': the other packets that carry payload after the TCP header,
 *              and every packet it cannot read.
 * At most one of the two matches a packet; neither matches a segment it can
 * read that has no payload (a SYN-ACK, a bare ACK): there is no '-' of a
 * reply in it, and a search from MIN_PAYLOAD + 3 would only look at its
 * TCP options.  They let the '-' rule start its search where the payload
 * starts, past the TCP options: timestamps are 8 bytes that change with
 * every segment, and a 0x2d among them queued about one segment in twenty
 * for nothing (and, since the kernel sets the see-all bit on a '-', the
 * segment after it too).
 */
export function layoutProgram(family: 4 | 6, want: LayoutWant): BpfInsn[] {
  const tsAt = TS_PAYLOAD[family];
  const tcpAt = family === 4 ? 20 : 40;
  const head: AsmInsn[] = family === 4
    ? [
      { code: LD | W | LEN },
      { code: JMP | JGT | K, k: tcpAt + 12, jt: 'long', jf: 'OTHER' }, // every byte read below is present
      { code: LD | B | ABS, k: 0, label: 'long' },
      { code: JMP | JEQ | K, k: 0x45, jt: 'v4', jf: 'OTHER' }, // version 4, ihl 5
      { code: LD | H | ABS, k: 6, label: 'v4' },
      { code: JMP | JSET | K, k: 0x3fff, jt: 'OTHER', jf: 'whole' }, // MF or a fragment offset
      { code: LD | B | ABS, k: 9, label: 'whole' },
      { code: JMP | JEQ | K, k: 6, jt: 'tcp', jf: 'OTHER' },
    ]
    : [
      { code: LD | W | LEN },
      { code: JMP | JGT | K, k: tcpAt + 12, jt: 'long', jf: 'OTHER' },
      { code: LD | B | ABS, k: 6, label: 'long' }, // next header
      { code: JMP | JEQ | K, k: 6, jt: 'tcp', jf: 'OTHER' },
    ];
  const prog = assemble([
    ...head,
    { code: LD | B | ABS, k: tcpAt + 12, label: 'tcp' },
    { code: ALU | AND | K, k: 0xf0 },
    { code: JMP | JEQ | K, k: 0x80, jt: 'd8', jf: 'payload' }, // data offset 8 words
    { code: LD | W | LEN, label: 'd8' },
    { code: JMP | JGT | K, k: tsAt - 1, jt: 'TS', jf: 'payload' },
    // Payload past the TCP header?  X = where it starts: tcpAt + data offset * 4.
    { code: LD | B | ABS, k: tcpAt + 12, label: 'payload' },
    { code: ALU | AND | K, k: 0xf0 },
    { code: ALU | RSH | K, k: 2 },
    { code: ALU | ADD | K, k: tcpAt },
    { code: MISC | TAX },
    { code: LD | W | LEN },
    { code: JMP | JGT | X, jt: 'OTHER', jf: 'NONE' },
    { code: RET | K, k: want === 'ts' ? 1 : 0, label: 'TS' },
    { code: RET | K, k: want === 'ts' ? 0 : 1, label: 'OTHER' },
    { code: RET | K, k: 0, label: 'NONE' },
  ]);
  if (prog.length > XT_BPF_MAX_NUM_INSTR) throw new Error(`bpf: program of ${prog.length} instructions`);
  return prog;
}

/** layoutProgram as xt_bpf `--bytecode` text. */
export function layoutBytecode(family: 4 | 6, want: LayoutWant): string {
  return bytecodeText(layoutProgram(family, want));
}

// ---- the ruleset -----------------------------------------------------------

export interface SelectiveOptions {
  family: 4 | 6;
  /** NFQUEUE number */
  queue: number;
  /** conntrack mark bit set by the daemon (its -s option) and by the kernel on a '-' from the server */
  seeAll: number;
  /** ct mark bit: the client's last segment ended inside a line */
  partialClient: number;
  /** same for the server */
  partialServer: number;
  /** default 21 */
  controlPort?: number;
  /** prefix of our chains, default 'FTP6PROXY' */
  chain?: string;
  /** add --queue-bypass (default true) */
  bypass?: boolean;
}

export const DEFAULT_SELECTIVE_CHAIN = 'FTP6PROXY';
/** xt_table.h XT_EXTENSION_MAXNAMELEN (29) less the NUL: the longest chain name. */
const MAX_CHAIN_NAME = 28;
/** The longest suffix we append to the prefix. */
const LONGEST_SUFFIX = '-C-CONT';

/** The chain names of one configuration. */
export interface SelectiveChains {
  c: string;
  cCont: string;
  cPart: string;
  s: string;
  sCont: string;
  sPart: string;
  sDash: string;
}

export function selectiveChains(prefix: string = DEFAULT_SELECTIVE_CHAIN): SelectiveChains {
  return {
    c: `${prefix}-C`,
    cCont: `${prefix}-C-CONT`,
    cPart: `${prefix}-C-PART`,
    s: `${prefix}-S`,
    sCont: `${prefix}-S-CONT`,
    sPart: `${prefix}-S-PART`,
    sDash: `${prefix}-S-DASH`,
  };
}

/** One conntrack (or packet) mark bit: a power of two from 0x1 to 0x80000000. */
export function isBit(v: number): boolean {
  return Number.isInteger(v) && v >= 1 && v <= 0x80000000 && (v & (v - 1)) === 0;
}

function hex(v: number): string {
  return `0x${(v >>> 0).toString(16)}`;
}

interface Checked {
  family: 4 | 6;
  queue: number;
  seeAll: number;
  partialClient: number;
  partialServer: number;
  port: number;
  chain: string;
  bypass: boolean;
}

function check(o: SelectiveOptions): Checked {
  const bad = (msg: string): never => {
    throw new FtpProxyError('selective-options', `selective ruleset: ${msg}`, { fatal: true });
  };
  if (o.family !== 4 && o.family !== 6) bad(`family must be 4 or 6, not ${String(o.family)}`);
  if (!Number.isInteger(o.queue) || o.queue < 0 || o.queue > 65535) bad(`queue number must be 0..65535, not ${o.queue}`);
  const bits: Array<[string, number]> = [['seeAll', o.seeAll], ['partialClient', o.partialClient], ['partialServer', o.partialServer]];
  for (const [name, v] of bits) {
    if (!isBit(v)) bad(`${name} mark must be a single bit (a power of two from 0x1 to 0x80000000), not ${typeof v === 'number' && Number.isFinite(v) ? hex(v) : String(v)}`);
  }
  if (o.seeAll === o.partialClient || o.seeAll === o.partialServer || o.partialClient === o.partialServer) {
    bad(`the mark bits must be distinct (seeAll ${hex(o.seeAll)}, partialClient ${hex(o.partialClient)}, partialServer ${hex(o.partialServer)})`);
  }
  const port = o.controlPort ?? 21;
  if (!Number.isInteger(port) || port < 1 || port > 65535) bad(`control port must be 1..65535, not ${port}`);
  const chain = o.chain ?? DEFAULT_SELECTIVE_CHAIN;
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(chain)) bad(`chain prefix ${JSON.stringify(chain)} must be letters, digits, '_', '.', '-' and not start with '-'`);
  if (chain.length + LONGEST_SUFFIX.length > MAX_CHAIN_NAME) {
    bad(`chain prefix ${JSON.stringify(chain)} is too long: ${chain}${LONGEST_SUFFIX} exceeds ${MAX_CHAIN_NAME} characters`);
  }
  return { family: o.family, queue: o.queue, seeAll: o.seeAll, partialClient: o.partialClient, partialServer: o.partialServer, port, chain, bypass: o.bypass ?? true };
}

function program(family: 4 | 6): string {
  return family === 4 ? 'iptables' : 'ip6tables';
}

/**
 * The argv lists that create the ruleset (module comment), in order: every
 * chain first, then the FORWARD jumps, then the rules of each chain.
 * Throws FtpProxyError on options that do not fit.
 */
export function selectiveRules(o: SelectiveOptions): string[][] {
  const c = check(o);
  const n = selectiveChains(c.chain);
  const cmd = program(c.family);
  const port = String(c.port);
  const nfqueue = ['-j', 'NFQUEUE', '--queue-num', String(c.queue), ...(c.bypass ? ['--queue-bypass'] : [])];
  const lf = bpfBytecode(c.family, 'lf');
  const nolf = bpfBytecode(c.family, 'nolf');
  const out: string[][] = [];
  const add = (...args: string[]): void => {
    out.push([cmd, ...args]);
  };

  for (const ch of [n.c, n.cCont, n.cPart, n.s, n.sCont, n.sPart, n.sDash]) add('-N', ch);
  add('-A', 'FORWARD', '-p', 'tcp', '--dport', port, '-j', n.c);
  add('-A', 'FORWARD', '-p', 'tcp', '--sport', port, '-j', n.s);

  // Rules 1 and 2 of both directions: keep line boundaries.
  const lines = (from: string, cont: string, part: string, p: number): void => {
    const mark = `${hex(p)}/${hex(p)}`;
    add('-A', from, '-m', 'connmark', '--mark', mark, '-j', cont);
    add('-A', cont, '-m', 'bpf', '--bytecode', lf, '-j', 'CONNMARK', '--set-xmark', `0x0/${hex(p)}`);
    add('-A', cont, ...nfqueue);
    add('-A', from, '-m', 'bpf', '--bytecode', nolf, '-j', part);
    add('-A', part, '-j', 'CONNMARK', '--set-xmark', mark);
    add('-A', part, ...nfqueue);
  };

  // xt_string searches from the IP header; start past the smallest IP + TCP
  // headers, where no payload byte can be, so that an address or a sequence
  // number does not queue a packet for nothing.
  const str = (...more: string[]): string[] => ['-m', 'string', '--algo', 'bm', '--from', String(MIN_PAYLOAD[c.family]), ...more];

  lines(n.c, n.cCont, n.cPart, c.partialClient);
  // FTP commands are case-insensitive (RFC 959 5.3); any of these may open a hole.
  for (const s of ['PORT', 'EPRT', 'LPRT']) add('-A', n.c, ...str('--icase', '--string', s), ...nfqueue);

  lines(n.s, n.sCont, n.sPart, c.partialServer);
  const m = `${hex(c.seeAll)}/${hex(c.seeAll)}`;
  add('-A', n.s, '-m', 'connmark', '--mark', m, ...nfqueue);
  // A '-' from the payload's fourth byte on (the earliest a "nnn-" can put
  // it); where the layout is not the usual one, from the earliest that
  // fourth byte can be, which may search TCP options too.
  for (const [layout, from] of [['ts', TS_PAYLOAD[c.family]], ['other', MIN_PAYLOAD[c.family]]] as const) {
    add('-A', n.s, '-m', 'bpf', '--bytecode', layoutBytecode(c.family, layout),
      '-m', 'string', '--algo', 'bm', '--from', String(from + 3), '--string', '-', '-j', n.sDash);
  }
  add('-A', n.sDash, '-j', 'CONNMARK', '--set-xmark', m);
  add('-A', n.sDash, ...nfqueue);
  // PASV (227), LPSV (228), EPSV (229) replies.
  for (const s of ['227', '228', '229']) add('-A', n.s, ...str('--string', s), ...nfqueue);
  // After the filter hook: the daemon's verdict left its decision in the
  // packet's M bit (NFQA_MARK); copy that bit, and only it, into the
  // connection's mark.  A server packet nobody queued passed only because M
  // was clear, and its packet mark's M bit is 0: it copies a 0 over a 0.
  add('-t', 'mangle', '-A', 'POSTROUTING', '-p', 'tcp', '--sport', port,
    '-j', 'CONNMARK', '--save-mark', '--nfmask', hex(c.seeAll), '--ctmask', hex(c.seeAll));
  return out;
}

/**
 * The argv lists that remove the ruleset: the FORWARD jumps, then flush
 * every chain, then delete them.  Callers run all of them and ignore
 * failures (a part may be missing already).  Validates like selectiveRules.
 */
export function selectiveTeardown(o: SelectiveOptions): string[][] {
  const c = check(o);
  const n = selectiveChains(c.chain);
  const cmd = program(c.family);
  const port = String(c.port);
  const chains = [n.c, n.cCont, n.cPart, n.s, n.sCont, n.sPart, n.sDash];
  return [
    [cmd, '-t', 'mangle', '-D', 'POSTROUTING', '-p', 'tcp', '--sport', port,
      '-j', 'CONNMARK', '--save-mark', '--nfmask', hex(c.seeAll), '--ctmask', hex(c.seeAll)],
    [cmd, '-D', 'FORWARD', '-p', 'tcp', '--dport', port, '-j', n.c],
    [cmd, '-D', 'FORWARD', '-p', 'tcp', '--sport', port, '-j', n.s],
    ...chains.map((ch) => [cmd, '-F', ch]),
    ...chains.map((ch) => [cmd, '-X', ch]),
  ];
}

/** A shell script of the commands: one per line, words quoted where a POSIX shell needs it. */
export function shellLines(argvs: readonly string[][]): string {
  return argvs.map((a) => `${shellQuote(a)}\n`).join('');
}
