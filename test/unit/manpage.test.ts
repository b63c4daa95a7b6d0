/** The man page lints clean with mandoc, and the rc.d script parses with sh -n. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const haveMandoc = fs.existsSync('/usr/bin/mandoc');

if (!haveMandoc && process.env.CI !== 'true') {
  console.log('SKIP: mandoc is missing (apt-get install mandoc)');
} else {
  test('mandoc -Tlint -W warning man/ftp6proxy.8 is clean', () => {
    const r = spawnSync('mandoc', ['-Tlint', '-W', 'warning', path.join(ROOT, 'man', 'ftp6proxy.8')], { encoding: 'utf8' });
    assert.is(r.status, 0, r.stdout + r.stderr);
    assert.is((r.stdout + r.stderr).trim(), '');
  });
}

test('the man page documents every option of the usage text', () => {
  const man = fs.readFileSync(path.join(ROOT, 'man', 'ftp6proxy.8'), 'utf8');
  for (const c of 'abcdfhijmnpqrtu') assert.match(man, new RegExp(`^\\.It Fl ${c}\\b`, 'm'), `-${c}`);
});

test('sh -n rc.d/ftp6proxy', () => {
  for (const sh of ['sh', 'dash'].filter((s) => spawnSync('which', [s]).status === 0)) {
    const r = spawnSync(sh, ['-n', path.join(ROOT, 'rc.d', 'ftp6proxy')], { encoding: 'utf8' });
    assert.is(r.status, 0, `${sh}: ${r.stderr}`);
  }
  const rc = fs.readFileSync(path.join(ROOT, 'rc.d', 'ftp6proxy'), 'utf8');
  assert.match(rc, /rcvar=ftp6proxy_enable/);
  assert.match(rc, /ftp6proxy_flags/);
});

test.run();
