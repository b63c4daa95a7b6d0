/**
 * contrib/selective-rules*.sh are generated from src/firewall/selective.ts
 * (scripts/gen-selective-rules.js): they must not drift from the code the
 * lab tests run.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..', '..', '..');

test('contrib/selective-rules*.sh are what scripts/gen-selective-rules.js writes', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const gen = require(path.join(ROOT, 'scripts', 'gen-selective-rules.js')) as { files(): Record<string, string> };
  const files = gen.files();
  assert.equal(Object.keys(files).sort(), ['contrib/selective-rules-remove.sh', 'contrib/selective-rules.sh']);
  for (const [rel, text] of Object.entries(files)) {
    assert.ok(fs.existsSync(path.join(ROOT, rel)), `${rel} exists`);
    assert.fixture(fs.readFileSync(path.join(ROOT, rel), 'utf8'), text, `${rel}: run node scripts/gen-selective-rules.js`);
  }
  assert.match(files['contrib/selective-rules.sh'], /^ip6tables -t mangle -A POSTROUTING -p tcp --sport 21 -j CONNMARK --save-mark --nfmask 0x100000 --ctmask 0x100000$/m);
});

test.run();
