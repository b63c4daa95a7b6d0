/**
 * IpfwFirewall: the exact ipfw(8)/sysctl(8) command lines, through the
 * RecordingRunner (as `ftp6proxy-replay --commands` prints them) and through
 * ExecRunner against the fake executables in test/fixtures/fakebin.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { countDynamicRules, IpfwFirewall } from '../../src/firewall/ipfw';
import { ExecRunner, formatCommand, RecordingRunner, shellQuote } from '../../src/firewall/runner';
import { FtpProxyError, Hole, Level } from '../../src/types';

const FAKEBIN = path.resolve(__dirname, '..', '..', '..', 'test', 'fixtures', 'fakebin');

function logger() {
  const lines: string[] = [];
  return { lines, log: (l: Level, m: string) => void lines.push(`${l}: ${m}`) };
}

const h6: Hole = { family: 6, src: '2001:db8::10', dst: '2001:db8:1::20', port: 50000, rule: 64000, session: 1 };
const h4: Hole = { family: 4, src: '198.18.0.10', dst: '198.18.1.20', port: 40001, rule: 64099, session: 2 };

test('shellQuote and the transcript format', () => {
  assert.is(shellQuote(['ipfw', '-q', 'add', '64000', 'allow', 'tcp', 'from', '2001:db8::10']), 'ipfw -q add 64000 allow tcp from 2001:db8::10');
  assert.is(shellQuote(['a b', "it's", '', 'x*']), `'a b' 'it'\\''s' '' 'x*'`);
  assert.equal(formatCommand(['pfctl', '-a', 'ftp6proxy/1', '-f', '-'], 'pass in\npass out\n'), [
    '$ pfctl -a ftp6proxy/1 -f -',
    '< pass in',
    '< pass out',
  ]);
});

test('open/close command lines: v6 and v4, allow, -j call, limit', async () => {
  const rows: { opts: { target?: number; limit?: boolean }; hole: Hole; add: string }[] = [
    { opts: {}, hole: h6, add: '$ ipfw -q add 64000 allow tcp from 2001:db8::10 to 2001:db8:1::20 50000 setup keep-state' },
    { opts: {}, hole: h4, add: '$ ipfw -q add 64099 allow tcp from 198.18.0.10 to 198.18.1.20 40001 setup keep-state' },
    { opts: { target: 5000 }, hole: h6, add: '$ ipfw -q add 64000 call 5000 tcp from 2001:db8::10 to 2001:db8:1::20 50000 setup keep-state' },
    { opts: { target: 5000 }, hole: h4, add: '$ ipfw -q add 64099 call 5000 tcp from 198.18.0.10 to 198.18.1.20 40001 setup keep-state' },
    { opts: { limit: true }, hole: h6, add: '$ ipfw -q add 64000 allow tcp from 2001:db8::10 to 2001:db8:1::20 50000 setup limit src-addr 1' },
  ];
  for (const r of rows) {
    const runner = new RecordingRunner();
    const fw = new IpfwFirewall({ base: 64000, count: 100, runner, logger: logger(), ...r.opts });
    await fw.open(r.hole, 2);
    assert.is(await fw.close(r.hole), true);
    assert.equal(runner.lines, [
      r.add,
      '$ sysctl -n net.inet.ip.fw.dyn_keep_states', // first close asks once
      `$ ipfw -q delete ${r.hole.rule}`,
    ]);
  }
});

test('check, sweep (-b/-c range) and shutdown', async () => {
  const runner = new RecordingRunner();
  const fw = new IpfwFirewall({ base: 1000, count: 10, runner, logger: logger() });
  await fw.check();
  await fw.sweep();
  await fw.shutdown();
  assert.equal(runner.lines, [
    '$ ipfw show',
    '$ sysctl -n net.inet.ip.fw.dyn_keep_states',
    '$ ipfw -q delete 1000-1009',
  ], 'shutdown runs nothing: the daemon sweeps before it');
});

test('dyn_keep_states=0: warn once, keep the rule while its dynamic rules live', async () => {
  let states = '64000      12     1440 (295s) STATE tcp 2001:db8::10 54321 <-> 2001:db8:1::20 50000 :default';
  const runner = new RecordingRunner({ dynKeepStates: 0, ipfwStates: (n) => (n === 64000 ? states : '') });
  const log = logger();
  const fw = new IpfwFirewall({ base: 64000, count: 100, runner, logger: log });
  await fw.check();
  await fw.open(h6, 2);
  assert.is(await fw.close(h6), false, 'state alive: rule kept');
  assert.is(await fw.close(h6), false);
  states = '';
  assert.is(await fw.close(h6), true, 'state gone: rule deleted');
  assert.equal(runner.lines, [
    '$ ipfw show',
    '$ sysctl -n net.inet.ip.fw.dyn_keep_states',
    '$ ipfw -q add 64000 allow tcp from 2001:db8::10 to 2001:db8:1::20 50000 setup keep-state',
    '$ ipfw -d show 64000',
    '$ ipfw -d show 64000',
    '$ ipfw -d show 64000',
    '$ ipfw -q delete 64000',
  ]);
  assert.is(log.lines.filter((l) => l.startsWith('warning') && l.includes('dyn_keep_states')).length, 1);
});

test('countDynamicRules reads only the dynamic section, and only rule N', () => {
  const out = [
    '64000     0       0 allow tcp from 2001:db8::10 to 2001:db8:1::20 50000 setup keep-state :default',
    '## Dynamic rules (3 120):',
    '64000     5     300 (285s) STATE tcp 2001:db8::10 54321 <-> 2001:db8:1::20 50000 :default',
    '64001     5     300 (285s) STATE tcp 2001:db8::11 54321 <-> 2001:db8:1::20 50001 :default',
    '64000     1      60 (2s) STATE tcp 2001:db8::10 54322 <-> 2001:db8:1::20 50000 :default',
  ].join('\n');
  assert.is(countDynamicRules(out, 64000), 2);
  assert.is(countDynamicRules(out, 64001), 1);
  assert.is(countDynamicRules(out.split('\n')[0], 64000), 0);
});

test('failures: add error, delete of a rule that is already gone, pool and hole validation', async () => {
  const failAdd = new RecordingRunner({ respond: (a) => (a[2] === 'add' ? { code: 65, stdout: '', stderr: 'ipfw: getsockopt(IP_FW_XADD): Permission denied' } : undefined) });
  const fw = new IpfwFirewall({ base: 64000, count: 100, runner: failAdd, logger: logger() });
  await fw.open(h6, 2).then(
    () => assert.unreachable('add succeeded'),
    (e: FtpProxyError) => assert.match(e.message, /Permission denied/),
  );
  // delete fails and `ipfw -q show N` fails too: the rule is gone, close is done
  const gone = new RecordingRunner({ respond: (a) => (a.includes('delete') || a.includes('show') ? { code: 69, stdout: '', stderr: 'not found' } : undefined) });
  const fw2 = new IpfwFirewall({ base: 64000, count: 100, runner: gone, logger: logger() });
  assert.is(await fw2.close(h6), true);
  assert.equal(gone.lines.slice(-2), ['$ ipfw -q delete 64000', '$ ipfw -q show 64000']);
  // hostile or wrong holes never reach ipfw
  const runner = new RecordingRunner();
  const fw3 = new IpfwFirewall({ base: 64000, count: 100, runner, logger: logger() });
  for (const bad of [
    { ...h6, src: 'any' },
    { ...h6, dst: '198.18.0.1' },
    { ...h4, src: '2001:db8::1' },
    { ...h6, port: 0 },
    { ...h6, rule: 64100 },
    { ...h6, src: '2001:db8::1 to any' },
  ]) {
    await fw3.open(bad, 2).then(
      () => assert.unreachable(JSON.stringify(bad)),
      (e: FtpProxyError) => assert.is(e.code, 'hole-invalid'),
    );
  }
  assert.equal(runner.lines, []);
  assert.throws(() => new IpfwFirewall({ base: 65500, count: 100, runner, logger: logger() }), /pool/);
  assert.throws(() => new IpfwFirewall({ base: 64000, count: 100, target: 64050, runner, logger: logger() }), /inside/);
});

// ---------------------------------------------------------------------------
// The same through ExecRunner and the fake executables first in PATH

function fakeEnv(extra: Record<string, string> = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ftp6proxy-ipfw-'));
  const log = path.join(dir, 'log');
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${FAKEBIN}:${process.env.PATH ?? ''}`, FAKEBIN_LOG: log, ...extra };
  return { env, read: () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : ''), cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

test('ExecRunner + fake ipfw/sysctl: the recorded argv', async () => {
  const f = fakeEnv();
  const fw = new IpfwFirewall({ base: 64000, count: 100, target: 5000, runner: new ExecRunner({ env: f.env }), logger: logger() });
  await fw.check();
  await fw.sweep();
  await fw.open(h4, 2);
  assert.is(await fw.close(h4), true);
  assert.is(
    f.read(),
    [
      'ipfw show',
      'sysctl -n net.inet.ip.fw.dyn_keep_states',
      'ipfw -q delete 64000-64099',
      'ipfw -q add 64099 call 5000 tcp from 198.18.0.10 to 198.18.1.20 40001 setup keep-state',
      'ipfw -q delete 64099',
      '',
    ].join('\n'),
  );
  f.cleanup();
});

test('ExecRunner + fakes with dyn_keep_states=0 and live states from FAKE_IPFW_STATES', async () => {
  const f = fakeEnv({ FAKE_DYN_KEEP_STATES: '0', FAKE_IPFW_STATES: '64000 5 300 (285s) STATE tcp 2001:db8::10 54321 <-> 2001:db8:1::20 50000 :default' });
  const log = logger();
  const fw = new IpfwFirewall({ base: 64000, count: 100, runner: new ExecRunner({ env: f.env }), logger: log });
  await fw.check();
  await fw.open(h6, 2);
  assert.is(await fw.close(h6), false);
  f.env.FAKE_IPFW_STATES = '';
  assert.is(await fw.close(h6), true);
  assert.is(
    f.read(),
    [
      'ipfw show',
      'sysctl -n net.inet.ip.fw.dyn_keep_states',
      'ipfw -q add 64000 allow tcp from 2001:db8::10 to 2001:db8:1::20 50000 setup keep-state',
      'ipfw -d show 64000',
      'ipfw -d show 64000',
      'ipfw -q delete 64000',
      '',
    ].join('\n'),
  );
  assert.ok(log.lines.some((l) => l.startsWith('warning') && l.includes('is 0')));
  f.cleanup();
});

test('ExecRunner: missing command and timeout are clear errors, never a shell', async () => {
  const r = new ExecRunner({ env: { PATH: '/nonexistent' } });
  await r.run(['ipfw', 'show']).then(
    () => assert.unreachable('ran'),
    (e: FtpProxyError) => assert.is(e.code, 'command-missing'),
  );
  const slow = new ExecRunner({ timeoutMs: 100 });
  await slow.run(['sleep', '5']).then(
    () => assert.unreachable('ran'),
    (e: FtpProxyError) => assert.is(e.code, 'command-timeout'),
  );
  // a word with shell syntax stays one argv word
  const echo = await new ExecRunner().run(['printf', '%s|', 'a;b', '$(x)']);
  assert.is(echo.stdout, 'a;b|$(x)|');
  const fw = new IpfwFirewall({ base: 64000, count: 1, runner: r, logger: logger() });
  await fw.check().then(
    () => assert.unreachable('checked'),
    (e: FtpProxyError) => assert.is(e.code, 'ipfw-missing'),
  );
});

test.run();
