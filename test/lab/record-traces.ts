/**
 * Regenerate the real-trace corpus compat/traces/NAME.pcap + NAME.expect.
 *
 *   npx tsc -p . && node dist/test/lab/record-traces.js [--out DIR] [--only SUBSTRING] [--keep-full]
 *
 * Root only (it builds the namespace lab with the 'open' gateway policy).
 * For each trace it starts the server, runs two tcpdumps on the gateway's
 * server-facing interface (one `tcp port 21`: the committed control-channel
 * pcap; one with no filter: kept in the lab directory to see the data
 * connections), runs the client, and derives NAME.expect without ftp6proxy:
 *
 *   1. `tcpdump -nn -t -r full.pcap 'tcp and not port 21'` lists the data
 *      connections; the first SYN of each (SYN without ACK, first of its
 *      4-tuple) gives a line `open SRC DST PORT` (initiator, acceptor,
 *      acceptor's port), in capture order.
 *   2. Cross-check: a small reader here (independent of src/) pulls the
 *      announcements (227/229 replies, PORT/EPRT commands) out of the control
 *      pcap. Every SYN must match an announcement, and an announcement no SYN
 *      used is written as `open ... # announced, unused` at its place in time.
 *
 * It also writes compat/traces/INDEX.md: every trace with its exact command
 * and the Debian package versions used.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ClientKind, Family, Lab, ServerKind, serverAvailable, sh, withLab } from './lab';

interface TraceSpec {
  name: string;
  server: ServerKind;
  client: ClientKind;
  family: Family;
  what: string;
  /** argv run in the client namespace. */
  argv: (lab: Lab, host: string, tmp: string) => string[];
  /** stdin (tnftp scripts). */
  input?: (lab: Lab, host: string, tmp: string) => string;
  /** Kill the client after this long (aborted transfers). */
  timeoutMs?: number;
  /** The client is expected to fail (aborted transfers). */
  aborts?: boolean;
}

const url = (host: string, p: string): string => `ftp://${host.includes(':') ? `[${host}]` : host}/${p}`;

const curl = (extra: string[], paths: string[]) => (_lab: Lab, host: string, tmp: string): string[] => {
  const a = ['curl', '-sS', '--connect-timeout', '5', ...extra];
  paths.forEach((p, i) => a.push('-o', path.join(tmp, `out${i}`), url(host, p)));
  return a;
};

const lftp = (settings: string[], cmds: string[]) => (_lab: Lab, host: string, tmp: string): string[] => [
  'lftp', '-c',
  ['set cmd:fail-exit yes', 'set net:timeout 5', 'set net:max-retries 1', 'set xfer:clobber yes',
    ...settings.map((s) => `set ${s}`), `open ${url(host, '')}`, `lcd ${tmp}`, ...cmds].join('; '),
];

const tnftp = (flags: string[]) => (_lab: Lab, host: string): string[] => ['tnftp', '-n', '-i', ...flags, host];
const tnftpScript = (cmds: string[]) => (_lab: Lab, _host: string, tmp: string): string =>
  ['user anonymous lab@example.org', `lcd ${tmp}`, 'binary', ...cmds, 'quit', ''].join('\n');

const wget = (extra: string[], p: string) => (_lab: Lab, host: string, tmp: string): string[] =>
  ['wget', '-q', '--timeout=5', '--tries=1', '-P', tmp, ...extra, url(host, p)];

/** The corpus. Names: <family>-<data commands>-<client>-<server>[-what]. */
const TRACES: TraceSpec[] = [
  // curl: one file per mode, IPv6 and IPv4.
  { name: 'v6-epsv-curl-vsftpd', server: 'vsftpd', client: 'curl', family: 6, what: 'RETR hello.txt, passive EPSV', argv: curl([], ['hello.txt']) },
  { name: 'v6-eprt-curl-vsftpd', server: 'vsftpd', client: 'curl', family: 6, what: 'RETR hello.txt, active EPRT', argv: curl(['-P', '-'], ['hello.txt']) },
  { name: 'v4-pasv-curl-vsftpd', server: 'vsftpd', client: 'curl', family: 4, what: 'RETR hello.txt, passive PASV', argv: curl(['--disable-epsv'], ['hello.txt']) },
  { name: 'v4-port-curl-vsftpd', server: 'vsftpd', client: 'curl', family: 4, what: 'RETR hello.txt, active PORT', argv: curl(['-P', '-', '--disable-eprt'], ['hello.txt']) },
  { name: 'v4-epsv-curl-pyftpdlib', server: 'pyftpdlib', client: 'curl', family: 4, what: 'RETR hello.txt, EPSV over IPv4', argv: curl([], ['hello.txt']) },
  { name: 'v4-eprt-curl-pyftpdlib', server: 'pyftpdlib', client: 'curl', family: 4, what: 'RETR hello.txt, EPRT over IPv4', argv: curl(['-P', '-'], ['hello.txt']) },
  { name: 'v6-epsv-curl-pyftpdlib-list-multi', server: 'pyftpdlib', client: 'curl', family: 6, what: 'one session: LIST pub/, RETR pub/a.txt, RETR pub/b.txt', argv: curl([], ['pub/', 'pub/a.txt', 'pub/b.txt']) },
  { name: 'v4-port-curl-pure-ftpd-multi', server: 'pure-ftpd', client: 'curl', family: 4, what: 'one session: RETR hello.txt, RETR pub/c.txt, active PORT', argv: curl(['-P', '-', '--disable-eprt'], ['hello.txt', 'pub/c.txt']) },
  // lftp: several transfers and listings in one session.
  { name: 'v6-epsv-lftp-vsftpd-mget', server: 'vsftpd', client: 'lftp', family: 6, what: 'one session: MLSD pub (glob), RETR a.txt b.txt c.txt', argv: lftp([], ['mget pub/*.txt']) },
  { name: 'v6-eprt-lftp-pyftpdlib-list-mget', server: 'pyftpdlib', client: 'lftp', family: 6, what: 'one session, active: LIST pub, then mget pub/*.txt', argv: lftp(['ftp:passive-mode off', 'ftp:use-mlsd no'], ['cls -l pub', 'mget pub/*.txt']) },
  { name: 'v4-pasv-lftp-pyftpdlib-list-get', server: 'pyftpdlib', client: 'lftp', family: 4, what: 'one session: LIST, RETR hello.txt, passive PASV', argv: lftp(['ftp:use-mlsd no'], ['cls -l', 'get hello.txt']) },
  { name: 'v4-port-lftp-vsftpd-mget', server: 'vsftpd', client: 'lftp', family: 4, what: 'one session, active PORT: mget pub/*.txt', argv: lftp(['ftp:passive-mode off'], ['mget pub/*.txt']) },
  { name: 'v4-epsv-lftp-pure-ftpd-mget', server: 'pure-ftpd', client: 'lftp', family: 4, what: 'one session, EPSV over IPv4: mget pub/*.txt', argv: lftp(['ftp:prefer-epsv yes'], ['mget pub/*.txt']) },
  // tnftp.
  { name: 'v6-epsv-tnftp-pyftpdlib-list-get', server: 'pyftpdlib', client: 'tnftp', family: 6, what: 'one session: LIST pub, RETR hello.txt', argv: tnftp(['-p', '-6']), input: tnftpScript(['ls pub ls.out', 'get hello.txt']) },
  { name: 'v6-eprt-tnftp-vsftpd', server: 'vsftpd', client: 'tnftp', family: 6, what: 'RETR hello.txt, active EPRT', argv: tnftp(['-A', '-6']), input: tnftpScript(['get hello.txt']) },
  { name: 'v4-pasv-tnftp-pure-ftpd-multi', server: 'pure-ftpd', client: 'tnftp', family: 4, what: 'one session, PASV (epsv4 off): CWD pub, LIST, RETR a.txt, RETR b.txt', argv: tnftp(['-p', '-4']), input: tnftpScript(['epsv4 off', 'cd pub', 'ls . ls.out', 'get a.txt', 'get b.txt']) },
  { name: 'v4-eprt-tnftp-vsftpd', server: 'vsftpd', client: 'tnftp', family: 4, what: 'RETR hello.txt, active EPRT over IPv4', argv: tnftp(['-A', '-4']), input: tnftpScript(['get hello.txt']) },
  { name: 'v4-port-tnftp-pyftpdlib-list', server: 'pyftpdlib', client: 'tnftp', family: 4, what: 'one session, active PORT (epsv4 off): LIST pub, RETR pub/a.txt', argv: tnftp(['-A', '-4']), input: tnftpScript(['epsv4 off', 'ls pub ls.out', 'get pub/a.txt a.txt']) },
  // wget.
  { name: 'v6-epsv-wget-pure-ftpd', server: 'pure-ftpd', client: 'wget', family: 6, what: 'RETR hello.txt, passive', argv: wget([], 'hello.txt') },
  { name: 'v6-eprt-wget-pyftpdlib', server: 'pyftpdlib', client: 'wget', family: 6, what: 'RETR hello.txt, active', argv: wget(['--no-passive-ftp'], 'hello.txt') },
  { name: 'v4-pasv-wget-vsftpd-recursive', server: 'vsftpd', client: 'wget', family: 4, what: 'recursive: LIST pub/, RETR a.txt b.txt c.txt in one session', argv: wget(['-r', '-np', '-nH'], 'pub/') },
  { name: 'v4-port-wget-pure-ftpd', server: 'pure-ftpd', client: 'wget', family: 4, what: 'RETR hello.txt, active PORT', argv: wget(['--no-passive-ftp'], 'hello.txt') },
  // Aborted transfers.
  { name: 'v6-epsv-curl-vsftpd-abort', server: 'vsftpd', client: 'curl', family: 6, what: 'RETR big.bin (32 MiB) aborted after 1 s (curl --limit-rate 16k --max-time 1)', argv: curl(['--limit-rate', '16k', '--max-time', '1'], ['big.bin']), aborts: true },
  { name: 'v4-pasv-lftp-vsftpd-abort', server: 'vsftpd', client: 'lftp', family: 4, what: 'RETR big.bin, lftp interrupted (SIGINT) after 1 s', argv: (lab, host, tmp) => ['timeout', '-s', 'INT', '1', ...lftp(['net:limit-rate 65536'], ['get big.bin'])(lab, host, tmp)], aborts: true },
  // vsftpd connects for an EPRT only at RETR (pyftpdlib connects at once, so it would use the hole).
  { name: 'v6-eprt-curl-vsftpd-unused', server: 'vsftpd', client: 'curl', family: 6, what: 'EPRT announced, then curl gives up on SIZE (--max-filesize) before RETR: the hole is never used', argv: curl(['-P', '-', '--max-filesize', '1000'], ['big.bin']), aborts: true },
];

// ---------------------------------------------------------------------------
// Expectation derivation, independent of src/: tcpdump for the SYNs, and a
// minimal pcap reader for the control-channel announcements.

export interface DataSyn { src: string; dst: string; sport: number; dport: number }

/** RFC 5952 form of an IPv6 address (WHATWG URL serialises IPv6 that way); IPv4 unchanged. */
export function canonical(a: string): string {
  if (!a.includes(':')) return a;
  return new URL(`http://[${a}]/`).hostname.replace(/^\[|\]$/g, '');
}

/** Data-connection SYNs from tcpdump's text output, first per 4-tuple, in order. */
export function synsFromTcpdump(text: string): DataSyn[] {
  const out: DataSyn[] = [];
  const seen = new Set<string>();
  for (const line of text.split('\n')) {
    // "IP6 fd00:c1::10.45678 > fd00:5e::10.40012: Flags [S], seq ..." (tcpdump -nn -t)
    const m = /^IP6? (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[S\],/.exec(line);
    if (!m) continue;
    const s: DataSyn = { src: canonical(m[1]), sport: Number(m[2]), dst: canonical(m[3]), dport: Number(m[4]) };
    const key = `${s.src} ${s.sport} ${s.dst} ${s.dport}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(s);
  }
  return out;
}

interface Segment { t: number; src: string; dst: string; sport: number; dport: number; seq: number; flags: number; payload: Buffer }

/** Ethernet (DLT 1) pcap -> TCP segments with payload. Only what the lab writes. */
export function readPcapSegments(buf: Buffer): Segment[] {
  const magic = buf.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && buf.readUInt32BE(0) !== 0xa1b2c3d4 && buf.readUInt32BE(0) !== 0xa1b23c4d) throw new Error('not a pcap file');
  const nano = (le ? magic : buf.readUInt32BE(0)) === 0xa1b23c4d;
  const u32 = (o: number): number => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const linktype = u32(20);
  if (linktype !== 1) throw new Error(`link type ${linktype}, expected Ethernet (1)`);
  const segs: Segment[] = [];
  for (let off = 24; off + 16 <= buf.length;) {
    const t = u32(off) + u32(off + 4) / (nano ? 1e9 : 1e6);
    const incl = u32(off + 8);
    const pkt = buf.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    if (pkt.length < 14) continue;
    const ethertype = pkt.readUInt16BE(12);
    let ip = pkt.subarray(14);
    let src: string;
    let dst: string;
    let l4: Buffer;
    if (ethertype === 0x0800) {
      if ((ip[0] >> 4) !== 4 || ip[9] !== 6) continue;
      const ihl = (ip[0] & 15) * 4;
      ip = ip.subarray(0, ip.readUInt16BE(2));
      src = [...ip.subarray(12, 16)].join('.');
      dst = [...ip.subarray(16, 20)].join('.');
      l4 = ip.subarray(ihl);
    } else if (ethertype === 0x86dd) {
      if (ip[6] !== 6) continue; // the lab's packets carry no extension headers
      const hex = (b: Buffer): string => canonical((b.toString('hex').match(/.{4}/g) ?? []).join(':'));
      src = hex(ip.subarray(8, 24));
      dst = hex(ip.subarray(24, 40));
      l4 = ip.subarray(40, 40 + ip.readUInt16BE(4));
    } else continue;
    const doff = (l4[12] >> 4) * 4;
    segs.push({ t, src, dst, sport: l4.readUInt16BE(0), dport: l4.readUInt16BE(2), seq: l4.readUInt32BE(4), flags: l4[13], payload: l4.subarray(doff) });
  }
  return segs;
}

/** Directions whose sequence numbers jump forward: bytes the capture missed. */
export function sequenceGaps(segs: Segment[]): string[] {
  const next = new Map<string, number>();
  const gaps: string[] = [];
  for (const s of segs) {
    const key = `${s.src}.${s.sport} > ${s.dst}.${s.dport}`;
    // TCP flags byte (RFC 9293): FIN 0x01, SYN 0x02.
    const len = s.payload.length + (s.flags & 0x02 ? 1 : 0) + (s.flags & 0x01 ? 1 : 0);
    const n = next.get(key);
    if (n !== undefined && ((s.seq - n) | 0) > 0) gaps.push(`${key}: ${(s.seq - n) | 0} bytes missing before seq ${s.seq}`);
    const end = (s.seq + len) >>> 0;
    if (n === undefined || ((end - n) | 0) > 0) next.set(key, end);
  }
  return gaps;
}

export interface Announcement { t: number; kind: string; src: string; dst: string; port: number; text: string }

/** Announcements in the control channel: 227/229 replies and PORT/EPRT commands. */
export function announcements(segs: Segment[]): Announcement[] {
  const out: Announcement[] = [];
  // Per-direction line buffers; retransmits (same seq seen) are skipped.
  const bufs = new Map<string, { text: string; seen: Set<number> }>();
  for (const s of segs) {
    if (s.payload.length === 0) continue;
    const key = `${s.src} ${s.sport} ${s.dst} ${s.dport}`;
    const b = bufs.get(key) ?? { text: '', seen: new Set<number>() };
    bufs.set(key, b);
    if (b.seen.has(s.seq)) continue;
    b.seen.add(s.seq);
    b.text += s.payload.toString('latin1');
    let nl: number;
    while ((nl = b.text.indexOf('\n')) >= 0) {
      const line = b.text.slice(0, nl).replace(/\r$/, '');
      b.text = b.text.slice(nl + 1);
      const fromServer = s.sport === 21;
      const client = fromServer ? s.dst : s.src;
      const server = fromServer ? s.src : s.dst;
      let m: RegExpExecArray | null;
      if (fromServer && (m = /^227 .*?(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)/.exec(line))) {
        out.push({ t: s.t, kind: '227', src: client, dst: `${m[1]}.${m[2]}.${m[3]}.${m[4]}`, port: Number(m[5]) * 256 + Number(m[6]), text: line });
      } else if (fromServer && (m = /^229 .*\((.)\1\1(\d+)\1\)/.exec(line))) {
        out.push({ t: s.t, kind: '229', src: client, dst: server, port: Number(m[2]), text: line });
      } else if (!fromServer && (m = /^PORT (\d+),(\d+),(\d+),(\d+),(\d+),(\d+)/i.exec(line))) {
        out.push({ t: s.t, kind: 'PORT', src: server, dst: `${m[1]}.${m[2]}.${m[3]}.${m[4]}`, port: Number(m[5]) * 256 + Number(m[6]), text: line });
      } else if (!fromServer && (m = /^EPRT (.)([12])\1([^|!]+)\1(\d+)\1/i.exec(line))) {
        out.push({ t: s.t, kind: 'EPRT', src: server, dst: canonical(m[3]), port: Number(m[4]), text: line });
      }
    }
  }
  return out;
}

/** The .expect text; throws when a SYN matches no announcement. */
export function expectText(syns: DataSyn[], anns: Announcement[], synTimes: number[]): string {
  const used = new Array<boolean>(anns.length).fill(false);
  const lines: Array<{ t: number; line: string }> = [];
  syns.forEach((s, i) => {
    const j = anns.findIndex((a, k) => !used[k] && a.src === s.src && a.dst === s.dst && a.port === s.dport);
    if (j < 0) throw new Error(`data SYN ${s.src} -> ${s.dst}:${s.dport} matches no announcement in the control channel`);
    used[j] = true;
    lines.push({ t: synTimes[i] ?? anns[j].t, line: `open ${s.src} ${s.dst} ${s.dport}` });
  });
  anns.forEach((a, k) => {
    if (!used[k]) lines.push({ t: a.t, line: `open ${a.src} ${a.dst} ${a.port} # announced, unused` });
  });
  lines.sort((x, y) => x.t - y.t);
  return lines.map((l) => `${l.line}\n`).join('');
}

/** SYN timestamps, same order as synsFromTcpdump (tcpdump -tt gives epoch seconds). */
function synTimesFromTcpdump(text: string): number[] {
  const out: number[] = [];
  const seen = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^(\d+\.\d+) IP6? (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[S\],/.exec(line);
    if (!m) continue;
    const key = `${canonical(m[2])} ${m[3]} ${canonical(m[4])} ${m[5]}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(Number(m[1]));
  }
  return out;
}

// ---------------------------------------------------------------------------

function versions(): string {
  const pkgs = ['vsftpd', 'python3-pyftpdlib', 'curl', 'lftp', 'tnftp', 'wget', 'tcpdump', 'iproute2', 'nftables'];
  const r = sh(['dpkg-query', '-W', '-f', '${Package} ${Version}\\n', ...pkgs]);
  let pure = '';
  const deb = fs.existsSync('/var/cache/ftp6proxy-lab') ? fs.readdirSync('/var/cache/ftp6proxy-lab').find((f) => f.startsWith('pure-ftpd_')) : undefined;
  if (deb) pure = `pure-ftpd ${deb.replace(/^pure-ftpd_|_amd64\.deb$|_[a-z0-9]+\.deb$/g, '').replace(/%3a/g, ':')} (apt-get download + dpkg-deb -x, see scripts/lab-deps.sh)\n`;
  return r.stdout + pure + `kernel ${sh(['uname', '-r']).stdout.trim()}\n`;
}

interface Recorded { section: string }

/** Record one trace; returns its INDEX.md section, or why it failed. */
async function recordOne(lab: Lab, s: TraceSpec, outDir: string, keepFull: boolean): Promise<Recorded | string> {
  const host = lab.addr.server[s.family];
  const tmp = path.join(lab.dir, `rec-${s.name}`);
  fs.mkdirSync(tmp, { recursive: true });
  const srv = await lab.startServer(s.server);
  const ctlFile = path.join(outDir, `${s.name}.pcap`);
  const fullFile = path.join(lab.dir, `${s.name}.full.pcap`);
  const ctl = await lab.startCapture(ctlFile, { filter: 'tcp port 21', snaplen: 65535 });
  const full = await lab.startCapture(fullFile, { snaplen: 128 });
  const argv = s.argv(lab, host, tmp);
  const input = s.input?.(lab, host, tmp);
  const r = await lab.runAsync(lab.ns.client, argv, { timeoutMs: s.timeoutMs ?? 20000, input });
  // Let the server see the client's FIN and close its side on the wire.
  await new Promise((res) => setTimeout(res, 300));
  const ctlStats = await ctl.stop();
  const fullStats = await full.stop();
  await srv.stop();
  if (ctlStats.dropped !== 0 || fullStats.dropped !== 0) return `tcpdump dropped packets (${ctlStats.dropped}, ${fullStats.dropped})`;
  if ((r.status === 0) === Boolean(s.aborts)) {
    return `client exit ${r.status ?? r.signal}${s.aborts ? ' (expected a failure)' : ''}: ${r.stderr.trim()}`;
  }
  const text = sh(['tcpdump', '-nn', '-tt', '-r', fullFile, 'tcp and not port 21']).stdout;
  const syns = synsFromTcpdump(text.replace(/^\d+\.\d+ /gm, ''));
  let expect: string;
  try {
    const segs = readPcapSegments(fs.readFileSync(ctlFile));
    const gaps = sequenceGaps(segs);
    if (gaps.length > 0) throw new Error(`control capture incomplete: ${gaps.join('; ')}`);
    const anns = announcements(segs);
    expect = expectText(syns, anns, synTimesFromTcpdump(text));
    // The name promises the data commands: v6-epsv-... must hold only 229 replies, etc.
    const want = { epsv: '229', pasv: '227', eprt: 'EPRT', port: 'PORT' }[s.name.split('-')[1]];
    const kinds = [...new Set(anns.map((a) => a.kind))];
    if (kinds.length !== 1 || kinds[0] !== want) throw new Error(`name says ${want}, control channel has ${kinds.join(',') || 'nothing'}`);
    const fam = s.family === 6 ? ':' : '.';
    if (!anns.every((a) => a.dst.includes(fam))) throw new Error(`name says IPv${s.family}, announcements disagree`);
  } catch (e) {
    return (e as Error).message;
  }
  fs.writeFileSync(path.join(outDir, `${s.name}.expect`), expect);
  if (keepFull) fs.copyFileSync(fullFile, path.join(outDir, `${s.name}.full.pcap.nocommit`));
  const size = fs.statSync(ctlFile).size;
  console.log(`ok ${s.name}: ${size} bytes, ${ctlStats.captured} packets, ${expect.split('\n').length - 1} hole(s)`);
  const shown = argv.map((a) => (/[\s;*|]/.test(a) ? `'${a}'` : a)).join(' ').split(lab.dir).join('$TMP');
  return {
    section: `## ${s.name}\n- server: ${s.server}, client: ${s.client}, IPv${s.family}\n- what: ${s.what}\n` +
      `- command (client namespace): \`${shown}\`\n` +
      (input ? `- stdin:\n\n\`\`\`\n${input.split(lab.dir).join('$TMP')}\`\`\`\n` : '') +
      `- holes (${s.name}.expect):\n\n\`\`\`\n${expect}\`\`\`\n`,
  };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const root = path.resolve(__dirname, '../../..');
  const outDir = path.resolve(opt('--out') ?? path.join(root, 'compat/traces'));
  const only = opt('--only');
  const keepFull = args.includes('--keep-full');
  fs.mkdirSync(outDir, { recursive: true });
  const specs = TRACES.filter((t) => only === undefined || t.name.includes(only));
  for (const s of specs) {
    const why = serverAvailable(s.server);
    if (why) throw new Error(`${s.name}: ${why}`);
  }
  const index: string[] = [];
  let failures = 0;
  await withLab({ prefix: 'f6rec', policy: 'open', bigSize: 32 * 1024 * 1024, log: (l) => console.log(`# ${l}`) }, async (lab) => {
    for (const s of specs) {
      // A trace is retried when tcpdump reports kernel drops or the derivation fails.
      let done = false;
      for (let attempt = 1; attempt <= 3 && !done; attempt++) {
        const res = await recordOne(lab, s, outDir, keepFull);
        if (typeof res === 'string') {
          console.log(`${attempt < 3 ? 'retry' : 'FAIL'} ${s.name}: ${res}`);
          continue;
        }
        done = true;
        index.push(res.section);
      }
      if (!done) failures++;
    }
  });
  if (only === undefined) {
    fs.writeFileSync(path.join(outDir, 'INDEX.md'),
      `# compat/traces index (generated by test/lab/record-traces.ts)\n\n` +
      `Lab: client fd00:c1::10 / 198.18.1.10, server fd00:5e::10 / 198.18.2.10, gateway policy 'open'.\n` +
      `Captured in the gateway namespace on its server-side interface with \`tcpdump -n -U --immediate-mode -B 8192 -i srv0 -s 65535 -w NAME.pcap tcp port 21\`; ` +
      `a second tcpdump without filter (snaplen 128, not committed) saw the data connections.\n\n` +
      `Versions:\n\n\`\`\`\n${versions()}\`\`\`\n\n${index.join('\n')}`);
  }
  console.log(`${specs.length - failures}/${specs.length} traces recorded in ${outDir}`);
  if (failures > 0) process.exitCode = 1;
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exit(1);
  });
}
