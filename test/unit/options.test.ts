import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as path from 'path';
import { getopt, parseOptions, usageText, UsageError, defaultsFor } from '../../src/options';

const root = path.resolve(__dirname, '..', '..', '..');
const stripVersion = (s: string) => s.replace(/^ftp6proxy V[0-9.]+ /, 'ftp6proxy VX ');

test('-h text of ipfw equals legacy V0.3 text apart from the version', () => {
  const legacy = fs.readFileSync(path.join(root, 'legacy', 'usage-v0.3-ipfw.txt'), 'utf8');
  assert.is(stripVersion(usageText('ipfw')), stripVersion(legacy));
});

test('-h text of netgraph equals legacy V0.4 text apart from the version', () => {
  const legacy = fs.readFileSync(path.join(root, 'legacy', 'usage-v0.4-netgraph.txt'), 'utf8');
  assert.is(stripVersion(usageText('netgraph')), stripVersion(legacy));
});

test('pf and nftables texts differ from ipfw only in module and -p lines', () => {
  const ipfw = usageText('ipfw').split('\n');
  for (const m of ['pf', 'nftables'] as const) {
    const other = usageText(m).split('\n');
    assert.is(other.length, ipfw.length);
    const diff = other.map((l, i) => (l === ipfw[i] ? -1 : i)).filter((i) => i >= 0);
    assert.ok(diff.every((i) => other[i].startsWith('compiled-in firewall module: ') || other[i].startsWith('  -p <')), m);
    assert.ok(other.includes(`compiled-in firewall module: ${m}`));
  }
});

test('getopt: clusters, attached values, -- and first operand end options', () => {
  assert.equal(getopt(['-dd', '-b64000', '-c', '5']).opts, [['d', true], ['d', true], ['b', '64000'], ['c', '5']]);
  assert.equal(getopt(['-db', '1', '--', '-c']).operands, ['-c']);
  assert.equal(getopt(['-d', 'x', '-c', '1']).operands, ['x', '-c', '1']);
  assert.equal(getopt(['-']).operands, ['-']);
});

test('defaults are those of the usage text', () => {
  const o = parseOptions([], 'ipfw');
  assert.equal(o, defaultsFor('ipfw'));
  assert.is(o.base, 64000);
  assert.is(o.count, 100);
  assert.is(o.facility, 'daemon');
  assert.is(o.pidfile, '/var/run/ftp6proxy.pid');
  assert.is(o.port, 10004);
  assert.is(o.rootDir, '/var/empty');
  assert.is(o.timeout, 2);
  assert.is(o.user, 'proxy');
  assert.is(parseOptions([], 'nftables').anchor, 'inet/filter');
  assert.is(parseOptions(['-m', 'pf'], 'nftables').anchor, 'ftp6proxy');
});

test('values are taken', () => {
  const o = parseOptions(['-m', 'ipfw', '-b64100', '-c', '50', '-dd', '-f', 'local3', '-i', '/tmp/p', '-j', '100', '-p', '8668', '-r', '/tmp', '-t', '5', '-u', 'nobody'], 'nftables');
  assert.equal({ ...o }, { ...defaultsFor('ipfw'), base: 64100, count: 50, debug: 2, facility: 'local3', pidfile: '/tmp/p', target: 100, port: 8668, rootDir: '/tmp', timeout: 5, user: 'nobody' });
  assert.is(parseOptions(['-m', 'pf', '-q', 'ftpdata', '-a', 'ftp6proxy'], 'ipfw').queue, 'ftpdata');
  assert.is(parseOptions(['-a', 'ip6/fw'], 'nftables').anchor, 'ip6/fw');
  assert.is(parseOptions(['-n'], 'nftables').shadow, true);
});

const refused: Array<[string[], RegExp, string?]> = [
  [['-x'], /illegal option -- x/],
  [['-dz'], /illegal option -- z/],
  [['-b'], /option requires an argument -- b/],
  [['-b', 'abc'], /not a number/],
  [['-b', '-5'], /not a number/],
  [['-c', '0'], /out of range/],
  [['-b', '65000', '-c', '600'], /beyond rule 65534/],
  [['-b', '65436', '-c', '100'], /beyond/],
  [['-t', '0'], /out of range/],
  [['-t', '2s'], /not a number/],
  [['-f', 'local9'], /unknown syslog facility/],
  [['-m', 'iptables'], /unknown module/],
  [['-p', '0'], /out of range/],
  [['-p', '65536'], /out of range/],
  [['stray'], /unexpected argument/],
  [['-d', '--', 'stray'], /unexpected argument/],
  [['-ddd'], /at most twice/],
  [['-q', 'prio'], /does not apply to module ipfw/, 'ipfw'],
  [['-j', '100'], /does not apply to module nftables/, 'nftables'],
  [['-j', '100', '-m', 'pf'], /does not apply to module pf/],
  [['-a', 'x'], /does not apply to module ipfw/, 'ipfw'],
  [['-q', 'x'], /does not apply to module nftables/, 'nftables'],
  [['-j', '64050'], /inside the hole pool/, 'ipfw'],
  [['-a', 'filter'], /family\/table/, 'nftables'],
  [['-a', 'bridge/filter'], /family\/table/, 'nftables'],
  [['-m', 'pf', '-a', 'ftp6proxy; pass all'], /not a pf anchor/],
  [['-m', 'pf', '-q', 'a b'], /not a pf queue/],
  [['-u', 'a:b'], /not a user name/],
  [['-i', ''], /empty path/],
];

for (const [argv, re, mod] of refused) {
  test(`refused: ${argv.join(' ')}`, () => {
    try {
      parseOptions(argv, (mod ?? 'ipfw') as 'ipfw' | 'nftables');
      assert.unreachable('accepted');
    } catch (e) {
      assert.instance(e, UsageError);
      assert.match((e as Error).message, re);
    }
  });
}

test('-h wins over other values and picks the module', () => {
  const o = parseOptions(['-h', '-m', 'netgraph', '-t', '0'], 'ipfw');
  assert.is(o.help, true);
  assert.is(o.module, 'netgraph');
});


test('-s: one conntrack mark bit, nftables only, not with -n', () => {
  assert.is(parseOptions(['-m', 'nftables', '-s', '0x100000'], 'nftables').seeAllMark, 0x100000);
  assert.is(parseOptions(['-m', 'nftables', '-s', '1048576'], 'nftables').seeAllMark, 0x100000);
  assert.is(parseOptions(['-m', 'nftables', '-s0x80000000'], 'nftables').seeAllMark, 0x80000000);
  assert.is(parseOptions(['-m', 'nftables'], 'nftables').seeAllMark, 0);
  for (const bad of ['0', '0x3', '6', 'x', '0x100000000', '-1', '0x']) {
    assert.throws(() => parseOptions(['-m', 'nftables', '-s', bad], 'nftables'), /-s: .* is not a single conntrack mark bit/, bad);
  }
  assert.throws(() => parseOptions(['-m', 'ipfw', '-s', '0x10'], 'ipfw'), /-s \(selective queueing.*\) does not apply to module ipfw/);
  assert.throws(() => parseOptions(['-m', 'nftables', '-n', '-s', '0x10'], 'nftables'), /-s and -n do not go together/);
});

test.run();

test('-w: rehearsals every 2 ms by default with -s only; 0 to 1000 ms; checked', () => {
  const n = (argv: string[], m: 'nftables' | 'ipfw' = 'nftables') => parseOptions(argv, m).warmMs;
  assert.is(n([]), 0, 'full queueing: the EPSV wakes the daemon anyway');
  assert.is(n(['-s', '0x100000']), 2);
  assert.is(n(['-s', '0x100000', '-w', '0']), 0);
  assert.is(n(['-w', '5']), 5, 'allowed without -s, when asked');
  assert.is(n(['-w1']), 1);
  assert.is(n(['-w', '7'], 'ipfw'), 7);
  assert.is(n([], 'ipfw'), 0);
  assert.is(n(['-n', '-w', '3']), 3);
  for (const bad of ['1001', 'x', '-1', '']) {
    assert.throws(() => parseOptions(['-w', bad], 'nftables'), (e: unknown) => e instanceof UsageError && /^-w: /.test((e as Error).message), bad);
  }
});
