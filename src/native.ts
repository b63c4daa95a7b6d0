/**
 * The one place the native shim is loaded.  Everything else imports the
 * typed `Native` interface from here, so tests can inject fakes.
 */
import * as path from 'path';

/** Error thrown by the shim: `code` is the errno name, `errno` its number. */
export interface SysError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

export interface RecvResult {
  /** bytes received (the datagram's real length with MSG_TRUNC) */
  n: number;
  /** the peer's raw sockaddr bytes */
  addr: Buffer;
}

export interface PollerHandle {
  /** 1 = readable, 2 = writable */
  start(events: number): void;
  stop(): void;
}

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  dir: string;
}

export interface NativeConstants {
  AF_UNIX: number;
  AF_INET: number;
  AF_INET6: number;
  AF_NETLINK?: number;
  SOCK_STREAM: number;
  SOCK_DGRAM: number;
  SOCK_RAW: number;
  SOL_SOCKET: number;
  SO_RCVBUF: number;
  SO_SNDBUF: number;
  SO_RCVBUFFORCE?: number;
  SO_ERROR: number;
  MSG_DONTWAIT: number;
  MSG_TRUNC: number;
  EAGAIN: number;
  ENOBUFS: number;
  EAFNOSUPPORT: number;
  EPROTONOSUPPORT: number;
  EPERM: number;
  ENOENT: number;
  EINVAL: number;
}

export interface Native {
  socket(domain: number, type: number, protocol: number): number;
  socketpair(domain: number, type: number, protocol: number): [number, number];
  bind(fd: number, sockaddr: Buffer): void;
  connect(fd: number, sockaddr: Buffer): void;
  sendto(fd: number, data: Buffer, sockaddr: Buffer | null, flags?: number): number;
  /** null when the call would block */
  recvfrom(fd: number, buf: Buffer, flags?: number): RecvResult | null;
  /**
   * recv(2): the bytes received, or -1 when the call would block.  No peer
   * address and no result object: for netlink, whose peer is the kernel,
   * on every packet (creating the address Buffer was the costliest step of
   * a packet's receipt in a process that had been asleep).
   */
  recv(fd: number, buf: Buffer, flags?: number): number;
  setsockopt(fd: number, level: number, name: number, value: Buffer): void;
  getsockopt(fd: number, level: number, name: number, maxLength: number): Buffer;
  close(fd: number): void;
  chroot(dir: string): void;
  getpwnam(name: string): PasswdEntry | null;
  /** Linux only: prctl(PR_SET_KEEPCAPS, on).  Absent on FreeBSD. */
  setKeepCaps?(on: number): void;
  /** Linux only: capget(2) with raw header (8 bytes) and data (24 bytes, two slots); fills `data`. */
  capget?(header: Buffer, data: Buffer): void;
  /** Linux only: capset(2) with raw header and data as for capget. */
  capset?(header: Buffer, data: Buffer): void;
  Poller: new (fd: number, cb: (status: number, events: number) => void) => PollerHandle;
  constants: NativeConstants;
  platform: 'linux' | 'freebsd' | 'other';
}

export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;

let cached: Native | undefined;

/** Load the addon built by `npm install` (node-gyp). */
export function loadNative(): Native {
  if (cached === undefined) {
    const root = path.resolve(__dirname, '..', '..');
    const candidates = [
      path.join(root, 'build', 'Release', 'ftp6proxy_native.node'),
      path.join(root, 'build', 'Debug', 'ftp6proxy_native.node'),
    ];
    let lastErr: unknown;
    for (const c of candidates) {
      try {
        // eslint-disable-next-line @typescript-eslint/no-var-requires
        cached = require(c) as Native;
        break;
      } catch (e) {
        lastErr = e;
      }
    }
    if (cached === undefined) {
      throw new Error(`cannot load the native shim (run \`npm install\`): ${String(lastErr)}`);
    }
  }
  return cached;
}
