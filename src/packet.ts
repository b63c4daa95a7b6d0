/**
 * IPv4 / IPv6 / TCP decoding of one captured packet, from its IP header on.
 *
 * Input is hostile and this runs for every control packet, so:
 * - it never throws: every bound is checked and failures come back as
 *   `{ ok: false, reason }` with a short constant reason;
 * - it copies nothing: addresses and payload are subarrays of the input,
 *   valid only as long as the capture buffer is (callers copy what they keep).
 *
 * Layouts: RFC 791 (IPv4), RFC 8200 (IPv6 and its extension headers),
 * RFC 4302 (AH), RFC 9293 (TCP).
 */

import type { Family } from './types';

// TCP flags, RFC 9293 3.1 (low byte of offset 13)
export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;

// IP protocol / IPv6 next-header numbers (IANA "Assigned Internet Protocol Numbers")
const PROTO_HOPOPTS = 0;
const PROTO_TCP = 6;
const PROTO_ROUTING = 43;
const PROTO_FRAGMENT = 44;
const PROTO_AH = 51;
const PROTO_DSTOPTS = 60;

/** A decoded TCP segment.  Every Uint8Array is a view into the packet. */
export interface TcpSegment {
  family: Family;
  /** 4 or 16 bytes */
  src: Uint8Array;
  dst: Uint8Array;
  sport: number;
  dport: number;
  /** unsigned 32-bit */
  seq: number;
  ack: number;
  /** TCP_* bits */
  flags: number;
  payload: Uint8Array;
}

/**
 * `skip` is true for packets that are well formed but not for us (not TCP, a
 * non-first fragment); false for damaged ones (truncated, bogus lengths).
 */
export type DecodeResult =
  | { ok: true; seg: TcpSegment }
  | { ok: false; skip: boolean; reason: string };

function bad(reason: string): DecodeResult {
  return { ok: false, skip: false, reason };
}
function skip(reason: string): DecodeResult {
  return { ok: false, skip: true, reason };
}

/** Decode an IPv4 or IPv6 packet carrying TCP.  Never throws. */
export function decodePacket(data: Uint8Array): DecodeResult {
  if (data.length < 1) return bad('empty packet');
  const version = data[0] >> 4;
  if (version === 4) return decodeIPv4(data);
  if (version === 6) return decodeIPv6(data);
  return bad(`ip version ${version}`);
}

function decodeIPv4(d: Uint8Array): DecodeResult {
  // RFC 791 3.1: version/IHL, tos, total length(2), id(2), flags+frag offset(2),
  // ttl, protocol, checksum(2), src(4), dst(4), options
  if (d.length < 20) return bad('truncated ipv4 header');
  const ihl = (d[0] & 0x0f) * 4;
  if (ihl < 20) return bad('bad ipv4 header length');
  const total = (d[2] << 8) | d[3];
  // Trailing bytes beyond total length (link padding) are ignored.
  if (total < ihl) return bad('bad ipv4 total length');
  if (total > d.length) return bad('truncated ipv4 packet');
  const fragOffset = ((d[6] << 8) | d[7]) & 0x1fff;
  if (fragOffset !== 0) return skip('non-first fragment');
  if (d[9] !== PROTO_TCP) return skip('not tcp');
  return decodeTcp(4, d.subarray(12, 16), d.subarray(16, 20), d, ihl, total);
}

function decodeIPv6(d: Uint8Array): DecodeResult {
  // RFC 8200 3: version/class/flow(4), payload length(2), next header, hop limit,
  // src(16), dst(16)
  if (d.length < 40) return bad('truncated ipv6 header');
  const plen = (d[4] << 8) | d[5];
  // plen 0 with a hop-by-hop jumbo option (RFC 2675) never happens on a
  // control connection; treat it as damage.
  if (plen === 0) return bad('ipv6 payload length 0');
  const end = 40 + plen;
  if (end > d.length) return bad('truncated ipv6 packet');
  let next = d[6];
  let off = 40;
  // Each extension header is at least 8 bytes, so this loop ends.
  for (;;) {
    if (next === PROTO_TCP) break;
    if (next === PROTO_HOPOPTS || next === PROTO_ROUTING || next === PROTO_DSTOPTS) {
      // RFC 8200 4.3-4.6: next header, hdr ext len in 8-octet units not counting the first 8
      if (off + 2 > end) return bad('truncated ipv6 extension header');
      const len = (d[off + 1] + 1) * 8;
      if (off + len > end) return bad('truncated ipv6 extension header');
      next = d[off];
      off += len;
    } else if (next === PROTO_AH) {
      // RFC 4302 2.2: payload len in 4-octet units, minus 2
      if (off + 2 > end) return bad('truncated ipv6 AH');
      const len = (d[off + 1] + 2) * 4;
      if (off + len > end) return bad('truncated ipv6 AH');
      next = d[off];
      off += len;
    } else if (next === PROTO_FRAGMENT) {
      // RFC 8200 4.5: next header, reserved, offset(13 bits)+res(2)+M(1), id(4)
      if (off + 8 > end) return bad('truncated ipv6 fragment header');
      const fragOffset = ((d[off + 2] << 8) | d[off + 3]) >> 3;
      if (fragOffset !== 0) return skip('non-first fragment');
      next = d[off];
      off += 8;
    } else {
      // 59 no next header, 50 ESP (opaque), or anything we do not know
      return skip('not tcp');
    }
  }
  return decodeTcp(6, d.subarray(8, 24), d.subarray(24, 40), d, off, end);
}

function decodeTcp(
  family: Family,
  src: Uint8Array,
  dst: Uint8Array,
  d: Uint8Array,
  off: number,
  end: number,
): DecodeResult {
  // RFC 9293 3.1: sport(2), dport(2), seq(4), ack(4), data offset(4 bits)+flags, ...
  if (off + 20 > end) return bad('truncated tcp header');
  const doff = (d[off + 12] >> 4) * 4;
  if (doff < 20) return bad('bad tcp data offset');
  if (off + doff > end) return bad('truncated tcp options');
  return {
    ok: true,
    seg: {
      family,
      src,
      dst,
      sport: (d[off] << 8) | d[off + 1],
      dport: (d[off + 2] << 8) | d[off + 3],
      seq: ((d[off + 4] << 24) | (d[off + 5] << 16) | (d[off + 6] << 8) | d[off + 7]) >>> 0,
      ack: ((d[off + 8] << 24) | (d[off + 9] << 16) | (d[off + 10] << 8) | d[off + 11]) >>> 0,
      flags: d[off + 13],
      payload: d.subarray(off + doff, end),
    },
  };
}
