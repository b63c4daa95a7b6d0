/**
 * Generators for the fuzz targets: hostile FTP lines, control sessions cut
 * into TCP segments, byte mutations of packets and captures, and a small
 * pcap(5) writer for synthetic traces.
 *
 * Addresses come from fixed pools so that an announcement naming "someone
 * else" (the victim, the other client, a server) happens often, which is what
 * the anti-bounce property needs to see.
 */
import * as fc from 'fast-check';
import { buildTcp } from '../unit/build-packet';
import type { Family } from '../../src/types';

export const POOL: Record<Family, { clients: string[]; servers: string[]; victims: string[] }> = {
  4: { clients: ['198.18.1.10', '198.18.1.11'], servers: ['198.18.2.10', '198.18.2.11'], victims: ['198.18.1.20', '198.18.3.3'] },
  6: { clients: ['fd00:c1::10', 'fd00:c1::11'], servers: ['fd00:5e::10', 'fd00:5e::11'], victims: ['fd00:c1::20', 'fd00:99::1'] },
};

/** Ports an attacker would pick, and ordinary ones. */
export const arbPort: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(0, 1, 20, 21, 22, 25, 80, 443, 1023, 1024, 1025, 6000, 65535, 65536, 70000, 131072 + 80),
  fc.integer({ min: 1024, max: 65535 }),
  fc.integer({ min: 0, max: 1023 }),
);

/** Any address of the pools of both families, or a random one. */
export function arbAnyAddr(family: Family): fc.Arbitrary<string> {
  const p = POOL[family];
  const random = family === 4
    ? fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'))
    : fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map((w) => w.map((x) => x.toString(16)).join(':'));
  return fc.oneof(fc.constantFrom(...p.clients, ...p.servers, ...p.victims), random);
}

function v4Octets(a: string): number[] {
  return a.split('.').map(Number);
}

function v6Bytes(a: string): number[] {
  // expand "::" then split into 8 words
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const hw = head === '' ? [] : head.split(':');
  const tw = tail === undefined || tail === '' ? [] : tail.split(':');
  const words = tail === undefined ? hw : [...hw, ...Array<string>(8 - hw.length - tw.length).fill('0'), ...tw];
  const out: number[] = [];
  for (const w of words) {
    const n = parseInt(w, 16);
    out.push(n >> 8, n & 0xff);
  }
  return out;
}

function randCase(s: string, mask: number): string {
  let o = '';
  for (let i = 0; i < s.length; i++) o += (mask >> (i % 30)) & 1 ? s[i].toLowerCase() : s[i];
  return o;
}

/** One announcement line of any kind (valid-looking, with hostile addresses and ports). */
export function arbAnnounceLine(): fc.Arbitrary<{ dir: 'client' | 'server'; text: string }> {
  const fam = fc.constantFrom<Family>(4, 6);
  return fc.oneof(
    fc.tuple(arbAnyAddr(4), arbPort, fc.nat(), fc.constantFrom(',', ' ,', ', ')).map(([a, p, m, sep]) => ({
      dir: 'client' as const,
      text: `${randCase('PORT', m)} ${[...v4Octets(a), (p >> 8) & 0x1ff, p & 0xff].join(sep === ',' ? ',' : ',')}`,
    })),
    fc.tuple(fam, fc.nat(), arbPort, fc.constantFrom('|', '!', '#')).chain(([f, m, p, d]) =>
      arbAnyAddr(f).map((a) => ({ dir: 'client' as const, text: `${randCase('EPRT', m)} ${d}${f === 4 ? 1 : 2}${d}${a}${d}${p}${d}` }))),
    fc.tuple(fam, arbPort).chain(([f, p]) =>
      arbAnyAddr(f).map((a) => {
        const bytes = f === 4 ? v4Octets(a) : v6Bytes(a);
        return { dir: 'client' as const, text: `LPRT ${f},${bytes.length},${bytes.join(',')},2,${(p >> 8) & 0x1ff},${p & 0xff}` };
      })),
    fc.tuple(arbAnyAddr(4), arbPort, fc.constantFrom('(', '', '=')).map(([a, p, open]) => ({
      dir: 'server' as const,
      text: `227 Entering Passive Mode ${open}${[...v4Octets(a), (p >> 8) & 0x1ff, p & 0xff].join(',')}${open === '(' ? ')' : ''}`,
    })),
    fc.tuple(fam, arbPort).chain(([f, p]) =>
      arbAnyAddr(f).map((a) => {
        const bytes = f === 4 ? v4Octets(a) : v6Bytes(a);
        return { dir: 'server' as const, text: `228 Entering Long Passive Mode (${f},${bytes.length},${bytes.join(',')},2,${(p >> 8) & 0x1ff},${p & 0xff})` };
      })),
    arbPort.map((p) => ({ dir: 'server' as const, text: `229 Entering Extended Passive Mode (|||${p}|)` })),
    fc.constantFrom('PASV', 'EPSV', 'epsv 2', 'LPSV', 'USER anonymous', 'RETR x').map((t) => ({ dir: 'client' as const, text: t })),
    fc.constantFrom('220 hi', '230-multi', ' 227 inside (1,2,3,4,5,6)', '230 ok', '150 here', '226 done').map((t) => ({ dir: 'server' as const, text: t })),
  );
}

/** A line of bytes, often near an announcement. */
export const arbHostileLine: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 700 }),
  arbAnnounceLine().chain(({ text }) =>
    fc.tuple(fc.nat(text.length), fc.uint8Array({ maxLength: 6 }), fc.boolean()).map(([at, ins, cut]) => {
      const b = Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff);
      if (cut) return b.subarray(0, at);
      const o = new Uint8Array(b.length + ins.length);
      o.set(b.subarray(0, at));
      o.set(ins, at);
      o.set(b.subarray(at), at + ins.length);
      return o;
    })),
  fc.nat(1200).map((n) => Uint8Array.from(('PORT ' + '1,'.repeat(n)).slice(0, n + 5), (c) => c.charCodeAt(0))),
);

/** Byte-level mutation of a buffer: flips, sets, truncation, insertion, duplication. */
export type Mutation =
  | { k: 'flip'; at: number; bit: number }
  | { k: 'set'; at: number; v: number }
  | { k: 'trunc'; at: number }
  | { k: 'insert'; at: number; data: Uint8Array }
  | { k: 'dup'; at: number; len: number };

export const arbMutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ k: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat(7) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('set' as const), at: fc.nat(), v: fc.constantFrom(0, 1, 0x7f, 0x80, 0xff, 6, 0x3c, 0x40) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('trunc' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('insert' as const), at: fc.nat(), data: fc.uint8Array({ minLength: 1, maxLength: 16 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('dup' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 64 }) }) },
);

/** Apply mutations; `keep` leading bytes are never touched (e.g. a pcap magic). */
export function mutate(buf: Uint8Array, ms: readonly Mutation[], keep = 0): Uint8Array {
  let b = Uint8Array.from(buf);
  for (const m of ms) {
    const span = b.length - keep;
    if (span <= 0) break;
    const at = keep + (m.at % span);
    switch (m.k) {
      case 'flip': b[at] ^= 1 << m.bit; break;
      case 'set': b[at] = m.v; break;
      case 'trunc': b = b.slice(0, Math.max(keep, at)); break;
      case 'insert': {
        const o = new Uint8Array(b.length + m.data.length);
        o.set(b.subarray(0, at)); o.set(m.data, at); o.set(b.subarray(at), at + m.data.length);
        b = o;
        break;
      }
      case 'dup': {
        const part = b.slice(at, at + m.len);
        const o = new Uint8Array(b.length + part.length);
        o.set(b.subarray(0, at + part.length)); o.set(part, at + part.length); o.set(b.subarray(at + part.length), at + 2 * part.length);
        b = o;
        break;
      }
    }
  }
  return b;
}

export interface GenSession {
  family: Family;
  client: string;
  server: string;
  clientPort: number;
  cisn: number;
  sisn: number;
  /** lines in conversation order */
  lines: { dir: 'client' | 'server'; text: string }[];
}

export const arbSession: fc.Arbitrary<GenSession> = fc
  .record({
    family: fc.constantFrom<Family>(4, 6),
    ci: fc.nat(1),
    si: fc.nat(1),
    clientPort: fc.integer({ min: 1024, max: 65535 }),
    cisn: fc.nat({ max: 0xffffffff }),
    sisn: fc.nat({ max: 0xffffffff }),
    lines: fc.array(arbAnnounceLine(), { minLength: 1, maxLength: 12 }),
  })
  .map((r) => ({
    family: r.family,
    client: POOL[r.family].clients[r.ci],
    server: POOL[r.family].servers[r.si],
    clientPort: r.clientPort,
    cisn: r.cisn,
    sisn: r.sisn,
    lines: r.lines,
  }));

/** One IP packet with where it is in the conversation. */
export interface GenPacket {
  data: Uint8Array;
}

/**
 * The packets of a session: handshake, each side's bytes cut at `cuts`, an
 * optional retransmission and swap of neighbours, and FIN at the end.
 */
export function sessionPackets(s: GenSession, cuts: readonly number[], shuffle: readonly number[]): Uint8Array[] {
  let cseq = s.cisn;
  let sseq = s.sisn;
  const pk = (fromClient: boolean, flags: number, payload: Uint8Array): Uint8Array => {
    const seq = fromClient ? cseq : sseq;
    const p = buildTcp({
      family: s.family,
      src: fromClient ? s.client : s.server,
      dst: fromClient ? s.server : s.client,
      sport: fromClient ? s.clientPort : 21,
      dport: fromClient ? 21 : s.clientPort,
      seq,
      ack: fromClient ? sseq : cseq,
      flags,
      payload,
    });
    const adv = payload.length + ((flags & 0x03) !== 0 ? 1 : 0);
    if (fromClient) cseq = (cseq + adv) >>> 0;
    else sseq = (sseq + adv) >>> 0;
    return p;
  };
  const out: Uint8Array[] = [pk(true, 0x02, new Uint8Array(0)), pk(false, 0x12, new Uint8Array(0)), pk(true, 0x10, new Uint8Array(0))];
  let ci = 0;
  for (const l of s.lines) {
    const b = Uint8Array.from(l.text + '\r\n', (c) => c.charCodeAt(0) & 0xff);
    // split the line into up to 3 segments at generated cut points
    const c = cuts.length > 0 ? cuts[ci++ % cuts.length] : 0;
    const at = b.length > 1 ? 1 + (c % (b.length - 1)) : b.length;
    const parts = c % 3 === 0 ? [b] : [b.subarray(0, at), b.subarray(at)];
    for (const part of parts) if (part.length > 0) out.push(pk(l.dir === 'client', 0x18, part));
  }
  out.push(pk(true, 0x11, new Uint8Array(0)), pk(false, 0x11, new Uint8Array(0)));
  // neighbour swaps and retransmissions (reordering within a small window)
  for (const x of shuffle) {
    const i = 3 + (x % Math.max(1, out.length - 4));
    if (i + 1 >= out.length) continue;
    if (x % 4 === 0) out.splice(i, 0, out[i]);
    else [out[i], out[i + 1]] = [out[i + 1], out[i]];
  }
  return out;
}

/** pcap(5), LINKTYPE_RAW (101), microsecond timestamps, little endian. */
export function writePcap(packets: readonly { data: Uint8Array; timeMs: number }[]): Uint8Array {
  const size = 24 + packets.reduce((n, p) => n + 16 + p.data.length, 0);
  const b = new Uint8Array(size);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 0xa1b2c3d4, true);
  dv.setUint16(4, 2, true);
  dv.setUint16(6, 4, true);
  dv.setUint32(16, 65535, true);
  dv.setUint32(20, 101, true);
  let off = 24;
  for (const p of packets) {
    dv.setUint32(off, Math.floor(p.timeMs / 1000), true);
    dv.setUint32(off + 4, Math.floor((p.timeMs % 1000) * 1000), true);
    dv.setUint32(off + 8, p.data.length, true);
    dv.setUint32(off + 12, p.data.length, true);
    b.set(p.data, off + 16);
    off += 16 + p.data.length;
  }
  return b;
}

/** A synthetic trace: a few sessions, packets 10 ms apart. */
export function syntheticTrace(sessions: readonly GenSession[]): Uint8Array {
  const pkts: { data: Uint8Array; timeMs: number }[] = [];
  let t = 1_700_000_000_000;
  for (const s of sessions) for (const d of sessionPackets(s, [1, 2, 3], [])) pkts.push({ data: d, timeMs: (t += 10) });
  return writePcap(pkts);
}
