/**
 * The benchmark's control-packet corpus: one big array of IPv4/IPv6 packets
 * made of many FTP control sessions, interleaved as on a busy gateway.
 *
 * Session templates come from the real traces in compat/traces/*.pcap (only
 * the port-21 packets, split by 4-tuple) when there are any, and otherwise
 * (or in addition, with `synthetic`) from scripted sessions built with the
 * test packet builder.  Each template is replicated with the client port
 * shifted, so every copy is a session of its own; addresses are kept, so the
 * announcements in PORT/EPRT/227 still name the control peers and pass the
 * anti-bounce check.  Checksums are not fixed after the rewrite: the engine
 * does not verify them (the kernel did, before queueing).
 */
import * as fs from 'fs';
import * as path from 'path';
import { parsePcap } from '../src/pcap';
import type { Packet } from '../src/types';
import { TcpFlow } from '../test/unit/build-packet';

/** One control session: packets in order, with the side each came from. */
export interface Template {
  name: string;
  packets: Uint8Array[];
  fromClient: boolean[];
}

export interface Corpus {
  packets: Packet[];
  sessions: number;
  /** where the templates came from, for the report */
  source: string;
  templates: string[];
}

const CONTROL_PORT = 21;

/** Offset of the TCP header, or -1 (IPv6 extension headers are not walked: such packets are kept as they are). */
function tcpOffset(p: Uint8Array): number {
  const v = p[0] >> 4;
  if (v === 4 && p.length >= 20 && p[9] === 6) return (p[0] & 0x0f) * 4; // RFC 791: IHL in 32-bit words
  if (v === 6 && p.length >= 60 && p[6] === 6) return 40; // RFC 8200: fixed header, next header TCP
  return -1;
}

function port(p: Uint8Array, off: number): number {
  return (p[off] << 8) | p[off + 1];
}

/** Scripted sessions like curl, lftp and tnftp produce them (RFC 959 replies, RFC 2428 EPSV/EPRT). */
export function syntheticTemplates(): Template[] {
  const out: Template[] = [];
  const mk = (name: string, family: 4 | 6, client: string, server: string, body: (f: TcpFlow, add: (pkt: Packet, c: boolean) => void) => void) => {
    const f = new TcpFlow({ family, client, server, clientPort: 40000 });
    const t: Template = { name, packets: [], fromClient: [] };
    const add = (pkt: Packet, c: boolean) => {
      t.packets.push(pkt.data);
      t.fromClient.push(c);
    };
    const [syn, synack, ack] = f.open();
    add(syn, true);
    add(synack, false);
    add(ack, true);
    body(f, add);
    // Orderly close: FIN from the server after 221, FIN from the client, last ACKs.
    add(f.server('', { flags: 'FA' }), false);
    add(f.client('', { flags: 'FA' }), true);
    add(f.server('', { flags: 'A' }), false);
    out.push(t);
  };
  /** a client line, the server's reply lines (one segment each), the client's ACK */
  const exchange = (f: TcpFlow, add: (pkt: Packet, c: boolean) => void, cmd: string | null, replies: string[]) => {
    if (cmd !== null) add(f.client(cmd + '\r\n'), true);
    for (const r of replies) add(f.server(r + '\r\n'), false);
    add(f.client(''), true);
  };
  const login = (f: TcpFlow, add: (pkt: Packet, c: boolean) => void, multi: boolean) => {
    exchange(f, add, null, ['220 (vsFTPd 3.0.3)']);
    exchange(f, add, 'USER anonymous', ['331 Please specify the password.']);
    exchange(f, add, 'PASS ftp@example.org', multi
      ? ['230-Welcome to the lab.', '230-PORT 1,2,3,4,5,6 is only text here', '230 Login successful.']
      : ['230 Login successful.']);
    exchange(f, add, 'PWD', ['257 "/" is the current directory']);
  };
  const retr = (f: TcpFlow, add: (pkt: Packet, c: boolean) => void) => {
    exchange(f, add, 'TYPE I', ['200 Switching to Binary mode.']);
    exchange(f, add, 'SIZE hello.txt', ['213 29']);
    add(f.client('RETR hello.txt\r\n'), true);
    add(f.server('150 Opening BINARY mode data connection for hello.txt (29 bytes).\r\n'), false);
    add(f.server('226 Transfer complete.\r\n'), false);
    add(f.client(''), true);
    exchange(f, add, 'QUIT', ['221 Goodbye.']);
  };
  mk('synthetic-epsv6', 6, 'fd00:c1::10', 'fd00:5e::10', (f, add) => {
    login(f, add, false);
    exchange(f, add, 'EPSV', ['229 Entering Extended Passive Mode (|||40001|)']);
    retr(f, add);
  });
  mk('synthetic-pasv4', 4, '198.18.1.10', '198.18.2.10', (f, add) => {
    login(f, add, true);
    exchange(f, add, 'PASV', ['227 Entering Passive Mode (198,18,2,10,156,66).']);
    retr(f, add);
  });
  mk('synthetic-port4', 4, '198.18.1.10', '198.18.2.10', (f, add) => {
    login(f, add, false);
    exchange(f, add, 'PORT 198,18,1,10,195,81', ['200 PORT command successful. Consider using PASV.']);
    retr(f, add);
  });
  mk('synthetic-eprt6', 6, 'fd00:c1::10', 'fd00:5e::10', (f, add) => {
    login(f, add, false);
    exchange(f, add, 'EPRT |2|fd00:c1::10|50001|', ['200 EPRT command successful. Consider using EPSV.']);
    exchange(f, add, 'LIST', ['150 Here comes the directory listing.', '226 Directory send OK.']);
    exchange(f, add, 'EPSV', ['229 Entering Extended Passive Mode (|||40002|)']);
    retr(f, add);
  });
  return out;
}

/** Control sessions (port 21, by 4-tuple) of every compat/traces/*.pcap. */
export function traceTemplates(dir: string): Template[] {
  if (!fs.existsSync(dir)) return [];
  const out: Template[] = [];
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.pcap')).sort()) {
    let recs;
    try {
      recs = parsePcap(fs.readFileSync(path.join(dir, file))).records;
    } catch {
      continue;
    }
    const byFlow = new Map<string, Template>();
    for (const r of recs) {
      const p = r.ip;
      if (p === null) continue;
      const off = tcpOffset(p);
      if (off < 0 || p.length < off + 20) continue;
      const sp = port(p, off);
      const dp = port(p, off + 2);
      if (sp !== CONTROL_PORT && dp !== CONTROL_PORT) continue;
      const fromClient = dp === CONTROL_PORT;
      const key = `${fromClient ? sp : dp}`;
      let t = byFlow.get(key);
      if (t === undefined) {
        t = { name: `${file.replace(/\.pcap$/, '')}:${key}`, packets: [], fromClient: [] };
        byFlow.set(key, t);
      }
      t.packets.push(p);
      t.fromClient.push(fromClient);
    }
    for (const t of byFlow.values()) if (t.packets.length >= 3) out.push(t);
  }
  return out;
}

export interface CorpusOptions {
  /** at least this many packets (default 200000) */
  minPackets?: number;
  /** sessions in progress at once (default 100) */
  concurrency?: number;
  /** ms between packets, virtual (default 0.01) */
  stepMs?: number;
  tracesDir?: string;
}

/**
 * Replicate the templates (round robin) into sessions with distinct client
 * ports, `concurrency` of them interleaved packet by packet.
 */
export function buildCorpus(opts: CorpusOptions = {}): Corpus {
  const minPackets = opts.minPackets ?? 200_000;
  const concurrency = opts.concurrency ?? 100;
  const step = opts.stepMs ?? 0.01;
  const fromTraces = traceTemplates(opts.tracesDir ?? path.join(__dirname, '..', '..', 'compat', 'traces'));
  const templates = fromTraces.length > 0 ? fromTraces : syntheticTemplates();
  const source = fromTraces.length > 0
    ? `${fromTraces.length} control sessions from compat/traces/*.pcap`
    : 'synthetic sessions (compat/traces/ has no pcap yet): EPSV/IPv6, PASV/IPv4, PORT/IPv4, EPRT+EPSV/IPv6';

  // Which copies make the corpus: enough to reach minPackets.
  const plan: Template[] = [];
  let total = 0;
  for (let i = 0; total < minPackets; i++) {
    const t = templates[i % templates.length];
    plan.push(t);
    total += t.packets.length;
  }

  const packets: Packet[] = [];
  const copy = (t: Template, idx: number, k: number): Uint8Array => {
    // A copy (Buffer#slice would share the pcap file's bytes).
    const p = new Uint8Array(t.packets[idx]);
    const off = tcpOffset(p);
    if (off >= 0) {
      // Client ports 1024..65023, never 21; a port comes back only after 64000 sessions.
      const cport = 1024 + (k % 64000);
      const at = t.fromClient[idx] ? off : off + 2;
      p[at] = cport >> 8;
      p[at + 1] = cport & 0xff;
    }
    return p;
  };
  const active: Array<{ t: Template; k: number; i: number }> = [];
  let next = 0;
  let time = 0;
  while (next < plan.length || active.length > 0) {
    while (active.length < concurrency && next < plan.length) {
      active.push({ t: plan[next], k: next, i: 0 });
      next++;
    }
    for (let a = 0; a < active.length; a++) {
      const s = active[a];
      packets.push({ data: copy(s.t, s.i, s.k), time });
      time += step;
      s.i++;
    }
    for (let a = active.length - 1; a >= 0; a--) if (active[a].i >= active[a].t.packets.length) active.splice(a, 1);
  }
  return { packets, sessions: plan.length, source, templates: templates.map((t) => t.name) };
}
