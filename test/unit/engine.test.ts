import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Engine, type EngineOptions } from '../../src/engine';
import type { Decision, Level, Logger, Packet } from '../../src/types';
import { buildTcp, TcpFlow, type FlowSpec } from './build-packet';
import { formatAddr, parseAddr } from '../../src/addr';

class RecordingLogger implements Logger {
  lines: string[] = [];
  log(level: Level, msg: string): void {
    this.lines.push(`${level} ${msg}`);
  }
  has(re: RegExp): boolean {
    return this.lines.some((l) => re.test(l));
  }
}

function setup(opts: Partial<EngineOptions> = {}) {
  const logger = new RecordingLogger();
  const engine = new Engine({ logger, ...opts });
  const all: Decision[] = [];
  const feed = (...pkts: (Packet | Packet[])[]): string[] => {
    const out: string[] = [];
    for (const p of pkts.flat()) {
      for (const d of engine.process(p)) {
        all.push(d);
        out.push(show(d));
      }
    }
    return out;
  };
  return { logger, engine, feed, all };
}

function show(d: Decision): string {
  return d.type === 'hole'
    ? `#${d.session} ${d.via} hole ${d.hole.src} -> ${d.hole.dst}.${d.hole.port}`
    : `#${d.session} ${d.via} refuse ${d.reason}`;
}

const v4: FlowSpec = { family: 4, client: '198.18.1.2', server: '198.18.2.2', clientPort: 40012 };
const v6: FlowSpec = { family: 6, client: 'fd00:1::2', server: 'fd00:2::2', clientPort: 40012 };

test('IPv4 passive and active, with session log lines', () => {
  const { feed, logger, engine } = setup();
  const f = new TcpFlow(v4);
  assert.equal(feed(f.open(), f.server('220 hi\r\n'), f.client('USER a\r\n'), f.client('PASV\r\n')), []);
  assert.equal(feed(f.server('227 Entering Passive Mode (198,18,2,2,195,80).\r\n')), ['#1 227 hole 198.18.1.2 -> 198.18.2.2.50000']);
  assert.equal(feed(f.client('PORT 198,18,1,2,195,81\r\n')), ['#1 PORT hole 198.18.2.2 -> 198.18.1.2.50001']);
  assert.ok(logger.lines.includes('debug #1 new session 198.18.1.2.40012 -> 198.18.2.2.21'), logger.lines.join('\n'));
  const s = engine.stats();
  assert.equal(s, { packets: 8, sessions: 1, lines: 5, announcements: 2, refused: 0, errors: 0 });
});

test('IPv6 EPSV/229, EPRT, LPRT, 228, also behind extension headers', () => {
  const { feed, engine } = setup();
  const f = new TcpFlow(v6);
  assert.equal(feed(f.open(), f.client('EPSV\r\n'), f.server('229 Entering Extended Passive Mode (|||50000|)\r\n')), ['#1 229 hole fd00:1::2 -> fd00:2::2.50000']);
  assert.equal(feed(f.client('EPRT |2|fd00:1::2|50001|\r\n')), ['#1 EPRT hole fd00:2::2 -> fd00:1::2.50001']);
  assert.equal(feed(f.client('LPRT 6,16,253,0,0,1,0,0,0,0,0,0,0,0,0,0,0,2,2,195,82\r\n')), ['#1 LPRT hole fd00:2::2 -> fd00:1::2.50002']);
  assert.equal(feed(f.server('228 Entering Long Passive Mode (6,16,253,0,0,2,0,0,0,0,0,0,0,0,0,0,0,2,2,195,83)\r\n')), ['#1 228 hole fd00:1::2 -> fd00:2::2.50003']);
  // a packet with hop-by-hop, routing and destination options before TCP
  const data = buildTcp({
    family: 6, src: 'fd00:1::2', dst: 'fd00:2::2', sport: 40012, dport: 21, seq: f.cseq,
    payload: 'EPRT |2|fd00:1::2|50004|\r\n', ext: [{ type: 0 }, { type: 43 }, { type: 60, length: 16 }],
  });
  assert.equal(feed({ data, time: 100 }), ['#1 EPRT hole fd00:2::2 -> fd00:1::2.50004']);
  assert.is(engine.stats().announcements, 5);
});

test('hostile announcements are refused or rejected with a log line each', () => {
  const { feed, logger, engine } = setup();
  const f = new TcpFlow(v4);
  feed(f.open());
  const rows: [Packet, string[], RegExp][] = [
    [f.server('227 Entering Passive Mode (198,18,2,9,195,80)\r\n'), ['#1 227 refuse bounce: announced 198.18.2.9, peer is 198.18.2.2'], /^notice #1 227 from server refused: bounce/],
    [f.client('PORT 198,18,1,2,0,80\r\n'), ['#1 PORT refuse port 80 < 1024'], /^notice #1 PORT from client refused: port 80 < 1024$/],
    [f.client('EPRT |2|fd00:1::2|50000|\r\n'), ['#1 EPRT refuse family mismatch: IPv6 announced on IPv4 control'], /family mismatch/],
    [f.client('PORT 198,18,1,256,195,80\r\n'), [], /^notice #1 bad PORT from client: octet 256 > 255: "PORT 198,18,1,256,195,80"$/],
    [f.client('EPRT |1|198.18.1.2|65536|\r\n'), [], /^notice #1 bad EPRT from client: port 65536 > 65535/],
    [f.client('PORT 198,18,1,2,0,0\r\n'), [], /^notice #1 bad PORT from client: port 0/],
    [f.client('EPRT |1|198.18.1.2\x00|50000|\r\n'), [], /^notice #1 bad EPRT from client: NUL in line: "EPRT \|1\|198\.18\.1\.2\\x00\|50000\|"$/],
    [f.client('PORT ' + 'x'.repeat(600) + '\r\n'), [], /^notice #1 overlong line from client discarded \(605 > 512 bytes\)$/],
  ];
  for (const [p, want, logRe] of rows) {
    const before = logger.lines.length;
    assert.equal(feed(p), want, String(logRe));
    const fresh = logger.lines.slice(before);
    assert.ok(fresh.some((l) => logRe.test(l)), `${logRe} in\n${fresh.join('\n')}`);
  }
  const s = engine.stats();
  assert.is(s.refused, 3);
  assert.is(s.errors, 5);
});

test('reply-looking lines from the client and commands from the server open nothing', () => {
  const { feed } = setup();
  const f = new TcpFlow(v4);
  assert.equal(feed(
    f.open(),
    f.client('227 Entering Passive Mode (198,18,2,2,195,80)\r\n'),
    f.client('229 Entering Extended Passive Mode (|||50000|)\r\n'),
    f.server('PORT 198,18,2,2,195,80\r\n'),
    f.server('EPRT |1|198.18.2.2|50000|\r\n'),
  ), []);
});

test('multi-line replies: inner lines are text, never announcements', () => {
  const { feed } = setup();
  const f = new TcpFlow(v4);
  assert.equal(feed(
    f.open(),
    f.server('230-Welcome\r\n227 Entering Passive Mode (198,18,2,2,195,80)\r\n229 (|||50000|)\r\n230 Logged in\r\n'),
    f.server('227-Entering Passive Mode (198,18,2,2,195,81)\r\n'),
    f.server('227 Entering Passive Mode (198,18,2,2,195,82)\r\n'),
  ), ['#1 227 hole 198.18.1.2 -> 198.18.2.2.50002']);
});

test('split, pipelined, retransmitted and out-of-order segments', () => {
  const { feed } = setup();
  const f = new TcpFlow(v4);
  feed(f.open());
  // split across three segments
  assert.equal(feed(f.client('PO'), f.client('RT 198,18,1,2,'), f.client('195,80\r')), []);
  assert.equal(feed(f.client('\n')), ['#1 PORT hole 198.18.2.2 -> 198.18.1.2.50000']);
  // pipelined in one segment
  const seq = f.cseq;
  const pipelined = f.client('TYPE I\r\nPORT 198,18,1,2,195,81\r\nRETR a\r\nPORT 198,18,1,2,195,82\r\n');
  assert.equal(feed(pipelined), ['#1 PORT hole 198.18.2.2 -> 198.18.1.2.50001', '#1 PORT hole 198.18.2.2 -> 198.18.1.2.50002']);
  // an exact retransmit and an overlapping one decide nothing again
  assert.equal(feed({ data: pipelined.data, time: 50 }), []);
  assert.equal(feed(f.client('PORT 198,18,1,2,195,82\r\nPORT 198,18,1,2,195,83\r\n', { seq: seq + 40 })), ['#1 PORT hole 198.18.2.2 -> 198.18.1.2.50003']);
  // out of order: the second segment arrives first
  f.cseq = seq + 40 + 48;
  const a = f.client('PORT 198,18,1,2,195,84\r\n');
  const b = f.client('PORT 198,18,1,2,195,85\r\n');
  assert.equal(feed(b), []);
  assert.equal(feed(a), ['#1 PORT hole 198.18.2.2 -> 198.18.1.2.50004', '#1 PORT hole 198.18.2.2 -> 198.18.1.2.50005']);
});

test('pending bound counts decisions made within the same packet', () => {
  let open = 0;
  const { feed } = setup({ maxPendingPerSession: 2, pendingFor: () => open });
  const f = new TcpFlow(v4);
  feed(f.open());
  const three = 'PORT 198,18,1,2,195,80\r\nPORT 198,18,1,2,195,81\r\nPORT 198,18,1,2,195,82\r\n';
  assert.equal(feed(f.client(three)), [
    '#1 PORT hole 198.18.2.2 -> 198.18.1.2.50000',
    '#1 PORT hole 198.18.2.2 -> 198.18.1.2.50001',
    '#1 PORT refuse too many pending holes (2 >= 2)',
  ]);
  open = 2;
  assert.equal(feed(f.client('PORT 198,18,1,2,195,83\r\n')), ['#1 PORT refuse too many pending holes (2 >= 2)']);
  open = 0;
  assert.equal(feed(f.client('PORT 198,18,1,2,195,84\r\n')), ['#1 PORT hole 198.18.2.2 -> 198.18.1.2.50004']);
});

test('mid-stream pickup: no SYN seen, server side first', () => {
  const { feed, logger } = setup();
  const f = new TcpFlow({ ...v6, clientIsn: 0xfffffff0, serverIsn: 77777 });
  assert.equal(feed(f.server('229 Entering Extended Passive Mode (|||50000|)\r\n')), ['#1 229 hole fd00:1::2 -> fd00:2::2.50000']);
  assert.equal(feed(f.client('EPRT |2|fd00:1::2|50001|\r\n'), f.client('EPRT |2|fd00:1::2|50002|\r\n')), [
    '#1 EPRT hole fd00:2::2 -> fd00:1::2.50001',
    '#1 EPRT hole fd00:2::2 -> fd00:1::2.50002',
  ]);
  assert.ok(logger.has(/^debug #1 new session fd00:1::2\.40012 -> fd00:2::2\.21 \(picked up mid-stream\)$/), logger.lines.join('\n'));
});

test('a client reusing its port: the new connection gets a new session, whether or not its SYN is seen', () => {
  for (const selective of [false, true]) {
    for (const isn of [0x10, 0x80000010, 0x120000]) {
      const { feed, logger } = setup({ selective });
      // The old connection: its end never queued (data-only and selective
      // rules queue neither FIN nor SYN), and it stopped inside a multi-line
      // reply with half a line pending.
      const old = new TcpFlow({ ...v6, clientIsn: 0x40000000, serverIsn: 0x40000000 });
      assert.equal(feed(old.server('230-Welcome\r\n'), old.server('230-half a li')), []);
      // The new one on the same ports, sequence numbers far from the old ones
      const next = new TcpFlow({ ...v6, clientIsn: isn, serverIsn: isn + 0x7000000 });
      assert.equal(feed(next.server('229 Entering Extended Passive Mode (|||50000|)\r\n')), ['#2 229 hole fd00:1::2 -> fd00:2::2.50000'], `isn ${isn.toString(16)}`);
      assert.ok(logger.has(/^debug #1 session end: replaced by a new connection on the same addresses and ports$/), logger.lines.join('\n'));
      assert.equal(feed(next.client('EPRT |2|fd00:1::2|50001|\r\n')), ['#2 EPRT hole fd00:2::2 -> fd00:1::2.50001']);
    }
  }
  // With the SYN seen (every segment queued), a SYN past what the old
  // session expects is a new connection too, and forgets the old multi-line reply.
  const { feed, logger } = setup();
  const old = new TcpFlow({ ...v4, clientIsn: 1000, serverIsn: 5000 });
  assert.equal(feed(old.open(), old.server('230-Welcome\r\n')), []);
  const next = new TcpFlow({ ...v4, clientIsn: 900000, serverIsn: 7000 });
  assert.equal(feed(next.open(), next.server('227 Entering Passive Mode (198,18,2,2,195,80)\r\n')), ['#2 227 hole 198.18.1.2 -> 198.18.2.2.50000']);
  assert.ok(logger.has(/^debug #1 session end: replaced/), logger.lines.join('\n'));
  // Retransmissions, overlaps and small gaps of one connection replace nothing.
  const one = setup();
  const f = new TcpFlow(v4);
  one.feed(f.open(), f.client('USER a\r\n'));
  const seq = f.cseq;
  one.feed(f.client('USER a\r\n', { seq: seq - 8 }), f.client('PASS b\r\n', { seq: seq + 4000 }));
  assert.not.ok(one.logger.has(/replaced/), one.logger.lines.join('\n'));
});

test('the server\'s 221 or 421 ends the session: a port reused at once, sequence numbers just past the old ones, starts afresh', () => {
  for (const code of ['221', '421']) {
    const { feed, logger } = setup();
    const old = new TcpFlow({ ...v6, clientIsn: 1000, serverIsn: 5000 });
    // as the data-only rules queue it: no SYN, no FIN
    assert.equal(feed(old.server('220 hi\r\n'), old.client('QUIT\r\n'), old.server(`${code} Goodbye.\r\n`)), []);
    assert.ok(logger.has(new RegExp(`^debug #1 session end: the server closes it \\(${code}\\)$`)), logger.lines.join('\n'));
    // Linux picks the new connection's sequence numbers just past the old ones
    const next = new TcpFlow({ ...v6, clientIsn: old.cseq + 70000, serverIsn: old.sseq + 70000 });
    assert.equal(feed(next.server('220 again\r\n'), next.client('EPSV\r\n'), next.server('229 Entering Extended Passive Mode (|||50000|)\r\n')),
      ['#2 229 hole fd00:1::2 -> fd00:2::2.50000']);
  }
  // a 221 line inside a multi-line reply is text, and ends nothing
  const { feed, logger } = setup();
  const f = new TcpFlow(v4);
  feed(f.open(), f.server('211-Status\r\n221 not the end\r\n211 End\r\n'));
  assert.not.ok(logger.has(/closes it/), logger.lines.join('\n'));
  assert.equal(feed(f.server('227 Entering Passive Mode (198,18,2,2,195,80)\r\n')), ['#1 227 hole 198.18.1.2 -> 198.18.2.2.50000']);
});

test('sessions are forgotten on RST, on FIN from both sides, on idle, and by eviction', () => {
  const { feed, engine, logger } = setup({ idleTimeoutMs: 1000, maxSessions: 3 });
  const mk = (port: number) => new TcpFlow({ ...v4, clientPort: port });
  const a = mk(1001);
  const b = mk(1002);
  const c = mk(1003);
  feed(a.open(), b.open(), c.open());
  assert.is(engine.stats().sessions, 3);
  // RST ends a
  feed(a.client('', { flags: 'R' }));
  assert.is(engine.stats().sessions, 2);
  assert.ok(logger.has(/^debug #1 session end: reset$/));
  // a RST for an unknown session creates nothing
  feed(mk(1009).client('', { flags: 'RA' }));
  assert.is(engine.stats().sessions, 2);
  // FIN from one side keeps b, from both ends it; the FIN's payload is still parsed
  feed(b.client('', { flags: 'FA' }));
  assert.is(engine.stats().sessions, 2);
  assert.equal(feed(b.server('227 Entering Passive Mode (198,18,2,2,195,80)\r\n', { flags: 'FPA' })), ['#2 227 hole 198.18.1.2 -> 198.18.2.2.50000']);
  assert.is(engine.stats().sessions, 1);
  assert.ok(logger.has(/^debug #2 session end: closed$/));
  // the last ACK after both FINs, and a bare ACK of an unknown flow, start nothing
  feed(b.client('', { flags: 'A' }), mk(1010).client('', { flags: 'A' }), mk(1011).client('', { flags: 'FA' }));
  assert.is(engine.stats().sessions, 1);
  // idle: c last seen at time 9; expiry at 9 + 1000
  const last = c.time;
  engine.expire(last + 999);
  assert.is(engine.stats().sessions, 1);
  engine.expire(last + 1000);
  assert.is(engine.stats().sessions, 0);
  assert.ok(logger.has(/^debug #3 session end: idle, forgotten$/));
  // after being forgotten, the same flow is a new session with the next id
  assert.equal(feed(c.client('PORT 198,18,1,2,195,80\r\n')), ['#4 PORT hole 198.18.2.2 -> 198.18.1.2.50000']);
  // eviction of the least recently used when full
  const d = mk(1004);
  const e = mk(1005);
  const g = mk(1006);
  feed(d.client('NOOP\r\n'), e.client('NOOP\r\n'), c.client('NOOP\r\n'), g.client('NOOP\r\n'));
  assert.is(engine.stats().sessions, 3);
  assert.ok(logger.has(/^notice #5 session end: evicted \(session table full\)$/), logger.lines.join('\n'));
  assert.equal(feed(c.client('PORT 198,18,1,2,195,81\r\n')), ['#4 PORT hole 198.18.2.2 -> 198.18.1.2.50001']);
});

test('flows that differ in one address byte or one port are separate sessions, IPv4 and IPv6', () => {
  // The session key packs the address bytes in pairs: a wrong shift or index
  // would make two of these flows share a session (and its state).
  for (const family of [4, 6] as const) {
    const { feed, engine } = setup();
    const base = family === 4 ? v4 : v6;
    const client = parseAddr(family, base.client)!;
    const server = parseAddr(family, base.server)!;
    const specs: FlowSpec[] = [base, { ...base, clientPort: base.clientPort! + 1 }];
    for (let i = 0; i < client.length; i++) {
      const c = client.slice();
      c[i] ^= 0x80;
      specs.push({ ...base, client: formatAddr(family, c) });
      const v = server.slice();
      v[i] ^= 0x01;
      specs.push({ ...base, server: formatAddr(family, v) });
    }
    for (const spec of specs) feed(new TcpFlow(spec).client('NOOP\r\n'));
    assert.is(engine.stats().sessions, specs.length, `IPv${family}`);
    // and each flow finds its own session again
    for (const spec of specs) feed(new TcpFlow(spec).client('NOOP\r\n'));
    assert.is(engine.stats().sessions, specs.length, `IPv${family}, again`);
  }
});

test('packets in one reused Buffer (a capture\'s receive buffer): what the engine keeps is a copy', () => {
  // NFQUEUE hands the engine views into one receive buffer, a Buffer, whose
  // slice() is a view and not a copy: session addresses and held segments
  // must survive the buffer being read into again.
  const { engine, feed } = setup();
  const rbuf = Buffer.alloc(2048);
  const viaBuffer = (p: Packet): Packet => {
    rbuf.fill(0xee);
    rbuf.set(p.data, 100);
    return { data: rbuf.subarray(100, 100 + p.data.length), time: p.time };
  };
  const f = new TcpFlow(v6);
  for (const p of f.open()) feed(viaBuffer(p));
  rbuf.fill(0xee);
  // an EPRT split in two, the second half first: it is held until the first comes
  const a = f.client(`EPRT |2|${v6.client}|`);
  const b = f.client('50000|\r\n');
  assert.equal(feed(viaBuffer(b)), []);
  rbuf.fill(0xee);
  assert.equal(feed(viaBuffer(a)), [`#1 EPRT hole ${v6.server} -> ${v6.client}.50000`]);
  // the session's addresses, made from the SYN's bytes long overwritten
  const d = engine.process(viaBuffer(f.server('229 Entering Extended Passive Mode (|||50001|)\r\n')));
  assert.is(d.length, 1);
  const h = d[0].type === 'hole' ? d[0].hole : null;
  assert.equal([...(h?.srcBytes ?? [])], [...parseAddr(6, v6.client)!]);
  assert.equal([...(h?.dstBytes ?? [])], [...parseAddr(6, v6.server)!]);
});

test('non-TCP, other ports, fragments and damaged packets are ignored without throwing', () => {
  const { feed, engine } = setup();
  const base = { family: 4 as const, src: '198.18.1.2', dst: '198.18.2.2', sport: 40000, seq: 1, payload: 'PORT 198,18,1,2,195,80\r\n' };
  const rows: Uint8Array[] = [
    buildTcp({ ...base, dport: 22 }),
    buildTcp({ ...base, dport: 21, protocol: 17 }),
    buildTcp({ ...base, dport: 21, fragment: { offset: 3 } }),
    buildTcp({ ...base, dport: 21 }).subarray(0, 30),
    new Uint8Array(0),
    Uint8Array.of(0x45),
    new Uint8Array(60).fill(0xff),
  ];
  for (const data of rows) assert.equal(feed({ data, time: 1 }), []);
  assert.is(engine.stats().sessions, 0);
  assert.is(engine.stats().errors, 4);
  assert.is(engine.stats().packets, rows.length);
  // a custom control port
  const other = setup({ controlPort: 2121 });
  assert.equal(other.feed({ data: buildTcp({ ...base, dport: 2121 }), time: 1 }), ['#1 PORT hole 198.18.2.2 -> 198.18.1.2.50000']);
});

test('process() never throws: an internal error is logged at err', () => {
  const { engine, logger } = setup({ pendingFor: () => { throw new Error('boom'); } });
  const f = new TcpFlow(v4);
  assert.equal(engine.process(f.client('PORT 198,18,1,2,195,80\r\n')), []);
  assert.ok(logger.has(/^err internal error on packet: Error: boom/));
  assert.is(engine.stats().errors, 1);
  // and the engine keeps working afterwards
  assert.equal(engine.process(f.client('NOOP\r\n')), []);
});

test('random packets through the engine never throw', () => {
  const { engine } = setup({ maxSessions: 50 });
  let x = 5;
  const rnd = () => ((x = (x * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  const f = new TcpFlow(v6);
  const seeds = [f.client('EPRT |2|fd00:1::2|50000|\r\n'), f.server('229 (|||50000|)\r\n'), f.client('', { flags: 'S' })];
  for (let i = 0; i < 20000; i++) {
    const p = seeds[i % seeds.length].data.slice();
    for (let k = 0; k < 3; k++) p[40 + (rnd() % (p.length - 40))] = rnd();
    if (i % 7 === 0) p[rnd() % p.length] = rnd();
    engine.process({ data: p, time: i });
  }
  assert.ok(engine.stats().packets === 20000);
});

test('throughput sanity (printed, not asserted)', () => {
  // Fresh sequence numbers throughout (no retransmits), a quarter of the packets announce.
  const f = new TcpFlow(v4);
  const pkts: Packet[] = [...f.open()];
  for (let i = 0; i < 10_000; i++) {
    pkts.push(f.client('NOOP\r\n'), f.server('200 NOOP ok\r\n'), f.client('EPSV\r\n'), f.server('229 Entering Extended Passive Mode (|||50000|)\r\n'));
  }
  const quiet: Logger = { log: () => {} };
  let n = 0;
  let holes = 0;
  const t0 = process.hrtime.bigint();
  for (let round = 0; round < 8; round++) {
    const engine = new Engine({ logger: quiet });
    for (const p of pkts) holes += engine.process(p).length;
    n += pkts.length;
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  assert.is(holes, 8 * 10_000);
  console.log(`\n  engine: ${n} control packets (${holes} holes) in ${ms.toFixed(0)} ms = ${Math.round((n / ms) * 1000)} packets/s`);
});


test('selective: lines the kernel did not queue are skipped, announcements after them still open', () => {
  for (const selective of [true, false]) {
    const { feed } = setup({ selective });
    const f = new TcpFlow(v6);
    f.open(); // the handshake is not queued either
    f.server('220 hi\r\n');
    feed(f.client('USER a\r\n')); // this one was queued (a partial line, say)
    f.client('EPSV\r\n');
    const got = feed(f.server('229 Entering Extended Passive Mode (|||50000|)\r\n'));
    assert.equal(got, ['#1 229 hole fd00:1::2 -> fd00:2::2.50000'], `selective ${selective}`);
    f.server('150 ok\r\n');
    f.server('226 done\r\n');
    f.client('EPRT |2|fd00:1::');
    // the next segment after a gap: without -s it waits for the gap forever
    assert.equal(feed(f.client('EPRT |2|fd00:1::2|50001|\r\n')), selective ? ['#1 EPRT hole fd00:2::2 -> fd00:1::2.50001'] : [], `selective ${selective}`);
  }
});

test('selective: seeAll follows multi-line replies, and a fake 229 inside one opens nothing', () => {
  const { feed } = setup({ selective: true });
  const f = new TcpFlow(v4);
  const p1 = f.server('211-Status of the server\r\n');
  feed(p1);
  assert.is(p1.seeAll, true);
  f.server(' a file listing, not queued\r\n');
  const fake = f.server(' 229 Entering Extended Passive Mode (|||50000|)\r\n229 Entering Extended Passive Mode (|||50001|)\r\n');
  assert.equal(feed(fake), []);
  assert.is(fake.seeAll, true);
  const end = f.server('211 End of status\r\n');
  assert.equal(feed(end), []);
  assert.is(end.seeAll, false);
  const real = f.server('227 Entering Passive Mode (198,18,2,2,195,82)\r\n');
  assert.equal(feed(real), ['#1 227 hole 198.18.1.2 -> 198.18.2.2.50002']);
  assert.is(real.seeAll, false);
  const fromClient = f.client('PORT 198,18,1,2,195,83\r\n');
  feed(fromClient);
  assert.is(fromClient.seeAll, undefined, 'client packets leave the mark alone');
  // without -s the engine never asks
  const plain = setup();
  const g = new TcpFlow(v4);
  const q = g.server('211-Status\r\n');
  plain.feed(q);
  assert.is(q.seeAll, undefined);
});

test.run();
