// What each format promises, as numbers the invariant checks (ts/testing) hold it to: the largest
// error per element, and how far quantize(dequantize(q)) may move. Derivations in the comments.

import { nfTable } from './codebooks.js';
import { dynamicMap } from './doublequant.js';
import type { QuantFormat } from './formats.js';
import { readCode, rowBytes } from './packing.js';
import { forEachGroup, groupScales, type QuantParts } from './reference.js';

/** Half the largest gap of the 8-bit dynamic map, counting the gap from -1 to its lowest value. */
function dynamicMaxHalfGap(): number {
  const map = dynamicMap();
  let gap = map[0] + 1;
  for (let i = 0; i + 1 < map.length; i++) gap = Math.max(gap, map[i + 1] - map[i]);
  return gap / 2;
}
const DYNAMIC_MAX_HALF_GAP = dynamicMaxHalfGap();

/**
 * Allowed |w - dequantized| per element, for weights w quantized to p.
 * nf: the code is the nearest codebook value to w / A (A = the group's true absmax), so
 *   |w - c*A| <= A * maxHalfGap; dequantization uses the decoded absmax A', adding |c| * |A - A'|
 *   <= |A - A'| (0 without double quantization). Float slack 1e-6 * (A + |A'|) covers the roundings
 *   of f32(1 / A), f32(w * inv), the f32 midpoints and f32(c * A') (about 2e-7 relative in all).
 * int: |w - (q - zero) * scale| <= scale / 2: rounding moves w by at most half a step, and the
 *   clamped ends of the grid lie within half a step of lo and hi. Slack: 1e-5 * scale for a scale
 *   rounded toward zero (maxq ulps at the top of the grid) and 1e-6 * max|w| for f32 storage.
 */
export function errorBound(w: Float32Array, p: QuantParts, rows: number, cols: number, f: QuantFormat): Float64Array {
  const scales = groupScales(p, rows, cols, f);
  const halfGap = f.kind === 'nf' ? nfTable(f.bits).maxHalfGap : 0;
  const out = new Float64Array(rows * cols);
  forEachGroup(rows, cols, f, (g, r, begin, end) => {
    let absmax = 0;
    for (let c = begin; c < end; c++) absmax = Math.max(absmax, Math.abs(w[r * cols + c]));
    const s = scales[g];
    const bound = f.kind === 'nf'
      ? absmax * halfGap + Math.abs(absmax - s) + 1e-6 * (absmax + Math.abs(s))
      : s * (0.5 + 1e-5) + 1e-6 * absmax;
    out.fill(bound, r * cols + begin, r * cols + end);
  });
  return out;
}

/**
 * Where re-quantizing the dequantized weights may legitimately differ from p.
 * Without double quantization: nowhere. nf keeps the same absmax (the extreme element dequantizes to
 * exactly ±absmax); int recomputes its scale from float32-rounded values, a few ulps at most.
 * With double quantization, re-quantizing sees absmax A' (the decoded one) in place of A. Its 4-bit
 * codes are the same, but the mean of the A' and each block's absmax2 differ from the first pass, so
 * an 8-bit scale code may move by one code (by several in the dense region near zero, where the
 * decoded value hardly moves). The new decoded absmax A'' is within one half-gap of the map times
 * the new block absmax of A' (the offset cancels), and that block absmax is at most twice the
 * largest scale2 of p: slack = 3 * halfGap * max(scale2) per element (|codebook value| <= 1).
 * The 4-bit codes may change in two kinds of group, whose values then still move by less than the
 * slack: groups whose decoded absmax is <= 0 (a group far smaller than the others of its block;
 * its dequantized signs flip or vanish), and all-zero NF2 groups (NF2 has no zero: the group
 * dequantizes to c0 * A' and re-quantizes to ±1).
 */
export function idempotenceAllowance(p: QuantParts, rows: number, cols: number, f: QuantFormat): { slack: number; codesMayChange?: Uint8Array } {
  if (!f.doubleQuant) return { slack: 0 };
  let maxScale2 = 0;
  for (const s of p.scale2!) maxScale2 = Math.max(maxScale2, s);
  const { values, zeroCode } = nfTable(f.bits);
  const scales = groupScales(p, rows, cols, f);
  const rb = rowBytes(cols, f.bits);
  const codesMayChange = new Uint8Array(rows * cols);
  forEachGroup(rows, cols, f, (g, r, begin, end) => {
    let allZeroCode = true;
    for (let c = begin; c < end && allZeroCode; c++) allZeroCode = readCode(p.codes, r * rb, c, f.bits) === zeroCode;
    if (scales[g] <= 0 || (allZeroCode && values[zeroCode] !== 0)) codesMayChange.fill(1, r * cols + begin, r * cols + end);
  });
  return { slack: 3 * DYNAMIC_MAX_HALF_GAP * maxScale2, codesMayChange };
}
