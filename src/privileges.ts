/**
 * Dropping privileges the way OpenBSD daemons do: chroot to `-r`, then become
 * `-u` with its groups, then check that root cannot be regained.
 *
 * Linux: nfnetlink checks CAP_NET_ADMIN of the *current* task on every
 * message (net/netlink/af_netlink.c __netlink_ns_capable: the opener's file
 * credentials and ns_capable(current)), so sockets opened as root are not
 * enough to give NFQUEUE verdicts or change nft sets after setuid.  With
 * keepNetAdmin we keep exactly CAP_NET_ADMIN: prctl(PR_SET_KEEPCAPS, 1),
 * setgroups/setgid/setuid, then capset(effective = permitted = CAP_NET_ADMIN).
 * Capabilities are per thread: the JavaScript (main) thread keeps
 * CAP_NET_ADMIN; glibc's setuid broadcast strips every other thread of all
 * capabilities, which is what we want (they make no netlink calls).
 *
 * FreeBSD: ipfw checks privilege on every call, so nothing can be kept; the
 * firewall stays in a privileged helper (src/privsep.ts).
 *
 * After chroot, require() of a module not loaded yet fails: main.ts must
 * import every module it will use before calling dropPrivileges().
 */
import * as fs from 'fs';
import * as path from 'path';
import { FtpProxyError } from './types';
import { Native, PasswdEntry, loadNative } from './native';

/** include/uapi/linux/capability.h */
export const LINUX_CAPABILITY_VERSION_3 = 0x20080522;
export const CAP_NET_ADMIN = 12;
export const CAP_SETUID = 7;

export interface CapSets {
  effective: bigint;
  permitted: bigint;
  inheritable: bigint;
}

/** struct __user_cap_header_struct { __u32 version; int pid; } in host order; pid 0 = this thread. */
export function encodeCapHeader(pid = 0): Buffer {
  return Buffer.from(new Uint32Array([LINUX_CAPABILITY_VERSION_3, pid >>> 0]).buffer);
}

/**
 * struct __user_cap_data_struct { __u32 effective, permitted, inheritable; }[2]
 * (_LINUX_CAPABILITY_U32S_3 = 2): slot 0 holds bits 0-31, slot 1 bits 32-63.
 */
export function encodeCapData(c: CapSets): Buffer {
  const lo = (v: bigint): number => Number(v & 0xffffffffn);
  const hi = (v: bigint): number => Number((v >> 32n) & 0xffffffffn);
  return Buffer.from(
    new Uint32Array([lo(c.effective), lo(c.permitted), lo(c.inheritable), hi(c.effective), hi(c.permitted), hi(c.inheritable)]).buffer,
  );
}

export function decodeCapData(b: Buffer): CapSets {
  const u = new Uint32Array(b.buffer.slice(b.byteOffset, b.byteOffset + 24));
  const join = (lo: number, hi: number): bigint => (BigInt(hi) << 32n) | BigInt(lo);
  return { effective: join(u[0], u[3]), permitted: join(u[1], u[4]), inheritable: join(u[2], u[5]) };
}

/** The calling thread's capability sets (Linux only). */
export function getCaps(native: Native = loadNative()): CapSets {
  if (native.capget === undefined) throw new FtpProxyError('unsupported', 'capget is Linux only');
  const data = Buffer.alloc(24);
  native.capget(encodeCapHeader(), data);
  return decodeCapData(data);
}

export interface PrivilegeTargets {
  user: PasswdEntry;
  rootDir: string;
}

/**
 * Run at start, before opening anything: `-u` names an existing non-root user,
 * `-r` is an absolute path to an existing directory.  Clear messages otherwise.
 */
export function checkPrivilegeTargets(user: string, rootDir: string, native: Native = loadNative()): PrivilegeTargets {
  let pw: PasswdEntry | null;
  try {
    pw = native.getpwnam(user);
  } catch (e) {
    throw new FtpProxyError('bad-user', `cannot look up user "${user}" (-u): ${(e as Error).message}`, { fatal: true, cause: e });
  }
  if (pw === null) throw new FtpProxyError('bad-user', `no such user "${user}" (-u)`, { fatal: true });
  if (pw.uid === 0) throw new FtpProxyError('bad-user', `refusing to run as user "${user}" (-u): it has uid 0`, { fatal: true });
  if (!path.isAbsolute(rootDir)) throw new FtpProxyError('bad-chroot', `chroot directory "${rootDir}" (-r) is not an absolute path`, { fatal: true });
  let st: fs.Stats;
  try {
    st = fs.statSync(rootDir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' || code === 'ENOTDIR' ? 'does not exist' : code ?? String(e);
    throw new FtpProxyError('bad-chroot', `chroot directory ${rootDir} (-r) ${why}`, { fatal: true, cause: e });
  }
  if (!st.isDirectory()) throw new FtpProxyError('bad-chroot', `chroot directory ${rootDir} (-r) is not a directory`, { fatal: true });
  return { user: pw, rootDir };
}

/**
 * Warm up what Node would otherwise load lazily from the file system and
 * cannot reach inside the chroot.  Node's own modules live in the binary, so
 * require('dns') etc. keep working; what does not is the local time zone
 * (ICU resolves /etc/localtime on first use), so touch it now: syslog
 * timestamps stay in local time.  Project modules must be imported by main.ts
 * beforehand; this cannot do that for it.
 */
export function preloadForChroot(): void {
  const d = new Date();
  d.getTimezoneOffset();
  d.toString();
  Intl.DateTimeFormat().resolvedOptions();
}

/** What process.* calls dropPrivileges makes; injectable for tests. */
export interface ProcessIds {
  initgroups(user: string, extraGroup: number): void;
  setgid(id: number): void;
  setuid(id: number): void;
  getuid(): number;
  getgid(): number;
  geteuid(): number;
  getegid(): number;
}

function realProcessIds(): ProcessIds {
  const p = process as unknown as Partial<ProcessIds>;
  if (p.initgroups === undefined || p.setgid === undefined || p.setuid === undefined) {
    throw new FtpProxyError('unsupported', 'process.setuid/setgid/initgroups are not available on this platform', { fatal: true });
  }
  return p as ProcessIds;
}

export interface DropOptions {
  user: string;
  /** chroot here before setuid; undefined = no chroot */
  rootDir?: string;
  /** Linux: keep CAP_NET_ADMIN (and nothing else) for netlink after setuid */
  keepNetAdmin: boolean;
  native?: Native;
  proc?: ProcessIds;
}

export interface DropResult {
  uid: number;
  gid: number;
  rootDir: string | null;
  /** effective capabilities after the drop (Linux), else null */
  capEff: bigint | null;
}

/**
 * chroot (optional), initgroups + setgid + setuid to `user`, keep
 * CAP_NET_ADMIN on Linux when asked, and verify that setuid(0) now fails.
 * Throws FtpProxyError (fatal) on any failure: the caller must then exit.
 */
export function dropPrivileges(opts: DropOptions): DropResult {
  const native = opts.native ?? loadNative();
  const proc = opts.proc ?? realProcessIds();
  const pw = native.getpwnam(opts.user);
  if (pw === null) throw new FtpProxyError('bad-user', `no such user "${opts.user}" (-u)`, { fatal: true });
  if (pw.uid === 0) throw new FtpProxyError('bad-user', `refusing to run as user "${opts.user}" (-u): it has uid 0`, { fatal: true });
  const keep = opts.keepNetAdmin && native.platform === 'linux';
  if (keep && (native.setKeepCaps === undefined || native.capset === undefined || native.capget === undefined)) {
    throw new FtpProxyError('unsupported', 'keeping CAP_NET_ADMIN needs the Linux capability calls of the native shim', { fatal: true });
  }

  const step = (what: string, fn: () => void): void => {
    try {
      fn();
    } catch (e) {
      throw new FtpProxyError('privdrop', `cannot drop privileges: ${what}: ${(e as Error).message}`, { fatal: true, cause: e });
    }
  };

  preloadForChroot();
  // the group database is read now, while /etc is still reachable
  step(`initgroups(${pw.name})`, () => proc.initgroups(pw.name, pw.gid));
  if (opts.rootDir !== undefined) {
    const dir = opts.rootDir;
    step(`chroot(${dir})`, () => native.chroot(dir));
  }
  if (keep) step('prctl(PR_SET_KEEPCAPS)', () => native.setKeepCaps?.(1));
  step(`setgid(${pw.gid})`, () => proc.setgid(pw.gid));
  step(`setuid(${pw.uid})`, () => proc.setuid(pw.uid));
  let capEff: bigint | null = null;
  if (keep) {
    const only = 1n << BigInt(CAP_NET_ADMIN);
    step('capset(CAP_NET_ADMIN)', () => native.capset?.(encodeCapHeader(), encodeCapData({ effective: only, permitted: only, inheritable: 0n })));
    step('prctl(PR_SET_KEEPCAPS, 0)', () => native.setKeepCaps?.(0));
    const now = getCaps(native);
    if (now.effective !== only || now.permitted !== only) {
      throw new FtpProxyError('privdrop', `capabilities after the drop are ${now.effective.toString(16)}/${now.permitted.toString(16)}, expected CAP_NET_ADMIN only`, { fatal: true });
    }
    capEff = now.effective;
  } else if (native.platform === 'linux' && native.capget !== undefined) {
    capEff = getCaps(native).effective;
  }

  // paranoia, as OpenBSD daemons do: root must be out of reach now
  if (proc.getuid() !== pw.uid || proc.geteuid() !== pw.uid || proc.getgid() !== pw.gid || proc.getegid() !== pw.gid) {
    throw new FtpProxyError('privdrop', `ids after the drop are uid ${proc.getuid()}/${proc.geteuid()} gid ${proc.getgid()}/${proc.getegid()}`, { fatal: true });
  }
  let regained = false;
  try {
    proc.setuid(0);
    regained = true;
  } catch {
    // EPERM: as it should be
  }
  if (regained) throw new FtpProxyError('privdrop', 'setuid(0) succeeded after dropping privileges', { fatal: true });
  return { uid: pw.uid, gid: pw.gid, rootDir: opts.rootDir ?? null, capEff };
}
