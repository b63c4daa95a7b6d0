import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { spawn } from 'child_process';
import { Readable, Writable } from 'stream';
import { LineSplitter, MAX_LINE, PrivsepClientFirewall, PrivsepServer, formatOpen, parseRequest, privsepSpawnOptions } from '../../src/privsep';
import { Firewall, FtpProxyError, Hole, Level } from '../../src/types';
import { loadNative } from '../../src/native';

const POOL = { base: 64000, count: 100 };

/** A fake firewall that records what reached it. */
class FakeFirewall implements Firewall {
  readonly kind = 'fake';
  readonly ops: string[] = [];
  failOpen = false;
  holdClose = false;
  async check(): Promise<void> {}
  async sweep(): Promise<void> {}
  async open(h: Hole, t: number): Promise<void> {
    if (this.failOpen) throw new Error('ipfw: rule add failed\nsecond line');
    this.ops.push(`open ${h.rule} ${h.family} ${h.src} ${h.dst} ${h.port} ${t}`);
  }
  async close(h: Hole): Promise<boolean> {
    this.ops.push(`close ${h.rule} ${h.src} ${h.dst} ${h.port}`);
    return !this.holdClose;
  }
  async shutdown(): Promise<void> {}
}

class Lines {
  readonly lines: string[] = [];
  log(level: Level, msg: string): void {
    this.lines.push(`${level}: ${msg}`);
  }
}

test('parseRequest accepts well-formed requests', () => {
  const table: [string, unknown][] = [
    ['open 64000 6 fd00::10 fd00:1::20 50000 2', { verb: 'open', rule: 64000, family: 6, src: 'fd00::10', dst: 'fd00:1::20', port: 50000, timeout: 2 }],
    ['open 64099 4 198.18.0.1 198.19.0.2 1024 3600', { verb: 'open', rule: 64099, family: 4, src: '198.18.0.1', dst: '198.19.0.2', port: 1024, timeout: 3600 }],
    ['open 64050 4 198.18.0.1 198.19.0.2 65535 1', { verb: 'open', rule: 64050, family: 4, src: '198.18.0.1', dst: '198.19.0.2', port: 65535, timeout: 1 }],
    ['close 64000', { verb: 'close', rule: 64000 }],
    ['ready', { verb: 'ready' }],
  ];
  for (const [line, want] of table) {
    const p = parseRequest(line, POOL);
    assert.ok(p.ok, line);
    if (p.ok) assert.equal(p.req, want, line);
  }
});

test('parseRequest refuses hostile requests', () => {
  const v6 = 'fd00::10 fd00:1::20';
  const table: [string, RegExp][] = [
    [`open 63999 6 ${v6} 50000 2`, /outside the pool/],
    [`open 64100 6 ${v6} 50000 2`, /outside the pool/],
    [`open 1 6 ${v6} 50000 2`, /outside the pool/],
    [`open 064000 6 ${v6} 50000 2`, /bad rule number/],
    [`open -1 6 ${v6} 50000 2`, /bad rule number/],
    [`open 64000.5 6 ${v6} 50000 2`, /bad rule number/],
    [`open 64000 6 ${v6} 80 2`, /port/],
    [`open 64000 6 ${v6} 1023 2`, /port/],
    [`open 64000 6 ${v6} 65536 2`, /port/],
    [`open 64000 6 ${v6} 0x5000 2`, /port/],
    [`open 64000 5 ${v6} 50000 2`, /family/],
    [`open 64000 4 ${v6} 50000 2`, /source: not a literal/],
    ['open 64000 6 198.18.0.1 198.18.0.2 50000 2', /source: not a literal/],
    ['open 64000 4 example.com 198.18.0.2 50000 2', /source: not a literal/],
    ['open 64000 4 198.18.0.1 any 50000 2', /destination: not a literal/],
    ['open 64000 6 fd00::10%eth0 fd00::1 50000 2', /source/],
    ['open 64000 6 FD00::10 fd00::1 50000 2', /canonical/],
    ['open 64000 6 fd00:0::10 fd00::1 50000 2', /canonical/],
    ['open 64000 4 198.018.0.1 198.18.0.2 50000 2', /source/],
    ['open 64000 4 0.0.0.0 198.18.0.2 50000 2', /unspecified/],
    ['open 64000 6 :: fd00::1 50000 2', /unspecified/],
    ['open 64000 6 fd00::1 ff02::1 50000 2', /multicast/],
    ['open 64000 4 198.18.0.1 224.0.0.1 50000 2', /multicast/],
    ['open 64000 4 198.18.0.1 255.255.255.255 50000 2', /multicast or broadcast/],
    [`open 64000 6 ${v6} 50000 0`, /timeout/],
    [`open 64000 6 ${v6} 50000 99999`, /timeout/],
    [`open 64000 6 ${v6} 50000`, /6 arguments/],
    [`open 64000 6 ${v6} 50000 2 keep-state`, /6 arguments/],
    [`open 64000 6 ${v6} 50000 2 `, /malformed/],
    [`open  64000 6 ${v6} 50000 2`, /malformed/],
    [`open 64000 6 fd00::10\tfd00::1 50000 2`, /malformed/],
    [`open 64000 6 fd00::10 fd00::1 50000 2\nclose 64001`, /malformed/],
    [`open 64000 6 fd00::10 fd00::1 50000 2\r`, /malformed/],
    ['open 64000 6 fd00::10 fd00::1 50000 2\0', /malformed/],
    ['open 64000 6 fd00::\u00e9 fd00::1 50000 2', /malformed/],
    ['close 64000 64001', /1 argument/],
    ['close 70000', /outside the pool/],
    ['close', /1 argument/],
    ['delete 64000', /unknown verb/],
    ['OPEN 64000 6 fd00::10 fd00::1 50000 2', /unknown verb/],
    ['flush', /unknown verb/],
    ['ready now', /no arguments/],
    ['', /malformed/],
    ['x'.repeat(MAX_LINE + 1), /too long/],
  ];
  for (const [line, re] of table) {
    const p = parseRequest(line, POOL);
    assert.not.ok(p.ok, JSON.stringify(line));
    if (!p.ok) assert.match(p.reason, re, JSON.stringify(line));
  }
});

test('formatOpen and parseRequest agree', () => {
  const h: Hole = { family: 6, src: '2001:db8::10', dst: '2001:db8:1::20', port: 50000, rule: 64007, session: 3 };
  const p = parseRequest(formatOpen(h, 2), POOL);
  assert.ok(p.ok);
  if (p.ok) assert.equal(p.req, { verb: 'open', rule: 64007, family: 6, src: h.src, dst: h.dst, port: 50000, timeout: 2 });
});

test('LineSplitter: split lines, overlong lines refused once and skipped', () => {
  const got: string[] = [];
  const s = new LineSplitter(10, (l) => got.push(l), () => got.push('<long>'));
  s.push('ab');
  s.push('c\nde\n0123456789');
  s.push('abc'); // now too long
  s.push('def\nok\n');
  s.push('0123456789X\n');
  assert.equal(got, ['abc', 'de', '<long>', 'ok', '<long>']);
});

/** Two connected net.Sockets over a real AF_UNIX socketpair. */
function pair(): [net.Socket, net.Socket] {
  const n = loadNative();
  const [a, b] = n.socketpair(n.constants.AF_UNIX, n.constants.SOCK_STREAM, 0);
  return [new net.Socket({ fd: a, readable: true, writable: true }), new net.Socket({ fd: b, readable: true, writable: true })];
}

test('round trip over a socketpair: client -> validator -> fake firewall', async () => {
  const [pSide, cSide] = pair();
  const fw = new FakeFirewall();
  const log = new Lines();
  let ready = 0;
  const server = new PrivsepServer(fw, pSide, pSide, { pool: POOL, logger: log, onReady: () => ready++ });
  const client = new PrivsepClientFirewall(cSide, cSide, { kind: 'ipfw' });
  const h6: Hole = { family: 6, src: 'fd00::10', dst: 'fd00:1::20', port: 50000, rule: 64000, session: 1 };
  const h4: Hole = { family: 4, src: '198.18.0.1', dst: '198.19.0.2', port: 40000, rule: 64001, session: 2 };
  client.notifyReady();
  await Promise.all([client.open(h6, 2), client.open(h4, 2)]);
  assert.equal(fw.ops, ['open 64000 6 fd00::10 fd00:1::20 50000 2', 'open 64001 4 198.18.0.1 198.19.0.2 40000 2']);
  assert.is(ready, 1);
  assert.equal(server.openHoles().map((h) => h.rule), [64000, 64001]);
  // the same rule twice is refused by the parent
  try {
    await client.open(h6, 2);
    assert.unreachable('rule in use');
  } catch (e) {
    assert.instance(e, FtpProxyError);
    assert.match((e as Error).message, /rule in use/);
  }
  // a hole outside the pool never reaches the firewall
  try {
    await client.open({ ...h6, rule: 65000 }, 2);
    assert.unreachable('outside the pool');
  } catch (e) {
    assert.match((e as Error).message, /outside the pool/);
  }
  assert.is(await client.close(h6), true);
  assert.is(await client.close(h6), true, 'repeat close is harmless');
  fw.holdClose = true;
  assert.is(await client.close(h4), false, 'held');
  fw.holdClose = false;
  fw.failOpen = true;
  try {
    await client.open(h6, 2);
    assert.unreachable('firewall failure');
  } catch (e) {
    assert.match((e as Error).message, /refused rule 64000: ipfw: rule add failed second line/);
  }
  fw.failOpen = false;
  assert.equal(fw.ops, [
    'open 64000 6 fd00::10 fd00:1::20 50000 2',
    'open 64001 4 198.18.0.1 198.19.0.2 40000 2',
    'close 64000 fd00::10 fd00:1::20 50000',
    'close 64001 198.18.0.1 198.19.0.2 40000',
  ]);
  // at stop the parent closes what the child left (64001 was held)
  await server.closeAll();
  assert.equal(fw.ops.slice(4), ['close 64001 198.18.0.1 198.19.0.2 40000']);
  assert.equal(server.openHoles(), []);
  assert.ok(log.lines.some((l) => /refused request "open 65000/.test(l)));
  await client.shutdown();
  pSide.destroy();
  cSide.destroy();
});

test('a hostile child writing raw lines gets refusals, in order, and the firewall sees nothing', async () => {
  const [pSide, raw] = pair();
  const fw = new FakeFirewall();
  const log = new Lines();
  let ended = false;
  const server = new PrivsepServer(fw, pSide, pSide, { pool: POOL, logger: log, onEnd: () => (ended = true) });
  const replies: string[] = [];
  raw.setEncoding('latin1');
  raw.on('data', (s: string) => replies.push(...s.split('\n').filter((l) => l !== '')));
  raw.write('open 64000 6 fd00::1 fd00::2 80 2\n');
  raw.write('open 64000 6 fd00::1 fd00::2 50000 2 ; ipfw flush\n');
  raw.write('y'.repeat(5000)); // no newline yet: overlong, refused once
  raw.write('more\nclose 64000\n');
  raw.write('open 64000 4 example.org 198.18.0.1 5000 2\n');
  for (let i = 0; i < 100 && replies.length < 5; i++) await new Promise((r) => setTimeout(r, 10));
  await server.idle();
  assert.equal(replies, [
    'err 64000 port must be 1024-65535',
    'err 64000 open takes 6 arguments',
    'err - line too long',
    'ok 64000',
    'err 64000 source: not a literal address of that family',
  ]);
  assert.equal(fw.ops, []);
  assert.is(server.refused, 4);
  raw.end();
  for (let i = 0; i < 100 && !ended; i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(ended, 'onEnd when the child goes away');
  pSide.destroy();
  raw.destroy();
});

test('a real child process on fds 3/4, spawned the way main.ts will', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ftp6proxy-privsep-'));
  const script = path.join(dir, 'child.js');
  const mod = path.resolve(__dirname, '../../src/privsep.js');
  fs.writeFileSync(
    script,
    `const p = require(${JSON.stringify(mod)});
     if (!p.isPrivsepChild()) process.exit(9);
     const { input, output } = p.openChildChannel();
     const fw = new p.PrivsepClientFirewall(input, output);
     const hole = { family: 6, src: 'fd00::10', dst: 'fd00:1::20', port: 50001, rule: 64005, session: 7 };
     (async () => {
       fw.notifyReady();
       await fw.open(hole, 2);
       const freed = await fw.close(hole);
       let refused = '';
       try { await fw.open({ ...hole, port: 21 }, 2); } catch (e) { refused = e.message; }
       process.stderr.write('child: ' + freed + ' ' + refused + '\\n');
       await fw.shutdown();
     })().catch((e) => { process.stderr.write('child error ' + e.message + '\\n'); process.exit(1); });`,
  );
  const o = privsepSpawnOptions({ ...process.env, FTP6PROXY_DAEMON_CHILD: '1' });
  assert.not.ok('FTP6PROXY_DAEMON_CHILD' in o.options.env);
  const child = spawn(o.command, [script], { ...o.options, stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (b: Buffer) => (err += b.toString()));
  const fw = new FakeFirewall();
  let ready = false;
  const ended = new Promise<void>((resolve) => {
    new PrivsepServer(fw, child.stdio[4] as Readable, child.stdio[3] as Writable, {
      pool: POOL,
      logger: new Lines(),
      onReady: () => (ready = true),
      onEnd: resolve,
    });
  });
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  await ended;
  assert.is(code, 0, err);
  assert.ok(ready);
  assert.equal(fw.ops, ['open 64005 6 fd00::10 fd00:1::20 50001 2', 'close 64005 fd00::10 fd00:1::20 50001']);
  assert.match(err, /child: true privileged parent refused rule 64005: port must be 1024-65535/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test.run();
