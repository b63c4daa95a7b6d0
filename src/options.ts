/**
 * Command line: getopt(3) semantics, the original's options and defaults,
 * and the usage texts of legacy/ byte for byte (apart from the version).
 *
 * minimist is not used: it is not getopt(3).  It permutes operands, accepts
 * `--long` forms, guesses numbers and cannot report an unknown option the BSD
 * way.  The 60 lines below are the whole of getopt that we need.
 */
import { isBit } from './firewall/selective';
import { MODULES, ModuleName } from './types';

/**
 * -w's default with -s, ms (src/warm.ts).  Without -s the default is 0: with
 * every control packet queued, the client's EPSV wakes the daemon just
 * before the 229 anyway, and rehearsals only compete for the CPU (an A/B of
 * 250 transfers: 1.300 against 1.268 of the open gateway's time); and the
 * other modules' holes are ipfw(8) or pfctl(8) runs, milliseconds that no
 * warm cache saves.
 */
export const DEFAULT_WARM_MS = 2;

export const VERSION = 'V0.5';

export interface Options {
  module: ModuleName;
  /** -b: first rule number of the pool */
  base: number;
  /** -c: pool size */
  count: number;
  /** -d given once (1) or twice (2) */
  debug: number;
  /** -f: syslog facility name */
  facility: string;
  /** -i */
  pidfile: string;
  /** -j: ipfw rule to `call` instead of allow */
  target?: number;
  /** -p: divert port, ng_ipfw hook or NFQUEUE number */
  port: number;
  /** -q: pf ALTQ queue */
  queue?: string;
  /** -r */
  rootDir: string;
  /** -t: seconds */
  timeout: number;
  /** -u */
  user: string;
  /** -a: pf anchor, or nftables family/table */
  anchor: string;
  /** -n: shadow mode, log the rule operations, touch no firewall */
  shadow: boolean;
  /** -s: selective queueing; the conntrack mark bit that asks the kernel for every server packet (0: off) */
  seeAllMark: number;
  /** -w: ms between rehearsals of the packet path while FTP is active (src/warm.ts); 0: none; default DEFAULT_WARM_MS with -s, else 0 */
  warmMs: number;
  /** -h */
  help: boolean;
}

/** Option letters that take a value.  The original's: b c f i j p q r t u; ours: m a s w. */
const WITH_VALUE = new Set(['a', 'b', 'c', 'f', 'i', 'j', 'm', 'p', 'q', 'r', 's', 't', 'u', 'w']);
/** Flags without a value.  The original's: d h; ours: n. */
const FLAGS = new Set(['d', 'h', 'n']);

export class UsageError extends Error {
  /** print the synopsis after the message (getopt errors) */
  readonly showUsage: boolean;
  constructor(message: string, showUsage = false) {
    super(message);
    this.name = 'UsageError';
    this.showUsage = showUsage;
  }
}

export interface GetoptResult {
  opts: Array<[string, string | true]>;
  operands: string[];
}

/**
 * POSIX getopt(3): options are clustered (`-dd`), values attached or separate
 * (`-b64000`, `-b 64000`), `--` ends the options, the first operand ends them too.
 */
export function getopt(argv: readonly string[], withValue = WITH_VALUE, flags = FLAGS): GetoptResult {
  const opts: Array<[string, string | true]> = [];
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      i++;
      break;
    }
    if (arg.length < 2 || arg[0] !== '-') break;
    for (let j = 1; j < arg.length; j++) {
      const c = arg[j];
      if (withValue.has(c)) {
        let value: string;
        if (j + 1 < arg.length) value = arg.slice(j + 1);
        else if (i + 1 < argv.length) value = argv[++i];
        else throw new UsageError(`option requires an argument -- ${c}`, true);
        opts.push([c, value]);
        break;
      } else if (flags.has(c)) {
        opts.push([c, true]);
      } else {
        throw new UsageError(`illegal option -- ${c}`, true);
      }
    }
  }
  return { opts, operands: argv.slice(i) };
}

/** The syslog facility names syslog(3) knows (sys/syslog.h). */
export const FACILITY_NAMES = [
  'kern', 'user', 'mail', 'daemon', 'auth', 'syslog', 'lpr', 'news', 'uucp', 'cron',
  'authpriv', 'ftp', 'local0', 'local1', 'local2', 'local3', 'local4', 'local5', 'local6', 'local7',
] as const;

function number(opt: string, v: string, min: number, max: number): number {
  if (!/^[0-9]+$/.test(v)) throw new UsageError(`-${opt}: "${v}" is not a number`);
  const n = Number(v);
  if (n < min || n > max) throw new UsageError(`-${opt}: ${v} is out of range ${min}..${max}`);
  return n;
}

function path(opt: string, v: string): string {
  if (v === '' || v.includes('\0')) throw new UsageError(`-${opt}: empty path`);
  return v;
}

/** Which options each module understands beyond the common ones. */
const ONLY_FOR: Record<string, readonly ModuleName[]> = {
  j: ['ipfw', 'netgraph'],
  q: ['pf'],
  a: ['pf', 'nftables'],
  s: ['nftables'],
};

const WHY_NOT: Record<string, string> = {
  j: 'ipfw rule to call; only the ipfw and netgraph modules have ipfw rules',
  q: 'pf QoS class; only the pf module can place data connections into a queue',
  a: 'anchor (pf) or family/table (nftables); the ipfw and netgraph modules use rule numbers (-b, -c)',
  s: 'selective queueing with a conntrack mark; only the nftables module (NFQUEUE) has one',
};

export function defaultsFor(module: ModuleName): Options {
  return {
    module,
    base: 64000,
    count: 100,
    debug: 0,
    facility: 'daemon',
    pidfile: '/var/run/ftp6proxy.pid',
    port: 10004,
    rootDir: '/var/empty',
    timeout: 2,
    user: 'proxy',
    anchor: module === 'nftables' ? 'inet/filter' : 'ftp6proxy',
    shadow: false,
    seeAllMark: 0,
    warmMs: 0,
    help: false,
  };
}

/** Parse and validate.  Throws UsageError; opens nothing. */
export function parseOptions(argv: readonly string[], defaultModule: ModuleName): Options {
  const { options, operands } = parseCommandLine(argv, defaultModule);
  if (operands.length > 0) throw new UsageError(`unexpected argument "${operands[0]}"`, true);
  return options;
}

/** As parseOptions, for tools that take operands after the options (ftp6proxy-replay). */
export function parseCommandLine(argv: readonly string[], defaultModule: ModuleName): { options: Options; operands: string[] } {
  const { opts, operands } = getopt(argv);

  // The module decides the defaults and what is allowed, so find it first.
  let module = defaultModule;
  for (const [c, v] of opts) {
    if (c === 'm') {
      if (!(MODULES as readonly string[]).includes(v as string))
        throw new UsageError(`-m: unknown module "${v}"; use one of ${MODULES.join(', ')}`);
      module = v as ModuleName;
    }
  }
  const o = defaultsFor(module);
  for (const [c] of opts) {
    if (c === 'h') o.help = true;
  }
  if (o.help) return { options: o, operands };

  let warmGiven = false;
  for (const [c, v] of opts) {
    const only = ONLY_FOR[c];
    if (only !== undefined && !only.includes(module))
      throw new UsageError(`-${c} (${WHY_NOT[c]}) does not apply to module ${module}`);
    const s = v as string;
    switch (c) {
      case 'b': o.base = number(c, s, 1, 65535); break;
      case 'c': o.count = number(c, s, 1, 65535); break;
      case 'd': o.debug++; break;
      case 'f':
        if (!(FACILITY_NAMES as readonly string[]).includes(s))
          throw new UsageError(`-f: unknown syslog facility "${s}"; use one of ${FACILITY_NAMES.join(' ')}`);
        o.facility = s;
        break;
      case 'i': o.pidfile = path(c, s); break;
      case 'j': o.target = number(c, s, 1, 65534); break;
      case 'p': o.port = number(c, s, 1, 65535); break;
      case 'q':
        // PF_QNAME_SIZE is 64 (net/pfvar.h); names are identifiers.
        if (!/^[A-Za-z_][A-Za-z0-9_-]{0,62}$/.test(s)) throw new UsageError(`-q: "${s}" is not a pf queue name`);
        o.queue = s;
        break;
      case 'r': o.rootDir = path(c, s); break;
      case 't': o.timeout = number(c, s, 1, 3600); break;
      case 'u':
        if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/.test(s)) throw new UsageError(`-u: "${s}" is not a user name`);
        o.user = s;
        break;
      case 'a': o.anchor = validAnchor(module, s); break;
      case 'm': break;
      case 'n': o.shadow = true; break;
      case 's': o.seeAllMark = markBit(s); break;
      case 'w': o.warmMs = number(c, s, 0, 1000); warmGiven = true; break;
      default: throw new UsageError(`illegal option -- ${c}`, true);
    }
  }
  // -s queues only the packets that open holes: each comes to a process
  // that has slept since the last one, so keep its path warm unless told
  if (!warmGiven && o.seeAllMark !== 0) o.warmMs = DEFAULT_WARM_MS;
  if (o.debug > 2) throw new UsageError('-d may be given at most twice');
  if (o.shadow && o.seeAllMark !== 0)
    throw new UsageError('-s and -n do not go together: shadow mode (NFLOG) holds no packet and sets no mark');
  if (o.base + o.count > 65535)
    throw new UsageError(`-b ${o.base} -c ${o.count}: the pool would end at ${o.base + o.count - 1}, beyond rule 65534 (65535 is the default rule)`);
  if (o.target !== undefined && o.target >= o.base && o.target < o.base + o.count)
    throw new UsageError(`-j ${o.target} lies inside the hole pool ${o.base}..${o.base + o.count - 1}`);
  return { options: o, operands };
}

/** -s: one conntrack mark bit, in hex (0x...) or decimal. */
function markBit(v: string): number {
  const n = /^0[xX][0-9a-fA-F]{1,8}$/.test(v) ? parseInt(v.slice(2), 16) : /^[0-9]{1,10}$/.test(v) ? Number(v) : NaN;
  if (!isBit(n))
    throw new UsageError(`-s: "${v}" is not a single conntrack mark bit (a power of two such as 0x100000)`);
  return n;
}

function validAnchor(module: ModuleName, s: string): string {
  if (module === 'nftables') {
    const m = /^(ip|ip6|inet)\/([A-Za-z0-9_][A-Za-z0-9_.-]{0,254})$/.exec(s);
    if (m === null) throw new UsageError(`-a: "${s}" is not family/table (family ip, ip6 or inet), e.g. inet/filter`);
    return s;
  }
  // pf anchor names: path components of [A-Za-z0-9_-] (pfctl refuses spaces and quotes).
  if (!/^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/.test(s) || s.length > 200)
    throw new UsageError(`-a: "${s}" is not a pf anchor name`);
  return s;
}

const P_LINES: Record<ModuleName, string> = {
  ipfw: '  -p <port>      divert(4) port number to listen on; defaults to 10004',
  pf: '  -p <port>      divert(4) port number to listen on; defaults to 10004',
  netgraph: '  -p <hook>      ng_ipfw(4) hook to connect to; defaults to 10004',
  nftables: '  -p <queue>     NFQUEUE number to listen on; defaults to 10004',
};

const MODULE_LABEL: Record<ModuleName, string> = {
  ipfw: 'ipfw',
  pf: 'pf',
  netgraph: 'ipfw/netgraph',
  nftables: 'nftables',
};

/** The original's -h text for the module (legacy/usage-v0.3-ipfw.txt layout), our version number. */
export function usageText(module: ModuleName): string {
  return [
    `ftp6proxy ${VERSION} - IPv6/IPv4 FTP firewall helper`,
    '',
    `compiled-in firewall module: ${MODULE_LABEL[module]}`,
    '',
    SYNOPSIS,
    '',
    '  -b <base>      punch holes into firewall starting at this rule number;',
    '                 default: 64000',
    '  -c <count>     use up to <count> firewall rules; default: 100',
    '  -d             run in foreground, don\'t write pidfile',
    '  -d -d          run in foreground, don\'t write pidfile, don\'t chroot,',
    '                 debug log to stderr, don\'t drop privileges',
    '  -f <facility>  send syslog to <facility>; default: daemon',
    '  -i <pidfile>   write pid to <pidfile> instead of /var/run/ftp6proxy.pid',
    '  -j <target>    call this ipfw rule number instead of allowing the data',
    '                 connection',
    P_LINES[module],
    '  -q <queue>     place data connections into this pf QoS class',
    '  -r <dir>       chroot into <dir> instead of /var/empty',
    '  -t <timeout>   wait up to <timeout> seconds for data connections;',
    '                 defaults to 2 seconds',
    '  -u <user>      run as user <user> instead of proxy',
    '  -h             show this help ;-)',
    '',
  ].join('\n');
}

export const SYNOPSIS = [
  'usage: ftp6proxy [-b <base>] [-c <count>] [-d [-d]] [-f <facility>]',
  '                 [-i <pidfile>] [-j <target>] [-p <port>] [-q <queue>]',
  '                 [-r <dir>] [-t <timeout>] [-u <user>]',
  '       ftp6proxy -h',
].join('\n');
