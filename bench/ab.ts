/**
 * An A/B of ftp6proxy builds in one lab, for changes to the packet path:
 *
 *   node dist/bench/ab.js [--rounds N] [--transit N] [--flags "-s 0x100000"] DIR_A [DIR_B ...]
 *
 * Each DIR is a built checkout (bin/ftp6proxy and dist/), at most 8.  Every
 * build runs as its own daemon on its own queue in the same gateway, the way
 * npm run bench runs them (bench/lab.ts startDaemon: in the background,
 * logging to a real rsyslogd), with --flags (default "-s 0x100000" and the
 * selective ruleset; without -s, the DESIGN.md queue rules).  The rounds
 * interleave them with the open gateway as bench/lab.ts does: in each
 * round every configuration in turn (the order rotating) loads its ruleset,
 * with the other daemons stopped (SIGSTOP),
 * makes one untimed transfer and then the timed one (curl, EPSV, IPv6, the
 * lab's small file).  It prints each configuration's median and p90, its
 * ratio to the open gateway with the 95 % bootstrap interval, and with
 * --transit N, N more rounds under tcpdump for the 229 reply's gateway
 * transit.  Root, Linux.  Figures only: the exit status is 0 whatever they are.
 */
import * as path from 'path';
import { Lab, SELECTIVE_BITS, withLab } from '../test/lab/lab';
import { BenchDaemon, benchSyslog, capture, sleep, startDaemon, stopProc, transit } from './lab';
import { bootstrapRatio, median, percentile, round, summarize } from './stats';

const QUEUE = 10020;

interface Args {
  rounds: number;
  transitRounds: number;
  flags: string[];
  dirs: string[];
}

function parseArgs(argv: string[]): Args {
  const a: Args = { rounds: 60, transitRounds: 0, flags: ['-s', `0x${SELECTIVE_BITS.seeAll.toString(16)}`], dirs: [] };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i];
    if (v === '--rounds') a.rounds = Number(argv[++i]);
    else if (v === '--transit') a.transitRounds = Number(argv[++i]);
    else if (v === '--flags') a.flags = (argv[++i] ?? '').split(' ').filter((x) => x !== '');
    else a.dirs.push(path.resolve(v));
  }
  if (a.dirs.length === 0 || a.dirs.length > 8 || !Number.isInteger(a.rounds) || a.rounds < 1) {
    throw new Error('usage: node dist/bench/ab.js [--rounds N] [--transit N] [--flags "-s 0x100000"] DIR_A [DIR_B ...] (at most 8)');
  }
  return a;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const selective = args.flags.includes('-s');
  await withLab({ prefix: 'f6ab', queueNum: QUEUE }, async (lab: Lab) => {
    const server = await lab.startServer('vsftpd');
    const url = `ftp://[${lab.addr.server[6]}]/${lab.files.small.name}`;
    const size = lab.files.small.content.length;
    lab.setPolicy('deny', QUEUE);
    const names = args.dirs.map((d, i) => `${String.fromCharCode(65 + i)} ${path.basename(d)}`);
    // the daemons as a gateway runs them (syslog, privileges dropped), as in npm run bench
    const { syslog, note } = await benchSyslog(lab, args.dirs.map((_, i) => `local${i}`));
    if (note !== null) process.stderr.write(`ab: ${note}\n`);
    const daemons: Array<BenchDaemon & { q: number }> = [];
    for (let i = 0; i < args.dirs.length; i++) {
      const q = QUEUE + i;
      const d = await startDaemon(lab, { repo: args.dirs[i], queue: q, extra: args.flags,
        syslog: syslog ? { file: syslog.files[`local${i}`], facility: `local${i}` } : undefined });
      if (!d.up) throw new Error(`${names[i]} did not bind NFQUEUE ${q}: ${d.log.out()}`);
      daemons.push({ ...d, q });
    }
    const configs = ['open', ...names];
    const times = new Map<string, number[]>(configs.map((c) => [c, []]));
    const failed = new Map<string, number>(configs.map((c) => [c, 0]));
    const portCfg = new Map<number, string>();
    const apply = (c: number): void => {
      if (c === 0) lab.setPolicy('open');
      else lab.setPolicy('deny', daemons[c - 1].q, { selective });
    };
    const transfer = async (c: number, timed: boolean): Promise<void> => {
      const r = await lab.runAsync(lab.ns.client, ['curl', '-sS', '--connect-timeout', '5', '-m', '10', '-o', '/dev/null',
        '-w', '%{time_total} %{size_download} %{local_port}', url], { timeoutMs: 15000 });
      const [t, got, lport] = r.stdout.trim().split(' ');
      if (Number(lport) > 0) portCfg.set(Number(lport), configs[c]);
      if (r.status !== 0 || Number(got) !== size) failed.set(configs[c], (failed.get(configs[c]) ?? 0) + 1);
      else if (timed) times.get(configs[c])?.push(Number(t) * 1000);
    };
    const rounds = async (n: number, timed: boolean): Promise<void> => {
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < configs.length; j++) {
          const c = (i + j) % configs.length;
          // only the configuration's own daemon runs (see bench/lab.ts)
          daemons.forEach((d, k) => d.pause(k !== c - 1));
          apply(c);
          await transfer(c, false);
          await transfer(c, timed);
        }
        if ((i + 1) % 20 === 0) process.stderr.write(`ab: ${i + 1}/${n} rounds${timed ? '' : ' under tcpdump'}\n`);
      }
    };
    await rounds(args.rounds, true);
    let m: ReturnType<typeof transit<string>> | null = null;
    if (args.transitRounds > 0) {
      const fa = path.join(lab.dir, 'a.pcap');
      const fb = path.join(lab.dir, 'b.pcap');
      const ca = await capture(lab, lab.iface.gwClient, fa);
      const cb = await capture(lab, lab.iface.gwServer, fb);
      await rounds(args.transitRounds, false);
      await sleep(300);
      await stopProc(ca);
      await stopProc(cb);
      m = transit(fa, fb, portCfg);
    }
    for (const d of daemons) await d.stop();
    await syslog?.stop();
    await server.stop();
    const open = times.get('open') ?? [];
    for (const c of configs) {
      const t = times.get(c) ?? [];
      const ci = c === 'open' ? null : bootstrapRatio(t, open);
      const ratio = c === 'open' ? '' : `  ratio ${round(median(t) / median(open))} (${ci === null ? 'n/a' : `${round(ci[0])} to ${round(ci[1])}`})`;
      const h = m?.get(c)?.hole;
      const tr = h !== undefined && h.length > 0 ? `  229 transit p50/p90/max ${(() => { const s = summarize(h); return `${round(s.p50, 0)}/${round(s.p90, 0)}/${round(s.max, 0)}`; })()} µs` : '';
      console.log(`${c.padEnd(24)} n=${t.length} failed=${failed.get(c)}  median ${round(median(t), 2)} ms  p90 ${round(percentile(t, 90), 2)} ms${ratio}${tr}`);
    }
  });
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`ab: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
