/**
 * FTP control connections, tracked by 4-tuple.
 *
 * The side with the control port (21) is the server: a segment to port 21
 * comes from the client, one from port 21 from the server.  A session is
 * created by the first segment of either side, SYN or not, so connections
 * that were open before a restart are picked up.  It is forgotten on RST, when
 * both sides have sent FIN, after `idleTimeoutMs` without a segment, or when
 * the table is full and it is the one idle the longest.
 *
 * The Map keeps sessions in order of last use (a touched session is moved to
 * the end), so expiry and eviction look only at the front.
 */

import { StreamReassembler, type ReassemblyLimits } from './reassembly';
import { formatAddr } from './addr';
import type { Family } from './types';
import type { PassiveCommand } from './ftp';
import type { TcpSegment } from './packet';

export interface Session {
  /** increasing from 1, logged as `#<id>` */
  readonly id: number;
  readonly key: string;
  readonly family: Family;
  /** copies of the address bytes */
  readonly client: Uint8Array;
  readonly server: Uint8Array;
  readonly clientPort: number;
  readonly serverPort: number;
  /** canonical text, made once */
  readonly clientText: string;
  readonly serverText: string;
  /** client -> server and server -> client streams */
  readonly fromClient: StreamReassembler;
  readonly fromServer: StreamReassembler;
  /** time of the last segment, ms */
  last: number;
  clientFin: boolean;
  serverFin: boolean;
  /** the last PASV/EPSV/LPSV not yet answered, or null */
  passive: PassiveCommand | null;
  /** code of the multi-line reply the server is in the middle of, or 0 */
  multiline: number;
}

export interface SessionTableOptions {
  /** default 600000 (10 minutes) */
  idleTimeoutMs?: number;
  /** default 65536 */
  maxSessions?: number;
  /** default 21 */
  controlPort?: number;
  reassembly?: ReassemblyLimits;
}

export interface Lookup {
  session: Session;
  /** true when the segment travels client -> server */
  fromClient: boolean;
  /** true when this segment created the session */
  created: boolean;
}

export type EndReason = 'rst' | 'fin' | 'idle' | 'evicted' | 'replaced' | 'closing';

export class SessionTable {
  private readonly map = new Map<string, Session>();
  private nextId = 1;
  readonly idleTimeoutMs: number;
  readonly maxSessions: number;
  readonly controlPort: number;
  private readonly limits: ReassemblyLimits;

  constructor(opts: SessionTableOptions = {}) {
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 600_000;
    this.maxSessions = Math.max(1, opts.maxSessions ?? 65536);
    this.controlPort = opts.controlPort ?? 21;
    this.limits = opts.reassembly ?? {};
  }

  get size(): number {
    return this.map.size;
  }

  /** Sessions from the least recently used on. */
  values(): IterableIterator<Session> {
    return this.map.values();
  }

  /**
   * Find (or create) the session of a segment.  Returns null when neither port
   * is the control port, or for a RST of an unknown session.  `evicted`
   * receives a session pushed out because the table was full.
   */
  lookup(seg: TcpSegment, now: number, evicted?: (s: Session) => void): Lookup | null {
    let fromClient: boolean;
    if (seg.dport === this.controlPort) fromClient = true;
    else if (seg.sport === this.controlPort) fromClient = false;
    else return null;

    const client = fromClient ? seg.src : seg.dst;
    const server = fromClient ? seg.dst : seg.src;
    const clientPort = fromClient ? seg.sport : seg.dport;
    const serverPort = fromClient ? seg.dport : seg.sport;
    const key = flowKey(client, clientPort, server, serverPort);

    let s = this.map.get(key);
    let created = false;
    if (s === undefined) {
      if ((seg.flags & 0x04) !== 0) return null; // RST: nothing to forget
      // A bare ACK or FIN (the tail of a session we just forgot, or a keep-alive)
      // carries no line: only a SYN or data starts tracking.
      if ((seg.flags & 0x02) === 0 && seg.payload.length === 0) return null;
      if (this.map.size >= this.maxSessions) {
        const oldest = this.map.values().next().value as Session;
        this.map.delete(oldest.key);
        if (evicted) evicted(oldest);
      }
      s = {
        id: this.nextId++,
        key,
        family: seg.family,
        // copies (new Uint8Array, not slice(): a Buffer's slice() is a view,
        // and the packet may be one into the capture's receive buffer)
        client: new Uint8Array(client),
        server: new Uint8Array(server),
        clientPort,
        serverPort,
        clientText: formatAddr(seg.family, client),
        serverText: formatAddr(seg.family, server),
        fromClient: new StreamReassembler(this.limits),
        fromServer: new StreamReassembler(this.limits),
        last: now,
        clientFin: false,
        serverFin: false,
        passive: null,
        multiline: 0,
      };
      created = true;
    } else {
      // Move to the end: the Map stays in order of last use.
      this.map.delete(key);
    }
    s.last = now;
    this.map.set(key, s);
    return { session: s, fromClient, created };
  }

  remove(s: Session): void {
    this.map.delete(s.key);
  }

  /** Remove and return the sessions idle for `idleTimeoutMs` or longer at `now`. */
  expire(now: number): Session[] {
    const out: Session[] = [];
    for (const s of this.map.values()) {
      if (now - s.last < this.idleTimeoutMs) break;
      out.push(s);
    }
    for (const s of out) this.map.delete(s.key);
    return out;
  }
}

/**
 * Map key of a 4-tuple: the address bytes as 16-bit code units, then the
 * ports, made by one String.fromCharCode (a flat string of 6 units for
 * IPv4, 18 for IPv6, so the families cannot collide).  Cheaper than
 * formatting text, or than appending a character per byte, and exact.
 */
function flowKey(client: Uint8Array, cport: number, server: Uint8Array, sport: number): string {
  const c = client;
  const v = server;
  if (c.length === 4) return String.fromCharCode((c[0] << 8) | c[1], (c[2] << 8) | c[3], (v[0] << 8) | v[1], (v[2] << 8) | v[3], cport, sport);
  return String.fromCharCode(
    (c[0] << 8) | c[1], (c[2] << 8) | c[3], (c[4] << 8) | c[5], (c[6] << 8) | c[7],
    (c[8] << 8) | c[9], (c[10] << 8) | c[11], (c[12] << 8) | c[13], (c[14] << 8) | c[15],
    (v[0] << 8) | v[1], (v[2] << 8) | v[3], (v[4] << 8) | v[5], (v[6] << 8) | v[7],
    (v[8] << 8) | v[9], (v[10] << 8) | v[11], (v[12] << 8) | v[13], (v[14] << 8) | v[15],
    cport, sport,
  );
}
