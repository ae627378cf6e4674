// Quantization formats: what they are, and the one place their layout and algorithms are written down.
//
// LAYOUT
// A weight of any shape is seen as [rows, cols]: cols = the last dimension, rows = the product of
// the others. Groups run along each row: row r has groupsPerRow = ceil(cols / group) groups, the
// last one possibly partial, and element (r, c) belongs to group g = r * groupsPerRow +
// floor(c / group). Whenever cols % group == 0 this equals bitsandbytes' flat blocks.
//
// PACKING (ts/quant/packing.ts)
// Each row is an MSB-first bit stream of `bits`-bit codes, padded with zero bits to a whole byte:
// rowBytes = ceil(cols * bits / 8) and row r starts at byte r * rowBytes. Element i of a row
// occupies bits [i*bits, (i+1)*bits) counted from the most significant bit of the row's first byte.
// 4 bits: element 0 in the high nibble (bitsandbytes' order); 2 bits: element 0 in bits 7..6;
// 3 bits: 8 codes fill 3 bytes, big-endian.
//
// PARTS (ts/quant/reference.ts, QuantParts)
//   codes        u8   rows * rowBytes        packed codes
//   scales       f32  one per group          nf: absmax; int: step (absent when doubleQuant)
//   zeros        u8   one per group          int asymmetric only: integer zero point
//   scaleCodes   u8   one per group          doubleQuant: 8-bit code of (absmax - offset)
//   scale2       f32  ceil(groups / 256)     doubleQuant: absmax of each block of 256 scale codes
//   scaleOffset  f32  1                      doubleQuant: mean of all absmax values
// storageBytes = rows * rowBytes + 4 per group (or, double-quantized, 1 per group + 4 per block of
// 256 groups + 4 for the offset) + 1 per group for asymmetric int zero points.
//
// NF (normal float, bitsandbytes' kQuantizeBlockwise + dQuantizeNF4), in float32 arithmetic:
//   absmax = max |w| over the group; inv = f32(1 / absmax); n = f32(w * inv);
//   code = number of thresholds t_i with n > t_i, so n exactly on a threshold takes the lower code
//   (as bnb's decision tree does). t_i = f32((c[i] + c[i+1]) / 2) for NF3 and NF2; for NF4, bnb's
//   own constants, 4 of which are one ulp away from that (see codebooks.ts).
//   Dequantize: f32(c[code] * absmax).
//   Deviations from bnb, both where bnb would produce NaN codes: an all-zero group (absmax 0) gets
//   the code whose value has the smallest |value| (lowest index on a tie) and scale 0; an absmax so
//   small that f32(1 / absmax) overflows divides instead: n = f32(w / absmax).
//
// DOUBLE QUANTIZATION (bnb quantize_4bit with compress_statistics=True, ts/quant/doublequant.ts):
//   offset = f32(sum of all group absmax in float64 / groups); a = f32(absmax - offset); `a` is
//   quantized in blocks of 256 (last block partial) with bnb's signed 8-bit dynamic map: absmax2 =
//   max |a| over the block, v = f32(a * f32(1 / absmax2)), code = bnb's dQuantize<0> binary search.
//   A block whose absmax2 is 0 gets the code of 0.0 (bnb's NaN path gives code 0; either way the
//   decoded absmax is the offset). Decoded absmax = f32(f32(map[code] * absmax2) + offset). The
//   4-bit codes are computed from the ORIGINAL absmax, as bnb does; only dequantization uses the
//   decoded one. Checked code for code against real bitsandbytes (test/quant-bnb-parity.test.ts).
//
// INT (per-group scale and zero point), computed in float64 and stored in float32:
//   asymmetric (GPTQ-style; zero is always representable): lo = min(min w, 0), hi = max(max w, 0),
//     maxq = 2^bits - 1, scale = (hi - lo) / maxq, zero = clamp(round(-lo / scale), 0, maxq) (u8).
//   symmetric (OmniQuant/ApiQ): scale = absmax / (2^(bits-1) - 1), zero = 2^(bits-1) - 1 (implied);
//     the grid runs from -zero to +zero steps, so code maxq is never used.
//   Both: a scale of 0 becomes 1; q = clamp(round(w / scale) + zero, 0, maxq);
//   dequantize: f32((q - zero) * scale). |w - dequantized| <= scale / 2 (+ float rounding).
//   The scale is rounded toward zero to float32, so scale * maxq never exceeds hi - lo: then the
//   element at lo gets code 0 and the one at hi gets code maxq (in exact arithmetic this holds for
//   any rounding; rounding toward zero keeps it true with float32 scales), which makes
//   quantize(dequantize(q)) reproduce q.
//   round() is round-half-away-from-zero everywhere (roundHalfAway below): it is symmetric,
//   round(-x) = -round(x), which the argument above needs.
//
// ICQ (IR-QLoRA's information calibration, ts/quant/icq.ts; kernel crates/kernels quant/icq.rs):
// per group, the candidate whose code histogram has the highest entropy. Candidates are tried in
// order; S = sum over codes (in code order) of c·ln(c), c·ln(c) tabulated with lnInt (+, -, *, /
// only: identical bits in JS and Rust); a candidate replaces the best only when S < S_best - 1e-9·n
// (entropy up by more than 1e-9 nats), so the earliest of (near-)equal candidates wins and float
// summation noise never decides. Parameters λ = 0.1, n = 100, σ = 0.54109, clip [0.9, 1.1] x 101.
//   NF: τ0 = the lower median (element (n-1)/2 of the group sorted with -0 before +0), A0 = max
//     |w - τ0| (float64); candidate j = 0..2n: τ = f32(τ0 + f·A0), f = λ·σ·((j - n) / n); the
//     candidate's codes are the NF codes (above) of f32(w - τ). Stored: the codes, absmax and
//     double quantization (if any) of w - τ exactly as quantize() makes them, plus τ itself:
//       offsetCodes  u8   one per group          8-bit code of τ (bnb's signed dynamic map)
//       offset2      f32  ceil(groups / 256)     absmax of each block of 256 τ (no mean offset)
//     τ_decoded = f32(map[code] · offset2[g / 256]); dequantize = f32(f32(c[code] · absmax) +
//     τ_decoded). The backend kernels never see τ: dequantize adds it, dequantizeMatmul adds
//     groupSums(x) · τᵀ (api.ts). storageBytes grows by 1 per group + 4 per 256 groups.
//   INT: candidates p = 1, then f32(lo + (hi - lo)·k / (points - 1)), k = 0..points-1. With the
//     group's standard scale s and zero point z (computed from w as above), the candidate's codes
//     are q = clamp(round(f32(w / p) / s) + z, 0, top), top = maxq (asymmetric) or 2·z (symmetric,
//     the end of its grid, so clipping never reaches the unused code maxq): the group's range
//     scaled by p. Stored as
//     standard INT parts with scale f32(s·p) and zero z, so dequantize is unchanged.
//     Why not "the standard quantizer on w / p, then scale·p": that quantizer recomputes the
//     range from w / p, so in exact arithmetic it gives the plain codes for every p (the search
//     would be a no-op); test/quant-icq.test.ts shows it. For p <= 1 our definition equals the
//     standard quantizer on clamp(f32(w / p), lo, hi) (symmetric: ±absmax; bit-exact, tested); for p > 1 the range
//     exceeds the data and no input to the standard kernel expresses it, so quantizeIcq writes
//     the INT codes with the reference above on the host (one pass; the search is the kernel).

import { FormatError } from '../errors.js';

export type FormatKind = 'nf' | 'int';

export interface QuantFormat {
  readonly kind: FormatKind;
  readonly bits: 2 | 3 | 4;
  /** Elements per group along a row (the last group of a row may be shorter). */
  readonly group: number;
  /** nf only: the per-group absmax is itself quantized to 8 bits (always false for int). */
  readonly doubleQuant: boolean;
  /** int only: zero point fixed at 2^(bits-1) - 1 instead of stored per group (always false for nf). */
  readonly symmetric: boolean;
  /** e.g. 'nf4-g64-dq', 'nf3-g128', 'int3-g128-asym', 'int4-g64-sym' */
  readonly name: string;
}

/** Groups of scale codes quantized together by double quantization (bitsandbytes' blocksize 256). */
export const DOUBLE_QUANT_BLOCK = 256;
export const MAX_GROUP = 65536;
export const DEFAULT_GROUP = 64;

function checkBits(kind: FormatKind, bits: unknown): 2 | 3 | 4 {
  if (bits !== 2 && bits !== 3 && bits !== 4) {
    throw new FormatError(`formats.${kind}: expected bits 2, 3 or 4, got ${String(bits)}`);
  }
  return bits;
}

function checkGroup(kind: FormatKind, group: unknown): number {
  if (typeof group !== 'number' || !Number.isInteger(group) || group < 1 || group > MAX_GROUP) {
    throw new FormatError(`formats.${kind}: expected group to be an integer in [1, ${MAX_GROUP}], got ${String(group)}`);
  }
  return group;
}

function checkOptions(kind: FormatKind, opts: object, allowed: readonly string[]): void {
  if (typeof opts !== 'object' || opts === null) {
    throw new FormatError(`formats.${kind}: expected an options object, got ${String(opts)}`);
  }
  for (const [key, value] of Object.entries(opts)) {
    if (!allowed.includes(key)) {
      throw new FormatError(`formats.${kind}: expected options among {${allowed.join(', ')}}, got '${key}'`);
    }
    if (key !== 'group' && value !== undefined && typeof value !== 'boolean') {
      throw new FormatError(`formats.${kind}: expected option ${key} to be a boolean, got ${String(value)}`);
    }
  }
}

function nf(bits: number, opts: { group?: number; doubleQuant?: boolean } = {}): QuantFormat {
  checkOptions('nf', opts, ['group', 'doubleQuant']);
  const b = checkBits('nf', bits);
  const group = checkGroup('nf', opts.group ?? DEFAULT_GROUP);
  const doubleQuant = opts.doubleQuant ?? true;
  const name = `nf${b}-g${group}${doubleQuant ? '-dq' : ''}`;
  return Object.freeze({ kind: 'nf', bits: b, group, doubleQuant, symmetric: false, name });
}

function int(bits: number, opts: { group?: number; symmetric?: boolean } = {}): QuantFormat {
  checkOptions('int', opts, ['group', 'symmetric']);
  const b = checkBits('int', bits);
  const group = checkGroup('int', opts.group ?? DEFAULT_GROUP);
  const symmetric = opts.symmetric ?? false;
  const name = `int${b}-g${group}-${symmetric ? 'sym' : 'asym'}`;
  return Object.freeze({ kind: 'int', bits: b, group, doubleQuant: false, symmetric, name });
}

/** Format constructors: `formats.nf(4)` is bitsandbytes' NF4 with group 64 and double quantization. */
export const formats = Object.freeze({ nf, int });

/** Throws unless f looks like a format made by `formats` (for data that crossed an API boundary). */
export function checkFormat(where: string, f: QuantFormat): void {
  const ok = !!f && (f.kind === 'nf' || f.kind === 'int') && (f.bits === 2 || f.bits === 3 || f.bits === 4) &&
    Number.isInteger(f.group) && f.group >= 1 && f.group <= MAX_GROUP;
  if (!ok) throw new FormatError(`${where}: expected a format from formats.nf() or formats.int(), got ${JSON.stringify(f)}`);
}

/** Round half away from zero: the one rounding rule of the int formats (symmetric in sign). */
export function roundHalfAway(x: number): number {
  const a = Math.abs(x);
  let r = Math.floor(a);
  if (a - r >= 0.5) r += 1; // a - floor(a) is exact, unlike floor(a + 0.5)
  return x < 0 ? -r : r;
}
