/**
 * Hot spots from a V8 CPU profile (`node --cpu-prof`): self time per
 * function, summed over the profile's nodes.  Format: the .cpuprofile JSON
 * Chrome DevTools reads (nodes with callFrame and hitCount, samples, timeDeltas).
 */
import * as fs from 'fs';
import * as path from 'path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
}

export interface HotSpot {
  /** function (file:line), relative to the repository */
  where: string;
  /** share of all samples, percent */
  selfPct: number;
}

export function hotSpots(file: string, root: string, top = 12): HotSpot[] {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const self = new Map<string, number>();
  let total = 0;
  for (const n of prof.nodes) {
    const hits = n.hitCount ?? 0;
    if (hits === 0) continue;
    total += hits;
    const cf = n.callFrame;
    let url = cf.url.replace(/^file:\/\//, '');
    if (url.startsWith(root)) url = path.relative(root, url);
    // lineNumber is 0-based in the profile; dist/ lines, not the .ts source.
    const where = url === '' ? `(${cf.functionName || 'native'})` : `${cf.functionName || '(anonymous)'} ${url}:${cf.lineNumber + 1}`;
    self.set(where, (self.get(where) ?? 0) + hits);
  }
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([where, hits]) => ({ where, selfPct: Math.round((1000 * hits) / Math.max(1, total)) / 10 }));
}
