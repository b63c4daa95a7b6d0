/**
 * A minimal FTP control client for lab tests, run inside the client namespace:
 *   node ftp-probe.js HOST CMD WAIT_MS
 * logs in anonymously, sends CMD (EPSV or PASV), waits WAIT_MS, then tries a
 * TCP connection to the announced data port (3 s limit) and prints one JSON
 * line: {"reply": "...", "port": N, "result": "connected" | "refused" | "timeout" | "error"}.
 * "refused" means the SYN reached the server (the firewall let it through);
 * "timeout" means it was dropped on the way.
 */
import * as net from 'net';

function lines(sock: net.Socket): () => Promise<string> {
  let buf = '';
  const waiting: Array<(l: string) => void> = [];
  const queue: string[] = [];
  sock.on('data', (d) => {
    buf += d.toString('latin1');
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const l = buf.slice(0, i).replace(/\r$/, '');
      buf = buf.slice(i + 1);
      // skip the continuation lines of multi-line replies
      if (/^\d{3}-/.test(l) || !/^\d{3} /.test(l)) continue;
      const w = waiting.shift();
      if (w) w(l); else queue.push(l);
    }
  });
  return () => new Promise((resolve) => {
    const l = queue.shift();
    if (l !== undefined) resolve(l); else waiting.push(resolve);
  });
}

function tryConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => { s.destroy(); resolve('timeout'); }, 3000);
    s.on('connect', () => { clearTimeout(t); s.destroy(); resolve('connected'); });
    s.on('error', (e: NodeJS.ErrnoException) => { clearTimeout(t); resolve(e.code === 'ECONNREFUSED' ? 'refused' : 'error'); });
  });
}

async function main(): Promise<void> {
  const [host, cmd, waitMs] = process.argv.slice(2);
  const sock = net.connect({ host, port: 21 });
  const next = lines(sock);
  await next();
  sock.write('USER anonymous\r\n');
  let r = await next();
  if (r.startsWith('331')) { sock.write('PASS probe@\r\n'); r = await next(); }
  sock.write(`${cmd}\r\n`);
  const reply = await next();
  let port = -1;
  const m229 = /\(([\x21-\x7e])\1\1(\d+)\1\)/.exec(reply);
  const m227 = /(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)/.exec(reply);
  if (reply.startsWith('229') && m229) port = Number(m229[2]);
  else if (reply.startsWith('227') && m227) port = Number(m227[5]) * 256 + Number(m227[6]);
  await new Promise((res) => setTimeout(res, Number(waitMs)));
  const result = port > 0 ? await tryConnect(host, port) : 'error';
  process.stdout.write(JSON.stringify({ reply, port, result }) + '\n');
  sock.destroy();
}

main().catch((e) => { process.stdout.write(JSON.stringify({ result: 'error', error: String(e) }) + '\n'); });
