/**
 * `npm run lab` (as root): the demo.  Builds the three-namespace lab, shows
 * that FTP data connections fail through a deny-by-default gateway, starts
 * ftp6proxy in the gateway, runs real transfers, and tears everything down.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import { clientSupports, preflight, serverAvailable, withLab, Lab, ClientKind, Mode, ServerKind } from './lab';
import { startDaemon, Daemon } from '../fuzz/labkit';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const Q = 10004;

function say(s = ''): void {
  process.stdout.write(`${s}\n`);
}

function ensureDeps(): boolean {
  let why = preflight();
  if (why === null) return true;
  if (/missing Debian package/.test(why) && process.getuid?.() === 0) {
    say(`${why}\nInstalling them with scripts/lab-deps.sh ...`);
    const r = spawnSync('bash', [path.join(ROOT, 'scripts', 'lab-deps.sh')], { stdio: 'inherit' });
    if (r.status === 0) why = preflight();
  }
  if (why !== null) {
    say(`The demo cannot run: ${why}`);
    return false;
  }
  return true;
}

async function transfers(lab: Lab, rows: Array<[ServerKind, ClientKind, Mode, 4 | 6]>): Promise<Array<[string, boolean]>> {
  const out: Array<[string, boolean]> = [];
  let current: { kind: ServerKind; stop: () => Promise<void> } | undefined;
  for (const [kind, client, mode, family] of rows) {
    if (current?.kind !== kind) {
      await current?.stop();
      const srv = await lab.startServer(kind);
      current = { kind, stop: () => srv.stop() };
    }
    const r = await lab.runClient({ client, mode, family, timeoutMs: 6000 });
    out.push([`${client.padEnd(6)} ${mode.toUpperCase().padEnd(5)} IPv${family}  from ${kind}`, r.ok]);
  }
  await current?.stop();
  return out;
}

async function main(): Promise<number> {
  say('ftp6proxy demo: a client, a deny-by-default Linux gateway and an FTP server, each in its own network namespace.\n');
  if (!ensureDeps()) return 1;
  return withLab({ prefix: 'f6demo', policy: 'deny', queueNum: Q }, async (lab) => {
    say('Set up:');
    say(`  client   ${lab.addr.client[6]}  ${lab.addr.client[4]}`);
    say(`  gateway  nftables "table inet filter", forward policy drop, sets ftp6proxy4/ftp6proxy6;`);
    say(`           FTP control packets (port 21) go to NFQUEUE ${Q}`);
    say(`  server   ${lab.addr.server[6]}  ${lab.addr.server[4]}\n`);

    const servers = (['vsftpd', 'pyftpdlib', 'pure-ftpd'] as ServerKind[]).filter((s) => serverAvailable(s) === null);
    const rows: Array<[ServerKind, ClientKind, Mode, 4 | 6]> = [];
    for (const kind of servers) {
      for (const [client, mode, family] of [['curl', 'epsv', 6], ['curl', 'port', 4], ['lftp', 'eprt', 6], ['curl', 'pasv', 4], ['tnftp', 'port', 6], ['wget', 'pasv', 4]] as const) {
        if (clientSupports(client, mode, family)) rows.push([kind, client, mode, family]);
      }
    }

    say('1. Without ftp6proxy (control connections pass, data connections are dropped):');
    const before = await transfers(lab, rows.filter((r) => r[0] === servers[0]).slice(0, 4));
    for (const [what, ok] of before) say(`   ${ok ? 'passed' : 'failed'}  ${what}`);

    say(`\n2. With ftp6proxy -m nftables -d -d -p ${Q} -a inet/filter running in the gateway:`);
    let d: Daemon;
    try {
      d = await startDaemon(lab, Q);
    } catch (e) {
      say(`   ${e instanceof Error ? e.message : String(e)}`);
      return 1;
    }
    const after = await transfers(lab, rows);
    for (const [what, ok] of after) say(`   ${ok ? 'passed' : 'FAILED'}  ${what}`);
    d.proc.kill('SIGTERM');
    await d.waitExit(10000);
    const holes = (d.log().match(/hole \d+ open/g) ?? []).length;
    const left = lab.run(lab.ns.gateway, ['nft', 'list', 'set', 'inet', 'filter', 'ftp6proxy6']).stdout.includes('elements');

    const nBefore = before.filter(([, ok]) => ok).length;
    const nAfter = after.filter(([, ok]) => ok).length;
    say('\nSummary:');
    say(`  without ftp6proxy: ${nBefore} of ${before.length} transfers passed`);
    say(`  with ftp6proxy:    ${nAfter} of ${after.length} transfers passed (${servers.join(', ')}; curl, lftp, tnftp, wget), ${holes} holes opened`);
    say(`  after SIGTERM:     ${left ? 'holes LEFT in the firewall' : 'no holes left in the firewall'}`);
    say('  The lab has been torn down.');
    const good = nBefore === 0 && nAfter === after.length && !left;
    say(good ? '\nEverything behaved as it should.' : '\nSomething did not behave as it should (see above).');
    return good ? 0 : 1;
  });
}

main().then((code) => { process.exitCode = code; }, (e) => { say(`demo failed: ${e instanceof Error ? e.stack : String(e)}`); process.exitCode = 1; });
