/**
 * Address bytes <-> canonical text.
 *
 * Hole specs carry text (src/types.ts HoleSpec), and text must be canonical so
 * that the same address always gives the same rule and the same log line:
 * dotted quad for IPv4, RFC 5952 for IPv6.  Parsing is strict because its input
 * (EPRT) is untrusted: no zone ids, no prefixes, no leading zeros in IPv4 octets.
 */

import type { Family } from './types';

/** Dotted quad of the 4 bytes at `off`. */
export function formatIPv4(b: Uint8Array, off = 0): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/**
 * RFC 5952 text of the 16 bytes at `off`:
 * - lowercase hex, no leading zeros in a group (4.1, 4.3);
 * - the longest run of two or more zero groups becomes "::", the first one on a
 *   tie; a single zero group is never compressed (4.2.1-4.2.3);
 * - ::ffff:0:0/96 (IPv4-mapped) is written with a dotted quad tail (5).
 */
export function formatIPv6(b: Uint8Array, off = 0): string {
  const g = [0, 0, 0, 0, 0, 0, 0, 0];
  for (let i = 0; i < 8; i++) g[i] = (b[off + 2 * i] << 8) | b[off + 2 * i + 1];

  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${formatIPv4(b, off + 12)}`;
  }

  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) bestStart = -1;

  let s = '';
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      s += '::';
      i += bestLen - 1;
      continue;
    }
    if (s !== '' && !s.endsWith(':')) s += ':';
    s += g[i].toString(16);
  }
  return s;
}

/** Canonical text of an address of either family (4 or 16 bytes). */
export function formatAddr(family: Family, b: Uint8Array, off = 0): string {
  return family === 4 ? formatIPv4(b, off) : formatIPv6(b, off);
}

/** "a.b.c.d" -> 4 bytes, or null.  Octets 0-255, 1-3 digits, no leading zero. */
export function parseIPv4(text: string): Uint8Array | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i];
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    out[i] = v;
  }
  return out;
}

/**
 * RFC 4291 2.2 text -> 16 bytes, or null.  Accepts "::" compression and a
 * dotted quad in the last 32 bits.  Rejects zone ids ("%eth0") and prefixes.
 */
export function parseIPv6(text: string): Uint8Array | null {
  if (text.length < 2 || text.length > 45) return null;
  const dbl = text.indexOf('::');
  if (dbl !== -1 && text.indexOf('::', dbl + 1) !== -1) return null;

  const head = dbl === -1 ? text : text.slice(0, dbl);
  const tail = dbl === -1 ? '' : text.slice(dbl + 2);
  const headParts = head === '' ? [] : head.split(':');
  const tailParts = tail === '' ? [] : tail.split(':');

  const groups: number[] = [];
  const tailGroups: number[] = [];
  const all = dbl === -1 ? headParts : headParts.concat(tailParts);
  for (let i = 0; i < all.length; i++) {
    const p = all[i];
    const last = i === all.length - 1;
    const dest = dbl !== -1 && i >= headParts.length ? tailGroups : groups;
    if (last && p.includes('.')) {
      const v4 = parseIPv4(p);
      if (v4 === null) return null;
      dest.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      continue;
    }
    if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
    dest.push(parseInt(p, 16));
  }

  const n = groups.length + tailGroups.length;
  if (dbl === -1 ? n !== 8 : n > 7) return null;
  const out = new Uint8Array(16);
  for (let i = 0; i < groups.length; i++) {
    out[2 * i] = groups[i] >> 8;
    out[2 * i + 1] = groups[i] & 0xff;
  }
  const base = 8 - tailGroups.length;
  for (let i = 0; i < tailGroups.length; i++) {
    out[2 * (base + i)] = tailGroups[i] >> 8;
    out[2 * (base + i) + 1] = tailGroups[i] & 0xff;
  }
  return out;
}

/** Text of the given family -> bytes, or null. */
export function parseAddr(family: Family, text: string): Uint8Array | null {
  return family === 4 ? parseIPv4(text) : parseIPv6(text);
}

/** Text of either family -> {family, bytes}, or null. */
export function parseAnyAddr(text: string): { family: Family; bytes: Uint8Array } | null {
  if (text.includes(':')) {
    const b = parseIPv6(text);
    return b === null ? null : { family: 6, bytes: b };
  }
  const b = parseIPv4(text);
  return b === null ? null : { family: 4, bytes: b };
}

/** Byte-wise equality (different lengths are never equal). */
export function addrEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Total order: shorter (IPv4) first, then byte-wise.  Returns <0, 0, >0. */
export function compareAddr(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return a.length - b.length;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}
