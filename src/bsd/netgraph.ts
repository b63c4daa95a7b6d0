/**
 * netgraph(4) encodings for ng_socket(4): struct sockaddr_ng and the control
 * messages ftp6proxy sends (NGM_CONNECT, NGM_NAME, NGM_NODEINFO), plus the
 * decoders for replies.  Pure: no I/O.
 *
 * Sources (freebsd/freebsd-src):
 * - sys/netgraph/ng_message.h: struct ng_mesg, NG_VERSION, NGM_GENERIC_COOKIE,
 *   the generic command numbers, struct ngm_connect / ngm_name / nodeinfo and
 *   the string sizes NG_PATHSIZ, NG_HOOKSIZ, NG_NODESIZ, NG_TYPESIZ, NG_CMDSTRSIZ.
 * - sys/netgraph/ng_socket.h: struct sockaddr_ng, NG_DATA, NG_CONTROL.
 * - sys/sys/socket.h: AF_NETGRAPH / PF_NETGRAPH = 32.
 * - lib/libnetgraph/msg.c (NgDeliverMsg): sg_len = strlen(path) + 1 +
 *   NGSA_OVERHEAD (2), and cmdstr "cmd%d".
 * - sys/netgraph/ng_socket.c (ng_bind): 4 <= sg_len <= NG_NODESIZ + 2 and the
 *   name NUL-terminated at sg_data[sg_len - 3].
 *
 * The message header is in HOST byte order (it is a plain C struct copied in
 * and out of the kernel); the default follows the CPU we run on.
 */
import { HOST_LITTLE_ENDIAN } from './sockaddr';

/** AF_NETGRAPH = PF_NETGRAPH (sys/sys/socket.h) */
export const PF_NETGRAPH = 32;
/** ng_socket.h: socket(PF_NETGRAPH, SOCK_DGRAM, NG_DATA) */
export const NG_DATA = 1;
/** ng_socket.h: socket(PF_NETGRAPH, SOCK_DGRAM, NG_CONTROL) */
export const NG_CONTROL = 2;

/** ng_message.h string sizes, each including the NUL */
export const NG_TYPESIZ = 32;
export const NG_HOOKSIZ = 32;
export const NG_NODESIZ = 32;
export const NG_PATHSIZ = 512;
export const NG_CMDSTRSIZ = 32;

/** ng_message.h: "Netgraph message header compatibility field" */
export const NG_VERSION = 8;
/** ng_message.h: generic message type cookie (not the pre-2000 value 851672668) */
export const NGM_GENERIC_COOKIE = 1137070366;
/** ng_message.h: or'd into read-only / replying commands */
export const NGM_READONLY = 0x10000000;
export const NGM_HASREPLY = 0x20000000;
/** ng_message.h generic commands */
export const NGM_SHUTDOWN = 1;
export const NGM_MKPEER = 2;
export const NGM_CONNECT = 3;
export const NGM_NAME = 4;
export const NGM_RMHOOK = 5;
export const NGM_NODEINFO = 6 | NGM_READONLY | NGM_HASREPLY; // 0x30000006
/** ng_message.h flags */
export const NGF_ORIG = 0;
export const NGF_RESP = 1;

/** sizeof(struct ng_msghdr): 1+1+2+4*5+32 */
export const NG_MESG_HDR_LEN = 56;
/** sizeof(struct ngm_connect): path[512] ourhook[32] peerhook[32] */
export const NGM_CONNECT_LEN = NG_PATHSIZ + 2 * NG_HOOKSIZ; // 576
/** sizeof(struct ngm_name) */
export const NGM_NAME_LEN = NG_NODESIZ;
/** sizeof(struct nodeinfo): name[32] type[32] u32 id, u32 hooks */
export const NODEINFO_LEN = NG_NODESIZ + NG_TYPESIZ + 8; // 72
/** offsetof(struct sockaddr_ng, sg_data) (libnetgraph's NGSA_OVERHEAD) */
export const NGSA_OVERHEAD = 2;

/** Write a C string into a fixed-size field: bytes, NUL, zero padding. */
function putCString(buf: Buffer, off: number, size: number, s: string, what: string): void {
  const bytes = Buffer.from(s, 'latin1');
  if (s.includes('\0') || bytes.length > size - 1) {
    throw new RangeError(`${what} does not fit ${size - 1} characters: ${JSON.stringify(s)}`);
  }
  bytes.copy(buf, off);
}

/** Read a NUL-terminated string from a fixed-size field. */
function getCString(buf: Buffer, off: number, size: number): string {
  const field = buf.subarray(off, off + size);
  const nul = field.indexOf(0);
  return field.subarray(0, nul < 0 ? field.length : nul).toString('latin1');
}

/**
 * struct sockaddr_ng for a name or path: u8 sg_len, u8 sg_family = 32, then
 * the NUL-terminated string.  The buffer is exactly sg_len bytes, as
 * libnetgraph passes sg_len as the address length.
 */
export function encodeSockaddrNg(path: string): Buffer {
  const bytes = Buffer.from(path, 'latin1');
  if (path.length === 0 || path.includes('\0') || bytes.length > NG_PATHSIZ - 1) {
    throw new RangeError(`bad netgraph path: ${JSON.stringify(path)}`);
  }
  const len = NGSA_OVERHEAD + bytes.length + 1;
  if (len > 255) throw new RangeError(`netgraph path too long for sg_len: ${path}`);
  const b = Buffer.alloc(len);
  b[0] = len; // sg_len
  b[1] = PF_NETGRAPH; // sg_family
  bytes.copy(b, 2);
  return b;
}

/**
 * The address to bind(2) a control socket to, i.e. the node's name.  ng_bind()
 * accepts 4 <= sg_len <= NG_NODESIZ + 2, i.e. names of 1..31 characters; node
 * names may not contain '.', ':', '[' or ']' (ng_name_node()).
 */
export function encodeNodeNameAddr(name: string): Buffer {
  if (!/^[^.:[\]\0]+$/.test(name)) throw new RangeError(`bad netgraph node name: ${JSON.stringify(name)}`);
  const b = encodeSockaddrNg(name);
  if (b.length < 4 || b.length > NG_NODESIZ + 2) {
    throw new RangeError(`netgraph node name must be 1..${NG_NODESIZ - 1} characters: ${name}`);
  }
  return b;
}

export function decodeSockaddrNg(b: Uint8Array): { family: number; path: string } {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (buf.length < 3) throw new RangeError(`sockaddr_ng too short: ${buf.length}`);
  const len = Math.min(buf[0], buf.length);
  return { family: buf[1], path: getCString(buf, 2, len - 2) };
}

export interface NgMesgHeader {
  version: number;
  arglen: number;
  cmd: number;
  flags: number;
  token: number;
  typecookie: number;
  cmdstr: string;
}

export interface NgMesg extends NgMesgHeader {
  data: Buffer;
}

/**
 * struct ng_mesg: the 56-byte header (host order) and `data`.
 * `cmdstr` defaults to libnetgraph's "cmd%d"; the kernel does not read it for
 * binary messages.
 */
export function encodeNgMesg(
  m: { cmd: number; token: number; data?: Uint8Array; typecookie?: number; flags?: number; cmdstr?: string },
  littleEndian: boolean = HOST_LITTLE_ENDIAN,
): Buffer {
  const data = m.data ?? new Uint8Array(0);
  const b = Buffer.alloc(NG_MESG_HDR_LEN + data.length);
  const u32 = (v: number, off: number): void => {
    if (littleEndian) b.writeUInt32LE(v >>> 0, off);
    else b.writeUInt32BE(v >>> 0, off);
  };
  b[0] = NG_VERSION; // version
  // 1: spare, 2..3: spare2 = 0
  u32(data.length, 4); // arglen
  u32(m.cmd, 8); // cmd
  u32(m.flags ?? NGF_ORIG, 12); // flags
  u32(m.token, 16); // token
  u32(m.typecookie ?? NGM_GENERIC_COOKIE, 20); // typecookie
  putCString(b, 24, NG_CMDSTRSIZ, m.cmdstr ?? `cmd${m.cmd >>> 0}`, 'cmdstr');
  Buffer.from(data).copy(b, NG_MESG_HDR_LEN);
  return b;
}

/** Decode a message read from a control socket.  Throws on a short or foreign message. */
export function decodeNgMesg(bytes: Uint8Array, littleEndian: boolean = HOST_LITTLE_ENDIAN): NgMesg {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < NG_MESG_HDR_LEN) throw new RangeError(`netgraph message too short: ${b.length} bytes`);
  const u32 = (off: number): number => (littleEndian ? b.readUInt32LE(off) : b.readUInt32BE(off));
  const version = b[0];
  if (version !== NG_VERSION) throw new RangeError(`netgraph message version ${version}, want ${NG_VERSION}`);
  const arglen = u32(4);
  if (NG_MESG_HDR_LEN + arglen > b.length) {
    throw new RangeError(`netgraph message truncated: arglen ${arglen}, have ${b.length - NG_MESG_HDR_LEN}`);
  }
  return {
    version,
    arglen,
    cmd: u32(8),
    flags: u32(12),
    token: u32(16),
    typecookie: u32(20),
    cmdstr: getCString(b, 24, NG_CMDSTRSIZ),
    data: Buffer.from(b.subarray(NG_MESG_HDR_LEN, NG_MESG_HDR_LEN + arglen)),
  };
}

/** struct ngm_connect body: path[512], ourhook[32], peerhook[32]. */
export function encodeConnectBody(path: string, ourhook: string, peerhook: string): Buffer {
  const b = Buffer.alloc(NGM_CONNECT_LEN);
  putCString(b, 0, NG_PATHSIZ, path, 'path');
  putCString(b, NG_PATHSIZ, NG_HOOKSIZ, ourhook, 'ourhook');
  putCString(b, NG_PATHSIZ + NG_HOOKSIZ, NG_HOOKSIZ, peerhook, 'peerhook');
  return b;
}

/** NGM_CONNECT message: connect `ourhook` on the addressed node to `peerhook` on `path`. */
export function encodeConnect(
  a: { path: string; ourhook: string; peerhook: string; token: number },
  littleEndian: boolean = HOST_LITTLE_ENDIAN,
): Buffer {
  return encodeNgMesg(
    { cmd: NGM_CONNECT, token: a.token, data: encodeConnectBody(a.path, a.ourhook, a.peerhook) },
    littleEndian,
  );
}

/** NGM_NAME message: struct ngm_name { char name[NG_NODESIZ]; } */
export function encodeName(a: { name: string; token: number }, littleEndian: boolean = HOST_LITTLE_ENDIAN): Buffer {
  const body = Buffer.alloc(NGM_NAME_LEN);
  putCString(body, 0, NG_NODESIZ, a.name, 'node name');
  return encodeNgMesg({ cmd: NGM_NAME, token: a.token, data: body }, littleEndian);
}

/** NGM_NODEINFO request: no arguments; the reply carries a struct nodeinfo. */
export function encodeNodeInfoRequest(a: { token: number }, littleEndian: boolean = HOST_LITTLE_ENDIAN): Buffer {
  return encodeNgMesg({ cmd: NGM_NODEINFO, token: a.token }, littleEndian);
}

export interface NodeInfo {
  name: string;
  type: string;
  /** ng_ID_t: libnetgraph names an unnamed node "[%x]:" */
  id: number;
  hooks: number;
}

/** struct nodeinfo: name[32], type[32], u32 id, u32 hooks (host order). */
export function decodeNodeInfo(data: Uint8Array, littleEndian: boolean = HOST_LITTLE_ENDIAN): NodeInfo {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (b.length < NODEINFO_LEN) throw new RangeError(`nodeinfo too short: ${b.length} bytes`);
  const u32 = (off: number): number => (littleEndian ? b.readUInt32LE(off) : b.readUInt32BE(off));
  return {
    name: getCString(b, 0, NG_NODESIZ),
    type: getCString(b, NG_NODESIZ, NG_TYPESIZ),
    id: u32(NG_NODESIZ + NG_TYPESIZ),
    hooks: u32(NG_NODESIZ + NG_TYPESIZ + 4),
  };
}

/** Decode a NODEINFO reply: checks it is the response to `token`. */
export function decodeNodeInfoReply(bytes: Uint8Array, token: number, littleEndian: boolean = HOST_LITTLE_ENDIAN): NodeInfo {
  const m = decodeNgMesg(bytes, littleEndian);
  if (m.cmd !== NGM_NODEINFO >>> 0 || (m.flags & NGF_RESP) === 0 || m.token !== token >>> 0) {
    throw new RangeError(`not the NODEINFO reply to token ${token} (cmd 0x${m.cmd.toString(16)}, flags ${m.flags}, token ${m.token})`);
  }
  return decodeNodeInfo(m.data, littleEndian);
}

/** ng_ipfw(4) hook names: decimal, no leading zero, 1..65535 (the rule's cookie). */
export function ipfwHookName(hook: number): string {
  if (!Number.isInteger(hook) || hook < 1 || hook > 65535) throw new RangeError(`ng_ipfw hook must be 1..65535: ${hook}`);
  return String(hook);
}
