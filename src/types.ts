/**
 * The small interfaces every part of ftp6proxy is written against.
 *
 *   PacketSource  --packets-->  Engine (pure)  --decisions-->  HoleManager  --> Firewall
 *
 * Capture backends implement PacketSource, firewall backends implement
 * Firewall, and the daemon, the replay tool and the tests plug them together
 * with a Clock and a Logger.  Nothing here does I/O.
 */

export type Family = 4 | 6;

export type ModuleName = 'ipfw' | 'pf' | 'netgraph' | 'nftables';
export const MODULES: readonly ModuleName[] = ['ipfw', 'pf', 'netgraph', 'nftables'];

/** A hole admits one TCP connection from `src` (any port) to `dst`:`port`. */
export interface HoleSpec {
  family: Family;
  /** canonical text: dotted quad, or RFC 5952 for IPv6 */
  src: string;
  dst: string;
  port: number;
  /**
   * The same two addresses as bytes (4 or 16), when the maker has them (the
   * policy takes them from the session): a backend that wants bytes uses
   * these instead of parsing the text again.
   */
  srcBytes?: Uint8Array;
  dstBytes?: Uint8Array;
}

/** A hole with its place in the pool. */
export interface Hole extends HoleSpec {
  /** rule number from the pool, -b .. -b+-c-1 (ipfw rule, pf anchor suffix, nft slot) */
  rule: number;
  /** control session id, as logged `#<id>` */
  session: number;
}

/**
 * A firewall backend: small and transactional, like OpenBSD ftp-proxy's filter.h.
 * Every method may throw FtpProxyError; the caller logs and goes on.
 */
export interface Firewall {
  /** module name for log lines */
  readonly kind: string;
  /**
   * Set when every call settles within this many ms by itself (a time limit
   * of its own): the hole manager then arms no timer of its own for calls
   * it allows at least as long.
   */
  readonly settlesWithinMs?: number;
  /** Check the firewall is configured as we need.  Throws with a message that says what to add. */
  check(): Promise<void>;
  /** Remove whatever a previous run left: the rule range, the anchors, the set elements. */
  sweep(): Promise<void>;
  /** Put the hole in place.  Resolves only when packets matching it will pass. */
  open(hole: Hole, timeoutSec: number): Promise<void>;
  /**
   * open(), finished at once where the backend can: returns undefined when
   * the hole is in place already (nftables: the kernel's ACK came with the
   * send), throws when it failed already, and otherwise returns open()'s
   * promise.  The hole manager prefers it: a packet whose holes all open
   * this way gets its verdict in the same turn, with no promise between.
   */
  openNow?(hole: Hole, timeoutSec: number): Promise<void> | undefined;
  /**
   * Close the hole.  Safe to repeat.  Resolves `true` when the rule number may be
   * reused, `false` when it must stay held for now (ipfw with dyn_keep_states=0 and
   * live dynamic states): the caller asks again later.
   */
  close(hole: Hole): Promise<boolean>;
  /**
   * Encode the open of `hole` as open() would, and send nothing: a rehearsal
   * that keeps the encoder in the caches (src/warm.ts, -w).  Never throws,
   * touches no state that open() or close() reads.  Optional: backends whose
   * open runs a program have nothing worth keeping warm.
   */
  rehearse?(hole: Hole): void;
  /** Release handles at stop (after the holes were closed). */
  shutdown(): Promise<void>;
}

/** One captured control packet: an IPv4 or IPv6 packet from its IP header on. */
export interface Packet {
  /**
   * The packet from its IP header on.  Valid while the handler runs (until
   * it returns, not until its promise settles): a source may pass a view
   * into its receive buffer.  A handler copies what it keeps.
   */
  data: Uint8Array;
  /** capture time in ms, on the clock the engine runs on */
  time: number;
  /**
   * Set by the engine in selective mode (-s) on a server's packet: whether
   * the kernel must queue every packet the server sends on this connection
   * from now on (inside a multi-line reply).  NFQUEUE puts it in the
   * connection's mark with the verdict.
   */
  seeAll?: boolean;
}

/**
 * Called for every packet.  The source releases the packet (verdict ACCEPT,
 * reinjection) exactly once, after the returned promise settles, whether it
 * resolved or rejected, and also if the handler threw.
 */
export type PacketHandler = (pkt: Packet) => Promise<void> | void;

export interface PacketSource {
  readonly kind: string;
  /** Open the capture (as root).  Throws FtpProxyError with a clear message. */
  open(): Promise<void>;
  /**
   * Deliver packets until close() or the end of input.  Rejects when the capture
   * is lost (socket error), so the daemon can exit non-zero.
   */
  run(handler: PacketHandler): Promise<void>;
  /** Stop delivering; packets still held are released. */
  close(): Promise<void>;
}

export interface Timer {
  cancel(): void;
}

/** Milliseconds.  Real time in the daemon, virtual time in replay. */
export interface Clock {
  now(): number;
  setTimer(ms: number, fn: () => void): Timer;
}

/** syslog(3) levels used by ftp6proxy */
export type Level = 'err' | 'warning' | 'notice' | 'info' | 'debug';

export interface Logger {
  log(level: Level, msg: string): void;
  /**
   * Several lines at once, in order, where the logger can do better than
   * one log() each (StderrLogger: one write).  Optional.
   */
  logMany?(lines: ReadonlyArray<readonly [Level, string]>): void;
  /**
   * A line whose text is made by `make` only when it is written, or never
   * when the level is filtered out (DeferredLogger: after the verdict of the
   * packet that logged it).  Optional: logLazy() falls back on log(make()).
   */
  lazy?(level: Level, make: () => string): void;
  /** false when lines of this level are dropped (LevelFilter).  Optional. */
  wants?(level: Level): boolean;
}

/**
 * Log a line that the packet path makes while a control packet is held:
 * where the logger allows it, its text (addresses, escaping) is built after
 * the verdict, not before, and not at all when nobody wants that level.
 */
export function logLazy(logger: Logger, level: Level, make: () => string): void {
  if (logger.lazy !== undefined) logger.lazy(level, make);
  else logger.log(level, make());
}

/** What an FTP line announced. */
export type Announce = 'PORT' | 'EPRT' | 'LPRT' | '227' | '228' | '229';

/** The engine's output for one packet. */
export type Decision =
  | { type: 'hole'; session: number; via: Announce; hole: HoleSpec }
  | { type: 'refuse'; session: number; via: Announce; reason: string };

/** The one error class: `code` is a stable identifier, `fatal` ends the daemon. */
export class FtpProxyError extends Error {
  readonly code: string;
  readonly fatal: boolean;
  constructor(code: string, message: string, opts: { fatal?: boolean; cause?: unknown } = {}) {
    super(message);
    this.name = 'FtpProxyError';
    this.code = code;
    this.fatal = opts.fatal ?? false;
    if (opts.cause !== undefined) (this as { cause?: unknown }).cause = opts.cause;
  }
}
