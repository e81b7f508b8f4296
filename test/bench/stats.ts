/**
 * Summary statistics the benchmarks share.
 *
 * @module
 */

/** Median (mean of the two middle values for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Nearest-rank percentile.
 *
 * @param xs Samples (any order).
 * @param q Fraction, e.g. 0.99.
 * @returns The sample at that rank.
 */
export function percentile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.min(s.length - 1, Math.ceil(q * s.length) - 1))];
}

/** Round to `digits` decimals. */
export function roundTo(x: number, digits: number): number {
  return Number(x.toFixed(digits));
}
