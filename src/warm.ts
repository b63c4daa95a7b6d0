/**
 * Keeping the packet path warm (-w <ms>): while FTP is active, every <ms>
 * the daemon rehearses the packet that opens a hole.  A synthetic "229"
 * reply of a new control connection goes through a private engine, hole
 * manager and proxy, and ends in the real firewall's encoding of the open
 * (Firewall.rehearse), which writes the request it would send and sends
 * nothing.  No rehearsal touches the real sessions, holes, firewall or
 * kernel, and none logs.
 *
 * Why: the engine handles a 229 in about 5 µs when it has just run, but the
 * one real 229 of a transfer comes to a process that has slept since the
 * last one, and then the same code takes 200 to 300 µs (see README,
 * Performance: code and data fetched again from memory, stage by stage).
 * The packet is held meanwhile, so that time is added to opening every data
 * connection.  A rehearsal every 1 or 2 ms keeps that path in the caches.
 *
 * "Active" is a window: it opens with a packet handed to the handler and
 * closes WARM_WINDOW_MS after the last one.  An idle gateway has no
 * rehearsal and no wake-up; the first hole after a quiet spell is opened
 * cold, as without -w.  Rehearsals cost CPU while the window is open (about
 * 5 % of one core at 2 ms on the bench's VM: README).
 */
import { ControlProxy } from './proxy';
import { Engine } from './engine';
import { HoleManager } from './holes';
import { Clock, Firewall, Hole, Logger, Packet, Timer } from './types';

/** how long the rehearsals go on after the last packet */
export const WARM_WINDOW_MS = 10_000;

const QUIET: Logger = { log: () => undefined, lazy: () => undefined, wants: () => false };
const NO_TIMER: Timer = { cancel: () => undefined };

/*
 * The rehearsal's addresses: the documentation prefix (RFC 3849), which no
 * real session of the daemon has; they never leave the process.
 */
const CLIENT = Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01);
const SERVER = Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02);
/** the announced port (fixed: each rehearsal is a new session and a new hole manager) */
const REHEARSAL_PORT = 50000;

/**
 * The server's "229 Entering Extended Passive Mode (|||port|)" to the
 * client's `clientPort`, as the kernel queues it: an IPv6 header (RFC 8200)
 * and a 20-byte TCP header (RFC 9293) with ACK|PSH, then the line.  The
 * checksum is left 0: the engine does not check it and the packet is never
 * sent.
 */
export function rehearsalPacket(clientPort: number, seq: number): Uint8Array {
  const line = `229 Entering Extended Passive Mode (|||${REHEARSAL_PORT}|)\r\n`;
  const p = new Uint8Array(40 + 20 + line.length);
  const v = new DataView(p.buffer);
  v.setUint32(0, 0x60000000); // version 6, traffic class 0, flow label 0
  v.setUint16(4, 20 + line.length); // payload length
  p[6] = 6; // next header: TCP
  p[7] = 64; // hop limit
  p.set(SERVER, 8);
  p.set(CLIENT, 24);
  v.setUint16(40, 21); // source port: the server's control port
  v.setUint16(42, clientPort);
  v.setUint32(44, seq >>> 0);
  v.setUint32(48, 1); // acknowledgment number
  p[52] = 5 << 4; // data offset: 5 words
  p[53] = 0x18; // ACK | PSH
  v.setUint16(54, 65535); // window
  for (let i = 0; i < line.length; i++) p[60 + i] = line.charCodeAt(i);
  return p;
}

export interface WarmOptions {
  /** -w: between rehearsals, ms (> 0) */
  intervalMs: number;
  /** how long rehearsals go on after the last packet; default WARM_WINDOW_MS */
  windowMs?: number;
  clock: Clock;
  /** the daemon's firewall: only its rehearse() is called, if it has one */
  firewall: Firewall;
  /** -s: the engine's selective mode */
  selective: boolean;
  /** -t */
  timeoutSec: number;
  /** for the one line if a rehearsal ever fails (then they stop) */
  logger: Logger;
}

export class KeepWarm {
  /** rehearsals run (and holes they "opened", which the tests check) */
  rehearsals = 0;
  opened = 0;
  private readonly o: Required<WarmOptions>;
  /** the private hole manager's firewall: the real one's encoding, nothing sent */
  private readonly stage: Firewall;
  /** the private hole manager's clock: no timer of a rehearsal is ever armed */
  private readonly still: Clock;
  private timer: Timer | null = null;
  /** a packet came since the last tick */
  private seen = false;
  /** the window is open: a tick is armed or about to be */
  private running = false;
  private last = 0;
  private stopped = false;
  private n = 0;

  constructor(opts: WarmOptions) {
    if (!(opts.intervalMs > 0)) throw new RangeError(`KeepWarm: interval ${opts.intervalMs} ms`);
    this.o = { windowMs: WARM_WINDOW_MS, ...opts };
    const fw = opts.firewall;
    this.stage = {
      kind: `${fw.kind} rehearsal`,
      check: async () => undefined,
      sweep: async () => undefined,
      shutdown: async () => undefined,
      open: async () => undefined,
      openNow: (hole: Hole) => {
        this.opened++;
        fw.rehearse?.(hole);
        return undefined;
      },
      close: async () => true,
    };
    this.still = { now: () => opts.clock.now(), setTimer: () => NO_TIMER };
  }

  /** The daemon's handler, which also opens the window: one assignment per packet, the timer after the verdict. */
  wrap(handle: (pkt: Packet) => Promise<void> | undefined): (pkt: Packet) => Promise<void> | undefined {
    return (pkt) => {
      this.seen = true;
      if (!this.running && !this.stopped) {
        this.running = true;
        queueMicrotask(this.start);
      }
      return handle(pkt);
    };
  }

  /** One rehearsal, now. */
  rehearse(): void {
    const holes = new HoleManager({ firewall: this.stage, clock: this.still, logger: QUIET, base: 1, count: 1, timeoutSec: this.o.timeoutSec });
    const engine = new Engine({ logger: QUIET, pendingFor: (s) => holes.pendingFor(s), selective: this.o.selective });
    const proxy = new ControlProxy(engine, holes);
    // a new control connection each time, as each transfer's is
    this.n = (this.n + 1) % 30000;
    void proxy.handle({ data: rehearsalPacket(32768 + this.n, this.n * 1000), time: this.o.clock.now() });
    this.rehearsals++;
  }

  /** No more rehearsals (at stop). */
  stop(): void {
    this.stopped = true;
    this.running = false;
    this.timer?.cancel();
    this.timer = null;
  }

  private readonly start = (): void => {
    if (this.stopped) return;
    this.last = this.o.clock.now();
    this.seen = false;
    this.arm();
  };

  private arm(): void {
    this.timer = this.o.clock.setTimer(this.o.intervalMs, this.tick);
  }

  private readonly tick = (): void => {
    this.timer = null;
    if (this.stopped) return;
    const now = this.o.clock.now();
    if (this.seen) {
      this.seen = false;
      this.last = now;
    } else if (now - this.last >= this.o.windowMs || now < this.last) {
      // quiet for the whole window (or the clock went back): sleep until the next packet
      this.running = false;
      return;
    }
    try {
      this.rehearse();
    } catch (e) {
      this.stop();
      this.o.logger.log('err', `keeping the packet path warm failed, no more rehearsals: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    this.arm();
  };
}
