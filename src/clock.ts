/** Clocks: real time for the daemon, virtual time for replay and tests. */
import { Clock, Timer } from './types';

export class RealClock implements Clock {
  now(): number {
    return Date.now();
  }
  setTimer(ms: number, fn: () => void): Timer {
    const t = setTimeout(fn, Math.max(0, ms));
    return { cancel: () => clearTimeout(t) };
  }
}

interface Pending {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/**
 * A clock that only moves when told.  Timers fire in time order (ties in the
 * order they were set) when `advance` passes them.
 */
export class VirtualClock implements Clock {
  private t: number;
  private seq = 0;
  private timers: Pending[] = [];

  constructor(start = 0) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimer(ms: number, fn: () => void): Timer {
    const p: Pending = { at: this.t + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.timers.push(p);
    return { cancel: () => { p.cancelled = true; } };
  }

  /** The live timer that fires first (time order, then the order they were set). */
  private earliest(): Pending | undefined {
    let best: Pending | undefined;
    for (const p of this.timers) {
      if (!p.cancelled && (best === undefined || p.at < best.at || (p.at === best.at && p.seq < best.seq))) best = p;
    }
    return best;
  }

  /** Time of the next live timer, or undefined. */
  next(): number | undefined {
    return this.earliest()?.at;
  }

  /** Move to `to` (never backwards), firing every timer due on the way. */
  advance(to: number): void {
    for (let p = this.earliest(); p !== undefined && p.at <= to; p = this.earliest()) {
      this.timers.splice(this.timers.indexOf(p), 1);
      if (p.at > this.t) this.t = p.at;
      p.fn();
    }
    this.timers = this.timers.filter((p) => !p.cancelled);
    if (to > this.t) this.t = to;
  }
}
