/**
 * The in-process parts of the benchmark, run in a child node so that each
 * starts from a clean heap and can be pinned to one CPU (taskset) or run
 * under --cpu-prof / --expose-gc:
 *
 *   node dist/bench/child.js throughput RUNS MIN_PACKETS   -> JSON on stdout
 *   node --expose-gc dist/bench/child.js memory SESSIONS   -> JSON on stdout
 *
 * The engine is single-threaded: one process is one core.
 */
import { performance } from 'perf_hooks';
import { VirtualClock } from '../src/clock';
import { Engine } from '../src/engine';
import { RecordingFirewall } from '../src/firewall/recording';
import { HoleManager } from '../src/holes';
import { ControlProxy } from '../src/proxy';
import type { Logger, Packet } from '../src/types';
import { TcpFlow } from '../test/unit/build-packet';
import { buildCorpus } from './corpus';

/** The daemon without -d drops debug lines; so does this logger (the engine still formats them). */
const quiet: Logger = { log: () => undefined };

export interface ThroughputResult {
  packets: number;
  sessions: number;
  source: string;
  templates: string[];
  /** packets/s of Engine.process alone (pendingFor: none), one value per run */
  engineOnly: number[];
  /** packets/s of the daemon's handler: Engine + HoleManager + RecordingFirewall on a VirtualClock */
  fullPath: number[];
  decisions: { holes: number; refused: number };
  engineStats: Record<string, number>;
}

function engineOnce(packets: Packet[]): { pps: number; holes: number; refused: number; stats: Record<string, number> } {
  const engine = new Engine({ logger: quiet });
  let holes = 0;
  let refused = 0;
  const t0 = performance.now();
  for (let i = 0; i < packets.length; i++) {
    const ds = engine.process(packets[i]);
    for (let j = 0; j < ds.length; j++) {
      if (ds[j].type === 'hole') holes++;
      else refused++;
    }
  }
  const dt = performance.now() - t0;
  return { pps: packets.length / (dt / 1000), holes, refused, stats: { ...engine.stats() } };
}

async function fullOnce(packets: Packet[]): Promise<number> {
  const clock = new VirtualClock(0);
  const firewall = new RecordingFirewall();
  const holes = new HoleManager({ firewall, clock, logger: quiet, base: 10000, count: 1000, timeoutSec: 2 });
  const engine = new Engine({ logger: quiet, pendingFor: (s) => holes.pendingFor(s) });
  const proxy = new ControlProxy(engine, holes);
  // The virtual clock runs at 1 ms per packet here (1,000 control packets/s
  // of virtual time), so -t 2 keeps about 2,000 packets' worth of holes open
  // and the pool of 1,000 never runs dry.  It is advanced every 64 packets:
  // VirtualClock scans its timer list on each advance (a test clock; the
  // daemon uses setTimeout).
  const t0 = performance.now();
  for (let i = 0; i < packets.length; i++) {
    if ((i & 63) === 0) clock.advance(i);
    await proxy.handle({ data: packets[i].data, time: i });
  }
  const dt = performance.now() - t0;
  if (holes.stats().exhausted > 0) process.stderr.write(`bench: pool exhausted ${holes.stats().exhausted} times\n`);
  return packets.length / (dt / 1000);
}

async function throughput(runs: number, minPackets: number): Promise<ThroughputResult> {
  const corpus = buildCorpus({ minPackets });
  const packets = corpus.packets;
  // Warm-up: let the JIT settle on both paths before timing.
  engineOnce(packets);
  await fullOnce(packets.slice(0, 50_000));
  const engineOnly: number[] = [];
  const fullPath: number[] = [];
  let last = engineOnce(packets);
  for (let r = 0; r < runs; r++) {
    last = engineOnce(packets);
    engineOnly.push(last.pps);
    fullPath.push(await fullOnce(packets));
  }
  return {
    packets: packets.length,
    sessions: corpus.sessions,
    source: corpus.source,
    templates: corpus.templates,
    engineOnly,
    fullPath,
    decisions: { holes: last.holes, refused: last.refused },
    engineStats: last.stats,
  };
}

export interface MemoryResult {
  sessions: number;
  tracked: number;
  rssBytes: number;
  heapBytes: number;
  externalBytes: number;
}

function gcAll(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('run with --expose-gc');
  for (let i = 0; i < 4; i++) gc();
}

/**
 * N sessions left open in the state most of them are in on a gateway: logged
 * in, idle between commands (handshake, banner, USER, 331, PASS, 230).
 */
function memory(n: number): MemoryResult {
  const feed = (k: number, e: Engine) => {
    const f = new TcpFlow({
      family: k % 2 === 0 ? 6 : 4,
      client: k % 2 === 0 ? `fd00:c1::${(k >> 16) + 10}` : `198.18.1.${((k >> 16) % 200) + 10}`,
      server: k % 2 === 0 ? 'fd00:5e::10' : '198.18.2.10',
      clientPort: 1024 + (k % 60000),
    });
    for (const p of f.open()) e.process(p);
    e.process(f.server('220 (vsFTPd 3.0.3)\r\n'));
    e.process(f.client('USER anonymous\r\n'));
    e.process(f.server('331 Please specify the password.\r\n'));
    e.process(f.client('PASS ftp@example.org\r\n'));
    e.process(f.server('230 Login successful.\r\n'));
    e.process(f.client(''));
  };
  // Warm the JIT, and grow the heap's spaces to their size under this load,
  // with a throwaway engine of as many sessions: the RSS delta then counts
  // what the tracked sessions keep, not the collector's growth.
  let warm: Engine | null = new Engine({ logger: quiet });
  for (let k = 0; k < Math.max(2000, n); k++) feed(k, warm);
  warm = null;
  gcAll();
  const m0 = process.memoryUsage();
  const engine = new Engine({ logger: quiet });
  for (let k = 0; k < n; k++) feed(k, engine);
  gcAll();
  const m1 = process.memoryUsage();
  return {
    sessions: n,
    tracked: engine.stats().sessions,
    rssBytes: m1.rss - m0.rss,
    heapBytes: m1.heapUsed - m0.heapUsed,
    externalBytes: (m1.external + m1.arrayBuffers) - (m0.external + m0.arrayBuffers),
  };
}

async function main(argv: string[]): Promise<void> {
  const [mode, a, b] = argv;
  let out: unknown;
  if (mode === 'throughput') out = await throughput(Number(a ?? 5), Number(b ?? 200_000));
  else if (mode === 'memory') out = memory(Number(a ?? 1000));
  else throw new Error(`bench child: unknown mode ${mode}`);
  process.stdout.write(JSON.stringify(out) + '\n');
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`bench child: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
