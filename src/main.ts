/**
 * ftp6proxy: the daemon's control flow, top to bottom, the way the C daemon's
 * main() reads:
 *
 *   options -> (background) -> open capture and firewall -> drop privileges
 *           -> event loop -> cleanup
 *
 * Processes:
 *   -d -d        one process: foreground, debug log to stderr, no chroot,
 *                privileges kept.
 *   otherwise    a monitor and a worker.  The monitor stays root outside the
 *                chroot and never parses a packet: it checks and sweeps the
 *                firewall, writes and removes the pidfile, forwards signals,
 *                and sweeps again when the worker ends, however it ends (a
 *                crash leaves nothing behind).  For the ipfw, pf and netgraph
 *                modules it also runs the firewall commands for the worker,
 *                after validating each request (FreeBSD checks privilege on
 *                every ipfw call).  The worker opens the capture as root, then
 *                chroots to -r and becomes -u; on Linux it keeps CAP_NET_ADMIN
 *                only, which nfnetlink checks on every message.
 *   without -d   the command starts the monitor in the background and returns
 *                0 once the worker reported ready, 1 with the error otherwise.
 */
import { spawn, ChildProcess } from 'child_process';
import { Readable, Writable } from 'stream';
import { createFirewall, createSource, defaultModule, unsupportedReason } from './backends';
import { RealClock } from './clock';
import { DaemonReadiness, isDaemonChild, launchInBackground } from './daemonize';
import { Engine } from './engine';
import { RecordingFirewall } from './firewall/recording';
import { HoleManager } from './holes';
import { Options, parseOptions, SYNOPSIS, usageText, UsageError } from './options';
import { PidFile } from './pidfile';
import { checkPrivilegeTargets, dropPrivileges } from './privileges';
import { openChildChannel, PrivsepClientFirewall, PrivsepServer } from './privsep';
import { ControlProxy } from './proxy';
import { KeepWarm } from './warm';
import { DeferredLogger, LevelFilter, parseFacility, StderrLogger, SyslogLogger } from './syslog';
import { Firewall, Logger, PacketSource } from './types';

export const EXIT_OK = 0;
export const EXIT_START = 1;
export const EXIT_LOST = 2;

/** set in the worker's environment; its channel to the monitor is on fds 3 and 4 (src/privsep.ts) */
const WORKER_ENV = 'FTP6PROXY_WORKER';

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export async function main(argv: string[]): Promise<number> {
  // 1. Options: refused before anything is opened.
  let o: Options;
  try {
    o = parseOptions(argv, defaultModule());
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`ftp6proxy: ${e.message}\n`);
    if (e.showUsage) process.stderr.write(`${SYNOPSIS}\n`);
    return EXIT_START;
  }
  if (o.help) {
    process.stdout.write(usageText(o.module));
    return EXIT_OK;
  }
  if (process.env[WORKER_ENV] === '1') return worker(o);

  // 2. Check what we will need later, so that a wrong module, a bad -u, -r
  //    or -i fails now, in the foreground, with a clear message.
  const pidfile = o.debug === 0 ? new PidFile(o.pidfile) : undefined;
  const unsupported = unsupportedReason(o.module);
  if (unsupported !== null) {
    process.stderr.write(`ftp6proxy: ${unsupported}\n`);
    return EXIT_START;
  }
  try {
    if (o.debug < 2) checkPrivilegeTargets(o.user, o.rootDir);
    pidfile?.check();
  } catch (e) {
    process.stderr.write(`ftp6proxy: ${message(e)}\n`);
    return EXIT_START;
  }

  // 3. Background: the launcher returns once the daemon is really up.
  if (o.debug === 0 && !isDaemonChild()) return launchInBackground();
  if (o.debug === 2) return single(o);
  return monitor(o, pidfile);
}

/** The logger of the monitor and the worker: syslog(3), opened before any chroot. */
function openLog(o: Options): SyslogLogger {
  const log = new SyslogLogger({ facility: parseFacility(o.facility), debug: false });
  log.open();
  return log;
}

function stats(engine: Engine, holes: HoleManager, proxy: ControlProxy, warm: KeepWarm | null): string {
  const e = engine.stats();
  const h = holes.stats();
  return `status: ${e.sessions} sessions, holes ${h.inUse} in use ${h.free} free, ` +
    `${proxy.counters.packets} packets, ${h.opened} opened, ${proxy.counters.refused} refused, ` +
    `${h.exhausted} pool exhausted, ${h.failed} firewall failures` +
    `${warm === null ? '' : `, ${warm.rehearsals} rehearsals`}`;
}

/** Shadow mode (-n): log what would be done, touch no firewall. */
function shadowFirewall(logger: Logger): Firewall {
  return new RecordingFirewall({
    onOp: (op) => {
      const h = op.hole;
      if (op.op === 'open' && h) logger.log('notice', `shadow: would open ${h.rule} ${h.src} ${h.dst} ${h.port}`);
      if (op.op === 'close' && h) logger.log('notice', `shadow: would close ${h.rule}`);
    },
  });
}

interface RunOptions {
  o: Options;
  /** the capture, already open (as root) */
  source: PacketSource;
  logger: Logger;
  firewall: Firewall;
  /** called after capture and firewall are open, before packets flow */
  beforeLoop: () => void;
}

/**
 * Check the firewall, run the event loop over the open capture, close every
 * hole at the end.  Resolves with the exit status.
 */
async function serve({ o, source, logger, firewall, beforeLoop }: RunOptions): Promise<number> {
  const clock = new RealClock();
  await firewall.check();
  // Every line of the running daemon goes out after the turn that logged it,
  // so the packet path's lines follow the verdict (see DeferredLogger); one
  // queue keeps them in order with the start, status and stop lines.
  const log = new DeferredLogger(logger);
  const flushAtExit = (): void => log.flush();
  process.on('exit', flushAtExit);
  const holes = new HoleManager({ firewall, clock, logger: log, base: o.base, count: o.count, timeoutSec: o.timeout });
  const engine = new Engine({ logger: log, pendingFor: (s) => holes.pendingFor(s), selective: o.seeAllMark !== 0 });
  const proxy = new ControlProxy(engine, holes);
  const warm = o.warmMs > 0
    ? new KeepWarm({ intervalMs: o.warmMs, clock, firewall, selective: o.seeAllMark !== 0, timeoutSec: o.timeout, logger: log })
    : null;
  beforeLoop();

  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    log.log('notice', `${why}: closing ${holes.stats().inUse} holes and stopping`);
    await source.close();
  };
  const expiry = setInterval(() => engine.expire(clock.now()), 10_000);
  expiry.unref();
  const onTerm = () => void stop('SIGTERM');
  const onInt = () => void stop('SIGINT');
  const onStatus = () => log.log('notice', stats(engine, holes, proxy, warm));
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onInt);
  process.on('SIGUSR1', onStatus);
  if (hasSiginfo()) process.on('SIGINFO' as NodeJS.Signals, onStatus);

  log.log('notice', `started: module ${o.module}, ${o.module === 'nftables' ? 'queue' : o.module === 'netgraph' ? 'hook' : 'divert port'} ${o.port}, ` +
    `rules ${o.base}..${o.base + o.count - 1}, timeout ${o.timeout}s${o.shadow ? ', shadow mode' : ''}` +
    `${o.seeAllMark !== 0 ? `, selective queueing (ct mark 0x${o.seeAllMark.toString(16)})` : ''}` +
    `${o.warmMs > 0 ? `, packet path kept warm every ${o.warmMs} ms while active` : ''}`);
  let code = EXIT_OK;
  try {
    await source.run(warm === null ? proxy.handle : warm.wrap(proxy.handle));
  } catch (e) {
    log.log('err', `capture lost: ${message(e)}`);
    code = EXIT_LOST;
  }
  clearInterval(expiry);
  warm?.stop();
  await holes.closeAll();
  try {
    await firewall.shutdown();
  } catch (e) {
    log.log('err', `firewall shutdown: ${message(e)}`);
  }
  log.log('notice', `stopped: ${stats(engine, holes, proxy, warm)}`);
  log.flush();
  process.removeListener('exit', flushAtExit);
  return code;
}

function hasSiginfo(): boolean {
  return process.platform === 'freebsd' || process.platform === 'darwin';
}

/** -d -d: everything in this process, privileges kept, debug to stderr. */
async function single(o: Options): Promise<number> {
  const logger = new StderrLogger();
  try {
    // The capture first: on the wrong OS, "divert(4) is FreeBSD-only" says more than a missing ipfw(8).
    const source = createSource(o, logger);
    await source.open();
    const firewall = o.shadow ? shadowFirewall(logger) : createFirewall(o, logger);
    await firewall.check();
    await firewall.sweep();
    const code = await serve({ o, source, logger, firewall, beforeLoop: () => undefined });
    await firewall.sweep().catch((e: unknown) => logger.log('err', `sweep at stop: ${message(e)}`));
    return code;
  } catch (e) {
    logger.log('err', message(e));
    return EXIT_START;
  }
}

/** The worker: capture as root, then chroot and -u; parses every packet. */
async function worker(o: Options): Promise<number> {
  const log = openLog(o);
  const logger = new LevelFilter(log, 'info');
  // The channel to the monitor (fds 3 and 4), opened before the chroot.
  const channel = openChildChannel();
  try {
    let firewall: Firewall;
    if (o.shadow) firewall = shadowFirewall(logger);
    else if (o.module === 'nftables') firewall = createFirewall(o, logger);
    else firewall = new PrivsepClientFirewall(channel.input, channel.output, { kind: o.module });
    process.on('SIGHUP', () => log.reopen());
    const source = createSource(o, logger);
    await source.open();
    const code = await serve({
      o,
      source,
      logger,
      firewall,
      beforeLoop: () => {
        const r = dropPrivileges({ user: o.user, rootDir: o.rootDir, keepNetAdmin: o.module === 'nftables' && !o.shadow });
        logger.log('info', `worker running as ${o.user} (uid ${r.uid}), chrooted to ${o.rootDir}`);
        channel.output.write('ready\n');
      },
    });
    channel.output.end();
    channel.input.destroy();
    return code;
  } catch (e) {
    const msg = message(e);
    logger.log('err', msg);
    process.stderr.write(`ftp6proxy: ${msg}\n`);
    return EXIT_START;
  }
}

/** The monitor: root, outside the chroot, never parses a packet. */
async function monitor(o: Options, pidfile: PidFile | undefined): Promise<number> {
  const readiness = new DaemonReadiness();
  const log = openLog(o);
  const logger = new LevelFilter(log, 'info');
  const fail = (msg: string): number => {
    logger.log('err', msg);
    if (readiness.pending) readiness.notifyError(msg);
    else process.stderr.write(`ftp6proxy: ${msg}\n`);
    return EXIT_START;
  };
  let firewall: Firewall;
  try {
    pidfile?.create();
    firewall = o.shadow ? shadowFirewall(logger) : createFirewall(o, logger);
    await firewall.check();
    await firewall.sweep();
  } catch (e) {
    pidfile?.remove();
    return fail(message(e));
  }

  const child: ChildProcess = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    env: { ...process.env, [WORKER_ENV]: '1' },
    stdio: ['ignore', 'inherit', 'pipe', 'pipe', 'pipe'],
  });
  // The worker's stderr: passed on, and its last words kept for the launcher.
  let lastWords = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    lastWords = (lastWords + text).slice(-2000);
    try {
      process.stderr.write(text);
    } catch {
      // no stderr in the background
    }
  });
  const server = new PrivsepServer(firewall, child.stdio[4] as Readable, child.stdio[3] as Writable, {
    pool: { base: o.base, count: o.count },
    logger,
    onReady: () => {
      logger.log('notice', `worker ${child.pid} ready`);
      readiness.notifyReady();
    },
  });

  const forward = (sig: NodeJS.Signals) => () => {
    try {
      child.kill(sig);
    } catch {
      // already gone
    }
  };
  process.on('SIGTERM', forward('SIGTERM'));
  process.on('SIGINT', forward('SIGTERM'));
  process.on('SIGHUP', () => {
    // The monitor is outside the chroot, so a restarted syslogd is reachable
    // again; the worker keeps its connection when it cannot reconnect.
    const ok = log.reopen();
    logger.log(ok ? 'notice' : 'err', `SIGHUP: log ${ok ? 'reopened' : 'cannot reach syslogd'}`);
    forward('SIGHUP')();
  });
  process.on('SIGUSR1', forward('SIGUSR1'));
  if (hasSiginfo()) process.on('SIGINFO' as NodeJS.Signals, forward('SIGUSR1'));

  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once('exit', (c, s) => resolve([c, s])));
  // However the worker ended, leave nothing behind.
  await server.closeAll();
  try {
    await firewall.sweep();
    await firewall.shutdown();
  } catch (e) {
    logger.log('err', `sweep at stop: ${message(e)}`);
  }
  pidfile?.remove();
  if (readiness.pending) {
    const said = /ftp6proxy: (.*)\n?$/.exec(lastWords.trim());
    return fail(said !== null ? said[1] : `the worker ended during start-up (${signal ?? `exit status ${code}`})`);
  }
  if (code === EXIT_OK) {
    logger.log('notice', 'stopped');
    return EXIT_OK;
  }
  logger.log('err', `worker ended: ${signal ?? `exit status ${code}`}; firewall swept`);
  return code === EXIT_START ? EXIT_START : EXIT_LOST;
}
