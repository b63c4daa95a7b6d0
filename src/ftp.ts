/**
 * FTP control-line parser: one complete line in (without its CR LF), one
 * result out.  Pure: no Node imports, no state, no I/O.
 *
 * There is one table per direction, like the Linux conntrack helper: what a
 * client sends is only ever looked up among commands, what a server sends only
 * among replies.  So a "227 ..." line typed by a client, or a "PORT ..." line
 * sent by a server, announces nothing.
 *
 * Bounds are checked the way OpenBSD ftp-proxy does: octets 0-255, ports that
 * are numerically valid (1-65535; the 1024 floor is policy's business, see
 * policy.ts), NUL refused, line length bounded.
 *
 * Forms (RFC 959, RFC 1639, RFC 2428, RFC 1123 4.1.2.6):
 *   PORT h1,h2,h3,h4,p1,p2
 *   LPRT 4,4,h1,h2,h3,h4,2,p1,p2  |  LPRT 6,16,h1,...,h16,2,p1,p2
 *   EPRT <d>1<d>a.b.c.d<d>port<d>  |  EPRT <d>2<d>ipv6<d>port<d>
 *   PASV / LPSV / EPSV [arg]      -> a passive reply is now expected
 *   227 <text>h1,h2,h3,h4,p1,p2<text>   (parentheses optional, RFC 1123)
 *   228 <text>(af,hal,h...,pal,p1,p2)
 *   229 <text>(<d><d><d>port<d>)
 */

import { escapeUntrusted } from './escape';
import { parseIPv4, parseIPv6 } from './addr';
import type { Announce, Family } from './types';

/** Who sent the line. */
export type Direction = 'client' | 'server';

export type PassiveCommand = 'PASV' | 'EPSV' | 'LPSV';

export type ParseResult =
  | {
      kind: 'announce';
      via: Announce;
      /** null for 229, which carries no address (the control server is meant) */
      family: Family | null;
      addr: Uint8Array | null;
      port: number;
    }
  | { kind: 'passive'; cmd: PassiveCommand }
  | { kind: 'none' }
  | { kind: 'error'; via: Announce; reason: string };

/** Longest line content we parse (OpenBSD ftp-proxy: MAX_LINE 500). */
export const MAX_LINE = 512;

const NONE: ParseResult = Object.freeze({ kind: 'none' });

const SP = 0x20;
const TAB = 0x09;
const COMMA = 0x2c;
const LPAREN = 0x28;
const RPAREN = 0x29;

type LineParser = (b: Uint8Array, pos: number) => ParseResult;

interface CommandEntry {
  name: string;
  /** true when the command takes no address (PASV and friends) */
  passive: boolean;
  parse: LineParser;
}

interface ReplyEntry {
  code: number;
  parse: LineParser;
}

/** client -> server */
const COMMANDS: readonly CommandEntry[] = [
  { name: 'PORT', passive: false, parse: parsePort },
  { name: 'EPRT', passive: false, parse: parseEprt },
  { name: 'LPRT', passive: false, parse: parseLprt },
  { name: 'PASV', passive: true, parse: () => ({ kind: 'passive', cmd: 'PASV' }) },
  { name: 'EPSV', passive: true, parse: () => ({ kind: 'passive', cmd: 'EPSV' }) },
  { name: 'LPSV', passive: true, parse: () => ({ kind: 'passive', cmd: 'LPSV' }) },
];

/** server -> client */
const REPLIES: readonly ReplyEntry[] = [
  { code: 227, parse: parse227 },
  { code: 228, parse: parse228 },
  { code: 229, parse: parse229 },
];

/**
 * Parse one control line.  `line` excludes the line terminator (a trailing CR
 * or LF is ignored anyway).  A string is taken as latin1 bytes.  Never throws.
 */
export function parseLine(dir: Direction, line: Uint8Array | string, maxLine = MAX_LINE): ParseResult {
  let b = typeof line === 'string' ? latin1(line) : line;
  let n = b.length;
  while (n > 0 && (b[n - 1] === 0x0d || b[n - 1] === 0x0a)) n--;
  if (n !== b.length) b = b.subarray(0, n);
  return dir === 'client' ? parseCommand(b, maxLine) : parseReply(b, maxLine);
}

function latin1(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i) & 0xff;
  return b;
}

function upper(c: number): number {
  return c >= 0x61 && c <= 0x7a ? c - 0x20 : c;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** Common checks once a line is known to be one we act on. */
function checkLine(b: Uint8Array, maxLine: number): string | null {
  if (b.length > maxLine) return `line too long (${b.length} > ${maxLine})`;
  if (b.indexOf(0) !== -1) return 'NUL in line';
  return null;
}

function parseCommand(b: Uint8Array, maxLine: number): ParseResult {
  if (b.length < 4) return NONE;
  if (b.length > 4 && b[4] !== SP) return NONE; // "PORTS", "PASVX": other words
  const c0 = upper(b[0]);
  const c1 = upper(b[1]);
  const c2 = upper(b[2]);
  const c3 = upper(b[3]);
  for (const e of COMMANDS) {
    const k = e.name;
    if (c0 !== k.charCodeAt(0) || c1 !== k.charCodeAt(1) || c2 !== k.charCodeAt(2) || c3 !== k.charCodeAt(3)) {
      continue;
    }
    if (e.passive) return e.parse(b, 4);
    const why = checkLine(b, maxLine);
    if (why !== null) return err(e.name as Announce, why);
    return e.parse(b, 4);
  }
  return NONE;
}

function parseReply(b: Uint8Array, maxLine: number): ParseResult {
  // A continuation ("227-") or a bare code announces nothing: the address is
  // only taken from a single-line reply, as OpenBSD ftp-proxy does.
  if (b.length < 4 || b[3] !== SP) return NONE;
  if (!isDigit(b[0]) || !isDigit(b[1]) || !isDigit(b[2])) return NONE;
  const code = (b[0] - 0x30) * 100 + (b[1] - 0x30) * 10 + (b[2] - 0x30);
  for (const e of REPLIES) {
    if (e.code !== code) continue;
    const why = checkLine(b, maxLine);
    if (why !== null) return err(String(code) as Announce, why);
    return e.parse(b, 4);
  }
  return NONE;
}

function err(via: Announce, reason: string): ParseResult {
  return { kind: 'error', via, reason };
}

/** Cursor over a line.  Errors are thrown internally as ParseFail and caught per line. */
class ParseFail {
  constructor(readonly reason: string) {}
}

class Cursor {
  pos: number;
  constructor(
    readonly b: Uint8Array,
    pos: number,
  ) {
    this.pos = pos;
  }
  get done(): boolean {
    return this.pos >= this.b.length;
  }
  peek(): number {
    return this.pos < this.b.length ? this.b[this.pos] : -1;
  }
  skipSpace(): void {
    while (this.pos < this.b.length && (this.b[this.pos] === SP || this.b[this.pos] === TAB)) this.pos++;
  }
  expect(c: number, what: string): void {
    if (this.peek() !== c) throw new ParseFail(`expected ${what}${this.near()}`);
    this.pos++;
  }
  /** Decimal number of at most `maxDigits` digits (more digits is an error, not a wrap). */
  number(what: string, maxDigits: number): number {
    const start = this.pos;
    let v = 0;
    while (this.pos < this.b.length && isDigit(this.b[this.pos])) {
      if (this.pos - start >= maxDigits) throw new ParseFail(`${what} too long`);
      v = v * 10 + (this.b[this.pos] - 0x30);
      this.pos++;
    }
    if (this.pos === start) throw new ParseFail(`expected ${what}${this.near()}`);
    return v;
  }
  octet(): number {
    const v = this.number('number', 5);
    if (v > 255) throw new ParseFail(`octet ${v} > 255`);
    return v;
  }
  /** Comma-separated octets. */
  octets(n: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      if (i > 0) this.expect(COMMA, "','");
      out.push(this.octet());
    }
    return out;
  }
  /** Skip to the first digit (RFC 1123 4.1.2.6: scan for it, text may vary). */
  toDigit(): void {
    while (this.pos < this.b.length && !isDigit(this.b[this.pos])) this.pos++;
    if (this.done) throw new ParseFail('no address in reply');
  }
  /** Only spaces may follow. */
  end(): void {
    this.skipSpace();
    if (!this.done) throw new ParseFail(`trailing garbage${this.near()}`);
  }
  near(): string {
    return this.done ? ' at end of line' : ` near "${escapeUntrusted(this.b.subarray(this.pos), 16)}"`;
  }
}

function guarded(via: Announce, fn: () => ParseResult): ParseResult {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ParseFail) return err(via, e.reason);
    throw e;
  }
}

function tcpPort(hi: number, lo: number): number {
  const port = hi * 256 + lo;
  if (port === 0) throw new ParseFail('port 0');
  return port;
}

function decimalPort(c: Cursor): number {
  const port = c.number('port', 5);
  if (port === 0) throw new ParseFail('port 0');
  if (port > 65535) throw new ParseFail(`port ${port} > 65535`);
  return port;
}

function parsePort(b: Uint8Array, pos: number): ParseResult {
  return guarded('PORT', () => {
    const c = new Cursor(b, pos);
    c.skipSpace();
    const o = c.octets(6);
    c.end();
    return { kind: 'announce', via: 'PORT', family: 4, addr: Uint8Array.from(o.slice(0, 4)), port: tcpPort(o[4], o[5]) };
  });
}

/** Long address (RFC 1639): af,hal,h1..hN,pal,p1,p2.  Shared by LPRT and 228. */
function longAddress(c: Cursor): { family: Family; addr: Uint8Array; port: number } {
  const af = c.octet();
  c.expect(COMMA, "','");
  const hal = c.octet();
  let family: Family;
  if (af === 4 && hal === 4) family = 4;
  else if (af === 6 && hal === 16) family = 6;
  else throw new ParseFail(`address family ${af} length ${hal}`);
  c.expect(COMMA, "','");
  const addr = Uint8Array.from(c.octets(hal));
  c.expect(COMMA, "','");
  const pal = c.octet();
  if (pal !== 2) throw new ParseFail(`port length ${pal}`);
  c.expect(COMMA, "','");
  const p = c.octets(2);
  return { family, addr, port: tcpPort(p[0], p[1]) };
}

function parseLprt(b: Uint8Array, pos: number): ParseResult {
  return guarded('LPRT', () => {
    const c = new Cursor(b, pos);
    c.skipSpace();
    const a = longAddress(c);
    c.end();
    return { kind: 'announce', via: 'LPRT', ...a };
  });
}

/** RFC 2428 2: the delimiter is ASCII 33-126; we also refuse digits, which would be ambiguous. */
function delimiter(c: Cursor): number {
  const d = c.peek();
  if (d < 33 || d > 126 || isDigit(d)) throw new ParseFail(`bad delimiter${c.near()}`);
  c.pos++;
  return d;
}

function parseEprt(b: Uint8Array, pos: number): ParseResult {
  return guarded('EPRT', () => {
    const c = new Cursor(b, pos);
    c.skipSpace();
    const d = delimiter(c);
    const afStart = c.pos;
    const af = c.number('address family', 3);
    if (c.pos - afStart !== 1 || (af !== 1 && af !== 2)) throw new ParseFail(`unknown address family ${af}`);
    const family: Family = af === 1 ? 4 : 6;
    c.expect(d, 'delimiter');
    const addrStart = c.pos;
    const addrEnd = b.indexOf(d, addrStart);
    if (addrEnd === -1) throw new ParseFail('expected delimiter after address');
    let text = '';
    for (let i = addrStart; i < addrEnd; i++) text += String.fromCharCode(b[i]);
    const addr = family === 4 ? parseIPv4(text) : parseIPv6(text);
    if (addr === null) {
      const other = family === 4 ? parseIPv6(text) : parseIPv4(text);
      const shown = escapeUntrusted(text, 48);
      throw new ParseFail(other !== null ? `family ${af} but address ${shown}` : `bad address "${shown}"`);
    }
    c.pos = addrEnd + 1;
    const port = decimalPort(c);
    c.expect(d, 'delimiter');
    c.end();
    return { kind: 'announce', via: 'EPRT', family, addr, port };
  });
}

function parse227(b: Uint8Array, pos: number): ParseResult {
  return guarded('227', () => {
    const c = new Cursor(b, pos);
    c.toDigit();
    const o = c.octets(6);
    // What follows (")", ".", text) is free-form: RFC 1123 4.1.2.6.
    return { kind: 'announce', via: '227', family: 4, addr: Uint8Array.from(o.slice(0, 4)), port: tcpPort(o[4], o[5]) };
  });
}

function parse228(b: Uint8Array, pos: number): ParseResult {
  return guarded('228', () => {
    const c = new Cursor(b, pos);
    c.toDigit();
    const a = longAddress(c);
    return { kind: 'announce', via: '228', ...a };
  });
}

function parse229(b: Uint8Array, pos: number): ParseResult {
  return guarded('229', () => {
    const open = b.indexOf(LPAREN, pos);
    if (open === -1) throw new ParseFail("no '(' in reply");
    const c = new Cursor(b, open + 1);
    const d = delimiter(c);
    // (<d><d><d>port<d>): network protocol and address are empty in a 229.
    c.expect(d, 'empty protocol field');
    c.expect(d, 'empty address field');
    const port = decimalPort(c);
    c.expect(d, 'delimiter');
    c.expect(RPAREN, "')'");
    return { kind: 'announce', via: '229', family: null, addr: null, port };
  });
}
