import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StreamReassembler, seqDiff, type ReassemblyLimits } from '../../src/reassembly';

const b = (s: string) => Buffer.from(s, 'latin1');

/** Feed [seq, data, syn?] segments; return lines and overlong reports as strings. */
function run(segs: [number, string, boolean?][], limits?: ReassemblyLimits): string[] {
  const r = new StreamReassembler(limits);
  const out: string[] = [];
  const sink = {
    line: (l: Uint8Array) => out.push(Buffer.from(l).toString('latin1')),
    overlong: (n: number) => out.push(`<overlong ${n}>`),
  };
  for (const [seq, data, syn] of segs) r.push(seq, b(data), syn ?? false, sink);
  return out;
}

const W = 0xfffffffa; // a sequence number 6 before wraparound

const rows: [string, [number, string, boolean?][], string[], ReassemblyLimits?][] = [
  ['in order, CRLF and LF', [[100, 'USER a\r\n'], [108, 'PASS b\nSYST\r\n']], ['USER a', 'PASS b', 'SYST']],
  ['pipelined in one segment', [[1, 'TYPE I\r\nPORT 1,2,3,4,5,6\r\nRETR x\r\n']], ['TYPE I', 'PORT 1,2,3,4,5,6', 'RETR x']],
  ['a command split across segments', [[1, 'PO'], [3, 'RT 1,2,3,'], [12, '4,5,6\r'], [18, '\n']], ['PORT 1,2,3,4,5,6']],
  ['split after CR', [[1, 'PASV\r'], [6, '\nEPSV\r\n']], ['PASV', 'EPSV']],
  ['exact retransmit ignored', [[1, 'PASV\r\n'], [1, 'PASV\r\n'], [7, 'EPSV\r\n']], ['PASV', 'EPSV']],
  ['overlapping retransmit trimmed', [[1, 'PA'], [1, 'PASV\r\nEP'], [7, 'EPSV\r\n']], ['PASV', 'EPSV']],
  ['out of order held then drained', [[1, 'A\r\n'], [7, 'C\r\n'], [10, 'D\r\n'], [4, 'B\r\n']], ['A', 'B', 'C', 'D']],
  ['out of order across a split line', [[1, 'PO'], [14, 'T 1\r\n'], [3, 'RT 1,2\r\nPOR']], ['PORT 1,2', 'PORT 1']],
  ['held duplicate and overlap', [[1, 'A\r\n'], [7, 'C\r\n'], [7, 'C\r\n'], [6, '\nC\r\nD\r\n'], [4, 'B\r']], ['A', 'B', 'C', 'D']],
  ['SYN consumes one sequence number', [[999, '', true], [1000, 'USER a\r\n']], ['USER a']],
  ['retransmitted SYN does not rewind', [[999, '', true], [1000, 'A\r\n'], [999, '', true], [1003, 'B\r\n']], ['A', 'B']],
  ['new SYN far away starts over', [[999, '', true], [1000, 'PAR'], [5000, '', true], [5001, 'B\r\n']], ['B']],
  ['mid-stream pickup: first segment sets the sequence', [[123456, 'PASV\r\n'], [123462, 'EPSV\r\n']], ['PASV', 'EPSV']],
  ['wraparound', [[W, 'ABCD'], [W + 4 - 0x100000000, 'EF\r\nGH\r\n'], [6, 'IJ\r\n']], ['ABCDEF', 'GH', 'IJ']],
  ['wraparound out of order', [[W, 'AB\r\n'], [1, 'D\r\n'], [W + 4, 'C\r\n']], ['AB', 'C', 'D']],
  ['old segment before first is dropped', [[1000, 'A\r\n'], [990, 'XXXXXXXXXX']], ['A']],
  ['overlong line in one segment', [[1, 'x'.repeat(20) + '\r\nOK\r\n']], ['<overlong 20>', 'OK'], { maxLine: 10 }],
  ['overlong line across segments, reported once', [[1, 'x'.repeat(8)], [9, 'y'.repeat(8)], [17, 'z'.repeat(8)], [25, '\r\nOK\r\n']], ['<overlong 16>', 'OK'], { maxLine: 10 }],
  ['line of exactly maxLine fits, with CR split', [[1, 'x'.repeat(10) + '\r'], [12, '\nA\r\n']], ['x'.repeat(10), 'A'], { maxLine: 10 }],
  ['maxLine + 1 split is overlong', [[1, 'x'.repeat(11)], [12, '\r\nA\n']], ['<overlong 12>', 'A'], { maxLine: 10 }],
  ['hold bound: the gap is given up', [[1, 'A\r\n'], [10, 'C\r\n'], [13, 'D\r\n'], [16, 'E\r\n']], ['A', 'C', 'D', 'E'], { maxHeldSegments: 2 }],
  ['hold byte bound', [[1, 'AB'], [10, 'CCCC\r\n'], [16, 'DDDD\r\n']], ['CCCC', 'DDDD'], { maxHeldBytes: 8 }],
  ['segment larger than the hold bound: jump to it', [[1, 'A\r\n'], [100, 'B'.repeat(20) + '\r\n']], ['A', 'B'.repeat(20)], { maxHeldBytes: 8 }],
  ['empty lines', [[1, '\r\n\n\r\nX\r\n']], ['', '', '', 'X']],
  ['NUL and high bytes pass through to the parser', [[1, 'A\0\xff\r\n']], ['A\0\xff']],
];

test('reassembly table', () => {
  for (const [name, segs, want, limits] of rows) assert.equal(run(segs, limits), want, name);
});

test('seqDiff is signed modulo 2^32', () => {
  assert.is(seqDiff(5, 3), 2);
  assert.is(seqDiff(3, 5), -2);
  assert.is(seqDiff(2, 0xfffffffe), 4);
  assert.is(seqDiff(0xfffffffe, 2), -4);
});

test('line buffer is allocated lazily and released', () => {
  const r = new StreamReassembler();
  const sink = { line: () => {}, overlong: () => {} };
  r.push(1, b('PASV\r\n'), false, sink);
  assert.is((r as unknown as { buf: unknown }).buf, null);
  r.push(7, b('PO'), false, sink);
  assert.is(r.pending, 2);
  r.push(9, b('RT\r\n'), false, sink);
  r.release();
  assert.is((r as unknown as { buf: unknown }).buf, null);
  assert.is(r.expected, 13);
});

test('random segment order always yields the same lines once all arrived', () => {
  const text = 'USER anonymous\r\nPASS x\r\nEPSV\r\nPORT 1,2,3,4,5,6\r\nQUIT\r\n';
  const want = ['USER anonymous', 'PASS x', 'EPSV', 'PORT 1,2,3,4,5,6', 'QUIT'];
  let x = 7;
  const rnd = (n: number) => ((x = (x * 1103515245 + 12345) >>> 0) >>> 8) % n;
  for (let round = 0; round < 300; round++) {
    const cuts = new Set<number>();
    while (cuts.size < 5) cuts.add(1 + rnd(text.length - 1));
    const points = [0, ...[...cuts].sort((a, c) => a - c), text.length];
    const segs: [number, string][] = [];
    for (let i = 0; i + 1 < points.length; i++) segs.push([W + points[i], text.slice(points[i], points[i + 1])]);
    // first segment first (it sets the sequence), the rest shuffled, plus a retransmit
    const rest = segs.slice(1);
    for (let i = rest.length - 1; i > 0; i--) {
      const j = rnd(i + 1);
      [rest[i], rest[j]] = [rest[j], rest[i]];
    }
    rest.splice(rnd(rest.length), 0, segs[rnd(segs.length)]);
    assert.equal(run([segs[0], ...rest]), want, `round ${round}`);
  }
});


test('selective queueing: a gap is unseen whole lines, resume at once', () => {
  const segs: [number, string][] = [[100, 'USER a\r\n'], [120, 'PORT 1,2,3,4,5,6\r\n'], [200, 'EPRT |1|'], [208, '198.18.1.2|50000|\r\n']];
  assert.equal(run(segs, { gapsAreLineBoundaries: true }), ['USER a', 'PORT 1,2,3,4,5,6', 'EPRT |1|198.18.1.2|50000|']);
  // without it the segment after the gap waits for the bytes in between
  assert.equal(run(segs), ['USER a']);
  // a partial line before a gap cannot continue after it: dropped, counted
  const r = new StreamReassembler({ gapsAreLineBoundaries: true });
  const out: string[] = [];
  const sink = { line: (l: Uint8Array) => out.push(Buffer.from(l).toString('latin1')), overlong: () => undefined };
  r.push(1000, b('229 Ent'), false, sink);
  r.push(1050, b('200 OK\r\n'), false, sink);
  assert.equal(out, ['200 OK']);
  assert.is(r.skipped, 43);
  // old data (a retransmit) is still trimmed, not taken for a gap
  r.push(1050, b('200 OK\r\n'), false, sink);
  assert.equal(out, ['200 OK']);
});

test.run();
