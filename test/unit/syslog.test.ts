import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  DeferredLogger,
  FACILITIES,
  LevelFilter,
  StderrLogger,
  SyslogLogger,
  TeeLogger,
  encodeSockaddrUn,
  formatSyslog,
  parseFacility,
  rfc3164Time,
} from '../../src/syslog';
import { loadNative } from '../../src/native';
import { FtpProxyError, Level, logLazy } from '../../src/types';

const native = loadNative();
const C = native.constants;

test('parseFacility: names from syslog.conf(5), refusals', () => {
  const table: [string, string, number | null][] = [
    ['daemon', 'linux', 3],
    ['LOCAL3', 'linux', 19],
    ['local7', 'freebsd', 23],
    ['authpriv', 'linux', 10],
    ['ftp', 'freebsd', 11],
    ['security', 'freebsd', 13],
    ['console', 'freebsd', 14],
    ['security', 'linux', null],
    ['local8', 'linux', null],
    ['', 'linux', null],
    ['daemon ', 'linux', null],
    ['constructor', 'linux', null],
    ['__proto__', 'linux', null],
  ];
  for (const [name, plat, want] of table) {
    if (want === null) {
      assert.throws(() => parseFacility(name, plat), (e: unknown) => e instanceof FtpProxyError && /unknown syslog facility/.test(e.message), name);
    } else {
      assert.is(parseFacility(name, plat), want, name);
    }
  }
  assert.is(FACILITIES.local0, 16);
});

test('rfc3164Time pads the day with a space, the time with zeros', () => {
  assert.is(rfc3164Time(new Date(2024, 0, 5, 3, 4, 9)), 'Jan  5 03:04:09');
  assert.is(rfc3164Time(new Date(2024, 10, 24, 23, 59, 0)), 'Nov 24 23:59:00');
});

test('formatSyslog: PRI = facility*8 + severity', () => {
  const d = new Date(2024, 11, 31, 12, 0, 1);
  const table: [number, Level, string][] = [
    [3, 'err', '<27>'],
    [3, 'info', '<30>'],
    [19, 'info', '<158>'],
    [19, 'debug', '<159>'],
    [0, 'warning', '<4>'],
    [23, 'notice', '<189>'],
  ];
  for (const [fac, lvl, pri] of table) {
    assert.is(formatSyslog(fac, lvl, 'ftp6proxy', 42, 'hello', d), `${pri}Dec 31 12:00:01 ftp6proxy[42]: hello`);
  }
});

test('encodeSockaddrUn: Linux and FreeBSD layouts, byte by byte', () => {
  const lin = encodeSockaddrUn('/dev/log', 'linux');
  assert.equal([...lin], [1, 0, ...Buffer.from('/dev/log'), 0]);
  const bsd = encodeSockaddrUn('/var/run/log', 'freebsd');
  assert.equal([...bsd], [14, 1, ...Buffer.from('/var/run/log'), 0]);
  assert.throws(() => encodeSockaddrUn('/' + 'x'.repeat(120), 'linux'));
  assert.throws(() => encodeSockaddrUn('/' + 'x'.repeat(103), 'freebsd'));
});

function server(p: string): number {
  const fd = native.socket(C.AF_UNIX, C.SOCK_DGRAM, 0);
  native.bind(fd, encodeSockaddrUn(p, native.platform, C.AF_UNIX));
  return fd;
}

function recvAll(fd: number): string[] {
  const out: string[] = [];
  const buf = Buffer.alloc(4096);
  for (;;) {
    const r = native.recvfrom(fd, buf);
    if (r === null) return out;
    out.push(buf.subarray(0, r.n).toString('utf8'));
  }
}

function tmpdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'ftp6proxy-syslog-'));
}

test('SyslogLogger sends real datagrams to a unix socket; debug only when asked', () => {
  const dir = tmpdir();
  const p = path.join(dir, 'log');
  const srv = server(p);
  const fixed = new Date(2024, 2, 7, 8, 9, 10);
  const fallback: string[] = [];
  const lg = new SyslogLogger({ path: p, facility: parseFacility('local3'), pid: () => 4711, now: () => fixed, fallback: (l) => fallback.push(l) });
  assert.ok(lg.open());
  lg.log('info', '#1 hole opened');
  lg.log('debug', 'not sent');
  lg.log('err', 'boom');
  assert.equal(recvAll(srv), ['<158>Mar  7 08:09:10 ftp6proxy[4711]: #1 hole opened', '<155>Mar  7 08:09:10 ftp6proxy[4711]: boom']);
  assert.equal(fallback, []);
  const dbg = new SyslogLogger({ path: p, debug: true, pid: () => 1, now: () => fixed });
  dbg.log('debug', 'sent');
  assert.equal(recvAll(srv), ['<31>Mar  7 08:09:10 ftp6proxy[1]: sent']);
  lg.close();
  dbg.close();
  native.close(srv);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('SyslogLogger falls back to stderr when there is no syslogd, and never throws', () => {
  const dir = tmpdir();
  const fallback: string[] = [];
  const lg = new SyslogLogger({ path: path.join(dir, 'missing'), pid: () => 7, fallback: (l) => fallback.push(l) });
  assert.not.ok(lg.open());
  lg.log('warning', 'no syslogd');
  assert.equal(fallback, ['ftp6proxy[7]: warning: no syslogd\n']);
  assert.is(lg.fallbacks, 1);
  // a fallback that throws must not escape log()
  const bad = new SyslogLogger({ path: path.join(dir, 'missing'), fallback: () => { throw new Error('x'); } });
  assert.not.throws(() => bad.log('err', 'x'));
  fs.rmSync(dir, { recursive: true, force: true });
});

test('SyslogLogger reconnects after syslogd restarts (ECONNREFUSED)', () => {
  const dir = tmpdir();
  const p = path.join(dir, 'log');
  let srv = server(p);
  const fallback: string[] = [];
  const lg = new SyslogLogger({ path: p, pid: () => 9, now: () => new Date(2024, 0, 1), fallback: (l) => fallback.push(l) });
  assert.ok(lg.open());
  lg.log('info', 'one');
  assert.is(recvAll(srv).length, 1);
  // syslogd restarts: old socket closed, new one bound at the same path
  native.close(srv);
  fs.unlinkSync(p);
  srv = server(p);
  lg.log('info', 'two');
  assert.equal(recvAll(srv), ['<30>Jan  1 00:00:00 ftp6proxy[9]: two']);
  assert.equal(fallback, []);
  native.close(srv);
  lg.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('reopen() keeps the old socket when the path is gone (as inside a chroot)', () => {
  const dir = tmpdir();
  const p = path.join(dir, 'log');
  const srv = server(p);
  const lg = new SyslogLogger({ path: p, pid: () => 3, now: () => new Date(2024, 0, 1), fallback: () => assert.unreachable('fallback') });
  assert.ok(lg.open());
  fs.unlinkSync(p); // the server socket lives on, its name is gone
  assert.ok(lg.reopen());
  lg.log('notice', 'still here');
  assert.equal(recvAll(srv), ['<29>Jan  1 00:00:00 ftp6proxy[3]: still here']);
  native.close(srv);
  lg.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('StderrLogger, LevelFilter, TeeLogger', () => {
  const lines: string[] = [];
  const se = new StderrLogger((l) => lines.push(l), 'ftp6proxy', () => 12);
  const filtered = new LevelFilter(se, 'info');
  filtered.log('debug', 'hidden');
  filtered.log('info', 'shown');
  filtered.log('err', 'shown too');
  const boom = { log: () => { throw new Error('x'); } };
  new TeeLogger(boom, se).log('debug', 'tee');
  assert.equal(lines, ['ftp6proxy[12]: info: shown\n', 'ftp6proxy[12]: err: shown too\n', 'ftp6proxy[12]: debug: tee\n']);
});

test('DeferredLogger: lines wait for the scheduled flush, in order; flush() is immediate; overflow is counted', () => {
  const got: string[] = [];
  const inner = { log: (level: Level, msg: string) => void got.push(`${level}: ${msg}`) };
  const scheduled: Array<() => void> = [];
  const d = new DeferredLogger(inner, 3, (fn) => scheduled.push(fn));
  d.log('info', 'a');
  d.log('debug', 'b');
  assert.equal(got, [], 'nothing written during the turn');
  assert.is(scheduled.length, 1, 'one flush scheduled per turn');
  scheduled[0]();
  assert.equal(got, ['info: a', 'debug: b']);
  d.log('err', 'c');
  assert.is(scheduled.length, 2);
  d.flush();
  assert.equal(got.slice(2), ['err: c']);
  scheduled[1](); // the scheduled flush after an explicit one writes nothing twice
  assert.is(got.length, 3);
  for (const m of ['1', '2', '3', '4', '5']) d.log('notice', m);
  scheduled[2]();
  assert.equal(got.slice(3), ['notice: 1', 'notice: 2', 'notice: 3', 'warning: 2 log lines dropped: more than 3 in one turn of the event loop']);
  // An inner logger that throws loses its line, not the others, and log() never throws.
  const bad = new DeferredLogger({ log: (_l: Level, m: string) => { if (m === 'x') throw new Error('boom'); got.push(m); } }, 10, (fn) => scheduled.push(fn));
  bad.log('info', 'x');
  bad.log('info', 'y');
  scheduled[scheduled.length - 1]();
  assert.is(got[got.length - 1], 'y');
});

test('DeferredLogger over StderrLogger: one write per flush, the lines in order', () => {
  const writes: string[] = [];
  const scheduled: Array<() => void> = [];
  const d = new DeferredLogger(new StderrLogger((t) => writes.push(t), 'ftp6proxy', () => 5), 100, (fn) => scheduled.push(fn));
  d.log('debug', '#1 new session');
  d.log('debug', '#1 229 from server');
  d.log('info', '#1 hole 64000 open');
  scheduled[0]();
  assert.equal(writes, ['ftp6proxy[5]: debug: #1 new session\nftp6proxy[5]: debug: #1 229 from server\nftp6proxy[5]: info: #1 hole 64000 open\n']);
  d.flush(); // nothing pending: no write
  assert.is(writes.length, 1);
  // a write that throws is swallowed, as by log()
  const bad = new DeferredLogger(new StderrLogger(() => { throw new Error('EPIPE'); }), 100, (fn) => scheduled.push(fn));
  bad.log('info', 'lost');
  assert.not.throws(() => bad.flush());
});

test('DeferredLogger: by default the lines go out once the running code is done (a microtask), not during log()', async () => {
  const got: string[] = [];
  const d = new DeferredLogger({ log: (_l: Level, m: string) => void got.push(m) });
  d.log('info', 'later');
  d.lazy('info', () => 'made later');
  // the verdict is given here, synchronously, in the daemon
  assert.equal(got, [], 'nothing written while the synchronous code runs');
  await Promise.resolve();
  assert.equal(got, ['later', 'made later']);
});

test('DeferredLogger: a lazy line is made at flush, and never when the inner logger drops its level', () => {
  const got: string[] = [];
  let made = 0;
  const flushes: Array<() => void> = [];
  const d = new DeferredLogger(new LevelFilter({ log: (_l: Level, m: string) => void got.push(m) }, 'info'), 100, (fn) => void flushes.push(fn));
  d.lazy('debug', () => `debug ${++made}`);
  d.lazy('info', () => `info ${++made}`);
  d.log('debug', 'plain debug');
  assert.is(made, 0, 'nothing made before the flush');
  assert.is(d.wants('debug'), false);
  assert.is(d.wants('info'), true);
  for (const f of flushes.splice(0)) f();
  assert.equal(got, ['info 1'], 'the debug lines were dropped unmade');
  assert.is(made, 1);
  // a line whose maker throws is still a line, and the others go out
  d.lazy('info', () => {
    throw new Error('boom');
  });
  d.log('info', 'after');
  for (const f of flushes.splice(0)) f();
  assert.equal(got.slice(1), ['(log line failed: boom)', 'after']);
});

test('logLazy: without lazy() the line is made and logged at once', () => {
  const got: string[] = [];
  logLazy({ log: (_l: Level, m: string) => void got.push(m) }, 'info', () => 'now');
  assert.equal(got, ['now']);
});

test.run();
