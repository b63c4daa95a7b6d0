import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultModule, unsupportedReason } from '../../src/backends';

test('default module per OS', () => {
  assert.is(defaultModule('freebsd'), 'ipfw');
  assert.is(defaultModule('linux'), 'nftables');
});

test('a module on the wrong OS is refused with the reason', () => {
  const rows: Array<[Parameters<typeof unsupportedReason>[0], string, RegExp | null]> = [
    ['nftables', 'linux', null],
    ['ipfw', 'freebsd', null],
    ['pf', 'freebsd', null],
    ['netgraph', 'freebsd', null],
    ['ipfw', 'linux', /needs FreeBSD \(divert\(4\)\); on Linux use -m nftables/],
    ['pf', 'linux', /needs FreeBSD \(divert\(4\)\)/],
    ['netgraph', 'linux', /needs FreeBSD \(ng_ipfw\(4\)\)/],
    ['nftables', 'freebsd', /needs Linux/],
  ];
  for (const [m, p, re] of rows) {
    const why = unsupportedReason(m, p);
    if (re === null) assert.is(why, null, `${m} on ${p}`);
    else assert.match(why ?? '', re, `${m} on ${p}`);
  }
});

test.run();
