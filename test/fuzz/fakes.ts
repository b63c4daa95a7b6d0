/**
 * In-memory stand-ins for the kernel side of the capture backends, so the
 * real NfqueueSource and DivertSource release logic runs under the fuzzer:
 *
 * - FakeNetlinkNative implements the shim's `Native` for one NETLINK_NETFILTER
 *   socket: it ACKs requests that ask for one (NLM_F_ACK), records every
 *   verdict (NFQA_VERDICT_HDR, include/uapi/linux/netfilter/nfnetlink_queue.h),
 *   and queues NFQNL_MSG_PACKET messages for recvfrom().
 * - FakeDivertIo implements DivertIo and records reinjections.
 */
import { encodeDivertAddr } from '../../src/bsd/sockaddr';
import type { DivertDatagram, DivertIo, Watch } from '../../src/capture/divert';
import { NFQA_MARK, NFQA_PACKET_HDR, NFQA_PAYLOAD, NFQA_VERDICT_HDR, NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT } from '../../src/capture/nfqueue';
import type { Native, PollerHandle } from '../../src/native';
import {
  NFNL_SUBSYS_QUEUE,
  NLMSG_ERROR,
  NLM_F_ACK,
  NlBuilder,
  attrMap,
  nfnlType,
  parseMessages,
} from '../../src/netlink';

const MSG_VERDICT = nfnlType(NFNL_SUBSYS_QUEUE, NFQNL_MSG_VERDICT);
const MSG_PACKET = nfnlType(NFNL_SUBSYS_QUEUE, NFQNL_MSG_PACKET);

function unsupported(name: string): never {
  throw new Error(`fake native: ${name} not supported`);
}

/** An NFQNL_MSG_PACKET datagram for queue `queue`, packet id `id`. */
export function nfqPacketMessage(queue: number, id: number, payload: Uint8Array, withPayload = true, mark = 0): Buffer {
  const hdr = Buffer.alloc(7); // struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; } packed
  hdr.writeUInt32BE(id >>> 0, 0);
  hdr.writeUInt16BE(0x86dd, 4);
  hdr[6] = 2; // NF_INET_FORWARD
  const b = new NlBuilder(128).beginMsg(MSG_PACKET, 0, 0).nfgen(10, queue).attr(NFQA_PACKET_HDR, hdr);
  if (mark !== 0) b.u32be(NFQA_MARK, mark); // the kernel sends NFQA_MARK only for a non-zero mark
  if (withPayload) b.attr(NFQA_PAYLOAD, payload);
  return Buffer.from(b.endMsg().bytes());
}

export class FakeNetlinkNative {
  /** packet id -> number of ACCEPT verdicts, in order of arrival */
  readonly verdicts: number[] = [];
  /** the NFQA_MARK of each verdict (undefined: none), in the same order */
  readonly verdictMarks: Array<number | undefined> = [];
  private readonly rx: Buffer[] = [];
  private poller: { cb: (status: number, events: number) => void; on: boolean } | null = null;
  private fdOpen = false;
  private scheduled = false;
  /** set to make the next recvfrom fail like a lost socket */
  failWith: string | null = null;
  recvCalls = 0;

  /** Queue a datagram and signal readability. */
  inject(d: Buffer): void {
    this.rx.push(d);
    this.kick();
  }

  kick(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.poller !== null && this.poller.on && this.fdOpen) this.poller.cb(0, 1);
    });
  }

  get native(): Native {
    const self = this;
    class FakePoller implements PollerHandle {
      constructor(_fd: number, cb: (status: number, events: number) => void) {
        self.poller = { cb, on: false };
      }
      start(): void {
        if (self.poller) self.poller.on = true;
        self.kick();
      }
      stop(): void {
        if (self.poller) self.poller.on = false;
      }
    }
    return {
      socket: () => {
        this.fdOpen = true;
        return 42;
      },
      socketpair: () => unsupported('socketpair'),
      bind: () => undefined,
      connect: () => unsupported('connect'),
      sendto: (_fd: number, data: Buffer) => {
        this.onSend(data);
        return data.length;
      },
      recv: (_fd: number, buf: Buffer): number => {
        this.recvCalls++;
        if (this.failWith !== null) {
          const e = new Error(`recv: ${this.failWith}`) as Error & { code: string };
          e.code = this.failWith;
          throw e;
        }
        const d = this.rx.shift();
        if (d === undefined) return -1;
        d.copy(buf, 0, 0, Math.min(d.length, buf.length));
        return d.length;
      },
      recvfrom: () => unsupported('recvfrom'),
      setsockopt: () => undefined,
      getsockopt: () => Buffer.alloc(4),
      close: () => {
        this.fdOpen = false;
      },
      chroot: () => unsupported('chroot'),
      getpwnam: () => null,
      Poller: FakePoller,
      constants: {
        AF_UNIX: 1, AF_INET: 2, AF_INET6: 10, AF_NETLINK: 16, SOCK_STREAM: 1, SOCK_DGRAM: 2, SOCK_RAW: 3,
        SOL_SOCKET: 1, SO_RCVBUF: 8, SO_SNDBUF: 7, SO_RCVBUFFORCE: 33, SO_ERROR: 4, MSG_DONTWAIT: 0x40,
        MSG_TRUNC: 0x20, EAGAIN: 11, ENOBUFS: 105, EAFNOSUPPORT: 97, EPROTONOSUPPORT: 93, EPERM: 1, ENOENT: 2, EINVAL: 22,
      },
      platform: 'linux',
    };
  }

  private onSend(data: Buffer): void {
    for (const m of parseMessages(data)) {
      if (m.type === MSG_VERDICT) {
        const a = attrMap(m.payload, 4);
        const v = a?.get(NFQA_VERDICT_HDR);
        if (v !== undefined && v.length >= 8) {
          this.verdicts.push(v.readUInt32BE(4));
          const mk = a?.get(NFQA_MARK);
          this.verdictMarks.push(mk !== undefined && mk.length >= 4 ? mk.readUInt32BE(0) : undefined);
        }
      }
      if ((m.flags & NLM_F_ACK) !== 0) {
        // struct nlmsgerr { int error = 0; struct nlmsghdr msg; } (include/uapi/linux/netlink.h)
        const ack = Buffer.alloc(16 + 4 + 16);
        ack.writeUInt32LE(ack.length, 0);
        ack.writeUInt16LE(NLMSG_ERROR, 4);
        ack.writeUInt32LE(m.seq, 8);
        ack.writeInt32LE(0, 16);
        ack.writeUInt32LE(16 + m.payload.length, 20);
        ack.writeUInt16LE(m.type, 24);
        ack.writeUInt16LE(m.flags, 26);
        ack.writeUInt32LE(m.seq, 28);
        this.inject(ack);
      }
    }
  }
}

/** A divert socket in memory; packets carry their id in their first 4 bytes. */
export class FakeDivertIo implements DivertIo {
  readonly reinjected: number[] = [];
  private readonly rx: DivertDatagram[] = [];
  private onReady: ((err?: Error) => void) | null = null;
  private on = false;
  private readonly addr = encodeDivertAddr({ rule: 100, addr: '198.18.1.1' });

  open(): void {}
  inject(id: number): void {
    const p = Buffer.alloc(24);
    p.writeUInt32BE(id >>> 0, 0);
    this.rx.push({ packet: p, addr: this.addr });
    setImmediate(() => {
      if (this.on) this.onReady?.();
    });
  }
  recv(): DivertDatagram | null {
    return this.rx.shift() ?? null;
  }
  send(packet: Buffer): void {
    this.reinjected.push(packet.readUInt32BE(0));
  }
  watch(onReady: (err?: Error) => void): Watch {
    this.onReady = onReady;
    return {
      start: () => {
        this.on = true;
      },
      stop: () => {
        this.on = false;
      },
    };
  }
  close(): void {
    this.on = false;
  }
}
