// ICQ, IR-QLoRA's information calibration quantization: per group, the calibration value that
// maximizes the entropy of the group's code histogram. NF formats search an offset τ subtracted
// before quantizing (stored 8-bit, added back on dequantize); INT formats search a clip ratio p
// that scales the group's range (folded into the standard scale, no extra parts). The definitions
// are written down in formats.ts ("ICQ"). This file holds the reference search (the JS backend's
// kernel and the oracle of crates/kernels quant/icq.rs, bit-exact), quantizeIcq and codeEntropy.

import { NonFiniteError, ShapeError, ValueError, describeShape } from '../errors.js';
import { noGrad } from '../autograd.js';
import { sub } from '../ops/arithmetic.js';
import { reshape } from '../ops/shape.js';
import { expectDType, out } from '../ops/util.js';
import { fromHandle, tidy, type Tensor } from '../tensor.js';
import { QuantizedTensor, quantize, expandGroups } from './api.js';
import { nfTable, type NfTable } from './codebooks.js';
import { quantizeBlockwise8, scaleToUnit } from './doublequant.js';
import { checkFormat, DOUBLE_QUANT_BLOCK, roundHalfAway, type QuantFormat } from './formats.js';
import { offsetLayout, partLayout, type PartName } from './layout.js';
import { packCodes, unpackCodes } from './packing.js';
import { forEachGroup, groupsPerRow, intScaleZero, type QuantParts } from './reference.js';

const f32 = Math.fround;

/** Search parameters (see formats.ts, "ICQ"). */
export interface IcqParams {
  /** NF: half-width of the τ grid in units of σ·A0. */
  lambda: number;
  /** NF: the grid has 2n+1 points. */
  n: number;
  sigma: number;
  /** INT: clip ratios tried after 1: clipPoints values evenly spaced in [clipLow, clipHigh]. */
  clipLow: number;
  clipHigh: number;
  clipPoints: number;
}

export const DEFAULT_ICQ: Readonly<IcqParams> = Object.freeze({ lambda: 0.1, n: 100, sigma: 0.54109, clipLow: 0.9, clipHigh: 1.1, clipPoints: 101 });

/** A candidate must raise the entropy by more than this many nats to replace the best. */
export const ICQ_TIE = 1e-9;

/** Fills in defaults and checks every field (ValueError). */
export function icqParams(opts: Partial<IcqParams> = {}): IcqParams {
  const p = { ...DEFAULT_ICQ, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) } as IcqParams;
  const bad = (k: string, want: string) => new ValueError(`icq: expected ${k} ${want}, got ${String((p as unknown as Record<string, unknown>)[k])}`);
  for (const k of Object.keys(p)) if (!(k in DEFAULT_ICQ)) throw new ValueError(`icq: unknown option '${k}' (expected ${Object.keys(DEFAULT_ICQ).join(', ')})`);
  if (!(Number.isFinite(p.lambda) && p.lambda >= 0)) throw bad('lambda', 'to be a finite number >= 0');
  if (!(Number.isFinite(p.sigma) && p.sigma >= 0)) throw bad('sigma', 'to be a finite number >= 0');
  if (!(Number.isInteger(p.n) && p.n >= 0 && p.n <= 1e6)) throw bad('n', 'to be an integer in [0, 1e6]');
  if (!(Number.isFinite(p.clipLow) && p.clipLow > 0)) throw bad('clipLow', 'to be a finite number > 0');
  if (!(Number.isFinite(p.clipHigh) && p.clipHigh >= p.clipLow)) throw bad('clipHigh', 'to be a finite number >= clipLow');
  if (!(Number.isInteger(p.clipPoints) && p.clipPoints >= 1 && p.clipPoints <= 1e6)) throw bad('clipPoints', 'to be an integer in [1, 1e6]');
  return p;
}

// ---- the search (reference; mirrors crates/kernels/src/quant/icq.rs `icq_search`) ----

const LN2 = 0.6931471805599453;
const SQRT2 = 1.4142135623730951;

/** ln(c) of a positive integer from +, -, *, / only (the same bits as the Rust ln_int). */
export function lnInt(c: number): number {
  if (c <= 1) return 0;
  let m = c;
  let e = 0;
  while (m >= 2) { m /= 2; e += 1; }
  if (m > SQRT2) { m /= 2; e += 1; }
  const z = (m - 1) / (m + 1);
  const z2 = z * z;
  let s = 0;
  for (let k = 13; k >= 0; k--) s = s * z2 + 1 / (2 * k + 1);
  return e * LN2 + 2 * z * s;
}

function plogpTable(n: number): Float64Array {
  const t = new Float64Array(n + 1);
  for (let c = 0; c <= n; c++) t[c] = c * lnInt(c);
  return t;
}

/** NF candidate j of 2n+1: f32(τ0 + f·A0), f = λ·σ·((j - n) / n). */
export function nfCandidate(tau0: number, a0: number, j: number, p: IcqParams): number {
  const f = p.n === 0 ? 0 : p.lambda * p.sigma * ((j - p.n) / p.n);
  return f32(tau0 + f * a0);
}

/** INT candidate i of 1 + clipPoints: 1 first, then the evenly spaced ratios. */
export function clipCandidate(i: number, p: IcqParams): number {
  if (i === 0) return 1;
  if (p.clipPoints <= 1) return f32(p.clipLow);
  return f32(p.clipLow + ((p.clipHigh - p.clipLow) * (i - 1)) / (p.clipPoints - 1));
}

/** The standard INT scale and zero point of the group w[begin, end) (reference.ts), and the
 *  largest code a clipped value takes (maxq; symmetric: 2·zero, the end of its grid). */
function intGrid(w: ArrayLike<number>, begin: number, end: number, f: QuantFormat): { s: number; z: number; top: number } {
  const { scale, zero } = intScaleZero(w, begin, end, f);
  return { s: scale, z: zero, top: f.symmetric ? 2 * ((1 << (f.bits - 1)) - 1) : (1 << f.bits) - 1 };
}

/** INT ICQ code of x for clip ratio p: the standard rule on f32(x / p) with the group's scale,
 *  clamped to [0, top]. */
function intCode(x: number, p: number, s: number, z: number, top: number): number {
  return Math.min(Math.max(roundHalfAway(f32(x / p) / s) + z, 0), top);
}

/** First index in sorted[from..) where pred fails (pred is true, then false). */
function partitionPoint(sorted: Float32Array, from: number, pred: (x: number) => boolean): number {
  let lo = from;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (pred(sorted[mid])) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Histogram of a monotone code function over sorted values: codeLe(x, k) = code(x) <= k. */
function histogram(sorted: Float32Array, len: number, counts: Uint32Array, codeLe: (x: number, k: number) => boolean): void {
  let prev = 0;
  for (let k = 0; k < len - 1; k++) {
    const at = partitionPoint(sorted, prev, (x) => codeLe(x, k));
    counts[k] = at - prev;
    prev = at;
  }
  counts[len - 1] = sorted.length - prev;
}

function score(counts: Uint32Array, len: number, table: Float64Array): number {
  let s = 0;
  for (let k = 0; k < len; k++) s += table[counts[k]];
  return s;
}

function nfBlock(sorted: Float32Array, t: NfTable, p: IcqParams, table: Float64Array, counts: Uint32Array): number {
  const n = sorted.length;
  const tau0 = sorted[(n - 1) >> 1];
  const first = sorted[0];
  const last = sorted[n - 1];
  const a0 = Math.max(Math.abs(first - tau0), Math.abs(last - tau0));
  const len = t.values.length;
  let best = tau0;
  let bestS = Infinity;
  for (let j = 0; j <= 2 * p.n; j++) {
    const tau = nfCandidate(tau0, a0, j, p);
    const m = Math.max(Math.abs(f32(first - tau)), Math.abs(f32(last - tau)));
    if (m === 0) {
      counts.fill(0);
      counts[t.zeroCode] = n;
    } else {
      const inv = f32(1 / m);
      histogram(sorted, len, counts, (x, k) => scaleToUnit(f32(x - tau), m, inv) <= t.thresholds[k]);
    }
    const s = score(counts, len, table);
    if (s < bestS - ICQ_TIE * n) {
      bestS = s;
      best = tau;
    }
  }
  return best;
}

function intBlock(sorted: Float32Array, f: QuantFormat, p: IcqParams, table: Float64Array, counts: Uint32Array): number {
  const n = sorted.length;
  const { s, z, top } = intGrid(sorted, 0, n, f);
  const len = 1 << f.bits;
  let best = 1;
  let bestS = Infinity;
  for (let i = 0; i <= p.clipPoints; i++) {
    const pr = clipCandidate(i, p);
    histogram(sorted, len, counts, (x, k) => intCode(x, pr, s, z, top) <= k);
    const sc = score(counts, len, table);
    if (sc < bestS - ICQ_TIE * n) {
      bestS = sc;
      best = pr;
    }
  }
  return best;
}

function checkFinite(where: string, w: Float32Array, rows: number, cols: number): void {
  for (let i = 0; i < w.length; i++) {
    if (!Number.isFinite(w[i])) {
      throw new NonFiniteError(`${where}: expected finite weights, got ${w[i]} at row ${Math.floor(i / cols)}, col ${i % cols} of [${rows}, ${cols}]`);
    }
  }
}

/** The ICQ search over w [rows, cols]: τ (nf) or clip ratio (int) per group. */
export function icqSearchRows(w: Float32Array, rows: number, cols: number, f: QuantFormat, params: IcqParams): Float32Array {
  checkFormat('icqSearch', f);
  if (w.length !== rows * cols) throw new ShapeError(`icqSearch: expected ${rows * cols} weights for [${rows}, ${cols}], got ${w.length}`);
  checkFinite('icqSearch', w, rows, cols);
  const out = new Float32Array(rows * groupsPerRow(cols, f));
  const table = plogpTable(Math.min(f.group, cols));
  const t = nfTable(f.bits);
  const counts = new Uint32Array(16);
  forEachGroup(rows, cols, f, (g, r, begin, end) => {
    const sorted = w.slice(r * cols + begin, r * cols + end).sort(); // numeric, -0 before +0
    out[g] = f.kind === 'nf' ? nfBlock(sorted, t, params, table, counts) : intBlock(sorted, f, params, table, counts);
  });
  return out;
}

/** INT ICQ's quantization: per group the standard scale and zero point of w, codes of f32(w / p),
 *  stored scale f32(scale · p). Standard INT parts (dequantize needs nothing new). */
export function quantizeIntIcqRows(w: Float32Array, rows: number, cols: number, f: QuantFormat, clip: Float32Array): QuantParts {
  const groups = rows * groupsPerRow(cols, f);
  if (clip.length !== groups) throw new ShapeError(`quantizeIntIcqRows: expected ${groups} clip ratios, got ${clip.length}`);
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(groups);
  const zeros = f.symmetric ? undefined : new Uint8Array(groups);
  forEachGroup(rows, cols, f, (g, r, begin, end) => {
    const off = r * cols;
    const { s, z, top } = intGrid(w, off + begin, off + end, f);
    for (let c = begin; c < end; c++) codes[off + c] = intCode(w[off + c], clip[g], s, z, top);
    scales[g] = s * clip[g]; // the Float32Array store rounds: f32(s·p)
    if (zeros) zeros[g] = z;
  });
  const packed = packCodes(codes, rows, cols, f.bits);
  return zeros ? { codes: packed, scales, zeros } : { codes: packed, scales };
}

// ---- the API ----

/**
 * Quantizes w (any shape; groups along the last axis) with ICQ calibration. NF: the returned
 * tensor has two more parts, offsetCodes (u8 per group) and offset2 (f32 per 256 groups), and
 * dequantize / dequantizeMatmul add τ back. INT: standard parts whose scales absorb the clip ratio.
 */
export function quantizeIcq(w: Tensor, format: QuantFormat, opts: Partial<IcqParams> = {}): QuantizedTensor {
  expectDType('quantizeIcq', w, 'f32', 'weight');
  checkFormat('quantizeIcq', format);
  if (w.rank < 1 || w.size === 0) throw new ShapeError(`quantizeIcq: expected a non-empty tensor, got ${describeShape(w.shape)}`);
  const params = icqParams(opts);
  const cols = w.shape[w.rank - 1];
  const rows = w.size / cols;
  const be = w.backend;
  const calib = out(be, be.icqSearch(w.handle, rows, cols, format, params), [rows, groupsPerRow(cols, format)]);
  try {
    const values = calib.dataSync() as Float32Array;
    if (format.kind === 'int') {
      const parts = quantizeIntIcqRows(w.dataSync() as Float32Array, rows, cols, format, values);
      const layout = partLayout(rows, cols, format);
      const tensors: Partial<Record<PartName, Tensor>> = {};
      for (const [k, arr] of Object.entries(parts) as [PartName, Uint8Array | Float32Array][]) {
        const spec = layout[k]!;
        tensors[k] = fromHandle(be, be.upload(arr), spec.shape, spec.dtype);
      }
      return new QuantizedTensor(format, [...w.shape], tensors as QuantizedTensor['parts']);
    }
    // nf: codes of w - τ (exact τ), then τ itself double-quantized (8-bit dynamic map, no mean)
    const base = noGrad(() => tidy(() => quantize(sub(reshape(w, [rows, cols]), expandGroups(calib, cols, format.group)), format)));
    const { codes, absmax } = quantizeBlockwise8(values, DOUBLE_QUANT_BLOCK);
    const layout = offsetLayout(rows, cols, format);
    return new QuantizedTensor(format, [...w.shape], {
      ...base.parts,
      offsetCodes: fromHandle(be, be.upload(codes), layout.offsetCodes.shape, 'u8'),
      offset2: fromHandle(be, be.upload(absmax), layout.offset2.shape, 'f32'),
    });
  } finally {
    calib.dispose();
  }
}

/** Entropy in bits of each group's code histogram, and their mean over groups. */
export function codeEntropy(q: QuantizedTensor): { mean: number; perGroup: Float64Array } {
  const f = q.format;
  const codes = unpackCodes(q.codes.dataSync() as Uint8Array, q.rows, q.cols, f.bits);
  const perGroup = new Float64Array(q.rows * groupsPerRow(q.cols, f));
  const counts = new Uint32Array(1 << f.bits);
  forEachGroup(q.rows, q.cols, f, (g, r, begin, end) => {
    counts.fill(0);
    for (let c = begin; c < end; c++) counts[codes[r * q.cols + c]]++;
    const n = end - begin;
    let h = 0;
    for (const c of counts) if (c) h -= (c / n) * Math.log2(c / n);
    perGroup[g] = h;
  });
  let sum = 0;
  for (const h of perGroup) sum += h;
  return { mean: perGroup.length ? sum / perGroup.length : 0, perGroup };
}
