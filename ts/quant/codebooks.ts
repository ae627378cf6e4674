// NF codebooks (normal-float quantiles scaled to [-1, 1]), sorted ascending, as float32.
//
// Derivation (bitsandbytes' create_normal_map with offset 0.9677083, scipy's norm.ppf, float32):
// take k positive quantiles ppf(linspace(offset, 0.5, k + 1)[:-1]) and j negative ones
// -ppf(linspace(offset, 0.5, j + 1)[:-1]), add 0, sort, divide by the largest.
//   NF4: k = 8, j = 7, with zero. The literal table of bitsandbytes (functional.py / kernels.cu).
//   NF3: k = 4, j = 3, with zero (the 3-bit codebook of the IR-QLoRA paper).
//   NF2: k = 2, j = 2 mirrored, no zero: a symmetric 2-bit map, ±1 and ±ppf(0.7339)/ppf(offset).
// test/quant-nf4-exact.test.ts re-derives them from the normal CDF.

import { FormatError } from '../errors.js';

const NF4_VALUES = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
  0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
];
const NF3_VALUES = [
  -1.0, -0.4786291718482971, -0.21714182198047638, 0.0, 0.16093017160892487, 0.33791518211364746,
  0.5626169443130493, 1.0,
];
const NF2_VALUES = [-1.0, -0.33791518211364746, 0.33791518211364746, 1.0];

// NF4's decision thresholds are those of bitsandbytes' dQuantizeNF4 tree: each midpoint of two
// adjacent NF4 values, printed as Python prints the double, then read as a float literal by nvcc
// (correctly rounded to float32). Where the double midpoint sits exactly halfway between two
// float32 values (4 of the 15), that is not Math.fround(midpoint): the printed digits fall just
// below or above the tie and decide it. Listed here as their exact float32 values; the test
// re-derives them from bnb's literals, and test/fixtures/bnb-nf4-dq.json (real bnb) depends on them.
const NF4_THRESHOLDS = [
  -0.8480964303016663, -0.6106328964233398, -0.4599952697753906, -0.33967941999435425,
  -0.23460739850997925, -0.13791173696517944, -0.045525018125772476, 0.03979014977812767,
  0.1202552542090416, 0.2035212516784668, 0.2920137643814087, 0.3893125355243683,
  0.5016633868217468, 0.6427869200706482, 0.8614783883094788,
];

/** Copies for users; mutating them does not change how anything is quantized. */
export const NF4 = Float32Array.from(NF4_VALUES);
export const NF3 = Float32Array.from(NF3_VALUES);
export const NF2 = Float32Array.from(NF2_VALUES);

/** A codebook with what quantizing to it needs, precomputed once. Treat as read-only. */
export interface NfTable {
  readonly values: Float32Array;
  /** Decision thresholds between values[i] and values[i+1]; code = number of thresholds n exceeds.
   *  NF3, NF2: f32((values[i] + values[i+1]) / 2). NF4: bitsandbytes' constants (see above). */
  readonly thresholds: Float32Array;
  /** Code of the value with the smallest |value| (lowest index on a tie): all-zero groups use it. */
  readonly zeroCode: number;
  /** Largest half-gap between adjacent values: the worst rounding error for |n| <= 1. */
  readonly maxHalfGap: number;
}

function makeTable(list: number[], thresholdList?: number[]): NfTable {
  const values = Float32Array.from(list);
  const thresholds = new Float32Array(values.length - 1);
  let zeroCode = 0;
  let maxHalfGap = 0;
  for (let i = 0; i < values.length; i++) {
    if (Math.abs(values[i]) < Math.abs(values[zeroCode])) zeroCode = i;
    if (i + 1 < values.length) {
      thresholds[i] = thresholdList ? thresholdList[i] : (values[i] + values[i + 1]) / 2; // stored as f32
      maxHalfGap = Math.max(maxHalfGap, (values[i + 1] - values[i]) / 2);
    }
  }
  return Object.freeze({ values, thresholds, zeroCode, maxHalfGap });
}

const TABLES: Record<number, NfTable> = {
  2: makeTable(NF2_VALUES),
  3: makeTable(NF3_VALUES),
  4: makeTable(NF4_VALUES, NF4_THRESHOLDS),
};

function checkBits(bits: number): void {
  if (bits !== 2 && bits !== 3 && bits !== 4) throw new FormatError(`codebook: expected bits 2, 3 or 4, got ${bits}`);
}

/** The NF codebook for 2, 3 or 4 bits (a fresh copy). */
export function codebook(bits: number): Float32Array {
  checkBits(bits);
  return TABLES[bits].values.slice();
}

/** The shared precomputed table for 2, 3 or 4 bits (internal: quantizers and invariant checks). */
export function nfTable(bits: number): NfTable {
  checkBits(bits);
  return TABLES[bits];
}

/**
 * The code of n: the number of thresholds that n exceeds, like bitsandbytes' dQuantizeNF4 decision
 * tree. The nearest value; n exactly on a threshold takes the lower code. NaN gets code 0 (as bnb).
 */
export function nearestCode(n: number, thresholds: Float32Array): number {
  let code = 0;
  while (code < thresholds.length && n > thresholds[code]) code++;
  return code;
}
