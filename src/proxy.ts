/**
 * The packet handler: engine decisions become hole requests.  The capture
 * source releases the packet after the returned promise settles, so the hole
 * is in place (or its bounded wait is over) before the packet that announced
 * it goes on.  A packet that announces nothing (nearly all of them) is
 * handled synchronously, so its verdict goes out in the same turn of the
 * event loop, without a promise.
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
    return this.apply(decisions);
  };

  private async apply(decisions: Decision[]): Promise<void> {
    for (const d of decisions) {
      if (d.type === 'refuse') {
        // the engine has logged the refusal and its reason
        this.counters.refused++;
      } else {
        this.counters.holesRequested++;
        await this.holes.request(d.session, d.via, d.hole);
      }
    }
  }
}
