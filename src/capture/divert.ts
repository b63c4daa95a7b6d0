/**
 * divert(4) capture for the ipfw and pf modules (FreeBSD only).
 *
 * ipfw hands each FTP control packet to our socket (`divert <port>` rules),
 * the engine looks at it and may open a hole, and only then do we write the
 * packet back ("reinject") with the sockaddr it came with.  So the hole is in
 * place before the packet that announced it travels on.
 *
 * Layers:
 * - `DivertIo` is the socket: recv one datagram (packet + 16 sockaddr bytes),
 *   send one back, readiness, close.  `NativeDivertIo` is the real divert
 *   socket through the native shim; `FramedDivertIo` carries the same thing
 *   over any datagram socket as [16 sockaddr bytes][packet], so the tests run
 *   the real reinjection logic over a socketpair on Linux.
 * - `DivertSource` is the logic: one packet at a time, in arrival order, handler,
 *   then exactly one reinjection with exactly the received sockaddr bytes,
 *   also when the handler throws or hangs.
 *
 * The IPv6 direction hazard (read from sys/netinet/ip_divert.c, div_send(),
 * div_output_outbound(), div_output_inbound(), divert_packet()):
 * - divert_packet() fills sin_addr with the first IPv4 address of the receiving
 *   interface, only for incoming packets; sin_zero gets the name of
 *   m_pkthdr.rcvif "whenever we have one" - for a FORWARDED packet that is the
 *   receiving interface on the outbound pass too.  An IPv6 packet that came in
 *   on an interface without any IPv4 address therefore arrives with
 *   sin_addr = 0 and an interface name: byte for byte the same as an outgoing
 *   forwarded packet.  Nothing in the sockaddr tells the two apart.
 * - div_send() picks the direction from sin_addr alone: 0 -> div_output_outbound()
 *   -> ip6_output(); non-zero -> div_output_inbound(), which takes the interface
 *   from the sin_zero name (ifunit()) and queues the packet to NETISR_IPV6
 *   (the sin_addr is only looked up, IPv4-only, when the name is missing).
 * - Decision: we echo the received 16 bytes unchanged, always.
 *   Echoed, such an incoming IPv6 packet is sent by ip6_output(): it is routed
 *   by its destination and reaches the server (the documented rules divert only
 *   `to not me6`, i.e. forwarded traffic), but this gateway does not decrement
 *   its hop limit, the rest of the ruleset (rules > N) is applied as an
 *   outbound pass and the outbound rules below N are skipped.
 *   The alternative - putting a non-zero sin_addr in to force the inbound path
 *   when we guess the packet was incoming - needs a guess the sockaddr cannot
 *   support; a wrong guess re-inputs an outbound packet on its receiving
 *   interface, it is forwarded again, meets the `out xmit` divert rule from
 *   rule 1 again and loops through us.  A harmless imperfection beats a loop.
 * - What the administrator can do (for the man page): give the LAN interface
 *   an IPv4 address (any, even from 169.254/16) so incoming packets carry a
 *   non-zero sin_addr, or divert IPv6 only on the outbound pass (`out xmit`).
 *
 * Other facts used here:
 * - socket(PF_DIVERT=44, SOCK_RAW, 0) on FreeBSD 14 and later; 13 and earlier
 *   only know socket(PF_INET, SOCK_RAW, IPPROTO_DIVERT=258) (divert(4)).  We try
 *   the first and fall back on EAFNOSUPPORT/EPROTONOSUPPORT.  The value 44 is
 *   AF_DIVERT in sys/sys/socket.h of 14.x (checked only against third-party
 *   copies of that table: UNCONFIRMED against freebsd-src here).
 * - Buffers: DIVSNDQ/DIVRCVQ = 65536 + 100 bytes (ip_divert.c).
 * - The socket is privileged once, at creation (div_attach(): priv_check
 *   PRIV_NETINET_DIVERT); it keeps working after setuid.
 * - Reinjection needs sendto() with the address: write()/send() carry no rule
 *   number, and div_send() rejects a sockaddr that is not AF_INET/16 bytes.
 */
import { loadNative, Native, POLL_READABLE, PollerHandle, SysError } from '../native';
import { decodeDivertAddr, encodeDivertBind, SOCKADDR_IN_LEN } from '../bsd/sockaddr';
import { Clock, FtpProxyError, Logger, Packet, PacketHandler, PacketSource, Timer } from '../types';

/** AF_DIVERT = PF_DIVERT on FreeBSD 14+ (sys/sys/socket.h) */
export const PF_DIVERT = 44;
/** IPPROTO_DIVERT (sys/netinet/in.h): the pre-14 way to ask for a divert socket */
export const IPPROTO_DIVERT = 258;
/** FreeBSD's PF_INET / SOCK_RAW (sys/sys/socket.h) */
const FREEBSD_PF_INET = 2;
const FREEBSD_SOCK_RAW = 3;
/** DIVRCVQ (ip_divert.c): enough for any IP packet */
export const DIVERT_BUFSIZE = 65536 + 100;
/** how long a packet may be held while the handler runs before we release it anyway */
export const DEFAULT_HOLD_LIMIT_MS = 5000;

export interface DivertDatagram {
  /** the IPv4 or IPv6 packet, from the IP header on */
  packet: Buffer;
  /** the sockaddr_in bytes exactly as received */
  addr: Buffer;
}

export interface Watch {
  start(): void;
  stop(): void;
}

/** The divert socket, reduced to what DivertSource needs. */
export interface DivertIo {
  /** Create and bind the socket.  Throws FtpProxyError with a clear message. */
  open(): void;
  /** One datagram, or null when none is waiting. */
  recv(): DivertDatagram | null;
  /** sendto(fd, packet, 0, addr, addr.length) */
  send(packet: Buffer, addr: Buffer): void;
  /** Calls back when recv() may have data; err when the descriptor failed. */
  watch(onReady: (err?: Error) => void): Watch;
  close(): void;
}

function errCode(e: unknown): string {
  return typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string'
    ? (e as SysError).code
    : '';
}

/**
 * Readiness through the shim's Poller.  The shim's stop() closes the uv_poll
 * handle for good, so pausing means stopping and starting means a new Poller.
 */
function pollerWatch(native: Native, fd: number, onReady: (err?: Error) => void): Watch {
  let poller: PollerHandle | undefined;
  return {
    start: () => {
      if (poller !== undefined) return;
      poller = new native.Poller(fd, (status: number) => {
        if (status < 0) onReady(new Error(`poll failed on fd ${fd}: status ${status}`));
        else onReady();
      });
      poller.start(POLL_READABLE);
    },
    stop: () => {
      poller?.stop();
      poller = undefined;
    },
  };
}

/** The real divert socket through the native shim. */
export class NativeDivertIo implements DivertIo {
  private fd = -1;
  private readonly buf = Buffer.alloc(DIVERT_BUFSIZE);
  constructor(
    private readonly port: number,
    private readonly native: Native,
    private readonly logger?: Logger,
  ) {}

  open(): void {
    const n = this.native;
    let fd: number;
    try {
      fd = n.socket(PF_DIVERT, FREEBSD_SOCK_RAW, 0);
    } catch (e) {
      const code = errCode(e);
      if (code !== 'EAFNOSUPPORT' && code !== 'EPROTONOSUPPORT') throw this.openError(e);
      this.logger?.log('debug', `socket(PF_DIVERT): ${code}, trying socket(PF_INET, SOCK_RAW, IPPROTO_DIVERT)`);
      try {
        fd = n.socket(FREEBSD_PF_INET, FREEBSD_SOCK_RAW, IPPROTO_DIVERT);
      } catch (e2) {
        throw this.openError(e2);
      }
    }
    try {
      n.bind(fd, encodeDivertBind(this.port));
    } catch (e) {
      n.close(fd);
      if (errCode(e) === 'EADDRINUSE') {
        throw new FtpProxyError('divert-port-in-use', `divert port ${this.port} is already bound by another process`, { fatal: true, cause: e });
      }
      throw new FtpProxyError('divert-bind', `cannot bind divert port ${this.port}: ${String(e)}`, { fatal: true, cause: e });
    }
    this.fd = fd;
  }

  private openError(e: unknown): FtpProxyError {
    const code = errCode(e);
    if (code === 'EPERM' || code === 'EACCES') {
      return new FtpProxyError('divert-permission', 'opening a divert(4) socket needs root', { fatal: true, cause: e });
    }
    if (code === 'EAFNOSUPPORT' || code === 'EPROTONOSUPPORT') {
      return new FtpProxyError('divert-missing', 'divert(4) is not available: load it with `kldload ipdivert` (kld_list="ipdivert" in rc.conf)', { fatal: true, cause: e });
    }
    return new FtpProxyError('divert-open', `cannot open a divert(4) socket: ${String(e)}`, { fatal: true, cause: e });
  }

  recv(): DivertDatagram | null {
    const r = this.native.recvfrom(this.fd, this.buf);
    if (r === null) return null;
    return { packet: Buffer.from(this.buf.subarray(0, Math.min(r.n, this.buf.length))), addr: Buffer.from(r.addr) };
  }

  send(packet: Buffer, addr: Buffer): void {
    this.native.sendto(this.fd, packet, addr);
  }

  watch(onReady: (err?: Error) => void): Watch {
    return pollerWatch(this.native, this.fd, onReady);
  }

  close(): void {
    if (this.fd >= 0) this.native.close(this.fd);
    this.fd = -1;
  }
}

/**
 * A divert socket simulated over any datagram descriptor (a socketpair in the
 * tests): each datagram is [16 sockaddr bytes][packet], both ways.
 */
export class FramedDivertIo implements DivertIo {
  private readonly buf = Buffer.alloc(SOCKADDR_IN_LEN + DIVERT_BUFSIZE);
  constructor(
    private readonly fd: number,
    private readonly native: Native,
  ) {}

  open(): void {
    /* the descriptor is already open */
  }

  recv(): DivertDatagram | null {
    const r = this.native.recvfrom(this.fd, this.buf);
    if (r === null) return null;
    const n = Math.min(r.n, this.buf.length);
    if (n < SOCKADDR_IN_LEN) {
      throw new FtpProxyError('divert-frame', `simulated divert datagram of ${n} bytes has no sockaddr`);
    }
    return {
      addr: Buffer.from(this.buf.subarray(0, SOCKADDR_IN_LEN)),
      packet: Buffer.from(this.buf.subarray(SOCKADDR_IN_LEN, n)),
    };
  }

  send(packet: Buffer, addr: Buffer): void {
    this.native.sendto(this.fd, Buffer.concat([addr, packet]), null);
  }

  watch(onReady: (err?: Error) => void): Watch {
    return pollerWatch(this.native, this.fd, onReady);
  }

  close(): void {
    this.native.close(this.fd);
  }
}

export interface DivertSourceOptions {
  /** divert port (-p) */
  port: number;
  logger: Logger;
  /** defaults to loadNative(), only loaded when `io` is not given */
  native?: Native;
  /** defaults to process.platform; anything but 'freebsd' refuses to open */
  platform?: string;
  /** the socket layer; defaults to NativeDivertIo(port, native) */
  io?: DivertIo;
  /** capture timestamps; defaults to Date.now */
  clock?: Clock;
  /** release a packet whose handler has not settled after this many ms (default 5000) */
  holdLimitMs?: number;
}

/**
 * PacketSource over divert(4).  Packets are handled one at a time in arrival
 * order, so the engine sees a control connection's segments in order and a
 * later packet never overtakes one whose hole is still being opened.
 */
export class DivertSource implements PacketSource {
  readonly kind = 'divert';
  private io: DivertIo | undefined;
  private watcher: Watch | undefined;
  private busy = false;
  private closed = false;
  private inflight: Promise<void> = Promise.resolve();
  private finish: { resolve: () => void; reject: (e: unknown) => void } | undefined;
  private handler: PacketHandler | undefined;
  private readonly holdLimitMs: number;

  constructor(private readonly opts: DivertSourceOptions) {
    this.holdLimitMs = opts.holdLimitMs ?? DEFAULT_HOLD_LIMIT_MS;
  }

  async open(): Promise<void> {
    const platform = this.opts.platform ?? process.platform;
    if (platform !== 'freebsd') {
      throw new FtpProxyError('divert-unsupported', 'divert(4) is FreeBSD-only; on Linux use -m nftables', { fatal: true });
    }
    const io = this.opts.io ?? new NativeDivertIo(this.opts.port, this.opts.native ?? loadNative(), this.opts.logger);
    io.open();
    this.io = io;
    this.opts.logger.log('debug', `divert socket bound to port ${this.opts.port}`);
  }

  run(handler: PacketHandler): Promise<void> {
    const io = this.io;
    if (io === undefined) return Promise.reject(new FtpProxyError('divert-not-open', 'DivertSource.run() before open()'));
    if (this.closed) return Promise.resolve();
    this.handler = handler;
    return new Promise<void>((resolve, reject) => {
      this.finish = { resolve, reject };
      this.watcher = io.watch((err) => {
        if (err !== undefined) this.fail(err);
        else this.pump();
      });
      this.watcher.start();
      this.pump();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.stop();
    // the packet being handled, if any, is released by its own path (at the
    // latest after holdLimitMs); wait for it before closing the socket
    await this.inflight;
    this.io?.close();
    this.finish?.resolve();
    this.finish = undefined;
  }

  private fail(err: unknown): void {
    if (this.closed) return;
    const e = new FtpProxyError('capture-lost', `divert socket failed: ${String(err)}`, { fatal: true, cause: err });
    const finish = this.finish;
    this.finish = undefined;
    void this.close().then(() => finish?.reject(e));
  }

  /** Read the next datagram if we are idle; handle it; then look for more. */
  private pump(): void {
    if (this.busy || this.closed || this.io === undefined) return;
    let d: DivertDatagram | null;
    try {
      d = this.io.recv();
    } catch (e) {
      if (errCode(e) === 'EAGAIN' || errCode(e) === 'EINTR') return;
      if (e instanceof FtpProxyError && e.code === 'divert-frame') {
        this.opts.logger.log('err', e.message);
        return;
      }
      this.fail(e);
      return;
    }
    if (d === null) return;
    this.busy = true;
    this.watcher?.stop();
    this.inflight = this.handleOne(d).finally(() => {
      this.busy = false;
      if (!this.closed) {
        this.watcher?.start();
        this.pump();
      }
    });
  }

  private async handleOne(d: DivertDatagram): Promise<void> {
    let raw: Buffer;
    try {
      raw = decodeDivertAddr(d.addr).raw;
    } catch (e) {
      // never from a real divert socket: without a valid sockaddr the kernel
      // would refuse the reinjection anyway
      this.opts.logger.log('err', `divert: dropping a packet with a bad sockaddr: ${String(e)}`);
      return;
    }
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.reinject(d.packet, raw);
    };
    const clock = this.opts.clock;
    const pkt: Packet = { data: Uint8Array.from(d.packet), time: clock !== undefined ? clock.now() : Date.now() };
    let timer: Timer | undefined;
    const held = new Promise<void>((resolve) => {
      const onLimit = (): void => {
        if (!released) {
          this.opts.logger.log('warning', `divert: handler still busy after ${this.holdLimitMs} ms; releasing the packet`);
        }
        resolve();
      };
      if (clock !== undefined) timer = clock.setTimer(this.holdLimitMs, onLimit);
      else {
        const t = setTimeout(onLimit, this.holdLimitMs);
        timer = { cancel: () => clearTimeout(t) };
      }
    });
    const handled = (async () => {
      try {
        await this.handler?.(pkt);
      } catch (e) {
        this.opts.logger.log('err', `divert: packet handler failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    })();
    try {
      await Promise.race([handled, held]);
    } finally {
      timer?.cancel();
      release();
    }
  }

  private reinject(packet: Buffer, addr: Buffer): void {
    try {
      this.io?.send(packet, addr);
    } catch (e) {
      // the packet is lost; TCP will retransmit it and we get another chance
      this.opts.logger.log('warning', `divert: reinjection failed: ${errCode(e) || String(e)}`);
    }
  }
}
