import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decide, type Announcement, type ControlConnection } from '../../src/policy';
import { parseAnyAddr } from '../../src/addr';
import type { Announce, Decision } from '../../src/types';

const a = (t: string) => parseAnyAddr(t)!.bytes;
const conn4: ControlConnection = { session: 3, family: 4, client: a('198.18.1.2'), server: a('198.18.2.2') };
const conn6: ControlConnection = { session: 4, family: 6, client: a('fd00:1::2'), server: a('fd00:2::2') };

function ann(via: Announce, addr: string | null, port: number): Announcement {
  const p = addr === null ? null : parseAnyAddr(addr)!;
  return { via, family: p === null ? null : p.family, addr: p === null ? null : p.bytes, port };
}

function show(d: Decision): string {
  return d.type === 'hole'
    ? `#${d.session} ${d.via} hole ${d.hole.family} ${d.hole.src} -> ${d.hole.dst}.${d.hole.port}`
    : `#${d.session} ${d.via} refuse ${d.reason}`;
}

const rows: [ControlConnection, Announcement, number, string][] = [
  // active: the server connects to the client
  [conn4, ann('PORT', '198.18.1.2', 50000), 0, '#3 PORT hole 4 198.18.2.2 -> 198.18.1.2.50000'],
  [conn4, ann('EPRT', '198.18.1.2', 1024), 0, '#3 EPRT hole 4 198.18.2.2 -> 198.18.1.2.1024'],
  [conn6, ann('EPRT', 'fd00:1::2', 65535), 0, '#4 EPRT hole 6 fd00:2::2 -> fd00:1::2.65535'],
  [conn6, ann('LPRT', 'fd00:1::2', 50000), 7, '#4 LPRT hole 6 fd00:2::2 -> fd00:1::2.50000'],
  // passive: the client connects to the server; 229 names no address
  [conn4, ann('227', '198.18.2.2', 50000), 0, '#3 227 hole 4 198.18.1.2 -> 198.18.2.2.50000'],
  [conn6, ann('228', 'fd00:2::2', 50000), 0, '#4 228 hole 6 fd00:1::2 -> fd00:2::2.50000'],
  [conn6, ann('229', null, 50000), 0, '#4 229 hole 6 fd00:1::2 -> fd00:2::2.50000'],
  [conn4, ann('229', null, 2000), 0, '#3 229 hole 4 198.18.1.2 -> 198.18.2.2.2000'],
  // anti-bounce: a third host, or the wrong peer for the direction
  [conn4, ann('PORT', '198.18.2.9', 50000), 0, '#3 PORT refuse bounce: announced 198.18.2.9, peer is 198.18.1.2'],
  [conn4, ann('PORT', '198.18.2.2', 50000), 0, '#3 PORT refuse bounce: announced 198.18.2.2, peer is 198.18.1.2'],
  [conn4, ann('227', '198.18.2.9', 50000), 0, '#3 227 refuse bounce: announced 198.18.2.9, peer is 198.18.2.2'],
  [conn4, ann('227', '198.18.1.2', 50000), 0, '#3 227 refuse bounce: announced 198.18.1.2, peer is 198.18.2.2'],
  [conn6, ann('EPRT', 'fd00:1::3', 50000), 0, '#4 EPRT refuse bounce: announced fd00:1::3, peer is fd00:1::2'],
  [conn6, ann('228', 'fd00:1::2', 50000), 0, '#4 228 refuse bounce: announced fd00:1::2, peer is fd00:2::2'],
  // family
  [conn4, ann('EPRT', 'fd00:1::2', 50000), 0, '#3 EPRT refuse family mismatch: IPv6 announced on IPv4 control'],
  [conn6, ann('EPRT', '198.18.1.2', 50000), 0, '#4 EPRT refuse family mismatch: IPv4 announced on IPv6 control'],
  [conn6, ann('PORT', '198.18.1.2', 50000), 0, '#4 PORT refuse family mismatch: IPv4 announced on IPv6 control'],
  [conn6, ann('227', '198.18.2.2', 50000), 0, '#4 227 refuse family mismatch: IPv4 announced on IPv6 control'],
  [conn6, ann('EPRT', '::ffff:198.18.1.2', 50000), 0, '#4 EPRT refuse bounce: announced ::ffff:198.18.1.2, peer is fd00:1::2'],
  // ports
  [conn4, ann('PORT', '198.18.1.2', 80), 0, '#3 PORT refuse port 80 < 1024'],
  [conn4, ann('PORT', '198.18.1.2', 1023), 0, '#3 PORT refuse port 1023 < 1024'],
  [conn6, ann('229', null, 21), 0, '#4 229 refuse port 21 < 1024'],
  [conn6, ann('229', null, 0), 0, '#4 229 refuse port 0 < 1024'],
  [conn6, ann('229', null, 65536), 0, '#4 229 refuse port 65536 > 65535'],
  // pending bound (default 8)
  [conn4, ann('227', '198.18.2.2', 50000), 8, '#3 227 refuse too many pending holes (8 >= 8)'],
  [conn4, ann('PORT', '198.18.1.2', 50000), 100, '#3 PORT refuse too many pending holes (100 >= 8)'],
];

test('decide table', () => {
  for (const [conn, an, pending, want] of rows) assert.is(show(decide(conn, an, { pending })), want, want);
});

test('maxPendingPerSession is honoured', () => {
  const an = ann('PORT', '198.18.1.2', 50000);
  assert.is(decide(conn4, an, { pending: 1, maxPendingPerSession: 1 }).type, 'refuse');
  assert.is(decide(conn4, an, { pending: 0, maxPendingPerSession: 1 }).type, 'hole');
  assert.is(decide(conn4, an, { pending: 0, maxPendingPerSession: 0 }).type, 'refuse');
});

test('text given by the caller is used as is', () => {
  const d = decide({ ...conn4, clientText: 'C', serverText: 'S' }, ann('PORT', '198.18.1.2', 5000), { pending: 0 });
  assert.is(show(d), '#3 PORT hole 4 S -> C.5000');
});

test.run();
