/**
 * Logging the way the C daemon did it: syslog(3) to the local syslogd, with
 * ident `ftp6proxy`, the pid and the facility from `-f`.
 *
 * Why not a syslog package from npm: the planned syslog-pro (and its kin)
 * speak UDP, TCP or TLS to a remote server (RFC 5424 over the network).  A
 * daemon that chroots to /var/empty must instead talk to the *local* syslogd
 * over the AF_UNIX datagram socket (/dev/log on Linux, /var/run/log on
 * FreeBSD), opened before the chroot, exactly like libc's openlog(LOG_NDELAY).
 * Node has no AF_UNIX datagram sockets, so this goes through the native shim,
 * and the sockaddr_un is encoded here.
 */
import { FtpProxyError, Level, Logger } from './types';
import { Native, loadNative } from './native';

/**
 * Facility codes, <sys/syslog.h> (LOG_KERN = 0<<3 ... LOG_LOCAL7 = 23<<3);
 * the values here are the codes before the shift.  Linux and FreeBSD agree.
 */
export const FACILITIES: Readonly<Record<string, number>> = Object.freeze({
  kern: 0,
  user: 1,
  mail: 2,
  daemon: 3,
  auth: 4,
  syslog: 5,
  lpr: 6,
  news: 7,
  uucp: 8,
  cron: 9,
  authpriv: 10,
  ftp: 11,
  local0: 16,
  local1: 17,
  local2: 18,
  local3: 19,
  local4: 20,
  local5: 21,
  local6: 22,
  local7: 23,
});

/** FreeBSD only, sys/sys/syslog.h: LOG_NTP 12, LOG_SECURITY 13, LOG_CONSOLE 14. */
export const FREEBSD_FACILITIES: Readonly<Record<string, number>> = Object.freeze({
  ntp: 12,
  security: 13,
  console: 14,
});

/** Severities, <sys/syslog.h>: LOG_ERR 3 .. LOG_DEBUG 7. */
export const SEVERITIES: Readonly<Record<Level, number>> = Object.freeze({
  err: 3,
  warning: 4,
  notice: 5,
  info: 6,
  debug: 7,
});

/**
 * `-f <facility>` by name, as syslog.conf(5) spells it.  Throws FtpProxyError
 * (code `bad-facility`) for anything else, so the CLI can refuse it.
 */
export function parseFacility(name: string, platform: string = process.platform): number {
  const key = name.toLowerCase();
  if (Object.prototype.hasOwnProperty.call(FACILITIES, key)) return FACILITIES[key];
  if (platform === 'freebsd' && Object.prototype.hasOwnProperty.call(FREEBSD_FACILITIES, key)) {
    return FREEBSD_FACILITIES[key];
  }
  const known = Object.keys(FACILITIES).join(' ');
  throw new FtpProxyError('bad-facility', `unknown syslog facility "${name}" (known: ${known})`);
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** `Mmm dd hh:mm:ss` in local time, day padded with a space: strftime("%h %e %T") as glibc's syslog(3). */
export function rfc3164Time(d: Date): string {
  const day = d.getDate();
  const dd = day < 10 ? ` ${day}` : String(day);
  return `${MONTHS[d.getMonth()]} ${dd} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** One datagram as syslog(3) writes it locally: `<PRI>Mmm dd hh:mm:ss ident[pid]: msg`. */
export function formatSyslog(facility: number, level: Level, ident: string, pid: number, msg: string, when: Date): string {
  const pri = facility * 8 + SEVERITIES[level];
  return `<${pri}>${rfc3164Time(when)} ${ident}[${pid}]: ${msg}`;
}

/**
 * struct sockaddr_un for `path`.
 * - Linux (sys/un.h): sa_family_t sun_family (u16, host order), char sun_path[108].
 * - FreeBSD (sys/sys/un.h): u8 sun_len, u8 sun_family, char sun_path[104];
 *   sun_len is SUN_LEN(): the header plus strlen(path).
 * The path is NUL-terminated; the length passed to connect() covers it.
 */
export function encodeSockaddrUn(path: string, platform: string, afUnix = 1): Buffer {
  const p = Buffer.from(path, 'utf8');
  const max = platform === 'freebsd' ? 104 : 108;
  if (p.length >= max) throw new FtpProxyError('bad-path', `unix socket path too long: ${path}`);
  const b = Buffer.alloc(2 + p.length + 1);
  if (platform === 'freebsd') {
    b[0] = 2 + p.length;
    b[1] = afUnix;
  } else if (platform === 'linux') {
    // host order: copy the bytes of a native u16
    Buffer.from(new Uint16Array([afUnix]).buffer).copy(b, 0);
  } else {
    throw new FtpProxyError('unsupported', `sockaddr_un: unsupported platform ${platform}`);
  }
  p.copy(b, 2);
  return b;
}

/** The local syslogd's socket: _PATH_LOG in <syslog.h> (glibc "/dev/log", FreeBSD "/var/run/log"). */
export function defaultLogPath(platform: string): string {
  return platform === 'freebsd' ? '/var/run/log' : '/dev/log';
}

export interface SyslogOptions {
  /** facility code (see FACILITIES); default daemon */
  facility?: number;
  ident?: string;
  /** socket path; default per platform */
  path?: string;
  /** send debug lines too (`-d -d` sends them to stderr instead; default false) */
  debug?: boolean;
  native?: Native;
  platform?: string;
  pid?: () => number;
  now?: () => Date;
  /** where a line goes when syslogd cannot take it; default stderr */
  fallback?: (line: string) => void;
}

function writeStderr(line: string): void {
  try {
    process.stderr.write(line);
  } catch {
    // nowhere left to complain to
  }
}

/**
 * syslog(3) without libc.  log() never throws: when the socket is missing or
 * the send fails, the line goes to the fallback (stderr) instead.
 */
export class SyslogLogger implements Logger {
  private fd = -1;
  private readonly native: Native;
  private readonly platform: string;
  private readonly path: string;
  private readonly facility: number;
  private readonly ident: string;
  private readonly debug: boolean;
  private readonly pid: () => number;
  private readonly now: () => Date;
  private readonly fallback: (line: string) => void;
  /** lines that went to the fallback instead of syslogd */
  fallbacks = 0;

  constructor(opts: SyslogOptions = {}) {
    this.native = opts.native ?? loadNative();
    this.platform = opts.platform ?? this.native.platform;
    this.path = opts.path ?? defaultLogPath(this.platform);
    this.facility = opts.facility ?? FACILITIES.daemon;
    this.ident = opts.ident ?? 'ftp6proxy';
    this.debug = opts.debug ?? false;
    this.pid = opts.pid ?? (() => process.pid);
    this.now = opts.now ?? (() => new Date());
    this.fallback = opts.fallback ?? writeStderr;
  }

  /**
   * Open and connect the socket, as openlog(LOG_NDELAY) does.  Call it before
   * the chroot: the connected socket keeps working inside it.  Returns false
   * (and logs to the fallback later) when syslogd is not there.
   */
  open(): boolean {
    if (this.fd >= 0) return true;
    const fd = this.connectNew();
    if (fd < 0) return false;
    this.fd = fd;
    return true;
  }

  /**
   * SIGHUP: reconnect, in case syslogd was restarted.  Inside a chroot the
   * path no longer resolves (or names something else), so a failed reconnect
   * keeps the old socket: it still reaches the syslogd it was connected to,
   * and a new syslogd is out of reach for a chrooted process anyway.
   */
  reopen(): boolean {
    const fd = this.connectNew();
    if (fd < 0) return this.fd >= 0;
    this.closeFd();
    this.fd = fd;
    return true;
  }

  close(): void {
    this.closeFd();
  }

  log(level: Level, msg: string): void {
    if (level === 'debug' && !this.debug) return;
    let line: string;
    try {
      line = formatSyslog(this.facility, level, this.ident, this.pid(), msg, this.now());
    } catch {
      return;
    }
    // glibc caps a message at its buffer; keep datagrams well under any syslogd's line limit
    const data = Buffer.from(line, 'utf8').subarray(0, 2048);
    if (this.trySend(data)) return;
    // syslogd restarted (ECONNREFUSED) or was not there: reconnect once, as syslog(3) does
    if (this.reopenAfterFailure() && this.trySend(data)) return;
    this.fallbacks++;
    try {
      this.fallback(`${this.ident}[${this.pid()}]: ${level}: ${msg}\n`);
    } catch {
      // never throw from log()
    }
  }

  private trySend(data: Buffer): boolean {
    if (this.fd < 0 && !this.open()) return false;
    try {
      this.native.sendto(this.fd, data, null, this.native.constants.MSG_DONTWAIT);
      return true;
    } catch {
      return false;
    }
  }

  private reopenAfterFailure(): boolean {
    const fd = this.connectNew();
    if (fd < 0) return false;
    this.closeFd();
    this.fd = fd;
    return true;
  }

  private connectNew(): number {
    let fd = -1;
    try {
      const c = this.native.constants;
      fd = this.native.socket(c.AF_UNIX, c.SOCK_DGRAM, 0);
      this.native.connect(fd, encodeSockaddrUn(this.path, this.platform, c.AF_UNIX));
      return fd;
    } catch {
      // ENOENT (no syslogd), ECONNREFUSED (stale socket), EACCES: caller falls back
      if (fd >= 0) {
        try {
          this.native.close(fd);
        } catch {
          // already gone
        }
      }
      return -1;
    }
  }

  private closeFd(): void {
    if (this.fd < 0) return;
    try {
      this.native.close(this.fd);
    } catch {
      // nothing to do
    }
    this.fd = -1;
  }
}

/** `-d -d`: every line, debug included, to stderr as `ftp6proxy[pid]: level: msg`. */
export class StderrLogger implements Logger {
  constructor(
    private readonly write: (line: string) => void = writeStderr,
    private readonly ident = 'ftp6proxy',
    private readonly pid: () => number = () => process.pid,
  ) {}

  log(level: Level, msg: string): void {
    this.logMany([[level, msg]]);
  }

  /** The lines in one write: a packet's few lines cost one system call, not one each. */
  logMany(lines: ReadonlyArray<readonly [Level, string]>): void {
    if (lines.length === 0) return;
    const head = `${this.ident}[${this.pid()}]: `;
    let text = '';
    for (const [level, msg] of lines) text += `${head}${level}: ${msg}\n`;
    try {
      this.write(text);
    } catch {
      // never throw from log()
    }
  }
}

/**
 * Hands each line to `inner` once the code now running is done (a
 * microtask: for a packet whose hole opened at once, after its verdict,
 * which is given in the same run).  The packet path logs while a control
 * packet is held; the write(2) to stderr or the datagram to syslogd wakes
 * the reader, which may take the CPU from the daemon, and that time was the
 * held packet's delay.  Deferred, the lines go out after the verdict, in
 * the order they were logged.  (A microtask rather than setImmediate: in a
 * process that has just woken up, scheduling an immediate cost the held
 * packet 20 µs, traced.)  A lazy() line's text is made then too, and a line of a level
 * that `inner` drops (LevelFilter: debug without -d -d) is dropped at once,
 * unmade.  At most `max` lines wait; beyond that they are counted and the
 * count is logged with the next flush.  flush() writes at once (at stop, at exit).
 */
export class DeferredLogger implements Logger {
  /** lines in order: a text, or the function that makes it (lazy) */
  private pending: Array<[Level, string | (() => string)]> = [];
  private scheduled = false;
  private dropped = 0;
  private readonly flushNow = (): void => this.flush();

  constructor(
    private readonly inner: Logger,
    private readonly max = 10_000,
    private readonly schedule: (fn: () => void) => void = queueMicrotask,
  ) {}

  log(level: Level, msg: string): void {
    this.push(level, msg);
  }

  /** The text is made at flush time, and not at all when `inner` drops the level. */
  lazy(level: Level, make: () => string): void {
    this.push(level, make);
  }

  wants(level: Level): boolean {
    return this.inner.wants?.(level) ?? true;
  }

  private push(level: Level, line: string | (() => string)): void {
    if (!this.wants(level)) return;
    if (this.pending.length >= this.max) {
      this.dropped++;
      return;
    }
    this.pending.push([level, line]);
    if (!this.scheduled) {
      this.scheduled = true;
      this.schedule(this.flushNow);
    }
  }

  flush(): void {
    this.scheduled = false;
    const pending = this.pending;
    this.pending = [];
    const lines: Array<[Level, string]> = [];
    for (const [level, line] of pending) {
      let msg: string;
      try {
        msg = typeof line === 'string' ? line : line();
      } catch (e) {
        // never throw from log(), nor lose the line entirely
        msg = `(log line failed: ${e instanceof Error ? e.message : String(e)})`;
      }
      lines.push([level, msg]);
    }
    if (this.dropped > 0) {
      lines.push(['warning', `${this.dropped} log lines dropped: more than ${this.max} in one turn of the event loop`]);
      this.dropped = 0;
    }
    if (this.inner.logMany !== undefined) {
      try {
        this.inner.logMany(lines);
      } catch {
        // never throw from log()
      }
      return;
    }
    for (const [level, msg] of lines) {
      try {
        this.inner.log(level, msg);
      } catch {
        // never throw from log()
      }
    }
  }
}

/** Passes lines at `min` or more severe (err is the most severe). */
export class LevelFilter implements Logger {
  constructor(private readonly inner: Logger, private readonly min: Level) {}

  log(level: Level, msg: string): void {
    if (this.wants(level)) this.inner.log(level, msg);
  }

  wants(level: Level): boolean {
    return SEVERITIES[level] <= SEVERITIES[this.min];
  }
}

/** Every line to each logger; one logger that throws does not stop the others. */
export class TeeLogger implements Logger {
  private readonly loggers: Logger[];
  constructor(...loggers: Logger[]) {
    this.loggers = loggers;
  }

  log(level: Level, msg: string): void {
    for (const l of this.loggers) {
      try {
        l.log(level, msg);
      } catch {
        // never throw from log()
      }
    }
  }
}
