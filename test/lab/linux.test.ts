/**
 * Issue 3 acceptance, in the lab: `ftp6proxy -m nftables -d -d -p Q -a
 * inet/filter` in a gateway whose ruleset follows DESIGN.md lets real clients
 * fetch files through it: IPv6 and IPv4, passive and active, more than one
 * server implementation.  The same transfers fail when it is not running.
 * A hole admits its port right away and no longer after -t seconds.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as path from 'path';
import { clientSupports, labCannotRun, preflight, serverAvailable, withLab, ServerKind } from './lab';
import { startDaemon, stopDaemon, transferMatrix } from '../fuzz/labkit';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const Q = 10034;
const why = preflight();



if (why !== null) {
  labCannotRun('test/lab/linux.test', why);
} else {
  test('real transfers pass only because ftp6proxy runs: servers x clients x families x modes', async () => {
    await withLab({ prefix: 'f6lin', policy: 'deny', queueNum: Q }, async (lab) => {
      const servers = (['vsftpd', 'pyftpdlib', 'pure-ftpd'] as ServerKind[]).filter((s) => serverAvailable(s) === null);
      assert.ok(servers.length >= 2, `at least two server programs: ${servers.join(', ')}`);
      const d = await startDaemon(lab, Q);
      const passed: string[] = [];
      for (const kind of servers) {
        const srv = await lab.startServer(kind);
        try {
          passed.push(...(await transferMatrix(lab, kind, d)));
        } finally {
          await srv.stop();
        }
      }
      console.log(`  ${passed.length} transfers passed through ftp6proxy`);
      assert.ok(passed.length >= 30);
      assert.match(d.log(), /hole \d+ open for 229/);
      assert.match(d.log(), /hole \d+ open for PORT/);
      await stopDaemon(d);

      // The same transfers without ftp6proxy: the data connection is dropped.
      const srv = await lab.startServer(servers[0]);
      try {
        for (const family of [6, 4] as const) {
          for (const mode of ['epsv', 'pasv', 'eprt', 'port'] as const) {
            if (!clientSupports('curl', mode, family)) continue;
            const r = await lab.runClient({ client: 'curl', mode, family, timeoutMs: 6000 });
            assert.not.ok(r.ok, `curl ${mode} IPv${family} must fail without ftp6proxy`);
          }
        }
      } finally {
        await srv.stop();
      }
    });
  });

  test('a hole admits its port right away and no longer after -t', async () => {
    await withLab({ prefix: 'f6tmo', policy: 'deny', queueNum: Q }, async (lab) => {
      const srv = await lab.startServer('vsftpd');
      const d = await startDaemon(lab, Q, ['-t', '2']);
      try {
        const probe = (family: 4 | 6, cmd: string, waitMs: number) => {
          const r = lab.run(lab.ns.client, ['node', path.join(ROOT, 'dist', 'test', 'lab', 'ftp-probe.js'), lab.addr.server[family], cmd, String(waitMs)], { timeoutMs: 20000 });
          return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { result: string; port: number; reply: string };
        };
        for (const [family, cmd] of [[6, 'EPSV'], [4, 'PASV']] as const) {
          const now = probe(family, cmd, 0);
          assert.is(now.result, 'connected', `IPv${family} ${cmd} right away: ${JSON.stringify(now)}`);
          const late = probe(family, cmd, 3000);
          assert.ok(late.port > 0, JSON.stringify(late));
          assert.is(late.result, 'timeout', `IPv${family} ${cmd} after -t: the SYN must be dropped: ${JSON.stringify(late)}`);
        }
        // the probes ran synchronously: let the daemon's stderr be read
        await new Promise((r) => setTimeout(r, 300));
        assert.match(d.log(), /hole \d+ closed/);
      } finally {
        await stopDaemon(d);
        await srv.stop();
      }
    });
  });
}

test.run();
