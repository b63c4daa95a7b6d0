/**
 * The engine: control packets in, hole decisions out.  Pure: no I/O, no
 * clock of its own (packet times drive idle expiry), no firewall.
 *
 *   packet --decodePacket--> TCP segment --SessionTable--> session, direction
 *          --StreamReassembler--> lines --parseLine--> announcement --decide--> Decision
 *
 * process() never throws: whatever the bytes, the caller can release the packet.
 */

import { decodePacket, TCP_FIN, TCP_RST, TCP_SYN, type TcpSegment } from './packet';
import { parseLine, MAX_LINE, type Direction } from './ftp';
import { SessionTable, type EndReason, type Session } from './session';
import { decide, DEFAULT_MAX_PENDING } from './policy';
import { escapeUntrusted } from './escape';
import type { LineSink } from './reassembly';
import { logLazy, type Decision, type Logger, type Packet } from './types';

export interface EngineOptions {
  logger: Logger;
  /** holes of a session still open (from the hole manager); default: none */
  pendingFor?: (session: number) => number;
  /** default 8 */
  maxPendingPerSession?: number;
  /** default 600000 */
  idleTimeoutMs?: number;
  /** default 65536 */
  maxSessions?: number;
  /** longest control line, without CR LF; default 512 */
  maxLine?: number;
  /** default 21 */
  controlPort?: number;
  /**
   * Selective queueing (-s): the kernel queues only the segments that may
   * matter (see src/firewall/selective.ts), so gaps in a stream are unseen
   * whole lines, and each server packet's verdict says whether to see all.
   */
  selective?: boolean;
}

export interface EngineStats {
  /** packets given to process() */
  packets: number;
  /** sessions tracked now */
  sessions: number;
  /** complete control lines parsed */
  lines: number;
  /** well-formed announcements (holes + refusals) */
  announcements: number;
  /** announcements refused by policy */
  refused: number;
  /** damaged packets, bad announcement lines, overlong lines, internal errors */
  errors: number;
}

export class Engine {
  private readonly log: Logger;
  private readonly pendingFor: (session: number) => number;
  private readonly maxPending: number;
  private readonly maxLine: number;
  private readonly table: SessionTable;
  private readonly selective: boolean;
  private readonly st: EngineStats = { packets: 0, sessions: 0, lines: 0, announcements: 0, refused: 0, errors: 0 };

  // Per-call context for the line sink (process() is synchronous, so one is enough).
  private cur: Session | null = null;
  private curFromClient = false;
  private curOut: Decision[] = [];
  /** the server's reply code 221 or 421 in this packet: it is closing the control connection */
  private curClosing = 0;
  private readonly sink: LineSink;

  constructor(opts: EngineOptions) {
    this.log = opts.logger;
    this.pendingFor = opts.pendingFor ?? (() => 0);
    this.maxPending = opts.maxPendingPerSession ?? DEFAULT_MAX_PENDING;
    this.maxLine = opts.maxLine ?? MAX_LINE;
    this.selective = opts.selective ?? false;
    this.table = new SessionTable({
      idleTimeoutMs: opts.idleTimeoutMs,
      maxSessions: opts.maxSessions,
      controlPort: opts.controlPort,
      reassembly: { maxLine: this.maxLine, gapsAreLineBoundaries: this.selective },
    });
    this.sink = {
      line: (bytes) => this.onLine(bytes),
      overlong: (n) => this.onOverlong(n),
    };
  }

  /** Decisions for one control packet, in the order of the lines that made them. */
  process(pkt: Packet): Decision[] {
    this.st.packets++;
    try {
      const r = decodePacket(pkt.data);
      if (!r.ok) {
        if (!r.skip) {
          this.st.errors++;
          this.log.log('debug', `damaged packet ignored: ${r.reason}`);
        }
        return [];
      }
      return this.segment(r.seg, pkt);
    } catch (e) {
      this.st.errors++;
      try {
        this.log.log('err', `internal error on packet: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      } catch {
        // a failing logger must not make process() throw either
      }
      return [];
    } finally {
      this.cur = null;
    }
  }

  /** Forget sessions idle since before `now - idleTimeoutMs`. */
  expire(now: number): void {
    for (const s of this.table.expire(now)) this.ended(s, 'idle');
  }

  stats(): EngineStats {
    return { ...this.st, sessions: this.table.size };
  }

  private segment(seg: TcpSegment, pkt: Packet): Decision[] {
    let found = this.table.lookup(seg, pkt.time, (s) => this.ended(s, 'evicted'));
    if (found === null) return [];
    if (!found.created) {
      // A new connection on the same addresses and ports, whose start we
      // did not see: the old session's state (sequence numbers, a partial
      // line, a multi-line reply) must not blind us to its lines.
      const old = found.session;
      if ((found.fromClient ? old.fromClient : old.fromServer).startsNewConnection(seg.seq, (seg.flags & TCP_SYN) !== 0)) {
        this.table.remove(old);
        this.ended(old, 'replaced');
        found = this.table.lookup(seg, pkt.time, (s) => this.ended(s, 'evicted'));
        if (found === null) return [];
      }
    }
    const { session: s, fromClient, created } = found;
    if (created) {
      const syn = (seg.flags & TCP_SYN) !== 0;
      logLazy(this.log, 'debug', () =>
        `#${s.id} new session ${s.clientText}.${s.clientPort} -> ${s.serverText}.${s.serverPort}${syn ? '' : ' (picked up mid-stream)'}`);
    }

    const out: Decision[] = [];
    if ((seg.flags & TCP_RST) !== 0) {
      // The peer aborted: nothing after this matters, not even its payload.
      this.table.remove(s);
      this.ended(s, 'rst');
      return out;
    }

    if (seg.payload.length > 0 || (seg.flags & TCP_SYN) !== 0) {
      this.cur = s;
      this.curFromClient = fromClient;
      this.curOut = out;
      this.curClosing = 0;
      const stream = fromClient ? s.fromClient : s.fromServer;
      stream.push(seg.seq, seg.payload, (seg.flags & TCP_SYN) !== 0, this.sink);
      // Idle sessions should hold no line buffer (memory per session).
      stream.release();
      this.cur = null;
      if (this.curClosing !== 0) {
        // 221 (after QUIT) or 421: the server closes the control connection,
        // and nothing after it on these ports belongs to this session.  Where
        // the queue rules keep FIN from us (data-only), this is how we learn
        // the session ended: a client that reuses its port at once (its new
        // sequence numbers then lie just past the old ones) starts afresh.
        this.table.remove(s);
        this.ended(s, 'closing', ` (${this.curClosing})`);
        if (this.selective && !fromClient) pkt.seeAll = false;
        return out;
      }
    }
    // Lines inside a multi-line reply are free text: the daemon must see all
    // of them to know where the reply ends (RFC 959 4.2).  Said for every
    // server packet, a bare ACK too: the kernel copies a verdict without it
    // as "clear".
    if (this.selective && !fromClient) pkt.seeAll = s.multiline !== 0;

    if ((seg.flags & TCP_FIN) !== 0) {
      if (fromClient) s.clientFin = true;
      else s.serverFin = true;
      if (s.clientFin && s.serverFin) {
        this.table.remove(s);
        this.ended(s, 'fin');
      }
    }
    return out;
  }

  private ended(s: Session, why: EndReason, detail = ''): void {
    const text: Record<EndReason, string> = {
      rst: 'reset',
      fin: 'closed',
      idle: 'idle, forgotten',
      evicted: 'evicted (session table full)',
      replaced: 'replaced by a new connection on the same addresses and ports',
      closing: 'the server closes it',
    };
    this.log.log(why === 'evicted' ? 'notice' : 'debug', `#${s.id} session end: ${text[why]}${detail}`);
  }

  private onOverlong(n: number): void {
    const s = this.cur;
    if (s === null) return;
    this.st.errors++;
    this.log.log('notice', `#${s.id} overlong line from ${this.curFromClient ? 'client' : 'server'} discarded (${n} > ${this.maxLine} bytes)`);
  }

  private onLine(bytes: Uint8Array): void {
    const s = this.cur;
    if (s === null) return;
    this.st.lines++;
    const dir: Direction = this.curFromClient ? 'client' : 'server';

    if (!this.curFromClient) {
      // the code of a reply's last line ("nnn "), else 0
      const final = bytes.length >= 4 && bytes[3] === 0x20 ? replyCode(bytes) : 0;
      // Inside a multi-line reply ("nnn-" ... "nnn "), lines are free text,
      // whatever they look like (RFC 959 4.2); its last line is a reply of its own.
      if (s.multiline !== 0) {
        if (final === s.multiline) s.multiline = 0;
        else return;
      } else if (bytes.length >= 4 && bytes[3] === 0x2d) {
        const code = replyCode(bytes);
        if (code > 0) {
          s.multiline = code;
          return;
        }
      }
      if (final === 221 || final === 421) this.curClosing = final;
    }

    const r = parseLine(dir, bytes, this.maxLine);
    switch (r.kind) {
      case 'none':
        return;
      case 'passive':
        s.passive = r.cmd;
        return;
      case 'error':
        this.st.errors++;
        // the line's bytes are only valid during this call: escaped now
        this.log.log('notice', `#${s.id} bad ${r.via} from ${dir}: ${r.reason}: "${escapeUntrusted(bytes)}"`);
        return;
      case 'announce': {
        this.st.announcements++;
        if (!this.curFromClient) {
          if (s.passive === null) this.log.log('debug', `#${s.id} ${r.via} reply without a passive command seen`);
          s.passive = null;
        }
        let pending = this.pendingFor(s.id);
        for (const d of this.curOut) if (d.type === 'hole' && d.session === s.id) pending++;
        const d = decide(
          { session: s.id, family: s.family, client: s.client, server: s.server, clientText: s.clientText, serverText: s.serverText },
          r,
          { pending, maxPendingPerSession: this.maxPending },
        );
        if (d.type === 'refuse') {
          this.st.refused++;
          this.log.log('notice', `#${s.id} ${r.via} from ${dir} refused: ${d.reason}`);
        } else {
          const { hole } = d;
          logLazy(this.log, 'debug', () => `#${s.id} ${r.via} from ${dir}: hole ${hole.src} -> ${hole.dst}.${hole.port}`);
        }
        this.curOut.push(d);
        return;
      }
    }
  }
}

/** The 3-digit code at the start of a line, or 0. */
function replyCode(b: Uint8Array): number {
  const a = b[0] - 0x30;
  const c = b[1] - 0x30;
  const e = b[2] - 0x30;
  if (a < 0 || a > 9 || c < 0 || c > 9 || e < 0 || e > 9) return 0;
  return a * 100 + c * 10 + e;
}
