/**
 * The hole pool and the life of each hole: allocate the lowest free rule
 * number, open it in the firewall (bounded wait), close it after -t seconds,
 * reuse the number only once the firewall let it go.
 */
import { Announce, Clock, Firewall, Hole, HoleSpec, Logger, Timer, logLazy } from './types';

export interface HoleEvent {
  type: 'open' | 'close';
  /** clock time of the event, ms */
  time: number;
  hole: Hole;
}

export interface HoleManagerOptions {
  firewall: Firewall;
  clock: Clock;
  logger: Logger;
  /** -b */
  base: number;
  /** -c */
  count: number;
  /** -t, seconds */
  timeoutSec: number;
  /**
   * Longest wait for a firewall call while the control packet is held.  After it
   * the packet is released anyway; the hole is closed later as usual.
   */
  callTimeoutMs?: number;
  /** How long to wait before asking again to close a busy or failed hole. */
  retryMs?: number;
  onEvent?: (e: HoleEvent) => void;
}

export interface HoleStats {
  inUse: number;
  free: number;
  opened: number;
  closed: number;
  exhausted: number;
  failed: number;
}

interface Slot {
  hole: Hole;
  /** which arm() is current: older entries of the expiry queue are stale */
  armed: number;
  /** the retry of a close the firewall refused or failed */
  retry?: Timer;
  /** the close timer fired; the number is held until the firewall lets it go */
  closing: boolean;
}

/** A hole's close time, in the expiry queue. */
interface Expiry {
  slot: Slot;
  armed: number;
  at: number;
}

export const DEFAULT_CALL_TIMEOUT_MS = 1000;

/** Resolve with the promise's outcome, or reject with 'timeout' after ms. */
function bounded<T>(p: Promise<T>, clock: Clock, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = clock.setTimer(ms, () => reject(new Error(`no answer within ${ms} ms`)));
    p.then(
      (v) => { t.cancel(); resolve(v); },
      (e: unknown) => { t.cancel(); reject(e); },
    );
  });
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class HoleManager {
  private readonly o: Required<Omit<HoleManagerOptions, 'onEvent'>> & Pick<HoleManagerOptions, 'onEvent'>;
  private readonly slots = new Map<number, Slot>();
  /** each session's slots (closing ones too, until the firewall lets them go) */
  private readonly perSession = new Map<number, Slot[]>();
  /** every rule number below this one is in use (lowestFree starts here) */
  private freeFrom: number;
  /** true between "pool exhausted" and the next release: one log line per burst */
  private exhaustedBurst = false;
  /**
   * Close times in the order the holes were armed, which is their time order:
   * every hole lives -t seconds.  One timer serves them all, so arming a
   * hole (while its control packet is held) is an array push, not a timer
   * of its own.
   */
  private expiry: Expiry[] = [];
  private expiryTimer: Timer | null = null;
  private readonly s: HoleStats;

  constructor(opts: HoleManagerOptions) {
    // `??`, not spread defaults: an explicit `callTimeoutMs: undefined` must not
    // turn the bounded wait into no wait at all.
    this.o = { ...opts, callTimeoutMs: opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS, retryMs: opts.retryMs ?? 5000 };
    this.s = { inUse: 0, free: opts.count, opened: 0, closed: 0, exhausted: 0, failed: 0 };
    this.freeFrom = opts.base;
  }

  /** Holes held for a session: the engine's bound on pending holes uses it. */
  pendingFor(session: number): number {
    return this.perSession.get(session)?.length ?? 0;
  }

  stats(): HoleStats {
    return { ...this.s, inUse: this.slots.size, free: this.o.count - this.slots.size };
  }

  holes(): Hole[] {
    return [...this.slots.values()].map((s) => s.hole);
  }

  /** The lowest free rule number; numbers below freeFrom are in use, so the search starts there. */
  private lowestFree(): number | undefined {
    const end = this.o.base + this.o.count;
    let n = this.freeFrom;
    while (n < end && this.slots.has(n)) n++;
    this.freeFrom = n;
    return n < end ? n : undefined;
  }

  /**
   * Open a hole for an announcement.  Resolves once the firewall has it (or the
   * bounded wait ran out, or the call failed: then it is logged); never rejects.
   */
  request(session: number, via: Announce, spec: HoleSpec): Promise<Hole | null> {
    return Promise.resolve(this.requestNow(session, via, spec));
  }

  /**
   * request(), finished at once where the firewall allows it (Firewall.openNow):
   * then the hole (or null) itself, else request()'s promise.  Never throws.
   */
  requestNow(session: number, via: Announce, spec: HoleSpec): Hole | null | Promise<Hole | null> {
    const { logger, clock } = this.o;
    // Lines are made after the verdict (logLazy): the packet is held now.
    const what = (): string => `${spec.src} -> ${spec.dst} port ${spec.port}`;
    // The same announcement again (a client repeating PORT): refresh the hole it has.
    const mine = this.perSession.get(session);
    for (const slot of mine ?? []) {
      const h = slot.hole;
      if (!slot.closing && h.family === spec.family && h.src === spec.src && h.dst === spec.dst && h.port === spec.port) {
        this.arm(slot);
        logLazy(logger, 'info', () => `#${session} hole ${h.rule} renewed by ${via}: ${what()}`);
        return this.opened(slot);
      }
    }
    const rule = this.lowestFree();
    if (rule === undefined) {
      this.s.exhausted++;
      if (!this.exhaustedBurst) {
        this.exhaustedBurst = true;
        logger.log('warning', `#${session} pool exhausted: all ${this.o.count} rules from ${this.o.base} in use, no hole for ${via} ${what()}`);
      }
      return null;
    }
    const hole: Hole = { ...spec, rule, session };
    const slot: Slot = { hole, armed: 0, closing: false };
    this.slots.set(rule, slot);
    if (mine === undefined) this.perSession.set(session, [slot]);
    else mine.push(slot);
    this.arm(slot);
    this.s.opened++;
    this.o.onEvent?.({ type: 'open', time: clock.now(), hole });
    logLazy(logger, 'info', () => `#${session} hole ${rule} open for ${via}: ${what()}, ${this.o.timeoutSec}s`);
    return this.opened(slot);
  }

  /** The slot's hole once the firewall call is over: at once if it was. */
  private opened(slot: Slot): Hole | Promise<Hole> {
    const call = this.callOpen(slot);
    return call === undefined ? slot.hole : call.then(() => slot.hole);
  }

  /** (Re)start the slot's life of -t seconds; an earlier arm() of it no longer counts. */
  private arm(slot: Slot): void {
    const ms = this.o.timeoutSec * 1000;
    slot.armed++;
    this.expiry.push({ slot, armed: slot.armed, at: this.o.clock.now() + ms });
    if (this.expiryTimer === null) this.expiryTimer = this.o.clock.setTimer(ms, this.onExpiry);
  }

  /** Close the holes whose time has come; wait for the next one. */
  private readonly onExpiry = (): void => {
    this.expiryTimer = null;
    const now = this.o.clock.now();
    const ms = this.o.timeoutSec * 1000;
    const q = this.expiry;
    let i = 0;
    for (; i < q.length; i++) {
      const e = q[i];
      if (e.armed !== e.slot.armed || e.slot.closing || this.slots.get(e.slot.hole.rule) !== e.slot) continue; // renewed, or gone
      const left = e.at - now;
      // A close time further than -t away means the wall clock went back:
      // that hole has lived long enough too.
      if (left > 0 && left <= ms) {
        this.expiryTimer = this.o.clock.setTimer(left, this.onExpiry);
        break;
      }
      void this.close(e.slot);
    }
    this.expiry = i === 0 ? q : q.slice(i);
  };

  /** The firewall call, bounded by `ms` unless the backend's own bound is as short. */
  private within<T>(call: Promise<T>, ms: number): Promise<T> {
    const own = this.o.firewall.settlesWithinMs;
    return own !== undefined && own <= ms ? call : bounded(call, this.o.clock, ms);
  }

  /**
   * The firewall call, bounded: undefined when it finished at once (openNow),
   * else a promise that resolves when it is over.  Never throws or rejects.
   */
  private callOpen(slot: Slot): Promise<void> | undefined {
    const { firewall, timeoutSec, callTimeoutMs } = this.o;
    let call: Promise<void> | undefined;
    try {
      call = firewall.openNow !== undefined ? firewall.openNow(slot.hole, timeoutSec) : firewall.open(slot.hole, timeoutSec);
    } catch (e) {
      this.openFailed(slot, e);
      return undefined;
    }
    if (call === undefined) return undefined;
    return this.within(call, callTimeoutMs).then(undefined, (e: unknown) => this.openFailed(slot, e));
  }

  private openFailed(slot: Slot, e: unknown): void {
    // The packet goes on regardless; the hole is closed at its time as usual,
    // so whatever the firewall may have done half-way is undone then.
    this.s.failed++;
    this.o.logger.log('err', `#${slot.hole.session} hole ${slot.hole.rule}: ${this.o.firewall.kind} open failed: ${describe(e)}`);
  }

  /** Close one hole; keep its number while the firewall says it is busy or fails. */
  private async close(slot: Slot): Promise<void> {
    const { logger, clock, firewall } = this.o;
    const h = slot.hole;
    slot.closing = true;
    let done = false;
    try {
      done = await this.within(firewall.close(h), this.o.callTimeoutMs * 5);
      if (!done) logger.log('debug', `#${h.session} hole ${h.rule} still carries connections; closing later`);
    } catch (e) {
      this.s.failed++;
      logger.log('err', `#${h.session} hole ${h.rule}: ${firewall.kind} close failed: ${describe(e)}; retrying`);
    }
    if (this.slots.get(h.rule) !== slot) return; // closeAll() got there first
    if (!done) {
      slot.retry = clock.setTimer(this.o.retryMs, () => {
        slot.retry = undefined;
        void this.close(slot);
      });
      return;
    }
    this.release(slot);
    logger.log('info', `#${h.session} hole ${h.rule} closed`);
  }

  private release(slot: Slot): void {
    const h = slot.hole;
    slot.armed++;
    slot.retry?.cancel();
    this.slots.delete(h.rule);
    if (h.rule < this.freeFrom) this.freeFrom = h.rule;
    const mine = this.perSession.get(h.session);
    if (mine !== undefined) {
      const i = mine.indexOf(slot);
      if (i >= 0) mine.splice(i, 1);
      if (mine.length === 0) this.perSession.delete(h.session);
    }
    this.exhaustedBurst = false;
    this.s.closed++;
    this.o.onEvent?.({ type: 'close', time: this.o.clock.now(), hole: h });
  }

  /** At stop: close every hole now, whatever its timer says. */
  async closeAll(): Promise<void> {
    const slots = [...this.slots.values()];
    for (const slot of slots) {
      slot.armed++;
      slot.retry?.cancel();
      try {
        await this.within(this.o.firewall.close(slot.hole), this.o.callTimeoutMs * 5);
      } catch (e) {
        this.o.logger.log('err', `#${slot.hole.session} hole ${slot.hole.rule}: close at stop failed: ${describe(e)}`);
      }
      if (this.slots.get(slot.hole.rule) === slot) this.release(slot);
    }
    if (this.slots.size === 0) {
      // nothing left to expire: no timer keeps the process alive
      this.expiryTimer?.cancel();
      this.expiryTimer = null;
      this.expiry = [];
    }
  }
}
