/**
 * Consistency of the committed corpus compat/traces (no root needed): enough
 * traces, classic pcap files, and every `.expect` line backed by an
 * announcement in the trace's own control channel (read by the small reader in
 * record-traces.ts, not by ftp6proxy's engine).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as path from 'path';
import { announcements, readPcapSegments, sequenceGaps } from './record-traces';

const dir = path.resolve(__dirname, '../../../compat/traces');
const names = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.pcap')).map((f) => f.slice(0, -5)).sort() : [];

test('at least 20 traces, 3 clients, 2 servers, every mode and family, each with an .expect', () => {
  assert.ok(names.length >= 20, `${names.length} traces in ${dir}`);
  const part = (i: number): Set<string> => new Set(names.map((n) => n.split('-')[i]));
  assert.equal([...part(0)].sort(), ['v4', 'v6']);
  assert.equal([...part(1)].sort(), ['eprt', 'epsv', 'pasv', 'port']);
  assert.ok(new Set(names.map((n) => n.split('-')[2])).size >= 3, 'clients');
  const servers = new Set(names.map((n) => ['vsftpd', 'pyftpdlib', 'pure-ftpd'].find((s) => n.includes(`-${s}`))));
  assert.ok(!servers.has(undefined) && servers.size >= 2, 'servers');
  assert.ok(names.some((n) => n.includes('abort')), 'an aborted transfer');
  assert.ok(names.some((n) => /mget|multi|recursive/.test(n)), 'several transfers in one session');
  assert.ok(names.some((n) => /list|recursive/.test(n)), 'a listing');
  for (const n of names) assert.ok(fs.existsSync(path.join(dir, `${n}.expect`)), `${n}.expect`);
});

for (const n of names) {
  test(`${n}: pcap, complete control channel, .expect matches its announcements`, () => {
    const buf = fs.readFileSync(path.join(dir, `${n}.pcap`));
    assert.is(buf.readUInt32LE(0), 0xa1b2c3d4, 'classic pcap, microseconds, little-endian');
    assert.ok(buf.length < 16384, `small: ${buf.length} bytes`);
    const segs = readPcapSegments(buf);
    assert.ok(segs.every((s) => s.sport === 21 || s.dport === 21), 'control channel only');
    assert.equal(sequenceGaps(segs), []);
    const anns = announcements(segs).map((a) => `open ${a.src} ${a.dst} ${a.port}`);
    const lines = fs.readFileSync(path.join(dir, `${n}.expect`), 'utf8').split('\n').filter((l) => l !== '');
    assert.ok(lines.length >= 1);
    // Every announcement gives exactly one line (used or not), in the same order.
    assert.equal(lines.map((l) => l.replace(/ # announced, unused$/, '')), anns);
    for (const l of lines) assert.match(l, /^open \S+ \S+ \d+( # announced, unused)?$/);
  });
}

test.run();
