/**
 * Privilege separation for firewalls that check privilege on every call
 * (FreeBSD ipfw: ipfw_ctl3() calls priv_check(PRIV_NETINET_IPFW) on each
 * IP_FW3 request; pfctl needs root too).
 *
 *   privileged parent (root, no chroot)          unprivileged child (-u, chroot -r)
 *     real Firewall, pidfile, sweep               capture, FTP parsing, HoleManager
 *     PrivsepServer  <==== line protocol ====>    PrivsepClientFirewall
 *
 * The child may be compromised by hostile packets, so the parent trusts
 * nothing it says: every request is checked against the pool and parsed
 * strictly before the real Firewall sees it.  The parent is started by the
 * lead's main.ts; it spawns the child as the same script with
 * FTP6PROXY_PRIVSEP_CHILD=1 and the channel on fds 3 (parent -> child) and
 * 4 (child -> parent).
 *
 * Protocol, one ASCII line each way per request, answered in order:
 *   child:  open RULE FAMILY SRC DST PORT TIMEOUT     parent: ok RULE | err RULE reason
 *   child:  close RULE                                parent: ok RULE | held RULE | err RULE reason
 *   child:  ready                                     (no reply; start-up done)
 * `held` means the rule number must not be reused yet (Firewall.close() false).
 */
import * as net from 'net';
import { Readable, Writable } from 'stream';
import { Family, Firewall, FtpProxyError, Hole, Logger } from './types';
import { formatAddr, parseAddr } from './addr';

export const PRIVSEP_CHILD_ENV = 'FTP6PROXY_PRIVSEP_CHILD';
/** descriptors of the channel in the child */
export const PRIVSEP_FD_IN = 3;
export const PRIVSEP_FD_OUT = 4;
/** longest request line, newline excluded: two IPv6 literals fit with room to spare */
export const MAX_LINE = 200;
export const MAX_TIMEOUT_SEC = 3600;

export function isPrivsepChild(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[PRIVSEP_CHILD_ENV] === '1';
}

export interface Pool {
  base: number;
  count: number;
}

export type Request =
  | { verb: 'open'; rule: number; family: Family; src: string; dst: string; port: number; timeout: number }
  | { verb: 'close'; rule: number }
  | { verb: 'ready' };

export type Parsed = { ok: true; req: Request } | { ok: false; rule: string; reason: string };

const DECIMAL = /^(0|[1-9][0-9]{0,9})$/;

function decimal(s: string): number | null {
  return DECIMAL.test(s) ? Number(s) : null;
}

/** A literal address of `family` in canonical text, neither unspecified nor multicast. */
function checkAddr(family: Family, text: string): string | null {
  const b = parseAddr(family, text);
  if (b === null) return 'not a literal address of that family';
  if (formatAddr(family, b) !== text) return 'address not in canonical form';
  if (b.every((x) => x === 0)) return 'unspecified address';
  if (family === 4 ? (b[0] & 0xf0) === 0xe0 || b[0] === 255 : b[0] === 0xff) return 'multicast or broadcast address';
  return null;
}

/**
 * Parse and validate one request line (without its newline).  Pure: the
 * table-driven tests feed it hostile lines.  `rule` in a refusal is the
 * request's rule token if it was a clean number, else "-".
 */
export function parseRequest(line: string, pool: Pool): Parsed {
  if (line.length > MAX_LINE) return { ok: false, rule: '-', reason: 'line too long' };
  // printable ASCII, single spaces between tokens, nothing else
  if (!/^[\x21-\x7e]+( [\x21-\x7e]+)*$/.test(line)) return { ok: false, rule: '-', reason: 'malformed line' };
  const t = line.split(' ');
  const ruleTok = t.length > 1 && DECIMAL.test(t[1]) ? t[1] : '-';
  const bad = (reason: string): Parsed => ({ ok: false, rule: ruleTok, reason });
  const checkRule = (): number | string => {
    const r = decimal(t[1]);
    if (r === null) return 'bad rule number';
    if (r < pool.base || r >= pool.base + pool.count) return 'rule outside the pool';
    return r;
  };
  switch (t[0]) {
    case 'ready':
      return t.length === 1 ? { ok: true, req: { verb: 'ready' } } : bad('ready takes no arguments');
    case 'close': {
      if (t.length !== 2) return bad('close takes 1 argument');
      const r = checkRule();
      return typeof r === 'string' ? bad(r) : { ok: true, req: { verb: 'close', rule: r } };
    }
    case 'open': {
      if (t.length !== 7) return bad('open takes 6 arguments');
      const r = checkRule();
      if (typeof r === 'string') return bad(r);
      if (t[2] !== '4' && t[2] !== '6') return bad('family must be 4 or 6');
      const family: Family = t[2] === '4' ? 4 : 6;
      const srcWhy = checkAddr(family, t[3]);
      if (srcWhy !== null) return bad(`source: ${srcWhy}`);
      const dstWhy = checkAddr(family, t[4]);
      if (dstWhy !== null) return bad(`destination: ${dstWhy}`);
      const port = decimal(t[5]);
      if (port === null || port < 1024 || port > 65535) return bad('port must be 1024-65535');
      const timeout = decimal(t[6]);
      if (timeout === null || timeout < 1 || timeout > MAX_TIMEOUT_SEC) return bad(`timeout must be 1-${MAX_TIMEOUT_SEC}`);
      return { ok: true, req: { verb: 'open', rule: r, family, src: t[3], dst: t[4], port, timeout } };
    }
    default:
      return bad('unknown verb');
  }
}

/** The request line for a hole, as the client sends it. */
export function formatOpen(hole: Hole, timeoutSec: number): string {
  return `open ${hole.rule} ${hole.family} ${hole.src} ${hole.dst} ${hole.port} ${Math.round(timeoutSec)}`;
}

/** Splits a byte stream into lines, refusing (once per line) any longer than `max`. */
export class LineSplitter {
  private buf = '';
  private discarding = false;
  constructor(private readonly max: number, private readonly onLine: (line: string) => void, private readonly onOverlong: () => void) {}

  push(chunk: string): void {
    let data = chunk;
    for (;;) {
      const nl = data.indexOf('\n');
      if (nl < 0) {
        if (!this.discarding) {
          this.buf += data;
          if (this.buf.length > this.max) {
            this.buf = '';
            this.discarding = true;
            this.onOverlong();
          }
        }
        return;
      }
      const piece = data.slice(0, nl);
      data = data.slice(nl + 1);
      if (this.discarding) {
        this.discarding = false;
        continue;
      }
      const line = this.buf + piece;
      this.buf = '';
      if (line.length > this.max) this.onOverlong();
      else this.onLine(line);
    }
  }
}

export interface ServerOptions {
  pool: Pool;
  logger: Logger;
  /** called when the child says `ready` */
  onReady?: () => void;
  /** called when the channel ends (the child exited or closed it) */
  onEnd?: () => void;
}

/**
 * The privileged side.  Requests are handled one at a time, in order, so
 * replies come back in the order of the requests.
 */
export class PrivsepServer {
  private readonly holes = new Map<number, Hole>();
  private chain: Promise<void> = Promise.resolve();
  private ended = false;
  /** requests refused by validation (for the status summary) */
  refused = 0;

  constructor(private readonly fw: Firewall, input: Readable, private readonly output: Writable, private readonly opts: ServerOptions) {
    input.setEncoding('latin1');
    const splitter = new LineSplitter(
      MAX_LINE,
      (line) => this.enqueue(line),
      () => this.enqueue(null),
    );
    input.on('data', (s: string) => splitter.push(s));
    input.on('end', () => this.end());
    input.on('error', () => this.end());
    output.on('error', () => this.end());
  }

  /** Holes opened for the child and not closed yet. */
  openHoles(): Hole[] {
    return [...this.holes.values()];
  }

  /** At stop: close every hole the child left open.  Never rejects. */
  async closeAll(): Promise<void> {
    await this.chain;
    for (const [rule, hole] of [...this.holes]) {
      try {
        await this.fw.close(hole);
      } catch (e) {
        this.opts.logger.log('err', `privsep: closing rule ${rule} at stop failed: ${(e as Error).message}`);
      }
      this.holes.delete(rule);
    }
  }

  /** Resolves when every request received so far has been answered. */
  idle(): Promise<void> {
    return this.chain;
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.opts.onEnd?.();
  }

  private enqueue(line: string | null): void {
    this.chain = this.chain.then(() => this.handle(line)).catch(() => undefined);
  }

  private reply(s: string): void {
    if (this.ended) return;
    try {
      this.output.write(`${s}\n`);
    } catch {
      this.end();
    }
  }

  private async handle(line: string | null): Promise<void> {
    const p: Parsed = line === null ? { ok: false, rule: '-', reason: 'line too long' } : parseRequest(line, this.opts.pool);
    if (!p.ok) {
      this.refused++;
      // the escaped request is logged: this is the one place a compromised child shows
      const shown = line === null ? '(overlong)' : JSON.stringify(line.slice(0, 80));
      this.opts.logger.log('warning', `privsep: refused request ${shown}: ${p.reason}`);
      this.reply(`err ${p.rule} ${p.reason}`);
      return;
    }
    const req = p.req;
    if (req.verb === 'ready') {
      this.opts.onReady?.();
      return;
    }
    if (req.verb === 'open') {
      if (this.holes.has(req.rule)) {
        this.refused++;
        this.reply(`err ${req.rule} rule in use`);
        return;
      }
      const hole: Hole = { family: req.family, src: req.src, dst: req.dst, port: req.port, rule: req.rule, session: 0 };
      try {
        await this.fw.open(hole, req.timeout);
        this.holes.set(req.rule, hole);
        this.reply(`ok ${req.rule}`);
      } catch (e) {
        this.reply(`err ${req.rule} ${oneLine((e as Error).message)}`);
      }
      return;
    }
    const hole = this.holes.get(req.rule);
    if (hole === undefined) {
      // closing is safe to repeat: nothing of ours is there
      this.reply(`ok ${req.rule}`);
      return;
    }
    try {
      const free = await this.fw.close(hole);
      if (free) this.holes.delete(req.rule);
      this.reply(`${free ? 'ok' : 'held'} ${req.rule}`);
    } catch (e) {
      this.reply(`err ${req.rule} ${oneLine((e as Error).message)}`);
    }
  }
}

function oneLine(s: string): string {
  return s.replace(/[^\x20-\x7e]+/g, ' ').slice(0, 160);
}

interface Pending {
  rule: number;
  resolve: (v: 'ok' | 'held') => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export interface ClientOptions {
  /** module name of the real firewall, for log lines; default "privsep" */
  kind?: string;
  /** how long to wait for a reply; default 5000 ms */
  timeoutMs?: number;
}

/**
 * The unprivileged side: a Firewall that asks the parent.  check() and
 * sweep() are no-ops here because the parent does them as root before it
 * starts the child.
 */
export class PrivsepClientFirewall implements Firewall {
  readonly kind: string;
  private readonly pending: Pending[] = [];
  private readonly timeoutMs: number;
  private closed = false;

  constructor(private readonly input: Readable, private readonly output: Writable, opts: ClientOptions = {}) {
    this.kind = opts.kind ?? 'privsep';
    this.timeoutMs = opts.timeoutMs ?? 5000;
    input.setEncoding('latin1');
    const splitter = new LineSplitter(MAX_LINE, (l) => this.onReply(l), () => this.fail('overlong reply from the privileged parent'));
    input.on('data', (s: string) => splitter.push(s));
    input.on('end', () => this.fail('the privileged parent closed the channel'));
    input.on('error', (e: Error) => this.fail(`privsep channel: ${e.message}`));
    output.on('error', (e: Error) => this.fail(`privsep channel: ${e.message}`));
  }

  async check(): Promise<void> {
    // done by the privileged parent
  }

  async sweep(): Promise<void> {
    // done by the privileged parent
  }

  async open(hole: Hole, timeoutSec: number): Promise<void> {
    await this.request(hole.rule, formatOpen(hole, Math.max(1, timeoutSec)));
  }

  async close(hole: Hole): Promise<boolean> {
    return (await this.request(hole.rule, `close ${hole.rule}`)) === 'ok';
  }

  /** Close the channel; the parent sees its end and closes what is left open. */
  async shutdown(): Promise<void> {
    this.fail('privsep channel shut down');
    this.output.end();
    // without this the open read side would keep the child's event loop alive
    if (this.input !== (this.output as unknown)) this.input.destroy();
  }

  /** Tell the parent start-up is done (capture open, privileges dropped). */
  notifyReady(): void {
    if (!this.closed) this.output.write('ready\n');
  }

  private request(rule: number, line: string): Promise<'ok' | 'held'> {
    if (this.closed) return Promise.reject(new FtpProxyError('privsep', 'privsep channel is closed', { fatal: true }));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        // a lost reply desynchronises the FIFO: treat the channel as broken
        this.fail(`no reply from the privileged parent within ${this.timeoutMs} ms`);
      }, this.timeoutMs);
      this.pending.push({ rule, resolve, reject, timer });
      this.output.write(`${line}\n`);
    });
  }

  private onReply(line: string): void {
    const p = this.pending.shift();
    if (p === undefined) {
      this.fail(`unexpected reply from the privileged parent: ${oneLine(line)}`);
      return;
    }
    clearTimeout(p.timer);
    const m = /^(ok|held|err) (\d+|-)(?: (.*))?$/.exec(line);
    if (m === null || (m[2] !== '-' && Number(m[2]) !== p.rule)) {
      p.reject(new FtpProxyError('privsep', `bad reply from the privileged parent: ${oneLine(line)}`));
      this.fail('privsep channel out of step');
      return;
    }
    if (m[1] === 'err') p.reject(new FtpProxyError('privsep', `privileged parent refused rule ${p.rule}: ${m[3] ?? ''}`));
    else p.resolve(m[1] as 'ok' | 'held');
  }

  private fail(why: string): void {
    this.closed = true;
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(new FtpProxyError('privsep', why, { fatal: true }));
    }
  }
}

/** In the child: the channel's two ends as streams (call before the chroot). */
export function openChildChannel(): { input: net.Socket; output: net.Socket } {
  const input = new net.Socket({ fd: PRIVSEP_FD_IN, readable: true, writable: false });
  const output = new net.Socket({ fd: PRIVSEP_FD_OUT, readable: false, writable: true });
  return { input, output };
}

/**
 * In the parent: spawn options for the child.  Usage:
 *   const o = privsepSpawnOptions();
 *   const child = spawn(o.command, o.args, o.options);
 *   const server = new PrivsepServer(fw, child.stdio[4] as Readable, child.stdio[3] as Writable, {...});
 * stderr is inherited so the child's start-up errors reach the parent's stderr.
 */
export function privsepSpawnOptions(env: NodeJS.ProcessEnv = process.env): {
  command: string;
  args: string[];
  options: { stdio: ['ignore', 'ignore', 'inherit', 'pipe', 'pipe']; env: NodeJS.ProcessEnv };
} {
  const childEnv: NodeJS.ProcessEnv = { ...env, [PRIVSEP_CHILD_ENV]: '1' };
  delete childEnv.FTP6PROXY_DAEMON_CHILD;
  return {
    command: process.execPath,
    args: [...process.execArgv, ...process.argv.slice(1)],
    options: { stdio: ['ignore', 'ignore', 'inherit', 'pipe', 'pipe'], env: childEnv },
  };
}
