/**
 * The recording firewall: it keeps a transcript of the operations and touches
 * nothing.  Used by ftp6proxy-replay, the compat suite, the tests and shadow
 * mode (-n).
 */
import { Firewall, Hole } from '../types';

export interface RecordedOp {
  op: 'check' | 'sweep' | 'open' | 'close' | 'shutdown';
  hole?: Hole;
  timeoutSec?: number;
}

export interface RecordingOptions {
  /** make open() fail (tests of the failure path) */
  failOpen?: boolean;
  /** make open() never answer (tests of the bounded wait) */
  hangOpen?: boolean;
  /** called for every operation, e.g. to log it in shadow mode */
  onOp?: (op: RecordedOp) => void;
}

export class RecordingFirewall implements Firewall {
  readonly kind = 'recording';
  readonly ops: RecordedOp[] = [];
  private readonly open_ = new Set<number>();

  constructor(private readonly opts: RecordingOptions = {}) {}

  private rec(op: RecordedOp): void {
    this.ops.push(op);
    this.opts.onOp?.(op);
  }

  /** rule numbers currently open */
  openRules(): number[] {
    return [...this.open_].sort((a, b) => a - b);
  }

  async check(): Promise<void> {
    this.rec({ op: 'check' });
  }

  async sweep(): Promise<void> {
    this.rec({ op: 'sweep' });
    this.open_.clear();
  }

  open(hole: Hole, timeoutSec: number): Promise<void> {
    this.rec({ op: 'open', hole: { ...hole }, timeoutSec });
    if (this.opts.hangOpen) return new Promise<void>(() => undefined);
    if (this.opts.failOpen) return Promise.reject(new Error('recording firewall told to fail'));
    this.open_.add(hole.rule);
    return Promise.resolve();
  }

  async close(hole: Hole): Promise<boolean> {
    this.rec({ op: 'close', hole: { ...hole } });
    this.open_.delete(hole.rule);
    return true;
  }

  async shutdown(): Promise<void> {
    this.rec({ op: 'shutdown' });
  }
}
