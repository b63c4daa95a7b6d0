#!/usr/bin/env node
// Runs every compiled uvu test file in its own process (unit first, then the
// root-only lab layer), sums uvu's counts, and ends with one line
// "tests: N passed, M failed, K skipped".  A lab file that cannot run prints
// "SKIP: <reason>"; under CI=true a lab skip counts as a failure.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const noLab = args.includes('--no-lab');
const only = args.filter((a) => !a.startsWith('--'));
const ci = process.env.CI === 'true';

function files(dir) {
  const d = path.join(root, 'dist', 'test', dir);
  if (!fs.existsSync(d)) return [];
  return fs.readdirSync(d).filter((f) => f.endsWith('.test.js')).sort().map((f) => path.join(d, f));
}

let list = [...files('unit'), ...(noLab ? [] : files('lab'))];
if (only.length > 0) list = list.filter((f) => only.some((o) => f.includes(o)));

let passed = 0, failed = 0, skipped = 0;
const failures = [];
for (const f of list) {
  const rel = path.relative(path.join(root, 'dist'), f);
  const lab = rel.startsWith(path.join('test', 'lab'));
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [f], {
    cwd: root,
    env: { ...process.env, NODE_DISABLE_COLORS: '1', NO_COLOR: '1', FORCE_COLOR: '0' },
    encoding: 'utf8',
    timeout: lab ? 600000 : 120000,
    maxBuffer: 64 * 1024 * 1024,
  });
  const out = (r.stdout || '') + (r.stderr || '');
  const num = (re) => { const m = re.exec(out); return m ? Number(m[1]) : 0; };
  const total = num(/Total:\s+(\d+)/);
  const ok = num(/Passed:\s+(\d+)/);
  const sk = num(/Skipped:\s+(\d+)/);
  // "SKIP: reason", also after uvu's progress dots on the same line
  const skipLines = out.split('\n').filter((l) => /SKIP:/.test(l)).map((l) => l.slice(l.indexOf('SKIP:')));
  let fileFailed = r.status !== 0 || total !== ok + sk;
  passed += ok;
  skipped += sk + skipLines.length;
  failed += Math.max(0, total - ok - sk);
  if (r.status !== 0 && total === ok + sk) failed++; // crashed or exited non-zero outside a test
  if (lab && ci && skipLines.length > 0) { failed++; fileFailed = true; }
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  const tag = fileFailed ? 'FAIL' : (skipLines.length > 0 ? 'SKIP' : 'ok  ');
  console.log(`${tag} ${rel} (${ok}/${total}, ${secs}s)${skipLines.length ? ' ' + skipLines.map((l) => l.trim()).join('; ') : ''}`);
  if (fileFailed) failures.push({ rel, out, signal: r.signal });
}
for (const f of failures) {
  console.log(`\n===== ${f.rel}${f.signal ? ` (killed by ${f.signal})` : ''} =====\n${f.out.slice(-20000)}`);
}
if (list.length === 0) { console.log('no test files found: run `tsc -p .` first'); failed++; }
console.log(`\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exitCode = failed > 0 ? 1 : 0;
