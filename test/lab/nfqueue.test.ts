/**
 * Lab: the real NfqueueSource against the kernel, in a namespace of its own.
 * Loopback TCP to a port is queued with iptables' NFQUEUE target (this
 * kernel lacks nft `queue`); a Node socket connects and we watch the SYN.
 */
import * as net from 'net';
import { performance } from 'perf_hooks';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { NfqueueSource } from '../../src/capture/nfqueue';
import { NftablesFirewall } from '../../src/firewall/nftables';
import { Clock, FtpProxyError, Hole, Level, Packet, PacketHandler } from '../../src/types';
import { enterNetns, sh } from './nl-netns';

if (enterNetns(__filename, 'nfq')) {
  const logs: string[] = [];
  const logger = { log: (l: Level, m: string) => void logs.push(`${l}: ${m}`) };
  const sources: NfqueueSource[] = [];
  const servers: net.Server[] = [];
  /** sub-millisecond capture times, for the latency figures */
  const fineClock: Clock = {
    now: () => performance.now(),
    setTimer: (ms, fn) => {
      const t = setTimeout(fn, ms);
      return { cancel: () => clearTimeout(t) };
    },
  };

  /** queue TCP to `port` on the output hook to queue `queue` */
  function queuePort(v: 4 | 6, port: number, queue: number): void {
    sh(`${v === 4 ? 'iptables' : 'ip6tables'} -A OUTPUT -p tcp --dport ${port} -j NFQUEUE --queue-num ${queue}`);
  }

  async function server(host: string, port: number): Promise<void> {
    const srv = net.createServer((c) => c.end());
    servers.push(srv);
    await new Promise<void>((r) => srv.listen(port, host, () => r()));
  }

  /** resolves with the ms a connect took, or -1 after `limit` ms */
  function connectTime(host: string, port: number, limit = 3000): Promise<number> {
    const t0 = performance.now();
    return new Promise((resolve) => {
      const s = net.connect({ host, port });
      const t = setTimeout(() => {
        s.destroy();
        resolve(-1);
      }, limit);
      s.on('connect', () => {
        clearTimeout(t);
        s.destroy();
        resolve(performance.now() - t0);
      });
      s.on('error', () => {
        clearTimeout(t);
        resolve(-1);
      });
    });
  }

  async function source(queue: number, handler: PacketHandler): Promise<{ src: NfqueueSource; done: Promise<void> }> {
    const src = new NfqueueSource({ queue, logger, clock: fineClock });
    sources.push(src);
    await src.open();
    const done = src.run(handler);
    return { src, done };
  }

  /** the TCP flags byte and destination port of an IPv4/IPv6 packet, or null */
  function tcpInfo(d: Uint8Array): { syn: boolean; dport: number } | null {
    const v = d[0] >> 4;
    const off = v === 4 ? (d[0] & 15) * 4 : v === 6 ? 40 : -1;
    const proto = v === 4 ? d[9] : d[6];
    if (off < 0 || proto !== 6 || d.length < off + 14) return null;
    return { syn: (d[off + 13] & 0x12) === 0x02, dport: (d[off + 2] << 8) | d[off + 3] };
  }

  test('the SYN arrives in the handler, is accepted, and the connection completes (IPv4)', async () => {
    queuePort(4, 42001, 101);
    await server('127.0.0.1', 42001);
    const seen: Packet[] = [];
    // a copy: the packet's bytes are the handler's only while it runs
    await source(101, (p) => void seen.push({ ...p, data: new Uint8Array(p.data) }));
    const ms = await connectTime('127.0.0.1', 42001);
    assert.ok(ms >= 0, 'connection completed');
    const syn = seen.map((p) => tcpInfo(p.data)).find((i) => i !== null && i.syn);
    assert.ok(syn !== undefined, 'handler saw the SYN');
    assert.is(syn?.dport, 42001);
  });

  test('IPv6 too', async () => {
    queuePort(6, 42002, 102);
    await server('::1', 42002);
    const seen: Packet[] = [];
    await source(102, (p) => void seen.push({ ...p, data: new Uint8Array(p.data) }));
    assert.ok((await connectTime('::1', 42002)) >= 0, 'connection completed');
    assert.ok(seen.some((p) => p.data[0] >> 4 === 6 && tcpInfo(p.data)?.syn === true), 'handler saw the IPv6 SYN');
  });

  test('a handler that throws or rejects still lets the connection through', async () => {
    queuePort(4, 42003, 103);
    queuePort(4, 42004, 104);
    await server('127.0.0.1', 42003);
    await server('127.0.0.1', 42004);
    let thrown = 0;
    let rejected = 0;
    await source(103, () => {
      thrown++;
      throw new Error('boom');
    });
    await source(104, async () => {
      rejected++;
      throw new Error('async boom');
    });
    assert.ok((await connectTime('127.0.0.1', 42003)) >= 0, 'through despite throw');
    assert.ok((await connectTime('127.0.0.1', 42004)) >= 0, 'through despite reject');
    assert.ok(thrown > 0 && rejected > 0);
    assert.ok(logs.some((l) => l.includes('packet handler threw: boom')));
  });

  test('a handler that delays holds the packet (the connection waits)', async () => {
    queuePort(4, 42005, 105);
    await server('127.0.0.1', 42005);
    await source(105, (p) => {
      const i = tcpInfo(p.data);
      return i?.syn === true ? new Promise<void>((r) => setTimeout(r, 400)) : undefined;
    });
    const ms = await connectTime('127.0.0.1', 42005);
    assert.ok(ms >= 380, `connect took ${ms.toFixed(1)} ms, want >= 400`);
    console.log(`    held SYN: connect took ${ms.toFixed(1)} ms with a 400 ms handler`);
  });

  test('several packets in flight at once each get their verdict', async () => {
    queuePort(4, 42006, 106);
    await server('127.0.0.1', 42006);
    let held = 0;
    let maxHeld = 0;
    await source(106, async () => {
      held++;
      maxHeld = Math.max(maxHeld, held);
      await new Promise((r) => setTimeout(r, 100));
      held--;
    });
    const times = await Promise.all([0, 1, 2, 3, 4].map(() => connectTime('127.0.0.1', 42006)));
    assert.ok(times.every((t) => t >= 0), `all connected: ${times.join(', ')}`);
    assert.ok(maxHeld >= 2, `packets held at once: ${maxHeld}`);
  });

  test('close() releases the packets still held', async () => {
    queuePort(4, 42007, 107);
    await server('127.0.0.1', 42007);
    const { src, done } = await source(107, () => new Promise<void>(() => undefined));
    const pending = connectTime('127.0.0.1', 42007, 5000);
    await new Promise((r) => setTimeout(r, 200));
    await src.close();
    await done; // run() resolves on close()
    assert.ok((await pending) >= 0, 'connection completed after close()');
  });

  test('a queue bound elsewhere gives "NFQUEUE <n> is in use"', async () => {
    await source(108, () => undefined);
    const second = new NfqueueSource({ queue: 108, logger });
    sources.push(second);
    try {
      await second.open();
      assert.unreachable('second bind succeeded');
    } catch (e) {
      assert.instance(e, FtpProxyError);
      assert.is((e as FtpProxyError).code, 'nfqueue-busy');
      assert.match((e as Error).message, 'NFQUEUE 108 is in use');
    }
  });

  test('hole latency: packet arrival to verdict with NftablesFirewall.open() (printed)', async () => {
    sh('nft -f -', `table inet filter {
  set ftp6proxy4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }
  set ftp6proxy6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }
}`);
    const fw = new NftablesFirewall({ table: 'inet/filter', logger });
    await fw.check();
    queuePort(4, 42009, 109);
    await server('127.0.0.1', 42009);
    const lat: number[] = [];
    let n = 0;
    await source(109, async (p) => {
      if (tcpInfo(p.data)?.syn !== true) return;
      const hole: Hole = { family: 4, src: '198.18.0.1', dst: '198.18.0.2', port: 1024 + (n++ % 60000), rule: 1, session: 1 };
      await fw.open(hole, 2);
      lat.push(performance.now() - p.time); // the verdict is sent right after this settles
    });
    for (let i = 0; i < 200; i++) assert.ok((await connectTime('127.0.0.1', 42009)) >= 0);
    await fw.shutdown();
    lat.sort((a, b) => a - b);
    const q = (f: number): string => lat[Math.min(lat.length - 1, Math.floor(f * lat.length))].toFixed(3);
    assert.ok(lat.length >= 200);
    console.log(`    hole latency over ${lat.length} SYNs (arrival -> element ACKed -> verdict): median ${q(0.5)} ms, p90 ${q(0.9)} ms, p99 ${q(0.99)} ms, max ${q(1)} ms`);
  });

  test.after(async () => {
    for (const s of sources) await s.close();
    for (const s of servers) s.close();
    sh('iptables -F OUTPUT; ip6tables -F OUTPUT; nft flush ruleset');
  });

  test.run();
}
