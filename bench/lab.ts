/**
 * The lab parts of the benchmark (root, Linux): small-file transfers with
 * curl (EPSV, IPv6) through the namespace gateway under three policies, and
 * the time control packets spend in the gateway.
 *
 *   open       forward policy accept: the limit
 *   helper     the kernel's FTP conntrack helper (ct helper "ftp", related accepted)
 *   ftp6proxy  the DESIGN.md deny ruleset + NFQUEUE, with bin/ftp6proxy run as
 *              a gateway runs it (startDaemon: in the background, worker as
 *              nobody in a chroot, syslog to a real rsyslogd; -d -d where no
 *              rsyslogd can have /dev/log)
 *   ftp6proxy-data  the same with the queue rules limited to segments with payload
 *   ftp6proxy-sel   the selective ruleset and bin/ftp6proxy -s (a second daemon)
 *   ftp6proxy-cold, ftp6proxy-sel-cold  the same two with -w 0: no rehearsals
 *              (src/warm.ts), so every held packet finds the packet path
 *              cold, as the first one after a quiet spell does
 *   null-c, null-node  the floor: the selective ruleset with a no-op NFQUEUE
 *              reader (bench/nfq-null.c, bench/nfq-null.ts) and the passive
 *              ports let through, no hole needed: what the kernel's queueing
 *              and a process wake-up cost, in C and in Node.js
 *   instrumented  the same ruleset with bench/latency-child.js (the daemon's
 *              wiring, timestamps in user space): hole latency in process
 *   steady     the instrumented proxy again, for more transfers in a row
 *              with no ruleset reload between them (as in production: the
 *              interleaved rounds reload the gateway's ruleset before every
 *              transfer, which the first set-element insertion then pays for)
 *
 * Only the daemon of the configuration being measured runs: the others are
 * stopped (SIGSTOP) meanwhile, so that their rehearsals take no CPU from it,
 * nor from the open gateway and the kernel helper, which have no daemon.
 *
 * Three phases:
 * 1. timed rounds: each configuration in turn loads its ruleset and makes
 *    two transfers, the order rotating, so that drift in the machine's load
 *    falls on all of them; curl's time_total is the transfer figure.  The
 *    second transfer is the timed one: the first pays for the reload (the
 *    kernel's deferred work after an iptables/nft table swap, the first
 *    element of a new set), which a gateway loads once, not before every
 *    transfer.  Its time is kept apart ("first after reload");
 * 2. steady: the instrumented proxy's hole-latency samples;
 * 3. rounds again (fewer: transitRounds) under tcpdump (nanosecond timestamps) on both
 *    gateway interfaces: a control packet's transit is the time between its
 *    capture on the way in and on the way out, so the kernel's queueing to
 *    NFQUEUE and the wake-up of the daemon are counted too.  These transfers
 *    are not timed: tcpdump wakes up for every packet, and on a small
 *    machine it takes the CPU that the queue's reader needs, which the open
 *    gateway, all in the kernel, does not feel.
 */
import { ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as readline from 'readline';
import { parsePcap } from '../src/pcap';
import { decodePacket } from '../src/packet';
import { Lab, nfqueueStats, PASV_MAX, PASV_MIN, preflight, Rsyslog, SELECTIVE_BITS, sh, startRsyslog, syslogBusy, withLab } from '../test/lab/lab';
import type { LatencySamples } from './latency-child';
import { bootstrapRatio, median, percentile, round, summarize, Summary } from './stats';

export type Config = 'open' | 'helper' | 'ftp6proxy' | 'ftp6proxy-data' | 'ftp6proxy-sel' | 'ftp6proxy-cold' | 'ftp6proxy-sel-cold'
  | 'null-c' | 'null-node' | 'instrumented' | 'steady';

export interface TransferFigures {
  config: Config;
  /** what ran on the gateway */
  what: string;
  transfers: number;
  failed: number;
  /** curl -w %{time_total}, ms */
  medianMs: number;
  p90Ms: number;
  /** the untimed first transfer after each ruleset load, median ms (null: none) */
  firstAfterReloadMs: number | null;
  /** the timed transfers that succeeded, ms, in the order they ran */
  timesMs: number[];
  /** control packets' transit through the gateway, µs (tcpdump on both sides) */
  transitHoleUs: Summary | null;
  transitOtherUs: Summary | null;
  firstFailure?: string;
}

export interface LabResult {
  transfers: TransferFigures[];
  /** ftp6proxy median / open median */
  ratio: number | null;
  /** the same with the optional data-only queue rules */
  ratioDataOnly: number | null;
  /** the same with the selective ruleset and ftp6proxy -s */
  ratioSelective: number | null;
  /**
   * 95 % bootstrap intervals of the three ratios (stats.bootstrapRatio): how
   * far a run's ratio of medians moves with which transfers it timed
   */
  ratioCi95: { ftp6proxy: [number, number] | null; data: [number, number] | null; selective: [number, number] | null };
  /** ftp6proxy and ftp6proxy -s with -w 0 (no rehearsals): median / open median and its 95 % interval (null: not run) */
  cold: { ftp6proxy: { ratio: number; ci: [number, number] | null } | null; selective: { ratio: number; ci: [number, number] | null } | null };
  /**
   * The floor: median / open median (and its 95 % interval) of the selective
   * ruleset with a no-op NFQUEUE reader, in C and in Node.js (null: not run)
   */
  floors: { c: { ratio: number; ci: [number, number] | null } | null; node: { ratio: number; ci: [number, number] | null } | null };
  /** the three ratios again from the first transfers after each ruleset load */
  ratiosAfterReload: { ftp6proxy: number | null; data: number | null; selective: number | null };
  /** packets the kernel queued per transfer in the timed rounds (NFQUEUE id_sequence) */
  queuedPerTransfer: Partial<Record<Config, number>>;
  /** in-process, steady phase: arrival in user space -> verdict, µs */
  latencyHoleUs: Summary | null;
  latencyOtherUs: Summary | null;
  /** in-process, steady phase: NftablesFirewall.open() alone, µs */
  nftOpenUs: Summary | null;
  /** the same during the interleaved rounds (ruleset reloaded before each transfer) */
  interleaved: { latencyHoleUs: Summary | null; latencyOtherUs: Summary | null; nftOpenUs: Summary | null };
  daemon: string;
  /** every failed transfer, with the daemon's log lines meanwhile (at most 10) */
  failures: FailedTransfer[];
  notes: string[];
}

const QUEUE = 10004;
const PREFIX = 'f6bench';

export interface Matched {
  /** µs */
  hole: number[];
  other: number[];
}

/** Transit of each control packet between the two captures, by configuration (from its client port). */
export function transit<C>(fileA: string, fileB: string, portCfg: Map<number, C>): Map<C, Matched> {
  // A packet is identified by its bytes from the IP header on, less the
  // fields the gateway changes (IPv4 TTL and header checksum, IPv6 hop limit).
  const ident = (ip: Uint8Array): string | null => {
    // The TCP checksum too: veth hands over CHECKSUM_PARTIAL packets, and
    // queueing to NFQUEUE completes the checksum (skb_checksum_help) on the way.
    const c = Buffer.from(ip);
    let tcp: number;
    if (c[0] >> 4 === 4) {
      c[8] = 0;
      c[10] = 0;
      c[11] = 0;
      tcp = (c[0] & 0x0f) * 4;
    } else if (c[0] >> 4 === 6) {
      c[7] = 0;
      tcp = 40;
    } else return null;
    if (c.length >= tcp + 18) {
      c[tcp + 16] = 0;
      c[tcp + 17] = 0;
    }
    return c.toString('latin1');
  };
  const index = (file: string) => {
    const m = new Map<string, number[]>();
    for (const r of parsePcap(fs.readFileSync(file)).records) {
      if (r.ip === null) continue;
      const k = ident(r.ip);
      if (k === null) continue;
      const l = m.get(k);
      if (l === undefined) m.set(k, [r.time]);
      else l.push(r.time);
    }
    return m;
  };
  const a = index(fileA);
  const b = index(fileB);
  const out = new Map<C, Matched>();
  for (const [k, ta] of a) {
    const tb = b.get(k);
    if (tb === undefined) continue;
    // The same bytes twice (a retransmit): pair them in order.
    for (let i = 0; i < Math.min(ta.length, tb.length); i++) {
      const dt = Math.abs(tb[i] - ta[i]) * 1000;
      const d = decodePacket(Buffer.from(k, 'latin1'));
      if (!d.ok) continue;
      const cfg = portCfg.get(d.seg.sport === 21 ? d.seg.dport : d.seg.sport);
      if (cfg === undefined) continue;
      let m = out.get(cfg);
      if (m === undefined) out.set(cfg, (m = { hole: [], other: [] }));
      const isHole = d.seg.sport === 21 && d.seg.payload.length >= 4 &&
        Buffer.from(d.seg.payload.subarray(0, 4)).toString('latin1') === '229 ';
      (isHole ? m.hole : m.other).push(dt);
    }
  }
  return out;
}

function waitLine(p: ChildProcess, want: (line: string) => boolean, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    if (p.stdout === null) return resolve(null);
    const rl = readline.createInterface({ input: p.stdout });
    const done = (v: string | null) => {
      clearTimeout(t);
      rl.removeAllListeners('line');
      rl.close();
      resolve(v);
    };
    const t = setTimeout(() => done(null), timeoutMs);
    rl.on('line', (l) => {
      if (want(l)) done(l);
    });
    p.once('exit', () => done(null));
  });
}

export async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Is NFQUEUE `q` bound in the gateway? */
export function queueBound(lab: Lab, q: number): boolean {
  return nfqueueStats(lab).has(q);
}

export async function capture(lab: Lab, iface: string, file: string): Promise<ChildProcess> {
  // tcpdump(8): --time-stamp-precision=nano asks for nanosecond time stamps
  // (pcap magic 0xa1b23c4d); -U and --immediate-mode write each packet at once.
  const p = lab.spawnIn(lab.ns.gateway, ['tcpdump', '-n', '-U', '--immediate-mode', '--time-stamp-precision=nano',
    '-i', iface, '-s', '200', '-w', file, 'tcp', 'port', '21']);
  let err = '';
  p.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
  for (let i = 0; i < 100 && !err.includes('listening on'); i++) await sleep(50);
  if (!err.includes('listening on')) throw new Error(`tcpdump on ${iface} did not start: ${err.trim()}`);
  return p;
}

export async function stopProc(p: ChildProcess, sig: NodeJS.Signals = 'SIGINT'): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      p.kill('SIGKILL');
    }, 3000);
    p.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    p.kill(sig);
  });
}

export interface LabOptions {
  /** timed transfers per configuration, interleaved */
  transfers: number;
  /** rounds again under tcpdump, for the transit figures */
  transitRounds: number;
  /** extra transfers with the instrumented child, for more hole samples */
  latencyTransfers: number;
  repo: string;
  log: (line: string) => void;
}

/** Why the lab parts cannot run here, or null. */
export function labSkipReason(): string | null {
  return preflight();
}

/** A daemon's output, each line with the time it arrived here (ms, Date.now()). */
export interface DaemonLog {
  /** the last lines, for a note */
  out: () => string;
  /** the lines that arrived between t0 and t1 */
  between: (t0: number, t1: number) => string[];
}

/**
 * Keep a child's recent output, line by line and time-stamped on arrival (and
 * keep its pipes drained: a full pipe would stall it).  The daemon runs with
 * -d -d: when a transfer fails, its lines from that transfer say what it saw.
 */
export function tail(p: ChildProcess): DaemonLog {
  const lines: Array<[number, string]> = [];
  let part = '';
  const add = (d: string) => {
    const now = Date.now();
    const parts = (part + d).split('\n');
    part = parts.pop() ?? '';
    for (const l of parts) lines.push([now, l]);
    if (lines.length > 20_000) lines.splice(0, lines.length - 10_000);
  };
  p.stdout?.setEncoding('utf8').on('data', add);
  p.stderr?.setEncoding('utf8').on('data', add);
  return {
    out: () => [...lines.slice(-3).map(([, l]) => l), part].filter((l) => l !== '').join(' | '),
    between: (t0, t1) => lines.filter(([t]) => t >= t0 && t <= t1).map(([, l]) => l),
  };
}

/**
 * `argv` started in the gateway (`watch` sees it at once, e.g. to keep its
 * output); the process once it has bound NFQUEUE `queue` (within 5 s), else
 * it is killed and null.
 */
export async function spawnBound(lab: Lab, argv: string[], queue: number, watch?: (p: ChildProcess) => void): Promise<ChildProcess | null> {
  const proc = lab.spawnIn(lab.ns.gateway, argv);
  watch?.(proc);
  for (let i = 0; i < 100 && !queueBound(lab, queue) && proc.exitCode === null; i++) await sleep(50);
  if (queueBound(lab, queue)) return proc;
  await stopProc(proc, 'SIGKILL');
  return null;
}

/**
 * A real rsyslogd for the daemons' `facilities`, where /dev/log is free for
 * one; else null and the note to report (the daemons then run with -d -d).
 */
export async function benchSyslog(lab: Lab, facilities: string[]): Promise<{ syslog: Rsyslog | null; note: string | null }> {
  if (syslogBusy() || !fs.existsSync('/usr/sbin/rsyslogd')) {
    return { syslog: null, note: '/dev/log belongs to another syslogd (or rsyslogd is missing): the daemons ran with -d -d, debug lines to stderr, which costs them time' };
  }
  try {
    return { syslog: await startRsyslog(lab.dir, facilities), note: null };
  } catch (e) {
    return { syslog: null, note: `no rsyslogd (${(e as Error).message}): the daemons ran with -d -d, debug lines to stderr, which costs them time` };
  }
}

/** A daemon the bench runs in the gateway. */
export interface BenchDaemon {
  /** it bound its queue within 5 s (else it was stopped) */
  up: boolean;
  log: DaemonLog;
  /** the command line, for the tables */
  what: string;
  /** it ended before stop() */
  exited: () => boolean;
  /**
   * SIGSTOP (true) or SIGCONT (false) to the daemon's processes: while other
   * configurations are measured, nothing of this daemon runs (its
   * rehearsals, -w, would take CPU from them; a gateway running another
   * configuration would have no ftp6proxy at all).
   */
  pause: (on: boolean) => void;
  stop: () => Promise<void>;
}

/** signal `pid` (and with `group`, its process group), quietly if it is gone */
function signal(pid: number, sig: NodeJS.Signals, group: boolean): void {
  if (pid <= 0) return;
  try {
    process.kill(group ? -pid : pid, sig);
  } catch {
    /* gone: exited() says so */
  }
}

const pauser = (pid: () => number, group: boolean) => (on: boolean): void => signal(pid(), on ? 'SIGSTOP' : 'SIGCONT', group);
const NO_PAUSE = (): void => undefined;

/** The lines of a syslog file written by test/lab/lab.ts startRsyslog (time-stamped by rsyslogd). */
function syslogTail(file: string): DaemonLog {
  const read = (): Array<[number, string]> => {
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      return [];
    }
    return text.split('\n').filter((l) => l !== '').map((l) => {
      const sp = l.indexOf(' ');
      return [Date.parse(l.slice(0, sp)), l.slice(sp + 1)] as [number, string];
    });
  };
  return {
    out: () => read().slice(-3).map(([, l]) => l).join(' | '),
    between: (t0, t1) => read().filter(([t]) => t >= t0 && t <= t1).map(([, l]) => l),
  };
}

/**
 * bin/ftp6proxy on `queue` in the gateway.  With `syslog`, as a gateway runs
 * it: in the background (`-i`), the worker as nobody chrooted to an empty
 * directory, logging at its usual levels to syslog facility `syslog.facility`,
 * which a real rsyslogd writes to `syslog.file`.  Without, `-d -d`: in the
 * foreground with privileges, debug lines to stderr (kept for the report).
 * The debug lines cost the transfer time (2.5 % in an A/B of 150
 * transfers: see README), which is why the gateway's own form is measured
 * when it can run.
 */
export async function startDaemon(lab: Lab, o: { repo: string; queue: number; extra: string[]; syslog?: { file: string; facility: string } }): Promise<BenchDaemon> {
  const bin = path.join(o.repo, 'bin', 'ftp6proxy');
  const base = ['-m', 'nftables', '-p', String(o.queue), '-a', 'inet/filter', ...o.extra];
  if (o.syslog === undefined) {
    const argv = ['-d', '-d', ...base];
    const what = `bin/ftp6proxy ${argv.join(' ')}`;
    let log: DaemonLog = { out: () => '', between: () => [] };
    const proc = await spawnBound(lab, [process.execPath, bin, ...argv], o.queue, (p) => (log = tail(p)));
    if (proc === null) return { up: false, log, what, exited: () => true, pause: NO_PAUSE, stop: async () => undefined };
    return { up: true, log, what, exited: () => proc.exitCode !== null || proc.signalCode !== null, pause: pauser(() => proc.pid ?? 0, false),
      stop: async () => {
        signal(proc.pid ?? 0, 'SIGCONT', false);
        await stopProc(proc, 'SIGTERM');
      } };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'f6bench-d-'));
  fs.chmodSync(dir, 0o755);
  fs.mkdirSync(path.join(dir, 'empty'));
  const pidfile = path.join(dir, 'ftp6proxy.pid');
  const argv = [...base, '-i', pidfile, '-u', 'nobody', '-r', path.join(dir, 'empty'), '-f', o.syslog.facility];
  const what = `bin/ftp6proxy ${argv.join(' ').split(dir).join('DIR')}`;
  const log = syslogTail(o.syslog.file);
  // the launcher returns once the worker is ready (0) or has failed (1)
  const started = await lab.runAsync(lab.ns.gateway, [process.execPath, bin, ...argv], { timeoutMs: 20000 });
  let pid = 0;
  try {
    pid = Number(fs.readFileSync(pidfile, 'utf8').trim());
  } catch {
    /* not started */
  }
  const alive = (): boolean => {
    if (pid <= 0) return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const stop = async (): Promise<void> => {
    signal(pid, 'SIGCONT', true);
    if (alive()) process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 100 && alive(); i++) await sleep(50);
    if (alive()) process.kill(pid, 'SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  };
  let up = started.status === 0;
  for (let i = 0; up && i < 100 && !queueBound(lab, o.queue) && alive(); i++) await sleep(50);
  up = up && queueBound(lab, o.queue);
  if (!up) {
    const why = `${started.stderr.trim()} ${log.out()}`.trim();
    await stop();
    return { up, log: { out: () => why, between: log.between }, what, exited: () => true, pause: NO_PAUSE, stop: async () => undefined };
  }
  // the monitor leads its own session; its worker is in its process group
  return { up, log, what, exited: () => !alive(), pause: pauser(() => pid, true), stop };
}

/** A failed transfer, with what the daemon on its queue logged meanwhile. */
export interface FailedTransfer {
  config: Config;
  /** ISO time the transfer started */
  at: string;
  phase: 'timed' | 'first after reload' | 'steady' | 'under tcpdump';
  curl: string;
  /** packets the kernel queued to the configuration's queue during the transfer (null: none queued there) */
  queued: number | null;
  /** the daemon's lines from 2.5 s before the transfer (a hole's life and more) to 0.5 s after it, at most 80 */
  daemon: string[];
}

export async function runLab(o: LabOptions): Promise<LabResult> {
  const notes: string[] = [];
  return withLab({ prefix: PREFIX, queueNum: QUEUE }, async (lab) => {
    const server = await lab.startServer('vsftpd');
    const url = `ftp://[${lab.addr.server[6]}]/${lab.files.small.name}`;
    const size = lab.files.small.content.length;
    lab.setPolicy('deny', QUEUE);

    // The daemons as a gateway runs them, logging to a real rsyslogd, where
    // /dev/log is free for one; else in the foreground with -d -d.
    const { syslog, note } = await benchSyslog(lab, ['local3', 'local4', 'local5', 'local6']);
    if (note !== null) notes.push(note);
    // The daemon on QUEUE and the instrumented child on QUEUE+1 run for the
    // whole section; the gateway's policy picks which one (if any) sees the
    // control packets of the next transfer.  Both keep the sets of the
    // current table: every policy defines them.
    const daemon = await startDaemon(lab, { repo: o.repo, queue: QUEUE, extra: [], syslog: syslog ? { file: syslog.files.local3, facility: 'local3' } : undefined });
    const daemonUp = daemon.up;
    let daemonWhat = daemon.what;
    if (!daemonUp) {
      notes.push(`bin/ftp6proxy did not bind NFQUEUE ${QUEUE} (${daemon.log.out() || 'no output'}): ` +
        'the ftp6proxy row uses bench/latency-child.js (the same wiring) instead');
      daemonWhat = 'bench/latency-child.js (bin/ftp6proxy did not start)';
    }
    // The same daemon with -s on QUEUE+2, for the selective ruleset.
    const sel = await startDaemon(lab, { repo: o.repo, queue: QUEUE + 2, extra: ['-s', `0x${SELECTIVE_BITS.seeAll.toString(16)}`],
      syslog: syslog ? { file: syslog.files.local4, facility: 'local4' } : undefined });
    const selUp = sel.up;
    if (!selUp) notes.push(`bin/ftp6proxy -s did not bind NFQUEUE ${QUEUE + 2}: ${sel.log.out() || 'no output'}`);
    // Both again with -w 0 (no rehearsals), on QUEUE+5 and QUEUE+6.
    const cold = await startDaemon(lab, { repo: o.repo, queue: QUEUE + 5, extra: ['-w', '0'],
      syslog: syslog ? { file: syslog.files.local5, facility: 'local5' } : undefined });
    const selCold = await startDaemon(lab, { repo: o.repo, queue: QUEUE + 6, extra: ['-s', `0x${SELECTIVE_BITS.seeAll.toString(16)}`, '-w', '0'],
      syslog: syslog ? { file: syslog.files.local6, facility: 'local6' } : undefined });
    if (!cold.up) notes.push(`bin/ftp6proxy -w 0 did not bind NFQUEUE ${QUEUE + 5}: ${cold.log.out() || 'no output'}`);
    if (!selCold.up) notes.push(`bin/ftp6proxy -s -w 0 did not bind NFQUEUE ${QUEUE + 6}: ${selCold.log.out() || 'no output'}`);
    /** the daemon that sees a configuration's control packets (null: none of ours) */
    const daemonOf = (cfg: Config): BenchDaemon | null =>
      cfg === 'ftp6proxy' || cfg === 'ftp6proxy-data' ? (daemonUp ? daemon : null) : cfg === 'ftp6proxy-sel' ? (selUp ? sel : null)
        : cfg === 'ftp6proxy-cold' ? (cold.up ? cold : null) : cfg === 'ftp6proxy-sel-cold' ? (selCold.up ? selCold : null) : null;
    const allDaemons = [daemon, sel, cold, selCold].filter((d) => d.up);
    /** run only the configuration's own daemon */
    const runOnly = (cfg: Config): void => {
      const mine = daemonOf(cfg);
      for (const d of allDaemons) d.pause(d !== mine);
    };
    // The floor under any user-space helper: the selective ruleset with a
    // no-op NFQUEUE reader (in C, and in Node.js through ftp6proxy's own
    // capture code) and a rule of the bench letting the lab's passive ports
    // through, so that no hole is needed.
    const nulls: Partial<Record<'null-c' | 'null-node', { proc: ChildProcess; queue: number }>> = {};
    const nullC = path.join(lab.dir, 'nfq-null');
    const cc = sh(['cc', '-O2', '-Wall', '-o', nullC, path.join(o.repo, 'bench', 'nfq-null.c')]);
    if (cc.status !== 0) notes.push(`no C baseline: cc bench/nfq-null.c failed: ${cc.stderr.trim() || 'no cc'}`);
    for (const [cfg, queue, argv] of [
      ['null-c', QUEUE + 3, cc.status === 0 ? [nullC, String(QUEUE + 3)] : null],
      ['null-node', QUEUE + 4, [process.execPath, path.join(o.repo, 'dist', 'bench', 'nfq-null.js'), String(QUEUE + 4)]],
    ] as const) {
      if (argv === null) continue;
      const proc = await spawnBound(lab, [...argv], queue);
      if (proc !== null) nulls[cfg] = { proc, queue };
      else notes.push(`${cfg}: the no-op reader did not bind NFQUEUE ${queue}`);
    }
    const inst = lab.spawnIn(lab.ns.gateway, [process.execPath, path.join(o.repo, 'dist', 'bench', 'latency-child.js'),
      String(QUEUE + 1), 'inet/filter'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let instErr = '';
    inst.stderr?.setEncoding('utf8').on('data', (d: string) => (instErr = (instErr + d).slice(-4000)));
    if ((await waitLine(inst, (l) => l === 'ready', 10000)) === null) throw new Error(`bench/latency-child.js did not start: ${instErr.trim()}`);
    /** the instrumented child's samples so far (and cleared there) */
    const snapshot = async (cmd: 'snapshot' | 'stop'): Promise<LatencySamples | null> => {
      const line = waitLine(inst, (l) => l.startsWith('{'), 10_000);
      inst.stdin?.write(`${cmd}\n`);
      const json = await line;
      return json === null ? null : (JSON.parse(json) as LatencySamples);
    };

    const order: Config[] = ['open', 'helper', 'ftp6proxy', 'ftp6proxy-data', ...(selUp ? ['ftp6proxy-sel' as const] : []),
      ...(cold.up ? ['ftp6proxy-cold' as const] : []), ...(selCold.up ? ['ftp6proxy-sel-cold' as const] : []),
      ...(['null-c', 'null-node'] as const).filter((c) => nulls[c] !== undefined), 'instrumented'];
    /** the queue whose reader sees a configuration's control packets (null: none) */
    const queueOf = (cfg: Config): number | null =>
      cfg === 'ftp6proxy' || cfg === 'ftp6proxy-data' ? (daemonUp ? QUEUE : QUEUE + 1) : cfg === 'ftp6proxy-sel' ? QUEUE + 2
        : cfg === 'ftp6proxy-cold' ? QUEUE + 5 : cfg === 'ftp6proxy-sel-cold' ? QUEUE + 6
        : cfg === 'null-c' || cfg === 'null-node' ? nulls[cfg]?.queue ?? null : cfg === 'instrumented' ? QUEUE + 1 : null;
    const apply = (cfg: Config): void => {
      if (cfg === 'open' || cfg === 'helper') lab.setPolicy(cfg);
      else {
        const floor = cfg === 'null-c' || cfg === 'null-node';
        lab.setPolicy('deny', queueOf(cfg) ?? QUEUE + 1, { dataOnly: cfg === 'ftp6proxy-data', selective: cfg === 'ftp6proxy-sel' || cfg === 'ftp6proxy-sel-cold' || floor });
        // the data connection, which the no-op readers open no hole for
        if (floor) lab.run(lab.ns.gateway, ['nft', 'add', 'rule', 'inet', 'filter', 'forward', 'tcp', 'dport', `${PASV_MIN}-${PASV_MAX}`, 'accept']);
      }
    };
    /** packets queued to `q` so far */
    const idSeq = (q: number): number => nfqueueStats(lab).get(q)?.idSequence ?? 0;
    const queued = new Map<Config, number>();
    const times = new Map<Config, number[]>([...order, 'steady' as const].map((c) => [c, []]));
    /** the first transfer after each ruleset load (timed rounds), ms */
    const firstTimes = new Map<Config, number[]>(order.map((c) => [c, []]));
    const failed = new Map<Config, number>([...order, 'steady' as const].map((c) => [c, 0]));
    const firstFailure = new Map<Config, string>();
    /** control connection's client port -> configuration */
    const portCfg = new Map<number, Config>();
    /** false while tcpdump runs: its per-packet wake-ups would compete for the CPUs */
    let timed = true;
    const failures: FailedTransfer[] = [];
    /** the log of the daemon that sees a configuration's control packets (none: the instrumented child, or no daemon) */
    const logOf = (cfg: Config): DaemonLog | null => daemonOf(cfg)?.log ?? null;
    const transfer = async (cfg: Config, first = false): Promise<void> => {
      const q = queueOf(cfg);
      const before = q === null ? 0 : idSeq(q);
      const t0 = Date.now();
      const r = await lab.runAsync(lab.ns.client, ['curl', '-sS', '--connect-timeout', '5', '-m', '10', '-o', '/dev/null',
        '-w', '%{time_total} %{size_download} %{local_port}', url], { timeoutMs: 15000 });
      const [t, got, lport] = r.stdout.trim().split(' ');
      if (Number(lport) > 0) portCfg.set(Number(lport), cfg);
      if (timed && !first && q !== null) queued.set(cfg, (queued.get(cfg) ?? 0) + idSeq(q) - before);
      if (r.status === 0 && Number(got) === size) {
        if (timed) (first ? firstTimes : times).get(cfg)?.push(Number(t) * 1000);
      } else {
        failed.set(cfg, (failed.get(cfg) ?? 0) + 1);
        if (!firstFailure.has(cfg)) firstFailure.set(cfg, `exit ${r.status}: ${r.stderr.trim()}`);
        if (failures.length < 10) {
          const queuedHere = q === null ? null : idSeq(q) - before;
          // the daemon's lines may still be in the pipe
          await sleep(500);
          const lines = logOf(cfg)?.between(t0 - 2500, Date.now()) ?? [];
          failures.push({
            config: cfg, at: new Date(t0).toISOString(),
            phase: !timed ? 'under tcpdump' : cfg === 'steady' ? 'steady' : first ? 'first after reload' : 'timed',
            curl: `exit ${r.status}: ${r.stderr.trim()}`,
            queued: queuedHere,
            daemon: lines.length <= 80 ? lines : [...lines.slice(0, 20), `... ${lines.length - 80} lines ...`, ...lines.slice(-60)],
          });
        }
      }
    };
    // Interleaved: each configuration in turn per round, the order rotating,
    // so that drift in the machine's load falls on all of them.  After its
    // ruleset is loaded, a first transfer (kept apart), then the timed one.
    const rounds = async (n: number, what: string): Promise<void> => {
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < order.length; j++) {
          const cfg = order[(i + j) % order.length];
          runOnly(cfg);
          apply(cfg);
          await transfer(cfg, true);
          await transfer(cfg);
        }
        if ((i + 1) % 10 === 0) o.log(`  ${what}: ${i + 1}/${n} rounds`);
      }
    };
    // First the timed rounds, with nothing else running; then the same rounds
    // again under tcpdump, for the gateway transit figures.  (tcpdump wakes
    // up for every packet: on a small machine it takes the CPU the queue's
    // reader needs, which the open gateway, all in the kernel, does not feel.)
    await rounds(o.transfers, 'timed');
    const latInterleaved = await snapshot('snapshot');
    runOnly('instrumented');
    apply('instrumented');
    for (let i = 0; i < o.latencyTransfers; i++) await transfer('steady');
    const lat = await snapshot('snapshot');

    const fa = path.join(lab.dir, 'br0.pcap');
    const fb = path.join(lab.dir, 'srv0.pcap');
    const ca = await capture(lab, lab.iface.gwClient, fa);
    const cb = await capture(lab, lab.iface.gwServer, fb);
    timed = false;
    await rounds(o.transitRounds, 'under tcpdump');
    await sleep(300);
    await stopProc(ca);
    await stopProc(cb);
    await snapshot('stop');
    await stopProc(inst, 'SIGTERM');
    for (const [d, what] of [[daemon, 'bin/ftp6proxy'], [sel, 'bin/ftp6proxy -s'], [cold, 'bin/ftp6proxy -w 0'], [selCold, 'bin/ftp6proxy -s -w 0']] as const) {
      if (!d.up) continue;
      if (d.exited()) notes.push(`${what} exited during the run: ${d.log.out()}`);
      await d.stop();
    }
    for (const n of Object.values(nulls)) await stopProc(n.proc, 'SIGTERM');
    await syslog?.stop();
    await server.stop();
    // The kernel's own count of queued packets it dropped (queue full, or the
    // netlink socket's buffer full).
    for (const [q, st] of nfqueueStats(lab)) {
      if (st.queueDropped !== 0 || st.userDropped !== 0) notes.push(`NFQUEUE ${q}: kernel dropped ${st.queueDropped} (queue full) + ${st.userDropped} (socket full) packets`);
    }

    if (lat === null) notes.push(`no samples from bench/latency-child.js: ${instErr.trim()}`);
    else if (lat.errors.length > 0) notes.push(`instrumented proxy logged: ${lat.errors.slice(0, 3).join(' | ')}`);

    const m = transit(fa, fb, portCfg);
    const us = (xs: number[] | undefined): Summary | null => (xs === undefined || xs.length === 0 ? null : roundSummary(summarize(xs)));
    const what: Record<Config, string> = {
      open: 'forward policy accept',
      helper: 'ct helper "ftp" + ct state related accept',
      ftp6proxy: daemonWhat,
      'ftp6proxy-data': `${daemonWhat}, queue rules for segments with payload only (xt_u32)`,
      'ftp6proxy-sel': `${sel.what}, the selective ruleset (src/firewall/selective.ts)`,
      'ftp6proxy-cold': `${cold.what}, the DESIGN.md deny ruleset: no rehearsals`,
      'ftp6proxy-sel-cold': `${selCold.what}, the selective ruleset: no rehearsals`,
      'null-c': 'the selective ruleset, a no-op NFQUEUE reader in C (bench/nfq-null.c), the passive ports let through',
      'null-node': 'the selective ruleset, a no-op NFQUEUE reader in Node.js (bench/nfq-null.ts, ftp6proxy\'s capture code), the passive ports let through',
      instrumented: 'bench/latency-child.js (daemon wiring, timed)',
      steady: 'bench/latency-child.js, transfers in a row without ruleset reloads',
    };
    const transfers: TransferFigures[] = [...order, 'steady' as const].map((cfg) => {
      const t = times.get(cfg) ?? [];
      const f = failed.get(cfg) ?? 0;
      return {
        config: cfg,
        what: what[cfg],
        transfers: t.length + f,
        failed: f,
        medianMs: round(median(t)),
        p90Ms: round(percentile(t, 90)),
        timesMs: t.map((x) => round(x)),
        firstAfterReloadMs: (firstTimes.get(cfg)?.length ?? 0) > 0 ? round(median(firstTimes.get(cfg) ?? [])) : null,
        transitHoleUs: us(m.get(cfg)?.hole),
        transitOtherUs: us(m.get(cfg)?.other),
        firstFailure: firstFailure.get(cfg),
      };
    });
    const open = transfers.find((t) => t.config === 'open');
    const proxy = transfers.find((t) => t.config === 'ftp6proxy');
    const proxyData = transfers.find((t) => t.config === 'ftp6proxy-data');
    const proxySel = transfers.find((t) => t.config === 'ftp6proxy-sel');
    const reloadRatio = (x: TransferFigures | undefined): number | null =>
      open?.firstAfterReloadMs && x?.firstAfterReloadMs ? round(x.firstAfterReloadMs / open.firstAfterReloadMs) : null;
    const ci = (x: TransferFigures | undefined): [number, number] | null => {
      const r = open && x ? bootstrapRatio(times.get(x.config) ?? [], times.get('open') ?? []) : null;
      return r === null ? null : [round(r[0]), round(r[1])];
    };
    /** a configuration's median / open median, with its 95 % interval */
    const ratioOf = (cfg: Config): { ratio: number; ci: [number, number] | null } | null => {
      const x = transfers.find((t) => t.config === cfg);
      return open && x && x.transfers > x.failed && open.medianMs > 0 ? { ratio: round(x.medianMs / open.medianMs), ci: ci(x) } : null;
    };
    const queuedPerTransfer: Partial<Record<Config, number>> = {};
    for (const [cfg, n] of queued) queuedPerTransfer[cfg] = round(n / o.transfers, 1);
    return {
      transfers,
      ratio: open && proxy && open.medianMs > 0 ? round(proxy.medianMs / open.medianMs) : null,
      ratioDataOnly: open && proxyData && open.medianMs > 0 ? round(proxyData.medianMs / open.medianMs) : null,
      ratioSelective: open && proxySel && proxySel.medianMs > 0 && open.medianMs > 0 ? round(proxySel.medianMs / open.medianMs) : null,
      ratioCi95: { ftp6proxy: ci(proxy), data: ci(proxyData), selective: ci(proxySel) },
      ratiosAfterReload: { ftp6proxy: reloadRatio(proxy), data: reloadRatio(proxyData), selective: reloadRatio(proxySel) },
      floors: { c: ratioOf('null-c'), node: ratioOf('null-node') },
      cold: { ftp6proxy: ratioOf('ftp6proxy-cold'), selective: ratioOf('ftp6proxy-sel-cold') },
      queuedPerTransfer,
      latencyHoleUs: lat ? us(lat.hole.map((x) => x * 1000)) : null,
      latencyOtherUs: lat ? us(lat.noHole.map((x) => x * 1000)) : null,
      nftOpenUs: lat ? us(lat.fwOpen.map((x) => x * 1000)) : null,
      interleaved: {
        latencyHoleUs: latInterleaved ? us(latInterleaved.hole.map((x) => x * 1000)) : null,
        latencyOtherUs: latInterleaved ? us(latInterleaved.noHole.map((x) => x * 1000)) : null,
        nftOpenUs: latInterleaved ? us(latInterleaved.fwOpen.map((x) => x * 1000)) : null,
      },
      daemon: daemonWhat,
      failures,
      notes,
    };
  });
}

function roundSummary(s: Summary): Summary {
  return { n: s.n, p50: round(s.p50, 1), p90: round(s.p90, 1), p99: round(s.p99, 1), max: round(s.max, 1) };
}
