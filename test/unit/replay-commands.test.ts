/**
 * ftp6proxy-replay --commands over a committed real trace, per module: each
 * hole is a numbered add (ipfw) or anchor load (pf) and, -t seconds later, a
 * delete or flush, with the trace's addresses and port, honouring -j, -q,
 * -b, -c, -t and -a.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as path from 'path';
import { parseCommandLine } from '../../src/options';
import { replay } from '../../src/replay';

const TRACE = path.resolve(__dirname, '..', '..', '..', 'compat', 'traces', 'v4-port-lftp-vsftpd-mget.pcap');
const EXPECT = fs.readFileSync(TRACE.replace(/\.pcap$/, '.expect'), 'utf8').split('\n')
  .filter((l) => l.startsWith('open ')).map((l) => l.split(/\s+/).slice(1, 4));

async function commands(argv: string[]): Promise<Array<{ t: number; cmd: string; stdin: string[] }>> {
  const { options } = parseCommandLine(argv, 'ipfw');
  const r = await replay({ options, commands: true, pcap: fs.readFileSync(TRACE) });
  assert.is(r.exitCode, 0);
  const out: Array<{ t: number; cmd: string; stdin: string[] }> = [];
  let t = NaN;
  for (const l of r.lines) {
    if (/^# \d+\.\d{3}$/.test(l)) t = Number(l.slice(2));
    else if (l.startsWith('$ ')) out.push({ t, cmd: l.slice(2), stdin: [] });
    else if (l.startsWith('< ')) out[out.length - 1].stdin.push(l.slice(2));
    else assert.ok(l.startsWith('#'), `unexpected line ${l}`);
  }
  return out;
}

test('the trace announces several holes (PORT, IPv4)', () => {
  assert.ok(EXPECT.length >= 3, JSON.stringify(EXPECT));
});

for (const module of ['ipfw', 'netgraph'] as const) {
  test(`${module}: numbered add with -b and -j, delete after -t`, async () => {
    const cmds = await commands(['-m', module, '-b', '1000', '-c', '20', '-j', '500', '-t', '5']);
    assert.ok(cmds.some((c) => c.cmd === 'ipfw -q delete 1000-1019'), 'sweep of the -b/-c range');
    EXPECT.forEach(([src, dst, port], i) => {
      const add = cmds.find((c) => c.cmd === `ipfw -q add ${1000 + i} call 500 tcp from ${src} to ${dst} ${port} setup keep-state`);
      assert.ok(add, `add ${1000 + i} for ${src} ${dst} ${port}:\n${cmds.map((c) => c.cmd).join('\n')}`);
      const del = cmds.find((c) => c.cmd === `ipfw -q delete ${1000 + i}` && c.t > add!.t);
      assert.ok(del, `delete ${1000 + i}`);
      assert.is((del!.t - add!.t).toFixed(3), '5.000', '-t 5');
    });
  });
}

test('ipfw: -c bounds the pool', async () => {
  const cmds = await commands(['-m', 'ipfw', '-b', '2000', '-c', '2', '-t', '30']);
  const adds = cmds.filter((c) => c.cmd.startsWith('ipfw -q add '));
  assert.is(adds.length, 2, 'only two rules with -c 2 while every hole is still open');
  assert.ok(adds.every((c) => / allow tcp from /.test(c.cmd)), 'allow without -j');
});

test('pf: one anchor per hole below -a, both directions, -q, flushed after -t', async () => {
  const cmds = await commands(['-m', 'pf', '-a', 'gw/ftp', '-b', '300', '-q', 'ftpdata', '-t', '3']);
  EXPECT.forEach(([src, dst, port], i) => {
    const load = cmds.find((c) => c.cmd === `pfctl -a gw/ftp/${300 + i} -f -`);
    assert.ok(load, `load gw/ftp/${300 + i}`);
    assert.equal(load!.stdin, [
      `pass in quick inet proto tcp from ${src} to ${dst} port = ${port} flags S/SA keep state (max 1) queue ftpdata`,
      `pass out quick inet proto tcp from ${src} to ${dst} port = ${port} flags S/SA keep state (max 1) queue ftpdata`,
    ]);
    const flush = cmds.find((c) => c.cmd === `pfctl -a gw/ftp/${300 + i} -F rules` && c.t > load!.t);
    assert.ok(flush, `flush gw/ftp/${300 + i}`);
    assert.is((flush!.t - load!.t).toFixed(3), '3.000', '-t 3');
  });
});

test.run();
