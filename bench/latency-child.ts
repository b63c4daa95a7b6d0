/**
 * Instrumented ftp6proxy for the hole-latency figure: the daemon's own
 * wiring (NfqueueSource -> ControlProxy(Engine, HoleManager) ->
 * NftablesFirewall, as src/main.ts serve() does), with each packet's time in
 * user space measured from its arrival (the source's clock, read right after
 * the netlink message is decoded) to the end of the handler, which is when
 * NfqueueSource sends the verdict (at once when the handler returned no
 * promise, i.e. when the kernel's ACK came with the send; else in the
 * promise's next reaction).
 *
 * Run inside the gateway namespace, as root:
 *   ip netns exec GW node dist/bench/latency-child.js QUEUE FAMILY/TABLE
 * It prints "ready" once the queue is bound and the sets checked, and on
 * "snapshot" (a line on stdin) it prints one JSON line with the samples so
 * far (ms) and clears them; on "stop" it prints the rest the same way and exits.
 */
import { performance } from 'perf_hooks';
import * as readline from 'readline';
import { NfqueueSource } from '../src/capture/nfqueue';
import { RealClock } from '../src/clock';
import { Engine } from '../src/engine';
import { NftablesFirewall } from '../src/firewall/nftables';
import { HoleManager } from '../src/holes';
import { ControlProxy } from '../src/proxy';
import type { Clock, Firewall, Hole, Logger, Packet } from '../src/types';

export interface LatencySamples {
  /** packets whose handler opened a hole (a netlink round trip to nftables) */
  hole: number[];
  /** every other control packet */
  noHole: number[];
  /** NftablesFirewall.open() alone: request sent -> kernel's ACK handled */
  fwOpen: number[];
  errors: string[];
}

async function main(argv: string[]): Promise<void> {
  const queue = Number(argv[0] ?? 10004);
  const table = argv[1] ?? 'inet/filter';
  const errors: string[] = [];
  const logger: Logger = {
    log: (level, msg) => {
      if (level === 'err' || level === 'warning') errors.push(`${level}: ${msg}`);
    },
  };
  // Sub-millisecond arrival times: performance.now() instead of Date.now().
  const fine: Clock = {
    now: () => performance.now(),
    setTimer: (ms, fn) => {
      const t = setTimeout(fn, ms);
      return { cancel: () => clearTimeout(t) };
    },
  };
  const source = new NfqueueSource({ queue, logger, clock: fine });
  const nft = new NftablesFirewall({ table, logger });
  const fwOpen: number[] = [];
  // The path the daemon takes (HoleManager prefers openNow), timed.
  const openNow = (h: Hole, t: number): Promise<void> | undefined => {
    const t0 = performance.now();
    const later = nft.openNow(h, t);
    if (later === undefined) {
      fwOpen.push(performance.now() - t0);
      return undefined;
    }
    return later.then(() => void fwOpen.push(performance.now() - t0));
  };
  // The same firewall, with opening timed: splits the hole latency into the
  // netlink round trip and everything around it.
  const firewall: Firewall = {
    kind: nft.kind,
    check: () => nft.check(),
    sweep: () => nft.sweep(),
    open: async (h: Hole, t: number) => {
      await openNow(h, t);
    },
    openNow,
    close: (h: Hole) => nft.close(h),
    shutdown: () => nft.shutdown(),
  };
  await source.open();
  await firewall.check();
  await firewall.sweep();
  const holes = new HoleManager({ firewall, clock: new RealClock(), logger, base: 10000, count: 1000, timeoutSec: 2 });
  const engine = new Engine({ logger, pendingFor: (s) => holes.pendingFor(s) });
  const proxy = new ControlProxy(engine, holes);
  const samples: LatencySamples = { hole: [], noHole: [], fwOpen, errors };

  // As the daemon's handler: no promise when the packet's holes (if any) were
  // in place at once, so the verdict goes out in the same turn.
  const handler = (pkt: Packet): Promise<void> | undefined => {
    const before = proxy.counters.holesRequested;
    const sample = (): void => {
      const dt = performance.now() - pkt.time;
      (proxy.counters.holesRequested > before ? samples.hole : samples.noHole).push(dt);
    };
    const r = proxy.handle(pkt);
    if (r === undefined) {
      sample();
      return undefined;
    }
    return r.then(sample);
  };

  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (line.trim() === 'snapshot') {
      // the samples so far, then start afresh (one phase of the run each)
      process.stdout.write(JSON.stringify(samples) + '\n');
      for (const a of [samples.hole, samples.noHole, samples.fwOpen, samples.errors]) a.length = 0;
      return;
    }
    if (line.trim() !== 'stop') return;
    rl.close();
    void (async () => {
      await source.close();
      await holes.closeAll();
      await firewall.shutdown();
      process.stdout.write(JSON.stringify(samples) + '\n');
      process.exit(0);
    })();
  });
  const running = source.run(handler);
  process.stdout.write('ready\n');
  await running;
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`latency child: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
