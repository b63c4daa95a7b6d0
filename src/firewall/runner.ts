/**
 * The one way ipfw(8), pfctl(8) and sysctl(8) are run.
 *
 * - `ExecRunner` spawns the program with an argv array (never a shell, so no
 *   address or queue name is ever parsed by sh), finds it on PATH, feeds the
 *   optional stdin and kills it after a bounded time.
 * - `RecordingRunner` runs nothing: it records every command, prints it for
 *   `ftp6proxy-replay --commands` as `$ argv…` plus `< ` stdin lines, and
 *   answers with canned outputs that describe a well-configured FreeBSD host.
 */
import { spawn } from 'child_process';
import * as net from 'net';
import { FtpProxyError, Hole } from '../types';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CommandRunner {
  /** Run argv[0] with argv[1..].  Resolves with the exit code (non-zero included); rejects only when it could not run. */
  run(argv: string[], stdin?: string): Promise<CommandResult>;
}

/** Characters that never need quoting in a POSIX shell word. */
const SAFE_WORD = /^[A-Za-z0-9_@%+=:,./-]+$/;

/** Quote words so that a POSIX shell would split them back into the same argv. */
export function shellQuote(words: readonly string[]): string {
  return words.map((w) => (SAFE_WORD.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** The transcript lines of one command: `$ argv…`, then `< line` per stdin line. */
export function formatCommand(argv: readonly string[], stdin?: string): string[] {
  const lines = [`$ ${shellQuote(argv)}`];
  if (stdin !== undefined && stdin.length > 0) {
    const body = stdin.endsWith('\n') ? stdin.slice(0, -1) : stdin;
    for (const l of body.split('\n')) lines.push(`< ${l}`);
  }
  return lines;
}

export const DEFAULT_COMMAND_TIMEOUT_MS = 10_000;

export interface ExecRunnerOptions {
  /** kill the command after this long (default 10 s) */
  timeoutMs?: number;
  /** environment (PATH is looked up here); read at each run, defaults to process.env */
  env?: NodeJS.ProcessEnv;
}

export class ExecRunner implements CommandRunner {
  private readonly timeoutMs: number;
  constructor(private readonly opts: ExecRunnerOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  }

  run(argv: string[], stdin?: string): Promise<CommandResult> {
    if (argv.length === 0) return Promise.reject(new FtpProxyError('command-empty', 'empty command'));
    const [file, ...args] = argv;
    return new Promise<CommandResult>((resolve, reject) => {
      const child = spawn(file, args, {
        shell: false,
        env: this.opts.env ?? process.env,
        stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, this.timeoutMs);
      child.stdout?.on('data', (b: Buffer) => out.push(b));
      child.stderr?.on('data', (b: Buffer) => err.push(b));
      child.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (e.code === 'ENOENT') {
          reject(new FtpProxyError('command-missing', `${file}: command not found (PATH=${(this.opts.env ?? process.env).PATH ?? ''})`, { cause: e }));
        } else {
          reject(new FtpProxyError('command-failed', `${file}: ${e.message}`, { cause: e }));
        }
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (timedOut) {
          reject(new FtpProxyError('command-timeout', `${shellQuote(argv)}: no answer after ${this.timeoutMs} ms, killed`));
          return;
        }
        resolve({
          code: code ?? (signal !== null ? 128 : 1),
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
        });
      });
      if (stdin !== undefined) {
        child.stdin?.on('error', () => {
          /* the command exited without reading: its exit code tells */
        });
        child.stdin?.end(stdin);
      }
    });
  }
}

export interface RecordedCommand {
  argv: string[];
  stdin?: string;
}

export interface RecordingRunnerOptions {
  /** where the transcript lines go (default: nowhere; read `lines`) */
  print?: (line: string) => void;
  /** value of `sysctl -n net.inet.ip.fw.dyn_keep_states` (default 1) */
  dynKeepStates?: number;
  /** `ipfw -d show N` dynamic rules for rule N (default: none) */
  ipfwStates?: (rule: number) => string;
  /** `pfctl -a <anchor> -s Anchors` output (default: none) */
  pfAnchors?: (anchor: string) => string[];
  /** override any answer; return undefined to use the default */
  respond?: (argv: readonly string[], stdin?: string) => CommandResult | undefined;
}

/** Records and prints commands instead of running them. */
export class RecordingRunner implements CommandRunner {
  readonly commands: RecordedCommand[] = [];
  readonly lines: string[] = [];
  constructor(private readonly opts: RecordingRunnerOptions = {}) {}

  async run(argv: string[], stdin?: string): Promise<CommandResult> {
    const rec: RecordedCommand = stdin === undefined ? { argv: [...argv] } : { argv: [...argv], stdin };
    this.commands.push(rec);
    for (const l of formatCommand(argv, stdin)) {
      this.lines.push(l);
      this.opts.print?.(l);
    }
    return this.opts.respond?.(argv, stdin) ?? this.answer(argv);
  }

  /** Canned answers of a FreeBSD host configured as the man page says. */
  private answer(argv: readonly string[]): CommandResult {
    const ok = (stdout = ''): CommandResult => ({ code: 0, stdout, stderr: '' });
    const cmd = argv[0];
    const rest = argv.slice(1).filter((a) => a !== '-q');
    if (cmd === 'sysctl' && argv.includes('net.inet.ip.fw.dyn_keep_states')) {
      return ok(`${this.opts.dynKeepStates ?? 1}\n`);
    }
    if (cmd === 'ipfw' && rest[0] === '-d' && rest[1] === 'show' && rest[2] !== undefined) {
      const rule = Number(rest[2]);
      const states = this.opts.ipfwStates?.(rule) ?? '';
      return ok(states === '' ? '' : `## Dynamic rules:\n${states}${states.endsWith('\n') ? '' : '\n'}`);
    }
    if (cmd === 'pfctl' && rest.includes('info')) return ok('Status: Enabled for 0 days 00:00:01           Debug: Urgent\n');
    if (cmd === 'pfctl' && rest.includes('Anchors')) {
      const a = rest[rest.indexOf('-a') + 1] ?? '';
      return ok((this.opts.pfAnchors?.(a) ?? []).map((x) => `  ${x}\n`).join(''));
    }
    return ok();
  }

  /** The transcript so far, one line each. */
  transcript(): string {
    return this.lines.map((l) => `${l}\n`).join('');
  }
}

/**
 * What every hole must be before its addresses and port become words of an
 * ipfw(8) or pfctl(8) command: literal addresses of its family, a port in
 * 1..65535, a rule number inside [first, last].  Throws FtpProxyError.
 */
export function checkHoleForCommand(hole: Hole, first: number, last: number): void {
  const isIp = hole.family === 6 ? net.isIPv6 : net.isIPv4;
  if (!isIp(hole.src) || !isIp(hole.dst)) {
    throw new FtpProxyError('hole-invalid', `not IPv${hole.family} addresses: ${hole.src} ${hole.dst}`);
  }
  if (!Number.isInteger(hole.port) || hole.port < 1 || hole.port > 65535) {
    throw new FtpProxyError('hole-invalid', `bad port ${hole.port}`);
  }
  if (!Number.isInteger(hole.rule) || hole.rule < first || hole.rule > last) {
    throw new FtpProxyError('hole-invalid', `rule ${hole.rule} outside the pool ${first}..${last}`);
  }
}
