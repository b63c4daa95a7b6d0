/**
 * Lab: the real NftablesFirewall against the kernel, in a namespace of its own.
 */
import * as net from 'net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { NftablesFirewall, nftConfigSnippet } from '../../src/firewall/nftables';
import { loadNative } from '../../src/native';
import { parseError, parseMessages } from '../../src/netlink';
import { FtpProxyError, Hole, Level } from '../../src/types';
import { enterNetns, sh } from './nl-netns';

if (enterNetns(__filename, 'nft')) {
  // Every firewall is also registered here, so a failed test cannot leave
  // a netlink socket (and its poller) keeping the process alive.
  const opened: NftablesFirewall[] = [];
  const mk = (table: string): NftablesFirewall => {
    const fw = new NftablesFirewall({ table, logger });
    opened.push(fw);
    return fw;
  };

  const logs: string[] = [];
  const logger = { log: (l: Level, m: string) => void logs.push(`${l}: ${m}`) };

  const DESIGN_TABLE = `
table inet filter {
  set ftp6proxy4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }
  set ftp6proxy6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }
  chain forward { type filter hook forward priority 0; policy drop;
    ct state established accept
    tcp dport 21 ct state new accept
    ip  saddr . ip  daddr . tcp dport @ftp6proxy4 ct state new accept
    ip6 saddr . ip6 daddr . tcp dport @ftp6proxy6 ct state new accept
  }
}`;

  function reset(ruleset: string): void {
    sh('nft flush ruleset');
    sh('nft -f -', ruleset);
  }

  const h4: Hole = { family: 4, src: '198.18.0.1', dst: '198.18.0.2', port: 50000, rule: 1, session: 1 };
  const h6: Hole = { family: 6, src: 'fd00:1::1', dst: 'fd00:2::2', port: 50001, rule: 2, session: 1 };

  async function expectConfigError(fw: NftablesFirewall, needle: string): Promise<string> {
    try {
      await fw.check();
    } catch (e) {
      assert.instance(e, FtpProxyError);
      assert.is((e as FtpProxyError).code, 'nft-config');
      const msg = (e as Error).message;
      assert.ok(msg.includes(needle), `message lacks "${needle}": ${msg}`);
      return msg;
    }
    assert.unreachable('check() passed');
    return '';
  }

  test('check() passes on the DESIGN.md table', async () => {
    reset(DESIGN_TABLE);
    const fw = mk('inet/filter');
    await fw.check();
    await fw.shutdown();
  });

  test('check() fails with the nft lines when the table, a set, the type or the timeout flag is wrong', async () => {
    const fw = mk('inet/filter');
    sh('nft flush ruleset');
    let msg = await expectConfigError(fw, 'table inet filter does not exist');
    assert.ok(msg.includes(nftConfigSnippet('inet/filter')), msg);

    reset('table inet filter {\n set ftp6proxy4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }\n}');
    msg = await expectConfigError(fw, 'set ftp6proxy6 is missing');
    assert.ok(msg.includes('set ftp6proxy6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }'), msg);

    reset(`table inet filter {
      set ftp6proxy4 { type ipv4_addr . inet_service; flags timeout; }
      set ftp6proxy6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }
    }`);
    await expectConfigError(fw, 'set ftp6proxy4 has the wrong type');

    // same length (12 bytes) as ours, different types: only the key type tells
    reset(`table inet filter {
      set ftp6proxy4 { type ipv4_addr . ipv4_addr . mark; flags timeout; }
      set ftp6proxy6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }
    }`);
    await expectConfigError(fw, 'set ftp6proxy4 has the wrong type');

    reset(`table inet filter {
      set ftp6proxy4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }
      set ftp6proxy6 { type ipv6_addr . ipv6_addr . inet_service; }
    }`);
    await expectConfigError(fw, 'set ftp6proxy6 lacks "flags timeout"');
    await fw.shutdown();
  });

  test('an ip/<table> needs only ftp6proxy4, and its snippet shows only that', async () => {
    reset('table ip gw {\n set ftp6proxy4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }\n}');
    const fw = mk('ip/gw');
    await fw.check();
    await fw.open(h4, 5);
    assert.match(sh('nft list set ip gw ftp6proxy4'), /198\.18\.0\.1 \. 198\.18\.0\.2 \. 50000 timeout 5s/);
    try {
      await fw.open(h6, 5);
      assert.unreachable('v6 hole in an ip table');
    } catch (e) {
      assert.is((e as FtpProxyError).code, 'nft-family');
    }
    assert.not.match(nftConfigSnippet('ip/gw'), /ftp6proxy6/);
    await fw.shutdown();
  });

  test('open() puts elements with a timeout, close() removes them, ENOENT is fine', async () => {
    reset(DESIGN_TABLE);
    const fw = mk('inet/filter');
    await fw.check();
    await fw.open(h4, 7);
    await fw.open(h6, 3);
    assert.match(sh('nft list set inet filter ftp6proxy4'), /198\.18\.0\.1 \. 198\.18\.0\.2 \. 50000 timeout 7s expires/);
    assert.match(sh('nft list set inet filter ftp6proxy6'), /fd00:1::1 \. fd00:2::2 \. 50001 timeout 3s expires/);
    // the same hole again refreshes it, no EEXIST (NLM_F_CREATE without NLM_F_EXCL)
    await fw.open(h4, 9);
    assert.match(sh('nft list set inet filter ftp6proxy4'), /50000 timeout 9s/);
    assert.is(await fw.close(h4), true);
    assert.not.match(sh('nft list set inet filter ftp6proxy4'), /50000/);
    assert.is(await fw.close(h4), true, 'second close: ENOENT is success');
    assert.is(await fw.close(h6), true);
    assert.not.match(sh('nft list set inet filter ftp6proxy6'), /50001/);
    await fw.shutdown();
  });

  test('close() of an element that timed out is ACKed, not refused: destroy element, so the kernel aborts no batch', async () => {
    reset(DESIGN_TABLE);
    // the real shim, with every netlink error code the kernel sends us noted
    const real = loadNative();
    const codes: number[] = [];
    const native = {
      ...real,
      recv: (fd: number, buf: Buffer, flags?: number) => {
        const r = real.recv(fd, buf, flags);
        if (r >= 0) {
          for (const m of parseMessages(buf, r)) {
            const e = parseError(m);
            if (e !== null) codes.push(e.errno);
          }
        }
        return r;
      },
    };
    const fw = new NftablesFirewall({ table: 'inet/filter', logger, native });
    opened.push(fw);
    await fw.check();
    await fw.open(h6, 1);
    await new Promise((r) => setTimeout(r, 1300));
    assert.not.match(sh('nft list set inet filter ftp6proxy6'), /50001/, 'timed out');
    codes.length = 0;
    const from = logs.length;
    assert.is(await fw.close(h6), true);
    assert.equal(codes, [0], 'one ACK, no error (a failed batch is an aborted one)');
    assert.not.ok(logs.slice(from).some((l) => /destroy element/.test(l)), 'this kernel (6.3+) has destroy element');
    // and destroy removes an element that is there
    await fw.open(h6, 60);
    assert.match(sh('nft list set inet filter ftp6proxy6'), /50001/);
    assert.is(await fw.close(h6), true);
    assert.not.match(sh('nft list set inet filter ftp6proxy6'), /50001/);
    // the ruleset reloaded without the sets meanwhile: nothing left to remove
    await fw.open(h6, 60);
    sh('nft flush ruleset');
    assert.is(await fw.close(h6), true, 'no set, no element: success');
    await fw.shutdown();
  });

  test('openNow() is done on return (the ACK came with the send) and throws at once when the set is gone', async () => {
    reset(DESIGN_TABLE);
    const fw = mk('inet/filter');
    await fw.check();
    assert.is(fw.openNow(h6, 5), undefined, 'no promise: the kernel answered within sendto');
    assert.match(sh('nft list set inet filter ftp6proxy6'), /fd00:1::1 \. fd00:2::2 \. 50001 timeout 5s expires/);
    reset('table inet filter {\n set ftp6proxy6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }\n}');
    try {
      fw.openNow(h4, 5);
      assert.unreachable('openNow() into a missing set returned');
    } catch (e) {
      assert.instance(e, FtpProxyError);
      assert.is((e as FtpProxyError).code, 'ENOENT');
    }
    // open() keeps its promise contract: the same failure as a rejection
    let rejected = false;
    await fw.open(h4, 5).catch(() => (rejected = true));
    assert.ok(rejected);
    await fw.shutdown();
  });

  test('two holes with the same client, server and port share one element: it goes with the last of them', async () => {
    reset(DESIGN_TABLE);
    const fw = mk('inet/filter');
    const a: Hole = { ...h6, rule: 10, session: 1 };
    const b: Hole = { ...h6, rule: 11, session: 2 };
    await fw.open(a, 30);
    await fw.open(b, 30);
    await fw.open(b, 30); // renewed: still one user
    assert.is(await fw.close(a), true);
    assert.match(sh('nft list set inet filter ftp6proxy6'), /50001/, 'still there for the second session');
    assert.is(await fw.close(a), true, 'closing the same hole again changes nothing');
    assert.match(sh('nft list set inet filter ftp6proxy6'), /50001/);
    assert.is(await fw.close(b), true);
    assert.not.match(sh('nft list set inet filter ftp6proxy6'), /50001/);
    // after a sweep nothing is held for earlier holes
    await fw.open(a, 30);
    await fw.sweep();
    await fw.open(b, 30);
    assert.is(await fw.close(b), true);
    assert.not.match(sh('nft list set inet filter ftp6proxy6'), /50001/);
    await fw.shutdown();
  });

  test('an element expires after its timeout', async () => {
    reset(DESIGN_TABLE);
    const fw = mk('inet/filter');
    await fw.open(h4, 1);
    assert.match(sh('nft list set inet filter ftp6proxy4'), /50000/);
    await new Promise((r) => setTimeout(r, 1300));
    assert.not.match(sh('nft list set inet filter ftp6proxy4'), /50000/);
    assert.is(await fw.close(h4), true);
    await fw.shutdown();
  });

  test('sweep() empties both sets', async () => {
    reset(DESIGN_TABLE);
    sh(`nft add element inet filter ftp6proxy4 '{ 198.18.1.1 . 198.18.1.2 . 2000 timeout 60s, 198.18.1.3 . 198.18.1.4 . 3000 timeout 60s }'`);
    sh(`nft add element inet filter ftp6proxy6 '{ fd00::1 . fd00::2 . 4000 timeout 60s }'`);
    const fw = mk('inet/filter');
    await fw.sweep();
    assert.not.match(sh('nft list set inet filter ftp6proxy4'), /elements/);
    assert.not.match(sh('nft list set inet filter ftp6proxy6'), /elements/);
    await fw.sweep(); // empty already: still fine
    await fw.shutdown();
  });

  function tryConnect(host: string, port: number, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const s = net.connect({ host, port });
      const t = setTimeout(() => {
        s.destroy();
        resolve(false);
      }, ms);
      s.on('connect', () => {
        clearTimeout(t);
        s.destroy();
        resolve(true);
      });
      s.on('error', () => {
        clearTimeout(t);
        resolve(false);
      });
    });
  }

  test('the one-shot rule admits exactly one connection (ip and ip6)', async () => {
    // The documented one-shot lines, on loopback's output hook instead of forward.
    reset(`table inet filter {
      set ftp6proxy4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }
      set ftp6proxy6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }
      chain output { type filter hook output priority 0; policy accept;
        tcp dport 41000-41001 ct state established accept
        ip  saddr . ip  daddr . tcp dport @ftp6proxy4 ct state new delete @ftp6proxy4 { ip  saddr . ip  daddr . tcp dport } accept
        ip6 saddr . ip6 daddr . tcp dport @ftp6proxy6 ct state new delete @ftp6proxy6 { ip6 saddr . ip6 daddr . tcp dport } accept
        tcp dport 41000-41001 drop
      }
    }`);
    const fw = mk('inet/filter');
    await fw.check();
    for (const [fam, host, port] of [[4, '127.0.0.1', 41000], [6, '::1', 41001]] as const) {
      const srv = net.createServer((c) => c.destroy());
      await new Promise<void>((r) => srv.listen(port, host, () => r()));
      const hole: Hole = { family: fam, src: host, dst: host, port, rule: 1, session: 1 };
      assert.is(await tryConnect(host, port, 400), false, `IPv${fam}: no hole, no connection`);
      await fw.open(hole, 10);
      assert.is(await tryConnect(host, port, 1000), true, `IPv${fam}: first connection through the hole`);
      assert.not.match(sh(`nft list set inet filter ${fam === 4 ? 'ftp6proxy4' : 'ftp6proxy6'}`), new RegExp(`${port}`), 'element deleted on use');
      assert.is(await tryConnect(host, port, 400), false, `IPv${fam}: second connection refused`);
      assert.is(await fw.close(hole), true, 'close after one-shot use: ENOENT is success');
      srv.close();
    }
    await fw.shutdown();
  });

  test.after(async () => {
    for (const fw of opened) await fw.shutdown();
    sh('nft flush ruleset');
  });

  test.run();
}
