/**
 * Test helper: build IPv4 / IPv6 TCP packets byte by byte, with correct
 * checksums, optional IPv6 extension headers and fragment fields.
 *
 *   buildTcp({ family: 6, src: 'fd00:1::2', dst: 'fd00:2::2', sport: 40000, dport: 21,
 *              seq: 1000, flags: 'PA', payload: 'PORT ...\r\n' })
 *
 *   const f = new TcpFlow({ family: 4, client: '198.18.1.2', server: '198.18.2.2' });
 *   f.open();                    // SYN, SYN-ACK, ACK
 *   f.client('EPSV\r\n');        // seq numbers tracked per side
 *   f.server('229 ... (|||50000|)\r\n');
 *
 * Layouts: RFC 791, RFC 8200, RFC 4302, RFC 9293.
 */

import { parseAddr } from '../../src/addr';
import type { Family, Packet } from '../../src/types';

export const FIN = 0x01;
export const SYN = 0x02;
export const RST = 0x04;
export const PSH = 0x08;
export const ACK = 0x10;

/** An IPv6 extension header to put before TCP. */
export interface ExtHeader {
  /** 0 hop-by-hop, 43 routing, 60 destination options, 51 AH, 44 fragment, or anything */
  type: number;
  /** total length in bytes (multiple of 8; of 4 for AH); default 8 (AH: 12) */
  length?: number;
}

export interface FragmentSpec {
  /** offset in 8-octet units */
  offset: number;
  more?: boolean;
  id?: number;
}

export interface TcpSpec {
  family: Family;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  seq: number;
  ack?: number;
  /** bits, or letters: S SYN, A ACK, F FIN, R RST, P PSH (default 'PA' with payload, 'A' without) */
  flags?: number | string;
  payload?: string | Uint8Array;
  /** IPv6 only: headers between the IPv6 header and TCP, in order */
  ext?: ExtHeader[];
  /** IPv4: the header's fragment fields; IPv6: a fragment header after `ext` */
  fragment?: FragmentSpec;
  /** TCP options length in bytes (multiple of 4), filled with NOP; default 0 */
  tcpOptions?: number;
  /** IP protocol / final next header; default 6 (e.g. 17 to build a non-TCP packet) */
  protocol?: number;
}

export function bytes(p: string | Uint8Array): Uint8Array {
  return typeof p === 'string' ? Uint8Array.from(p, (c) => c.charCodeAt(0) & 0xff) : p;
}

export function flagBits(f: number | string | undefined, hasPayload: boolean): number {
  if (typeof f === 'number') return f;
  const s = f ?? (hasPayload ? 'PA' : 'A');
  let v = 0;
  for (const c of s) {
    const bit = ({ F: FIN, S: SYN, R: RST, P: PSH, A: ACK } as Record<string, number>)[c.toUpperCase()];
    if (bit === undefined) throw new Error(`unknown TCP flag letter ${c}`);
    v |= bit;
  }
  return v;
}

function addr(family: Family, text: string): Uint8Array {
  const b = parseAddr(family, text);
  if (b === null) throw new Error(`bad IPv${family} address ${text}`);
  return b;
}

/** RFC 1071 one's complement sum over the given chunks. */
export function checksum(...chunks: Uint8Array[]): number {
  let sum = 0;
  for (const c of chunks) {
    for (let i = 0; i < c.length; i += 2) sum += (c[i] << 8) | (i + 1 < c.length ? c[i + 1] : 0);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function be16(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 8) & 0xff;
  b[off + 1] = v & 0xff;
}
function be32(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 24) & 0xff;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}

/** The TCP header plus payload, checksummed for the given addresses. */
function tcpSegment(spec: TcpSpec, src: Uint8Array, dst: Uint8Array): Uint8Array {
  const payload = bytes(spec.payload ?? '');
  const optLen = spec.tcpOptions ?? 0;
  const hlen = 20 + optLen;
  const t = new Uint8Array(hlen + payload.length);
  be16(t, 0, spec.sport);
  be16(t, 2, spec.dport);
  be32(t, 4, spec.seq >>> 0);
  be32(t, 8, (spec.ack ?? 0) >>> 0);
  t[12] = (hlen / 4) << 4;
  t[13] = flagBits(spec.flags, payload.length > 0);
  be16(t, 14, 65535); // window
  t.fill(1, 20, hlen); // NOP options
  t.set(payload, hlen);
  // pseudo-header: RFC 9293 3.1 (IPv4), RFC 8200 8.1 (IPv6)
  const pseudo = new Uint8Array(src.length * 2 + (spec.family === 4 ? 4 : 8));
  pseudo.set(src, 0);
  pseudo.set(dst, src.length);
  const o = src.length * 2;
  if (spec.family === 4) {
    pseudo[o + 1] = 6;
    be16(pseudo, o + 2, t.length);
  } else {
    be32(pseudo, o, t.length);
    pseudo[o + 7] = 6;
  }
  be16(t, 16, checksum(pseudo, t));
  return t;
}

export function buildTcp(spec: TcpSpec): Uint8Array {
  const src = addr(spec.family, spec.src);
  const dst = addr(spec.family, spec.dst);
  const tcp = tcpSegment(spec, src, dst);
  const proto = spec.protocol ?? 6;

  if (spec.family === 4) {
    const p = new Uint8Array(20 + tcp.length);
    p[0] = 0x45;
    be16(p, 2, p.length);
    be16(p, 4, spec.fragment?.id ?? 1);
    if (spec.fragment) be16(p, 6, (spec.fragment.more ? 0x2000 : 0) | (spec.fragment.offset & 0x1fff));
    p[8] = 64;
    p[9] = proto;
    p.set(src, 12);
    p.set(dst, 16);
    be16(p, 10, checksum(p.subarray(0, 20)));
    p.set(tcp, 20);
    return p;
  }

  const ext = [...(spec.ext ?? [])];
  if (spec.fragment) ext.push({ type: 44, length: 8 });
  const extLen = ext.reduce((n, e) => n + (e.length ?? (e.type === 51 ? 12 : 8)), 0);
  const p = new Uint8Array(40 + extLen + tcp.length);
  p[0] = 0x60;
  be16(p, 4, extLen + tcp.length);
  p[6] = ext.length > 0 ? ext[0].type : proto;
  p[7] = 64;
  p.set(src, 8);
  p.set(dst, 24);
  let off = 40;
  for (let i = 0; i < ext.length; i++) {
    const e = ext[i];
    const len = e.length ?? (e.type === 51 ? 12 : 8);
    p[off] = i + 1 < ext.length ? ext[i + 1].type : proto;
    if (e.type === 51) p[off + 1] = len / 4 - 2; // RFC 4302 2.2
    else if (e.type === 44) {
      const f = spec.fragment ?? { offset: 0 };
      be16(p, off + 2, ((f.offset & 0x1fff) << 3) | (f.more ? 1 : 0));
      be32(p, off + 4, f.id ?? 1);
    } else p[off + 1] = len / 8 - 1; // RFC 8200 4.3: 8-octet units beyond the first 8
    if (e.type === 0 || e.type === 60) {
      p[off + 2] = 1; // PadN option filling the rest
      p[off + 3] = len - 4;
    }
    off += len;
  }
  p.set(tcp, off);
  return p;
}

export interface FlowSpec {
  family: Family;
  client: string;
  server: string;
  clientPort?: number;
  serverPort?: number;
  clientIsn?: number;
  serverIsn?: number;
}

/**
 * A TCP conversation with sequence numbers tracked per side, producing
 * Packets (time in ms, advancing by `step` per packet unless given).
 */
export class TcpFlow {
  readonly spec: Required<FlowSpec>;
  cseq: number;
  sseq: number;
  time = 0;
  step = 1;

  constructor(spec: FlowSpec) {
    this.spec = {
      clientPort: 40000,
      serverPort: 21,
      clientIsn: 1000,
      serverIsn: 5000,
      ...spec,
    };
    this.cseq = this.spec.clientIsn;
    this.sseq = this.spec.serverIsn;
  }

  private pkt(data: Uint8Array, time?: number): Packet {
    this.time = time ?? this.time + this.step;
    return { data, time: this.time };
  }

  /** A client -> server segment; advances the client sequence by the payload (and SYN/FIN). */
  client(payload: string | Uint8Array = '', opts: { flags?: number | string; seq?: number; time?: number } = {}): Packet {
    const b = bytes(payload);
    const seq = opts.seq ?? this.cseq;
    const flags = flagBits(opts.flags, b.length > 0);
    const data = buildTcp({
      family: this.spec.family, src: this.spec.client, dst: this.spec.server,
      sport: this.spec.clientPort, dport: this.spec.serverPort, seq, ack: this.sseq, flags, payload: b,
    });
    if (opts.seq === undefined) this.cseq = (seq + b.length + ((flags & (SYN | FIN)) !== 0 ? 1 : 0)) >>> 0;
    return this.pkt(data, opts.time);
  }

  /** A server -> client segment. */
  server(payload: string | Uint8Array = '', opts: { flags?: number | string; seq?: number; time?: number } = {}): Packet {
    const b = bytes(payload);
    const seq = opts.seq ?? this.sseq;
    const flags = flagBits(opts.flags, b.length > 0);
    const data = buildTcp({
      family: this.spec.family, src: this.spec.server, dst: this.spec.client,
      sport: this.spec.serverPort, dport: this.spec.clientPort, seq, ack: this.cseq, flags, payload: b,
    });
    if (opts.seq === undefined) this.sseq = (seq + b.length + ((flags & (SYN | FIN)) !== 0 ? 1 : 0)) >>> 0;
    return this.pkt(data, opts.time);
  }

  /** The three-way handshake. */
  open(): Packet[] {
    return [this.client('', { flags: 'S' }), this.server('', { flags: 'SA' }), this.client('', { flags: 'A' })];
  }
}
