/**
 * ipfw(8) holes for the ipfw and netgraph modules.
 *
 * One hole = one static rule numbered from the pool -b .. -b+-c-1:
 *
 *   ipfw -q add 64000 allow tcp from 2001:db8::10 to 2001:db8:1::20 50000 setup keep-state
 *   ipfw -q add 64000 call 5000 tcp from 2001:db8::10 to 2001:db8:1::20 50000 setup keep-state   (-j 5000)
 *
 * - `setup` matches only a SYN without ACK: the rule admits the start of a
 *   connection and nothing else.
 * - `keep-state` creates a bidirectional dynamic rule for the connection that
 *   matched; it carries the rest of the transfer, also after the static rule is
 *   deleted (-t seconds later) provided net.inet.ip.fw.dyn_keep_states=1.
 *   Without `limit`, every SYN from the client's address to that port within
 *   the -t window is admitted (any number of connections, for -t seconds).
 * - `limit src-addr 1` (option `limit: true`) instead of keep-state: the same
 *   kind of dynamic rule, but at most one per source address, i.e. exactly one
 *   connection at a time through this hole; a SYN retransmit still matches the
 *   state it created.  With dyn_keep_states=1 the child states of a limit rule
 *   outlive the rule like keep-state ones (ip_fw_dynamic.c dyn_match_ipv4_state
 *   expires only the O_LIMIT_PARENT state); only the counting parent goes.
 *   Off by default because the documented form of the original is keep-state.
 * - `call T` (-j): the packet runs the administrator's rules from T and
 *   resumes at N+1 after their `return`.  `skipto` cannot be used, as it
 *   cannot jump backwards from 64000 (a target at or below the current rule
 *   becomes current+1).  Each packet matching the dynamic rule runs `call T`
 *   again.
 *
 * Deleting (close, -t seconds after open):
 *
 *   ipfw -q delete 64000
 *
 * By default deleting a rule also expires the dynamic rules it created, which
 * cuts a running transfer.  With net.inet.ip.fw.dyn_keep_states=1 (FreeBSD
 * 12.1 and later) they survive.  When it is 0 (or the sysctl does not exist),
 * we warn once and, before deleting, look at the rule's dynamic rules with
 *
 *   ipfw -d show 64000
 *
 * and keep the rule (close() resolves false, the caller asks again later)
 * while any are alive.
 *
 * Sweep (start and stop): `ipfw -q delete 64000-64099`.  Ranges in `delete`
 * are accepted by ipfw(8) on current FreeBSD (IP_FW_XDEL takes a rule range);
 * UNCONFIRMED here against the man page, which is not installed on this host.
 * An empty range makes ipfw exit non-zero, which is not an error for us.
 *
 * ipfw checks privilege on every call (ipfw_ctl3: priv_check
 * PRIV_NETINET_IPFW), so these commands must run as root: on FreeBSD the
 * runner belongs in the privileged helper.
 */
import { Clock, Firewall, FtpProxyError, Hole, Logger } from '../types';
import { checkHoleForCommand, CommandResult, CommandRunner, shellQuote } from './runner';

export const DYN_KEEP_STATES_SYSCTL = 'net.inet.ip.fw.dyn_keep_states';
/** highest rule number usable for holes: 65535 is the default rule */
const MAX_RULE = 65534;

export interface IpfwFirewallOptions {
  /** -b: first rule number of the pool */
  base: number;
  /** -c: pool size */
  count: number;
  /** -j: `call <target>` instead of `allow` */
  target?: number;
  /** `limit src-addr 1` instead of `keep-state`: one connection per hole */
  limit?: boolean;
  runner: CommandRunner;
  logger: Logger;
  /** accepted for symmetry with the other backends; timing is the caller's */
  clock?: Clock;
}

/** Count the dynamic rules of `rule` in `ipfw -d show` output. */
export function countDynamicRules(showOutput: string, rule: number): number {
  let inDynamic = false;
  let n = 0;
  for (const line of showOutput.split('\n')) {
    if (line.startsWith('## Dynamic rules')) {
      inDynamic = true;
      continue;
    }
    if (!inDynamic) continue;
    const m = /^\s*(\d+)\s/.exec(line);
    if (m !== null && Number(m[1]) === rule) n++;
  }
  return n;
}

export class IpfwFirewall implements Firewall {
  readonly kind = 'ipfw';
  private keepStates: boolean | undefined;
  private readonly held = new Set<number>();

  constructor(private readonly opts: IpfwFirewallOptions) {
    const { base, count, target } = opts;
    if (!Number.isInteger(base) || base < 1 || !Number.isInteger(count) || count < 1 || base + count - 1 > MAX_RULE) {
      throw new FtpProxyError('ipfw-pool', `rule pool ${base}..${base + count - 1} must lie within 1..${MAX_RULE}`, { fatal: true });
    }
    if (target !== undefined && (!Number.isInteger(target) || target < 1 || target > MAX_RULE)) {
      throw new FtpProxyError('ipfw-target', `-j target must be a rule number 1..${MAX_RULE}: ${target}`, { fatal: true });
    }
    if (target !== undefined && target >= base && target < base + count) {
      throw new FtpProxyError('ipfw-target', `-j target ${target} lies inside the hole pool ${base}..${base + count - 1}`, { fatal: true });
    }
  }

  private get last(): number {
    return this.opts.base + this.opts.count - 1;
  }

  private async run(argv: string[]): Promise<CommandResult> {
    return this.opts.runner.run(argv);
  }

  async check(): Promise<void> {
    // ipfw(8) installed, ipfw.ko loaded, and we may use it
    let r: CommandResult;
    try {
      r = await this.run(['ipfw', 'show']);
    } catch (e) {
      throw new FtpProxyError('ipfw-missing', `cannot run ipfw(8): ${e instanceof Error ? e.message : String(e)}`, { fatal: true, cause: e });
    }
    if (r.code !== 0) {
      throw new FtpProxyError('ipfw-unusable', `\`ipfw show\` failed (exit ${r.code}): ${r.stderr.trim()} - is ipfw loaded (firewall_enable="YES") and are we root?`, { fatal: true });
    }
    await this.queryKeepStates();
  }

  /** Read net.inet.ip.fw.dyn_keep_states once; warn once when it is not 1. */
  private async queryKeepStates(): Promise<boolean> {
    if (this.keepStates !== undefined) return this.keepStates;
    let value = '';
    try {
      const r = await this.run(['sysctl', '-n', DYN_KEEP_STATES_SYSCTL]);
      if (r.code === 0) value = r.stdout.trim();
    } catch {
      value = '';
    }
    this.keepStates = value !== '' && value !== '0';
    if (!this.keepStates) {
      this.opts.logger.log(
        'warning',
        `${DYN_KEEP_STATES_SYSCTL} is ${value === '' ? 'not available' : value}: deleting a hole's rule would cut its transfer, ` +
          `so holes are kept until their dynamic rules are gone (set ${DYN_KEEP_STATES_SYSCTL}=1 in /etc/sysctl.conf)`,
      );
    }
    return this.keepStates;
  }

  /** The argv of a hole's rule (exported for the tests through open()). */
  addArgv(hole: Hole): string[] {
    const action = this.opts.target === undefined ? ['allow'] : ['call', String(this.opts.target)];
    const state = this.opts.limit === true ? ['limit', 'src-addr', '1'] : ['keep-state'];
    // ipfw -q add N allow|call T tcp from SRC to DST PORT setup keep-state|limit src-addr 1
    return ['ipfw', '-q', 'add', String(hole.rule), ...action, 'tcp', 'from', hole.src, 'to', hole.dst, String(hole.port), 'setup', ...state];
  }

  async open(hole: Hole, _timeoutSec: number): Promise<void> {
    checkHoleForCommand(hole, this.opts.base, this.last);
    // e.g. ipfw -q add 64000 allow tcp from 2001:db8::10 to 2001:db8:1::20 50000 setup keep-state
    const argv = this.addArgv(hole);
    const r = await this.run(argv);
    if (r.code !== 0) {
      throw new FtpProxyError('ipfw-add', `\`${shellQuote(argv)}\` failed (exit ${r.code}): ${r.stderr.trim()}`);
    }
  }

  async close(hole: Hole): Promise<boolean> {
    checkHoleForCommand(hole, this.opts.base, this.last);
    const n = String(hole.rule);
    if (!(await this.queryKeepStates())) {
      // ipfw -d show 64000: static rule plus its dynamic rules
      const show = await this.run(['ipfw', '-d', 'show', n]);
      const alive = show.code === 0 ? countDynamicRules(show.stdout, hole.rule) : 0;
      if (alive > 0) {
        if (!this.held.has(hole.rule)) {
          this.opts.logger.log('debug', `rule ${n}: ${alive} dynamic rule(s) alive, keeping it until they expire`);
        }
        this.held.add(hole.rule);
        return false;
      }
    }
    this.held.delete(hole.rule);
    // ipfw -q delete 64000
    const r = await this.run(['ipfw', '-q', 'delete', n]);
    if (r.code === 0) return true;
    // already gone (a repeated close, or swept)?  `ipfw show N` fails then.
    const still = await this.run(['ipfw', '-q', 'show', n]);
    if (still.code !== 0) return true;
    throw new FtpProxyError('ipfw-delete', `\`ipfw -q delete ${n}\` failed (exit ${r.code}): ${r.stderr.trim()}`);
  }

  async sweep(): Promise<void> {
    if (this.held.size > 0) {
      this.opts.logger.log('warning', `deleting ${this.held.size} hole rule(s) that still carry connections; their transfers are cut`);
      this.held.clear();
    }
    // ipfw -q delete 64000-64099
    const range = `${this.opts.base}-${this.last}`;
    const r = await this.run(['ipfw', '-q', 'delete', range]);
    if (r.code !== 0) this.opts.logger.log('debug', `ipfw -q delete ${range}: exit ${r.code} (nothing to delete?) ${r.stderr.trim()}`);
  }

  /** At stop: delete the whole range, as at start. */
  /** Nothing to release: every command is its own process.  The daemon sweeps before it. */
  async shutdown(): Promise<void> {
    // nothing held
  }
}
