/**
 * The compat suite and ftp6proxy-compat's pure parts: the unified diff, the
 * .expect check, sh word splitting, the flags and rc.conf checks, the
 * firewall listing parsers of `observe`, and the whole suite over the
 * committed corpus, once as it is and once with deliberately broken parsers
 * (which must make it fail).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  checkExpectation, checkFlags, checkRcConf, compatMain, compareHoles, openedHoles, parseExpect,
  parseIpfwShow, parseNftSetJson, parsePfRules, parseRcConf, shellWords, SnapshotDiffer, snapshot, unifiedDiff,
} from '../../src/compat';
import { runCompat } from '../../compat/run';
import * as ftp from '../../src/ftp';
import type { ParseResult } from '../../src/ftp';

const ROOT = path.resolve(__dirname, '../../..');

// ---- unified diff ---------------------------------------------------------------

test('unifiedDiff: equal inputs give nothing', () => {
  assert.equal(unifiedDiff(['a', 'b'], ['a', 'b'], 'x', 'y'), []);
  assert.equal(unifiedDiff([], [], 'x', 'y'), []);
});

test('unifiedDiff: hunks as diff -u writes them', () => {
  const table: Array<[string[], string[], string[]]> = [
    [['a', 'b', 'c'], ['a', 'B', 'c'], ['--- x', '+++ y', '@@ -1,3 +1,3 @@', ' a', '-b', '+B', ' c']],
    [[], ['n'], ['--- x', '+++ y', '@@ -0,0 +1,1 @@', '+n']],
    [['o'], [], ['--- x', '+++ y', '@@ -1,1 +0,0 @@', '-o']],
    // changes 8 lines apart with context 3: two hunks
    [['1', '2', '3', '4', '5', '6', '7', '8', '9', '10'], ['X', '2', '3', '4', '5', '6', '7', '8', '9', 'Y'],
      ['--- x', '+++ y', '@@ -1,4 +1,4 @@', '-1', '+X', ' 2', ' 3', ' 4', '@@ -7,4 +7,4 @@', ' 7', ' 8', ' 9', '-10', '+Y']],
  ];
  for (const [a, b, want] of table) assert.equal(unifiedDiff(a, b, 'x', 'y'), want, JSON.stringify([a, b]));
});

test('unifiedDiff: applying the hunks to a gives b', () => {
  const a = ['t', 'o', 'p', 'q', 'r', 's', 'u', 'v', 'w', 'x', 'y'];
  const b = ['t', 'p', 'q', 'Z', 'r', 's', 'u', 'v', 'w', 'x', 'y', 'end'];
  const d = unifiedDiff(a, b, 'a', 'b', 1);
  const res: string[] = [];
  let ai = 0;
  for (const l of d.slice(2)) {
    const m = /^@@ -([0-9]+),([0-9]+) /.exec(l);
    if (m !== null) {
      const start = Number(m[2]) === 0 ? Number(m[1]) : Number(m[1]) - 1;
      while (ai < start) res.push(a[ai++]);
    } else if (l[0] === ' ') { res.push(a[ai++]); }
    else if (l[0] === '-') ai++;
    else res.push(l.slice(1));
  }
  while (ai < a.length) res.push(a[ai++]);
  assert.equal(res, b);
});

// ---- expectations ------------------------------------------------------------------

test('parseExpect: directives, comments, trailing comments', () => {
  const e = parseExpect('# hostile: x\n# flags: -c 3 -t "5"\n# refused: 2\nopen 1.2.3.4 5.6.7.8 1024 # announced, unused\n\nopen fd00::1 fd00::2 50000\n');
  assert.equal(e.flags, ['-c', '3', '-t', '5']);
  assert.is(e.refused, 2);
  assert.equal(e.opens, ['1.2.3.4 5.6.7.8 1024', 'fd00::1 fd00::2 50000']);
  assert.throws(() => parseExpect('close 64000\n'), /not an expectation line/);
});

test('checkExpectation: missing, extra, repeated holes and the refusal count', () => {
  const transcript = ['0.001 open 64000 a b 1024', '0.002 open 64001 a b 1024', '2.001 close 64000', '# 9 packets, 2 holes, 1 refused, 0 pool exhausted'];
  assert.equal(checkExpectation(parseExpect('open a b 1024\nopen a b 1024\n# refused: 1\n'), transcript), []);
  assert.equal(checkExpectation(parseExpect('open a b 1024\n'), transcript), ['hole opened that the .expect does not list: open a b 1024']);
  assert.equal(checkExpectation(parseExpect('open a b 1024\nopen a b 1024\nopen c d 2000\n# refused: 0\n'), transcript), [
    'expected hole did not open: open c d 2000',
    'expected 0 refused announcements, the transcript says 1',
  ]);
  assert.equal(compareHoles(['x', 'y'], ['y', 'z']), { missing: ['x'], extra: ['z'] });
});

test('openedHoles: replay, observe and shadow log lines', () => {
  const lines = [
    '0.001 open 64000 198.18.2.10 198.18.1.10 35131',
    'ftp6proxy[123]: notice: shadow: would open 64001 fd00:c1::10 fd00:5e::10 40001',
    'Jan  1 00:00:00 gw ftp6proxy[1]: shadow: would open 3 a b 2000',
    '2.000 close 64000',
    '# 0.001 open 1 x y 5',
    'ftp6proxy[123]: notice: shadow: would close 64001',
  ];
  assert.equal(openedHoles(lines), ['198.18.2.10 198.18.1.10 35131', 'fd00:c1::10 fd00:5e::10 40001', 'a b 2000']);
});

// ---- sh words, flags, rc.conf --------------------------------------------------------

test('shellWords: sh(1) quoting', () => {
  const table: Array<[string, string[]]> = [
    ['', []],
    ['  -b 64000   -c 50 ', ['-b', '64000', '-c', '50']],
    [`-u 'pro xy' -f "loc"al0`, ['-u', 'pro xy', '-f', 'local0']],
    ['-i "/var/run/a\\"b" -r \\ x', ['-i', '/var/run/a"b', '-r', ' x']],
    [`''`, ['']],
    ['"a\\nb"', ['a\\nb']],
  ];
  for (const [s, want] of table) assert.equal(shellWords(s), want, s);
  assert.throws(() => shellWords(`-u 'x`), /unterminated single/);
  assert.throws(() => shellWords('-u "x'), /unterminated double/);
});

test('checkFlags: the acceptance strings', () => {
  const ok = checkFlags('-b 64000 -c 50 -d -t 3 -u proxy -f local0');
  assert.ok(ok.ok, ok.lines.join('\n'));
  assert.match(ok.lines[ok.lines.length - 1], /accepted by ftp6proxy \(module ipfw\) with the same meaning/);
  const bad = checkFlags('-b 64000 -z');
  assert.not.ok(bad.ok);
  assert.ok(bad.lines.includes('-z: not an option of ftp6proxy (original options: b c d f h i j p q r t u)'), bad.lines.join('\n'));
});

test('checkFlags: option by option', () => {
  const table: Array<[string, string, boolean, RegExp[]]> = [
    ['-q fast', 'ipfw', false, [/^-q fast with module ipfw: refused by ftp6proxy: -q .*does not apply to module ipfw/]],
    ['-q fast', 'pf', true, [/^-q fast: accepted, same meaning/]],
    ['-j 100', 'pf', false, [/^-j 100 with module pf: refused/]],
    ['-j 100 -p 8668', 'netgraph', true, [/^-j 100: accepted/, /^-p 8668: accepted/]],
    ['-n -m nftables -a inet/filter', 'ipfw', true, [/^-n: accepted .*not understood by the C daemon/, /^-m nftables: accepted .*not understood by the C daemon/, /module nftables/]],
    ['-t 0 -c', 'ipfw', false, [/^-c: needs a value/, /^-t 0 with module ipfw: refused by ftp6proxy: -t: 0 is out of range/]],
    ['-b 65500 -c 50', 'ipfw', false, [/^-b 65500: accepted/, /^-c 50: accepted/, /^together: refused by ftp6proxy: -b 65500 -c 50: the pool would end at 65549/]],
    ['-j 64010', 'ipfw', false, [/^together: .*-j 64010 lies inside the hole pool/]],
    ['-d -d', 'ipfw', true, [/^-d: accepted/]],
    ['-ddd', 'ipfw', false, [/^together: .*at most twice/]],
    ['-b64000 -dt5', 'ipfw', true, [/^-b 64000: accepted/, /^-d: accepted/, /^-t 5: accepted/]],
    ['-f kernel', 'ipfw', false, [/^-f kernel with module ipfw: refused.*unknown syslog facility/]],
    ['-b 64000 extra', 'ipfw', false, [/^"extra": not an option/]],
    ['-h', 'ipfw', false, [/^-h: prints the usage and exits/]],
    [`-u 'x`, 'ipfw', false, [/unterminated single quote/]],
  ];
  for (const [flags, mod, ok, res] of table) {
    const r = checkFlags(flags, mod as 'ipfw');
    assert.is(r.ok, ok, `${flags}: ${r.lines.join(' | ')}`);
    for (const re of res) assert.ok(r.lines.some((l) => re.test(l)), `${flags}: no line matches ${re}: ${r.lines.join(' | ')}`);
  }
});

test('parseRcConf / checkRcConf', () => {
  const text = [
    '# rc.conf',
    'hostname="gw.example.org"',
    'ftp6proxy_enable="YES"   # on',
    "ftp6proxy_flags='-b 64000'",
    'ftp6proxy_flags="-b 64000 -c 50 -t 3" # the last one counts',
    'if [ -f /x ]; then echo; fi',
    'export ftp6proxy_user=proxy',
  ].join('\n');
  const p = parseRcConf(text);
  assert.equal(p.errors, []);
  assert.equal(p.assignments.map((a) => [a.name, a.value]), [
    ['hostname', 'gw.example.org'], ['ftp6proxy_enable', 'YES'], ['ftp6proxy_flags', '-b 64000'],
    ['ftp6proxy_flags', '-b 64000 -c 50 -t 3'], ['ftp6proxy_user', 'proxy'],
  ]);
  const r = checkRcConf(text);
  assert.ok(r.ok, r.lines.join('\n'));
  assert.ok(r.lines.some((l) => /line 5: ftp6proxy_flags again \(line 4 is overridden/.test(l)));
  assert.ok(r.lines.some((l) => /ftp6proxy_user: read by rc\.subr/.test(l)));

  const table: Array<[string, RegExp]> = [
    ['ftp6proxy_enable="maybe"', /not YES or NO/],
    ['ftp6proxy_enable=YES\nftp6proxy_flags="-z"', /-z: not an option/],
    ['ftp6proxy_enable=YES\nftp6proxy_bogus=1', /ftp6proxy_bogus: unknown variable/],
    ['ftp6proxy_flags="-b 1', /unterminated double quote/],
  ];
  for (const [t, re] of table) {
    const x = checkRcConf(t);
    assert.not.ok(x.ok, t);
    assert.ok(x.lines.some((l) => re.test(l)), `${t}: ${x.lines.join(' | ')}`);
  }
});

test('compatMain: flags and rcconf exit codes', async () => {
  const outs: string[] = [];
  const io = { out: (s: string) => outs.push(s), err: (s: string) => outs.push(s), readFile: (p: string) => fs.readFileSync(p, 'utf8') };
  assert.is(await compatMain(['flags', '-b 64000 -c 50 -d -t 3 -u proxy -f local0'], 'nftables', io), 0);
  assert.is(await compatMain(['flags', '-b 64000 -z'], 'nftables', io), 1);
  assert.is(await compatMain(['flags', '-m', 'pf', '-q fast'], 'nftables', io), 0);
  assert.is(await compatMain(['flags'], 'nftables', io), 2);
  const tmp = path.join(os.tmpdir(), `f6compat-${process.pid}.conf`);
  fs.writeFileSync(tmp, 'ftp6proxy_enable="YES"\nftp6proxy_flags="-b 64000 -c 50"\n');
  try {
    assert.is(await compatMain(['rcconf', tmp], 'nftables', io), 0);
    fs.writeFileSync(tmp, 'ftp6proxy_enable="YES"\nftp6proxy_flags="-b 64000 -z"\n');
    assert.is(await compatMain(['rcconf', tmp], 'nftables', io), 1);
  } finally {
    fs.unlinkSync(tmp);
  }
  assert.is(await compatMain(['rcconf', '/nonexistent/rc.conf'], 'nftables', io), 2);
});

// ---- observe ----------------------------------------------------------------------

test('parseIpfwShow: pool rules only, bare port and dst-port forms, call', () => {
  const text = [
    '00100     12     1024 set 0 allow ip from any to any via lo0',
    '64000      0        0 set 0 allow tcp from fd00:5e::10 to fd00:c1::10 50014 setup keep-state :default',
    '64001      3      180 set 0 call 100 tcp from 198.18.1.10 to 198.18.2.10 dst-port 40000 setup keep-state',
    '64100      0        0 set 0 allow tcp from 1.1.1.1 to 2.2.2.2 3000 setup keep-state',
    '65535    100    10000 set 31 deny ip from any to any',
    '## Dynamic rules (1 120):',
  ].join('\n');
  assert.equal(parseIpfwShow(text, 64000, 100), [
    { rule: 64000, src: 'fd00:5e::10', dst: 'fd00:c1::10', port: 50014 },
    { rule: 64001, src: '198.18.1.10', dst: '198.18.2.10', port: 40000 },
  ]);
});

test('parsePfRules: in/out pair is one hole; anchor names give the rule number', () => {
  const plain = [
    'pass in quick inet6 proto tcp from fd00:5e::10 to fd00:c1::10 port = 50014 flags S/SA keep state (max 1)',
    'pass out quick inet6 proto tcp from fd00:5e::10 to fd00:c1::10 port = 50014 flags S/SA keep state (max 1)',
    'pass in quick inet proto tcp from 198.18.1.10 to 198.18.2.10 port = 40000 flags S/SA keep state (max 1) queue fast',
  ].join('\n');
  assert.equal(parsePfRules(plain), [
    { rule: null, src: 'fd00:5e::10', dst: 'fd00:c1::10', port: 50014 },
    { rule: null, src: '198.18.1.10', dst: '198.18.2.10', port: 40000 },
  ]);
  const named = 'anchor "ftp6proxy/64003" all {\n  pass in quick inet proto tcp from 1.1.1.1 to 2.2.2.2 port = 2000 flags S/SA keep state (max 1)\n}';
  assert.equal(parsePfRules(named), [{ rule: 64003, src: '1.1.1.1', dst: '2.2.2.2', port: 2000 }]);
});

test('parseNftSetJson: elements of nft -j list set', () => {
  const json = JSON.stringify({ nftables: [
    { metainfo: { version: '1.0.6' } },
    { set: { family: 'inet', name: 'ftp6proxy6', table: 'filter', elem: [
      { elem: { val: { concat: ['fd00:5e::10', 'fd00:c1::10', 50014] }, timeout: 2, expires: 1 } },
      { concat: ['fd00::1', 'fd00::2', '40000'] },
      { elem: { val: { concat: ['x', 'y'] } } },
    ] } },
  ] });
  assert.equal(parseNftSetJson(json), [
    { rule: null, src: 'fd00:5e::10', dst: 'fd00:c1::10', port: 50014 },
    { rule: null, src: 'fd00::1', dst: 'fd00::2', port: 40000 },
  ]);
  assert.equal(parseNftSetJson('not json'), []);
  assert.equal(parseNftSetJson('{"nftables":[{"set":{"name":"ftp6proxy4"}}]}'), []);
});

test('SnapshotDiffer: rule numbers kept, running index for set elements, reopen after close', () => {
  const d = new SnapshotDiffer();
  const a = { rule: null, src: 'a', dst: 'b', port: 2000 };
  const b = { rule: null, src: 'a', dst: 'b', port: 2001 };
  assert.equal(d.step(0, []), []);
  assert.equal(d.step(0.1, [a]), ['0.100 open 1 a b 2000']);
  assert.equal(d.step(0.2, [a, b]), ['0.200 open 2 a b 2001']);
  assert.equal(d.step(0.3, [b]), ['0.300 close 1']);
  assert.equal(d.step(0.4, [b, a]), ['0.400 open 3 a b 2000']);
  const r = new SnapshotDiffer();
  assert.equal(r.step(1, [{ rule: 64001, src: 'x', dst: 'y', port: 3000 }]), ['1.000 open 64001 x y 3000']);
  // the same rule number with another hole: a close and an open
  assert.equal(r.step(2, [{ rule: 64001, src: 'x', dst: 'y', port: 3001 }]), ['2.000 close 64001', '2.000 open 64001 x y 3001']);
});

test('snapshot: the commands per module and their failures', async () => {
  const calls: string[] = [];
  const exec = async (argv: string[]) => {
    calls.push(argv.join(' '));
    if (argv[0] === 'nft' && argv[6] === 'ftp6proxy4') return { code: 1, stdout: '', stderr: 'Error: No such file or directory' };
    return { code: 0, stdout: '', stderr: '' };
  };
  assert.equal(await snapshot({ module: 'ipfw', base: 64000, count: 100, anchor: '' }, exec), []);
  assert.equal(await snapshot({ module: 'pf', base: 0, count: 0, anchor: 'ftp6proxy' }, exec), []);
  assert.equal(await snapshot({ module: 'nftables', base: 0, count: 0, anchor: 'ip6/t' }, exec), []);
  assert.equal(calls, ['ipfw -S show 64000-64099', 'pfctl -a ftp6proxy/* -sr', 'nft -j list set ip6 t ftp6proxy6']);
  try {
    await snapshot({ module: 'nftables', base: 0, count: 0, anchor: 'inet/filter' }, exec);
    assert.unreachable('a failing listing must throw');
  } catch (e) {
    assert.match((e as Error).message, /nft -j list set inet filter ftp6proxy4: exit 1: Error: No such file/);
  }
});

test('compatMain observe: polls a scripted firewall and prints changes until -x', async () => {
  const lines: string[] = [];
  let poll = 0;
  const exec = async () => {
    poll++;
    const elems = poll >= 2 && poll < 4 ? '[{"elem":{"val":{"concat":["198.18.1.10","198.18.2.10",40000]}}}]' : '[]';
    return { code: 0, stdout: `{"nftables":[{"set":{"elem":${elems}}}]}`, stderr: '' };
  };
  const code = await compatMain(['observe', '-m', 'nftables', '-a', 'ip/filter', '-t', '0.02', '-x', '0.3'], 'nftables',
    { out: (s) => lines.push(s), err: (s) => lines.push(`ERR ${s}`), readFile: () => '', exec });
  assert.is(code, 0);
  assert.match(lines[0], /^# observe nftables ip\/filter, every 20 ms/);
  const ev = lines.slice(1).map((l) => l.replace(/^[0-9.]+ /, ''));
  assert.equal(ev, ['open 1 198.18.1.10 198.18.2.10 40000', 'close 1']);
});

test('compatMain diff: same holes in a shadow log and an observe transcript', async () => {
  const files: Record<string, string> = {
    shadow: 'ftp6proxy[9]: notice: shadow: would open 64000 a b 2000\nftp6proxy[9]: notice: shadow: would open 64001 c d 3000\n',
    observed: '# observe\n0.100 open 2 c d 3000\n0.150 open 1 a b 2000\n2.100 close 1\n',
    other: '0.100 open 1 a b 2000\n',
  };
  const out: string[] = [];
  const io = { out: (s: string) => out.push(s), err: (s: string) => out.push(s), readFile: (p: string) => files[p] };
  assert.is(await compatMain(['diff', 'shadow', 'observed'], 'nftables', io), 0);
  assert.is(await compatMain(['diff', 'shadow', 'other'], 'nftables', io), 1);
  assert.ok(out.includes('-c d 3000'), out.join('\n'));
});

// ---- the suite over the committed corpus -------------------------------------------

test('npm run compat: the committed transcripts match, with at least 20 real traces', async () => {
  const out: string[] = [];
  const r = await runCompat({ root: ROOT, out: (l) => out.push(l) });
  assert.is(r.differences, 0, out.join('\n'));
  assert.ok(r.traces >= 20 + 15, `only ${r.traces} traces`);
  assert.match(r.summary, /^compat: [0-9]+ traces x 4 modules, 0 differences$/);
});

type LineParser = typeof ftp.parseLine;

/** Run the suite with ftp.parseLine replaced (the engine calls it through the module's exports). */
async function withParser(broken: LineParser, only?: string): Promise<{ differences: number; out: string[] }> {
  const mod = ftp as unknown as { parseLine: LineParser };
  const real = mod.parseLine;
  mod.parseLine = broken;
  const out: string[] = [];
  try {
    const r = await runCompat({ root: ROOT, only, out: (l) => out.push(l) });
    return { differences: r.differences, out };
  } finally {
    mod.parseLine = real;
  }
}

test('a deliberately broken parser makes the suite fail', async () => {
  const real = ftp.parseLine;
  const cases: Array<{ name: string; parser: LineParser; only?: string; mustMention: RegExp }> = [
    {
      name: 'port off by one (p1*256+p2+1)',
      parser: (dir, line, max) => {
        const r: ParseResult = real(dir, line, max);
        return r.kind === 'announce' ? { ...r, port: r.port + 1 } : r;
      },
      mustMention: /expected hole did not open/,
    },
    {
      name: 'case-sensitive commands',
      parser: (dir, line, max) => {
        const s = typeof line === 'string' ? line : Buffer.from(line).toString('latin1');
        const head = s.slice(0, 4);
        return dir === 'client' && head !== head.toUpperCase() ? { kind: 'none' } : real(dir, line, max);
      },
      only: 'mixed-case',
      mustMention: /mixed-case-v6 \(ipfw\): expected hole did not open: open fd00:5e::10 fd00:c1::10 50014/,
    },
    {
      name: 'no anti-bounce check (announced address trusted)',
      parser: (dir, line, max) => {
        const r: ParseResult = real(dir, line, max);
        // pretend every announcement named no address: a 229-like reply
        return r.kind === 'announce' ? { ...r, family: null, addr: null } : r;
      },
      only: 'bounce',
      mustMention: /hole opened that the \.expect does not list/,
    },
  ];
  for (const c of cases) {
    const r = await withParser(c.parser, c.only);
    assert.ok(r.differences > 0, `${c.name}: the suite did not notice`);
    assert.ok(r.out.some((l) => c.mustMention.test(l)), `${c.name}: ${r.out.slice(0, 20).join('\n')}`);
    assert.ok(r.out.some((l) => /^@@ /.test(l)), `${c.name}: no unified diff printed`);
    assert.match(r.out[r.out.length - 1], /^compat: [0-9]+ traces x 4 modules, [1-9][0-9]* differences?$/);
  }
  // and the real parser is back
  assert.is((await withParser(real, 'split')).differences, 0);
});

test.run();
