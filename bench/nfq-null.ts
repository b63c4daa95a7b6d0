/**
 * A baseline for `npm run bench`, not part of ftp6proxy: ftp6proxy's own
 * NFQUEUE capture (NfqueueSource, the native shim, libuv, V8) with a handler
 * that does nothing, so every packet gets its ACCEPT verdict at once, the
 * see-all bit cleared as ftp6proxy -s clears it outside a multi-line reply.
 * No engine, no hole: the bench lets the data connection through with a
 * rule of its own.  Beside bench/nfq-null.c (the same in C), it shows what
 * a Node.js process costs a held packet before ftp6proxy does any work.
 *
 *   ip netns exec GW node dist/bench/nfq-null.js QUEUE
 */
import { NfqueueSource } from '../src/capture/nfqueue';
import type { Packet } from '../src/types';

async function main(queue: number): Promise<void> {
  const source = new NfqueueSource({ queue, logger: { log: () => undefined }, seeAllMark: 0x100000 });
  await source.open();
  process.once('SIGTERM', () => void source.close());
  await source.run((pkt: Packet) => {
    pkt.seeAll = false;
  });
}

main(Number(process.argv[2] ?? 10004)).then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`nfq-null: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
