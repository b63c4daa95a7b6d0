/**
 * One direction of a TCP stream, reassembled by sequence number and cut into
 * lines.  Sequence arithmetic is modulo 2^32 (RFC 9293 3.4).
 *
 * - In-order data goes straight to the line splitter.
 * - Retransmitted or overlapping bytes (before the next expected sequence
 *   number) are trimmed off.
 * - Segments from the future are held, bounded in count and bytes.  When the
 *   bound is hit, the gap is given up on: the partial line is dropped and the
 *   stream resumes at the earliest held segment.  We only watch the stream, so
 *   waiting for a byte we may never see would blind us for the rest of the session.
 * - Lines end at LF (a CR before it is stripped).  A line longer than `maxLine`
 *   is discarded up to its LF and reported once.
 * - The first segment seen sets the expected sequence number, so a session
 *   picked up mid-stream (after a restart) works from its next line on; it is
 *   assumed to start at a line boundary, as FTP control segments almost always do.
 * - SYN consumes one sequence number; FIN too, but nothing follows it.
 *
 * Memory: the line buffer is allocated on the first partial line, and held
 * segments are copies (the capture buffer is reused after release).
 */

export interface LineSink {
  /** A complete line without its terminator.  The bytes are only valid during the call. */
  line(bytes: Uint8Array): void;
  /** A line longer than the bound was dropped; `length` is how much was seen when it was cut. */
  overlong(length: number): void;
}

export interface ReassemblyLimits {
  /** longest line content kept, without CR LF (default 512) */
  maxLine?: number;
  /** out-of-order segments held (default 8) */
  maxHeldSegments?: number;
  /** out-of-order bytes held (default 8192) */
  maxHeldBytes?: number;
  /**
   * Selective queueing (-s): the kernel sends us only some segments, and
   * each one it leaves out ends at a line boundary (the ruleset queues the
   * rest of a split line).  A gap is then not a loss to wait for but lines
   * we were not shown: resume at the new segment at once.
   */
  gapsAreLineBoundaries?: boolean;
}

interface Held {
  seq: number;
  data: Uint8Array;
}

const LF = 0x0a;
/** how far behind the expected sequence number a SYN may be and still be a retransmit */
const SYN_WINDOW = 1 << 20;
const CR = 0x0d;

/** a - b as a signed 32-bit distance */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

export class StreamReassembler {
  /** next expected sequence number, or -1 before the first segment */
  private next = -1;
  private buf: Uint8Array | null = null;
  private bufLen = 0;
  /** inside an overlong line: drop bytes until the next LF */
  private discarding = false;
  private held: Held[] | null = null;
  private heldBytes = 0;
  /** bytes given up on when a gap was skipped, for statistics */
  skipped = 0;
  private readonly maxLine: number;
  private readonly maxHeldSegments: number;
  private readonly maxHeldBytes: number;
  private readonly gapsAreLineBoundaries: boolean;

  constructor(limits: ReassemblyLimits = {}) {
    this.maxLine = limits.maxLine ?? 512;
    this.maxHeldSegments = limits.maxHeldSegments ?? 8;
    this.maxHeldBytes = limits.maxHeldBytes ?? 8192;
    this.gapsAreLineBoundaries = limits.gapsAreLineBoundaries ?? false;
  }

  /** Next expected sequence number, or undefined before the first segment. */
  get expected(): number | undefined {
    return this.next === -1 ? undefined : this.next;
  }

  /**
   * Whether a segment at `seq` starts a new connection on this stream's
   * addresses and ports rather than continuing it: a SYN past the expected
   * sequence number or far behind it (push() starts over there too), or any
   * segment more than SYN_WINDOW from it either way.  A control connection
   * never has that much unacknowledged, so neither a retransmission nor a
   * gap is that far; a new connection's random initial sequence number
   * almost always is.  It matters where the queue rules keep SYN and FIN
   * from us (data-only, selective): a session is then never seen to end,
   * and when a client reuses its port, the new connection's lines would be
   * taken for old retransmissions or held for a gap that never fills.
   */
  startsNewConnection(seq: number, syn: boolean): boolean {
    if (this.next === -1) return false;
    const d = seqDiff(syn ? (seq + 1) >>> 0 : seq >>> 0, this.next);
    return d < -SYN_WINDOW || (syn ? d > 0 : d > SYN_WINDOW);
  }

  /** Bytes of a partial line waiting for its end. */
  get pending(): number {
    return this.bufLen;
  }

  /** Feed one segment.  `seq` is its sequence number (the SYN's, when `syn`). */
  push(seq: number, payload: Uint8Array, syn: boolean, sink: LineSink): void {
    let s = seq >>> 0;
    if (syn) {
      // The SYN occupies one sequence number; data (rare with SYN) follows it.
      s = (s + 1) >>> 0;
      // A retransmitted SYN lies at or a little before what we expect; anything
      // else is a new connection on the same 4-tuple.
      const d = this.next === -1 ? 1 : seqDiff(s, this.next);
      if (d > 0 || d < -SYN_WINDOW) this.resync(s);
    } else if (this.next === -1) {
      this.next = s;
    }
    if (payload.length === 0) return;

    const d = seqDiff(s, this.next);
    if (d > 0) {
      if (this.gapsAreLineBoundaries) {
        // Unseen lines: a partial line before them cannot continue here.
        this.skipped += d;
        this.resync(s);
        this.accept(payload, sink);
        return;
      }
      this.hold(s, payload, sink);
      return;
    }
    if (-d >= payload.length) return; // entirely old: a retransmit
    this.accept(payload.subarray(-d), sink);
    this.drain(sink);
  }

  /** Start over at `seq`: a new SYN, or a gap given up on. */
  private resync(seq: number): void {
    this.next = seq;
    this.bufLen = 0;
    this.discarding = false;
  }

  private accept(data: Uint8Array, sink: LineSink): void {
    this.next = (this.next + data.length) >>> 0;
    this.split(data, sink);
  }

  private hold(seq: number, payload: Uint8Array, sink: LineSink): void {
    if (this.held === null) this.held = [];
    // Make room: give up on the gap until the new segment fits the bounds.
    while (
      this.held.length > 0 &&
      (this.held.length >= this.maxHeldSegments || this.heldBytes + payload.length > this.maxHeldBytes)
    ) {
      this.skipGap(sink);
      const d = seqDiff(seq, this.next);
      if (d <= 0) {
        if (-d < payload.length) {
          this.accept(payload.subarray(-d), sink);
          this.drain(sink);
        }
        return;
      }
    }
    if (payload.length > this.maxHeldBytes) {
      // Cannot ever be held: jump to it.
      this.skipped += seqDiff(seq, this.next) >>> 0;
      this.resync(seq);
      this.accept(payload, sink);
      return;
    }
    // Keep the list sorted by sequence number; duplicates are harmless (trimmed on drain).
    const h = this.held;
    let i = h.length;
    while (i > 0 && seqDiff(h[i - 1].seq, seq) > 0) i--;
    // a copy (new Uint8Array, not slice(): a Buffer's slice() is a view)
    h.splice(i, 0, { seq, data: new Uint8Array(payload) });
    this.heldBytes += payload.length;
  }

  /** Drop the partial line and resume at the earliest held segment. */
  private skipGap(sink: LineSink): void {
    const h = this.held;
    if (h === null || h.length === 0) return;
    this.skipped += seqDiff(h[0].seq, this.next) >>> 0;
    this.resync(h[0].seq);
    this.drain(sink);
  }

  /** Feed held segments that have become in order. */
  private drain(sink: LineSink): void {
    const h = this.held;
    if (h === null) return;
    while (h.length > 0) {
      const first = h[0];
      const d = seqDiff(first.seq, this.next);
      if (d > 0) break;
      h.shift();
      this.heldBytes -= first.data.length;
      if (-d < first.data.length) this.accept(first.data.subarray(-d), sink);
    }
  }

  /** Cut in-order bytes into lines. */
  private split(data: Uint8Array, sink: LineSink): void {
    let start = 0;
    for (;;) {
      const lf = data.indexOf(LF, start);
      if (lf === -1) break;
      if (this.discarding) {
        this.discarding = false;
      } else if (this.bufLen === 0) {
        // Whole line inside this segment: no copy.
        let end = lf;
        if (end > start && data[end - 1] === CR) end--;
        if (end - start > this.maxLine) sink.overlong(end - start);
        else sink.line(data.subarray(start, end));
      } else {
        this.append(data.subarray(start, lf), sink);
        if (!this.discarding) {
          let end = this.bufLen;
          if (end > 0 && this.buf![end - 1] === CR) end--;
          this.bufLen = 0;
          if (end > this.maxLine) sink.overlong(end);
          else sink.line(this.buf!.subarray(0, end));
        }
        this.discarding = false;
      }
      start = lf + 1;
    }
    if (start < data.length && !this.discarding) this.append(data.subarray(start), sink);
  }

  /** Add to the partial line; an overflow turns the line into one to discard. */
  private append(part: Uint8Array, sink: LineSink): void {
    // +1: room for the CR of a CR LF split between segments.
    const room = this.maxLine + 1;
    if (this.bufLen + part.length > room) {
      sink.overlong(this.bufLen + part.length);
      this.bufLen = 0;
      this.discarding = true;
      return;
    }
    if (this.buf === null) this.buf = new Uint8Array(room);
    this.buf.set(part, this.bufLen);
    this.bufLen += part.length;
  }

  /** Free the line buffer and held segments (the session goes idle or ends). */
  release(): void {
    if (this.bufLen === 0) this.buf = null;
    if (this.held !== null && this.held.length === 0) this.held = null;
  }
}
