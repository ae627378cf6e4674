// Reference quantization: plain functions over typed arrays. The JS backend calls these, and the
// Rust/WGSL kernels are checked against them. Layout and algorithms are documented in formats.ts.

import { FormatError, NonFiniteError, ShapeError } from '../errors.js';
import { nearestCode, nfTable } from './codebooks.js';
import { decodeScale, doubleQuantize, scaleToUnit, type DoubleQuantized } from './doublequant.js';
import { checkFormat, DOUBLE_QUANT_BLOCK, roundHalfAway, type QuantFormat } from './formats.js';
import { checkDims, readCode, rowBytes, writeCode } from './packing.js';

const f32 = Math.fround;

export interface QuantParts {
  /** Packed codes: rows of rowBytes(cols, bits) bytes. */
  codes: Uint8Array;
  /** Per group: nf absmax / int scale (absent when doubleQuant). */
  scales?: Float32Array;
  /** int asymmetric: per-group integer zero point. */
  zeros?: Uint8Array;
  /** doubleQuant: 8-bit code per group of (absmax - offset). */
  scaleCodes?: Uint8Array;
  /** doubleQuant: absmax of each block of 256 scale codes. */
  scale2?: Float32Array;
  /** doubleQuant: length 1, the mean subtracted from absmax. */
  scaleOffset?: Float32Array;
}

/** Groups in one row: ceil(cols / group). */
export function groupsPerRow(cols: number, f: QuantFormat): number {
  return Math.ceil(cols / f.group);
}

/** Bytes of all parts of a [rows, cols] weight in format f (`offsets`: with NF-ICQ's τ parts). */
export function storageBytes(rows: number, cols: number, f: QuantFormat, offsets = false): number {
  const groups = rows * groupsPerRow(cols, f);
  const scaleBytes = f.doubleQuant ? groups + 4 * Math.ceil(groups / DOUBLE_QUANT_BLOCK) + 4 : 4 * groups;
  const zeroBytes = f.kind === 'int' && !f.symmetric ? groups : 0;
  const offsetBytes = offsets ? groups + 4 * Math.ceil(groups / DOUBLE_QUANT_BLOCK) : 0;
  return rows * rowBytes(cols, f.bits) + scaleBytes + zeroBytes + offsetBytes;
}

/** Calls fn for every group of a [rows, cols] weight: its index g, its row, its columns [begin, end). */
export function forEachGroup(rows: number, cols: number, f: QuantFormat, fn: (g: number, row: number, begin: number, end: number) => void): void {
  const gpr = groupsPerRow(cols, f);
  for (let r = 0; r < rows; r++) {
    for (let gi = 0; gi < gpr; gi++) fn(r * gpr + gi, r, gi * f.group, Math.min((gi + 1) * f.group, cols));
  }
}

// Float32 rounding toward zero (for non-negative x): see "INT" in formats.ts for why.
const F32_BOX = new Float32Array(1);
const U32_BOX = new Uint32Array(F32_BOX.buffer);
export function f32TowardZero(x: number): number {
  F32_BOX[0] = x;
  if (F32_BOX[0] > x) U32_BOX[0] -= 1; // rounded up: step back one ulp
  return F32_BOX[0];
}

function quantizeNf(w: Float32Array, rows: number, cols: number, f: QuantFormat): QuantParts {
  const { thresholds, zeroCode } = nfTable(f.bits);
  const rb = rowBytes(cols, f.bits);
  const codes = new Uint8Array(rows * rb);
  const absmax = new Float32Array(rows * groupsPerRow(cols, f));
  forEachGroup(rows, cols, f, (g, r, begin, end) => {
    const off = r * cols;
    let m = 0;
    for (let c = begin; c < end; c++) m = Math.max(m, Math.abs(w[off + c]));
    absmax[g] = m;
    const inv = f32(1 / m);
    for (let c = begin; c < end; c++) {
      const code = m === 0 ? zeroCode : nearestCode(scaleToUnit(w[off + c], m, inv), thresholds);
      writeCode(codes, r * rb, c, f.bits, code);
    }
  });
  if (!f.doubleQuant) return { codes, scales: absmax };
  return { codes, ...doubleQuantize(absmax) };
}

/** The INT scale and zero point of the group w[begin, end), its range widened to include 0:
 *  symmetric max|w| / (2^(bits-1) - 1) with zero 2^(bits-1) - 1, else (hi - lo) / (2^bits - 1)
 *  with zero round(-lo / scale) in [0, 2^bits - 1]; the scale rounded toward zero to f32, 1 for
 *  an all-zero group. */
export function intScaleZero(w: ArrayLike<number>, begin: number, end: number, f: QuantFormat): { scale: number; zero: number } {
  const maxq = (1 << f.bits) - 1;
  const half = (1 << (f.bits - 1)) - 1;
  let lo = 0;
  let hi = 0;
  for (let i = begin; i < end; i++) {
    lo = Math.min(lo, w[i]);
    hi = Math.max(hi, w[i]);
  }
  let scale = f.symmetric ? f32TowardZero(Math.max(hi, -lo) / half) : f32TowardZero((hi - lo) / maxq);
  if (scale === 0) scale = 1;
  const zero = f.symmetric ? half : Math.min(Math.max(roundHalfAway(-lo / scale), 0), maxq);
  return { scale, zero };
}

function quantizeInt(w: Float32Array, rows: number, cols: number, f: QuantFormat): QuantParts {
  const maxq = (1 << f.bits) - 1;
  const rb = rowBytes(cols, f.bits);
  const codes = new Uint8Array(rows * rb);
  const groups = rows * groupsPerRow(cols, f);
  const scales = new Float32Array(groups);
  const zeros = f.symmetric ? undefined : new Uint8Array(groups);
  forEachGroup(rows, cols, f, (g, r, begin, end) => {
    const off = r * cols;
    const { scale, zero } = intScaleZero(w, off + begin, off + end, f);
    scales[g] = scale;
    if (zeros) zeros[g] = zero;
    for (let c = begin; c < end; c++) {
      const q = Math.min(Math.max(roundHalfAway(w[off + c] / scale) + zero, 0), maxq);
      writeCode(codes, r * rb, c, f.bits, q);
    }
  });
  return zeros ? { codes, scales, zeros } : { codes, scales };
}

/** Quantizes w [rows, cols] (row-major) to format f. */
export function quantizeRows(w: Float32Array, rows: number, cols: number, f: QuantFormat): QuantParts {
  checkFormat('quantizeRows', f);
  checkDims('quantizeRows', rows, cols);
  if (w.length !== rows * cols) {
    throw new ShapeError(`quantizeRows: expected ${rows * cols} weights for [${rows}, ${cols}], got ${w.length}`);
  }
  for (let i = 0; i < w.length; i++) {
    if (!Number.isFinite(w[i])) {
      throw new NonFiniteError(`quantizeRows: expected finite weights, got ${w[i]} at row ${Math.floor(i / cols)}, col ${i % cols} of [${rows}, ${cols}]`);
    }
  }
  return f.kind === 'nf' ? quantizeNf(w, rows, cols, f) : quantizeInt(w, rows, cols, f);
}

function checkPart(where: string, f: QuantFormat, name: keyof QuantParts, part: ArrayLike<number> | undefined, length: number): void {
  if (!part) throw new FormatError(`${where}: expected part '${name}' for format ${f.name}, got none`);
  if (part.length !== length) throw new ShapeError(`${where}: expected part '${name}' of length ${length} for ${f.name}, got ${part.length}`);
}

/** Checks that p holds every part format f needs, at the lengths a [rows, cols] weight needs. */
function checkParts(where: string, p: QuantParts, rows: number, cols: number, f: QuantFormat): void {
  checkFormat(where, f);
  checkDims(where, rows, cols);
  const groups = rows * groupsPerRow(cols, f);
  checkPart(where, f, 'codes', p.codes, rows * rowBytes(cols, f.bits));
  if (f.doubleQuant) {
    checkPart(where, f, 'scaleCodes', p.scaleCodes, groups);
    checkPart(where, f, 'scale2', p.scale2, Math.ceil(groups / DOUBLE_QUANT_BLOCK));
    checkPart(where, f, 'scaleOffset', p.scaleOffset, 1);
  } else {
    checkPart(where, f, 'scales', p.scales, groups);
  }
  if (f.kind === 'int' && !f.symmetric) checkPart(where, f, 'zeros', p.zeros, groups);
}

/** The effective scale of group g: nf absmax (decoded when double-quantized) or int step. */
function groupScale(p: QuantParts, f: QuantFormat, g: number): number {
  return f.doubleQuant ? decodeScale(p as DoubleQuantized, g) : p.scales![g];
}

/** Decodes row `row` into out[0..cols), without checking the parts. */
function decodeRow(p: QuantParts, row: number, cols: number, f: QuantFormat, out: Float32Array): void {
  const values = f.kind === 'nf' ? nfTable(f.bits).values : undefined;
  const half = (1 << (f.bits - 1)) - 1;
  const start = row * rowBytes(cols, f.bits);
  const gpr = groupsPerRow(cols, f);
  for (let gi = 0; gi < gpr; gi++) {
    const g = row * gpr + gi;
    const scale = groupScale(p, f, g);
    const zero = f.kind === 'nf' ? 0 : f.symmetric ? half : p.zeros![g];
    const end = Math.min((gi + 1) * f.group, cols);
    for (let c = gi * f.group; c < end; c++) {
      const code = readCode(p.codes, start, c, f.bits);
      out[c] = values ? values[code] * scale : (code - zero) * scale; // the Float32Array store rounds to f32
    }
  }
}

/** Decodes one row into out[0..cols) (the number of rows is read off the length of p.codes). */
export function dequantizeRow(p: QuantParts, row: number, cols: number, f: QuantFormat, out: Float32Array): void {
  checkFormat('dequantizeRow', f);
  const rb = rowBytes(cols, f.bits);
  const rows = rb > 0 ? Math.floor(p.codes.length / rb) : 0;
  if (!Number.isInteger(row) || row < 0 || row >= rows) {
    throw new ShapeError(`dequantizeRow: expected a row index in [0, ${rows}), got ${row}`);
  }
  if (out.length < cols) throw new ShapeError(`dequantizeRow: expected an output of at least ${cols} values, got ${out.length}`);
  checkParts('dequantizeRow', p, rows, cols, f);
  decodeRow(p, row, cols, f, out);
}

/** The float32 weights [rows, cols] the parts stand for. */
export function dequantizeRows(p: QuantParts, rows: number, cols: number, f: QuantFormat): Float32Array {
  checkParts('dequantizeRows', p, rows, cols, f);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) decodeRow(p, r, cols, f, out.subarray(r * cols, (r + 1) * cols));
  return out;
}

/**
 * x [xRows, cols] · Wᵀ -> [xRows, rows] for the quantized W [rows, cols], never materialized: each
 * weight row is decoded into one scratch row and dotted with every x row (float64 accumulation).
 */
export function dequantizeMatmulRows(x: Float32Array, xRows: number, p: QuantParts, rows: number, cols: number, f: QuantFormat): Float32Array {
  checkParts('dequantizeMatmulRows', p, rows, cols, f);
  if (!Number.isInteger(xRows) || xRows < 0 || x.length !== xRows * cols) {
    throw new ShapeError(`dequantizeMatmulRows: expected x of ${xRows} rows of ${cols} (${xRows * cols} values), got ${x.length} values`);
  }
  const out = new Float32Array(xRows * rows);
  const w = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    decodeRow(p, r, cols, f, w);
    for (let i = 0; i < xRows; i++) {
      const xOff = i * cols;
      let dot = 0;
      for (let c = 0; c < cols; c++) dot += x[xOff + c] * w[c];
      out[i * rows + r] = dot;
    }
  }
  return out;
}

/** The effective per-group scale (nf: absmax after double-quant decode; int: step), one per group. */
/** dx [n, cols] = dy [n, rows] · W (the backward of dequantizeMatmulRows): each weight row
 *  decoded once, sums in float64 (JS numbers), rounded to f32 at the end. */
export function dequantizeMatmulTRows(dy: Float32Array, n: number, p: QuantParts, rows: number, cols: number, f: QuantFormat): Float32Array {
  checkParts('dequantizeMatmulTRows', p, rows, cols, f);
  if (!Number.isInteger(n) || n < 0 || dy.length !== n * rows) {
    throw new ShapeError(`dequantizeMatmulTRows: expected dy of ${n} rows of ${rows} (${n * rows} values), got ${dy.length} values`);
  }
  const acc = new Float64Array(n * cols);
  const w = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    decodeRow(p, r, cols, f, w);
    for (let i = 0; i < n; i++) {
      const d = dy[i * rows + r];
      const off = i * cols;
      for (let c = 0; c < cols; c++) acc[off + c] += d * w[c];
    }
  }
  return Float32Array.from(acc);
}

export function groupScales(p: QuantParts, rows: number, cols: number, f: QuantFormat): Float32Array {
  checkParts('groupScales', p, rows, cols, f);
  const out = new Float32Array(rows * groupsPerRow(cols, f));
  for (let g = 0; g < out.length; g++) out[g] = groupScale(p, f, g);
  return out;
}
