// fast-check arbitraries for weight matrices, to property-test quantizers (ours or a user's).
//
// A case is drawn as {kind, rows, cols, seed} and its data generated from the seed, so a failing
// case is reported in a form you can re-create with generateWeights(), and shrinks toward fewer
// rows and columns and the first kind. Sizes are small by default so property tests stay fast.

import fc from 'fast-check';
import { ValueError } from '../errors.js';
import { rng } from '../tensor.js';

export type WeightKind =
  | 'gaussian' // N(0, σ²), σ drawn from [1e-3, 1]
  | 'heavyTailed' // gaussian plus a few outliers 10x-1000x larger
  | 'zeroGroups' // gaussian with whole rows and runs of `group` elements set to zero
  | 'tiny' // gaussian with σ around 1e-30
  | 'huge' // gaussian with σ around 1e28, |w| <= 1e30
  | 'grid' // small multiples of 1/4: exact ties for rounding, repeated values
  | 'mixed'; // each row a different kind: magnitudes that differ by 1e60 inside one matrix

export const WEIGHT_KINDS: readonly WeightKind[] = ['gaussian', 'heavyTailed', 'zeroGroups', 'tiny', 'huge', 'grid', 'mixed'];

export interface WeightMatrix {
  data: Float32Array;
  rows: number;
  cols: number;
  kind: WeightKind;
  seed: number;
}

export interface WeightMatrixOptions {
  minRows?: number; // default 1
  maxRows?: number; // default 4
  minCols?: number; // default 1
  maxCols?: number; // default 80 (covers 1, odd sizes, and non-multiples of 64)
  kinds?: readonly WeightKind[]; // default: all
  /** Group size that 'zeroGroups' aligns its zero runs to (default 64). */
  group?: number;
  /** Also set one or two elements to NaN, Infinity or -Infinity (default false). */
  nonFinite?: boolean;
}

/**
 * Largest magnitude generated. Kept at 1e30 so that what a float32 quantizer computes from a group
 * (differences, ranges, sums of up to 65536 elements) stays finite; squares of such values do not.
 */
export const HUGE_LIMIT = 1e30;

/** A standard normal sample from a uniform generator (Box-Muller, one value per call). */
function normal(next: () => number): number {
  const u = Math.max(next(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next());
}

function uniform(next: () => number, lo: number, hi: number): number {
  return lo + (hi - lo) * next();
}

/** Fills out[begin, end) with values of one kind (not 'mixed'). */
function fillKind(out: Float32Array, begin: number, end: number, kind: WeightKind, group: number, next: () => number): void {
  if (kind === 'grid') {
    for (let i = begin; i < end; i++) out[i] = Math.round(uniform(next, -12, 12)) / 4;
    return;
  }
  const logSigma = kind === 'tiny' ? uniform(next, -31, -29) : kind === 'huge' ? uniform(next, 27.5, 28.5) : uniform(next, -3, 0);
  const sigma = 10 ** logSigma;
  for (let i = begin; i < end; i++) out[i] = Math.max(-HUGE_LIMIT, Math.min(HUGE_LIMIT, normal(next) * sigma));
  if (kind === 'heavyTailed') {
    const outliers = 1 + Math.floor(next() * 3);
    for (let k = 0; k < outliers; k++) {
      const i = begin + Math.floor(next() * (end - begin));
      out[i] = (next() < 0.5 ? -1 : 1) * sigma * 10 ** uniform(next, 1, 3);
    }
  }
  if (kind === 'zeroGroups') {
    // Zero some whole groups (aligned to `group`), and sometimes one unaligned run.
    const cols = end - begin;
    for (let g = 0; g * group < cols; g++) {
      if (next() < 0.4) out.fill(0, begin + g * group, Math.min(begin + (g + 1) * group, end));
    }
    if (next() < 0.3) {
      const a = begin + Math.floor(next() * cols);
      out.fill(0, a, Math.min(end, a + 1 + Math.floor(next() * group)));
    }
  }
}

/**
 * The data of one case, deterministic in its arguments: rows*cols float32 values (row-major).
 * A 'mixed' matrix draws a kind per row; 'zeroGroups' also zeroes whole rows now and then.
 */
export function generateWeights(kind: WeightKind, rows: number, cols: number, seed: number, opts: { group?: number; nonFinite?: boolean } = {}): Float32Array {
  if (!WEIGHT_KINDS.includes(kind)) throw new ValueError(`generateWeights: expected a kind among ${WEIGHT_KINDS.join(', ')}, got ${String(kind)}`);
  const group = opts.group ?? 64;
  if (!Number.isInteger(group) || group < 1) throw new ValueError(`generateWeights: expected a positive integer group, got ${group}`);
  const next = rng(seed);
  const out = new Float32Array(rows * cols);
  const single = WEIGHT_KINDS.filter((k) => k !== 'mixed');
  for (let r = 0; r < rows; r++) {
    const rowKind = kind === 'mixed' ? single[Math.floor(next() * single.length)] : kind;
    if (rowKind === 'zeroGroups' && next() < 0.2) continue; // an all-zero row
    fillKind(out, r * cols, (r + 1) * cols, rowKind, group, next);
  }
  if (opts.nonFinite && out.length > 0) {
    const specials = [NaN, Infinity, -Infinity];
    const count = 1 + Math.floor(next() * 2);
    for (let k = 0; k < count; k++) out[Math.floor(next() * out.length)] = specials[Math.floor(next() * 3)];
  }
  return out;
}

/** Weight matrices of the kinds and sizes asked for (by default every kind, up to 4 x 80). */
export function weightMatrix(opts: WeightMatrixOptions = {}): fc.Arbitrary<WeightMatrix> {
  const minRows = opts.minRows ?? 1;
  const maxRows = Math.max(opts.maxRows ?? 4, minRows);
  const minCols = opts.minCols ?? 1;
  const maxCols = Math.max(opts.maxCols ?? 80, minCols);
  const kinds = opts.kinds ?? WEIGHT_KINDS;
  if (kinds.length === 0) throw new ValueError('weightMatrix: expected at least one kind, got none');
  const gen = { group: opts.group, nonFinite: opts.nonFinite };
  return fc
    .record({
      kind: fc.constantFrom(...kinds),
      rows: fc.integer({ min: minRows, max: maxRows }),
      cols: fc.integer({ min: minCols, max: maxCols }),
      seed: fc.integer({ min: 0, max: 0x7fffffff }),
    })
    .map(({ kind, rows, cols, seed }) => ({ data: generateWeights(kind, rows, cols, seed, gen), rows, cols, kind, seed }));
}

/** One kind only: shorthands for weightMatrix({ ...opts, kinds: [kind] }). */
export const gaussianMatrix = (opts: WeightMatrixOptions = {}) => weightMatrix({ ...opts, kinds: ['gaussian'] });
export const heavyTailedMatrix = (opts: WeightMatrixOptions = {}) => weightMatrix({ ...opts, kinds: ['heavyTailed'] });
export const zeroGroupsMatrix = (opts: WeightMatrixOptions = {}) => weightMatrix({ ...opts, kinds: ['zeroGroups'] });
export const tinyMatrix = (opts: WeightMatrixOptions = {}) => weightMatrix({ ...opts, kinds: ['tiny'] });
export const hugeMatrix = (opts: WeightMatrixOptions = {}) => weightMatrix({ ...opts, kinds: ['huge'] });
export const mixedMatrix = (opts: WeightMatrixOptions = {}) => weightMatrix({ ...opts, kinds: ['mixed'] });
