/**
 * ng_ipfw(4) capture for the netgraph module (FreeBSD only).
 *
 * The ipfw rules use `ngtee <hook>`: ipfw passes the packet on and hands a
 * COPY to the ng_ipfw node, hook "<hook>".  We create an ng_socket(4) node,
 * connect our hook "<hook>" to ipfw:<hook>, and read the copies from the data
 * socket.  Nothing is reinjected, so release is a no-op, and after start-up
 * we only read (the original could enter Capsicum in this mode for that reason).
 *
 * Set-up, as libnetgraph's NgMkSockNode() does it (lib/libnetgraph/sock.c):
 * 1. control socket: socket(PF_NETGRAPH=32, SOCK_DGRAM, NG_CONTROL=2) - this
 *    creates the node and needs privilege;
 * 2. bind it to a name (sockaddr_ng), so the data socket can find the node;
 * 3. data socket: socket(PF_NETGRAPH, SOCK_DGRAM, NG_DATA=1), connected to "name:";
 * 4. NGM_CONNECT sent over the control socket to "." (our own node) with
 *    path "ipfw:", ourhook "<hook>", peerhook "<hook>".  The kernel applies
 *    it during sendto(), so a failure (no ng_ipfw loaded, hook in use) comes
 *    back as sendto's errno.
 * Buffers: 20480 bytes (net.graph.maxdgram / net.graph.recvspace).
 *
 * THE RACE (for the man page):
 *   In netgraph mode ftp6proxy only receives a copy of each FTP control
 *   packet; the original travels on at once.  When a reply announces a data
 *   port (227/229, or PORT/EPRT from the client), the client may receive it
 *   and send its SYN before ftp6proxy has added the rule that lets that SYN
 *   through.  This is rare: adding the rule takes well under a millisecond
 *   once the copy is read, while the announcing packet still has to cross the
 *   network to the client and the client's SYN has to come back - a full
 *   round trip.  When it does happen, the first SYN is dropped and the client
 *   retransmits it after its initial retransmission timeout, about 1 second
 *   (3 seconds on older stacks); the transfer then starts normally.  The
 *   divert modules (ipfw, pf) have no such race: they hold the packet until
 *   the rule is in place.
 */
import { loadNative, Native, POLL_READABLE, PollerHandle, SysError } from '../native';
import {
  encodeConnect,
  encodeNodeNameAddr,
  encodeSockaddrNg,
  ipfwHookName,
  NG_CONTROL,
  NG_DATA,
  PF_NETGRAPH,
} from '../bsd/netgraph';
import { Clock, FtpProxyError, Logger, Packet, PacketHandler, PacketSource } from '../types';

/** net.graph.maxdgram / net.graph.recvspace default */
export const NG_BUFSIZE = 20480;
/** FreeBSD's SOCK_DGRAM (sys/sys/socket.h) */
const FREEBSD_SOCK_DGRAM = 2;

export interface NetgraphSourceOptions {
  /** ng_ipfw hook number (-p), the `ngtee` cookie */
  hook: number;
  logger: Logger;
  /** defaults to loadNative() */
  native?: Native;
  /** defaults to process.platform; anything but 'freebsd' refuses to open */
  platform?: string;
  /** our node's name; default "ftp6proxy<hook>" (a second instance on the same hook fails clearly) */
  nodeName?: string;
  /** capture timestamps; defaults to Date.now */
  clock?: Clock;
  /** SOCK_DGRAM of the platform; FreeBSD's 2 unless told (tests on Linux use 2 as well) */
  sockDgram?: number;
}

function errCode(e: unknown): string {
  return typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string'
    ? (e as SysError).code
    : '';
}

export class NetgraphSource implements PacketSource {
  readonly kind = 'netgraph';
  private native: Native | undefined;
  private cs = -1;
  private ds = -1;
  private poller: PollerHandle | undefined;
  private closed = false;
  private finish: { resolve: () => void; reject: (e: unknown) => void } | undefined;
  private readonly buf = Buffer.alloc(NG_BUFSIZE);
  private token = 0;

  constructor(private readonly opts: NetgraphSourceOptions) {}

  get nodeName(): string {
    return this.opts.nodeName ?? `ftp6proxy${this.opts.hook}`;
  }

  async open(): Promise<void> {
    const platform = this.opts.platform ?? process.platform;
    if (platform !== 'freebsd') {
      throw new FtpProxyError('netgraph-unsupported', 'netgraph(4) capture is FreeBSD-only; on Linux use -m nftables', { fatal: true });
    }
    const hook = ipfwHookName(this.opts.hook);
    const n = this.opts.native ?? loadNative();
    this.native = n;
    const dgram = this.opts.sockDgram ?? FREEBSD_SOCK_DGRAM;
    const step = (what: string, f: () => void): void => {
      try {
        f();
      } catch (e) {
        this.closeFds();
        throw this.error(what, e);
      }
    };
    step('control socket', () => {
      this.cs = n.socket(PF_NETGRAPH, dgram, NG_CONTROL);
    });
    step(`bind node name "${this.nodeName}"`, () => n.bind(this.cs, encodeNodeNameAddr(this.nodeName)));
    step('data socket', () => {
      this.ds = n.socket(PF_NETGRAPH, dgram, NG_DATA);
    });
    step(`connect data socket to "${this.nodeName}:"`, () => n.connect(this.ds, encodeSockaddrNg(`${this.nodeName}:`)));
    // NGM_CONNECT { path "ipfw:", ourhook "<hook>", peerhook "<hook>" } to "."
    step(`connect hook ${hook} to ipfw:${hook}`, () => {
      const msg = encodeConnect({ path: 'ipfw:', ourhook: hook, peerhook: hook, token: this.nextToken() });
      n.sendto(this.cs, msg, encodeSockaddrNg('.'));
    });
    this.opts.logger.log('debug', `netgraph node ${this.nodeName}: hook ${hook} connected to ipfw:${hook}`);
  }

  private nextToken(): number {
    this.token = (this.token % 0x7fffffff) + 1;
    return this.token;
  }

  private error(what: string, e: unknown): FtpProxyError {
    const code = errCode(e);
    let hint = '';
    if (code === 'EPERM' || code === 'EACCES') hint = ': creating a netgraph socket node needs root';
    else if (code === 'EPROTONOSUPPORT' || code === 'EAFNOSUPPORT') hint = ': load ng_socket (kldload ng_socket)';
    else if (code === 'ENOENT') hint = ': no ipfw: node (kldload ng_ipfw)';
    else if (code === 'EADDRINUSE') hint = `: the node name ${this.nodeName} is taken (another ftp6proxy on hook ${this.opts.hook}?)`;
    else if (code === 'EEXIST') hint = `: hook ${this.opts.hook} of ipfw: is already connected`;
    return new FtpProxyError('netgraph-open', `netgraph: ${what} failed (${code || String(e)})${hint}`, { fatal: true, cause: e });
  }

  run(handler: PacketHandler): Promise<void> {
    const n = this.native;
    if (n === undefined || this.ds < 0) {
      return Promise.reject(new FtpProxyError('netgraph-not-open', 'NetgraphSource.run() before open()'));
    }
    if (this.closed) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.finish = { resolve, reject };
      this.poller = new n.Poller(this.ds, (status: number) => {
        if (status < 0) this.fail(new Error(`poll status ${status}`));
        else this.drain(handler);
      });
      this.poller.start(POLL_READABLE);
      this.drain(handler);
    });
  }

  /**
   * Read every waiting copy.  The handler is called without awaiting the
   * previous one: copies cannot be held back anyway, and the engine keeps its
   * own per-flow order.  Release is a no-op, so "exactly once" is trivial here.
   */
  private drain(handler: PacketHandler): void {
    const n = this.native;
    if (n === undefined) return;
    for (;;) {
      if (this.closed) return;
      let r;
      try {
        r = n.recvfrom(this.ds, this.buf);
      } catch (e) {
        const code = errCode(e);
        if (code === 'EAGAIN' || code === 'EINTR') return;
        if (code === 'ENOBUFS') {
          this.opts.logger.log('warning', 'netgraph: receive buffer overflow, copies were lost');
          continue;
        }
        this.fail(e);
        return;
      }
      if (r === null) return;
      const clock = this.opts.clock;
      const pkt: Packet = {
        data: Uint8Array.from(this.buf.subarray(0, Math.min(r.n, this.buf.length))),
        time: clock !== undefined ? clock.now() : Date.now(),
      };
      try {
        const p = handler(pkt);
        if (p !== undefined) {
          p.catch((e: unknown) => this.opts.logger.log('err', `netgraph: packet handler failed: ${String(e)}`));
        }
      } catch (e) {
        this.opts.logger.log('err', `netgraph: packet handler failed: ${String(e)}`);
      }
    }
  }

  private fail(e: unknown): void {
    if (this.closed) return;
    const finish = this.finish;
    this.finish = undefined;
    void this.close().then(() =>
      finish?.reject(new FtpProxyError('capture-lost', `netgraph data socket failed: ${String(e)}`, { fatal: true, cause: e })),
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.poller?.stop();
    this.poller = undefined;
    // closing the control socket shuts the node down, which removes our hook
    // from ipfw: as well (ng_socket(4))
    this.closeFds();
    this.finish?.resolve();
    this.finish = undefined;
  }

  private closeFds(): void {
    const n = this.native;
    if (n === undefined) return;
    if (this.ds >= 0) n.close(this.ds);
    if (this.cs >= 0) n.close(this.cs);
    this.ds = -1;
    this.cs = -1;
  }
}
