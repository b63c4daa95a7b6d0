/**
 * PfFirewall: the exact pfctl(8) command lines and anchor rules, through the
 * RecordingRunner and through ExecRunner against test/fixtures/fakebin/pfctl.
 * Rule form: pf.conf(5) / OpenBSD ftp-proxy's filter.c.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { PfFirewall, pfHoleRules } from '../../src/firewall/pf';
import { ExecRunner, RecordingRunner } from '../../src/firewall/runner';
import { FtpProxyError, Hole, Level } from '../../src/types';

const FAKEBIN = path.resolve(__dirname, '..', '..', '..', 'test', 'fixtures', 'fakebin');

function logger() {
  const lines: string[] = [];
  return { lines, log: (l: Level, m: string) => void lines.push(`${l}: ${m}`) };
}

const h6: Hole = { family: 6, src: '2001:db8::10', dst: '2001:db8:1::20', port: 50000, rule: 64000, session: 1 };
const h4: Hole = { family: 4, src: '198.18.0.10', dst: '198.18.1.20', port: 40001, rule: 64007, session: 2 };

test('open/close: one anchor per hole, two rules on stdin, -a and -q honoured', async () => {
  const rows: { anchor?: string; queue?: string; hole: Hole; lines: string[] }[] = [
    {
      hole: h6,
      lines: [
        '$ pfctl -a ftp6proxy/64000 -f -',
        '< pass in quick inet6 proto tcp from 2001:db8::10 to 2001:db8:1::20 port = 50000 flags S/SA keep state (max 1)',
        '< pass out quick inet6 proto tcp from 2001:db8::10 to 2001:db8:1::20 port = 50000 flags S/SA keep state (max 1)',
        '$ pfctl -a ftp6proxy/64000 -F rules',
      ],
    },
    {
      hole: h4,
      queue: 'ftpdata',
      lines: [
        '$ pfctl -a ftp6proxy/64007 -f -',
        '< pass in quick inet proto tcp from 198.18.0.10 to 198.18.1.20 port = 40001 flags S/SA keep state (max 1) queue ftpdata',
        '< pass out quick inet proto tcp from 198.18.0.10 to 198.18.1.20 port = 40001 flags S/SA keep state (max 1) queue ftpdata',
        '$ pfctl -a ftp6proxy/64007 -F rules',
      ],
    },
    {
      hole: h6,
      anchor: 'gw/ftp',
      lines: [
        '$ pfctl -a gw/ftp/64000 -f -',
        '< pass in quick inet6 proto tcp from 2001:db8::10 to 2001:db8:1::20 port = 50000 flags S/SA keep state (max 1)',
        '< pass out quick inet6 proto tcp from 2001:db8::10 to 2001:db8:1::20 port = 50000 flags S/SA keep state (max 1)',
        '$ pfctl -a gw/ftp/64000 -F rules',
      ],
    },
  ];
  for (const r of rows) {
    const runner = new RecordingRunner();
    const fw = new PfFirewall({ anchor: r.anchor, queue: r.queue, runner, logger: logger() });
    await fw.open(r.hole, 2);
    assert.is(await fw.close(r.hole), true, 'states outlive the rule: the number is free at once');
    assert.equal(runner.lines, r.lines);
  }
});

test('check and sweep: list children of -a, flush each; shutdown runs nothing', async () => {
  const runner = new RecordingRunner({ pfAnchors: (a) => (a === 'ftp6proxy' ? ['ftp6proxy/64000', 'ftp6proxy/64003'] : []) });
  const fw = new PfFirewall({ runner, logger: logger() });
  await fw.check();
  await fw.sweep();
  await fw.shutdown();
  const sweep = ['$ pfctl -a ftp6proxy -s Anchors', '$ pfctl -a ftp6proxy/64000 -F rules', '$ pfctl -a ftp6proxy/64003 -F rules'];
  assert.equal(runner.lines, ['$ pfctl -s info', '$ pfctl -s rules', ...sweep]);
});

test('check: pf disabled is a clear fatal error; missing anchor line only warns', async () => {
  const off = new RecordingRunner({ respond: (a) => (a.includes('info') ? { code: 0, stdout: 'Status: Disabled for 0 days\n', stderr: '' } : undefined) });
  await new PfFirewall({ runner: off, logger: logger() }).check().then(
    () => assert.unreachable('checked'),
    (e: FtpProxyError) => {
      assert.is(e.code, 'pf-disabled');
      assert.match(e.message, /pfctl -e/);
    },
  );
  const log = logger();
  const noAnchor = new RecordingRunner({ respond: (a) => (a.includes('rules') && a.includes('-s') ? { code: 0, stdout: 'pass all\n', stderr: '' } : undefined) });
  await new PfFirewall({ runner: noAnchor, logger: log }).check();
  assert.ok(log.lines.some((l) => l.startsWith('warning') && l.includes('anchor "ftp6proxy/*"')));
});

test('validation: bad anchor/queue names and hostile holes never reach pfctl', async () => {
  const runner = new RecordingRunner();
  assert.throws(() => new PfFirewall({ anchor: 'a b', runner, logger: logger() }));
  assert.throws(() => new PfFirewall({ anchor: 'x/*', runner, logger: logger() }));
  assert.throws(() => new PfFirewall({ queue: 'q\npass all', runner, logger: logger() }));
  const fw = new PfFirewall({ runner, logger: logger() });
  for (const bad of [{ ...h6, src: 'any' }, { ...h6, dst: '2001:db8::1\npass all' }, { ...h4, port: 70000 }]) {
    await fw.open(bad, 2).then(
      () => assert.unreachable('opened'),
      (e: FtpProxyError) => assert.is(e.code, 'hole-invalid'),
    );
  }
  assert.equal(runner.lines, []);
  assert.is(pfHoleRules(h6).split('\n').length, 3); // two rules and the final newline
});

test('ExecRunner + fake pfctl: recorded argv and stdin', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ftp6proxy-pf-'));
  const logFile = path.join(dir, 'log');
  const env = { ...process.env, PATH: `${FAKEBIN}:${process.env.PATH ?? ''}`, FAKEBIN_LOG: logFile, FAKE_PF_ANCHORS: '  ftp6proxy/64001\n  ftp6proxy/64002' };
  const fw = new PfFirewall({ queue: 'ftpq', runner: new ExecRunner({ env }), logger: logger() });
  await fw.check();
  await fw.sweep();
  await fw.open(h6, 2);
  assert.is(await fw.close(h6), true);
  assert.is(
    fs.readFileSync(logFile, 'utf8'),
    [
      'pfctl -s info',
      'pfctl -s rules',
      'pfctl -a ftp6proxy -s Anchors',
      'pfctl -a ftp6proxy/64001 -F rules',
      'pfctl -a ftp6proxy/64002 -F rules',
      'pfctl -a ftp6proxy/64000 -f -',
      '< pass in quick inet6 proto tcp from 2001:db8::10 to 2001:db8:1::20 port = 50000 flags S/SA keep state (max 1) queue ftpq',
      '< pass out quick inet6 proto tcp from 2001:db8::10 to 2001:db8:1::20 port = 50000 flags S/SA keep state (max 1) queue ftpq',
      'pfctl -a ftp6proxy/64000 -F rules',
      '',
    ].join('\n'),
  );
  // pf disabled, seen through the fake
  const off = new PfFirewall({ runner: new ExecRunner({ env: { ...env, FAKE_PF_DISABLED: '1' } }), logger: logger() });
  await off.check().then(
    () => assert.unreachable('checked'),
    (e: FtpProxyError) => assert.is(e.code, 'pf-disabled'),
  );
  fs.rmSync(dir, { recursive: true, force: true });
});

test.run();
