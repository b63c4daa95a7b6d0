import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync } from 'child_process';
import { PidFile, cmdlineIsFtp6proxy, parsePid, pidIsFtp6proxy, processAlive } from '../../src/pidfile';
import { FtpProxyError } from '../../src/types';

function tmpdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'ftp6proxy-pid-'));
}

function fails(fn: () => void, re: RegExp, code = 'pidfile'): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, FtpProxyError);
    assert.is((e as FtpProxyError).code, code);
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`expected ${re}`);
}

test('parsePid', () => {
  const table: [string, number | null][] = [
    ['123\n', 123],
    ['  7  ', 7],
    ['0\n', null],
    ['-5', null],
    ['12 34', null],
    ['abc', null],
    ['', null],
    ['99999999999', null],
  ];
  for (const [t, want] of table) assert.is(parsePid(t), want, JSON.stringify(t));
});

test('cmdlineIsFtp6proxy', () => {
  const table: [string[], boolean][] = [
    [['/usr/local/bin/node', '/usr/local/sbin/ftp6proxy', '-d'], true],
    [['ftp6proxy'], true],
    [['/usr/bin/node', '/usr/lib/node_modules/ftp6proxy/bin/ftp6proxy'], true],
    [['/usr/bin/node', '/srv/other.js'], false],
    [['/bin/sh', '-c', 'ftp6proxy'], false],
    [['/usr/bin/node', '/x/dist/src/main.js'], true], // same script as ours (below)
  ];
  for (const [argv, want] of table) assert.is(cmdlineIsFtp6proxy(argv, '/x/dist/src/main.js'), want, argv.join(' '));
});

test('create writes pid + newline exclusively; remove only while it is ours', () => {
  const dir = tmpdir();
  const f = path.join(dir, 'ftp6proxy.pid');
  const pf = new PidFile(f, { pid: 4242, isAlive: () => false });
  pf.create();
  assert.is(fs.readFileSync(f, 'utf8'), '4242\n');
  assert.is(pf.isWritten, true);
  // someone else took the file over: leave it alone
  fs.writeFileSync(f, '999\n');
  assert.is(pf.remove().removed, false);
  assert.ok(fs.existsSync(f));
  fs.writeFileSync(f, '4242\n');
  assert.equal(pf.remove(), { removed: true });
  assert.not.ok(fs.existsSync(f));
  assert.is(pf.remove().removed, false); // repeated remove is harmless
  fs.rmSync(dir, { recursive: true, force: true });
});

test('live ftp6proxy refuses; stale, foreign or malformed files are taken over', () => {
  const dir = tmpdir();
  const f = path.join(dir, 'p.pid');
  const table: { content: string; alive: boolean; ours: boolean; refuse: boolean }[] = [
    { content: '555\n', alive: true, ours: true, refuse: true },
    { content: '555\n', alive: false, ours: true, refuse: false },
    { content: '555\n', alive: true, ours: false, refuse: false }, // pid reused by another program
    { content: 'garbage', alive: true, ours: true, refuse: false },
    { content: '', alive: true, ours: true, refuse: false },
    { content: '100\n', alive: true, ours: true, refuse: false }, // our own pid
  ];
  for (const row of table) {
    fs.writeFileSync(f, row.content);
    const pf = new PidFile(f, { pid: 100, isAlive: () => row.alive, isFtp6proxy: () => row.ours });
    if (row.refuse) {
      fails(() => pf.check(), /already running as pid 555/, 'pidfile-live');
      fails(() => pf.create(), /already running as pid 555/, 'pidfile-live');
      assert.is(fs.readFileSync(f, 'utf8'), row.content, 'untouched');
    } else {
      pf.check();
      pf.create();
      assert.is(fs.readFileSync(f, 'utf8'), '100\n', JSON.stringify(row));
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('clear errors: directory missing, not a directory, not writable', () => {
  const dir = tmpdir();
  fails(() => new PidFile(path.join(dir, 'nope', 'x.pid')).create(), /pidfile directory .*nope does not exist/);
  fs.writeFileSync(path.join(dir, 'file'), '');
  fails(() => new PidFile(path.join(dir, 'file', 'x.pid')).create(), /does not exist|is not a directory/);
  fs.mkdirSync(path.join(dir, 'isdir.pid'));
  fails(() => new PidFile(path.join(dir, 'isdir.pid')).create(), /is a directory/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('not writable, for real as an unprivileged user', () => {
  if (process.getuid === undefined || process.getuid() !== 0) {
    console.log('SKIP: not writable case needs root to switch to nobody');
    return;
  }
  const dir = tmpdir();
  fs.chmodSync(dir, 0o755);
  const mod = path.resolve(__dirname, '../../src/pidfile.js');
  const script = `
    process.setgid(65534); process.setuid(65534);
    const { PidFile } = require(${JSON.stringify(mod)});
    try { new PidFile(${JSON.stringify(path.join(dir, 'x.pid'))}).create(); console.log('created'); }
    catch (e) { console.log(e.code + ': ' + e.message); }`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  assert.match(r.stdout, /^pidfile: pidfile directory .* is not writable/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('real liveness: kill(0) and /proc cmdline name check', async () => {
  assert.ok(processAlive(process.pid));
  // a process whose script is called ftp6proxy
  const dir = tmpdir();
  const script = path.join(dir, 'ftp6proxy');
  fs.writeFileSync(script, 'setTimeout(() => {}, 10000);\n');
  const child = spawn(process.execPath, [script], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 100));
  const pid = child.pid as number;
  assert.ok(processAlive(pid));
  assert.ok(pidIsFtp6proxy(pid));
  const f = path.join(dir, 'p.pid');
  fs.writeFileSync(f, `${pid}\n`);
  fails(() => new PidFile(f).create(), new RegExp(`already running as pid ${pid}`), 'pidfile-live');
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.not.ok(processAlive(pid));
  const pf = new PidFile(f);
  pf.create();
  assert.is(fs.readFileSync(f, 'utf8'), `${process.pid}\n`);
  // a live process that is not ftp6proxy
  const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 10000)'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 100));
  assert.not.ok(pidIsFtp6proxy(other.pid as number));
  other.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

test.run();
