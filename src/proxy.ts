/**
 * The packet handler: engine decisions become hole requests.  The capture
 * source releases the packet after the returned promise settles, so the hole
 * is in place (or its bounded wait is over) before the packet that announced
 * it goes on.  A packet that announces nothing (nearly all of them) is
 * handled synchronously, so its verdict goes out in the same turn of the
 * event loop, without a promise; so is one whose holes the firewall opened
 * at once (nftables, whose ACK comes with the send).
 */
import type { Engine } from './engine';
import type { HoleManager } from './holes';
import { Decision, Packet } from './types';

export interface ProxyCounters {
  packets: number;
  holesRequested: number;
  refused: number;
}

export class ControlProxy {
  readonly counters: ProxyCounters = { packets: 0, holesRequested: 0, refused: 0 };

  constructor(
    private readonly engine: Engine,
    private readonly holes: HoleManager,
  ) {}

  /** PacketHandler: never throws, never rejects. */
  readonly handle = (pkt: Packet): Promise<void> | undefined => {
    this.counters.packets++;
    const decisions = this.engine.process(pkt);
    if (decisions.length === 0) return undefined;
    return this.apply(decisions, 0);
  };

  /**
   * The decisions from `from` on.  A hole the firewall opened at once (see
   * Firewall.openNow) needs no promise: when all of them did, the packet's
   * verdict goes out in this turn too.
   */
  private apply(decisions: Decision[], from: number): Promise<void> | undefined {
    for (let i = from; i < decisions.length; i++) {
      const d = decisions[i];
      if (d.type === 'refuse') {
        // the engine has logged the refusal and its reason
        this.counters.refused++;
        continue;
      }
      this.counters.holesRequested++;
      const r = this.holes.requestNow(d.session, d.via, d.hole);
      if (r instanceof Promise) return r.then(() => this.apply(decisions, i + 1));
    }
    return undefined;
  }
}
