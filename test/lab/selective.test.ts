/**
 * Selective queueing (ftp6proxy -s, src/firewall/selective.ts) in the lab:
 * the kernel queues only the control packets that may matter.
 *
 * - Real transfers (three server programs, four clients, both families,
 *   passive and active) pass, and far fewer packets are queued than with
 *   the DESIGN.md rules (the kernel's own count, id_sequence of
 *   /proc/net/netfilter/nfnetlink_queue).
 * - A scripted server and client split announcements across segments where
 *   only the "ends inside a line" mark makes the kernel queue the rest;
 *   the hole opens.
 * - A fake 229 inside a multi-line reply whose other lines the kernel did
 *   not match opens nothing, and the real 229 after the reply's end (a
 *   segment queued only because the daemon asked for every server packet)
 *   opens its hole.
 * - With these rules and the data-only ones (neither queues SYN or FIN), a
 *   client that reuses its port at once still gets its holes.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { labCannotRun, nfqueueStats, preflight, serverAvailable, withLab, Lab, SELECTIVE_BITS, ServerKind } from './lab';
import { probe, sleep, startDaemon, stopDaemon, transferMatrix } from '../fuzz/labkit';

const Q = 10044;
const why = preflight();
const SEE_ALL = `0x${SELECTIVE_BITS.seeAll.toString(16)}`;

/** Packets the kernel has queued to Q so far. */
function queuedSoFar(lab: Lab): number {
  return nfqueueStats(lab).get(Q)?.idSequence ?? 0;
}

/**
 * A fake FTP server: greets, and answers a command line found in `script`
 * with its chunks, each written on its own (Nagle off, 80 ms apart, so each
 * is one TCP segment); any other line gets "200 ok".
 */
function chunkServerScript(script: Record<string, string[]>): string {
  return `const S=${JSON.stringify(script)};` +
    `const srv=require('net').createServer((c)=>{c.setNoDelay(true);c.write('220 fake\\r\\n');let b='';c.setEncoding('latin1');` +
    `c.on('data',(d)=>{b+=d;let i;while((i=b.indexOf('\\n'))>=0){const l=b.slice(0,i).trim();b=b.slice(i+1);` +
    `const ch=S[l.toUpperCase()];if(ch){ch.forEach((x,k)=>setTimeout(()=>c.write(x),80*k))}` +
    `else if(l.toUpperCase()==='QUIT')c.end('221 bye\\r\\n');else c.write('200 ok\\r\\n')}});c.on('error',()=>{})});` +
    `srv.listen({host:'::',port:21,ipv6Only:false},()=>console.log('LISTENING'));`;
}

/**
 * A scripted client: connects, and after each complete reply ("nnn ") sends
 * the next entry of `sends`, an array of chunks written 80 ms apart (one
 * segment each).  Prints the reply lines; stays connected holdMs at the end.
 */
function chunkClientScript(host: string, sends: string[][], holdMs: number): string {
  return `const s=require('net').connect({host:${JSON.stringify(host)},port:21});s.setNoDelay(true);let b='';const q=${JSON.stringify(sends)};` +
    `s.setEncoding('latin1');s.on('data',(d)=>{b+=d;let i;while((i=b.indexOf('\\n'))>=0){const l=b.slice(0,i).replace(/\\r$/,'');b=b.slice(i+1);console.log('< '+l);` +
    `if(/^\\d{3} /.test(l)){const n=q.shift();if(n!==undefined){n.forEach((x,k)=>setTimeout(()=>s.write(x),80*k))}` +
    `else{console.log('DONE');setTimeout(()=>{s.end();process.exit(0)},${holdMs})}}}});` +
    `s.on('error',(e)=>{console.log('ERROR '+e.code);process.exit(0)});setTimeout(()=>process.exit(0),${holdMs + 15000});`;
}

async function runScripted(lab: Lab, server: Record<string, string[]>, family: 4 | 6, sends: string[][], check: () => Promise<void>): Promise<string> {
  const srv = lab.spawnIn(lab.ns.server, [process.execPath, '-e', chunkServerScript(server)]);
  let sout = '';
  srv.stdout?.setEncoding('utf8').on('data', (d: string) => (sout += d));
  for (let i = 0; i < 100 && !sout.includes('LISTENING'); i++) await sleep(20);
  assert.ok(sout.includes('LISTENING'), 'scripted server started');
  const cli = lab.spawnIn(lab.ns.client, [process.execPath, '-e', chunkClientScript(lab.addr.server[family], sends, 4000)]);
  let out = '';
  cli.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  try {
    for (let i = 0; i < 300 && !out.includes('DONE') && !out.includes('ERROR'); i++) await sleep(20);
    assert.ok(out.includes('DONE'), `scripted client finished:\n${out}`);
    await check();
  } finally {
    cli.kill('SIGKILL');
    srv.kill('SIGKILL');
    await sleep(100);
  }
  return out;
}

const passed = (r: string): boolean => r === 'OPEN' || r === 'REFUSED';


if (why !== null) {
  labCannotRun('test/lab/selective.test', why);
} else {
  test('selective ruleset: real transfers pass, and few packets are queued', async () => {
    await withLab({ prefix: 'f6sel', policy: 'deny', queueNum: Q }, async (lab) => {
      lab.setPolicy('deny', Q, { selective: true });
      const d = await startDaemon(lab, Q, ['-s', SEE_ALL]);
      const servers = (['vsftpd', 'pyftpdlib', 'pure-ftpd'] as ServerKind[]).filter((s) => serverAvailable(s) === null);
      assert.ok(servers.length >= 2, `at least two server programs: ${servers.join(', ')}`);
      let n = 0;
      try {
        for (const kind of servers) {
          const srv = await lab.startServer(kind);
          try {
            n += (await transferMatrix(lab, kind, d, ', selective')).length;
            if (kind === 'vsftpd') {
              // Packets queued per curl EPSV transfer: selective, then the
              // DESIGN.md rules, same daemon, same server.
              const per = async (): Promise<number> => {
                const before = queuedSoFar(lab);
                for (let i = 0; i < 5; i++) {
                  const r = await lab.runClient({ client: 'curl', mode: 'epsv', family: 6 });
                  assert.ok(r.ok, r.reason);
                }
                return (queuedSoFar(lab) - before) / 5;
              };
              const sel = await per();
              lab.setPolicy('deny', Q);
              const full = await per();
              lab.setPolicy('deny', Q, { selective: true });
              console.log(`  packets queued per curl EPSV transfer: ${sel} selective, ${full} with the DESIGN.md rules`);
              assert.ok(sel >= 1, 'the 229 reply is queued');
              assert.ok(sel * 3 <= full, `selective queues at most a third: ${sel} vs ${full}`);
            }
          } finally {
            await srv.stop();
          }
        }
        console.log(`  ${n} transfers passed through the selective ruleset`);
        assert.ok(n >= 30);
        assert.match(d.log(), /selective queueing \(ct mark 0x100000\), packet path kept warm every 2 ms while active/);
        // -s rehearses the 229 by default (src/warm.ts): in the process only
        const sets = lab.run(lab.ns.gateway, ['nft', 'list', 'set', 'inet', 'filter', 'ftp6proxy6']).stdout;
        assert.not.match(sets, /2001:db8/, 'no rehearsal reached the kernel');
        d.proc.kill('SIGUSR1');
        await d.waitFor(/rehearsals/, 3000);
        const m = /, (\d+) rehearsals/.exec(d.log());
        assert.ok(m !== null && Number(m[1]) > 100, `rehearsals ran while transfers came: ${m?.[1]}`);
      } finally {
        await stopDaemon(d);
      }
    });
  });

  test('data-only and selective rules: a client reusing its port at once still gets its holes', async () => {
    // These rules keep SYN and FIN from the daemon.  curl with --local-port
    // reuses the control connection's port for the next transfer within
    // milliseconds, so the new connection's sequence numbers lie just past
    // the old ones: the daemon must take the server's 221 as the old
    // session's end, or it waits for a gap and misses the 229.
    await withLab({ prefix: 'f6reu', policy: 'deny', queueNum: Q }, async (lab) => {
      const srv = await lab.startServer('vsftpd');
      const url = `ftp://[${lab.addr.server[6]}]/${lab.files.small.name}`;
      try {
        for (const rules of ['data-only', 'selective'] as const) {
          lab.setPolicy('deny', Q, rules === 'selective' ? { selective: true } : { dataOnly: true });
          const d = await startDaemon(lab, Q, rules === 'selective' ? ['-s', SEE_ALL] : []);
          try {
            const ports: number[] = [];
            for (let i = 0; i < 6; i++) {
              const r = await lab.runAsync(lab.ns.client, ['curl', '-sS', '--local-port', '41000-41010', '--connect-timeout', '4', '-m', '8',
                '-w', '%{local_port}', '-o', '/dev/null', url], { timeoutMs: 15000 });
              assert.is(r.status, 0, `${rules}, transfer ${i + 1}: ${r.stderr}\n${d.log().slice(-2000)}`);
              ports.push(Number(r.stdout.trim()));
            }
            assert.ok(new Set(ports).size < ports.length, `${rules}: a port was reused (${ports.join(', ')})`);
            if (rules === 'data-only') assert.match(d.log(), /session end: the server closes it \(221\)/);
          } finally {
            await stopDaemon(d);
          }
        }
      } finally {
        await srv.stop();
      }
    });
  });

  test('selective ruleset: split announcements are queued whole, a 229 inside a multi-line reply opens nothing', async () => {
    await withLab({ prefix: 'f6sls', policy: 'deny', queueNum: Q }, async (lab) => {
      lab.setPolicy('deny', Q, { selective: true });
      const d = await startDaemon(lab, Q, ['-s', SEE_ALL, '-t', '15']);
      try {
        const s6 = lab.addr.server[6];
        const server6: Record<string, string[]> = {
          // "2" alone: no pattern, only "ends inside a line" queues it and the rest
          'SITE SPLIT2': ['2', '29 Entering Extended Passive Mode (|||50101|)\r\n'],
          'SITE SPLIT3': ['229 Entering Extended', ' Passive Mode (|||', '50102|)\r\n'],
          // the end line has no pattern: queued only because the daemon asked for all
          'STAT': ['211-Status of fake\r\n', ' a listing line\r\n', ' 229 Entering Extended Passive Mode (|||50103|)\r\n', '211 End\r\n'],
          'EPSV': ['229 Entering Extended Passive Mode (|||50104|)\r\n'],
          'SITE PIPE': ['200 OK\r\n229 Entering Extended Passive Mode (|||50105|)\r\n'],
        };
        await runScripted(lab, server6, 6, [['USER anonymous\r\n'], ['SITE SPLIT2\r\n'], ['SITE SPLIT3\r\n'], ['STAT\r\n'], ['EPSV\r\n'], ['SITE PIPE\r\n']], async () => {
          for (const [port, want] of [[50101, true], [50102, true], [50103, false], [50104, true], [50105, true]] as const) {
            const r = await probe(lab, lab.ns.client, s6, port, 1500);
            assert.is(passed(r), want, `client -> [${s6}]:${port}: ${r}\n${d.log().slice(-3000)}`);
          }
          // The kernel set the see-all bit on "211-"; the daemon's verdict on
          // "211 End" cleared it, and no split line is pending.
          const ct = lab.run(lab.ns.gateway, ['conntrack', '-L', '-f', 'ipv6', '-p', 'tcp', '--dport', '21']);
          const marks = [...`${ct.stdout}`.matchAll(/mark=(\d+)/g)].map((m) => Number(m[1]));
          assert.ok(marks.length >= 1, `conntrack shows the control connection: ${ct.stdout}${ct.stderr}`);
          const ours = SELECTIVE_BITS.seeAll | SELECTIVE_BITS.partialClient | SELECTIVE_BITS.partialServer;
          for (const m of marks) assert.is(m & ours, 0, `mark 0x${m.toString(16)} after the replies`);
        });
        // Active mode, the client's command split with no pattern in its first segment.
        const c4 = lab.addr.client[4];
        const port = 50106;
        const portLine = `${c4.replace(/\./g, ',')},${port >> 8},${port & 0xff}`;
        await runScripted(lab, {}, 4, [['USER anonymous\r\n'], ['P', `ORT ${portLine}\r\n`], ['EP', `RT |1|${c4}|50107|\r\n`]], async () => {
          for (const p of [port, 50107]) {
            const r = await probe(lab, lab.ns.server, c4, p, 1500, lab.addr.server[4]);
            assert.ok(passed(r), `server -> ${c4}:${p}: ${r}\n${d.log().slice(-3000)}`);
          }
        });
        assert.not.match(d.log(), /50103/, 'the 229 inside the multi-line reply was never taken for one');
      } finally {
        await stopDaemon(d);
      }
    });
  });
}

test.run();
