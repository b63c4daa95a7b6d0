/**
 * The lab parts of the benchmark (root, Linux): small-file transfers with
 * curl (EPSV, IPv6) through the namespace gateway under three policies, and
 * the time control packets spend in the gateway.
 *
 *   open       forward policy accept: the limit
 *   helper     the kernel's FTP conntrack helper (ct helper "ftp", related accepted)
 *   ftp6proxy  the DESIGN.md deny ruleset + NFQUEUE, with bin/ftp6proxy -d -d
 *   instrumented  the same ruleset with bench/latency-child.js (the daemon's
 *              wiring, timestamps in user space): hole latency in process
 *
 * Every block runs tcpdump (nanosecond timestamps) on both gateway
 * interfaces; a control packet's transit is the time between its capture on
 * the way in and on the way out, so the kernel's queueing to NFQUEUE and the
 * wake-up of the daemon are counted too.  Blocks are run in rounds
 * (open, helper, ftp6proxy, instrumented, and again) so that drift in the
 * machine's load spreads over all configurations.
 */
import { ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as readline from 'readline';
import { parsePcap } from '../src/pcap';
import { decodePacket } from '../src/packet';
import { Lab, Policy, preflight, withLab } from '../test/lab/lab';
import type { LatencySamples } from './latency-child';
import { median, percentile, round, summarize, Summary } from './stats';

export type Config = 'open' | 'helper' | 'ftp6proxy' | 'instrumented';

export interface TransferFigures {
  config: Config;
  /** what ran on the gateway */
  what: string;
  transfers: number;
  failed: number;
  /** curl -w %{time_total}, ms */
  medianMs: number;
  p90Ms: number;
  /** control packets' transit through the gateway, µs (tcpdump on both sides) */
  transitHoleUs: Summary | null;
  transitOtherUs: Summary | null;
  firstFailure?: string;
}

export interface LabResult {
  transfers: TransferFigures[];
  /** ftp6proxy median / open median */
  ratio: number | null;
  /** in-process: arrival in user space -> verdict, µs */
  latencyHoleUs: Summary | null;
  latencyOtherUs: Summary | null;
  daemon: string;
  notes: string[];
}

const QUEUE = 10004;
const PREFIX = 'f6bench';

interface Matched {
  /** µs */
  hole: number[];
  other: number[];
}

/** Transit of each control packet from the capture on `inIface` side to the other. */
function transit(fileA: string, fileB: string): Matched {
  // A packet is identified by its bytes from the IP header on, less the
  // fields the gateway changes (IPv4 TTL and header checksum, IPv6 hop limit).
  const ident = (ip: Uint8Array): string | null => {
    // The TCP checksum too: veth hands over CHECKSUM_PARTIAL packets, and
    // queueing to NFQUEUE completes the checksum (skb_checksum_help) on the way.
    const c = Buffer.from(ip);
    let tcp: number;
    if (c[0] >> 4 === 4) {
      c[8] = 0;
      c[10] = 0;
      c[11] = 0;
      tcp = (c[0] & 0x0f) * 4;
    } else if (c[0] >> 4 === 6) {
      c[7] = 0;
      tcp = 40;
    } else return null;
    if (c.length >= tcp + 18) {
      c[tcp + 16] = 0;
      c[tcp + 17] = 0;
    }
    return c.toString('latin1');
  };
  const index = (file: string) => {
    const m = new Map<string, number[]>();
    for (const r of parsePcap(fs.readFileSync(file)).records) {
      if (r.ip === null) continue;
      const k = ident(r.ip);
      if (k === null) continue;
      const l = m.get(k);
      if (l === undefined) m.set(k, [r.time]);
      else l.push(r.time);
    }
    return m;
  };
  const a = index(fileA);
  const b = index(fileB);
  const out: Matched = { hole: [], other: [] };
  for (const [k, ta] of a) {
    const tb = b.get(k);
    if (tb === undefined) continue;
    // The same bytes twice (a retransmit): pair them in order.
    for (let i = 0; i < Math.min(ta.length, tb.length); i++) {
      const dt = Math.abs(tb[i] - ta[i]) * 1000;
      const d = decodePacket(Buffer.from(k, 'latin1'));
      const isHole = d.ok && d.seg.sport === 21 && d.seg.payload.length >= 4 &&
        Buffer.from(d.seg.payload.subarray(0, 4)).toString('latin1') === '229 ';
      (isHole ? out.hole : out.other).push(dt);
    }
  }
  return out;
}

function waitLine(p: ChildProcess, want: (line: string) => boolean, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    if (p.stdout === null) return resolve(null);
    const rl = readline.createInterface({ input: p.stdout });
    const done = (v: string | null) => {
      clearTimeout(t);
      rl.removeAllListeners('line');
      rl.close();
      resolve(v);
    };
    const t = setTimeout(() => done(null), timeoutMs);
    rl.on('line', (l) => {
      if (want(l)) done(l);
    });
    p.once('exit', () => done(null));
  });
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Is NFQUEUE `q` bound in the gateway (/proc/net/netfilter/nfnetlink_queue is per namespace)? */
function queueBound(lab: Lab, q: number): boolean {
  const r = lab.run(lab.ns.gateway, ['cat', '/proc/net/netfilter/nfnetlink_queue']);
  return r.stdout.split('\n').some((l) => l.trim().split(/\s+/)[0] === String(q));
}

async function capture(lab: Lab, iface: string, file: string): Promise<ChildProcess> {
  // tcpdump(8): --time-stamp-precision=nano asks for nanosecond time stamps
  // (pcap magic 0xa1b23c4d); -U and --immediate-mode write each packet at once.
  const p = lab.spawnIn(lab.ns.gateway, ['tcpdump', '-n', '-U', '--immediate-mode', '--time-stamp-precision=nano',
    '-i', iface, '-s', '200', '-w', file, 'tcp', 'port', '21']);
  let err = '';
  p.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
  for (let i = 0; i < 100 && !err.includes('listening on'); i++) await sleep(50);
  if (!err.includes('listening on')) throw new Error(`tcpdump on ${iface} did not start: ${err.trim()}`);
  return p;
}

async function stopProc(p: ChildProcess, sig: NodeJS.Signals = 'SIGINT'): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      p.kill('SIGKILL');
    }, 3000);
    p.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    p.kill(sig);
  });
}

interface Block {
  times: number[];
  failed: number;
  firstFailure?: string;
  transit: Matched;
  latency?: LatencySamples;
}

export interface LabOptions {
  /** transfers per configuration per round */
  perRound: number;
  rounds: number;
  /** extra transfers with the instrumented child, for more hole samples */
  latencyTransfers: number;
  repo: string;
  log: (line: string) => void;
}

/** Why the lab parts cannot run here, or null. */
export function labSkipReason(): string | null {
  return preflight();
}

export async function runLab(o: LabOptions): Promise<LabResult> {
  const notes: string[] = [];
  let daemonWhat = 'bin/ftp6proxy -m nftables -d -d -p 10004 -a inet/filter';
  return withLab({ prefix: PREFIX, queueNum: QUEUE }, async (lab) => {
    const server = await lab.startServer('vsftpd');
    const url = `ftp://[${lab.addr.server[6]}]/${lab.files.small.name}`;
    const size = lab.files.small.content.length;
    const blocks = new Map<Config, Block>();
    const policyOf: Record<Config, Policy> = { open: 'open', helper: 'helper', ftp6proxy: 'deny', instrumented: 'deny' };
    let daemonWorks = true;

    const block = async (cfg: Config, n: number): Promise<void> => {
      lab.setPolicy(policyOf[cfg], QUEUE);
      // conntrack entries of the previous block (and their helpers) must not carry over
      lab.run(lab.ns.gateway, ['conntrack', '-F']);
      let proc: ChildProcess | null = null;
      if (cfg === 'ftp6proxy') {
        proc = lab.spawnIn(lab.ns.gateway, [process.execPath, path.join(o.repo, 'bin', 'ftp6proxy'),
          '-m', 'nftables', '-d', '-d', '-p', String(QUEUE), '-a', 'inet/filter'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        proc.stdout?.setEncoding('utf8').on('data', (d: string) => (out = (out + d).slice(-4000)));
        proc.stderr?.setEncoding('utf8').on('data', (d: string) => (out = (out + d).slice(-4000)));
        for (let i = 0; i < 100 && !queueBound(lab, QUEUE) && proc.exitCode === null; i++) await sleep(50);
        if (!queueBound(lab, QUEUE)) {
          await stopProc(proc, 'SIGKILL');
          daemonWorks = false;
          notes.push(`bin/ftp6proxy did not bind NFQUEUE ${QUEUE} (${out.trim().split('\n').slice(-2).join(' | ') || 'no output'}): ` +
            'the ftp6proxy row uses bench/latency-child.js (the same wiring) instead');
          daemonWhat = 'bench/latency-child.js (bin/ftp6proxy did not start)';
          proc = null;
        }
      }
      if (cfg === 'instrumented' || (cfg === 'ftp6proxy' && proc === null)) {
        proc = lab.spawnIn(lab.ns.gateway, [process.execPath, path.join(o.repo, 'dist', 'bench', 'latency-child.js'),
          String(QUEUE), 'inet/filter'], { stdio: ['pipe', 'pipe', 'pipe'] });
        let err = '';
        proc.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
        const ok = await waitLine(proc, (l) => l === 'ready', 10000);
        if (ok === null) throw new Error(`bench/latency-child.js did not start: ${err.trim()}`);
      }
      const fa = path.join(lab.dir, `${cfg}-${Date.now()}-br0.pcap`);
      const fb = path.join(lab.dir, `${cfg}-${Date.now()}-srv0.pcap`);
      const ca = await capture(lab, lab.iface.gwClient, fa);
      const cb = await capture(lab, lab.iface.gwServer, fb);
      const b: Block = blocks.get(cfg) ?? { times: [], failed: 0, transit: { hole: [], other: [] } };
      blocks.set(cfg, b);
      for (let i = 0; i < n; i++) {
        const r = await lab.runAsync(lab.ns.client, ['curl', '-sS', '--connect-timeout', '5', '-m', '10', '-o', '/dev/null',
          '-w', '%{time_total} %{size_download}', url], { timeoutMs: 15000 });
        const [t, got] = r.stdout.trim().split(' ');
        if (r.status === 0 && Number(got) === size) b.times.push(Number(t) * 1000);
        else {
          b.failed++;
          b.firstFailure ??= `exit ${r.status}: ${r.stderr.trim()}`;
        }
      }
      await sleep(200);
      await stopProc(ca);
      await stopProc(cb);
      const m = transit(fa, fb);
      b.transit.hole.push(...m.hole);
      b.transit.other.push(...m.other);
      if (proc !== null && cfg !== 'ftp6proxy') {
        const line = waitLine(proc, (l) => l.startsWith('{'), 5000);
        proc.stdin?.write('stop\n');
        const json = await line;
        if (json !== null) {
          const s = JSON.parse(json) as LatencySamples;
          b.latency ??= { hole: [], noHole: [], errors: [] };
          b.latency.hole.push(...s.hole);
          b.latency.noHole.push(...s.noHole);
          b.latency.errors.push(...s.errors);
        }
        await stopProc(proc, 'SIGTERM');
      } else if (proc !== null) {
        if (cfg === 'ftp6proxy' && daemonWhat.startsWith('bench/')) {
          proc.stdin?.write('stop\n');
          await sleep(300);
        }
        await stopProc(proc, 'SIGTERM');
      }
      o.log(`  ${cfg}: ${b.times.length} ok, ${b.failed} failed so far`);
    };

    const order: Config[] = ['open', 'helper', 'ftp6proxy', 'instrumented'];
    for (let r = 0; r < o.rounds; r++) {
      for (const cfg of order) {
        if (cfg === 'ftp6proxy' && !daemonWorks) await block('instrumented', o.perRound);
        else await block(cfg, o.perRound);
      }
    }
    if (o.latencyTransfers > 0) await block('instrumented', o.latencyTransfers);
    await server.stop();

    const us = (xs: number[]): Summary | null => (xs.length === 0 ? null : roundSummary(summarize(xs)));
    const what: Record<Config, string> = {
      open: 'forward policy accept',
      helper: 'ct helper "ftp" + ct state related accept',
      ftp6proxy: daemonWhat,
      instrumented: 'bench/latency-child.js (daemon wiring, timed)',
    };
    const transfers: TransferFigures[] = [];
    for (const cfg of order) {
      const b = blocks.get(cfg);
      if (b === undefined) continue;
      transfers.push({
        config: cfg,
        what: what[cfg],
        transfers: b.times.length + b.failed,
        failed: b.failed,
        medianMs: round(median(b.times)),
        p90Ms: round(percentile(b.times, 90)),
        transitHoleUs: us(b.transit.hole),
        transitOtherUs: us(b.transit.other),
        firstFailure: b.firstFailure,
      });
    }
    const open = transfers.find((t) => t.config === 'open');
    const proxy = transfers.find((t) => t.config === 'ftp6proxy') ?? transfers.find((t) => t.config === 'instrumented');
    const lat = blocks.get('instrumented')?.latency;
    if (lat !== undefined && lat.errors.length > 0) notes.push(`instrumented proxy logged: ${lat.errors.slice(0, 3).join(' | ')}`);
    return {
      transfers,
      ratio: open && proxy && open.medianMs > 0 ? round(proxy.medianMs / open.medianMs) : null,
      latencyHoleUs: lat ? us(lat.hole.map((x) => x * 1000)) : null,
      latencyOtherUs: lat ? us(lat.noHole.map((x) => x * 1000)) : null,
      daemon: daemonWhat,
      notes,
    };
  });
}

function roundSummary(s: Summary): Summary {
  return { n: s.n, p50: round(s.p50, 1), p90: round(s.p90, 1), p99: round(s.p99, 1), max: round(s.max, 1) };
}
