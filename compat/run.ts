/**
 * The compat suite: replay every trace through the real engine, hole manager
 * and firewall modules (recording, virtual clock) and compare with the
 * committed transcripts.
 *
 *   npm run compat                         check; exit 1 on any difference
 *   node dist/compat/run.js --update       rewrite compat/expected/
 *   node dist/compat/run.js --only NAME    only traces whose name contains NAME
 *
 * Traces: compat/traces/NAME.pcap (recorded in the lab) and
 * compat/hostile/NAME.pcap (crafted by compat/hostile/make.ts), each with
 * NAME.expect.  Per trace and module (ipfw pf netgraph nftables):
 *   compat/expected/NAME.MODULE.txt            ftp6proxy-replay -m MODULE FLAGS NAME.pcap
 *   compat/expected/NAME.MODULE.commands.txt   the same with --commands (not nftables:
 *                                              it runs no commands)
 * FLAGS come from the `# flags:` line of NAME.expect.
 *
 * Besides the transcripts, every transcript is checked against NAME.expect,
 * which was derived independently of the engine: exactly the listed holes
 * open (SRC DST PORT; rule numbers and times are not compared), and for
 * hostile traces the stated number of refusals.  --update does not silence
 * that check: a transcript that contradicts its .expect is never committed
 * as correct without someone looking.
 */
import * as fs from 'fs';
import * as path from 'path';
import { replay, ReplayInput, ReplayResult } from '../src/replay';
import { parseOptions, UsageError } from '../src/options';
import { checkExpectation, Expectation, parseExpect, unifiedDiff } from '../src/compat';
import { MODULES, ModuleName } from '../src/types';

export type ReplayFn = (input: ReplayInput) => Promise<ReplayResult>;

export interface Trace {
  name: string;
  pcap: string;
  expect: Expectation;
}

/** The modules that run commands, and so have a .commands.txt. */
export const COMMAND_MODULES: readonly ModuleName[] = ['ipfw', 'pf', 'netgraph'];
export const TRACE_DIRS = ['compat/traces', 'compat/hostile'];

export function listTraces(root: string, only?: string): Trace[] {
  const out: Trace[] = [];
  const names = new Map<string, string>();
  for (const dir of TRACE_DIRS) {
    const abs = path.join(root, dir);
    if (!fs.existsSync(abs)) continue;
    for (const f of fs.readdirSync(abs).sort()) {
      if (!f.endsWith('.pcap')) continue;
      const name = f.slice(0, -'.pcap'.length);
      if (only !== undefined && !name.includes(only)) continue;
      const prev = names.get(name);
      if (prev !== undefined) throw new Error(`trace name ${name} is in both ${prev} and ${dir}`);
      names.set(name, dir);
      const expectFile = path.join(abs, `${name}.expect`);
      if (!fs.existsSync(expectFile)) throw new Error(`${dir}/${name}.pcap has no ${name}.expect`);
      let expect: Expectation;
      try {
        expect = parseExpect(fs.readFileSync(expectFile, 'utf8'));
      } catch (e) {
        throw new Error(`${dir}/${name}.expect: ${(e as Error).message}`);
      }
      out.push({ name, pcap: path.join(abs, f), expect });
    }
  }
  return out;
}

export interface CompatOptions {
  root: string;
  update?: boolean;
  only?: string;
  modules?: readonly ModuleName[];
  /** the replay under test (default: the real one) */
  replay?: ReplayFn;
  out?: (line: string) => void;
}

export interface CompatResult {
  traces: number;
  modules: number;
  differences: number;
  /** files written by --update */
  written: number;
  summary: string;
}

export async function runCompat(o: CompatOptions): Promise<CompatResult> {
  const out = o.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const doReplay = o.replay ?? replay;
  const modules = o.modules ?? MODULES;
  const expectedDir = path.join(o.root, 'compat/expected');
  const traces = listTraces(o.root, o.only);
  let differences = 0;
  let written = 0;
  const wanted = new Set<string>();
  if (o.update) fs.mkdirSync(expectedDir, { recursive: true });

  const compare = (file: string, lines: string[]) => {
    wanted.add(file);
    const abs = path.join(expectedDir, file);
    const text = lines.map((l) => l + '\n').join('');
    if (o.update) {
      if (!fs.existsSync(abs) || fs.readFileSync(abs, 'utf8') !== text) {
        fs.writeFileSync(abs, text);
        written++;
      }
      return;
    }
    if (!fs.existsSync(abs)) {
      out(`compat: compat/expected/${file} is missing (run with --update, then check it by hand)`);
      differences++;
      return;
    }
    const want = fs.readFileSync(abs, 'utf8').replace(/\n$/, '').split('\n');
    const d = unifiedDiff(want, lines, `compat/expected/${file}`, `replay ${file}`);
    if (d.length > 0) {
      for (const l of d) out(l);
      differences++;
    }
  };

  for (const t of traces) {
    const pcap = fs.readFileSync(t.pcap);
    for (const module of modules) {
      let options;
      try {
        options = parseOptions(['-m', module, ...t.expect.flags], module);
      } catch (e) {
        if (!(e instanceof UsageError)) throw e;
        out(`compat: ${t.name}: flags "${t.expect.flags.join(' ')}" refused for module ${module}: ${e.message}`);
        differences++;
        continue;
      }
      const r = await doReplay({ options, commands: false, pcap });
      compare(`${t.name}.${module}.txt`, r.lines);
      const problems = r.exitCode !== 0 ? [`replay exited ${r.exitCode}`] : checkExpectation(t.expect, r.lines);
      for (const p of problems) out(`compat: ${t.name} (${module}): ${p}`);
      if (problems.length > 0) differences++;
      if (COMMAND_MODULES.includes(module)) {
        const c = await doReplay({ options, commands: true, pcap });
        compare(`${t.name}.${module}.commands.txt`, c.lines);
      }
    }
  }

  // Transcripts of traces that are gone (or renamed) are differences too.
  if (fs.existsSync(expectedDir) && o.only === undefined && o.modules === undefined) {
    for (const f of fs.readdirSync(expectedDir).sort()) {
      if (!f.endsWith('.txt') || wanted.has(f)) continue;
      if (o.update) {
        fs.unlinkSync(path.join(expectedDir, f));
        written++;
      } else {
        out(`compat: compat/expected/${f} belongs to no trace (run with --update to remove it)`);
        differences++;
      }
    }
  }

  const summary = `compat: ${traces.length} traces x ${modules.length} modules, ${differences} difference${differences === 1 ? '' : 's'}` +
    (o.update ? `, ${written} file${written === 1 ? '' : 's'} written` : '');
  out(summary);
  return { traces: traces.length, modules: modules.length, differences, written, summary };
}

async function main(argv: string[]): Promise<number> {
  let update = false;
  let only: string | undefined;
  let root = path.resolve(__dirname, '../..');
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--update') update = true;
    else if (a === '--only' && i + 1 < argv.length) only = argv[++i];
    else if (a === '--root' && i + 1 < argv.length) root = argv[++i];
    else {
      process.stderr.write('usage: node dist/compat/run.js [--update] [--only NAME] [--root DIR]\n');
      return 2;
    }
  }
  const r = await runCompat({ root, update, only });
  if (r.traces === 0) {
    process.stderr.write('compat: no traces found\n');
    return 1;
  }
  return r.differences === 0 ? 0 : 1;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => { process.exitCode = code; },
    (e: unknown) => { process.stderr.write(`compat: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`); process.exitCode = 1; },
  );
}
