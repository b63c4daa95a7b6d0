/**
 * Runs a lab test file inside a network namespace of its own.  Node cannot
 * setns(2), so the file re-executes itself under `ip netns exec NS node
 * <file>` with NL_NETNS set, and the outer process only creates the
 * namespace, waits, and deletes it.
 *
 * Not root: print SKIP with the reason (and fail when CI=true).
 */
import { execFileSync, spawnSync } from 'child_process';
import * as path from 'path';
import { labCannotRun } from './lab';

export function sh(cmd: string, input?: string): string {
  return execFileSync('sh', ['-c', cmd], { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}

function missing(): string | null {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'needs root (network namespaces, NFQUEUE, nftables)';
  if (process.platform !== 'linux') return 'needs Linux';
  for (const tool of ['ip', 'nft', 'iptables', 'ip6tables']) {
    const r = spawnSync('sh', ['-c', `command -v ${tool}`]);
    if (r.status !== 0) return `needs ${tool} (apt-get install iproute2 nftables iptables)`;
  }
  return null;
}

/**
 * Returns true inside the namespace (go on and run the tests there).
 * Outside, it never returns: it runs the child and exits with its status.
 */
export function enterNetns(file: string, tag: string): boolean {
  if (process.env.NL_NETNS !== undefined) return true;
  const why = missing();
  if (why !== null) {
    labCannotRun(path.relative(path.join(__dirname, '..', '..'), file), why);
    process.exit(0);
  }
  const ns = `nlk-${tag}-${process.pid}`;
  let status = 1;
  try {
    sh(`ip netns add ${ns} && ip -n ${ns} link set lo up`);
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, file], {
      stdio: 'inherit',
      env: { ...process.env, NL_NETNS: ns },
      timeout: 300000,
    });
    status = r.status ?? 1;
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
  process.exit(status);
}
