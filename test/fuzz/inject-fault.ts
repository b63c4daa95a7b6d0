/**
 * Fault injection for the daemon in the lab, loaded with
 * `node -r dist/test/fuzz/inject-fault.js bin/ftp6proxy ...`.
 *
 * After SIGUSR2, every recv(2) on a netlink socket fails with EBADF, as
 * if the queue socket had been lost underneath the daemon (no real kernel
 * event does this on demand: another process cannot unbind our queue,
 * nfnetlink_queue answers EPERM, and the namespace lives as long as we are
 * in it).  The daemon must log it and exit non-zero, without spinning.
 */
import { loadNative } from '../../src/native';

const native = loadNative();
const realSocket = native.socket.bind(native);
const realRecv = native.recv.bind(native);
const netlinkFds = new Set<number>();
const state = { armed: false };

native.socket = (domain: number, type: number, protocol: number): number => {
  const fd = realSocket(domain, type, protocol);
  if (domain === (native.constants.AF_NETLINK ?? 16)) netlinkFds.add(fd);
  return fd;
};
native.recv = (fd: number, buf: Buffer, flags?: number) => {
  if (state.armed && netlinkFds.has(fd)) {
    const e = new Error('recv: Bad file descriptor (injected)') as Error & { code: string; errno: number; syscall: string };
    e.code = 'EBADF';
    e.errno = 9;
    e.syscall = 'recv';
    throw e;
  }
  return realRecv(fd, buf, flags);
};
process.on('SIGUSR2', () => {
  state.armed = true;
  process.stderr.write('inject-fault: netlink recv now fails with EBADF\n');
});
