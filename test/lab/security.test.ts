/**
 * Hostile control sessions against the real daemon in the lab (issue 7):
 *
 * - bounce: PORT/EPRT/LPRT naming the victim namespace, and a fake server's
 *   227/228 naming another host behind the gateway; the named port must stay
 *   unreachable, tested with a real TCP connection attempt that would
 *   succeed if a hole were there (a listener waits on it);
 * - privileged ports: PORT 80 and EPRT 1023 naming the client itself;
 * - hole expiry: reachable right after the announcement, unreachable after -t.
 *
 * Every negative case has a positive twin in the same run (the same probe
 * reaching a legitimately announced port), so a broken probe cannot make
 * the negative cases pass.
 *
 * Root only: prints SKIP with the reason otherwise (a failure under CI=true).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Lab, cleanupPrefix, labCannotRun, preflight, withLab } from './lab';
import { Daemon, count, ftpClientScript, listen, probe, sleep, startDaemon, startFakeServer } from '../fuzz/labkit';

const PREFIX = 'f6sec';
const QUEUE = 10021;
const TIMEOUT_S = 2;
const why = preflight();

/** A host behind the gateway on the server side that is not the control server. */
const OTHER = { 4: '198.18.2.11', 6: 'fd00:5e::11' } as const;

interface Case {
  name: string;
  family: 4 | 6;
  /** control lines the client sends after USER */
  lines: string[];
  /** where the listener sits and what the probe connects to */
  listenNs: 'client' | 'victim' | 'server';
  host: string;
  port: number;
  /** which namespace makes the data connection attempt */
  from: 'client' | 'server';
  expect: 'OPEN' | 'TIMEOUT';
  /** daemon log line that says the announcement was seen */
  seen: RegExp;
}

function portArgs(addr: string, port: number): string {
  return `${addr.split('.').join(',')},${port >> 8},${port & 0xff}`;
}

function cases(lab: Lab): Case[] {
  const a = lab.addr;
  const v6bytes = (s: string): string => {
    // fd00:c1::20 / fd00:5e::11 style: expand for LPRT/228
    const [h, t] = s.split('::');
    const hw = h.split(':');
    const tw = t.split(':');
    const words = [...hw, ...Array<string>(8 - hw.length - tw.length).fill('0'), ...tw].map((w) => parseInt(w, 16));
    return words.flatMap((w) => [w >> 8, w & 0xff]).join(',');
  };
  return [
    // positive twins: the probe method works
    { name: 'control: PORT naming the client opens', family: 4, lines: [`PORT ${portArgs(a.client[4], 50010)}`], listenNs: 'client', host: a.client[4], port: 50010, from: 'server', expect: 'OPEN', seen: /hole \d+ open for PORT/ },
    { name: 'control: EPRT naming the client opens (IPv6)', family: 6, lines: [`EPRT |2|${a.client[6]}|50011|`], listenNs: 'client', host: a.client[6], port: 50011, from: 'server', expect: 'OPEN', seen: /hole \d+ open for EPRT/ },
    { name: 'control: 227 naming the server opens', family: 4, lines: [`XREP 227 Entering Passive Mode (${portArgs(a.server[4], 50012)})`, 'PASV'], listenNs: 'server', host: a.server[4], port: 50012, from: 'client', expect: 'OPEN', seen: /hole \d+ open for 227/ },
    // bounce attempts
    { name: 'bounce: PORT naming the victim', family: 4, lines: [`PORT ${portArgs(a.victim[4], 50020)}`], listenNs: 'victim', host: a.victim[4], port: 50020, from: 'server', expect: 'TIMEOUT', seen: /PORT from client refused/ },
    { name: 'bounce: EPRT naming the victim (IPv6)', family: 6, lines: [`EPRT |2|${a.victim[6]}|50021|`], listenNs: 'victim', host: a.victim[6], port: 50021, from: 'server', expect: 'TIMEOUT', seen: /EPRT from client refused/ },
    { name: 'bounce: EPRT |1| naming the victim', family: 4, lines: [`eprt |1|${a.victim[4]}|50022|`], listenNs: 'victim', host: a.victim[4], port: 50022, from: 'server', expect: 'TIMEOUT', seen: /EPRT from client refused/ },
    { name: 'bounce: LPRT naming the victim (IPv6)', family: 6, lines: [`LPRT 6,16,${v6bytes(a.victim[6])},2,${50023 >> 8},${50023 & 0xff}`], listenNs: 'victim', host: a.victim[6], port: 50023, from: 'server', expect: 'TIMEOUT', seen: /LPRT from client refused/ },
    { name: 'bounce: 227 naming another host', family: 4, lines: [`XREP 227 Entering Passive Mode (${portArgs(OTHER[4], 50024)})`, 'PASV'], listenNs: 'server', host: OTHER[4], port: 50024, from: 'client', expect: 'TIMEOUT', seen: /227 from server refused/ },
    { name: 'bounce: 228 naming another host (IPv6)', family: 6, lines: [`XREP 228 Entering Long Passive Mode (6,16,${v6bytes(OTHER[6])},2,${50025 >> 8},${50025 & 0xff})`, 'LPSV'], listenNs: 'server', host: OTHER[6], port: 50025, from: 'client', expect: 'TIMEOUT', seen: /228 from server refused/ },
    // privileged ports, naming the legitimate peer
    { name: 'privileged: PORT 80 naming the client', family: 4, lines: [`PORT ${portArgs(a.client[4], 80)}`], listenNs: 'client', host: a.client[4], port: 80, from: 'server', expect: 'TIMEOUT', seen: /PORT from client refused/ },
    { name: 'privileged: EPRT 1023 naming the client (IPv6)', family: 6, lines: [`EPRT |2|${a.client[6]}|1023|`], listenNs: 'client', host: a.client[6], port: 1023, from: 'server', expect: 'TIMEOUT', seen: /EPRT from client refused/ },
    { name: 'privileged: 227 naming the server port 22', family: 4, lines: [`XREP 227 Entering Passive Mode (${portArgs(a.server[4], 22)})`, 'PASV'], listenNs: 'server', host: a.server[4], port: 22, from: 'client', expect: 'TIMEOUT', seen: /227 from server refused/ },
  ];
}

/** Run one control session; resolve once the daemon logged the announcement (or after 5 s). */
async function announce(lab: Lab, d: Daemon, family: 4 | 6, lines: string[], seen: RegExp): Promise<boolean> {
  const before = count(d.log(), seen);
  const client = lab.spawnIn(lab.ns.client, [process.execPath, '-e', ftpClientScript(lab.addr.server[family], ['USER anonymous', ...lines], 6000)]);
  const end = Date.now() + 5000;
  while (Date.now() < end && count(d.log(), seen) <= before) await sleep(20);
  void client;
  return count(d.log(), seen) > before;
}

if (why !== null) {
  labCannotRun('test/lab/security.test', why);
} else {
  test('bounce attempts, privileged ports and hole expiry against the real daemon', async () => {
    const t0 = Date.now();
    await withLab({ prefix: PREFIX, policy: 'deny', queueNum: QUEUE }, async (lab) => {
      lab.run(lab.ns.server, ['ip', 'addr', 'add', `${OTHER[4]}/24`, 'dev', 'eth0']);
      lab.run(lab.ns.server, ['ip', 'addr', 'add', `${OTHER[6]}/64`, 'dev', 'eth0', 'nodad']);
      await startFakeServer(lab);
      const d = await startDaemon(lab, QUEUE, ['-t', String(TIMEOUT_S)]);
      const results: string[] = [];
      for (const c of cases(lab)) {
        const l = await listen(lab, lab.ns[c.listenNs], c.host, c.port);
        try {
          const saw = await announce(lab, d, c.family, c.lines, c.seen);
          assert.ok(saw, `${c.name}: the daemon did not log ${c.seen} (log tail: ${d.log().slice(-600)})`);
          if (c.expect === 'TIMEOUT') {
            const sets = lab.run(lab.ns.gateway, ['nft', 'list', 'ruleset']).stdout;
            assert.not.ok(sets.includes(`. ${c.port} `), `${c.name}: a set element for port ${c.port}:\n${sets}`);
          }
          const got = await probe(lab, lab.ns[c.from], c.host, c.port, 1500, c.from === 'server' ? lab.addr.server[c.family] : undefined);
          results.push(`${c.expect === got ? 'ok  ' : 'FAIL'} ${c.name}: ${got}`);
          assert.is(got, c.expect, `${c.name}: connection ${c.from} -> [${c.host}]:${c.port}`);
          if (c.expect === 'TIMEOUT') assert.is(l.accepted(), 0, `${c.name}: the listener saw a connection`);
        } finally {
          l.stop();
        }
      }

      // Hole expiry: reachable at once, unreachable after -t.
      const port = 50030;
      const l = await listen(lab, lab.ns.client, lab.addr.client[4], port);
      try {
        assert.ok(await announce(lab, d, 4, [`PORT ${portArgs(lab.addr.client[4], port)}`], /hole \d+ open for PORT/));
        const first = await probe(lab, lab.ns.server, lab.addr.client[4], port, 1500, lab.addr.server[4]);
        assert.is(first, 'OPEN', 'reachable right after the announcement');
        await sleep(TIMEOUT_S * 1000 + 1200);
        const later = await probe(lab, lab.ns.server, lab.addr.client[4], port, 1500, lab.addr.server[4]);
        assert.is(later, 'TIMEOUT', `unreachable after -t ${TIMEOUT_S}`);
        results.push(`ok   expiry: OPEN at once, ${later} after ${TIMEOUT_S}s + 1.2s`);
      } finally {
        l.stop();
      }
      assert.not.ok(d.exited(), 'the daemon is still running');
      const refused = count(d.log(), /refused/);
      console.log(results.join('\n'));
      console.log(`security: ${cases(lab).length + 1} cases, ${refused} refusals logged, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    });
  });

  test.after(() => {
    cleanupPrefix(PREFIX);
  });
  test.run();
}
