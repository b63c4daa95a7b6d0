/**
 * pf holes for the pf module, through pfctl(8) (packets still come from
 * divert(4) via ipfw: pf cannot divert IPv6 well on FreeBSD).
 *
 * pf.conf must contain `anchor "ftp6proxy/*"`, which evaluates every child
 * anchor.  Each hole gets its own child anchor named after its pool number,
 * `ftp6proxy/64000`, loaded with `pfctl -a ftp6proxy/64000 -f -` and these
 * rules on stdin (IPv4 holes say `inet`):
 *
 *   pass in quick inet6 proto tcp from 2001:db8::10 to 2001:db8:1::20 port = 50000 flags S/SA keep state (max 1)
 *   pass out quick inet6 proto tcp from 2001:db8::10 to 2001:db8:1::20 port = 50000 flags S/SA keep state (max 1)
 *
 * - Two rules because a forwarded packet passes pf twice, in on one
 *   interface and out on the other (as OpenBSD's ftp-proxy does it).
 * - `flags S/SA` matches only the initial SYN; `keep state (max 1)` lets each
 *   rule create one state: one connection per hole.
 * - `queue <q>` (-q) puts the data connection into an ALTQ queue defined in
 *   the main ruleset.
 *
 * Closing (-t seconds later): `pfctl -a ftp6proxy/64000 -F rules`.  pf states
 * outlive their rule (the rule is freed only when its last state goes), so the
 * running transfer is not cut and the pool number can be reused at once.
 *
 * Sweep (start and stop): `pfctl -a ftp6proxy -s Anchors` lists the children
 * and each is flushed.
 */
import { Firewall, FtpProxyError, Hole, Logger } from '../types';
import { checkHoleForCommand, CommandResult, CommandRunner, shellQuote } from './runner';

export const DEFAULT_PF_ANCHOR = 'ftp6proxy';

export interface PfFirewallOptions {
  /** -a: parent anchor (default ftp6proxy) */
  anchor?: string;
  /** -q: ALTQ queue for data connections */
  queue?: string;
  runner: CommandRunner;
  logger: Logger;
}

/** pf.conf identifiers: no quoting needed, nothing the parser could misread */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/** The rules of one hole, as loaded into its anchor. */
export function pfHoleRules(hole: Pick<Hole, 'family' | 'src' | 'dst' | 'port'>, queue?: string): string {
  const af = hole.family === 6 ? 'inet6' : 'inet';
  const tail = `proto tcp from ${hole.src} to ${hole.dst} port = ${hole.port} flags S/SA keep state (max 1)${queue !== undefined ? ` queue ${queue}` : ''}`;
  // pass in quick inet6 proto tcp from A to B port = P flags S/SA keep state (max 1) [queue Q]
  // pass out quick inet6 proto tcp from A to B port = P flags S/SA keep state (max 1) [queue Q]
  return `pass in quick ${af} ${tail}\npass out quick ${af} ${tail}\n`;
}

export class PfFirewall implements Firewall {
  readonly kind = 'pf';
  private readonly anchor: string;

  constructor(private readonly opts: PfFirewallOptions) {
    this.anchor = opts.anchor ?? DEFAULT_PF_ANCHOR;
    if (!this.anchor.split('/').every((c) => NAME.test(c))) {
      throw new FtpProxyError('pf-anchor', `bad pf anchor name: ${JSON.stringify(this.anchor)}`, { fatal: true });
    }
    if (opts.queue !== undefined && !NAME.test(opts.queue)) {
      throw new FtpProxyError('pf-queue', `bad pf queue name: ${JSON.stringify(opts.queue)}`, { fatal: true });
    }
  }

  private child(hole: Hole): string {
    return `${this.anchor}/${hole.rule}`;
  }

  private async run(argv: string[], stdin?: string): Promise<CommandResult> {
    return this.opts.runner.run(argv, stdin);
  }

  async check(): Promise<void> {
    let r: CommandResult;
    try {
      r = await this.run(['pfctl', '-s', 'info']);
    } catch (e) {
      throw new FtpProxyError('pf-missing', `cannot run pfctl(8): ${e instanceof Error ? e.message : String(e)}`, { fatal: true, cause: e });
    }
    if (r.code !== 0) {
      throw new FtpProxyError('pf-unusable', `\`pfctl -s info\` failed (exit ${r.code}): ${r.stderr.trim()} - is pf loaded and are we root?`, { fatal: true });
    }
    if (!/Status:\s*Enabled/.test(r.stdout)) {
      throw new FtpProxyError('pf-disabled', 'pf is not enabled: enable it with `pfctl -e` (pf_enable="YES" in rc.conf)', { fatal: true });
    }
    // not fatal: the anchor may be reached from a nested ruleset we do not list
    const rules = await this.run(['pfctl', '-s', 'rules']);
    if (rules.code === 0 && !rules.stdout.includes(`anchor "${this.anchor}/*"`)) {
      this.opts.logger.log('warning', `pf's main ruleset has no \`anchor "${this.anchor}/*"\`: holes will have no effect`);
    }
  }

  async open(hole: Hole, _timeoutSec: number): Promise<void> {
    checkHoleForCommand(hole, 0, Number.MAX_SAFE_INTEGER);
    // pfctl -a ftp6proxy/64000 -f -   (rules on stdin replace the anchor's contents)
    const argv = ['pfctl', '-a', this.child(hole), '-f', '-'];
    const r = await this.run(argv, pfHoleRules(hole, this.opts.queue));
    if (r.code !== 0) throw new FtpProxyError('pf-load', `\`${shellQuote(argv)}\` failed (exit ${r.code}): ${r.stderr.trim()}`);
  }

  async close(hole: Hole): Promise<boolean> {
    checkHoleForCommand(hole, 0, Number.MAX_SAFE_INTEGER);
    // pfctl -a ftp6proxy/64000 -F rules   (states outlive the rule)
    const argv = ['pfctl', '-a', this.child(hole), '-F', 'rules'];
    const r = await this.run(argv);
    if (r.code !== 0) throw new FtpProxyError('pf-flush', `\`${shellQuote(argv)}\` failed (exit ${r.code}): ${r.stderr.trim()}`);
    return true;
  }

  async sweep(): Promise<void> {
    // pfctl -a ftp6proxy -s Anchors   lists the children, one path per line
    const r = await this.run(['pfctl', '-a', this.anchor, '-s', 'Anchors']);
    if (r.code !== 0) {
      this.opts.logger.log('debug', `pfctl -a ${this.anchor} -s Anchors: exit ${r.code} ${r.stderr.trim()}`);
      return;
    }
    const prefix = `${this.anchor}/`;
    for (const line of r.stdout.split('\n')) {
      const path = line.trim();
      if (!path.startsWith(prefix) || !path.split('/').every((c) => NAME.test(c))) continue;
      const f = await this.run(['pfctl', '-a', path, '-F', 'rules']);
      if (f.code !== 0) this.opts.logger.log('warning', `pfctl -a ${path} -F rules: exit ${f.code} ${f.stderr.trim()}`);
    }
  }

  /** At stop: flush every child anchor, as at start. */
  /** Nothing to release: every command is its own process.  The daemon sweeps before it. */
  async shutdown(): Promise<void> {
    // nothing held
  }
}
