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

  /** Time of the next live timer, or undefined. */
  next(): number | undefined {
    let best: Pending | undefined;
    for (const p of this.timers) {
      if (!p.cancelled && (best === undefined || p.at < best.at || (p.at === best.at && p.seq < best.seq))) best = p;
    }
    return best?.at;
  }

  /** Move to `to` (never backwards), firing every timer due on the way. */
  advance(to: number): void {
    for (;;) {
      this.timers = this.timers.filter((p) => !p.cancelled);
      let idx = -1;
      for (let i = 0; i < this.timers.length; i++) {
        const p = this.timers[i];
        if (p.at > to) continue;
        if (idx < 0 || p.at < this.timers[idx].at || (p.at === this.timers[idx].at && p.seq < this.timers[idx].seq)) idx = i;
      }
      if (idx < 0) break;
      const p = this.timers[idx];
      this.timers.splice(idx, 1);
      if (p.at > this.t) this.t = p.at;
      p.fn();
    }
    if (to > this.t) this.t = to;
  }

  /** Fire every timer, however far away (replay: run on past the last packet). */
  drain(): void {
    for (let n = this.next(); n !== undefined; n = this.next()) this.advance(n);
  }
}
