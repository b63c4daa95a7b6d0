/**
 * BSD `struct sockaddr_in`, as divert(4) uses it.
 *
 * FreeBSD's layout (sys/netinet/in.h) starts with a length byte, unlike
 * Linux's (no sin_len, 16-bit family).  Only the BSD layout lives here:
 *
 *   offset 0   u8   sin_len     = 16 (sizeof(struct sockaddr_in))
 *   offset 1   u8   sin_family  = AF_INET = 2 (sys/sys/socket.h)
 *   offset 2   u16  sin_port
 *   offset 4   u32  sin_addr    (network order, like every in_addr)
 *   offset 8   char sin_zero[8]
 *
 * divert(4) gives two fields a meaning of their own (sys/netinet/ip_divert.c):
 * - bind(2): only sin_port counts, in network order (div_bind() keys its hash
 *   on the raw field and divert_packet() compares it with htons(info)).
 * - recvfrom(2): divert_packet() stores the matching ipfw rule number into
 *   sin_port in HOST order ("record matching rule, in host format"), the first
 *   IPv4 address of the receiving interface into sin_addr (incoming packets
 *   only, else 0.0.0.0) and the receiving interface's name into sin_zero with
 *   strlcpy(), i.e. at most 7 characters and a NUL.
 * - sendto(2): div_send() resumes ipfw at sin_port+1, and takes the interface
 *   from sin_zero when the name there is 1..7 characters followed by a NUL.
 *
 * The reinjection must hand the kernel back exactly the 16 bytes it gave us,
 * so the decoder keeps them (`raw`) and nothing re-encodes them.
 */
import * as os from 'os';

export const SOCKADDR_IN_LEN = 16;
/** AF_INET on FreeBSD (sys/sys/socket.h), and also on Linux */
export const BSD_AF_INET = 2;
/** sizeof(sin_zero) (sys/netinet/in.h) */
export const SIN_ZERO_LEN = 8;

/** true on little-endian hosts (amd64, arm64): the byte order of "host order" fields */
export const HOST_LITTLE_ENDIAN = os.endianness() === 'LE';

export interface DivertAddr {
  /** matching ipfw rule number (sin_port, host order) */
  rule: number;
  /** sin_addr as a dotted quad; 0.0.0.0 for outgoing packets */
  addr: string;
  /** receiving interface name from sin_zero ('' when none) */
  ifname: string;
  /** the 16 bytes exactly as received: echo these back on reinjection */
  raw: Buffer;
}

function ipv4Bytes(addr: string): number[] {
  const parts = addr.split('.');
  if (parts.length !== 4) throw new RangeError(`not an IPv4 address: ${addr}`);
  return parts.map((p) => {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) throw new RangeError(`not an IPv4 address: ${addr}`);
    return Number(p);
  });
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) throw new RangeError(`port out of range: ${port}`);
}

/**
 * The address for bind(2) on a divert socket: AF_INET, length 16, the port in
 * network order (htons), INADDR_ANY (div_bind() ignores the address).
 */
export function encodeDivertBind(port: number): Buffer {
  checkPort(port);
  const b = Buffer.alloc(SOCKADDR_IN_LEN);
  b[0] = SOCKADDR_IN_LEN; // sin_len
  b[1] = BSD_AF_INET; // sin_family
  b.writeUInt16BE(port, 2); // sin_port, network order
  return b;
}

/**
 * Build the sockaddr divert_packet() would deliver.  Used by tests and by the
 * simulated divert socket; the daemon itself never re-encodes a received one.
 */
export function encodeDivertAddr(
  a: { rule: number; addr?: string; ifname?: string },
  littleEndian: boolean = HOST_LITTLE_ENDIAN,
): Buffer {
  checkPort(a.rule);
  const ifname = a.ifname ?? '';
  if (Buffer.byteLength(ifname, 'latin1') > SIN_ZERO_LEN - 1 || ifname.includes('\0')) {
    throw new RangeError(`interface name does not fit sin_zero: ${JSON.stringify(ifname)}`);
  }
  const b = Buffer.alloc(SOCKADDR_IN_LEN);
  b[0] = SOCKADDR_IN_LEN;
  b[1] = BSD_AF_INET;
  if (littleEndian) b.writeUInt16LE(a.rule, 2);
  else b.writeUInt16BE(a.rule, 2);
  Buffer.from(ipv4Bytes(a.addr ?? '0.0.0.0')).copy(b, 4);
  b.write(ifname, 8, 'latin1'); // strlcpy(): name, NUL, rest zero
  return b;
}

/**
 * Decode the sockaddr recvfrom(2) returned on a divert socket.  Throws on a
 * wrong length or family: the kernel never produces one, so it means the
 * socket is not what we think it is.
 */
export function decodeDivertAddr(bytes: Uint8Array, littleEndian: boolean = HOST_LITTLE_ENDIAN): DivertAddr {
  if (bytes.length !== SOCKADDR_IN_LEN) {
    throw new RangeError(`divert sockaddr must be ${SOCKADDR_IN_LEN} bytes, got ${bytes.length}`);
  }
  const raw = Buffer.from(bytes); // a copy: callers may reuse their receive buffer
  if (raw[0] !== SOCKADDR_IN_LEN || raw[1] !== BSD_AF_INET) {
    throw new RangeError(`not a BSD sockaddr_in (sin_len=${raw[0]}, sin_family=${raw[1]})`);
  }
  const rule = littleEndian ? raw.readUInt16LE(2) : raw.readUInt16BE(2);
  const addr = `${raw[4]}.${raw[5]}.${raw[6]}.${raw[7]}`;
  const zero = raw.subarray(8, 16);
  const nul = zero.indexOf(0);
  // div_send() only uses a name that is NUL-terminated inside sin_zero; report
  // the same: 8 non-NUL bytes are no name.
  const ifname = nul < 0 ? '' : zero.subarray(0, nul).toString('latin1');
  return { rule, addr, ifname, raw };
}
