/**
 * DivertSource over a simulated divert socket: an AF_UNIX SOCK_DGRAM
 * socketpair.  The "kernel" end sends frames [16 sockaddr bytes][packet]
 * (sockaddr_in as divert_packet() builds it, sys/netinet/ip_divert.c) and
 * reads back what DivertSource reinjects with the same framing.  The
 * reinjection logic under test is the real one; only the socket differs.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeDivertAddr } from '../../src/bsd/sockaddr';
import { DivertIo, DivertSource, FramedDivertIo, IPPROTO_DIVERT, NativeDivertIo, PF_DIVERT } from '../../src/capture/divert';
import { loadNative, Native } from '../../src/native';
import { FtpProxyError, Level, PacketHandler } from '../../src/types';

const real = loadNative();
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** sources and descriptors a test opened: closed after each test, also when it failed */
const cleanups: (() => Promise<void> | void)[] = [];
test.after.each(async () => {
  while (cleanups.length > 0) {
    try {
      await cleanups.pop()?.();
    } catch {
      /* already closed */
    }
  }
});
function track(src: DivertSource): DivertSource {
  cleanups.push(() => src.close());
  return src;
}

function logger(lines: string[] = []) {
  return { lines, log: (l: Level, m: string) => void lines.push(`${l}: ${m}`) };
}

/** A simulated divert socket: returns the source's end and the kernel's helpers. */
function simulated() {
  const [ours, kernel] = real.socketpair(real.constants.AF_UNIX, real.constants.SOCK_DGRAM, 0);
  cleanups.unshift(() => real.close(kernel));
  const buf = Buffer.alloc(70000);
  return {
    io: new FramedDivertIo(ours, real),
    divert(addr: Buffer, pkt: Buffer): void {
      real.sendto(kernel, Buffer.concat([addr, pkt]), null);
    },
    /** a reinjected frame, or null if none is waiting */
    take(): { addr: string; pkt: string } | null {
      const r = real.recvfrom(kernel, buf);
      if (r === null) return null;
      return { addr: hex(buf.subarray(0, 16)), pkt: hex(buf.subarray(16, r.n)) };
    },
    async takeN(n: number, ms = 2000): Promise<{ addr: string; pkt: string }[]> {
      const out: { addr: string; pkt: string }[] = [];
      for (let t = 0; out.length < n && t < ms; t += 5) {
        let f;
        while ((f = this.take()) !== null) out.push(f);
        if (out.length < n) await sleep(5);
      }
      return out;
    },
    close(): void {
      /* closed by the after-each hook */
    },
  };
}

// a minimal IPv4 header (20 bytes) and IPv6 header (40 bytes) + a few payload bytes
const v4 = (id: number) => Buffer.from('45000018' + id.toString(16).padStart(4, '0') + '4000400600000' + '0c6120001c6120102' + 'deadbeef', 'hex');
const v6 = (n: number) => Buffer.from('60000000' + '00040640' + 'fd00' + '0'.repeat(27) + '1' + 'fd00' + '0'.repeat(27) + '2' + n.toString(16).padStart(8, '0'), 'hex');

test('on Linux open() refuses with the divert-unsupported error', async () => {
  const src = track(new DivertSource({ port: 10004, logger: logger(), platform: 'linux' }));
  try {
    await src.open();
    assert.unreachable('opened');
  } catch (e) {
    assert.instance(e, FtpProxyError);
    assert.is((e as FtpProxyError).code, 'divert-unsupported');
    assert.is((e as Error).message, 'divert(4) is FreeBSD-only; on Linux use -m nftables');
  }
});

test('every packet is reinjected once, with exactly its sockaddr bytes, after its handler, in order', async () => {
  const sim = simulated();
  const frames = [
    // incoming IPv4 on em0 (sin_addr = em0's first IPv4 address), rule 100
    { addr: encodeDivertAddr({ rule: 100, addr: '198.18.0.1', ifname: 'em0' }), pkt: v4(1) },
    // the IPv6 hazard: incoming on an IPv6-only interface -> sin_addr 0 plus a name; echoed unchanged
    { addr: encodeDivertAddr({ rule: 200, addr: '0.0.0.0', ifname: 'vlan100' }), pkt: v6(2) },
    // locally generated outgoing packet: no address, no name
    { addr: encodeDivertAddr({ rule: 64016 }), pkt: v4(3) },
  ];
  const events: string[] = [];
  // spy on the socket layer so the order of handler and reinjection is exact
  const io = sim.io;
  const spy: DivertIo = {
    open: () => io.open(),
    recv: () => io.recv(),
    send: (pkt, addr) => {
      events.push(`send ${hex(pkt).slice(8, 12)}`);
      io.send(pkt, addr);
    },
    watch: (cb) => io.watch(cb),
    close: () => io.close(),
  };
  const src = track(new DivertSource({ port: 10004, logger: logger(), platform: 'freebsd', io: spy }));
  await src.open();
  const handler: PacketHandler = async (p) => {
    const id = hex(p.data).slice(8, 12);
    events.push(`start ${id}`);
    await sleep(15);
    events.push(`end ${id}`);
  };
  const running = src.run(handler);
  for (const f of frames) sim.divert(f.addr, f.pkt);
  const back = await sim.takeN(3);
  await sleep(30);
  assert.is(sim.take(), null, 'no second reinjection');
  assert.equal(back, frames.map((f) => ({ addr: hex(f.addr), pkt: hex(f.pkt) })));
  // one at a time, each reinjected after its handler settled, in arrival order
  const ids = frames.map((f) => hex(f.pkt).slice(8, 12));
  assert.equal(
    events,
    ids.flatMap((id) => [`start ${id}`, `end ${id}`, `send ${id}`]),
  );
  await src.close();
  await running;
  sim.close();
});

test('a handler that throws or rejects still gets its packet reinjected exactly once', async () => {
  const sim = simulated();
  const log = logger();
  const src = track(new DivertSource({ port: 10004, logger: log, platform: 'freebsd', io: sim.io }));
  await src.open();
  let n = 0;
  const running = src.run((p) => {
    n++;
    if (p.data[5] === 1) throw new Error('sync boom');
    return Promise.reject(new Error('async boom'));
  });
  const a = encodeDivertAddr({ rule: 1, addr: '198.18.0.1', ifname: 'em0' });
  const b = encodeDivertAddr({ rule: 2, ifname: 'em1' });
  sim.divert(a, v4(1));
  sim.divert(b, v4(2));
  const back = await sim.takeN(2);
  await sleep(30);
  assert.is(sim.take(), null);
  assert.is(n, 2);
  assert.equal(back, [
    { addr: hex(a), pkt: hex(v4(1)) },
    { addr: hex(b), pkt: hex(v4(2)) },
  ]);
  assert.ok(log.lines.some((l) => l.includes('sync boom')));
  assert.ok(log.lines.some((l) => l.includes('async boom')));
  await src.close();
  await running;
  sim.close();
});

test('a handler that never settles: the packet is released after holdLimitMs, once', async () => {
  const sim = simulated();
  const log = logger();
  const src = track(new DivertSource({ port: 10004, logger: log, platform: 'freebsd', io: sim.io, holdLimitMs: 40 }));
  await src.open();
  let finish: () => void = () => undefined;
  const running = src.run(() => new Promise<void>((r) => (finish = r)));
  const a = encodeDivertAddr({ rule: 9, addr: '198.18.0.1', ifname: 'em0' });
  sim.divert(a, v4(7));
  await sleep(15);
  assert.is(sim.take(), null, 'still held');
  const back = await sim.takeN(1);
  assert.equal(back, [{ addr: hex(a), pkt: hex(v4(7)) }]);
  finish();
  await sleep(20);
  assert.is(sim.take(), null, 'not released twice');
  assert.ok(log.lines.some((l) => l.startsWith('warning') && l.includes('releasing')));
  await src.close();
  await running;
  sim.close();
});

test('close() while a packet is held releases it first, then run() resolves', async () => {
  const sim = simulated();
  const src = track(new DivertSource({ port: 10004, logger: logger(), platform: 'freebsd', io: sim.io }));
  await src.open();
  const running = src.run(async () => {
    await sleep(30);
  });
  const a = encodeDivertAddr({ rule: 5, ifname: 'em0' });
  sim.divert(a, v4(5));
  await sleep(5);
  await src.close();
  assert.equal(sim.take(), { addr: hex(a), pkt: hex(v4(5)) });
  await running;
  sim.close();
});

test('a frame too short to hold a sockaddr is logged and dropped, and capture goes on', async () => {
  const [ours, kernel] = real.socketpair(real.constants.AF_UNIX, real.constants.SOCK_DGRAM, 0);
  cleanups.unshift(() => real.close(kernel));
  const io = new FramedDivertIo(ours, real);
  const log = logger();
  const src = track(new DivertSource({ port: 10004, logger: log, platform: 'freebsd', io }));
  await src.open();
  const seen: string[] = [];
  const running = src.run((p) => void seen.push(hex(p.data)));
  real.sendto(kernel, Buffer.alloc(10), null);
  const a = encodeDivertAddr({ rule: 3, ifname: 'em0' });
  real.sendto(kernel, Buffer.concat([a, v4(3)]), null);
  const buf = Buffer.alloc(200);
  let r = null;
  for (let i = 0; i < 100 && r === null; i++) {
    await sleep(5);
    r = real.recvfrom(kernel, buf);
  }
  assert.ok(r !== null);
  assert.is(hex(buf.subarray(0, r === null ? 0 : r.n)), hex(a) + hex(v4(3)));
  assert.equal(seen, [hex(v4(3))]);
  assert.ok(log.lines.some((l) => l.startsWith('err') && l.includes('no sockaddr')));
  await src.close();
  await running;
});

// ---------------------------------------------------------------------------
// NativeDivertIo: the socket calls, with a recording fake shim

function fakeNative(socketErrors: Record<string, string>, bindError?: string) {
  const calls: string[] = [];
  const fake = {
    ...real,
    socket(d: number, t: number, p: number): number {
      calls.push(`socket(${d},${t},${p})`);
      const code = socketErrors[`${d},${t},${p}`];
      if (code !== undefined) throw Object.assign(new Error(code), { code, errno: 0, syscall: 'socket' });
      return 99;
    },
    bind(fd: number, sa: Buffer): void {
      calls.push(`bind(${fd},${hex(sa)})`);
      if (bindError !== undefined) throw Object.assign(new Error(bindError), { code: bindError, errno: 0, syscall: 'bind' });
    },
    close(fd: number): void {
      calls.push(`close(${fd})`);
    },
  } as Native;
  return { fake, calls };
}

test('NativeDivertIo: PF_DIVERT first, IPPROTO_DIVERT on EAFNOSUPPORT/EPROTONOSUPPORT, bind htons(port)', () => {
  assert.is(PF_DIVERT, 44);
  assert.is(IPPROTO_DIVERT, 258);
  const bindHex = '10' + '02' + '2714' + '00000000' + '0000000000000000'; // sin_len 16, AF_INET, htons(10004)
  for (const code of ['EAFNOSUPPORT', 'EPROTONOSUPPORT']) {
    const { fake, calls } = fakeNative({ '44,3,0': code });
    new NativeDivertIo(10004, fake).open();
    assert.equal(calls, ['socket(44,3,0)', 'socket(2,3,258)', `bind(99,${bindHex})`], code);
  }
  const ok = fakeNative({});
  new NativeDivertIo(10004, ok.fake).open();
  assert.equal(ok.calls, ['socket(44,3,0)', `bind(99,${bindHex})`]);
});

test('NativeDivertIo: clear errors for EPERM, missing ipdivert, EADDRINUSE', () => {
  const rows: [Record<string, string>, string | undefined, string, RegExp][] = [
    [{ '44,3,0': 'EPERM' }, undefined, 'divert-permission', /root/],
    [{ '44,3,0': 'EAFNOSUPPORT', '2,3,258': 'EPROTONOSUPPORT' }, undefined, 'divert-missing', /kldload ipdivert/],
    [{}, 'EADDRINUSE', 'divert-port-in-use', /10004/],
  ];
  for (const [errs, bindErr, code, msg] of rows) {
    const { fake, calls } = fakeNative(errs, bindErr);
    try {
      new NativeDivertIo(10004, fake).open();
      assert.unreachable(code);
    } catch (e) {
      assert.is((e as FtpProxyError).code, code);
      assert.match((e as Error).message, msg);
    }
    if (bindErr !== undefined) assert.ok(calls.includes('close(99)'), 'socket closed after a failed bind');
  }
});

test.run();
