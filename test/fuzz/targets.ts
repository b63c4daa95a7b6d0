/**
 * The fuzz targets: one property per parser or loop that sees hostile input,
 * each with a deliberately broken variant (`broken`) that the same property
 * must reject, so a test can prove the property is able to fail.
 *
 *   decode        decodePacket: never throws; views stay inside the packet and
 *                 inside the IP length (link padding excluded)
 *   reassembly    StreamReassembler: held segments/bytes and the line buffer
 *                 stay within their bounds; in-order delivery with
 *                 retransmits gives back exactly the lines sent
 *   ftp           parseLine: never throws; an announcement has a port 1..65535
 *                 and an address of its family; a well-formed PORT round-trips
 *   netlink       parseMessages/parseAttrs/parseError/decodeNfqPacket: never
 *                 throw; every message and attribute lies inside the datagram
 *   pcap          parsePcap: throws only PcapFormatError; frames lie inside the file
 *   release-nfq   the real NfqueueSource over a fake kernel: every packet gets
 *                 exactly one verdict, never before its handler settled, with
 *                 handlers that throw, reject, or hang for a while; also across close()
 *   release-div   the same for DivertSource (with its hold limit)
 *   holes         Engine + HoleManager + RecordingFirewall over random control
 *                 sessions: every hole opened matches a control connection seen
 *                 (PORT/EPRT/LPRT: server -> client; 227/228/229: client ->
 *                 server), port >= 1024, within the pool
 *   replay        in-process replay() of mutated traces: exit code 0, bounded time
 */
import * as fs from 'fs';
import * as path from 'path';
import * as fc from 'fast-check';
import { decodePacket, type DecodeResult } from '../../src/packet';
import { StreamReassembler, type LineSink } from '../../src/reassembly';
import { parseLine, MAX_LINE, type ParseResult } from '../../src/ftp';
import { NLMSG_HDRLEN, parseAttrs, parseError, parseMessages, readU16H, readU32H, align4, type NlMessage } from '../../src/netlink';
import { NfqueueSource, decodeNfqPacket } from '../../src/capture/nfqueue';
import { DivertSource } from '../../src/capture/divert';
import { parsePcap, PcapFormatError, type PcapFile } from '../../src/pcap';
import { Engine } from '../../src/engine';
import { HoleManager } from '../../src/holes';
import { RecordingFirewall } from '../../src/firewall/recording';
import { ControlProxy } from '../../src/proxy';
import { VirtualClock } from '../../src/clock';
import { formatAddr } from '../../src/addr';
import { replay } from '../../src/replay';
import { parseCommandLine } from '../../src/options';
import { buildTcp } from '../unit/build-packet';
import type { Announce, HoleSpec, Logger, Packet, PacketHandler } from '../../src/types';
import {
  arbAnnounceLine, arbHostileLine, arbMutation, arbSession, mutate, sessionPackets, syntheticTrace, type GenSession,
} from './gen';
import { FakeDivertIo, FakeNetlinkNative, nfqPacketMessage } from './fakes';

const quiet: Logger = { log: () => undefined };

export interface Outcome {
  failed: boolean;
  numRuns: number;
  /** the shrunk counterexample and error, when failed */
  detail: string;
  /** what the runs exercised (shows the property is not vacuous) */
  counters: Record<string, number>;
}

export interface CheckParams {
  seed?: number;
  numRuns: number;
  /** stop after this long (not a failure) */
  timeLimitMs?: number;
}

export interface Target {
  name: string;
  /** the property against the real code */
  real: (p: CheckParams) => Promise<Outcome>;
  /** the same property against a deliberately broken variant: must fail */
  broken: (p: CheckParams) => Promise<Outcome>;
}

type Counters = Record<string, number>;
function bump(c: Counters | undefined, k: string, n = 1): void {
  if (c !== undefined) c[k] = (c[k] ?? 0) + n;
}

async function check<Ts>(prop: fc.IRawProperty<Ts>, p: CheckParams, counters: Counters = {}): Promise<Outcome> {
  const d = await fc.check(prop, {
    seed: p.seed,
    numRuns: p.numRuns,
    interruptAfterTimeLimit: p.timeLimitMs,
    markInterruptAsFailure: false,
    endOnFailure: true,
  });
  let detail = '';
  if (d.failed) {
    const ce = d.counterexample === null ? '' : fc.stringify(d.counterexample).slice(0, 600);
    const err = d.errorInstance instanceof Error ? d.errorInstance.message : String(d.errorInstance);
    detail = `seed ${d.seed} path ${d.counterexamplePath ?? ''}: ${err.slice(0, 400)}\n  counterexample: ${ce}`;
  }
  return { failed: d.failed, numRuns: d.numRuns, detail, counters };
}

function fail(msg: string): never {
  throw new Error(msg);
}

/** `inner` is a view inside `outer` (same memory, within its bounds). */
function within(inner: Uint8Array, outer: Uint8Array): boolean {
  return inner.buffer === outer.buffer && inner.byteOffset >= outer.byteOffset &&
    inner.byteOffset + inner.length <= outer.byteOffset + outer.length;
}

// ---- seeds: real traces when present, synthetic packets otherwise ----------

function committedTraces(): Uint8Array[] {
  const dir = path.resolve(__dirname, '..', '..', '..', 'compat', 'traces');
  try {
    return fs.readdirSync(dir).filter((f) => f.endsWith('.pcap')).sort().map((f) => new Uint8Array(fs.readFileSync(path.join(dir, f))));
  } catch {
    return [];
  }
}

const TRACES = committedTraces();
const TRACE_PACKETS: Uint8Array[] = TRACES.flatMap((t) => {
  try {
    return parsePcap(t).records.map((r) => r.ip).filter((x): x is Uint8Array => x !== null).slice(0, 200);
  } catch {
    return [];
  }
});

const arbSeedPacket: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.tuple(arbSession, fc.nat()).map(([s, i]) => {
    const ps = sessionPackets(s, [1, 2], []);
    return ps[i % ps.length];
  }),
  fc.record({
    ext: fc.array(fc.constantFrom(0, 43, 60, 51, 44, 59, 17), { maxLength: 3 }),
    frag: fc.nat(3),
    opt: fc.constantFrom(0, 4, 12, 40),
    payload: fc.uint8Array({ maxLength: 64 }),
    six: fc.boolean(),
  }).map((r) => buildTcp({
    family: r.six ? 6 : 4,
    src: r.six ? 'fd00:c1::10' : '198.18.1.10',
    dst: r.six ? 'fd00:5e::10' : '198.18.2.10',
    sport: 40000, dport: 21, seq: 1, payload: r.payload, tcpOptions: r.opt,
    ext: r.six ? r.ext.filter((t) => t !== 44 && t !== 17 && t !== 59).map((type) => ({ type })) : undefined,
    fragment: r.frag === 1 ? { offset: 0, more: true } : r.frag === 2 ? { offset: 3 } : undefined,
  })),
  ...(TRACE_PACKETS.length > 0 ? [fc.constantFrom(...TRACE_PACKETS)] : []),
);

// ---- decode -----------------------------------------------------------------

/** Broken on purpose: takes the payload up to the end of the buffer, not the IP length. */
function decodeIgnoringLength(d: Uint8Array): DecodeResult {
  const r = decodePacket(d);
  if (!r.ok) return r;
  const off = r.seg.payload.byteOffset - d.byteOffset;
  return { ok: true, seg: { ...r.seg, payload: d.subarray(off) } };
}

function decodeProperty(decode: (d: Uint8Array) => DecodeResult, c?: Counters): fc.IRawProperty<[Uint8Array]> {
  const arb = fc.oneof(
    fc.uint8Array({ maxLength: 128 }),
    fc.tuple(arbSeedPacket, fc.array(arbMutation, { maxLength: 4 }), fc.uint8Array({ maxLength: 8 })).map(([p, ms, pad]) => {
      const m = mutate(p, ms);
      const o = new Uint8Array(m.length + pad.length);
      o.set(m);
      o.set(pad, m.length);
      return o;
    }),
  );
  return fc.property(arb, (data) => {
    const r = decode(data);
    if (!r.ok) {
      if (typeof r.reason !== 'string' || r.reason === '') fail('failure without a reason');
      bump(c, r.skip ? 'skipped' : 'damaged');
      return;
    }
    bump(c, 'decoded');
    const s = r.seg;
    const alen = s.family === 4 ? 4 : 16;
    if (s.src.length !== alen || s.dst.length !== alen) fail('address length does not match the family');
    for (const v of [s.src, s.dst, s.payload]) if (!within(v, data)) fail('view outside the packet');
    // the payload ends where the IP header says the packet ends
    const ipEnd = s.family === 4 ? ((data[2] << 8) | data[3]) : 40 + ((data[4] << 8) | data[5]);
    if (s.payload.byteOffset - data.byteOffset + s.payload.length !== ipEnd) fail(`payload does not end at the IP length ${ipEnd}`);
    if (s.sport > 65535 || s.dport > 65535 || s.sport < 0 || s.seq > 0xffffffff || s.seq < 0 || s.ack < 0) fail('field out of range');
  });
}

// ---- reassembly -------------------------------------------------------------

interface ReassemblyLimitsFull { maxLine: number; maxHeldSegments: number; maxHeldBytes: number }
const LIMITS: ReassemblyLimitsFull = { maxLine: 64, maxHeldSegments: 4, maxHeldBytes: 256 };

interface ReasmCase {
  isn: number;
  lines: Uint8Array[];
  cuts: number[];
  /** permutation noise: reorder within a window, retransmit, inject junk */
  ops: { kind: 'swap' | 'dup' | 'junk'; at: number; far: number }[];
}

const arbReasm: fc.Arbitrary<ReasmCase> = fc.record({
  isn: fc.nat({ max: 0xffffffff }),
  lines: fc.array(
    fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.uint8Array({ minLength: 60, maxLength: 200 })).map((l) => l.map((c) => (c === 0x0a ? 0x41 : c))),
    { maxLength: 12 },
  ),
  cuts: fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 8 }),
  ops: fc.array(fc.record({ kind: fc.constantFrom<'swap' | 'dup' | 'junk'>('swap', 'dup', 'junk'), at: fc.nat(), far: fc.integer({ min: -3000, max: 100000 }) }), { maxLength: 10 }),
});

function reassemblyProperty(make: () => StreamReassembler): fc.IRawProperty<[ReasmCase]> {
  return fc.property(arbReasm, (c) => {
    const stream: number[] = [];
    for (const l of c.lines) stream.push(...l, 0x0d, 0x0a);
    const bytes = Uint8Array.from(stream);
    // cut into segments
    type Seg = { seq: number; data: Uint8Array };
    const segs: Seg[] = [];
    for (let off = 0, i = 0; off < bytes.length; i++) {
      const n = c.cuts[i % c.cuts.length];
      segs.push({ seq: (c.isn + off) >>> 0, data: bytes.subarray(off, off + n) });
      off += n;
    }
    const inOrder = c.ops.every((o) => o.kind === 'dup');
    const fed: Seg[] = [...segs];
    for (const o of c.ops) {
      if (fed.length === 0) break;
      const i = o.at % fed.length;
      if (o.kind === 'dup') fed.splice(i + 1, 0, fed[i]);
      else if (o.kind === 'swap' && i + 1 < fed.length) [fed[i], fed[i + 1]] = [fed[i + 1], fed[i]];
      else if (o.kind === 'junk') fed.splice(i, 0, { seq: (c.isn + o.far) >>> 0, data: new Uint8Array(1 + (o.at % 300)).fill(0x5a) });
    }
    const r = make();
    const got: string[] = [];
    const sink: LineSink = {
      line: (b) => {
        if (b.length > LIMITS.maxLine) fail(`line of ${b.length} bytes delivered`);
        if (b.indexOf(0x0a) !== -1) fail('LF inside a line');
        got.push(Buffer.from(b).toString('latin1'));
      },
      overlong: () => undefined,
    };
    const inner = r as unknown as { held: { length: number } | null; heldBytes: number };
    r.push((c.isn - 1) >>> 0, new Uint8Array(0), true, sink);
    for (const s of fed) {
      r.push(s.seq, s.data, false, sink);
      if (r.pending > LIMITS.maxLine + 1) fail(`line buffer holds ${r.pending} bytes`);
      const held = inner.held === null ? 0 : inner.held.length;
      if (held > LIMITS.maxHeldSegments) fail(`${held} segments held`);
      if (inner.heldBytes > LIMITS.maxHeldBytes) fail(`${inner.heldBytes} bytes held`);
    }
    if (inOrder) {
      const want = c.lines.filter((l) => l.length <= LIMITS.maxLine).map((l) => Buffer.from(l).toString('latin1'));
      if (JSON.stringify(got) !== JSON.stringify(want)) fail(`lines differ: got ${got.length}, want ${want.length}`);
    }
  });
}

// ---- ftp ----------------------------------------------------------------------

interface PortCase { octets: number[]; p1: number; p2: number; lower: boolean }
const arbPortCase: fc.Arbitrary<PortCase> = fc.record({
  octets: fc.array(fc.oneof(fc.nat(255), fc.integer({ min: 256, max: 999 })), { minLength: 4, maxLength: 4 }),
  p1: fc.oneof(fc.nat(255), fc.constantFrom(256, 300)),
  p2: fc.oneof(fc.nat(255), fc.constantFrom(256, 999)),
  lower: fc.boolean(),
});

/** Broken on purpose: splits on commas and trusts the numbers. */
function naivePortParser(dir: 'client' | 'server', line: Uint8Array | string, maxLine = MAX_LINE): ParseResult {
  const s = typeof line === 'string' ? line : Buffer.from(line).toString('latin1');
  const m = /^port (.*)$/i.exec(s);
  if (dir !== 'client' || m === null) return parseLine(dir, line, maxLine);
  const n = m[1].split(',').map((x) => parseInt(x, 10));
  return { kind: 'announce', via: 'PORT', family: 4, addr: Uint8Array.from(n.slice(0, 4)), port: n[4] * 256 + n[5] };
}

function ftpProperty(parse: typeof parseLine, c?: Counters): fc.IRawProperty<[{ dir: 'client' | 'server'; line: Uint8Array }, PortCase]> {
  const arbLine = fc.oneof(
    fc.tuple(fc.constantFrom<'client' | 'server'>('client', 'server'), arbHostileLine).map(([dir, line]) => ({ dir, line })),
    arbAnnounceLine().map(({ dir, text }) => ({ dir, line: Uint8Array.from(text, (ch) => ch.charCodeAt(0) & 0xff) })),
  );
  return fc.property(arbLine, arbPortCase, ({ dir, line }, pc) => {
    const r = parse(dir, line);
    bump(c, r.kind);
    if (r.kind === 'announce') {
      if (!Number.isInteger(r.port) || r.port < 1 || r.port > 65535) fail(`port ${r.port}`);
      const clientVia: Announce[] = ['PORT', 'EPRT', 'LPRT'];
      if (clientVia.includes(r.via) !== (dir === 'client')) fail(`${r.via} announced by the ${dir}`);
      if (r.via === '229') {
        if (r.addr !== null || r.family !== null) fail('229 with an address');
      } else {
        if (r.addr === null || r.family === null) fail(`${r.via} without an address`);
        if (r.addr.length !== (r.family === 4 ? 4 : 16)) fail('address length does not match family');
        if ((r.via === 'PORT' || r.via === '227') && r.family !== 4) fail(`${r.via} with IPv${r.family}`);
      }
      if (line.length > MAX_LINE || line.indexOf(0) !== -1) fail('overlong or NUL line announced');
    }
    // A well-formed PORT round-trips; a malformed one announces nothing.
    const text = `${pc.lower ? 'port' : 'PORT'} ${[...pc.octets, pc.p1, pc.p2].join(',')}`;
    const pr = parse('client', text);
    const valid = pc.octets.every((o) => o <= 255) && pc.p1 <= 255 && pc.p2 <= 255 && pc.p1 * 256 + pc.p2 > 0;
    if (valid) {
      if (pr.kind !== 'announce' || pr.addr === null) fail(`valid PORT not announced: ${text}`);
      if (pr.port !== pc.p1 * 256 + pc.p2 || formatAddr(4, pr.addr) !== pc.octets.join('.')) fail(`PORT misread: ${text}`);
    } else if (pr.kind === 'announce') {
      fail(`malformed PORT announced: ${text}`);
    }
  });
}

// ---- netlink -----------------------------------------------------------------

const arbNlDatagram: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 96 }).map((b) => Buffer.from(b)),
  fc.tuple(
    fc.array(fc.tuple(fc.nat(0xffffffff), fc.uint8Array({ maxLength: 40 }), fc.boolean()), { minLength: 1, maxLength: 3 }),
    fc.array(arbMutation, { maxLength: 4 }),
  ).map(([msgs, ms]) => {
    const parts = msgs.map(([id, pl, withPl]) => nfqPacketMessage(7, id, pl, withPl));
    // an ACK / error too, as the kernel sends them
    const err = Buffer.alloc(36);
    err.writeUInt32LE(36, 0); err.writeUInt16LE(2, 4); err.writeUInt32LE(5, 8); err.writeInt32LE(-1, 16);
    parts.push(err);
    return Buffer.from(mutate(Buffer.concat(parts), ms));
  }),
);

/** Broken on purpose: trusts nlmsg_len beyond the end of the datagram. */
function parseMessagesTrusting(buf: Buffer): NlMessage[] {
  const out: NlMessage[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = readU32H(buf, off);
    if (len < NLMSG_HDRLEN) break;
    out.push({ type: readU16H(buf, off + 4), flags: readU16H(buf, off + 6), seq: readU32H(buf, off + 8), pid: readU32H(buf, off + 12), payload: buf.subarray(off + NLMSG_HDRLEN, off + len) });
    off += align4(len);
  }
  return out;
}

function netlinkProperty(parse: (b: Buffer) => NlMessage[]): fc.IRawProperty<[Buffer]> {
  return fc.property(arbNlDatagram, (buf) => {
    const msgs = parse(buf);
    for (const m of msgs) {
      if (!within(m.payload, buf)) fail('message outside the datagram');
      const hdrOff = m.payload.byteOffset - buf.byteOffset - NLMSG_HDRLEN;
      const claimed = readU32H(buf, hdrOff);
      if (m.payload.length !== claimed - NLMSG_HDRLEN) fail(`payload ${m.payload.length} bytes, header claims ${claimed - NLMSG_HDRLEN}`);
      const attrs = parseAttrs(m.payload, 4);
      if (attrs !== null) for (const a of attrs) if (!within(a.data, m.payload)) fail('attribute outside its message');
      const e = parseError(m);
      if (e !== null && (typeof e.code !== 'string' || !Number.isInteger(e.errno))) fail('bad error decode');
      const p = decodeNfqPacket(m);
      if (p !== null) {
        if (p.payload.length > 0 && !within(p.payload, m.payload)) fail('NFQ payload outside its message');
        if (p.id < 0 || p.id > 0xffffffff) fail('NFQ id out of range');
      }
    }
  });
}

// ---- pcap ----------------------------------------------------------------------

const arbPcap: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 80 }),
  fc.tuple(fc.array(arbSession, { minLength: 1, maxLength: 2 }), fc.array(arbMutation, { maxLength: 6 }), fc.nat(4))
    .map(([ss, ms, keep]) => mutate(syntheticTrace(ss), ms, keep === 0 ? 0 : 4)),
  ...(TRACES.length > 0 ? [fc.tuple(fc.constantFrom(...TRACES), fc.array(arbMutation, { maxLength: 6 })).map(([t, ms]) => mutate(t, ms, 4))] : []),
);

/** Broken on purpose: reads record headers without checking the file length. */
function parsePcapUnchecked(buf: Uint8Array): PcapFile {
  const f = parsePcap(buf.subarray(0, 24).length < 24 ? buf : buf.subarray(0, 24));
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let off = 24; off < buf.length;) {
    const incl = dv.getUint32(off + 8, true);
    f.records.push({ time: 0, ip: buf.subarray(off + 16, off + 16 + incl) });
    off += 16 + incl;
  }
  return f;
}

function pcapProperty(parse: (b: Uint8Array) => PcapFile): fc.IRawProperty<[Uint8Array]> {
  return fc.property(arbPcap, (buf) => {
    let f: PcapFile;
    try {
      f = parse(buf);
    } catch (e) {
      if (e instanceof PcapFormatError) return;
      throw e;
    }
    for (const r of f.records) {
      if (!Number.isFinite(r.time)) fail('non-finite time');
      if (r.ip !== null && !within(r.ip, buf)) fail('frame outside the file');
    }
  });
}

// ---- release exactly once ------------------------------------------------------

type Behaviour = { kind: 'sync' | 'throw' | 'resolve' | 'reject' | 'hang' | 'undefined'; ms: number };
const arbBehaviours = fc.array(
  fc.record({ kind: fc.constantFrom<Behaviour['kind']>('sync', 'throw', 'resolve', 'reject', 'hang', 'undefined'), ms: fc.nat(3) }),
  { minLength: 1, maxLength: 12 },
);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * A handler per behaviour; `settled[id]` is set when the handler's outcome is
 * known (sync return/throw, or promise settled).  Packets carry their id.
 */
function scriptedHandler(bs: Behaviour[], idOf: (p: Packet) => number, settled: Map<number, boolean>, hangMs: number): PacketHandler {
  return (p: Packet) => {
    const id = idOf(p);
    const b = bs[id % bs.length];
    switch (b.kind) {
      case 'sync': settled.set(id, true); return;
      case 'undefined': settled.set(id, true); return undefined;
      case 'throw': settled.set(id, true); throw new Error('handler threw');
      case 'resolve': return sleep(b.ms).then(() => { settled.set(id, true); });
      case 'reject': return sleep(b.ms).then(() => { settled.set(id, true); throw new Error('handler rejected'); });
      case 'hang': return sleep(hangMs).then(() => { settled.set(id, true); });
    }
  };
}

function exactlyOnce(ids: number[], released: number[], what: string): void {
  const count = new Map<number, number>();
  for (const r of released) count.set(r, (count.get(r) ?? 0) + 1);
  for (const id of ids) if ((count.get(id) ?? 0) !== 1) fail(`${what}: packet ${id} released ${count.get(id) ?? 0} times`);
  if (released.length !== ids.length) fail(`${what}: ${released.length} releases for ${ids.length} packets`);
}

/** Broken on purpose: releases only when the handler resolves. */
class ForgetfulSource {
  readonly released: number[] = [];
  async deliver(id: number, h: PacketHandler, pkt: Packet): Promise<void> {
    try {
      await h(pkt);
      this.released.push(id);
    } catch {
      /* forgot to release */
    }
  }
}

function releaseNfqProperty(brokenSource: boolean): fc.IAsyncPropertyWithHooks<[Behaviour[], number, boolean]> {
  return fc.asyncProperty(arbBehaviours, fc.integer({ min: 1, max: 12 }), fc.boolean(), async (bs, n, closeEarly) => {
    const settled = new Map<number, boolean>();
    const ids = Array.from({ length: n }, (_, i) => i + 1);
    const idOf = (p: Packet) => new DataView(p.data.buffer, p.data.byteOffset).getUint32(0);
    const h = scriptedHandler(bs, idOf, settled, 15);
    if (brokenSource) {
      const s = new ForgetfulSource();
      await Promise.all(ids.map((id) => {
        const d = new Uint8Array(8); new DataView(d.buffer).setUint32(0, id);
        return s.deliver(id, h, { data: d, time: 0 });
      }));
      exactlyOnce(ids, s.released, 'forgetful');
      return;
    }
    const k = new FakeNetlinkNative();
    const src = new NfqueueSource({ queue: 7, logger: quiet, native: k.native, ackTimeoutMs: 500 });
    await src.open();
    // a verdict must never come before its handler settled
    const early: number[] = [];
    const running = src.run(h);
    for (const id of ids) {
      const d = Buffer.alloc(8); d.writeUInt32BE(id, 0);
      k.inject(nfqPacketMessage(7, id, d));
      if (id % 3 === 0) k.inject(Buffer.from([1, 2, 3, 4, 5])); // garbage between packets
    }
    const watch = (): void => { for (const v of k.verdicts) if (!settled.get(v) && !early.includes(v) && !closeEarly) early.push(v); };
    const until = Date.now() + 2000;
    while (Date.now() < until) {
      await sleep(1);
      watch();
      if (closeEarly && k.verdicts.length >= Math.ceil(n / 2)) break;
      if (!closeEarly && k.verdicts.length >= n && settled.size >= n) break;
    }
    if (closeEarly) await src.close();
    await sleep(25); // let late handlers settle: they must not release again
    if (!closeEarly) await src.close();
    await running;
    if (early.length > 0) fail(`verdict before the handler settled: ${early.join(',')}`);
    exactlyOnce(ids, k.verdicts, 'nfqueue');
  });
}

function releaseDivertProperty(): fc.IAsyncPropertyWithHooks<[Behaviour[], number]> {
  return fc.asyncProperty(arbBehaviours, fc.integer({ min: 1, max: 8 }), async (bs, n) => {
    const settled = new Map<number, boolean>();
    const ids = Array.from({ length: n }, (_, i) => i + 1);
    const io = new FakeDivertIo();
    const src = new DivertSource({ port: 10004, logger: quiet, platform: 'freebsd', io, holdLimitMs: 8 });
    await src.open();
    const running = src.run(scriptedHandler(bs, (p) => new DataView(p.data.buffer, p.data.byteOffset).getUint32(0), settled, 12));
    for (const id of ids) io.inject(id);
    const until = Date.now() + 3000;
    while (Date.now() < until && io.reinjected.length < n) await sleep(1);
    await sleep(15);
    await src.close();
    await running;
    exactlyOnce(ids, io.reinjected, 'divert');
  });
}

// ---- holes: anti-bounce ----------------------------------------------------------

class WatchedHoles extends HoleManager {
  readonly requests: { via: Announce; spec: HoleSpec }[] = [];
  override request(session: number, via: Announce, spec: HoleSpec) {
    this.requests.push({ via, spec: { ...spec } });
    return super.request(session, via, spec);
  }
}

/** Broken on purpose: trusts the announced address (no policy). */
class TrustingProxy {
  private n = 0;
  constructor(private readonly holes: HoleManager) {}
  readonly handle = async (pkt: Packet): Promise<void> => {
    const r = decodePacket(pkt.data);
    if (!r.ok) return;
    const dir = r.seg.dport === 21 ? 'client' : 'server';
    for (const l of Buffer.from(r.seg.payload).toString('latin1').split('\n')) {
      const a = parseLine(dir, l);
      if (a.kind !== 'announce') continue;
      const fam = a.family ?? r.seg.family;
      const addr = a.addr ?? (dir === 'server' ? r.seg.src : r.seg.dst);
      const peer = formatAddr(r.seg.family, dir === 'client' ? r.seg.dst : r.seg.src);
      const named = formatAddr(fam, addr);
      const spec: HoleSpec = dir === 'client' ? { family: fam, src: peer, dst: named, port: a.port } : { family: fam, src: formatAddr(r.seg.family, r.seg.dst), dst: named, port: a.port };
      await this.holes.request(++this.n, a.via, spec);
    }
  };
}

interface HoleCase { sessions: GenSession[]; cuts: number[]; shuffle: number[]; muts: { pkt: number; ms: Parameters<typeof mutate>[1] }[]; count: number }
const arbHoleCase: fc.Arbitrary<HoleCase> = fc.record({
  sessions: fc.array(arbSession, { minLength: 1, maxLength: 3 }),
  cuts: fc.array(fc.nat(60), { minLength: 1, maxLength: 5 }),
  shuffle: fc.array(fc.nat(), { maxLength: 4 }),
  muts: fc.array(fc.record({ pkt: fc.nat(), ms: fc.array(arbMutation, { minLength: 1, maxLength: 2 }) }), { maxLength: 3 }),
  count: fc.integer({ min: 1, max: 12 }),
});

function holesProperty(trusting: boolean, k?: Counters): fc.IAsyncPropertyWithHooks<[HoleCase]> {
  return fc.asyncProperty(arbHoleCase, async (c) => {
    // interleave the sessions' packets round-robin
    const lists = c.sessions.map((s, i) => sessionPackets({ ...s, clientPort: s.clientPort + i }, c.cuts, c.shuffle));
    const pkts: Uint8Array[] = [];
    for (let i = 0; lists.some((l) => i < l.length); i++) for (const l of lists) if (i < l.length) pkts.push(l[i]);
    for (const m of c.muts) {
      const i = m.pkt % pkts.length;
      pkts[i] = mutate(pkts[i], m.ms);
    }
    // the control connections as the packets show them (port 21 = server)
    const pairs = new Set<string>();
    for (const p of pkts) {
      const r = decodePacket(p);
      if (!r.ok) continue;
      const s = r.seg;
      if (s.dport === 21) pairs.add(`${s.family} ${formatAddr(s.family, s.src)} ${formatAddr(s.family, s.dst)}`);
      if (s.sport === 21) pairs.add(`${s.family} ${formatAddr(s.family, s.dst)} ${formatAddr(s.family, s.src)}`);
    }
    const clock = new VirtualClock(0);
    const fw = new RecordingFirewall();
    const holes = new WatchedHoles({ firewall: fw, clock, logger: quiet, base: 100, count: c.count, timeoutSec: 2 });
    const engine = new Engine({ logger: quiet, pendingFor: (s) => holes.pendingFor(s) });
    const handle = trusting ? new TrustingProxy(holes).handle : new ControlProxy(engine, holes).handle;
    let t = 0;
    for (const p of pkts) {
      clock.advance((t += 300));
      await handle({ data: p, time: t });
      if (fw.openRules().length > c.count) fail('more holes open than the pool');
    }
    bump(k, 'announcements', engine.stats().announcements);
    bump(k, 'refused', engine.stats().refused);
    bump(k, 'holes', holes.requests.length);
    bump(k, 'exhausted', holes.stats().exhausted);
    for (const { via, spec } of holes.requests) {
      const active = via === 'PORT' || via === 'EPRT' || via === 'LPRT';
      const [client, server] = active ? [spec.dst, spec.src] : [spec.src, spec.dst];
      if (!pairs.has(`${spec.family} ${client} ${server}`)) fail(`${via} hole ${spec.src} -> ${spec.dst}.${spec.port} matches no control connection`);
      if (spec.port < 1024 || spec.port > 65535) fail(`${via} hole to port ${spec.port}`);
    }
    for (const op of fw.ops) if (op.hole && (op.hole.rule < 100 || op.hole.rule >= 100 + c.count)) fail(`rule ${op.hole.rule} outside the pool`);
  });
}

// ---- replay of mutated traces -------------------------------------------------------

const REPLAY_OPTIONS = parseCommandLine(['-m', 'nftables', '-c', '4', 'x.pcap'], 'nftables').options;

export const arbMutatedTrace: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.tuple(fc.array(arbSession, { minLength: 1, maxLength: 3 }), fc.array(arbMutation, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 3 }))
    .map(([ss, ms, recs]) => mutateRecords(syntheticTrace(ss), recs, ms)),
  ...(TRACES.length > 0
    ? [fc.tuple(fc.constantFrom(...TRACES), fc.array(arbMutation, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 3 }))
        .map(([t, ms, recs]) => mutateRecords(t, recs, ms))]
    : []),
);

/**
 * Duplicate or swap whole records (by index), then mutate bytes after the
 * 24-byte file header: a damaged header is "not a pcap file" (exit 1) by design.
 */
export function mutateRecords(pcap: Uint8Array, recs: readonly number[], ms: Parameters<typeof mutate>[1]): Uint8Array {
  const le = new DataView(pcap.buffer, pcap.byteOffset, pcap.byteLength).getUint32(0, true) === 0xa1b2c3d4 ||
    new DataView(pcap.buffer, pcap.byteOffset, pcap.byteLength).getUint32(0, true) === 0xa1b23c4d;
  const dv = new DataView(pcap.buffer, pcap.byteOffset, pcap.byteLength);
  const list: Uint8Array[] = [];
  for (let off = 24; off + 16 <= pcap.length;) {
    const incl = dv.getUint32(off + 8, le);
    if (off + 16 + incl > pcap.length) break;
    list.push(pcap.subarray(off, off + 16 + incl));
    off += 16 + incl;
  }
  for (const r of recs) {
    if (list.length < 2) break;
    const i = r % list.length;
    if (r % 2 === 0) list.splice(i, 0, list[i]);
    else { const j = (i + 1) % list.length; [list[i], list[j]] = [list[j], list[i]]; }
  }
  const joined = Buffer.concat([pcap.subarray(0, 24), ...list]);
  return mutate(joined, ms, 24);
}

function replayProperty(c?: Counters): fc.IAsyncPropertyWithHooks<[Uint8Array]> {
  return fc.asyncProperty(arbMutatedTrace, async (pcap) => {
    const r = await Promise.race([
      replay({ options: REPLAY_OPTIONS, commands: false, pcap }),
      sleep(5000).then(() => null),
    ]);
    if (r === null) fail('replay did not finish within 5 s');
    if (r.exitCode !== 0) fail(`replay exit ${r.exitCode}: ${r.lines.join(' | ').slice(0, 300)}`);
    bump(c, 'holes', r.lines.filter((l) => / open /.test(l)).length);
    if (r.lines.some((l) => l.startsWith('# damaged capture'))) bump(c, 'damaged');
  });
}

/** Broken on purpose: a replay that gives up on damaged captures. */
function strictReplayProperty(): fc.IAsyncPropertyWithHooks<[Uint8Array]> {
  return fc.asyncProperty(arbMutatedTrace, async (pcap) => {
    const r = await replay({ options: REPLAY_OPTIONS, commands: false, pcap });
    const code = r.lines.some((l) => l.startsWith('# damaged capture')) ? 1 : r.exitCode;
    if (code !== 0) fail(`exit ${code}`);
  });
}

// ---- the table -------------------------------------------------------------------

export const TARGETS: Target[] = [
  { name: 'decode', real: (p) => { const c: Counters = {}; return check(decodeProperty(decodePacket, c), p, c); }, broken: (p) => check(decodeProperty(decodeIgnoringLength), p) },
  {
    name: 'reassembly',
    real: (p) => check(reassemblyProperty(() => new StreamReassembler(LIMITS)), p),
    broken: (p) => check(reassemblyProperty(() => new StreamReassembler({ ...LIMITS, maxHeldSegments: 1e6, maxHeldBytes: 1e9 })), p),
  },
  { name: 'ftp', real: (p) => { const c: Counters = {}; return check(ftpProperty(parseLine, c), p, c); }, broken: (p) => check(ftpProperty(naivePortParser), p) },
  { name: 'netlink', real: (p) => check(netlinkProperty((b) => parseMessages(b)), p), broken: (p) => check(netlinkProperty(parseMessagesTrusting), p) },
  { name: 'pcap', real: (p) => check(pcapProperty(parsePcap), p), broken: (p) => check(pcapProperty(parsePcapUnchecked), p) },
  { name: 'release-nfq', real: (p) => check(releaseNfqProperty(false), p), broken: (p) => check(releaseNfqProperty(true), p) },
  { name: 'release-div', real: (p) => check(releaseDivertProperty(), p), broken: (p) => check(releaseNfqProperty(true), p) },
  { name: 'holes', real: (p) => { const c: Counters = {}; return check(holesProperty(false, c), p, c); }, broken: (p) => check(holesProperty(true), p) },
  { name: 'replay', real: (p) => { const c: Counters = {}; return check(replayProperty(c), p, c); }, broken: (p) => check(strictReplayProperty(), p) },
];
