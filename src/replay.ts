/**
 * ftp6proxy-replay [ftp6proxy options] [--commands] FILE.pcap
 *
 * Runs the real engine and hole manager over a capture, on a virtual clock,
 * against a recording firewall, and prints one line per firewall operation:
 *   T open N SRC DST PORT
 *   T close N
 * T is seconds since the first packet.  With --commands, the ipfw, pf and
 * netgraph modules print instead every command they would run (`$ argv`,
 * stdin lines as `< `).  Every other line starts with `#`.
 */
import * as fs from 'fs';
import { VirtualClock } from './clock';
import { Engine } from './engine';
import { RecordingFirewall } from './firewall/recording';
import { HoleManager } from './holes';
import { parseCommandLine, Options, UsageError } from './options';
import { parsePcap, PcapFormatError } from './pcap';
import { ControlProxy } from './proxy';
import { commandFirewall } from './backends';
import { Firewall, Level, Logger, ModuleName } from './types';

export interface ReplayResult {
  /** the transcript lines, without trailing newlines */
  lines: string[];
  exitCode: number;
}

export interface ReplayInput {
  options: Options;
  commands: boolean;
  /** print engine log lines as `# level: msg` too */
  verbose?: boolean;
  pcap: Uint8Array;
}

/** Replay a capture; pure apart from the firewall modules' recorded commands. */
export async function replay(input: ReplayInput): Promise<ReplayResult> {
  const lines: string[] = [];
  const out = (s: string) => lines.push(s);
  const o = input.options;
  let file;
  try {
    file = parsePcap(input.pcap);
  } catch (e) {
    if (e instanceof PcapFormatError) {
      out(`# error: ${e.message}`);
      return { lines, exitCode: 1 };
    }
    throw e;
  }
  const t0 = file.records.length > 0 ? file.records[0].time : 0;
  const clock = new VirtualClock(t0);
  const secs = (ms: number) => ((ms - t0) / 1000).toFixed(3);
  const logger: Logger = {
    log(level: Level, msg: string) {
      if (input.verbose) out(`# ${secs(clock.now())} ${level}: ${msg}`);
    },
  };
  let firewall: Firewall;
  if (input.commands) {
    // Each command after a `# T` line: its time shows -t at work.
    const fw = commandFirewall(o, logger, clock, (cmd) => {
      out(`# ${secs(clock.now())}`);
      for (const l of cmd.split('\n')) out(l);
    });
    if (fw === undefined) {
      out(`# module ${o.module} runs no commands: it changes the firewall over netlink`);
      firewall = new RecordingFirewall({
        onOp: (op) => {
          const h = op.hole;
          if (h === undefined || (op.op !== 'open' && op.op !== 'close')) return;
          const where = `${o.anchor.replace('/', ' ')} ${h.family === 4 ? 'ftp6proxy4' : 'ftp6proxy6'}`;
          const elem = `${h.src} . ${h.dst} . ${h.port}`;
          out(op.op === 'open'
            ? `# netlink NEWSETELEM ${where} { ${elem} timeout ${o.timeout}s }`
            : `# netlink DESTROYSETELEM ${where} { ${elem} }`);
        },
      });
    } else {
      firewall = fw;
    }
  } else {
    firewall = new RecordingFirewall();
  }
  const holes = new HoleManager({
    firewall,
    clock,
    logger,
    base: o.base,
    count: o.count,
    timeoutSec: o.timeout,
    onEvent: input.commands
      ? undefined
      : (e) => {
          const h = e.hole;
          out(e.type === 'open'
            ? `${secs(e.time)} open ${h.rule} ${h.src} ${h.dst} ${h.port}`
            : `${secs(e.time)} close ${h.rule}`);
        },
  });
  const engine = new Engine({ logger, pendingFor: (s) => holes.pendingFor(s) });
  const proxy = new ControlProxy(engine, holes);

  try {
    await firewall.check();
    await firewall.sweep();
  } catch (e) {
    out(`# error: ${e instanceof Error ? e.message : String(e)}`);
  }
  let ignored = 0;
  /** Fire due timers one at a time, letting each close finish at its own time. */
  const runTimersUntil = async (limit: number): Promise<void> => {
    for (let n = clock.next(); n !== undefined && n <= limit; n = clock.next()) {
      clock.advance(n);
      await settle();
    }
  };
  for (const r of file.records) {
    await runTimersUntil(r.time);
    clock.advance(r.time);
    await settle();
    if (r.ip === null) {
      ignored++;
      continue;
    }
    await proxy.handle({ data: r.ip, time: clock.now() });
  }
  // The clock runs on past the last packet until every hole is closed.
  await runTimersUntil(Infinity);
  try {
    await holes.closeAll();
    await firewall.sweep();
    await firewall.shutdown();
  } catch (e) {
    out(`# error: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (ignored > 0) out(`# ${ignored} non-IP frames ignored`);
  if (file.damage !== undefined) out(`# damaged capture: ${file.damage}`);
  const st = holes.stats();
  out(`# ${file.records.length} packets, ${st.opened} holes, ${proxy.counters.refused} refused, ${st.exhausted} pool exhausted`);
  return { lines, exitCode: 0 };
}

/** Let promise chains started by timers (closes) run to completion. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

export async function replayMain(argv: string[], defaultModule: ModuleName): Promise<number> {
  let commands = false;
  let verbose = false;
  const rest: string[] = [];
  for (const a of argv) {
    if (a === '--commands') commands = true;
    else if (a === '--verbose') verbose = true;
    else rest.push(a);
  }
  let options: Options;
  let operands: string[];
  try {
    ({ options, operands } = parseCommandLine(rest, defaultModule));
    if (operands.length !== 1) throw new UsageError('exactly one pcap file is needed', true);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`ftp6proxy-replay: ${e.message}\n` +
        'usage: ftp6proxy-replay [-m module] [-b base] [-c count] [-t timeout] [-j target] [-q queue] [-a anchor] [--commands] [--verbose] FILE.pcap\n');
      return 1;
    }
    throw e;
  }
  let data: Buffer;
  try {
    data = fs.readFileSync(operands[0]);
  } catch (e) {
    process.stderr.write(`ftp6proxy-replay: ${operands[0]}: ${(e as Error).message}\n`);
    return 1;
  }
  const r = await replay({ options, commands, verbose, pcap: data });
  process.stdout.write(r.lines.map((l) => l + '\n').join(''));
  return r.exitCode;
}
