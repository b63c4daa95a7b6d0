/**
 * Issue 6 acceptance, in the Linux lab: shadow mode plus observe produce
 * matching transcripts for the same transfers.  This is the migration check
 * of compat/HARNESS.md, with ftp6proxy on NFQUEUE standing in for the C daemon:
 *
 *   gateway:  ftp6proxy -m nftables -d -d -p Q -a inet/filter      (opens the holes)
 *             ftp6proxy -m nftables -n -d -d -p G                  (shadow, fed by NFLOG group G)
 *             ftp6proxy-compat observe -m nftables -a inet/filter  (what really changed)
 *             iptables/ip6tables -I FORWARD 1 -p tcp --dport 21 -j NFLOG --nflog-group G (+ --sport 21)
 *
 * Real clients fetch files through the deny-by-default gateway; the holes the
 * shadow logs (`shadow: would open N SRC DST PORT`) must be the holes observe
 * saw appear in the sets (SRC DST PORT; rule numbers and times differ by
 * design), and every transfer must have made at least one.
 *
 * Root only: otherwise `SKIP: reason`; with CI=true it fails instead.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as path from 'path';
import { ChildProcess } from 'child_process';
import { clientSupports, labCannotRun, preflight, serverAvailable, withLab, Lab, ClientKind, Mode, Family } from './lab';
import { compareHoles, openedHoles, unifiedDiff } from '../../src/compat';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const Q = 10044;
const GROUP = 10045;
const why = preflight();

interface Proc {
  proc: ChildProcess;
  text: () => string;
}

function start(lab: Lab, argv: string[]): Proc {
  const proc = lab.spawnIn(lab.ns.gateway, ['node', ...argv]);
  let text = '';
  proc.stderr?.on('data', (c: Buffer) => { text += c.toString(); });
  proc.stdout?.on('data', (c: Buffer) => { text += c.toString(); });
  return { proc, text: () => text };
}

async function waitFor(what: string, p: Proc, re: RegExp, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end && !re.test(p.text())) {
    if (p.proc.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(p.text(), re, `${what} did not start:\n${p.text().slice(-2000)}`);
}

async function stop(p: Proc): Promise<void> {
  if (p.proc.exitCode !== null || p.proc.signalCode !== null) return;
  const done = new Promise((r) => p.proc.once('exit', r));
  p.proc.kill('SIGTERM');
  await Promise.race([done, new Promise((r) => setTimeout(r, 5000))]);
}

const TRANSFERS: Array<[ClientKind, Mode, Family]> = [
  ['curl', 'epsv', 6], ['curl', 'eprt', 6], ['curl', 'pasv', 4], ['curl', 'port', 4],
  ['lftp', 'epsv', 6], ['lftp', 'port', 4], ['tnftp', 'pasv', 4], ['tnftp', 'eprt', 6],
];

if (why !== null) {
  labCannotRun('test/lab/shadow.test', why);
} else {
  test('shadow mode (NFLOG) and observe see the same holes for the same transfers', async () => {
    await withLab({ prefix: 'f6shd', policy: 'deny', queueNum: Q }, async (lab) => {
      // NFLOG copies before the NFQUEUE rules (NFQUEUE ends the chain for the packet).
      for (const ipt of ['iptables', 'ip6tables']) {
        for (const dir of ['--dport', '--sport']) {
          const r = lab.run(lab.ns.gateway, [ipt, '-I', 'FORWARD', '1', '-p', 'tcp', dir, '21', '-j', 'NFLOG', '--nflog-group', String(GROUP)]);
          assert.is(r.status, 0, `${ipt} NFLOG rule: ${r.stderr}`);
        }
      }
      const main = start(lab, [path.join(ROOT, 'bin', 'ftp6proxy'), '-m', 'nftables', '-d', '-d', '-p', String(Q), '-a', 'inet/filter']);
      const shadow = start(lab, [path.join(ROOT, 'bin', 'ftp6proxy'), '-m', 'nftables', '-n', '-d', '-d', '-p', String(GROUP)]);
      const observe = start(lab, [path.join(ROOT, 'bin', 'ftp6proxy-compat'), 'observe', '-m', 'nftables', '-a', 'inet/filter']);
      const srv = await lab.startServer(serverAvailable('vsftpd') === null ? 'vsftpd' : 'pyftpdlib');
      const done: string[] = [];
      try {
        await waitFor('ftp6proxy', main, /started: module nftables/);
        await waitFor('ftp6proxy -n', shadow, /started: module nftables.*shadow mode/);
        await waitFor('observe', observe, /^# observe nftables inet\/filter/m);
        for (const [client, mode, family] of TRANSFERS) {
          if (!clientSupports(client, mode, family)) continue;
          const r = await lab.runClient({ client, mode, family });
          assert.ok(r.ok, `${client} ${mode} IPv${family}: ${r.reason}\n${main.text().slice(-1500)}`);
          done.push(`${client}/${mode}/${family}`);
        }
        // let the last holes expire (-t 2) and observe see them go
        await new Promise((r) => setTimeout(r, 3000));
      } finally {
        await stop(observe);
        await stop(shadow);
        await stop(main);
        await srv.stop();
      }
      const shadowHoles = openedHoles(shadow.text().split('\n'));
      const observed = openedHoles(observe.text().split('\n'));
      // Two transfers can get the same hole (vsftpd picks its PASV port from a
      // range of 101): the shadow announces it twice, but while the first is
      // still in the set observe sees one element appear.  So every transfer must
      // make an announcement, and the two sides must agree on the distinct holes.
      const distinct = (a: readonly string[]): string[] => [...new Set(a)].sort();
      const shadowDistinct = distinct(shadowHoles);
      const observedDistinct = distinct(observed);
      const diff = unifiedDiff(shadowDistinct, observedDistinct, 'shadow log', 'observe');
      const { missing, extra } = compareHoles(observedDistinct, shadowDistinct);
      assert.ok(done.length >= 6, `transfers run: ${done.join(' ')}`);
      assert.ok(shadowHoles.length >= done.length,
        `every transfer opens a hole: the shadow announced ${shadowHoles.length} for ${done.length} transfers\n${shadow.text().slice(-3000)}`);
      assert.ok(observed.length >= shadowDistinct.length,
        `observe saw ${observed.length} holes appear, the shadow announced ${shadowDistinct.length} distinct ones\n${observe.text()}`);
      assert.equal({ missing, extra }, { missing: [], extra: [] },
        `shadow and observe differ:\n${diff.join('\n')}\n--- shadow log tail:\n${shadow.text().slice(-3000)}`);
      // the observe transcript closes what it opened
      const closes = observe.text().split('\n').filter((l) => /^[0-9.]+ close [0-9]+$/.test(l)).length;
      assert.is(closes, observed.length, observe.text());
      const again = shadowHoles.length - shadowDistinct.length;
      if (again > 0) console.log(`  ${again} hole(s) announced again for a later transfer (same addresses and port)`);
      console.log(`  ${done.length} transfers, ${observed.length} holes: shadow log and observe agree`);
    });
  });
}

test.run();
