/**
 * Capture for shadow mode on Linux (`-m nftables -n`): NFLOG over
 * NETLINK_NETFILTER.  The kernel sends us a *copy* of each FTP control packet
 * (iptables/ip6tables `-j NFLOG --nflog-group <p>`), the way ipfw's ngtee does
 * on FreeBSD; the original packet goes on by itself.  So there is nothing to
 * release or reinject, and ftp6proxy -n can run beside the daemon that holds
 * the packets (the C daemon on FreeBSD, or ftp6proxy on NFQUEUE here) without
 * ever delaying them.  The price is the tee race: the copy may be read after
 * the original went on, which is fine for a shadow that only logs.
 *
 * Layouts and constants: include/uapi/linux/netfilter/nfnetlink_log.h and
 * include/uapi/linux/netfilter/nfnetlink.h (NFNL_SUBSYS_ULOG = 4).
 */
import { Native } from '../native';
import {
  openCapture,
  NFPROTO_UNSPEC,
  NLM_F_ACK,
  NLM_F_REQUEST,
  NetlinkSocket,
  NlBuilder,
  NlMessage,
  attrMap,
  defaultClock,
  nfnlType,
} from '../netlink';
import { Clock, FtpProxyError, Logger, PacketHandler, PacketSource } from '../types';

// ---- include/uapi/linux/netfilter/nfnetlink.h -----------------------------------
export const NFNL_SUBSYS_ULOG = 4;
// ---- include/uapi/linux/netfilter/nfnetlink_log.h -------------------------------
/* enum nfulnl_msg_types */
export const NFULNL_MSG_PACKET = 0;
export const NFULNL_MSG_CONFIG = 1;
/* enum nfulnl_attr_type */
export const NFULA_PACKET_HDR = 1; // struct nfulnl_msg_packet_hdr { __be16 hw_protocol; u8 hook; u8 _pad; }
export const NFULA_PAYLOAD = 9;
export const NFULA_PREFIX = 10; // NUL-terminated string (--nflog-prefix)
/* enum nfulnl_msg_config_cmds */
export const NFULNL_CFG_CMD_BIND = 1;
export const NFULNL_CFG_CMD_UNBIND = 2;
/* enum nfulnl_attr_config */
export const NFULA_CFG_CMD = 1; // struct nfulnl_msg_config_cmd { u8 command; } packed
export const NFULA_CFG_MODE = 2; // struct nfulnl_msg_config_mode { __be32 copy_range; u8 copy_mode; u8 _pad; } packed
export const NFULA_CFG_TIMEOUT = 4; // __be32, 1/100 s
export const NFULA_CFG_QTHRESH = 5; // __be32, packets
export const NFULNL_COPY_PACKET = 0x02;

const MSG_PACKET = nfnlType(NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET);
const MSG_CONFIG = nfnlType(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG);

/** NFULNL_MSG_CONFIG with NFULA_CFG_CMD (bind/unbind) for `group`; res_id is the group, big-endian. */
export function encodeNflogCommand(b: NlBuilder, seq: number, group: number, command: number): NlBuilder {
  return b
    .beginMsg(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq)
    .nfgen(NFPROTO_UNSPEC, group)
    .attr(NFULA_CFG_CMD, Uint8Array.of(command))
    .endMsg();
}

/**
 * NFULNL_MSG_CONFIG: copy whole packets (up to `range` bytes), and send each
 * packet at once (queue threshold 1, flush timeout `timeoutCs` hundredths):
 * the kernel's defaults batch up to 100 packets or one second.
 */
export function encodeNflogMode(b: NlBuilder, seq: number, group: number, range: number, timeoutCs = 1): NlBuilder {
  const mode = Buffer.alloc(6);
  mode.writeUInt32BE(range >>> 0, 0); // __be32 copy_range
  mode[4] = NFULNL_COPY_PACKET; // u8 copy_mode, then u8 _pad
  return b
    .beginMsg(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq)
    .nfgen(NFPROTO_UNSPEC, group)
    .attr(NFULA_CFG_MODE, mode)
    .u32be(NFULA_CFG_QTHRESH, 1)
    .u32be(NFULA_CFG_TIMEOUT, timeoutCs)
    .endMsg();
}

export interface NflogPacket {
  /** nfgenmsg.nfgen_family: NFPROTO_IPV4 / NFPROTO_IPV6 */
  family: number;
  group: number;
  hwProtocol: number;
  hook: number;
  prefix?: string;
  /** the packet from its IP header on (a view into the receive buffer) */
  payload: Buffer;
}

/** Decode an NFULNL_MSG_PACKET; null for anything else or malformed input.  Never throws. */
export function decodeNflogPacket(msg: NlMessage): NflogPacket | null {
  if (msg.type !== MSG_PACKET || msg.payload.length < 4) return null;
  const attrs = attrMap(msg.payload, 4);
  if (attrs === null) return null;
  const hdr = attrs.get(NFULA_PACKET_HDR);
  const payload = attrs.get(NFULA_PAYLOAD);
  if (payload === undefined) return null;
  const prefix = attrs.get(NFULA_PREFIX);
  let prefixText: string | undefined;
  if (prefix !== undefined) {
    const z = prefix.indexOf(0);
    prefixText = prefix.toString('latin1', 0, z < 0 ? prefix.length : z);
  }
  return {
    family: msg.payload[0],
    group: msg.payload.readUInt16BE(2),
    hwProtocol: hdr !== undefined && hdr.length >= 2 ? hdr.readUInt16BE(0) : 0,
    hook: hdr !== undefined && hdr.length >= 3 ? hdr[2] : 0,
    prefix: prefixText,
    payload,
  };
}

export interface NflogOptions {
  /** NFLOG group (--nflog-group), 0..65535: ftp6proxy's -p in shadow mode */
  group: number;
  logger: Logger;
  native?: Native;
  clock?: Clock;
  /** wait for the kernel's ACK of each config message (default 2000 ms) */
  ackTimeoutMs?: number;
  /** SO_RCVBUFFORCE size (default 4 MiB) */
  rcvbuf?: number;
}

export class NflogSource implements PacketSource {
  readonly kind = 'nflog';
  private readonly group: number;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly ackTimeoutMs: number;
  private readonly rcvbuf: number;
  private readonly sock: NetlinkSocket;
  private handler: PacketHandler | null = null;
  private finish: { resolve: () => void; reject: (e: Error) => void } | null = null;
  private closed = false;

  constructor(opts: NflogOptions) {
    if (!Number.isInteger(opts.group) || opts.group < 0 || opts.group > 65535) {
      throw new FtpProxyError('usage', `NFLOG group must be 0..65535, not ${opts.group}`);
    }
    this.group = opts.group;
    this.logger = opts.logger;
    this.clock = opts.clock ?? defaultClock();
    this.ackTimeoutMs = opts.ackTimeoutMs ?? 2000;
    this.rcvbuf = opts.rcvbuf ?? 4 * 1024 * 1024;
    this.sock = new NetlinkSocket({ native: opts.native, clock: this.clock, logger: opts.logger });
  }

  async open(): Promise<void> {
    // NFULNL_CFG_CMD_PF_BIND is not sent: the NFLOG target hands packets to
    // nfnetlink_log directly, whatever logger is bound to the family.
    await openCapture(this.sock, {
      name: 'nflog',
      rcvbuf: this.rcvbuf,
      ackTimeoutMs: this.ackTimeoutMs,
      logger: this.logger,
      onMessage: (msg) => this.onMessage(msg),
      steps: [
        {
          build: (b, seq) => encodeNflogCommand(b, seq, this.group, NFULNL_CFG_CMD_BIND),
          what: `NFLOG group ${this.group} bind`,
          error: (e) => {
            const code = (e as { code?: unknown }).code;
            if (code === 'EBUSY') return new FtpProxyError('nflog-busy', `NFLOG group ${this.group} is in use (bound by another process, e.g. ulogd)`, { fatal: true, cause: e });
            if (code === 'EPERM') return new FtpProxyError('nflog-perm', `NFLOG group ${this.group}: binding needs root (CAP_NET_ADMIN)`, { fatal: true, cause: e });
            return new FtpProxyError('nflog-bind', `cannot bind NFLOG group ${this.group}: ${(e as Error).message}`, { fatal: true, cause: e });
          },
        },
        {
          build: (b, seq) => encodeNflogMode(b, seq, this.group, 0xffff),
          what: `NFLOG group ${this.group} mode`,
          error: (e) => new FtpProxyError('nflog-config', `cannot configure NFLOG group ${this.group}: ${(e as Error).message}`, { fatal: true, cause: e }),
        },
      ],
    });
  }

  run(handler: PacketHandler): Promise<void> {
    if (!this.sock.isOpen || this.closed) return Promise.reject(new FtpProxyError('nflog-closed', 'NFLOG source is not open'));
    this.handler = handler;
    return new Promise<void>((resolve, reject) => {
      this.finish = { resolve, reject };
      this.sock.onOverrun = () =>
        this.logger.log('warning', `NFLOG group ${this.group}: receive buffer overrun: copies lost, the shadow log may miss holes`);
      this.sock.onFatal = (err) => {
        this.closed = true;
        const f = this.finish;
        this.finish = null;
        f?.reject(new FtpProxyError('nflog-lost', `NFLOG group ${this.group}: capture lost: ${err.message}`, { fatal: true, cause: err }));
      };
      this.sock.drain();
    });
  }

  private onMessage(msg: NlMessage): void {
    const p = decodeNflogPacket(msg);
    if (p === null) {
      this.logger.log('debug', `NFLOG group ${this.group}: ignored netlink message type 0x${msg.type.toString(16)}`);
      return;
    }
    const handler = this.handler;
    if (handler === null || this.closed) return; // a copy: dropping it harms no one
    // Copy out of the shared receive buffer: the handler may keep it.
    // The engine takes the packet synchronously inside handler(), so order is
    // kept even though we do not wait for the promise (nothing to release).
    const pkt = { data: new Uint8Array(p.payload), time: this.clock.now() };
    try {
      const r = handler(pkt);
      if (r !== undefined && typeof (r as Promise<void>).then === 'function') {
        (r as Promise<void>).then(undefined, (e: unknown) =>
          this.logger.log('err', `NFLOG group ${this.group}: packet handler failed: ${e instanceof Error ? e.message : String(e)}`));
      }
    } catch (e) {
      this.logger.log('err', `NFLOG group ${this.group}: packet handler threw: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  async close(): Promise<void> {
    if (this.closed && !this.sock.isOpen) return;
    this.closed = true;
    if (this.sock.isOpen) {
      // Unbind so another process can take the group at once; closing the
      // socket would do it too (the kernel's netlink release notifier).
      try {
        this.sock.send(encodeNflogCommand(new NlBuilder(64), this.sock.nextSeq(), this.group, NFULNL_CFG_CMD_UNBIND).bytes());
      } catch {
        /* closing the socket unbinds anyway */
      }
      this.sock.close();
    }
    const f = this.finish;
    this.finish = null;
    f?.resolve();
  }
}
