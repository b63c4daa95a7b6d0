/**
 * Lab (root): drop to nobody + chroot with and without keepNetAdmin, in a
 * network namespace of our own, and prove what the kernel then allows.
 *
 * The child opens a NETLINK_NETFILTER socket and a syslog socket as root,
 * drops privileges, then sends an nfnetlink NFT_MSG_GETTABLE dump (nfnetlink_rcv
 * checks CAP_NET_ADMIN of the sender on every message), logs through the
 * syslog socket, fires a timer, and reports.  The parent checks
 * /proc/<pid>/status and /proc/<pid>/root while the child waits.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFileSync, spawn } from 'child_process';
import { CAP_NET_ADMIN, decodeCapData, encodeCapData, encodeCapHeader, LINUX_CAPABILITY_VERSION_3 } from '../../src/privileges';
import { encodeSockaddrUn } from '../../src/syslog';
import { loadNative } from '../../src/native';

const NS = 'w4priv';

test('capability structures encode in host order (include/uapi/linux/capability.h)', () => {
  const h = encodeCapHeader();
  assert.is(h.length, 8);
  assert.is(h.readUInt32LE(0), LINUX_CAPABILITY_VERSION_3); // amd64/arm64 are little-endian
  const only = 1n << BigInt(CAP_NET_ADMIN);
  const d = encodeCapData({ effective: only, permitted: only | (1n << 38n), inheritable: 0n });
  assert.equal([...d], [0, 0x10, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(decodeCapData(d), { effective: only, permitted: only | (1n << 38n), inheritable: 0n });
});

const CHILD = (dist: string, logPath: string, dir: string, keep: boolean): string => `
'use strict';
const { loadNative } = require(${JSON.stringify(path.join(dist, 'src/native.js'))});
const { dropPrivileges } = require(${JSON.stringify(path.join(dist, 'src/privileges.js'))});
const { SyslogLogger, parseFacility } = require(${JSON.stringify(path.join(dist, 'src/syslog.js'))});
const n = loadNative();
const AF_NETLINK = 16, NETLINK_NETFILTER = 12; // include/uapi/linux/netlink.h
const fd = n.socket(AF_NETLINK, n.constants.SOCK_RAW, NETLINK_NETFILTER);
const log = new SyslogLogger({ path: ${JSON.stringify(logPath)}, facility: parseFacility('local3') });
if (!log.open()) throw new Error('syslog socket');
const tzBefore = new Date().getTimezoneOffset();
const r = dropPrivileges({ user: 'nobody', rootDir: ${JSON.stringify(dir)}, keepNetAdmin: ${keep} });
// nlmsghdr (16) + nfgenmsg (4): type NFNL_SUBSYS_NFTABLES(10)<<8 | NFT_MSG_GETTABLE(1),
// flags NLM_F_REQUEST|NLM_F_DUMP (0x301); nfgenmsg family AF_UNSPEC, version 0, res_id 0
const req = Buffer.alloc(20);
req.writeUInt32LE(20, 0); req.writeUInt16LE((10 << 8) | 1, 4); req.writeUInt16LE(0x301, 6);
req.writeUInt32LE(1, 8); req.writeUInt32LE(0, 12);
let sendErr = null;
try { n.sendto(fd, req, null); } catch (e) { sendErr = e.code; }
const buf = Buffer.alloc(65536);
const started = Date.now();
function poll() {
  const got = sendErr === null ? n.recvfrom(fd, buf) : null;
  if (got === null && sendErr === null && Date.now() - started < 2000) { setTimeout(poll, 10); return; }
  let reply = 'none';
  if (got !== null) {
    const type = buf.readUInt16LE(4);
    // NLMSG_ERROR = 2 carries a negative errno; NLMSG_DONE = 3; else a table
    reply = type === 2 ? 'error ' + buf.readInt32LE(16) : type === 3 ? 'done' : 'type ' + type;
  }
  log.log('info', 'hello from the chroot');
  setTimeout(() => {
    process.stdout.write(JSON.stringify({ uid: process.getuid(), capEff: String(r.capEff), reply, sendErr, tzSame: new Date().getTimezoneOffset() === tzBefore, fallbacks: log.fallbacks }) + '\\n');
    process.stdin.resume();
    process.stdin.on('end', () => process.exit(0));
  }, 20);
}
poll();
`;

function capEffOf(status: string): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m === null ? -1n : BigInt('0x' + m[1]);
}

async function runChild(keep: boolean): Promise<{ report: Record<string, unknown>; status: string; root: string; logs: string[]; dir: string }> {
  const native = loadNative();
  const C = native.constants;
  const dist = path.resolve(__dirname, '../..');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'w4priv-'));
  const dir = path.join(work, 'empty');
  fs.mkdirSync(dir);
  const logPath = path.join(work, 'log');
  const srv = native.socket(C.AF_UNIX, C.SOCK_DGRAM, 0);
  native.bind(srv, encodeSockaddrUn(logPath, native.platform, C.AF_UNIX));
  fs.chmodSync(logPath, 0o666);
  const script = path.join(work, 'child.js');
  fs.writeFileSync(script, CHILD(dist, logPath, dir, keep));
  const child = spawn('ip', ['netns', 'exec', NS, process.execPath, script], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const t0 = Date.now();
  while (!out.includes('\n') && Date.now() - t0 < 10000 && child.exitCode === null) await new Promise((r) => setTimeout(r, 20));
  assert.ok(out.includes('\n'), `child report missing; stderr: ${err}`);
  // ip netns exec execs node in place: the child's pid is node's
  const pid = child.pid as number;
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const root = fs.readlinkSync(`/proc/${pid}/root`);
  child.stdin.end();
  await exited;
  const logs: string[] = [];
  const buf = Buffer.alloc(4096);
  for (;;) {
    const r = native.recvfrom(srv, buf);
    if (r === null) break;
    logs.push(buf.subarray(0, r.n).toString());
  }
  native.close(srv);
  fs.rmSync(work, { recursive: true, force: true });
  return { report: JSON.parse(out.split('\n')[0]) as Record<string, unknown>, status, root, logs, dir };
}

const canRun = (): string | null => {
  if (process.platform !== 'linux') return 'Linux only';
  if (process.getuid === undefined || process.getuid() !== 0) return 'needs root';
  try {
    // a namespace left by an interrupted run
    execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
  } catch {
    // none
  }
  try {
    execFileSync('ip', ['netns', 'add', NS], { stdio: 'pipe' });
  } catch (e) {
    return `cannot create netns ${NS}: ${String(e)}`;
  }
  return null;
};

test('as nobody in a chroot, keeping CAP_NET_ADMIN: nfnetlink still answers, nothing else remains', async () => {
  const why = canRun();
  if (why !== null) {
    if (process.env.CI === 'true') assert.unreachable(`lab test cannot run under CI: ${why}`);
    console.log(`SKIP: privileges lab: ${why}`);
    return;
  }
  try {
    const keep = await runChild(true);
    if (process.env.VERBOSE === "1") console.log(keep.report, keep.root, keep.logs);
    assert.match(keep.status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
    assert.match(keep.status, /^Gid:\s+65534\s+65534\s+65534\s+65534$/m);
    assert.is(capEffOf(keep.status), 1n << 12n, 'CapEff is cap_net_admin only');
    assert.match(keep.status, /^CapPrm:\s+0000000000001000$/m);
    assert.is(keep.root, keep.dir);
    assert.is(keep.report.uid, 65534);
    assert.is(keep.report.capEff, String(1n << 12n));
    assert.is(keep.report.sendErr, null);
    assert.is(keep.report.reply, 'done', 'GETTABLE dump in an empty netns ends with NLMSG_DONE');
    assert.is(keep.report.tzSame, true);
    assert.is(keep.report.fallbacks, 0);
    assert.is(keep.logs.length, 1);
    assert.match(keep.logs[0], /^<158>\w{3} [ \d]\d \d\d:\d\d:\d\d ftp6proxy\[\d+\]: hello from the chroot$/);

    const drop = await runChild(false);
    assert.match(drop.status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
    assert.is(capEffOf(drop.status), 0n);
    assert.is(drop.root, drop.dir);
    assert.is(drop.report.reply, 'error -1', 'nfnetlink refuses with -EPERM');
    assert.is(drop.logs.length, 1);
  } finally {
    execFileSync('ip', ['netns', 'del', NS], { stdio: 'pipe' });
  }
});

test.run();
