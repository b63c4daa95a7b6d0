/**
 * The pidfile (`-i`, default /var/run/ftp6proxy.pid), as pidfile(3) keeps it:
 * created exclusively, refused while it names a live ftp6proxy, taken over
 * when stale, holding the pid and a newline, removed at stop only while it
 * still holds our pid.
 *
 * Removal needs write access to the pidfile's directory *outside* any chroot,
 * so it must be done by a process that stayed root and unchrooted (the
 * privileged parent), never by the chrooted packet parser.
 */
import * as fs from 'fs';
import * as path from 'path';
import { execFileSync } from 'child_process';
import { FtpProxyError } from './types';

export const DEFAULT_PIDFILE = '/var/run/ftp6proxy.pid';

export interface PidFileDeps {
  /** our pid; default process.pid */
  pid?: number;
  /** true when a process with this pid exists; default kill(pid, 0) */
  isAlive?: (pid: number) => boolean;
  /** true when that live process is an ftp6proxy; default /proc/<pid>/cmdline or ps(1) */
  isFtp6proxy?: (pid: number) => boolean;
}

/** kill(pid, 0): ESRCH means gone, EPERM means alive but not ours to signal. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Does the command line name ftp6proxy?  Node runs us as `node <script> ...`,
 * so look at the interpreter and the script: either is called ftp6proxy*, or
 * the script is the very one we run (a checkout started as dist/src/main.js).
 */
export function cmdlineIsFtp6proxy(argv: string[], ownScript: string | undefined = process.argv[1]): boolean {
  for (const a of argv.slice(0, 2)) {
    if (a === undefined || a === '') continue;
    if (path.basename(a).startsWith('ftp6proxy')) return true;
    if (ownScript !== undefined && path.resolve(a) === path.resolve(ownScript)) return true;
  }
  return false;
}

/**
 * Name check for a live pid: /proc/<pid>/cmdline on Linux, `ps -p` elsewhere.
 * When neither can tell, answer true: refusing to start beats a second daemon.
 */
export function pidIsFtp6proxy(pid: number): boolean {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`);
    return cmdlineIsFtp6proxy(raw.toString('utf8').split('\0'));
  } catch {
    // no procfs (FreeBSD) or the process went away
  }
  try {
    // ps -o args= prints the full command line; split on spaces is good enough for the first two words
    const out = execFileSync('ps', ['-p', String(pid), '-o', 'args='], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
    const line = out.trim();
    if (line === '') return false;
    return cmdlineIsFtp6proxy(line.split(/\s+/));
  } catch {
    return true;
  }
}

/** Parse pidfile contents: a decimal pid, optional trailing newline.  null if malformed. */
export function parsePid(text: string): number | null {
  const m = /^\s*(\d{1,10})\s*$/.exec(text);
  if (m === null) return null;
  const n = Number(m[1]);
  return n > 0 && n <= 0x7fffffff ? n : null;
}

export class PidFile {
  readonly path: string;
  private readonly pid: number;
  private readonly isAlive: (pid: number) => boolean;
  private readonly isFtp6proxy: (pid: number) => boolean;
  private written = false;

  constructor(file: string, deps: PidFileDeps = {}) {
    this.path = path.resolve(file);
    this.pid = deps.pid ?? process.pid;
    this.isAlive = deps.isAlive ?? processAlive;
    this.isFtp6proxy = deps.isFtp6proxy ?? pidIsFtp6proxy;
  }

  /**
   * Check without writing: the directory exists and no live ftp6proxy holds
   * the file.  The launcher calls it to fail fast before going to the background.
   */
  check(): void {
    this.checkDir();
    const other = this.livePid();
    if (other !== null) throw this.liveError(other);
  }

  /** Create the pidfile exclusively and write our pid.  Throws FtpProxyError. */
  create(): void {
    this.checkDir();
    for (let attempt = 0; attempt < 3; attempt++) {
      let fd: number;
      try {
        fd = fs.openSync(this.path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EEXIST') {
          const other = this.livePid();
          if (other !== null) throw this.liveError(other);
          // stale: its process is gone (or is not ftp6proxy); take it over
          try {
            fs.unlinkSync(this.path);
          } catch (u) {
            if ((u as NodeJS.ErrnoException).code !== 'ENOENT') throw this.writeError(u);
          }
          continue;
        }
        throw this.writeError(e);
      }
      try {
        fs.writeSync(fd, `${this.pid}\n`);
      } catch (e) {
        fs.closeSync(fd);
        try {
          fs.unlinkSync(this.path);
        } catch {
          // best effort
        }
        throw this.writeError(e);
      }
      fs.closeSync(fd);
      this.written = true;
      return;
    }
    throw new FtpProxyError('pidfile', `cannot create pidfile ${this.path}: it keeps reappearing`, { fatal: true });
  }

  /**
   * Remove the pidfile if it still holds our pid.  Never throws: the result
   * says what happened, for the log.
   */
  remove(): { removed: boolean; why?: string } {
    let text: string;
    try {
      text = fs.readFileSync(this.path, 'utf8');
    } catch (e) {
      return { removed: false, why: `cannot read ${this.path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}` };
    }
    if (parsePid(text) !== this.pid) return { removed: false, why: `${this.path} no longer holds pid ${this.pid}` };
    try {
      fs.unlinkSync(this.path);
    } catch (e) {
      return { removed: false, why: `cannot remove ${this.path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}` };
    }
    this.written = false;
    return { removed: true };
  }

  /** True after create() until remove(). */
  get isWritten(): boolean {
    return this.written;
  }

  private checkDir(): void {
    const dir = path.dirname(this.path);
    let st: fs.Stats;
    try {
      st = fs.statSync(dir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        throw new FtpProxyError('pidfile', `pidfile directory ${dir} does not exist (-i ${this.path})`, { fatal: true });
      }
      throw new FtpProxyError('pidfile', `pidfile directory ${dir}: ${code ?? String(e)} (-i ${this.path})`, { fatal: true, cause: e });
    }
    if (!st.isDirectory()) {
      throw new FtpProxyError('pidfile', `pidfile directory ${dir} is not a directory (-i ${this.path})`, { fatal: true });
    }
    try {
      fs.accessSync(dir, fs.constants.W_OK);
    } catch {
      throw new FtpProxyError('pidfile', `pidfile directory ${dir} is not writable (-i ${this.path})`, { fatal: true });
    }
    try {
      if (fs.statSync(this.path).isDirectory()) {
        throw new FtpProxyError('pidfile', `pidfile ${this.path} is a directory`, { fatal: true });
      }
    } catch (e) {
      if (e instanceof FtpProxyError) throw e;
    }
  }

  /** The pid of a live ftp6proxy named by the existing file, else null. */
  private livePid(): number | null {
    let text: string;
    try {
      text = fs.readFileSync(this.path, 'utf8');
    } catch {
      return null;
    }
    const other = parsePid(text);
    if (other === null || other === this.pid) return null;
    if (!this.isAlive(other)) return null;
    return this.isFtp6proxy(other) ? other : null;
  }

  private liveError(other: number): FtpProxyError {
    return new FtpProxyError('pidfile-live', `ftp6proxy is already running as pid ${other} (pidfile ${this.path})`, { fatal: true });
  }

  private writeError(e: unknown): FtpProxyError {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EROFS' ? 'read-only file system' : code ?? String(e);
    return new FtpProxyError('pidfile', `cannot write pidfile ${this.path}: ${why}`, { fatal: true, cause: e });
  }
}
