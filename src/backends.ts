/**
 * The one factory that picks capture and firewall backends for a module and
 * the OS.  No other file looks at the platform.
 */
import { loadNative, Native } from './native';
import { Options } from './options';
import { Clock, Firewall, Logger, ModuleName, PacketSource } from './types';
import { RealClock } from './clock';
import { DivertSource } from './capture/divert';
import { NetgraphSource } from './capture/netgraph';
import { NfqueueSource } from './capture/nfqueue';
import { NflogSource } from './capture/nflog';
import { IpfwFirewall } from './firewall/ipfw';
import { PfFirewall } from './firewall/pf';
import { NftablesFirewall } from './firewall/nftables';
import { CommandRunner, ExecRunner, RecordingRunner } from './firewall/runner';

/** ipfw on FreeBSD, nftables on Linux (DESIGN.md "Modules"). */
export function defaultModule(platform: string = process.platform): ModuleName {
  return platform === 'freebsd' ? 'ipfw' : 'nftables';
}

/** Why a module cannot run on this OS, or null. */
export function unsupportedReason(module: ModuleName, platform: string = process.platform): string | null {
  if (module === 'nftables' && platform !== 'linux') return 'module nftables needs Linux (NFQUEUE and nftables)';
  if (module !== 'nftables' && platform !== 'freebsd') {
    return `module ${module} needs FreeBSD (${module === 'netgraph' ? 'ng_ipfw(4)' : 'divert(4)'}); on Linux use -m nftables`;
  }
  return null;
}

export function createSource(o: Options, logger: Logger, native: Native = loadNative()): PacketSource {
  switch (o.module) {
    case 'ipfw':
    case 'pf':
      return new DivertSource({ port: o.port, logger, native });
    case 'netgraph':
      return new NetgraphSource({ hook: o.port, logger, native });
    case 'nftables':
      // Shadow mode (-n) must not sit in the packets' path: it reads NFLOG
      // copies (group -p), as ngtee gives copies on FreeBSD.
      return o.shadow
        ? new NflogSource({ group: o.port, logger, native })
        : new NfqueueSource({ queue: o.port, logger, native, seeAllMark: o.seeAllMark });
  }
}

function commandModuleFirewall(o: Options, logger: Logger, clock: Clock, runner: CommandRunner): Firewall | undefined {
  switch (o.module) {
    case 'ipfw':
    case 'netgraph':
      return new IpfwFirewall({ base: o.base, count: o.count, target: o.target, runner, logger, clock });
    case 'pf':
      return new PfFirewall({ anchor: o.anchor, queue: o.queue, runner, logger });
    case 'nftables':
      return undefined;
  }
}

/** The module's firewall for the daemon. */
export function createFirewall(o: Options, logger: Logger, clock: Clock = new RealClock(), native?: Native): Firewall {
  const fw = commandModuleFirewall(o, logger, clock, new ExecRunner());
  if (fw !== undefined) return fw;
  return new NftablesFirewall({ table: o.anchor, logger, native: native ?? loadNative() });
}

/**
 * For `ftp6proxy-replay --commands`: the module's firewall with a runner that
 * prints every command instead of running it; undefined for nftables (netlink).
 */
export function commandFirewall(o: Options, logger: Logger, clock: Clock, print: (text: string) => void): Firewall | undefined {
  return commandModuleFirewall(o, logger, clock, new RecordingRunner({ print }));
}
