/**
 * Issue 4 acceptance, in the lab: the daemon started the way rc.d starts it.
 *   ftp6proxy -m nftables -p Q -a inet/filter -i PIDFILE -u nobody -r DIR -f local3
 * returns 0 once up, leaves a pidfile naming a live process, parses packets as
 * nobody chrooted to DIR, lets transfers pass, logs to syslog facility local3
 * (a real rsyslogd on /dev/log), and on SIGTERM exits, removes the pidfile and
 * leaves no holes.  Bad -u, -r and -i fail at start with exit 1.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { labCannotRun, preflight, startRsyslog, syslogBusy, withLab, Lab } from './lab';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = path.join(ROOT, 'bin', 'ftp6proxy');
const Q = 10024;

const why = preflight() ?? (fs.existsSync('/usr/sbin/rsyslogd') ? null : 'rsyslogd is missing (apt-get install rsyslog)');
const devLogBusy = syslogBusy();

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(what: string, fn: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fn()) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function daemonArgs(dir: string, extra: string[] = []): string[] {
  return ['node', BIN, '-m', 'nftables', '-p', String(Q), '-a', 'inet/filter',
    '-i', path.join(dir, 'ftp6proxy.pid'), '-u', 'nobody', '-r', path.join(dir, 'empty'), '-f', 'local3', ...extra];
}

function setElements(lab: Lab): string {
  return lab.run(lab.ns.gateway, ['nft', 'list', 'set', 'inet', 'filter', 'ftp6proxy4']).stdout +
    lab.run(lab.ns.gateway, ['nft', 'list', 'set', 'inet', 'filter', 'ftp6proxy6']).stdout;
}

if (why !== null || devLogBusy) {
  labCannotRun('test/lab/daemon.test', why ?? '/dev/log is owned by another syslogd; this test runs its own rsyslogd');
} else {
  test('background start, pidfile, nobody + chroot, transfers, syslog local3, SIGTERM cleanup', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'f6d-'));
    fs.mkdirSync(path.join(dir, 'empty'));
    fs.chmodSync(dir, 0o755);
    const syslog = await startRsyslog(dir, ['local3']);
    try {
      await withLab({ prefix: 'f6dmn', policy: 'deny', queueNum: Q }, async (lab) => {
        await lab.startServer('vsftpd');
        const start = lab.run(lab.ns.gateway, daemonArgs(dir), { timeoutMs: 20000 });
        assert.is(start.status, 0, `start: ${start.stderr}`);
        const pidText = fs.readFileSync(path.join(dir, 'ftp6proxy.pid'), 'utf8');
        const pid = Number(pidText.trim());
        assert.ok(pid > 1 && alive(pid), `pidfile names a live process: ${pidText}`);

        // The worker: a child of the monitor, running as nobody, root at DIR.
        const kids = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
        assert.is(kids.length, 1, `one worker under the monitor: ${kids.join(',')}`);
        const w = Number(kids[0]);
        const status = fs.readFileSync(`/proc/${w}/status`, 'utf8');
        const nobody = spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim();
        assert.match(status, new RegExp(`^Uid:\\s+${nobody}\\s+${nobody}\\s+${nobody}\\s+${nobody}$`, 'm'));
        assert.match(status, /^CapEff:\s+0000000000001000$/m, 'only CAP_NET_ADMIN is left');
        assert.is(fs.readlinkSync(`/proc/${w}/root`), path.join(dir, 'empty'));
        // The monitor stays root and outside the chroot.
        assert.is(fs.readlinkSync(`/proc/${pid}/root`), '/');

        for (const [mode, family] of [['epsv', 6], ['port', 4], ['pasv', 4], ['eprt', 6]] as const) {
          const r = await lab.runClient({ client: 'curl', mode, family });
          assert.ok(r.ok, `curl ${mode} IPv${family}: ${r.reason}`);
        }

        // syslog: facility local3, ident ftp6proxy[pid], one line per hole
        await until('syslog lines', () => fs.existsSync(syslog.files.local3) && /hole \d+ open/.test(fs.readFileSync(syslog.files.local3, 'utf8')));
        const logText = fs.readFileSync(syslog.files.local3, 'utf8');
        assert.match(logText, /^\S+ local3\.\w+ ftp6proxy\[\d+\]: /m);
        assert.match(logText, new RegExp(`ftp6proxy\\[${w}\\]: #\\d+ hole \\d+ open for 229`));
        assert.match(logText, /started: module nftables/);

        // SIGUSR1: a status line
        process.kill(pid, 'SIGUSR1');
        await until('status line', () => /status: \d+ sessions, holes \d+ in use/.test(fs.readFileSync(syslog.files.local3, 'utf8')));

        // SIGHUP: the log is reopened, the daemon goes on.
        process.kill(pid, 'SIGHUP');
        await until('SIGHUP line', () => /SIGHUP: log reopened/.test(fs.readFileSync(syslog.files.local3, 'utf8')));
        assert.ok(alive(pid) && alive(w), 'still running after SIGHUP');

        // A second start with the same pidfile is refused while the first lives.
        const again = lab.run(lab.ns.gateway, daemonArgs(dir), { timeoutMs: 20000 });
        assert.is(again.status, 1);
        assert.match(again.stderr, /already running as pid/);

        // A hole open right now, then SIGTERM: exits, pidfile gone, no holes.
        const open = lab.runClient({ client: 'curl', mode: 'epsv', family: 6 });
        await open;
        process.kill(pid, 'SIGTERM');
        await until('daemon exit', () => !alive(pid) && !alive(w), 10000);
        assert.not.ok(fs.existsSync(path.join(dir, 'ftp6proxy.pid')), 'pidfile removed');
        assert.not.match(setElements(lab), /elements/, 'no set elements left');
        assert.match(fs.readFileSync(syslog.files.local3, 'utf8'), /stopped/);
      });
    } finally {
      await syslog.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('bad -u, -r and -i fail at start with exit 1 and a clear message', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'f6d-'));
    fs.mkdirSync(path.join(dir, 'empty'));
    try {
      const cases: Array<[string[], RegExp]> = [
        [['-u', 'no-such-user-f6'], /no such user "no-such-user-f6"/],
        [['-r', path.join(dir, 'missing')], /missing/],
        [['-r', 'relative/dir'], /absolute/],
        [['-i', path.join(dir, 'nodir', 'x.pid')], /pidfile|directory/i],
      ];
      for (const [extra, re] of cases) {
        const argv = daemonArgs(dir);
        for (let i = 0; i < extra.length; i += 2) {
          const at = argv.indexOf(extra[i]);
          argv[at + 1] = extra[i + 1];
        }
        const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: 20000 });
        assert.is(r.status, 1, `${extra.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, re, `${extra.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, /^ftp6proxy: /);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test.run();
