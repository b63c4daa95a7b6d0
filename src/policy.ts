/**
 * The one place that decides whether an announcement opens a hole.
 *
 * Rules, in order (DESIGN.md "Hole semantics", STYLE.md point 2):
 * 1. family: the announced family must be the control connection's;
 * 2. anti-bounce: the announced address must be the control peer that sent it,
 *    the client for PORT/EPRT/LPRT, the server for 227/228 (a 229 names no
 *    address: the server is meant), so nobody can aim a hole at a third host;
 * 3. port: 1024-65535, never a privileged service;
 * 4. pending: at most `maxPendingPerSession` holes of one session waiting at once.
 *
 * The hole's direction: for an active announcement the server connects to the
 * client, {src: server, dst: client, port}; for a passive reply the client
 * connects to the server, {src: client, dst: server, port}.
 */

import { addrEqual, formatAddr } from './addr';
import type { Announce, Decision, Family } from './types';

export interface Announcement {
  via: Announce;
  /** null for 229 */
  family: Family | null;
  addr: Uint8Array | null;
  port: number;
}

export interface ControlConnection {
  session: number;
  family: Family;
  client: Uint8Array;
  server: Uint8Array;
  /** canonical text of the two (optional: made from the bytes when absent) */
  clientText?: string;
  serverText?: string;
}

export interface PolicyLimits {
  /** holes of this session still open or being opened */
  pending: number;
  /** default 8 */
  maxPendingPerSession?: number;
}

export const MIN_PORT = 1024;
export const DEFAULT_MAX_PENDING = 8;

export function isActive(via: Announce): boolean {
  return via === 'PORT' || via === 'EPRT' || via === 'LPRT';
}

function familyName(f: Family): string {
  return f === 4 ? 'IPv4' : 'IPv6';
}

export function decide(conn: ControlConnection, ann: Announcement, limits: PolicyLimits): Decision {
  const { session } = conn;
  const via = ann.via;
  const refuse = (reason: string): Decision => ({ type: 'refuse', session, via, reason });

  const active = isActive(via);
  const peer = active ? conn.client : conn.server;
  const clientText = conn.clientText ?? formatAddr(conn.family, conn.client);
  const serverText = conn.serverText ?? formatAddr(conn.family, conn.server);
  const peerText = active ? clientText : serverText;

  if (ann.family !== null && ann.family !== conn.family) {
    return refuse(`family mismatch: ${familyName(ann.family)} announced on ${familyName(conn.family)} control`);
  }
  if (ann.addr !== null && !addrEqual(ann.addr, peer)) {
    return refuse(`bounce: announced ${formatAddr(conn.family, ann.addr)}, peer is ${peerText}`);
  }
  if (!Number.isInteger(ann.port) || ann.port < MIN_PORT || ann.port > 65535) {
    return refuse(ann.port < MIN_PORT ? `port ${ann.port} < ${MIN_PORT}` : `port ${ann.port} > 65535`);
  }
  const max = limits.maxPendingPerSession ?? DEFAULT_MAX_PENDING;
  if (limits.pending >= max) return refuse(`too many pending holes (${limits.pending} >= ${max})`);

  return {
    type: 'hole',
    session,
    via,
    hole: active
      ? { family: conn.family, src: serverText, dst: clientText, port: ann.port, srcBytes: conn.server, dstBytes: conn.client }
      : { family: conn.family, src: clientText, dst: serverText, port: ann.port, srcBytes: conn.client, dstBytes: conn.server },
  };
}
