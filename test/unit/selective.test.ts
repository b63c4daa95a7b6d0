/**
 * Tests of src/firewall/selective.ts: the classic BPF programs, run by a
 * small interpreter over real packet bytes, the --bytecode text, the
 * iptables argv lists, and (as root) the ruleset loaded into a throwaway
 * network namespace, where a loopback FTP-like exchange checks that the
 * kernel classifies packets as the interpreter does.
 *
 * Interpreter semantics: include/uapi/linux/filter.h and the classic BPF
 * description in Documentation/networking/filter.rst; a load past the end of
 * the packet returns 0, as the kernel does.
 */
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  BPF,
  BpfInsn,
  SelectiveOptions,
  XT_BPF_MAX_NUM_INSTR,
  MIN_PAYLOAD,
  TS_PAYLOAD,
  bpfBytecode,
  bpfProgram,
  layoutBytecode,
  layoutProgram,
  selectiveRules,
  selectiveTeardown,
  shellLines,
} from '../../src/firewall/selective';
import { FtpProxyError } from '../../src/types';
import { buildTcp } from './build-packet';

// ---- a classic BPF interpreter ---------------------------------------------

interface RunResult {
  ret: number;
  /** a load ran past the end of the packet */
  oob: boolean;
}

function runBpf(prog: readonly BpfInsn[], pkt: Uint8Array): RunResult {
  let a = 0;
  let x = 0;
  const mem = new Array<number>(BPF.MEMWORDS).fill(0);
  const load = (off: number, size: number): number | null => {
    if (off < 0 || off + size > pkt.length) return null;
    let v = 0;
    for (let i = 0; i < size; i++) v = (v * 256 + pkt[off + i]) >>> 0;
    return v;
  };
  const sizeOf = (code: number): number => ({ [BPF.W]: 4, [BPF.H]: 2, [BPF.B]: 1 } as Record<number, number>)[code & 0x18];
  for (let pc = 0, steps = 0; pc < prog.length; pc++, steps++) {
    if (steps > 1000) throw new Error('bpf loop');
    const { code, jt, jf, k } = prog[pc];
    const cls = code & 0x07;
    const mode = code & 0xe0;
    const op = code & 0xf0;
    const src = code & 0x08 ? x : k;
    switch (cls) {
      case BPF.LD: {
        if (mode === BPF.LEN) a = pkt.length;
        else if (mode === BPF.MEM) a = mem[k];
        else if (mode === BPF.IMM) a = k;
        else if (mode === BPF.ABS || mode === BPF.IND) {
          const v = load(mode === BPF.ABS ? k : (x + k) >>> 0, sizeOf(code));
          if (v === null) return { ret: 0, oob: true };
          a = v;
        } else throw new Error(`ld mode ${mode}`);
        break;
      }
      case BPF.LDX: {
        if (mode === BPF.MSH && (code & 0x18) === BPF.B) {
          const v = load(k, 1);
          if (v === null) return { ret: 0, oob: true };
          x = (v & 0xf) * 4;
        } else if (mode === BPF.MEM) x = mem[k];
        else if (mode === BPF.IMM) x = k;
        else if (mode === BPF.LEN) x = pkt.length;
        else throw new Error(`ldx mode ${mode}`);
        break;
      }
      case BPF.ST:
        mem[k] = a;
        break;
      case BPF.STX:
        mem[k] = x;
        break;
      case BPF.ALU: {
        if (op === BPF.ADD) a = (a + src) >>> 0;
        else if (op === BPF.SUB) a = (a - src) >>> 0;
        else if (op === BPF.AND) a = (a & src) >>> 0;
        else if (op === BPF.RSH) a = a >>> src;
        else throw new Error(`alu op ${op}`);
        break;
      }
      case BPF.JMP: {
        let cond: boolean;
        if (op === BPF.JA) {
          pc += k;
          continue;
        } else if (op === BPF.JEQ) cond = a === src;
        else if (op === BPF.JGT) cond = a > src;
        else if (op === BPF.JSET) cond = (a & src) !== 0;
        else throw new Error(`jmp op ${op}`);
        pc += cond ? jt : jf;
        break;
      }
      case BPF.RET:
        return { ret: (code & 0x18) === 0x10 ? a : k, oob: false };
      case BPF.MISC:
        if ((code & 0xf8) === BPF.TAX) x = a;
        else if ((code & 0xf8) === BPF.TXA) a = x;
        else throw new Error(`misc ${code}`);
        break;
      default:
        throw new Error(`class ${cls}`);
    }
  }
  throw new Error('fell off the end of the program');
}

// ---- packets -----------------------------------------------------------------

type Cls = 'lf' | 'nolf' | 'none';

const V4 = { src: '198.18.1.2', dst: '198.18.2.2' };
const V6 = { src: 'fd00:1::2', dst: 'fd00:2::2' };

function tcp(family: 4 | 6, payload: string, extra: Partial<Parameters<typeof buildTcp>[0]> = {}): Uint8Array {
  return buildTcp({ family, ...(family === 4 ? V4 : V6), sport: 40000, dport: 21, seq: 1, ack: 1, payload, ...extra });
}

/** IPv4 with 4 bytes of IP options (NOPs): ihl 6. */
function withIpOptions(p: Uint8Array): Uint8Array {
  const q = new Uint8Array(p.length + 4);
  q.set(p.subarray(0, 20), 0);
  q.fill(1, 20, 24); // IPOPT_NOOP, RFC 791
  q.set(p.subarray(20), 24);
  q[0] = 0x46;
  q[2] = (q.length >> 8) & 0xff;
  q[3] = q.length & 0xff;
  return q;
}

function patched(p: Uint8Array, edits: Array<[number, number]>): Uint8Array {
  const q = Uint8Array.from(p);
  for (const [off, v] of edits) q[off] = v;
  return q;
}

const PAYLOADS: Array<[string, string, Cls]> = [
  ['empty', '', 'none'],
  ['PORT line', 'PORT 1,2,3,4,5,6\r\n', 'lf'],
  ['229 start', '229 Entering (|||', 'nolf'],
  ['one LF', '\n', 'lf'],
  ['one x', 'x', 'nolf'],
];

interface Case {
  name: string;
  pkt: Uint8Array;
  cls: Cls;
}

function cases(family: 4 | 6): Case[] {
  const out: Case[] = [];
  for (const [pname, payload, cls] of PAYLOADS) {
    out.push({ name: `${pname}`, pkt: tcp(family, payload), cls });
    out.push({ name: `${pname}, TCP options (doff 8)`, pkt: tcp(family, payload, { tcpOptions: 12 }), cls });
    if (family === 4) {
      out.push({ name: `${pname}, IP options (ihl 6)`, pkt: withIpOptions(tcp(4, payload)), cls });
      out.push({ name: `${pname}, ihl 6 and doff 8`, pkt: withIpOptions(tcp(4, payload, { tcpOptions: 12 })), cls });
    }
  }
  const line = 'PORT 1,2,3,4,5,6\r\n';
  const full = tcp(family, line);
  const empty = tcp(family, '');
  // Everything the program cannot prove is 'nolf', whatever the last byte.
  out.push({ name: 'truncated (IP length > bytes)', pkt: full.subarray(0, full.length - 1), cls: 'nolf' });
  out.push({ name: 'truncated inside the TCP header', pkt: full.subarray(0, family === 4 ? 30 : 50), cls: 'nolf' });
  out.push({ name: 'truncated inside the IP header', pkt: full.subarray(0, family === 4 ? 10 : 30), cls: 'nolf' });
  out.push({ name: 'no bytes at all', pkt: new Uint8Array(0), cls: 'nolf' });
  out.push({ name: 'trailing bytes beyond the IP length', pkt: Uint8Array.from([...full, 0x78, 0x79]), cls: 'lf' });
  out.push({ name: 'not TCP', pkt: tcp(family, line, { protocol: 17 }), cls: 'nolf' });
  out.push({ name: 'not TCP, no payload', pkt: tcp(family, '', { protocol: 17 }), cls: 'nolf' });
  const doffAt = family === 4 ? 32 : 52;
  out.push({ name: 'TCP data offset 4 (< 20 bytes)', pkt: patched(full, [[doffAt, 0x40]]), cls: 'nolf' });
  out.push({ name: 'TCP data offset past the segment', pkt: patched(empty, [[doffAt, 0xf0]]), cls: 'nolf' });
  if (family === 4) {
    out.push({ name: 'fragment, MF set', pkt: tcp(4, line, { fragment: { offset: 0, more: true } }), cls: 'nolf' });
    out.push({ name: 'fragment, offset 8', pkt: tcp(4, line, { fragment: { offset: 8 } }), cls: 'nolf' });
    out.push({ name: 'DF set is not a fragment', pkt: patched(full, [[6, 0x40]]), cls: 'lf' });
    out.push({ name: 'ihl 4', pkt: patched(full, [[0, 0x44]]), cls: 'nolf' });
    out.push({ name: 'ihl 15 > total length', pkt: patched(empty, [[0, 0x4f]]), cls: 'nolf' });
    out.push({ name: 'total length 20 (no TCP header)', pkt: patched(full, [[2, 0], [3, 20]]), cls: 'nolf' });
    out.push({ name: 'total length 0', pkt: patched(full, [[2, 0], [3, 0]]), cls: 'nolf' });
    out.push({ name: 'total length 39 (TCP header cut)', pkt: patched(full, [[2, 0], [3, 39]]), cls: 'nolf' });
  } else {
    out.push({ name: 'hop-by-hop header (next header 0)', pkt: tcp(6, line, { ext: [{ type: 0 }] }), cls: 'nolf' });
    out.push({ name: 'hop-by-hop header, no payload', pkt: tcp(6, '', { ext: [{ type: 0 }] }), cls: 'nolf' });
    out.push({ name: 'fragment header', pkt: tcp(6, line, { fragment: { offset: 0, more: true } }), cls: 'nolf' });
    out.push({ name: 'payload length 0 (jumbo-like)', pkt: patched(full, [[4, 0], [5, 0]]), cls: 'nolf' });
    out.push({ name: 'payload length 19', pkt: patched(full, [[4, 0], [5, 19]]), cls: 'nolf' });
  }
  return out;
}

for (const family of [4, 6] as const) {
  test(`IPv${family}: lf / nolf programs classify packets three ways`, () => {
    const lf = bpfProgram(family, 'lf');
    const nolf = bpfProgram(family, 'nolf');
    for (const c of cases(family)) {
      const a = runBpf(lf, c.pkt);
      const b = runBpf(nolf, c.pkt);
      assert.is(a.ret !== 0, c.cls === 'lf', `${c.name}: lf returned ${a.ret}`);
      assert.is(b.ret !== 0, c.cls === 'nolf', `${c.name}: nolf returned ${b.ret}`);
      // Every load is bounds-checked by the program itself.
      assert.not.ok(a.oob || b.oob, `${c.name}: a load ran past the end`);
    }
  });
}

// ---- an independent reference, over mutated packets ---------------------------

function reference(family: 4 | 6, p: Uint8Array): Cls | 'unknown' {
  const be16 = (o: number): number => (p[o] << 8) | p[o + 1];
  let total: number;
  let ihl: number;
  if (family === 4) {
    if (p.length < 20) return 'unknown';
    total = be16(2);
    if (total > p.length) return 'unknown';
    if ((be16(6) & 0x3fff) !== 0 || p[9] !== 6) return 'unknown';
    ihl = (p[0] & 0x0f) * 4;
    if (ihl < 20) return 'unknown';
  } else {
    if (p.length < 60) return 'unknown';
    total = 40 + be16(4);
    if (total > p.length || p[6] !== 6) return 'unknown';
    ihl = 40;
  }
  const seg = total - ihl;
  if (seg < 20) return 'unknown';
  const doff = (p[ihl + 12] >> 4) * 4;
  if (doff < 20 || doff > seg) return 'unknown';
  if (doff === seg) return 'none';
  return p[total - 1] === 0x0a ? 'lf' : 'nolf';
}

/** A deterministic generator (xorshift32), so a failure is reproducible. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/**
 * One of `bases`, with up to two bytes changed (half of them at the `hot`
 * offsets, where the header fields the programs read are) and, one time in
 * eight, cut short.
 */
function mutated(r: () => number, bases: readonly Uint8Array[], hot: readonly number[]): Uint8Array {
  let p = Uint8Array.from(bases[r() % bases.length]);
  const n = r() % 3;
  for (let j = 0; j < n; j++) {
    const off = r() % 2 ? hot[r() % hot.length] : r() % p.length;
    if (off < p.length) p[off] = r() % 4 === 0 ? r() & 0xff : p[off] ^ (1 << r() % 8);
  }
  if (r() % 8 === 0) p = p.subarray(0, r() % (p.length + 1));
  return p;
}

/**
 * `n` packets mutated from `bases` (the bytes at `hot` most often): each of
 * `programs` matches exactly where its rule says of the reference's answer,
 * and none reads past the end.  Counts the reference's answers in `seen`.
 */
function agreeOnMutations<W extends string>(
  r: () => number, n: number, bases: readonly Uint8Array[], hot: readonly number[],
  reference: (p: Uint8Array) => W, seen: Record<W, number>,
  programs: ReadonlyArray<readonly [string, readonly BpfInsn[], (want: W) => boolean]>,
): void {
  for (let i = 0; i < n; i++) {
    const p = mutated(r, bases, hot);
    const want = reference(p);
    seen[want]++;
    const hex = Buffer.from(p).toString('hex');
    for (const [name, prog, matches] of programs) {
      const res = runBpf(prog, p);
      assert.not.ok(res.oob, `${name}: out of bounds on ${hex}`);
      assert.is(res.ret !== 0, matches(want), `${name} on ${hex} (want ${want})`);
    }
  }
}

test('programs agree with a reference classifier on 20000 mutated packets', () => {
  const r = rng(0x5e1ec7);
  const seen = { lf: 0, nolf: 0, none: 0, unknown: 0 };
  for (const family of [4, 6] as const) {
    const lf = bpfProgram(family, 'lf');
    const nolf = bpfProgram(family, 'nolf');
    const hot = family === 4 ? [0, 2, 3, 6, 7, 9, 32] : [4, 5, 6, 52];
    const bases = cases(family).slice(0, 10).map((c) => c.pkt); // the well-formed ones
    agreeOnMutations(r, 10000, bases, hot, (p) => reference(family, p), seen, [
      ['lf', lf, (want) => want === 'lf'],
      ['nolf', nolf, (want) => want === 'nolf' || want === 'unknown'],
    ]);
  }
  // The mutations reach every outcome.
  for (const k of ['lf', 'nolf', 'none', 'unknown'] as const) assert.ok(seen[k] > 100, `${k}: only ${seen[k]}`);
});

// ---- bytecode text -------------------------------------------------------------

test('bytecode text: count first, then the instructions, at most 64', () => {
  for (const family of [4, 6] as const) {
    for (const want of ['lf', 'nolf'] as const) {
      const text = bpfBytecode(family, want);
      assert.match(text, /^\d+(,\d+ \d+ \d+ \d+)+$/);
      const [count, ...insns] = text.split(',');
      const prog = bpfProgram(family, want);
      assert.is(Number(count), insns.length);
      assert.is(insns.length, prog.length);
      assert.ok(prog.length <= XT_BPF_MAX_NUM_INSTR, `${prog.length} instructions`);
      insns.forEach((s, i) => {
        const [code, jt, jf, k] = s.split(' ').map(Number);
        assert.equal({ code, jt, jf, k }, prog[i]);
      });
      // Last instruction returns; no jump leaves the program.
      assert.is(prog[prog.length - 1].code & 0x07, BPF.RET);
      prog.forEach((ins, i) => {
        if ((ins.code & 0x07) === BPF.JMP) assert.ok(i + 1 + Math.max(ins.jt, ins.jf) < prog.length, `jump at ${i}`);
      });
    }
  }
  // The first instruction reads the packet length: BPF_LD|BPF_W|BPF_LEN = 0x80.
  assert.ok(bpfBytecode(4, 'lf').startsWith(`${bpfProgram(4, 'lf').length},128 0 0 0,`));
  assert.is.not(bpfBytecode(4, 'lf'), bpfBytecode(4, 'nolf'));
  assert.is.not(bpfBytecode(4, 'lf'), bpfBytecode(6, 'lf'));
});

// ---- the layout programs of the '-' rules -------------------------------------------

/**
 * Which layout program should match: 'ts' for a whole TCP segment laid out
 * as TS_PAYLOAD says, 'none' for one that can be read and carries no
 * payload past its TCP header, else 'other' (payload elsewhere, or a packet
 * the programs cannot read).
 */
function layoutReference(family: 4 | 6, p: Uint8Array): 'ts' | 'other' | 'none' {
  const tcpAt = family === 4 ? 20 : 40;
  if (p.length <= tcpAt + 12) return 'other';
  if (family === 4) {
    if (p[0] !== 0x45 || (((p[6] << 8) | p[7]) & 0x3fff) !== 0 || p[9] !== 6) return 'other';
  } else if (p[6] !== 6) {
    return 'other';
  }
  const doff = p[tcpAt + 12] >> 4;
  if (doff === 8 && p.length >= TS_PAYLOAD[family]) return 'ts';
  return p.length > tcpAt + doff * 4 ? 'other' : 'none';
}

test('layout programs: at most one matches; ts only where the payload starts at TS_PAYLOAD, neither on a readable segment without payload', () => {
  const r = rng(0x1a7007);
  const seen = { ts: 0, other: 0, none: 0 };
  for (const family of [4, 6] as const) {
    const ts = layoutProgram(family, 'ts');
    const other = layoutProgram(family, 'other');
    assert.ok(ts.length <= XT_BPF_MAX_NUM_INSTR && other.length === ts.length);
    // The packets a server sends: with timestamps, the payload is at TS_PAYLOAD.
    const named: Array<[string, Uint8Array, 'ts' | 'other' | 'none']> = [
      ['doff 8, "230-"', tcp(family, '230-a\r\n', { tcpOptions: 12 }), 'ts'],
      ['doff 8, no payload', tcp(family, '', { tcpOptions: 12 }), 'ts'],
      ['doff 5', tcp(family, '230-a\r\n'), 'other'],
      ['doff 6', tcp(family, '230-a\r\n', { tcpOptions: 4 }), 'other'],
      ['doff 5, no payload (a bare ACK)', tcp(family, ''), 'none'],
      ['doff 10, no payload (a SYN-ACK\'s options)', tcp(family, '', { tcpOptions: 20 }), 'none'],
      ['doff 10, payload', tcp(family, '230-a\r\n', { tcpOptions: 20 }), 'other'],
      ['doff 8, cut before the payload', tcp(family, '', { tcpOptions: 12 }).subarray(0, TS_PAYLOAD[family] - 1), 'none'],
      ['cut inside the TCP header', tcp(family, '230-a\r\n').subarray(0, (family === 4 ? 20 : 40) + 12), 'other'],
      ['not TCP', tcp(family, '230-a\r\n', { tcpOptions: 12, protocol: 17 }), 'other'],
      ['nothing', new Uint8Array(0), 'other'],
    ];
    if (family === 4) {
      named.push(['ihl 6, doff 8', withIpOptions(tcp(4, '230-a\r\n', { tcpOptions: 12 })), 'other']);
      named.push(['fragment', tcp(4, '230-a\r\n', { tcpOptions: 12, fragment: { offset: 0, more: true } }), 'other']);
    } else {
      named.push(['hop-by-hop header', tcp(6, '230-a\r\n', { tcpOptions: 12, ext: [{ type: 0 }] }), 'other']);
    }
    for (const [name, p, want] of named) {
      assert.is(layoutReference(family, p), want, `reference: ${name}`);
      const a = runBpf(ts, p);
      const b = runBpf(other, p);
      assert.not.ok(a.oob || b.oob, `${name}: a load ran past the end`);
      assert.is(a.ret !== 0, want === 'ts', `IPv${family} ${name}: ts returned ${a.ret}`);
      assert.is(b.ret !== 0, want === 'other', `IPv${family} ${name}: other returned ${b.ret}`);
      seen[want]++;
    }
    // The '-' rule searching from TS_PAYLOAD + 3 finds the dash of "230-".
    const p = named[0][1];
    assert.is(p[TS_PAYLOAD[family] + 3], 0x2d);
    assert.is(MIN_PAYLOAD[family] + 12, TS_PAYLOAD[family]);
    const bases = named.map((n) => n[1]).filter((q) => q.length > 0);
    const hot = family === 4 ? [0, 6, 7, 9, 32] : [6, 52];
    agreeOnMutations(r, 5000, bases, hot, (q) => layoutReference(family, q), seen, [
      ['ts', ts, (want) => want === 'ts'],
      ['other', other, (want) => want === 'other'],
    ]);
  }
  for (const k of ['ts', 'other', 'none'] as const) assert.ok(seen[k] > 200, `${k}: only ${seen[k]}`);
});

// ---- the ruleset -----------------------------------------------------------------

const OPTS: SelectiveOptions = { family: 6, queue: 7, seeAll: 0x100, partialClient: 0x200, partialServer: 0x80000000 };

test('selectiveRules: exact argv (IPv6, defaults)', () => {
  const LF = bpfBytecode(6, 'lf');
  const NOLF = bpfBytecode(6, 'nolf');
  const Q = ['-j', 'NFQUEUE', '--queue-num', '7', '--queue-bypass'];
  const want: string[][] = [
    ['-N', 'FTP6PROXY-C'],
    ['-N', 'FTP6PROXY-C-CONT'],
    ['-N', 'FTP6PROXY-C-PART'],
    ['-N', 'FTP6PROXY-S'],
    ['-N', 'FTP6PROXY-S-CONT'],
    ['-N', 'FTP6PROXY-S-PART'],
    ['-N', 'FTP6PROXY-S-DASH'],
    ['-A', 'FORWARD', '-p', 'tcp', '--dport', '21', '-j', 'FTP6PROXY-C'],
    ['-A', 'FORWARD', '-p', 'tcp', '--sport', '21', '-j', 'FTP6PROXY-S'],
    ['-A', 'FTP6PROXY-C', '-m', 'connmark', '--mark', '0x200/0x200', '-j', 'FTP6PROXY-C-CONT'],
    ['-A', 'FTP6PROXY-C-CONT', '-m', 'bpf', '--bytecode', LF, '-j', 'CONNMARK', '--set-xmark', '0x0/0x200'],
    ['-A', 'FTP6PROXY-C-CONT', ...Q],
    ['-A', 'FTP6PROXY-C', '-m', 'bpf', '--bytecode', NOLF, '-j', 'FTP6PROXY-C-PART'],
    ['-A', 'FTP6PROXY-C-PART', '-j', 'CONNMARK', '--set-xmark', '0x200/0x200'],
    ['-A', 'FTP6PROXY-C-PART', ...Q],
    ['-A', 'FTP6PROXY-C', '-m', 'string', '--algo', 'bm', '--from', '60', '--icase', '--string', 'PORT', ...Q],
    ['-A', 'FTP6PROXY-C', '-m', 'string', '--algo', 'bm', '--from', '60', '--icase', '--string', 'EPRT', ...Q],
    ['-A', 'FTP6PROXY-C', '-m', 'string', '--algo', 'bm', '--from', '60', '--icase', '--string', 'LPRT', ...Q],
    ['-A', 'FTP6PROXY-S', '-m', 'connmark', '--mark', '0x80000000/0x80000000', '-j', 'FTP6PROXY-S-CONT'],
    ['-A', 'FTP6PROXY-S-CONT', '-m', 'bpf', '--bytecode', LF, '-j', 'CONNMARK', '--set-xmark', '0x0/0x80000000'],
    ['-A', 'FTP6PROXY-S-CONT', ...Q],
    ['-A', 'FTP6PROXY-S', '-m', 'bpf', '--bytecode', NOLF, '-j', 'FTP6PROXY-S-PART'],
    ['-A', 'FTP6PROXY-S-PART', '-j', 'CONNMARK', '--set-xmark', '0x80000000/0x80000000'],
    ['-A', 'FTP6PROXY-S-PART', ...Q],
    ['-A', 'FTP6PROXY-S', '-m', 'connmark', '--mark', '0x100/0x100', ...Q],
    ['-A', 'FTP6PROXY-S', '-m', 'bpf', '--bytecode', layoutBytecode(6, 'ts'), '-m', 'string', '--algo', 'bm', '--from', '75', '--string', '-', '-j', 'FTP6PROXY-S-DASH'],
    ['-A', 'FTP6PROXY-S', '-m', 'bpf', '--bytecode', layoutBytecode(6, 'other'), '-m', 'string', '--algo', 'bm', '--from', '63', '--string', '-', '-j', 'FTP6PROXY-S-DASH'],
    ['-A', 'FTP6PROXY-S-DASH', '-j', 'CONNMARK', '--set-xmark', '0x100/0x100'],
    ['-A', 'FTP6PROXY-S-DASH', ...Q],
    ['-A', 'FTP6PROXY-S', '-m', 'string', '--algo', 'bm', '--from', '60', '--string', '227', ...Q],
    ['-A', 'FTP6PROXY-S', '-m', 'string', '--algo', 'bm', '--from', '60', '--string', '228', ...Q],
    ['-A', 'FTP6PROXY-S', '-m', 'string', '--algo', 'bm', '--from', '60', '--string', '229', ...Q],
    ['-t', 'mangle', '-A', 'POSTROUTING', '-p', 'tcp', '--sport', '21', '-j', 'CONNMARK', '--save-mark', '--nfmask', '0x100', '--ctmask', '0x100'],
  ].map((a) => ['ip6tables', ...a]);
  assert.equal(selectiveRules(OPTS), want);
});

test('selectiveRules: IPv4, port, chain prefix, no bypass', () => {
  const rules = selectiveRules({ ...OPTS, family: 4, queue: 0, controlPort: 2121, chain: 'FX', bypass: false });
  assert.ok(rules.every((a) => a[0] === 'iptables'));
  assert.equal(rules[7], ['iptables', '-A', 'FORWARD', '-p', 'tcp', '--dport', '2121', '-j', 'FX-C']);
  assert.equal(rules[8], ['iptables', '-A', 'FORWARD', '-p', 'tcp', '--sport', '2121', '-j', 'FX-S']);
  assert.ok(rules.some((a) => a.includes(bpfBytecode(4, 'lf'))));
  assert.not.ok(rules.some((a) => a.includes(bpfBytecode(6, 'lf'))));
  assert.not.ok(rules.some((a) => a.includes('--queue-bypass')));
  assert.equal(rules[rules.length - 1], ['iptables', '-t', 'mangle', '-A', 'POSTROUTING', '-p', 'tcp', '--sport', '2121', '-j', 'CONNMARK', '--save-mark', '--nfmask', '0x100', '--ctmask', '0x100']);
  assert.equal(rules[rules.length - 2], ['iptables', '-A', 'FX-S', '-m', 'string', '--algo', 'bm', '--from', '40', '--string', '229', '-j', 'NFQUEUE', '--queue-num', '0']);
  const dash = rules.filter((a) => a.includes('FX-S-DASH') && a[1] === '-A' && a[2] === 'FX-S');
  assert.equal(dash.map((a) => [a[a.indexOf('--bytecode') + 1], a[a.indexOf('--from') + 1]]), [
    [layoutBytecode(4, 'ts'), '55'],
    [layoutBytecode(4, 'other'), '43'],
  ]);
  // Every chain named is created first, and no name is longer than 28.
  const created = rules.filter((a) => a[1] === '-N').map((a) => a[2]);
  assert.is(created.length, 7);
  for (const a of rules) {
    const j = a.indexOf('-j');
    if (a[1] === '-A' && a[j + 1].startsWith('FX')) assert.ok(created.includes(a[j + 1]), a.join(' '));
  }
  const longest = selectiveRules({ ...OPTS, chain: 'A'.repeat(21) }).filter((a) => a[1] === '-N').map((a) => a[2].length);
  assert.is(Math.max(...longest), 28);
});

test('selectiveRules / selectiveTeardown refuse bad options', () => {
  const bad: Array<[string, Partial<SelectiveOptions>, RegExp]> = [
    ['mark 0', { seeAll: 0 }, /seeAll mark must be a single bit/],
    ['mark 3', { partialClient: 3 }, /partialClient mark must be a single bit.*0x3/],
    ['mark 2^32', { partialServer: 2 ** 32 }, /partialServer mark must be a single bit/],
    ['mark negative', { seeAll: -2 }, /seeAll mark/],
    ['mark fraction', { seeAll: 0.5 }, /seeAll mark/],
    ['mark NaN', { seeAll: NaN }, /seeAll mark.*NaN/],
    ['same bits', { partialClient: 0x100 }, /distinct/],
    ['same partial bits', { partialClient: 0x80000000 }, /distinct/],
    ['queue -1', { queue: -1 }, /queue number must be 0\.\.65535/],
    ['queue 65536', { queue: 65536 }, /queue number/],
    ['queue 1.5', { queue: 1.5 }, /queue number/],
    ['port 0', { controlPort: 0 }, /control port/],
    ['port 65536', { controlPort: 65536 }, /control port/],
    ['chain too long', { chain: 'A'.repeat(22) }, /too long.*28/],
    ['chain with space', { chain: 'A B' }, /chain prefix/],
    ['chain starting with -', { chain: '-X' }, /chain prefix/],
    ['family 5', { family: 5 as unknown as 4 }, /family/],
  ];
  for (const [name, patch, re] of bad) {
    for (const f of [selectiveRules, selectiveTeardown]) {
      try {
        f({ ...OPTS, ...patch });
        assert.unreachable(`${name}: accepted`);
      } catch (e) {
        assert.instance(e, FtpProxyError, name);
        assert.is((e as FtpProxyError).code, 'selective-options');
        assert.match((e as Error).message, re, name);
      }
    }
  }
  // The edges that are fine.
  selectiveRules({ ...OPTS, seeAll: 1, queue: 65535, controlPort: 65535 });
});

test('selectiveTeardown: jumps, flushes, then deletes', () => {
  const ch = ['C', 'C-CONT', 'C-PART', 'S', 'S-CONT', 'S-PART', 'S-DASH'].map((s) => `FTP6PROXY-${s}`);
  assert.equal(selectiveTeardown({ ...OPTS, family: 4 }), [
    ['iptables', '-t', 'mangle', '-D', 'POSTROUTING', '-p', 'tcp', '--sport', '21', '-j', 'CONNMARK', '--save-mark', '--nfmask', '0x100', '--ctmask', '0x100'],
    ['iptables', '-D', 'FORWARD', '-p', 'tcp', '--dport', '21', '-j', 'FTP6PROXY-C'],
    ['iptables', '-D', 'FORWARD', '-p', 'tcp', '--sport', '21', '-j', 'FTP6PROXY-S'],
    ...ch.map((c) => ['iptables', '-F', c]),
    ...ch.map((c) => ['iptables', '-X', c]),
  ]);
});

test('shellLines: one command per line; sh splits them back into the same argv', () => {
  const argvs = selectiveRules(OPTS);
  const text = shellLines(argvs);
  const lines = text.split('\n');
  assert.is(lines.pop(), '');
  assert.is(lines.length, argvs.length);
  assert.ok(lines[10].includes(`'${bpfBytecode(6, 'lf')}'`), lines[10]);
  assert.is(lines[0], 'ip6tables -N FTP6PROXY-C');
  if (!fs.existsSync('/bin/sh')) {
    console.log('SKIP: shellLines round trip: no /bin/sh');
    return;
  }
  // Replace each command by one that prints its argv NUL-separated.
  const script = lines.map((l) => `printf '%s\\0' ${l.slice(l.indexOf(' ') + 1)}; printf '\\n'`).join('\n');
  const out = execFileSync('/bin/sh', ['-c', script], { encoding: 'latin1' }).split('\n');
  out.pop();
  assert.equal(out.map((l, i) => [argvs[i][0], ...l.split('\0').slice(0, -1)]), argvs);
});

// ---- the real kernel (root) ---------------------------------------------------------

function which(cmd: string): string | null {
  for (const d of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = path.join(d, cmd);
    if (fs.existsSync(p)) return p;
  }
  return null;
}

/** A loopback exchange on port 21 inside the namespace: each chunk arrives before the next is sent, so each is one segment. */
const EXCHANGE = `
const net = require('net');
const [host, client, server] = JSON.parse(process.argv[1]);
const srv = net.createServer();
srv.listen(21, host, () => {
  const c = net.connect(21, host);
  c.setNoDelay(true);
  srv.once('connection', (s) => {
    s.setNoDelay(true);
    const steps = [...client.map((d) => [c, d]), ...server.map((d) => [s, d])];
    let pending = 0;
    const onData = (b) => { pending -= b.length; if (pending === 0) next(); };
    c.on('data', onData);
    s.on('data', onData);
    function next() {
      const n = steps.shift();
      if (!n) { c.end(); s.end(); srv.close(); return; }
      pending = n[1].length;
      n[0].write(n[1]);
    }
    next();
  });
});
`;

test('real kernel: iptables accepts every rule; the programs classify like the interpreter', () => {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) {
    console.log('SKIP: real kernel check needs root on Linux');
    return;
  }
  const ip = which('ip');
  if (ip === null || which('iptables') === null || which('ip6tables') === null) {
    console.log('SKIP: real kernel check needs ip, iptables and ip6tables');
    return;
  }
  const ns = `selt-${process.pid}`;
  const inNs = (argv: string[]): { code: number; out: string; err: string } => {
    const r = spawnSync(ip, ['netns', 'exec', ns, ...argv], { encoding: 'utf8', timeout: 10_000 });
    return { code: r.status ?? -1, out: r.stdout ?? '', err: r.stderr ?? String(r.error ?? '') };
  };
  const must = (argv: string[]): string => {
    const r = inNs(argv);
    assert.is(r.code, 0, `${argv.join(' ')}: ${r.err}`);
    return r.out;
  };
  execFileSync(ip, ['netns', 'add', ns]);
  try {
    must([ip, 'link', 'set', 'lo', 'up']);
    // The kernel checks the program (bpf_check_classic): a jump out of the program is refused.
    const bogus = inNs(['iptables', '-A', 'FORWARD', '-m', 'bpf', '--bytecode', '2,21 5 0 0,6 0 0 1', '-j', 'ACCEPT']);
    assert.is.not(bogus.code, 0, 'the kernel accepted a bogus BPF program: this check proves nothing');

    for (const family of [4, 6] as const) {
      const o: SelectiveOptions = { family, queue: 4242, seeAll: 0x10, partialClient: 0x20, partialServer: 0x40 };
      for (const argv of selectiveRules(o)) must(argv);
      const cmd = family === 4 ? 'iptables' : 'ip6tables';
      // Loopback traffic goes through OUTPUT, not FORWARD: jump there for the check.
      // Nothing listens on queue 4242, so --queue-bypass accepts what is queued.
      must([cmd, '-A', 'OUTPUT', '-p', 'tcp', '--dport', '21', '-j', 'FTP6PROXY-C']);
      must([cmd, '-A', 'OUTPUT', '-p', 'tcp', '--sport', '21', '-j', 'FTP6PROXY-S']);
      const host = family === 4 ? '127.0.0.1' : '::1';
      const client = ['PORT 1,2,3,4,5,6\r\n', 'abc', 'def\n'];
      const server = ['xyz', 'uvw\n', '230-a\r\n', '230 b\r\n'];
      must([process.execPath, '-e', EXCHANGE, JSON.stringify([host, client, server])]);
      const counts = (chain: string): number[] =>
        must([cmd, '-v', '-S', chain])
          .split('\n')
          .filter((l) => l.startsWith('-A '))
          .map((l) => Number(/ -c (\d+) \d+/.exec(l)?.[1] ?? NaN));
      const c = counts('FTP6PROXY-C');
      // [P set -> CONT, nolf -> PART, PORT, EPRT, LPRT]: "abc" is partial, "def\n" continues it.
      // (pure ACKs while P is set go through CONT too, hence >= for those.)
      assert.equal(c.slice(1), [1, 1, 0, 0], `IPv${family} client chain counters ${c}`);
      assert.ok(c[0] >= 1, `IPv${family} client chain counters ${c}`);
      const cc = counts('FTP6PROXY-C-CONT');
      assert.is(cc[0], 1, `IPv${family} C-CONT: only "def\\n" ends the line: ${cc}`);
      assert.equal(counts('FTP6PROXY-C-PART'), [1, 1], `IPv${family} C-PART`);
      const s = counts('FTP6PROXY-S');
      // [P -> CONT, nolf -> PART, M, '-' (timestamps layout), '-' (other layouts), 227, 228, 229].
      assert.is(s[1], 1, `IPv${family} server partial: ${s}`);
      assert.is(counts('FTP6PROXY-S-CONT')[0], 1, `IPv${family} S-CONT: only "uvw\\n" ends the line`);
      // Loopback TCP carries timestamps (net.ipv4.tcp_timestamps defaults to 1
      // in a new namespace): the search starts at the payload, so only "230-"
      // matches, never a 0x2d among the timestamps of the other segments.
      assert.equal(s.slice(3, 5), [1, 0], `IPv${family} "230-" and nothing else queued by the dash rules: ${s}`);
      // The dash set M, but no daemon answered (bypass), so the packet's own
      // M bit (0) was copied into the connection's mark after it: "230 b" is
      // not queued for M.  The copy rule saw every server packet.
      assert.is(s[2], 0, `IPv${family} M cleared by the POSTROUTING copy when no daemon keeps it: ${s}`);
      const post = must([cmd, '-t', 'mangle', '-v', '-S', 'POSTROUTING']).split('\n').filter((l) => l.includes('CONNMARK'));
      assert.ok(post.length === 1 && Number(/ -c (\d+) /.exec(post[0])?.[1]) >= 4, `IPv${family} copy rule: ${post.join(' | ')}`);
      for (const argv of selectiveTeardown(o)) inNs(argv);
      must([cmd, '-F', 'OUTPUT']);
      for (const argv of selectiveTeardown(o)) inNs(argv);
      assert.not.match(must([cmd, '-S']), 'FTP6PROXY', 'teardown left chains');
    }
  } finally {
    spawnSync(ip, ['netns', 'del', ns]);
  }
});

test.run();
