/**
 * Going to the background without fork(2).
 *
 * daemon(3) forks and lets the parent exit at once; Node cannot fork, and we
 * also want the command to fail when start-up fails.  So the launcher
 * re-spawns the same script detached (its own session, like setsid(2), stdio
 * on /dev/null), with FTP6PROXY_DAEMON_CHILD=1 and a readiness pipe on fd 3.
 * The child writes "ready\n" once capture is open, the firewall checked and
 * privileges dropped, or "error: <msg>\n" when start-up fails.  The launcher
 * exits 0 on "ready", or prints the error and exits 1 on an error, an early
 * exit of the child, or a timeout.
 *
 *   launcher:  if (!isDaemonChild() && !foreground) process.exit(await launchInBackground())
 *   child:     const r = new DaemonReadiness(); ... r.notifyReady()  /  r.notifyError(msg)
 */
import * as fs from 'fs';
import { ChildProcess, SpawnOptions, spawn as realSpawn } from 'child_process';

export const DAEMON_CHILD_ENV = 'FTP6PROXY_DAEMON_CHILD';
/** the readiness pipe's descriptor in the child */
export const READY_FD = 3;
export const DEFAULT_READY_TIMEOUT_MS = 15000;

/** True in the re-spawned background child. */
export function isDaemonChild(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[DAEMON_CHILD_ENV] === '1';
}

/** The environment for other children (e.g. the privsep helper): without our marker. */
export function envWithoutDaemonMarker(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const copy: NodeJS.ProcessEnv = { ...env };
  delete copy[DAEMON_CHILD_ENV];
  return copy;
}

export type LaunchResult = { ok: true; pid: number } | { ok: false; error: string };

export interface LaunchOptions {
  /** default process.execPath */
  execPath?: string;
  /** node options + script + arguments; default process.execArgv + process.argv.slice(1) */
  args?: string[];
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  spawn?: (cmd: string, args: string[], opts: SpawnOptions) => ChildProcess;
}

/** Longest readiness message we read; anything longer is cut. */
const MAX_MSG = 4096;

/**
 * Start the background child and wait for its readiness message.
 * Resolves (never rejects) with the child's pid or the error to print.
 */
export function startInBackground(opts: LaunchOptions = {}): Promise<LaunchResult> {
  const execPath = opts.execPath ?? process.execPath;
  const args = opts.args ?? [...process.execArgv, ...process.argv.slice(1)];
  const env = { ...(opts.env ?? process.env), [DAEMON_CHILD_ENV]: '1' };
  const timeoutMs = opts.timeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  const spawn = opts.spawn ?? realSpawn;

  return new Promise<LaunchResult>((resolve) => {
    let child: ChildProcess;
    try {
      child = spawn(execPath, args, { detached: true, stdio: ['ignore', 'ignore', 'ignore', 'pipe'], env });
    } catch (e) {
      resolve({ ok: false, error: `cannot start the background process: ${String(e)}` });
      return;
    }
    let text = '';
    let settled = false;
    const pipe = child.stdio[READY_FD];
    const finish = (r: LaunchResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.removeAllListeners('close');
      if (pipe !== null && pipe !== undefined && 'destroy' in pipe) pipe.destroy();
      // the daemon lives on without us; do not let it keep the launcher's loop alive
      child.unref();
      resolve(r);
    };
    const timer = setTimeout(() => {
      try {
        child.kill('SIGTERM');
      } catch {
        // already gone
      }
      finish({ ok: false, error: `the background process did not report ready within ${Math.round(timeoutMs / 1000)} s` });
    }, timeoutMs);
    child.once('error', (e) => finish({ ok: false, error: `cannot start the background process: ${e.message}` }));
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      const why = text.startsWith('error: ') ? text.slice(7).trim() : signal !== null ? `killed by ${signal}` : `exit status ${code}`;
      finish({ ok: false, error: `the background process ended during start-up: ${why}` });
    });
    if (pipe === null || pipe === undefined) {
      finish({ ok: false, error: 'no readiness pipe to the background process' });
      return;
    }
    pipe.on('data', (chunk: Buffer) => {
      if (text.length < MAX_MSG) text += chunk.toString('utf8').slice(0, MAX_MSG - text.length);
      const nl = text.indexOf('\n');
      if (nl < 0 && text.length < MAX_MSG) return;
      const line = nl < 0 ? text : text.slice(0, nl);
      if (line === 'ready') finish({ ok: true, pid: child.pid ?? -1 });
      else if (line.startsWith('error: ')) finish({ ok: false, error: line.slice(7) });
      else finish({ ok: false, error: `unexpected readiness message: ${JSON.stringify(line.slice(0, 200))}` });
    });
    pipe.on('error', () => {
      // the exit handler reports it
    });
  });
}

/**
 * The launcher's whole job: start the child, then return the exit status
 * (0 when the daemon is up; 1 after printing the error to stderr).
 */
export async function launchInBackground(opts: LaunchOptions = {}, stderr: (s: string) => void = (s) => process.stderr.write(s)): Promise<number> {
  const r = await startInBackground(opts);
  if (r.ok) return 0;
  stderr(`ftp6proxy: ${r.error}\n`);
  return 1;
}

/**
 * The child's end of the readiness pipe.  Each message is sent at most once
 * and the descriptor is closed right after, so a later call can never write
 * into whatever socket reuses fd 3.  Outside a daemon child both are no-ops.
 */
export class DaemonReadiness {
  private done: boolean;

  constructor(private readonly fd: number = READY_FD, env: NodeJS.ProcessEnv = process.env) {
    this.done = !isDaemonChild(env);
  }

  /** Capture open, firewall checked, privileges dropped: the launcher may exit 0. */
  notifyReady(): void {
    this.send('ready\n');
  }

  /** Start-up failed; the launcher prints `msg` and exits 1.  Exit after this. */
  notifyError(msg: string): void {
    // one line: the launcher reads up to the first newline
    this.send(`error: ${msg.replace(/[\r\n]+/g, ' ')}\n`);
  }

  /** True until a message was sent (in a daemon child). */
  get pending(): boolean {
    return !this.done;
  }

  private send(line: string): void {
    if (this.done) return;
    this.done = true;
    try {
      fs.writeSync(this.fd, line);
    } catch {
      // the launcher is gone (timeout): nothing to tell
    }
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed
    }
  }
}
