/**
 * netgraph encodings, byte by byte, and NetgraphSource over a simulated
 * ng_socket.  Every expected byte string is written out field by field with
 * the header it comes from:
 * - sys/netgraph/ng_message.h: struct ng_msghdr (u8 version, u8 spare,
 *   u16 spare2, u32 arglen, u32 cmd, u32 flags, u32 token, u32 typecookie,
 *   char cmdstr[32]) = 56 bytes, host order; NG_VERSION 8; NGM_GENERIC_COOKIE
 *   1137070366 = 0x43c6511e; NGM_CONNECT 3; NGM_NAME 4; NGM_NODEINFO
 *   (6|NGM_READONLY|NGM_HASREPLY) = 0x30000006; struct ngm_connect
 *   { path[512], ourhook[32], peerhook[32] }; struct ngm_name { name[32] };
 *   struct nodeinfo { name[32], type[32], u32 id, u32 hooks }.
 * - sys/netgraph/ng_socket.h: struct sockaddr_ng { u8 sg_len, u8 sg_family,
 *   sg_data[] }; NG_DATA 1, NG_CONTROL 2.  sys/sys/socket.h: AF_NETGRAPH 32.
 * - lib/libnetgraph/msg.c: sg_len = strlen + 1 + 2; cmdstr "cmd%d".
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  decodeNgMesg,
  decodeNodeInfo,
  decodeNodeInfoReply,
  decodeSockaddrNg,
  encodeConnect,
  encodeName,
  encodeNgMesg,
  encodeNodeInfoRequest,
  encodeNodeNameAddr,
  encodeSockaddrNg,
  ipfwHookName,
  NG_CONTROL,
  NG_DATA,
  NGF_RESP,
  NGM_CONNECT_LEN,
  NGM_NODEINFO,
  PF_NETGRAPH,
} from '../../src/bsd/netgraph';
import { NetgraphSource } from '../../src/capture/netgraph';
import { loadNative, Native } from '../../src/native';
import { FtpProxyError, Level, Packet } from '../../src/types';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const zeros = (n: number): string => '00'.repeat(n);
/** a C string in a fixed field: bytes, then NUL padding */
const field = (s: string, size: number): string => Buffer.from(s, 'latin1').toString('hex') + zeros(size - s.length);

test('constants match the headers', () => {
  assert.is(PF_NETGRAPH, 32); // sys/sys/socket.h AF_NETGRAPH
  assert.is(NG_DATA, 1); // ng_socket.h
  assert.is(NG_CONTROL, 2); // ng_socket.h
  assert.is(NGM_NODEINFO, 0x30000006); // ng_message.h
  assert.is(NGM_CONNECT_LEN, 576); // 512 + 32 + 32
});

test('sockaddr_ng: sg_len = 2 + strlen + 1, sg_family 32, NUL-terminated', () => {
  const rows: [string, string][] = [
    ['.', '04' + '20' + '2e00'],
    ['ipfw:', '08' + '20' + '697066773a00'],
    ['ftp6proxy10004:', '12' + '20' + '6674703670726f78793130303034' + '3a00'],
  ];
  for (const [path, want] of rows) {
    assert.is(hex(encodeSockaddrNg(path)), want, path);
    assert.equal(decodeSockaddrNg(Buffer.from(want, 'hex')), { family: 32, path });
  }
  assert.throws(() => encodeSockaddrNg(''));
  assert.throws(() => encodeSockaddrNg('a\0b'));
});

test('node name for bind: ng_bind() limits 4 <= sg_len <= 34 and forbids . : [ ]', () => {
  assert.is(hex(encodeNodeNameAddr('ftp6proxy10004')), '11' + '20' + '6674703670726f78793130303034' + '00');
  assert.is(encodeNodeNameAddr('x'.repeat(31)).length, 34);
  assert.throws(() => encodeNodeNameAddr('x'.repeat(32)));
  for (const bad of ['a.b', 'a:', '[1]', '']) assert.throws(() => encodeNodeNameAddr(bad), undefined, bad);
});

// header helper for expectations, written from ng_message.h, little-endian
const hdrLE = (arglen: string, cmd: string, flags: string, token: string, cmdstr: string): string =>
  '08' + '00' + '0000' + arglen + cmd + flags + token + '1e51c643' + field(cmdstr, 32);

test('NGM_CONNECT {path "ipfw:", ourhook "10004", peerhook "10004"}, little-endian', () => {
  const got = encodeConnect({ path: 'ipfw:', ourhook: '10004', peerhook: '10004', token: 1 }, true);
  const want =
    //     arglen=576    cmd=3       flags=0     token=1
    hdrLE('40020000', '03000000', '00000000', '01000000', 'cmd3') +
    field('ipfw:', 512) + // ngm_connect.path[NG_PATHSIZ]
    field('10004', 32) + // ngm_connect.ourhook[NG_HOOKSIZ]
    field('10004', 32); // ngm_connect.peerhook[NG_HOOKSIZ]
  assert.is(got.length, 56 + 576);
  assert.is(hex(got), want);
});

test('NGM_CONNECT big-endian: every u32 of the header swaps, the body does not', () => {
  const got = encodeConnect({ path: 'ipfw:', ourhook: '1', peerhook: '1', token: 0x01020304 }, false);
  const want =
    '08' + '00' + '0000' + '00000240' + '00000003' + '00000000' + '01020304' + '43c6511e' + field('cmd3', 32) +
    field('ipfw:', 512) + field('1', 32) + field('1', 32);
  assert.is(hex(got), want);
});

test('NGM_NAME {name "ftp6proxy10004"}', () => {
  const got = encodeName({ name: 'ftp6proxy10004', token: 2 }, true);
  //                 arglen=32    cmd=4       flags       token=2
  const want = hdrLE('20000000', '04000000', '00000000', '02000000', 'cmd4') + field('ftp6proxy10004', 32);
  assert.is(hex(got), want);
  assert.throws(() => encodeName({ name: 'n'.repeat(32), token: 1 }));
});

test('NGM_NODEINFO request: header only, cmd 0x30000006, cmdstr "cmd805306374"', () => {
  const got = encodeNodeInfoRequest({ token: 3 }, true);
  const want = hdrLE('00000000', '06000030', '00000000', '03000000', 'cmd805306374');
  assert.is(got.length, 56);
  assert.is(hex(got), want);
});

test('NODEINFO reply decoding (struct nodeinfo, flags NGF_RESP)', () => {
  const body = field('', 32) + field('socket', 32) + '2a000000' /* id 0x2a */ + '00000000' /* hooks 0 */;
  const reply = Buffer.from(hdrLE('48000000', '06000030', '01000000', '03000000', 'cmd805306374') + body, 'hex');
  const m = decodeNgMesg(reply, true);
  assert.is(m.arglen, 72);
  assert.is(m.flags, NGF_RESP);
  assert.is(m.typecookie, 1137070366);
  assert.is(m.cmdstr, 'cmd805306374');
  assert.equal(decodeNodeInfo(m.data, true), { name: '', type: 'socket', id: 0x2a, hooks: 0 });
  assert.equal(decodeNodeInfoReply(reply, 3, true), { name: '', type: 'socket', id: 0x2a, hooks: 0 });
  assert.throws(() => decodeNodeInfoReply(reply, 4, true), /token/); // someone else's reply
  // our own request is no reply (flags 0)
  assert.throws(() => decodeNodeInfoReply(encodeNodeInfoRequest({ token: 3 }, true), 3, true), /NODEINFO reply/);
});

test('decodeNgMesg rejects short, truncated and foreign-version messages', () => {
  assert.throws(() => decodeNgMesg(Buffer.alloc(55)), /too short/);
  const m = encodeNgMesg({ cmd: 3, token: 1, data: Buffer.alloc(8) }, true);
  assert.throws(() => decodeNgMesg(m.subarray(0, 60), true), /truncated/);
  const v = Buffer.from(m);
  v[0] = 7;
  assert.throws(() => decodeNgMesg(v, true), /version/);
  assert.is(decodeNgMesg(m, true).data.length, 8);
});

test('ng_ipfw hook names: decimal 1..65535', () => {
  assert.is(ipfwHookName(10004), '10004');
  for (const bad of [0, 65536, 1.5, -3]) assert.throws(() => ipfwHookName(bad), undefined, String(bad));
});

// ---------------------------------------------------------------------------
// NetgraphSource over a simulated ng_socket: socket() hands out one end of a
// real AF_UNIX socketpair per socket; bind/connect/sendto are recorded;
// recvfrom, Poller and close are the real shim's.

interface Call {
  op: string;
  fd?: number;
  args: number[];
  bytes?: string;
}

function fakeNetgraphNative(real: Native) {
  const calls: Call[] = [];
  const peers = new Map<number, number>();
  const fake: Native = {
    ...real,
    socket(domain: number, type: number, protocol: number): number {
      const [ours, peer] = real.socketpair(real.constants.AF_UNIX, real.constants.SOCK_DGRAM, 0);
      peers.set(ours, peer);
      calls.push({ op: 'socket', fd: ours, args: [domain, type, protocol] });
      return ours;
    },
    bind(fd: number, sa: Buffer): void {
      calls.push({ op: 'bind', fd, args: [], bytes: hex(sa) });
    },
    connect(fd: number, sa: Buffer): void {
      calls.push({ op: 'connect', fd, args: [], bytes: hex(sa) });
    },
    sendto(fd: number, data: Buffer, sa: Buffer | null): number {
      calls.push({ op: 'sendto', fd, args: [], bytes: hex(data) + '|' + (sa === null ? '' : hex(sa)) });
      return data.length;
    },
    close(fd: number): void {
      calls.push({ op: 'close', fd, args: [] });
      real.close(fd);
      const p = peers.get(fd);
      if (p !== undefined) real.close(p);
    },
  };
  return { fake, calls, peers };
}

const cleanups: (() => Promise<void>)[] = [];
test.after.each(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

const quietLogger = (lines: string[] = []) => ({ log: (l: Level, m: string) => void lines.push(`${l}: ${m}`) });

test('NetgraphSource refuses to open on Linux with a clear error', async () => {
  const src = new NetgraphSource({ hook: 10004, logger: quietLogger(), platform: 'linux' });
  try {
    await src.open();
    assert.unreachable('opened');
  } catch (e) {
    assert.instance(e, FtpProxyError);
    assert.match((e as Error).message, /FreeBSD-only/);
  }
});

test('NetgraphSource: node set-up sequence and bytes, then copies are delivered', async () => {
  const real = loadNative();
  const { fake, calls, peers } = fakeNetgraphNative(real);
  const src = new NetgraphSource({ hook: 10004, logger: quietLogger(), native: fake, platform: 'freebsd' });
  cleanups.push(() => src.close());
  await src.open();
  const [cs, ds] = calls.filter((c) => c.op === 'socket').map((c) => c.fd as number);
  assert.equal(
    calls.map((c) => ({ ...c, fd: c.fd === cs ? 'cs' : c.fd === ds ? 'ds' : c.fd })),
    [
      { op: 'socket', fd: 'cs', args: [32, 2, 2] }, // PF_NETGRAPH, SOCK_DGRAM, NG_CONTROL
      { op: 'bind', fd: 'cs', args: [], bytes: '1120' + '6674703670726f78793130303034' + '00' }, // "ftp6proxy10004"
      { op: 'socket', fd: 'ds', args: [32, 2, 1] }, // NG_DATA
      { op: 'connect', fd: 'ds', args: [], bytes: '1220' + '6674703670726f78793130303034' + '3a00' }, // "ftp6proxy10004:"
      {
        op: 'sendto',
        fd: 'cs',
        args: [],
        bytes: hex(encodeConnect({ path: 'ipfw:', ourhook: '10004', peerhook: '10004', token: 1 })) + '|' + '04202e00', // to "."
      },
    ],
  );
  const got: Packet[] = [];
  const running = src.run((p) => void got.push(p));
  const dsPeer = peers.get(ds) as number;
  const pkts = [Buffer.from('4500001400000000', 'hex'), Buffer.from('6000000000000000', 'hex')];
  for (const p of pkts) real.sendto(dsPeer, p, null);
  for (let i = 0; i < 50 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(got.map((p) => hex(p.data)), pkts.map(hex));
  await src.close();
  await running;
  assert.ok(calls.some((c) => c.op === 'close' && c.fd === cs));
  assert.ok(calls.some((c) => c.op === 'close' && c.fd === ds));
});

test('NetgraphSource: a failing NGM_CONNECT (errno from sendto) closes both sockets and explains', async () => {
  const real = loadNative();
  const { fake, calls } = fakeNetgraphNative(real);
  fake.sendto = () => {
    throw Object.assign(new Error('sendto: ENOENT'), { code: 'ENOENT', errno: 2, syscall: 'sendto' });
  };
  const src = new NetgraphSource({ hook: 10004, logger: quietLogger(), native: fake, platform: 'freebsd' });
  try {
    await src.open();
    assert.unreachable('opened');
  } catch (e) {
    assert.instance(e, FtpProxyError);
    assert.match((e as Error).message, /ipfw:.*ENOENT.*ng_ipfw/);
  }
  assert.is(calls.filter((c) => c.op === 'close').length, 2);
});

test.run();
