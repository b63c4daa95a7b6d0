/**
 * Generate the crafted hostile traces: compat/hostile/NAME.pcap + NAME.expect.
 *
 *   npx tsc -p . && node dist/compat/hostile/make.js [--out DIR]
 *
 * Every trace is built packet by packet with test/unit/build-packet.ts (real
 * IPv4/IPv6 + TCP headers with correct checksums) and written as a classic
 * pcap with LINKTYPE_RAW (101, https://www.tcpdump.org/linktypes.html), so
 * tcpdump -r reads it.  The output is deterministic: same bytes every run.
 *
 * NAME.expect states what must happen, derived by hand from DESIGN.md "Hole
 * semantics" (not from running the engine):
 *   # hostile: <what the trace does>
 *   # flags: -c 3         ftp6proxy options for the replay (only when needed)
 *   # refused: N          announcements policy must refuse (bounce, port, family)
 *   open SRC DST PORT     exactly these holes, nothing else (none: no line)
 *
 * Addresses are the lab's (test/lab/lab.ts): client fd00:c1::10 / 198.18.1.10,
 * server fd00:5e::10 / 198.18.2.10, a third host (victim) fd00:c1::20 / 198.18.1.20.
 */
import * as fs from 'fs';
import * as path from 'path';
import { TcpFlow } from '../../test/unit/build-packet';
import type { Family, Packet } from '../../src/types';

const C4 = '198.18.1.10';
const S4 = '198.18.2.10';
const V4 = '198.18.1.20';
const C6 = 'fd00:c1::10';
const S6 = 'fd00:5e::10';
const V6 = 'fd00:c1::20';

/** PORT/227 argument for an IPv4 address and port: h1,h2,h3,h4,p1,p2 */
function hp(addr: string, port: number): string {
  return `${addr.split('.').join(',')},${port >> 8},${port & 0xff}`;
}

export interface HostileTrace {
  name: string;
  what: string;
  flags?: string;
  refused: number;
  /** expected holes: [src, dst, port] */
  opens: Array<[string, string, number]>;
  packets: () => Packet[];
}

function flow(family: Family, clientPort = 40000, isn = 1000): TcpFlow {
  return new TcpFlow(family === 4
    ? { family, client: C4, server: S4, clientPort, clientIsn: isn, serverIsn: isn * 7 }
    : { family, client: C6, server: S6, clientPort, clientIsn: isn, serverIsn: isn * 7 });
}

/** Handshake plus the greeting and a login, as every real session starts. */
function start(f: TcpFlow): Packet[] {
  return [
    ...f.open(),
    f.server('220 hostile test server\r\n'),
    f.client('USER anonymous\r\n'),
    f.server('331 Please specify the password.\r\n'),
    f.client('PASS x@example.org\r\n'),
    f.server('230 Login successful.\r\n'),
  ];
}

function finish(f: TcpFlow): Packet[] {
  return [
    f.client('QUIT\r\n'),
    f.server('221 Goodbye.\r\n'),
    f.server('', { flags: 'FA' }),
    f.client('', { flags: 'FA' }),
  ];
}

/** Deterministic bytes (xorshift32), so the garbage trace is reproducible. */
function noise(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

function cat(...parts: Array<string | Uint8Array>): Uint8Array {
  const bs = parts.map((p) => (typeof p === 'string' ? Uint8Array.from(p, (c) => c.charCodeAt(0) & 0xff) : p));
  const out = new Uint8Array(bs.reduce((n, b) => n + b.length, 0));
  let o = 0;
  for (const b of bs) { out.set(b, o); o += b.length; }
  return out;
}

export const TRACES: HostileTrace[] = [
  {
    name: 'bounce-port-v4',
    what: 'PORT naming a third host on the client LAN (FTP bounce, CERT CA-1997-27)',
    refused: 1,
    opens: [],
    packets: () => {
      const f = flow(4);
      return [...start(f), f.client(`PORT ${hp(V4, 50000)}\r\n`), f.server('200 PORT command successful.\r\n'), ...finish(f)];
    },
  },
  {
    name: 'bounce-eprt-v6',
    what: 'EPRT naming a third host; then EPRT naming the server itself',
    refused: 2,
    opens: [],
    packets: () => {
      const f = flow(6);
      return [...start(f),
        f.client(`EPRT |2|${V6}|50000|\r\n`), f.server('200 EPRT command successful.\r\n'),
        f.client(`EPRT |2|${S6}|50001|\r\n`), f.server('200 EPRT command successful.\r\n'),
        ...finish(f)];
    },
  },
  {
    name: 'bounce-227-v4',
    what: 'a 227 reply naming another host than the server (the client would be sent to the victim)',
    refused: 1,
    opens: [],
    packets: () => {
      const f = flow(4);
      return [...start(f), f.client('PASV\r\n'), f.server(`227 Entering Passive Mode (${hp(V4, 40000)}).\r\n`), ...finish(f)];
    },
  },
  {
    name: 'bounce-lprt-v6',
    what: 'LPRT (RFC 1639) naming a third host',
    refused: 1,
    opens: [],
    packets: () => {
      const f = flow(6);
      // fd00:c1::20 = fd 00 00 c1 0 ... 0 00 20; port 50000 = 195,80
      const h = [0xfd, 0, 0, 0xc1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20].join(',');
      return [...start(f), f.client(`LPRT 6,16,${h},2,195,80\r\n`), f.server('200 LPRT ok.\r\n'), ...finish(f)];
    },
  },
  {
    name: 'bad-ports-v4',
    what: 'PORT to 21, PORT to 0, EPRT to 65536, 227 to 1023: privileged, zero and out of range ports',
    refused: 2,
    opens: [],
    packets: () => {
      const f = flow(4);
      return [...start(f),
        f.client(`PORT ${hp(C4, 21)}\r\n`), f.server('200 ok\r\n'),
        f.client(`PORT ${hp(C4, 0)}\r\n`), f.server('200 ok\r\n'),
        f.client(`EPRT |1|${C4}|65536|\r\n`), f.server('200 ok\r\n'),
        f.client('PASV\r\n'), f.server(`227 Entering Passive Mode (${hp(S4, 1023)})\r\n`),
        ...finish(f)];
    },
  },
  {
    name: 'bad-ports-v6',
    what: 'EPRT to 1023, 229 to 80, 229 to 0, 229 to 65536, 229 to 99999',
    refused: 2,
    opens: [],
    packets: () => {
      const f = flow(6);
      return [...start(f),
        f.client(`EPRT |2|${C6}|1023|\r\n`), f.server('200 ok\r\n'),
        f.client('EPSV\r\n'), f.server('229 Entering Extended Passive Mode (|||80|)\r\n'),
        f.client('EPSV\r\n'), f.server('229 Entering Extended Passive Mode (|||0|)\r\n'),
        f.client('EPSV\r\n'), f.server('229 Entering Extended Passive Mode (|||65536|)\r\n'),
        f.client('EPSV\r\n'), f.server('229 Entering Extended Passive Mode (|||99999|)\r\n'),
        ...finish(f)];
    },
  },
  {
    name: 'family-mismatch-v6',
    what: 'on an IPv6 control connection: EPRT |1| with an IPv4 address, PORT, and a 227 reply',
    refused: 3,
    opens: [],
    packets: () => {
      const f = flow(6);
      return [...start(f),
        f.client(`EPRT |1|${C4}|50000|\r\n`), f.server('200 ok\r\n'),
        f.client(`PORT ${hp(C4, 50001)}\r\n`), f.server('200 ok\r\n'),
        f.client('PASV\r\n'), f.server(`227 Entering Passive Mode (${hp(S4, 40002)})\r\n`),
        ...finish(f)];
    },
  },
  {
    name: 'family-mismatch-v4',
    what: 'on an IPv4 control connection: EPRT |2| with an IPv6 address',
    refused: 1,
    opens: [],
    packets: () => {
      const f = flow(4);
      return [...start(f), f.client(`EPRT |2|${C6}|50000|\r\n`), f.server('200 ok\r\n'), ...finish(f)];
    },
  },
  {
    name: 'split-v6',
    what: 'EPRT split across two segments, a 229 reply split across three',
    refused: 0,
    opens: [[S6, C6, 50001], [C6, S6, 40001]],
    packets: () => {
      const f = flow(6);
      return [...start(f),
        f.client('EP'), f.client(`RT |2|${C6}|50001|\r\n`), f.server('200 ok\r\n'),
        f.client('EPSV\r\n'),
        f.server('229 Entering Ext'), f.server('ended Passive Mode (|||4'), f.server('0001|)\r\n'),
        ...finish(f)];
    },
  },
  {
    name: 'split-v4',
    what: 'PORT sent one byte per segment; then PORT and RETR pipelined in one segment',
    refused: 0,
    opens: [[S4, C4, 50002], [S4, C4, 50003]],
    packets: () => {
      const f = flow(4);
      const out = start(f); // before the bytewise segments: they take the next sequence numbers
      for (const c of `PORT ${hp(C4, 50002)}\r\n`) out.push(f.client(c));
      return [...out, f.server('200 ok\r\n'),
        f.client(`PORT ${hp(C4, 50003)}\r\nRETR a.txt\r\n`), f.server('200 ok\r\n'),
        f.server('150 Opening data connection.\r\n226 Transfer complete.\r\n'),
        ...finish(f)];
    },
  },
  {
    name: 'retransmit-v6',
    what: 'an EPRT segment sent twice, a 229 reply sent twice, and a retransmit overlapping new data',
    refused: 0,
    opens: [[S6, C6, 50004], [C6, S6, 40004], [S6, C6, 50005]],
    packets: () => {
      const f = flow(6);
      const out = start(f);
      const s1 = f.cseq;
      const eprt = `EPRT |2|${C6}|50004|\r\n`;
      out.push(f.client(eprt), f.client(eprt, { seq: s1 }), f.server('200 ok\r\n'));
      out.push(f.client('EPSV\r\n'));
      const r1 = f.sseq;
      const reply = '229 Entering Extended Passive Mode (|||40004|)\r\n';
      out.push(f.server(reply), f.server(reply, { seq: r1 }));
      // Old bytes (the EPSV line) followed by new bytes in one segment.
      const s2 = f.cseq;
      const epsvStart = (s2 - 'EPSV\r\n'.length) >>> 0;
      const next = `EPRT |2|${C6}|50005|\r\n`;
      out.push(f.client(`EPSV\r\n${next}`, { seq: epsvStart }));
      f.cseq = (s2 + next.length) >>> 0;
      out.push(f.server('200 ok\r\n'), ...finish(f));
      return out;
    },
  },
  {
    name: 'out-of-order-v4',
    what: 'the second half of a PORT arrives before the first; the same for a 227 reply',
    refused: 0,
    opens: [[S4, C4, 50006], [C4, S4, 40006]],
    packets: () => {
      const f = flow(4);
      const out = start(f);
      const a = 'PORT 198,18,';
      const b = `1,10,${50006 >> 8},${50006 & 0xff}\r\n`;
      const s = f.cseq;
      out.push(f.client(b, { seq: (s + a.length) >>> 0 }), f.client(a, { seq: s }));
      f.cseq = (s + a.length + b.length) >>> 0;
      out.push(f.server('200 ok\r\n'), f.client('PASV\r\n'));
      const ra = '227 Entering Passive Mode (198,18,2,';
      const rb = `10,${40006 >> 8},${40006 & 0xff}).\r\n`;
      const r = f.sseq;
      out.push(f.server(rb, { seq: (r + ra.length) >>> 0 }), f.server(ra, { seq: r }));
      f.sseq = (r + ra.length + rb.length) >>> 0;
      out.push(...finish(f));
      return out;
    },
  },
  {
    name: 'garbage-v6',
    what: 'binary noise from both sides (with stray CR LF), then one valid EPSV / 229 exchange',
    refused: 0,
    opens: [[C6, S6, 40007]],
    packets: () => {
      const f = flow(6);
      return [...start(f),
        f.client(cat(noise(300, 1), '\r\n', noise(200, 2), '\r\n')),
        f.server(cat(noise(400, 3), '\r\n')),
        f.client(cat('PORT ', noise(40, 4), '\r\n', 'EPRT ', noise(30, 5), '\r\n')),
        f.server(cat('227 ', noise(40, 6), '\r\n229 ', noise(30, 7), '\r\n')),
        f.client('EPSV\r\n'), f.server('229 Entering Extended Passive Mode (|||40007|)\r\n'),
        ...finish(f)];
    },
  },
  {
    name: 'nul-v4',
    what: 'PORT, EPRT and a 227 reply with a NUL byte inside the line',
    refused: 0,
    opens: [],
    packets: () => {
      const f = flow(4);
      return [...start(f),
        f.client(`PORT ${hp(C4, 50008)}\0\r\n`), f.server('500 ?\r\n'),
        f.client(`EPRT |1|198.18.\0${'1.10'}|50009|\r\n`), f.server('500 ?\r\n'),
        f.client('PASV\r\n'), f.server(`227 Entering Passive Mode (198,18,2,10,\0${156},${72})\r\n`),
        ...finish(f)];
    },
  },
  {
    name: 'overlong-v6',
    what: 'an EPRT hidden behind 600 bytes in one line, a 3000-byte line across segments, then valid EPRT and EPSV',
    refused: 0,
    opens: [[S6, C6, 50011], [C6, S6, 40011]],
    packets: () => {
      const f = flow(6);
      const x = () => f.client('X'.repeat(1000));
      return [...start(f),
        f.client(`EPRT |2|${C6}|50010|${' '.repeat(600)}\r\n`), f.server('500 ?\r\n'),
        f.client(`${'A'.repeat(600)}EPRT |2|${C6}|50010|\r\n`), f.server('500 ?\r\n'),
        x(), x(), x(), f.client('\r\n'), f.server('500 ?\r\n'),
        f.client(`EPRT |2|${C6}|50011|\r\n`), f.server('200 ok\r\n'),
        f.client('EPSV\r\n'), f.server('229 Entering Extended Passive Mode (|||40011|)\r\n'),
        ...finish(f)];
    },
  },
  {
    name: 'direction-confusion-v4',
    what: 'a server sending PORT, a client sending 227, and a 227 inside a multi-line 230 reply',
    refused: 0,
    opens: [],
    packets: () => {
      const f = flow(4);
      return [...f.open(),
        f.server('220 hostile test server\r\n'),
        f.client('USER anonymous\r\n'), f.server('331 Password.\r\n'),
        f.client('PASS x\r\n'),
        f.server(`230-Welcome\r\n227 Entering Passive Mode (${hp(S4, 40012)})\r\n230 Login successful.\r\n`),
        f.server(`PORT ${hp(C4, 50012)}\r\n`),
        f.client(`227 Entering Passive Mode (${hp(S4, 40013)})\r\n`), f.server('500 ?\r\n'),
        ...finish(f)];
    },
  },
  {
    name: 'mixed-case-v6',
    what: 'lower- and mixed-case commands (RFC 959: commands are case-insensitive)',
    refused: 0,
    opens: [[S6, C6, 50014], [C6, S6, 40014]],
    packets: () => {
      const f = flow(6);
      return [...start(f),
        f.client(`eprt |2|${C6}|50014|\r\n`), f.server('200 ok\r\n'),
        f.client('EpSv\r\n'), f.server('229 Entering Extended Passive Mode (|||40014|)\r\n'),
        ...finish(f)];
    },
  },
  {
    name: 'pool-exhaustion-v4',
    what: 'with -c 3: two sessions announce five passive ports in a burst (three holes, two refused by the pool), then one more after the holes expired',
    flags: '-c 3',
    refused: 0,
    opens: [[C4, S4, 40020], [C4, S4, 40021], [C4, S4, 40030], [C4, S4, 40031]],
    packets: () => {
      const a = flow(4, 40000, 1000);
      const b = flow(4, 40001, 3000);
      // One time line for both flows: each flow's clock is synced before it sends.
      const out = [...start(a)];
      b.time = a.time;
      out.push(...start(b));
      const pasv = (f: TcpFlow, port: number) => {
        f.time = Math.max(a.time, b.time);
        return [f.client('PASV\r\n'), f.server(`227 Entering Passive Mode (${hp(S4, port)}).\r\n`)];
      };
      out.push(...pasv(a, 40020), ...pasv(a, 40021), ...pasv(b, 40030), ...pasv(b, 40032), ...pasv(a, 40022));
      // 3 s later (-t 2): the holes are gone, the pool is free again
      a.time += 3000;
      out.push(...pasv(b, 40031));
      a.time = b.time;
      out.push(...finish(a));
      b.time = a.time;
      out.push(...finish(b));
      return out;
    },
  },
];

/** A classic pcap file (pcap(5)): little-endian, microseconds, LINKTYPE_RAW. */
export function writePcap(packets: Packet[], epochSec = 1700000000): Buffer {
  const parts: Buffer[] = [];
  const h = Buffer.alloc(24);
  h.writeUInt32LE(0xa1b2c3d4, 0);
  h.writeUInt16LE(2, 4); // version 2.4
  h.writeUInt16LE(4, 6);
  h.writeUInt32LE(65535, 16); // snaplen
  h.writeUInt32LE(101, 20); // LINKTYPE_RAW
  parts.push(h);
  for (const p of packets) {
    const r = Buffer.alloc(16);
    const us = Math.round(p.time * 1000);
    r.writeUInt32LE(epochSec + Math.floor(us / 1e6), 0);
    r.writeUInt32LE(us % 1e6, 4);
    r.writeUInt32LE(p.data.length, 8);
    r.writeUInt32LE(p.data.length, 12);
    parts.push(r, Buffer.from(p.data));
  }
  return Buffer.concat(parts);
}

export function expectText(t: HostileTrace): string {
  const lines = [`# hostile: ${t.what}`];
  if (t.flags !== undefined) lines.push(`# flags: ${t.flags}`);
  lines.push(`# refused: ${t.refused}`);
  if (t.opens.length === 0) lines.push('# no hole may open');
  for (const [src, dst, port] of t.opens) lines.push(`open ${src} ${dst} ${port}`);
  return lines.join('\n') + '\n';
}

function main(argv: string[]): number {
  let out = path.resolve(__dirname, '../../../compat/hostile');
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out' && i + 1 < argv.length) out = argv[++i];
    else {
      process.stderr.write('usage: node dist/compat/hostile/make.js [--out DIR]\n');
      return 1;
    }
  }
  fs.mkdirSync(out, { recursive: true });
  for (const t of TRACES) {
    fs.writeFileSync(path.join(out, `${t.name}.pcap`), writePcap(t.packets()));
    fs.writeFileSync(path.join(out, `${t.name}.expect`), expectText(t));
  }
  process.stdout.write(`wrote ${TRACES.length} hostile traces to ${out}\n`);
  return 0;
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
