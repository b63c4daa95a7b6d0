/** NFQUEUE's backstop: a handler that never settles still gets its packet released, once. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FakeNetlinkNative, nfqPacketMessage } from '../fuzz/fakes';
import { NfqueueSource, DEFAULT_HOLD_LIMIT_MS } from '../../src/capture/nfqueue';
import { Level } from '../../src/types';

test('a packet whose handler never settles is released after holdLimitMs, exactly once, and logged', async () => {
  assert.is(DEFAULT_HOLD_LIMIT_MS, 5000);
  const k = new FakeNetlinkNative();
  const lines: string[] = [];
  const src = new NfqueueSource({ queue: 3, logger: { log: (l: Level, m: string) => lines.push(`${l}: ${m}`) }, native: k.native, holdLimitMs: 150 });
  await src.open();
  const running = src.run(() => new Promise<void>(() => undefined));
  k.inject(nfqPacketMessage(3, 7, Uint8Array.from([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 1, 10, 198, 18, 2, 10])));
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(k.verdicts, [], 'still held before the limit');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(k.verdicts, [7]);
  assert.ok(lines.some((l) => /^warning: NFQUEUE 3: packet 7 released after 150 ms/.test(l)), lines.join('\n'));
  await src.close();
  await running;
  assert.equal(k.verdicts, [7], 'not released a second time at close');
});

test.run();
