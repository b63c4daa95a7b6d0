/**
 * Every committed real trace, replayed through the real engine with the
 * recording firewall, gives exactly the holes its .expect lists.  The .expect
 * files were derived independently of ftp6proxy (from the data connections'
 * SYNs in a full capture; see compat/README.md).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as path from 'path';
import { defaultsFor } from '../../src/options';
import { replay } from '../../src/replay';

const DIR = path.resolve(__dirname, '..', '..', '..', 'compat', 'traces');
const traces = fs.existsSync(DIR) ? fs.readdirSync(DIR).filter((f) => f.endsWith('.pcap')).sort() : [];

test('at least 10 real traces are committed, each with its .expect', () => {
  assert.ok(traces.length >= 10, `${traces.length} traces`);
  for (const t of traces) assert.ok(fs.existsSync(path.join(DIR, t.replace(/\.pcap$/, '.expect'))), t);
});

function expected(file: string): string[] {
  return fs.readFileSync(file, 'utf8').split('\n')
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter((l) => l.startsWith('open '))
    .map((l) => l.split(/\s+/).slice(1).join(' '));
}

for (const t of traces) {
  test(`trace ${t} gives exactly the expected holes`, async () => {
    const pcap = fs.readFileSync(path.join(DIR, t));
    const r = await replay({ options: defaultsFor('ipfw'), commands: false, pcap });
    assert.is(r.exitCode, 0);
    const opens = r.lines.filter((l) => / open /.test(l)).map((l) => l.split(' ').slice(3).join(' '));
    const closes = r.lines.filter((l) => / close /.test(l));
    assert.equal(opens, expected(path.join(DIR, t.replace(/\.pcap$/, '.expect'))));
    assert.is(closes.length, opens.length, 'every hole closes');
    for (const l of r.lines.filter((x) => / open /.test(x))) {
      const [time, , rule] = l.split(' ');
      const close = r.lines.find((x) => x.endsWith(` close ${rule}`) && Number(x.split(' ')[0]) >= Number(time));
      assert.ok(close, `hole ${rule} closes`);
      assert.is((Number(close!.split(' ')[0]) - Number(time)).toFixed(3), '2.000', 'after -t seconds');
    }
  });
}

test.run();
