/** Small statistics helpers for the benchmark (no state). */

export function sorted(xs: readonly number[]): number[] {
  return [...xs].sort((a, b) => a - b);
}

/** Nearest-rank percentile (p in 0..100) of the values; NaN when empty. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = sorted(xs);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))];
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = sorted(xs);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export interface Summary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export function summarize(xs: readonly number[]): Summary {
  return {
    n: xs.length,
    p50: percentile(xs, 50),
    p90: percentile(xs, 90),
    p99: percentile(xs, 99),
    max: xs.length === 0 ? NaN : Math.max(...xs),
  };
}

/** Round for JSON and tables: 3 significant decimals is plenty for these figures. */
export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/**
 * A 95 % interval for median(num) / median(den) by the percentile
 * bootstrap: both samples are drawn again with replacement `resamples`
 * times, and the 2.5th and 97.5th percentiles of the resampled ratios are
 * returned.  It says how far one run's ratio of medians can move by the luck
 * of which transfers it happened to time.  The generator is a fixed-seed
 * 32-bit linear congruential one (constants from Numerical Recipes), so the
 * same samples always give the same interval.  null when a sample is empty.
 */
export function bootstrapRatio(num: readonly number[], den: readonly number[], resamples = 2000, seed = 1): [number, number] | null {
  if (num.length === 0 || den.length === 0) return null;
  let state = seed >>> 0;
  const next = (n: number): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return Math.floor((state / 4294967296) * n);
  };
  const draw = (xs: readonly number[]): number[] => {
    const out = new Array<number>(xs.length);
    for (let i = 0; i < xs.length; i++) out[i] = xs[next(xs.length)];
    return out;
  };
  const ratios: number[] = [];
  for (let r = 0; r < resamples; r++) ratios.push(median(draw(num)) / median(draw(den)));
  return [percentile(ratios, 2.5), percentile(ratios, 97.5)];
}
