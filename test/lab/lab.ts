/**
 * test/lab/lab.ts: the Linux network-namespace lab (issues 2, 3 and 6).
 *
 * Topology (all names start with `<prefix>-`, default prefix `f6lab`):
 *
 *   <p>-cli  fd00:c1::10  198.18.1.10 ─┐
 *                                      ├─ br0 in <p>-gw  fd00:c1::1  198.18.1.1
 *   <p>-vic  fd00:c1::20  198.18.1.20 ─┘   (bridge: client and victim share a LAN)
 *                                          srv0 in <p>-gw fd00:5e::1 198.18.2.1
 *   <p>-srv  fd00:5e::10  198.18.2.10 ──── (routed; forwarding on in the gateway)
 *
 * Every address is ULA (fd00::/8) or 198.18.0.0/15 and lives only in the
 * namespaces created here. IPv6 addresses use `nodad` and DAD is off in every
 * namespace, so the lab is usable as soon as `createLab` returns.
 *
 * API (everything synchronous returns only after the kernel state is in place):
 *
 *   preflight(): string | null
 *   labCannotRun(what, why)                       SKIP, or under CI=true exit 1
 *       Why the lab cannot run here (not root, not Linux, a missing program),
 *       or null. Tests print `SKIP: <reason>` (or fail when CI=true).
 *   cleanupPrefix(prefix)
 *       Kill what runs in, and delete, every namespace named `<prefix>-*`
 *       (leftovers of a crashed run). createLab calls it first.
 *   createLab(opts?: LabOptions): Lab
 *   withLab(opts, async (lab) => ...): Promise<T>
 *       Builds the lab, runs fn, and always tears everything down (servers,
 *       captures, namespaces, the work directory), also when fn throws.
 *
 *   Lab
 *     .prefix, .ns {client, gateway, server, victim}, .addr, .iface, .dir
 *     .files            names and contents of the files served over FTP
 *     .run(ns, argv, {timeoutMs?, input?}) -> RunResult    (spawnSync, never throws)
 *     .spawnIn(ns, argv, SpawnOptions?) -> ChildProcess   (async; killed on destroy)
 *     .runAsync(ns, argv, {timeoutMs?, input?}) -> Promise<RunResult>  (SIGKILL on timeout)
 *     .setPolicy('open' | 'deny' | 'helper', queueNum?, { dataOnly?, selective? })
 *         dataOnly: queue only segments that carry at least 4 bytes of
 *         payload (xt_u32), the optional lighter queue rules of the README.
 *         selective: instead of the two queue rules, the selective ruleset
 *         of src/firewall/selective.ts (for ftp6proxy -s SELECTIVE_BITS.seeAll).
 *         open:   inet filter with the two sets, forward policy accept;
 *         deny:   the exact DESIGN.md ruleset (inet filter, sets ftp6proxy4/6,
 *                 policy drop) plus iptables/ip6tables FORWARD NFQUEUE rules
 *                 for tcp dport 21 and sport 21 with --queue-bypass;
 *         helper: the kernel's FTP conntrack helper (ct helper "ftp") with
 *                 `ct state related accept`, the benchmark baseline.
 *     .nftList() -> string                          `nft list ruleset` in the gateway
 *     .startServer(kind) -> Promise<FtpServer>      vsftpd | pyftpdlib | pure-ftpd
 *         anonymous, read-only, IPv6 and IPv4 on port 21, passive ports
 *         PASV_MIN..PASV_MAX, active mode allowed. FtpServer.stop().
 *     .runClient(ClientRequest) -> Promise<ClientResult>
 *         one real FTP client program (curl | lftp | tnftp | wget) in the
 *         client namespace, for a mode (epsv | pasv | eprt | port) and family
 *         (4 | 6); `ok` is true only if the program succeeded AND the bytes
 *         received are the expected ones (for a file) or name the expected
 *         entries (for a listing).
 *     .startCapture(file, {filter?, iface?, snaplen?}) -> Promise<Capture>
 *         tcpdump in the gateway, writing pcap (not pcapng). Capture.stop()
 *         resolves to {captured, dropped} from tcpdump's summary.
 *     .destroy()                                    idempotent teardown
 *
 *   clientSupports(client, mode, family): boolean   which combinations exist
 *   serverAvailable(kind): string | null           why a server cannot run
 *
 * The ftp6proxy daemon is not started here: the lab tests and the demo start it
 * with lab.spawnIn(lab.ns.gateway, ['node', 'bin/ftp6proxy', '-m', 'nftables',
 * '-d', '-d', '-p', String(q), '-a', 'inet/filter']).
 */
import { selectiveRules } from '../../src/firewall/selective';
import { ChildProcess, SpawnOptions, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export type Family = 4 | 6;
export type Policy = 'open' | 'deny' | 'helper';
export type Mode = 'epsv' | 'pasv' | 'eprt' | 'port';
export type ServerKind = 'vsftpd' | 'pyftpdlib' | 'pure-ftpd';
export type ClientKind = 'curl' | 'lftp' | 'tnftp' | 'wget';

export const PASV_MIN = 40000;
export const PASV_MAX = 40100;
export const DEFAULT_PREFIX = 'f6lab';
export const DEFAULT_QUEUE = 10004;
/**
 * xt_u32 tests that match only when the TCP segment carries at least 4 bytes
 * of payload: a read past the end of the packet fails the match.  IPv4: IHL*4,
 * then the TCP data offset, then the payload; IPv6: the TCP header right after
 * the fixed 40-byte header.
 */
/** The conntrack mark bits of the selective ruleset in the lab (ftp6proxy -s takes seeAll). */
export const SELECTIVE_BITS = { seeAll: 0x100000, partialClient: 0x200000, partialServer: 0x400000 } as const;

export interface PolicyOptions {
  dataOnly?: boolean;
  selective?: boolean;
}

export const U32_PAYLOAD = { 4: '0>>22&0x3C@12>>26&0x3C@0=0:0xFFFFFFFF', 6: '52>>26&0x3C@40=0:0xFFFFFFFF' } as const;
/** Where scripts/lab-deps.sh unpacks pure-ftpd (it conflicts with vsftpd as a package). */
export const LAB_CACHE = process.env.LAB_CACHE ?? '/var/cache/ftp6proxy-lab';
/** Debian's python3-pyftpdlib lives in the system python, not in whatever python3 is first in PATH. */
export const SYSTEM_PYTHON = '/usr/bin/python3';

export interface LabOptions {
  /** Namespace name prefix; namespaces are `<prefix>-cli|gw|srv|vic`. Keep it short (netns names end up in /run/netns). */
  prefix?: string;
  /** Gateway policy installed at creation (default 'open'). */
  policy?: Policy;
  /** NFQUEUE number for the 'deny' policy (default 10004, as ftp6proxy's -p). */
  queueNum?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /** Size of big.bin in bytes (default 4 MiB), used for aborted transfers. */
  bigSize?: number;
}

export interface RunResult {
  argv: string[];
  status: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface AddrPair { 4: string; 6: string }

export interface LabAddrs {
  client: AddrPair;
  victim: AddrPair;
  gwClient: AddrPair;
  gwServer: AddrPair;
  server: AddrPair;
}

export interface ServedFiles {
  /** A small text file at the FTP root. */
  small: { name: string; content: string };
  /** A directory with a few small files, for listings and multi-file sessions. */
  dir: { name: string; entries: Record<string, string> };
  /** A bigger file at the root, for aborted transfers. */
  big: { name: string; size: number };
}

export interface FtpServer {
  kind: ServerKind;
  proc: ChildProcess;
  stop(): Promise<void>;
  /** Collected stdout+stderr of the server (for diagnostics). */
  output(): string;
}

export interface CaptureStats {
  /** Packets written, and packets the kernel dropped (tcpdump's summary at exit). */
  captured: number;
  dropped: number;
}

export interface Capture {
  file: string;
  stop(): Promise<CaptureStats>;
}

export interface ClientRequest {
  client: ClientKind;
  mode: Mode;
  family: Family;
  /** Path on the server; ending in '/' means a listing. Default: files.small. */
  path?: string;
  /** Give up after this long (default 15 s). */
  timeoutMs?: number;
  /** Server address override (default lab.addr.server[family]). */
  host?: string;
}

export interface ClientResult extends RunResult {
  ok: boolean;
  /** Why ok is false (program failed, timed out, wrong content). */
  reason: string;
  /** What was received (file content or listing text). */
  received: string;
}

export interface Lab {
  readonly prefix: string;
  readonly ns: { client: string; gateway: string; server: string; victim: string };
  readonly addr: LabAddrs;
  /** Gateway interfaces: br0 faces client+victim, srv0 faces the server. */
  readonly iface: { gwClient: string; gwServer: string };
  /** Work directory (FTP root, configs, logs); removed on destroy. */
  readonly dir: string;
  readonly ftpRoot: string;
  readonly files: ServedFiles;
  run(ns: string, argv: string[], opts?: { timeoutMs?: number; input?: string }): RunResult;
  runAsync(ns: string, argv: string[], opts?: { timeoutMs?: number; input?: string }): Promise<RunResult>;
  spawnIn(ns: string, argv: string[], opts?: SpawnOptions): ChildProcess;
  setPolicy(policy: Policy, queueNum?: number, opts?: PolicyOptions): void;
  nftList(): string;
  startServer(kind: ServerKind): Promise<FtpServer>;
  runClient(req: ClientRequest): Promise<ClientResult>;
  startCapture(file: string, opts?: { filter?: string; iface?: string; snaplen?: number }): Promise<Capture>;
  destroy(): Promise<void>;
}

/** Run a host command; never throws. */
/** Is /dev/log someone else's (a syslogd we did not start)? Then startRsyslog cannot run. */
export function syslogBusy(): boolean {
  return fs.existsSync('/dev/log') && !fs.existsSync('/run/f6-test-rsyslog.owned');
}

export interface Rsyslog {
  /** the file each facility is written to */
  files: Record<string, string>;
  proc: ChildProcess;
  stop: () => Promise<void>;
}

/**
 * A real rsyslogd on /dev/log writing each of `facilities` (and only them)
 * to a file of its own, a line each: `<RFC 3339 time, microseconds>
 * <facility>.<severity> <tag><msg>`.  Stop it with stop().
 */
export async function startRsyslog(dir: string, facilities: string[]): Promise<Rsyslog> {
  const files: Record<string, string> = {};
  for (const f of facilities) files[f] = path.join(dir, `${f}.log`);
  const conf = path.join(dir, 'rsyslog.conf');
  fs.writeFileSync(conf, [
    'module(load="imuxsock" SysSock.Name="/dev/log")',
    'template(name="withfac" type="string" string="%timegenerated:::date-rfc3339% %syslogfacility-text%.%syslogseverity-text% %syslogtag%%msg%\\n")',
    ...facilities.map((f) => `${f}.* action(type="omfile" file="${files[f]}" template="withfac")`),
    '',
  ].join('\n'));
  fs.writeFileSync('/run/f6-test-rsyslog.owned', '');
  const proc = spawn('/usr/sbin/rsyslogd', ['-n', '-f', conf, '-i', path.join(dir, 'rsyslogd.pid')], { stdio: 'ignore' });
  for (let i = 0; i < 100 && !fs.existsSync('/dev/log'); i++) await new Promise((r) => setTimeout(r, 50));
  if (!fs.existsSync('/dev/log')) {
    proc.kill('SIGKILL');
    throw new Error('rsyslogd did not create /dev/log');
  }
  // Whatever happens to the caller, no rsyslogd and no /dev/log stay behind.
  const atExit = (): void => {
    proc.kill('SIGKILL');
    try { fs.unlinkSync('/dev/log'); } catch { /* gone */ }
    try { fs.unlinkSync('/run/f6-test-rsyslog.owned'); } catch { /* gone */ }
  };
  process.once('exit', atExit);
  return {
    files,
    proc,
    stop: async () => {
      process.removeListener('exit', atExit);
      proc.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 200));
      try { fs.unlinkSync('/dev/log'); } catch { /* rsyslogd removed it */ }
      try { fs.unlinkSync('/run/f6-test-rsyslog.owned'); } catch { /* gone */ }
    },
  };
}

export function sh(argv: string[], opts: { timeoutMs?: number; input?: string } = {}): RunResult {
  const r = spawnSync(argv[0], argv.slice(1), {
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 30000,
    input: opts.input,
    maxBuffer: 64 * 1024 * 1024,
  });
  const err = r.error as NodeJS.ErrnoException | undefined;
  return {
    argv,
    status: r.status,
    signal: r.signal,
    stdout: r.stdout ?? '',
    stderr: (r.stderr ?? '') + (err && err.code !== 'ETIMEDOUT' ? `${err.message}\n` : ''),
    timedOut: err?.code === 'ETIMEDOUT',
  };
}

/** Like sh(), but throws with the command and its stderr when it fails. */
export function must(argv: string[], opts: { timeoutMs?: number; input?: string } = {}): RunResult {
  const r = sh(argv, opts);
  if (r.status !== 0) {
    throw new Error(`lab: command failed (${r.status ?? r.signal}): ${argv.join(' ')}\n${r.stderr.trim()}`);
  }
  return r;
}

function which(prog: string): boolean {
  return sh(['sh', '-c', `command -v ${prog}`]).status === 0;
}

/** Programs the lab needs, with the Debian package providing each. */
const REQUIRED_PROGRAMS: Array<[string, string]> = [
  ['ip', 'iproute2'],
  ['nft', 'nftables'],
  ['iptables', 'iptables'],
  ['ip6tables', 'iptables'],
  ['tcpdump', 'tcpdump'],
  ['ss', 'iproute2'],
  ['vsftpd', 'vsftpd'],
  ['curl', 'curl'],
  ['lftp', 'lftp'],
  ['tnftp', 'tnftp'],
  ['wget', 'wget'],
];

/**
 * A lab file that cannot run (`why`, usually preflight()'s answer): under
 * CI=true that is a failure, so it says so and exits 1; elsewhere it prints
 * the "SKIP:" line that scripts/run-tests.js counts, and the file runs no test.
 */
export function labCannotRun(what: string, why: string): void {
  if (process.env.CI === 'true') {
    console.error(`FAIL: ${what}: the lab cannot run in CI: ${why}`);
    process.exit(1);
  }
  console.log(`SKIP: ${what}: ${why}`);
}

export function preflight(): string | null {
  if (process.platform !== 'linux') return `the lab needs Linux network namespaces (platform is ${process.platform})`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'the lab needs root (ip netns, nft, tcpdump)';
  const missing = new Set<string>();
  for (const [prog, pkg] of REQUIRED_PROGRAMS) if (!which(prog)) missing.add(pkg);
  if (serverAvailable('pyftpdlib') !== null) missing.add('python3-pyftpdlib');
  if (missing.size > 0) {
    return `missing Debian package(s): ${[...missing].join(' ')} (run scripts/lab-deps.sh or apt-get install ${[...missing].join(' ')})`;
  }
  const probe = sh(['ip', 'netns', 'list']);
  if (probe.status !== 0) return `ip netns does not work here: ${probe.stderr.trim()}`;
  return null;
}

export function serverAvailable(kind: ServerKind): string | null {
  switch (kind) {
    case 'vsftpd':
      return fs.existsSync('/usr/sbin/vsftpd') ? null : 'vsftpd not installed (apt-get install vsftpd)';
    case 'pyftpdlib':
      return sh([SYSTEM_PYTHON, '-c', 'import pyftpdlib']).status === 0
        ? null
        : 'python3-pyftpdlib not installed (apt-get install python3-pyftpdlib)';
    case 'pure-ftpd':
      if (!fs.existsSync(pureFtpdBin())) return `pure-ftpd not unpacked in ${LAB_CACHE} (run scripts/lab-deps.sh)`;
      if (!fs.existsSync('/srv/ftp')) return '/srv/ftp (the ftp user\'s home, pure-ftpd\'s anonymous root) does not exist';
      return null;
  }
}

function pureFtpdBin(): string {
  return path.join(LAB_CACHE, 'pure-ftpd/usr/sbin/pure-ftpd');
}

/** Which (client, mode, family) combinations the Debian client programs can do. */
export function clientSupports(client: ClientKind, mode: Mode, family: Family): boolean {
  switch (client) {
    // curl(1): --disable-epsv sends PASV, -P - goes active with EPRT, --disable-eprt with PORT.
    // Over IPv6 curl always uses EPSV/EPRT (PASV/PORT cannot carry an IPv6 address).
    case 'curl':
      return family === 4 || mode === 'epsv' || mode === 'eprt';
    // lftp: ftp:prefer-epsv chooses EPSV over PASV on IPv4; active IPv4 is PORT only.
    case 'lftp':
      return family === 4 ? mode !== 'eprt' : mode === 'epsv' || mode === 'eprt';
    // tnftp: epsv4 on/off switches EPSV/EPRT vs PASV/PORT on IPv4.
    case 'tnftp':
      return family === 4 || mode === 'epsv' || mode === 'eprt';
    // wget: passive is PASV on IPv4 and EPSV on IPv6; --no-passive-ftp is PORT / EPRT.
    case 'wget':
      return family === 4 ? mode === 'pasv' || mode === 'port' : mode === 'epsv' || mode === 'eprt';
  }
}

function isActive(mode: Mode): boolean {
  return mode === 'eprt' || mode === 'port';
}

/** Host part of an ftp:// URL. */
function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** Delete every namespace `<prefix>-*` after killing the processes inside it. */
export function cleanupPrefix(prefix: string): string[] {
  const list = sh(['ip', 'netns', 'list']);
  const removed: string[] = [];
  for (const line of list.stdout.split('\n')) {
    const name = line.split(' ')[0];
    if (!name || !name.startsWith(`${prefix}-`)) continue;
    const pids = sh(['ip', 'netns', 'pids', name]).stdout.split(/\s+/).filter((p) => /^\d+$/.test(p));
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
    sh(['ip', 'netns', 'del', name]);
    removed.push(name);
  }
  return removed;
}

/** Wait until fn() is true, polling every stepMs; false on timeout. */
async function waitFor(fn: () => boolean, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (fn()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

function exited(p: ChildProcess): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

/** Send sig, then SIGKILL after graceMs; resolves when the process is gone. */
function killAndWait(p: ChildProcess, sig: NodeJS.Signals, graceMs = 3000): Promise<void> {
  if (exited(p)) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      if (!exited(p)) p.kill('SIGKILL');
    }, graceMs);
    p.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    p.kill(sig);
  });
}

/** nft ruleset for a policy (nft(8) syntax); `deny` is DESIGN.md's text verbatim. */
/** One line of /proc/net/netfilter/nfnetlink_queue (per network namespace). */
export interface NfqueueStat {
  /** packets queued so far: the last packet id (id_sequence) */
  idSequence: number;
  /** dropped by the kernel: queue full, and netlink socket full */
  queueDropped: number;
  userDropped: number;
}

/**
 * The kernel's NFQUEUE table in the gateway, by queue number.  Each line is
 * "queue portid total copy_mode copy_range queue_dropped user_dropped
 * id_sequence 1" (net/netfilter/nfnetlink_queue.c, seq_show).
 */
export function nfqueueStats(lab: Lab): Map<number, NfqueueStat> {
  const m = new Map<number, NfqueueStat>();
  for (const line of lab.run(lab.ns.gateway, ['cat', '/proc/net/netfilter/nfnetlink_queue']).stdout.trim().split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8) m.set(Number(f[0]), { queueDropped: Number(f[5]), userDropped: Number(f[6]), idSequence: Number(f[7]) });
  }
  return m;
}

export function nftRuleset(policy: Policy): string {
  const sets = [
    '  set ftp6proxy4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }',
    '  set ftp6proxy6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }',
  ];
  switch (policy) {
    case 'open':
      return ['table inet filter {', ...sets,
        '  chain forward { type filter hook forward priority 0; policy accept;', '  }', '}', ''].join('\n');
    case 'deny':
      return ['table inet filter {', ...sets,
        '  chain forward { type filter hook forward priority 0; policy drop;',
        '    ct state established accept',
        '    tcp dport 21 ct state new accept',
        '    ip  saddr . ip  daddr . tcp dport @ftp6proxy4 ct state new accept',
        '    ip6 saddr . ip6 daddr . tcp dport @ftp6proxy6 ct state new accept',
        '  }', '}', ''].join('\n');
    case 'helper':
      // The kernel's own FTP helper (nf_conntrack_ftp) creates an expectation
      // from PORT/EPRT/227/229, and the data connection's first packet is then
      // `ct state related` (nft(8), "CT HELPER"; the helper must be attached
      // before the connection is confirmed, which the forward hook still is).
      return ['table inet filter {',
        '  ct helper ftp-standard { type "ftp" protocol tcp; l3proto inet; }', ...sets,
        '  chain forward { type filter hook forward priority 0; policy drop;',
        '    ct state established accept',
        '    ct state related accept',
        '    tcp dport 21 ct state new ct helper set "ftp-standard" accept',
        '  }', '}', ''].join('\n');
  }
}

interface Tracked {
  procs: Set<ChildProcess>;
  destroyed: boolean;
}

export function createLab(opts: LabOptions = {}): Lab {
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  if (!/^[A-Za-z0-9_]{1,12}$/.test(prefix)) throw new Error(`lab: bad prefix ${JSON.stringify(prefix)} (1-12 of [A-Za-z0-9_])`);
  const log = opts.log ?? (() => undefined);
  const ns = { client: `${prefix}-cli`, gateway: `${prefix}-gw`, server: `${prefix}-srv`, victim: `${prefix}-vic` };
  const addr: LabAddrs = {
    client: { 6: 'fd00:c1::10', 4: '198.18.1.10' },
    victim: { 6: 'fd00:c1::20', 4: '198.18.1.20' },
    gwClient: { 6: 'fd00:c1::1', 4: '198.18.1.1' },
    gwServer: { 6: 'fd00:5e::1', 4: '198.18.2.1' },
    server: { 6: 'fd00:5e::10', 4: '198.18.2.10' },
  };
  const iface = { gwClient: 'br0', gwServer: 'srv0' };
  const state: Tracked = { procs: new Set(), destroyed: false };

  const removed = cleanupPrefix(prefix);
  if (removed.length > 0) log(`removed leftovers of an earlier run: ${removed.join(' ')}`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  // vsftpd serves anonymous users as the unprivileged `ftp` user: the path down
  // to the FTP root must be searchable, and the root itself not writable by it.
  fs.chmodSync(dir, 0o755);
  const ftpRoot = path.join(dir, 'ftp');
  const files: ServedFiles = {
    small: { name: 'hello.txt', content: 'hello from the ftp6proxy lab\n' },
    dir: {
      name: 'pub',
      entries: { 'a.txt': 'file a\n', 'b.txt': 'file b, a little longer\n', 'c.txt': 'file c\n'.repeat(10) },
    },
    big: { name: 'big.bin', size: opts.bigSize ?? 4 * 1024 * 1024 },
  };

  const run = (n: string, argv: string[], o: { timeoutMs?: number; input?: string } = {}): RunResult =>
    sh(['ip', 'netns', 'exec', n, ...argv], o);
  const runMust = (n: string, argv: string[]): RunResult => must(['ip', 'netns', 'exec', n, ...argv]);

  const spawnIn = (n: string, argv: string[], o: SpawnOptions = {}): ChildProcess => {
    const p = spawn('ip', ['netns', 'exec', n, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], ...o });
    state.procs.add(p);
    p.once('exit', () => state.procs.delete(p));
    // Without a listener a failed spawn would throw asynchronously.
    p.on('error', () => undefined);
    return p;
  };

  const runAsync = (n: string, argv: string[], o: { timeoutMs?: number; input?: string } = {}): Promise<RunResult> =>
    new Promise((resolve) => {
      const p = spawnIn(n, argv, { stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      p.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      p.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      if (p.stdin) {
        p.stdin.on('error', () => undefined);
        p.stdin.end(o.input);
      }
      const t = setTimeout(() => {
        timedOut = true;
        p.kill('SIGKILL');
      }, o.timeoutMs ?? 15000);
      p.once('error', (e) => {
        stderr += `${e.message}\n`;
      });
      p.once('close', (status, signal) => {
        clearTimeout(t);
        resolve({ argv, status, signal, stdout, stderr, timedOut });
      });
    });

  const destroy = async (): Promise<void> => {
    if (state.destroyed) return;
    state.destroyed = true;
    await Promise.all([...state.procs].map((p) => killAndWait(p, 'SIGTERM', 1000)));
    cleanupPrefix(prefix);
    fs.rmSync(dir, { recursive: true, force: true });
    log(`lab ${prefix} torn down`);
  };

  try {
    // Served files.
    fs.mkdirSync(path.join(ftpRoot, files.dir.name), { recursive: true, mode: 0o755 });
    fs.chmodSync(ftpRoot, 0o755);
    fs.chmodSync(path.join(ftpRoot, files.dir.name), 0o755);
    fs.writeFileSync(path.join(ftpRoot, files.small.name), files.small.content, { mode: 0o644 });
    for (const [n, c] of Object.entries(files.dir.entries)) {
      fs.writeFileSync(path.join(ftpRoot, files.dir.name, n), c, { mode: 0o644 });
    }
    const big = Buffer.alloc(files.big.size);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 10)) & 0xff;
    fs.writeFileSync(path.join(ftpRoot, files.big.name), big, { mode: 0o644 });

    for (const n of Object.values(ns)) {
      must(['ip', 'netns', 'add', n]);
      // DAD would keep new IPv6 addresses tentative for a second or more;
      // these sysctls apply to interfaces created afterwards in this namespace.
      for (const k of ['all', 'default']) {
        runMust(n, ['sysctl', '-q', '-w', `net.ipv6.conf.${k}.accept_dad=0`]);
        runMust(n, ['sysctl', '-q', '-w', `net.ipv6.conf.${k}.dad_transmits=0`]);
      }
      runMust(n, ['ip', 'link', 'set', 'lo', 'up']);
    }
    const gw = ns.gateway;
    // Gateway: a bridge for the client LAN (client + victim), a routed link to the server.
    must(['ip', '-n', gw, 'link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    must(['ip', '-n', gw, 'link', 'add', 'cli0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.client]);
    must(['ip', '-n', gw, 'link', 'add', 'vic0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.victim]);
    must(['ip', '-n', gw, 'link', 'add', 'srv0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.server]);
    for (const port of ['cli0', 'vic0']) {
      must(['ip', '-n', gw, 'link', 'set', port, 'master', 'br0']);
      must(['ip', '-n', gw, 'link', 'set', port, 'up']);
    }
    const addAddrs = (n: string, dev: string, a: AddrPair, plen4: number, plen6: number): void => {
      must(['ip', '-n', n, 'addr', 'add', `${a[4]}/${plen4}`, 'dev', dev]);
      must(['ip', '-n', n, '-6', 'addr', 'add', `${a[6]}/${plen6}`, 'dev', dev, 'nodad']);
      must(['ip', '-n', n, 'link', 'set', dev, 'up']);
    };
    addAddrs(gw, 'br0', addr.gwClient, 24, 64);
    addAddrs(gw, 'srv0', addr.gwServer, 24, 64);
    runMust(gw, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    runMust(gw, ['sysctl', '-q', '-w', 'net.ipv6.conf.all.forwarding=1']);
    const hosts: Array<[string, AddrPair, AddrPair]> = [
      [ns.client, addr.client, addr.gwClient],
      [ns.victim, addr.victim, addr.gwClient],
      [ns.server, addr.server, addr.gwServer],
    ];
    for (const [n, a, via] of hosts) {
      addAddrs(n, 'eth0', a, 24, 64);
      must(['ip', '-n', n, 'route', 'add', 'default', 'via', via[4]]);
      must(['ip', '-n', n, '-6', 'route', 'add', 'default', 'via', via[6]]);
    }
    log(`lab ${prefix}: namespaces ${Object.values(ns).join(' ')} up`);
  } catch (e) {
    cleanupPrefix(prefix);
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }

  const setPolicy = (policy: Policy, queueNum = opts.queueNum ?? DEFAULT_QUEUE, popts: PolicyOptions = {}): void => {
    const gw = ns.gateway;
    run(gw, ['nft', 'flush', 'ruleset']);
    // iptables-nft keeps its own tables (ip filter / ip6 filter) beside ours;
    // flush ruleset above removed them, and they are re-created below for 'deny'.
    must(['ip', 'netns', 'exec', gw, 'nft', '-f', '-'], { input: nftRuleset(policy) });
    if (policy === 'deny' && popts.selective === true) {
      for (const family of [4, 6] as const) {
        for (const argv of selectiveRules({ family, queue: queueNum, ...SELECTIVE_BITS })) runMust(gw, argv);
      }
    } else if (policy === 'deny') {
      for (const tool of ['iptables', 'ip6tables']) {
        for (const dir of ['--dport', '--sport']) {
          // --queue-bypass: with no program bound to the queue the packet
          // continues as if accepted, so the control channel works without
          // ftp6proxy and only data connections are refused.
          runMust(gw, [tool, '-A', 'FORWARD', '-p', 'tcp', dir, '21',
            ...(popts.dataOnly ? ['-m', 'u32', '--u32', U32_PAYLOAD[tool === 'iptables' ? 4 : 6]] : []),
            '-j', 'NFQUEUE', '--queue-num', String(queueNum), '--queue-bypass']);
        }
      }
    }
    log(`lab ${prefix}: gateway policy ${policy}${policy === 'deny' ? ` (NFQUEUE ${queueNum}${popts.selective === true ? ', selective' : ''})` : ''}`);
  };

  const nftList = (): string => run(ns.gateway, ['nft', 'list', 'ruleset']).stdout;

  const listening21 = (): boolean => {
    const out = run(ns.server, ['ss', '-Hltn']).stdout;
    return /[\]:*.]21\s/.test(out);
  };

  const startServer = async (kind: ServerKind): Promise<FtpServer> => {
    const why = serverAvailable(kind);
    if (why) throw new Error(`lab: cannot start ${kind}: ${why}`);
    if (listening21()) throw new Error('lab: port 21 already in use in the server namespace (stop the other server first)');
    let argv: string[];
    switch (kind) {
      case 'vsftpd': {
        const empty = path.join(dir, 'vsftpd-empty');
        fs.mkdirSync(empty, { recursive: true, mode: 0o755 });
        const conf = path.join(dir, 'vsftpd.conf');
        // vsftpd.conf(5). listen_ipv6 on a dual-stack socket also accepts IPv4
        // (net.ipv6.bindv6only is 0 in a new namespace).
        fs.writeFileSync(conf, [
          'listen=NO', 'listen_ipv6=YES', 'listen_port=21', 'background=NO',
          'anonymous_enable=YES', 'no_anon_password=YES', `anon_root=${ftpRoot}`,
          'local_enable=NO', 'write_enable=NO', 'ftp_username=ftp',
          'pasv_enable=YES', `pasv_min_port=${PASV_MIN}`, `pasv_max_port=${PASV_MAX}`,
          'port_enable=YES', 'connect_from_port_20=YES',
          `secure_chroot_dir=${empty}`, 'seccomp_sandbox=NO',
          'xferlog_enable=NO', `vsftpd_log_file=${path.join(dir, 'vsftpd.log')}`,
          'dirmessage_enable=NO', 'use_localtime=NO', 'ls_recurse_enable=NO',
          '',
        ].join('\n'));
        argv = ['/usr/sbin/vsftpd', conf];
        break;
      }
      case 'pyftpdlib':
        // python -m pyftpdlib: anonymous read-only by default. -i :: binds a
        // dual-stack socket (pyftpdlib leaves IPV6_V6ONLY off).
        argv = [SYSTEM_PYTHON, '-m', 'pyftpdlib', '-i', '::', '-p', '21', '-d', ftpRoot, '-r', `${PASV_MIN}-${PASV_MAX}`];
        break;
      case 'pure-ftpd':
        // pure-ftpd serves anonymous users from the `ftp` user's home, /srv/ftp.
        // A private mount namespace bind-mounts our root there, for this process only.
        argv = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
          'mount --bind "$1" /srv/ftp && shift && exec "$@"', 'sh', ftpRoot,
          // -e anonymous only, -S ,21 any address port 21, -p passive range,
          // -H no reverse DNS, -A chroot everyone, -i anonymous cannot upload.
          pureFtpdBin(), '-e', '-S', ',21', '-p', `${PASV_MIN}:${PASV_MAX}`, '-H', '-A', '-i'];
        break;
    }
    const proc = spawnIn(ns.server, argv);
    let out = '';
    proc.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    proc.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
    const up = await waitFor(() => exited(proc) || listening21(), 5000);
    if (!up || exited(proc)) {
      await killAndWait(proc, 'SIGKILL');
      throw new Error(`lab: ${kind} did not start listening on port 21: ${out.trim()}`);
    }
    log(`lab ${prefix}: ${kind} listening in ${ns.server}`);
    return {
      kind,
      proc,
      output: () => out,
      stop: async () => {
        await killAndWait(proc, 'SIGTERM');
        await waitFor(() => !listening21(), 3000);
      },
    };
  };

  const clientArgv = (req: ClientRequest, out: string): string[] => {
    const host = req.host ?? addr.server[req.family];
    const p = req.path ?? files.small.name;
    const url = `ftp://${urlHost(host)}/${p}`;
    const active = isActive(req.mode);
    const extended = req.mode === 'epsv' || req.mode === 'eprt';
    switch (req.client) {
      case 'curl': {
        const a = ['curl', '-sS', '--connect-timeout', '5', '-o', out];
        if (active) a.push('-P', '-');
        if (req.mode === 'pasv') a.push('--disable-epsv');
        if (req.mode === 'port') a.push('--disable-eprt');
        return [...a, url];
      }
      case 'lftp': {
        const cmds = [
          'set cmd:fail-exit yes', 'set net:timeout 5', 'set net:max-retries 1',
          'set net:reconnect-interval-base 1', `set ftp:passive-mode ${active ? 'off' : 'on'}`,
          `set ftp:prefer-epsv ${extended ? 'yes' : 'no'}`, 'set ftp:use-mlsd no',
          `open ftp://${urlHost(host)}`,
          p.endsWith('/') ? `cls -1 ${p} > ${out}` : `get ${p} -o ${out}`,
        ];
        return ['lftp', '-c', cmds.join('; ')];
      }
      case 'tnftp':
        // Script on stdin: see runClient.
        return ['tnftp', '-n', '-i', active ? '-A' : '-p', ...(req.family === 6 ? ['-6'] : ['-4']), host];
      case 'wget': {
        const a = ['wget', '-q', '--timeout=5', '--tries=1', '-O', out];
        if (active) a.push('--no-passive-ftp');
        if (p.endsWith('/')) a.push('--no-remove-listing');
        return [...a, url];
      }
    }
  };

  const runClient = async (req: ClientRequest): Promise<ClientResult> => {
    if (!clientSupports(req.client, req.mode, req.family)) {
      throw new Error(`lab: ${req.client} cannot do ${req.mode.toUpperCase()} over IPv${req.family}`);
    }
    const p = req.path ?? files.small.name;
    const out = path.join(dir, `client-${process.hrtime.bigint()}.out`);
    const argv = clientArgv(req, out);
    let r: RunResult;
    if (req.client === 'tnftp') {
      const ext = req.mode === 'epsv' || req.mode === 'eprt';
      const script = [
        'user anonymous lab@example.org',
        req.family === 4 ? `epsv4 ${ext ? 'on' : 'off'}` : 'epsv6 on',
        'binary',
        p.endsWith('/') ? `ls ${p} ${out}` : `get ${p} ${out}`,
        'quit', '',
      ].join('\n');
      r = await runAsync(ns.client, argv, { input: script, timeoutMs: req.timeoutMs ?? 15000 });
    } else {
      r = await runAsync(ns.client, argv, { timeoutMs: req.timeoutMs ?? 15000 });
    }
    let received = '';
    try {
      received = fs.readFileSync(out, 'utf8');
      fs.rmSync(out, { force: true });
    } catch {
      // no output file: the transfer did not start
    }
    let reason = '';
    if (r.timedOut) reason = 'timed out';
    else if (r.status !== 0) reason = `exit ${r.status ?? r.signal}: ${(r.stderr || r.stdout).trim().split('\n').slice(-2).join(' | ')}`;
    else if (p.endsWith('/')) {
      const dirName = p.replace(/\/+$/, '').split('/').pop() ?? '';
      const names = dirName === files.dir.name ? Object.keys(files.dir.entries) : [files.small.name];
      const missing = names.filter((n) => !received.includes(n));
      if (missing.length > 0) reason = `listing lacks ${missing.join(', ')}`;
    } else {
      const expected = expectedContent(p);
      if (expected !== null && received !== expected) reason = `wrong content (${received.length} bytes, expected ${expected.length})`;
      // tnftp exits 0 even when the data connection fails; the content check catches it.
    }
    return { ...r, ok: reason === '', reason, received };
  };

  const expectedContent = (p: string): string | null => {
    const clean = p.replace(/^\/+/, '');
    if (clean === files.small.name) return files.small.content;
    const [d, f] = clean.split('/');
    if (d === files.dir.name && f !== undefined && f in files.dir.entries) return files.dir.entries[f];
    return null;
  };

  const startCapture = async (
    file: string,
    o: { filter?: string; iface?: string; snaplen?: number } = {},
  ): Promise<Capture> => {
    // tcpdump(8): -w writes pcap (not pcapng); -U flushes per packet, and
    // --immediate-mode hands each packet over at once (otherwise libpcap's
    // TPACKET_V3 ring holds packets up to its 1 s block timeout, and the ones
    // still in the ring are lost at SIGINT); -s sets the snapshot length.
    // -B: a larger kernel buffer (KiB) so that bursts are not dropped.
    const argv = ['tcpdump', '-n', '-U', '--immediate-mode', '-B', '8192', '-i', o.iface ?? iface.gwServer, '-s', String(o.snaplen ?? 65535), '-w', file];
    if (o.filter) argv.push(...o.filter.split(/\s+/));
    const proc = spawnIn(ns.gateway, argv);
    let err = '';
    proc.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
    const up = await waitFor(() => exited(proc) || err.includes('listening on'), 5000);
    if (!up || exited(proc)) {
      await killAndWait(proc, 'SIGKILL');
      throw new Error(`lab: tcpdump did not start: ${err.trim()}`);
    }
    return {
      file,
      stop: async () => {
        // Let the last packets of a closing connection reach the capture.
        await new Promise((r) => setTimeout(r, 200));
        await killAndWait(proc, 'SIGINT');
        const num = (re: RegExp): number => Number(re.exec(err)?.[1] ?? NaN);
        return { captured: num(/(\d+) packets? captured/), dropped: num(/(\d+) packets? dropped by kernel/) };
      },
    };
  };

  const lab: Lab = {
    prefix, ns, addr, iface, dir, ftpRoot, files,
    run, runAsync, spawnIn, setPolicy, nftList, startServer, runClient, startCapture, destroy,
  };
  try {
    setPolicy(opts.policy ?? 'open');
  } catch (e) {
    void destroy();
    throw e;
  }
  return lab;
}

/** Build a lab, run fn, and always tear the lab down. */
export async function withLab<T>(opts: LabOptions, fn: (lab: Lab) => Promise<T>): Promise<T> {
  const lab = createLab(opts);
  const onSignal = (): void => {
    void lab.destroy().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await fn(lab);
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await lab.destroy();
  }
}
