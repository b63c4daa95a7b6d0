/**
 * Helpers shared by the reliability lab tests (test/lab/security, load,
 * faults): the real daemon in the gateway namespace, raw TCP probes from a
 * namespace, a scripted FTP control client and a fake FTP server (small
 * Node scripts run with `ip netns exec`).
 */
import type { ChildProcess } from 'child_process';
import * as path from 'path';
import * as assert from 'uvu/assert';
import { clientSupports, type ClientKind, type Lab, type Mode, type RunResult, type ServerKind } from '../lab/lab';

export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const DAEMON = path.join(ROOT, 'bin', 'ftp6proxy');

export interface Daemon {
  proc: ChildProcess;
  /** everything it wrote to stderr so far */
  log(): string;
  /** resolves true when `re` appears in the log within ms */
  waitFor(re: RegExp, ms: number): Promise<boolean>;
  exited(): boolean;
  /** resolves with the exit code/signal once it exits, or null after ms */
  waitExit(ms: number): Promise<{ code: number | null; signal: string | null } | null>;
}

export async function startDaemon(lab: Lab, queue: number, extra: string[] = [], nodeArgs: string[] = []): Promise<Daemon> {
  const proc = lab.spawnIn(lab.ns.gateway, [process.execPath, ...nodeArgs, DAEMON, '-m', 'nftables', '-d', '-d', '-p', String(queue), '-a', 'inet/filter', ...extra]);
  let out = '';
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  let exit: { code: number | null; signal: string | null } | null = null;
  const exitP = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    proc.once('exit', (code, signal) => { exit = { code, signal }; resolve(exit); }));
  const d: Daemon = {
    proc,
    log: () => out,
    waitFor: async (re, ms) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        if (re.test(out)) return true;
        if (exit !== null) return re.test(out);
        await sleep(25);
      }
      return re.test(out);
    },
    exited: () => exit !== null,
    waitExit: (ms) => Promise.race([exitP, sleep(ms).then(() => null)]),
  };
  if (!(await d.waitFor(/started:/, 10000))) {
    proc.kill('SIGKILL');
    throw new Error(`ftp6proxy did not start:\n${out}`);
  }
  return d;
}

/** SIGTERM, then wait for the exit (at most 10 s). */
export async function stopDaemon(d: Daemon): Promise<void> {
  d.proc.kill('SIGTERM');
  await d.waitExit(10000);
}

/** The client programs and modes the transfer tests run against each server (test/lab/linux, selective). */
const TRANSFER_MATRIX: ReadonlyArray<[ClientKind, Mode]> = [
  ['curl', 'epsv'], ['curl', 'pasv'], ['curl', 'eprt'], ['curl', 'port'],
  ['lftp', 'epsv'], ['lftp', 'port'], ['tnftp', 'pasv'], ['tnftp', 'eprt'], ['wget', 'pasv'],
];

/**
 * Every client and mode of TRANSFER_MATRIX that the client supports, IPv6
 * then IPv4, against the server already running; each must succeed (the
 * assertion names the transfer, `what` and the daemon's last log lines).
 * Returns the transfers run.
 */
export async function transferMatrix(lab: Lab, kind: ServerKind, d: Daemon, what = ''): Promise<string[]> {
  const done: string[] = [];
  for (const family of [6, 4] as const) {
    for (const [client, mode] of TRANSFER_MATRIX) {
      if (!clientSupports(client, mode, family)) continue;
      const r = await lab.runClient({ client, mode, family });
      assert.ok(r.ok, `${client} ${mode} IPv${family} against ${kind}${what}: ${r.reason}\n${d.log().slice(-2000)}`);
      done.push(`${kind}/${client}/${mode}/${family}`);
    }
  }
  return done;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * A TCP connection attempt from namespace `ns` to host:port (Node, via ip
 * netns exec).  Prints OPEN, REFUSED (RST: the packet got through), or
 * TIMEOUT (dropped by the gateway).
 */
export function probeScript(host: string, port: number, timeoutMs: number, localAddress?: string): string {
  const local = localAddress === undefined ? '' : `,localAddress:${JSON.stringify(localAddress)}`;
  return `const s=require('net').connect({host:${JSON.stringify(host)},port:${port}${local}});` +
    `const t=setTimeout(()=>{console.log('TIMEOUT');process.exit(0)},${timeoutMs});` +
    `s.on('connect',()=>{console.log('OPEN');clearTimeout(t);s.destroy();process.exit(0)});` +
    `s.on('error',(e)=>{console.log(e.code==='ECONNREFUSED'?'REFUSED':'ERROR '+e.code);clearTimeout(t);process.exit(0)});`;
}

export async function probe(lab: Lab, ns: string, host: string, port: number, timeoutMs = 1500, localAddress?: string): Promise<string> {
  const r = await lab.runAsync(ns, [process.execPath, '-e', probeScript(host, port, timeoutMs, localAddress)], { timeoutMs: timeoutMs + 5000 });
  return r.stdout.trim() || `NO OUTPUT ${r.stderr.trim()}`;
}

/** A TCP listener in `ns` on addr:port that prints ACCEPTED <peer> for each connection; stays up until killed. */
export function listenScript(addr: string, port: number): string {
  return `const srv=require('net').createServer((c)=>{console.log('ACCEPTED '+c.remoteAddress);c.end('x')});` +
    `srv.listen({host:${JSON.stringify(addr)},port:${port}},()=>console.log('LISTENING'));`;
}

export async function listen(lab: Lab, ns: string, addr: string, port: number): Promise<{ proc: ChildProcess; accepted: () => number; stop: () => void }> {
  const proc = lab.spawnIn(ns, [process.execPath, '-e', listenScript(addr, port)]);
  let out = '';
  proc.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const end = Date.now() + 5000;
  while (!out.includes('LISTENING') && Date.now() < end) await sleep(20);
  if (!out.includes('LISTENING')) throw new Error(`listener ${addr}:${port} in ${ns} did not start`);
  return { proc, accepted: () => out.split('\n').filter((l) => l.startsWith('ACCEPTED')).length, stop: () => { proc.kill('SIGKILL'); } };
}

/**
 * A scripted FTP control client: connects to host:21, waits for the 220,
 * sends each line of `lines` (CRLF) waiting for a reply to each, and prints
 * every reply line.  Keeps the connection open `holdMs` after the last reply.
 */
export function ftpClientScript(host: string, lines: string[], holdMs: number): string {
  return `const s=require('net').connect({host:${JSON.stringify(host)},port:21});let buf='';const q=${JSON.stringify(lines)};` +
    `let greeted=false;s.setEncoding('latin1');` +
    `s.on('data',(d)=>{buf+=d;let i;while((i=buf.indexOf('\\n'))>=0){const l=buf.slice(0,i).trim();buf=buf.slice(i+1);console.log('< '+l);` +
    `if(/^\\d{3} /.test(l)){const n=q.shift();if(n!==undefined){console.log('> '+n);s.write(n+'\\r\\n')}else{setTimeout(()=>{s.end();process.exit(0)},${holdMs})}}}});` +
    `s.on('error',(e)=>{console.log('ERROR '+e.code);process.exit(0)});setTimeout(()=>process.exit(0),${holdMs + 10000});`;
}

/**
 * A fake FTP server on port 21 of every address: greets, answers
 * `XREP <line>` by remembering <line> as its answer to the next
 * PASV/EPSV/LPSV (so a test scripts a hostile 227/228 over the control
 * connection itself), and everything else with 200.
 */
export function fakeServerScript(): string {
  return `const srv=require('net').createServer((c)=>{c.write('220 fake\\r\\n');let b='';let rep='502 no';c.setEncoding('latin1');` +
    `c.on('data',(d)=>{b+=d;let i;while((i=b.indexOf('\\n'))>=0){const raw=b.slice(0,i).trim();const l=raw.toUpperCase();b=b.slice(i+1);` +
    `if(l.startsWith('XREP ')){rep=raw.slice(5);c.write('200 set\\r\\n')}` +
    `else if(l.startsWith('PASV')||l.startsWith('EPSV')||l.startsWith('LPSV'))c.write(rep+'\\r\\n');` +
    `else if(l.startsWith('QUIT')){c.end('221 bye\\r\\n')}else c.write('200 ok\\r\\n')}});c.on('error',()=>{})});` +
    `srv.listen({host:'::',port:21,ipv6Only:false},()=>console.log('LISTENING'));`;
}

export async function startFakeServer(lab: Lab): Promise<ChildProcess> {
  const proc = lab.spawnIn(lab.ns.server, [process.execPath, '-e', fakeServerScript()]);
  let out = '';
  proc.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const end = Date.now() + 5000;
  while (!out.includes('LISTENING') && Date.now() < end) await sleep(20);
  if (!out.includes('LISTENING')) throw new Error(`fake FTP server did not start: ${out}`);
  return proc;
}

/** Occurrences of `re` (global) in `text`. */
export function count(text: string, re: RegExp): number {
  return (text.match(new RegExp(re.source, re.flags.includes('g') ? re.flags : re.flags + 'g')) ?? []).length;
}

export function runResultText(r: RunResult): string {
  return `${r.stdout}${r.stderr}`.trim();
}
