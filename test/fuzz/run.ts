/**
 * npm run fuzz -- [--seconds N] [--target NAME[,NAME]] [--seed S]
 *
 * Runs every fuzz target (test/fuzz/targets.ts) for its share of N seconds
 * (default 60 in all), then each deliberately broken variant briefly to show
 * the property can fail, and prints one line per target:
 *
 *   decode        123456 runs  20.0 s   6172/s   ok
 *
 * Exits 1 if a real target fails (with the shrunk counterexample and the seed
 * to reproduce it) or a broken variant is not caught.
 */
import { TARGETS, type Target } from './targets';

interface Args { seconds: number; only: string[] | null; seed: number }

function parseArgs(argv: string[]): Args {
  const a: Args = { seconds: 60, only: null, seed: Date.now() % 2147483647 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    if (argv[i] === '--seconds' && v !== undefined) { a.seconds = Number(v); i++; }
    else if (argv[i] === '--target' && v !== undefined) { a.only = v.split(','); i++; }
    else if (argv[i] === '--seed' && v !== undefined) { a.seed = Number(v); i++; }
    else throw new Error(`usage: run.js [--seconds N] [--target NAME,...] [--seed S] (bad argument ${argv[i]})`);
  }
  if (!Number.isFinite(a.seconds) || a.seconds <= 0) throw new Error('--seconds must be positive');
  return a;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const targets: Target[] = args.only === null ? TARGETS : TARGETS.filter((t) => args.only!.includes(t.name));
  if (targets.length === 0) throw new Error(`no such target; targets: ${TARGETS.map((t) => t.name).join(' ')}`);
  const share = (args.seconds * 1000) / targets.length;
  console.log(`fuzz: ${targets.length} targets, ${(share / 1000).toFixed(1)} s each, seed ${args.seed}`);
  let bad = 0;
  let total = 0;
  // Memory is a property too: a target whose heap runs away is reported by
  // name (and ends the run with exit 1) instead of dying anonymously of OOM.
  let current = '';
  const heapLimit = 1.5 * 1024 ** 3;
  const watchdog = setInterval(() => {
    const used = process.memoryUsage().heapUsed;
    if (used > heapLimit) {
      console.log(`fuzz: FAIL ${current}: heap ${(used / 1024 ** 2).toFixed(0)} MiB exceeds ${(heapLimit / 1024 ** 2).toFixed(0)} MiB (seed ${args.seed})`);
      process.exit(1);
    }
  }, 100);
  watchdog.unref();
  for (const t of targets) {
    current = t.name;
    // on stderr, so that even a crash (e.g. out of memory) names its target
    process.stderr.write(`fuzz: running ${current}\n`);
    const t0 = process.hrtime.bigint();
    const o = await t.real({ seed: args.seed, numRuns: Number.MAX_SAFE_INTEGER, timeLimitMs: share });
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    total += o.numRuns;
    console.log(`${t.name.padEnd(12)} ${String(o.numRuns).padStart(9)} runs ${secs.toFixed(1).padStart(6)} s ${String(Math.round(o.numRuns / secs)).padStart(8)}/s   ${o.failed ? 'FAIL' : 'ok'}` +
      (Object.keys(o.counters).length > 0 ? `  (${Object.entries(o.counters).map(([k, v]) => `${k} ${v}`).join(', ')})` : ''));
    if (o.failed) {
      bad++;
      console.log(`  ${o.detail}`);
    }
  }
  console.log(`fuzz: ${total} runs in all`);
  // Each property must be able to fail: its broken variant has to be caught.
  for (const t of targets) {
    current = `self-check ${t.name}`;
    process.stderr.write(`fuzz: running ${current}\n`);
    const o = await t.broken({ seed: args.seed, numRuns: 5000, timeLimitMs: 20000 });
    console.log(`self-check ${t.name.padEnd(12)} ${o.failed ? `broken variant caught after ${o.numRuns} runs` : 'BROKEN VARIANT NOT CAUGHT'}`);
    if (!o.failed) bad++;
  }
  return bad === 0 ? 0 : 1;
}

main().then(
  (code) => { process.exitCode = code; },
  (e: unknown) => { console.error(`fuzz: ${e instanceof Error ? e.message : String(e)}`); process.exitCode = 2; },
);
