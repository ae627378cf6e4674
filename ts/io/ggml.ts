// ggml tensor types (the block formats of GGUF files) and their dequantization to f32.
// Written from the block layouts in ggml-common.h; checked bit for bit against gguf-py's
// gguf.quants.dequantize by test/io-gguf.test.ts. All values are little-endian.
//
// Exactness: each element is computed in double and rounded once when stored into the
// Float32Array. The products of f16 scales with small integer codes are exact in f32, and for
// `a*q - b` the two operands are f32 values, where rounding the double result to f32 equals a
// single f32 subtraction (double has more than 2*24+2 bits), so results equal ggml's f32 code.

import { FormatError } from '../errors.js';
import { f16Table32 } from './half.js';

export interface GgmlType {
  name: string;
  /** Elements per block (1 for plain scalar types). */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
}

const QK_K = 256;

/** Every ggml type a GGUF file may name. Types without a decoder below are listed so errors can name them. */
export const GGML_TYPES: Record<number, GgmlType> = {
  0: { name: 'F32', blockSize: 1, typeSize: 4 },
  1: { name: 'F16', blockSize: 1, typeSize: 2 },
  2: { name: 'Q4_0', blockSize: 32, typeSize: 2 + 16 },
  3: { name: 'Q4_1', blockSize: 32, typeSize: 2 + 2 + 16 },
  6: { name: 'Q5_0', blockSize: 32, typeSize: 2 + 4 + 16 },
  7: { name: 'Q5_1', blockSize: 32, typeSize: 2 + 2 + 4 + 16 },
  8: { name: 'Q8_0', blockSize: 32, typeSize: 2 + 32 },
  // ggml's block_q8_1 is { f16 d, f16 s, int8 qs[32] } = 36 bytes; gguf-py's table still says 40 (old f32 d, s).
  9: { name: 'Q8_1', blockSize: 32, typeSize: 2 + 2 + 32 },
  10: { name: 'Q2_K', blockSize: QK_K, typeSize: QK_K / 16 + QK_K / 4 + 2 + 2 },
  11: { name: 'Q3_K', blockSize: QK_K, typeSize: QK_K / 8 + QK_K / 4 + 12 + 2 },
  12: { name: 'Q4_K', blockSize: QK_K, typeSize: 2 + 2 + 12 + QK_K / 2 },
  13: { name: 'Q5_K', blockSize: QK_K, typeSize: 2 + 2 + 12 + QK_K / 8 + QK_K / 2 },
  14: { name: 'Q6_K', blockSize: QK_K, typeSize: QK_K / 2 + QK_K / 4 + QK_K / 16 + 2 },
  15: { name: 'Q8_K', blockSize: QK_K, typeSize: 4 + QK_K + QK_K / 8 },
  16: { name: 'IQ2_XXS', blockSize: QK_K, typeSize: 2 + QK_K / 4 },
  17: { name: 'IQ2_XS', blockSize: QK_K, typeSize: 2 + QK_K / 4 + QK_K / 32 },
  18: { name: 'IQ3_XXS', blockSize: QK_K, typeSize: 2 + QK_K / 4 + QK_K / 8 },
  19: { name: 'IQ1_S', blockSize: QK_K, typeSize: 2 + QK_K / 8 + QK_K / 16 },
  20: { name: 'IQ4_NL', blockSize: 32, typeSize: 2 + 16 },
  21: { name: 'IQ3_S', blockSize: QK_K, typeSize: 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4 },
  22: { name: 'IQ2_S', blockSize: QK_K, typeSize: 2 + QK_K / 4 + QK_K / 16 },
  23: { name: 'IQ4_XS', blockSize: QK_K, typeSize: 2 + 2 + QK_K / 2 + QK_K / 64 },
  24: { name: 'I8', blockSize: 1, typeSize: 1 },
  25: { name: 'I16', blockSize: 1, typeSize: 2 },
  26: { name: 'I32', blockSize: 1, typeSize: 4 },
  27: { name: 'I64', blockSize: 1, typeSize: 8 },
  28: { name: 'F64', blockSize: 1, typeSize: 8 },
  29: { name: 'IQ1_M', blockSize: QK_K, typeSize: QK_K / 8 + QK_K / 16 + QK_K / 32 },
  30: { name: 'BF16', blockSize: 1, typeSize: 2 },
  34: { name: 'TQ1_0', blockSize: QK_K, typeSize: 2 + 4 * 13 },
  35: { name: 'TQ2_0', blockSize: QK_K, typeSize: 2 + 64 },
  39: { name: 'MXFP4', blockSize: 32, typeSize: 1 + 16 },
  40: { name: 'NVFP4', blockSize: 64, typeSize: 4 + 32 },
  41: { name: 'Q1_0', blockSize: 128, typeSize: 2 + 16 },
};

/** 'Q4_K', or 'type 99' for a number ggml does not define. */
export function ggmlTypeName(type: number): string {
  return GGML_TYPES[type]?.name ?? `type ${type}`;
}

/** Decodes nBlocks blocks of src (starting at byte 0) into out (starting at 0). */
type Decoder = (src: Uint8Array, nBlocks: number, out: Float32Array) => void;

const f16At = (t: Float32Array, s: Uint8Array, o: number): number => t[s[o] | (s[o + 1] << 8)];
const i8 = (b: number): number => (b << 24) >> 24;

function viewOf(src: Uint8Array): DataView {
  return new DataView(src.buffer, src.byteOffset, src.byteLength);
}

// reading int8 through a view is about twice as fast as sign-extending bytes
function int8View(src: Uint8Array): Int8Array {
  return new Int8Array(src.buffer, src.byteOffset, src.byteLength);
}

function decodeF32(src: Uint8Array, n: number, out: Float32Array): void {
  new Uint8Array(out.buffer, out.byteOffset, n * 4).set(src.subarray(0, n * 4));
}

function decodeF16(src: Uint8Array, n: number, out: Float32Array): void {
  const t = f16Table32();
  for (let i = 0; i < n; i++) out[i] = f16At(t, src, 2 * i);
}

function decodeBf16(src: Uint8Array, n: number, out: Float32Array): void {
  const u = new Uint32Array(out.buffer, out.byteOffset, n);
  for (let i = 0; i < n; i++) u[i] = ((src[2 * i] | (src[2 * i + 1] << 8)) << 16) >>> 0;
}

function decodeF64(src: Uint8Array, n: number, out: Float32Array): void {
  const v = viewOf(src);
  for (let i = 0; i < n; i++) out[i] = v.getFloat64(8 * i, true);
}

function decodeI8(src: Uint8Array, n: number, out: Float32Array): void {
  out.set(int8View(src).subarray(0, n));
}

function decodeI16(src: Uint8Array, n: number, out: Float32Array): void {
  const v = viewOf(src);
  for (let i = 0; i < n; i++) out[i] = v.getInt16(2 * i, true);
}

function decodeI32(src: Uint8Array, n: number, out: Float32Array): void {
  const v = viewOf(src);
  for (let i = 0; i < n; i++) out[i] = v.getInt32(4 * i, true);
}

// int64 -> f32 must round once: beyond 2^53 the value is first cut to 53 bits with the dropped
// bits folded into the last kept bit (round to odd), which then rounds to f32 correctly.
function decodeI64(src: Uint8Array, n: number, out: Float32Array): void {
  const v = viewOf(src);
  for (let i = 0; i < n; i++) {
    const x = v.getBigInt64(8 * i, true);
    const mag = x < 0n ? -x : x;
    const bits = mag.toString(2).length;
    let r: number;
    if (bits <= 53) r = Number(mag);
    else {
      const shift = BigInt(bits - 53);
      const kept = (mag >> shift) | (mag & ((1n << shift) - 1n) ? 1n : 0n);
      r = Number(kept) * 2 ** Number(shift);
    }
    out[i] = x < 0n ? -r : r;
  }
}

function decodeQ4_0(s: Uint8Array, nb: number, out: Float32Array): void {
  const t = f16Table32();
  for (let b = 0, o = 0, y = 0; b < nb; b++, o += 18, y += 32) {
    const d = f16At(t, s, o);
    for (let j = 0; j < 16; j++) {
      const q = s[o + 2 + j];
      out[y + j] = ((q & 15) - 8) * d;
      out[y + j + 16] = ((q >> 4) - 8) * d;
    }
  }
}

function decodeQ4_1(s: Uint8Array, nb: number, out: Float32Array): void {
  const t = f16Table32();
  for (let b = 0, o = 0, y = 0; b < nb; b++, o += 20, y += 32) {
    const d = f16At(t, s, o);
    const m = f16At(t, s, o + 2);
    for (let j = 0; j < 16; j++) {
      const q = s[o + 4 + j];
      out[y + j] = (q & 15) * d + m;
      out[y + j + 16] = (q >> 4) * d + m;
    }
  }
}

function decodeQ5_0(s: Uint8Array, nb: number, out: Float32Array): void {
  const t = f16Table32();
  for (let b = 0, o = 0, y = 0; b < nb; b++, o += 22, y += 32) {
    const d = f16At(t, s, o);
    const qh = s[o + 2] | (s[o + 3] << 8) | (s[o + 4] << 16) | (s[o + 5] << 24);
    for (let j = 0; j < 16; j++) {
      const q = s[o + 6 + j];
      out[y + j] = ((q & 15) + ((qh >>> j) & 1) * 16 - 16) * d;
      out[y + j + 16] = ((q >> 4) + ((qh >>> (j + 16)) & 1) * 16 - 16) * d;
    }
  }
}

function decodeQ5_1(s: Uint8Array, nb: number, out: Float32Array): void {
  const t = f16Table32();
  for (let b = 0, o = 0, y = 0; b < nb; b++, o += 24, y += 32) {
    const d = f16At(t, s, o);
    const m = f16At(t, s, o + 2);
    const qh = s[o + 4] | (s[o + 5] << 8) | (s[o + 6] << 16) | (s[o + 7] << 24);
    for (let j = 0; j < 16; j++) {
      const q = s[o + 8 + j];
      out[y + j] = ((q & 15) + ((qh >>> j) & 1) * 16) * d + m;
      out[y + j + 16] = ((q >> 4) + ((qh >>> (j + 16)) & 1) * 16) * d + m;
    }
  }
}

function decodeQ8_0(s: Uint8Array, nb: number, out: Float32Array): void {
  const t = f16Table32();
  const q = int8View(s);
  for (let b = 0, o = 0, y = 0; b < nb; b++, o += 34, y += 32) {
    const d = f16At(t, s, o);
    for (let j = 0; j < 32; j++) out[y + j] = q[o + 2 + j] * d;
  }
}

// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64] (2-bit), f16 d, f16 dmin.
function decodeQ2_K(s: Uint8Array, nb: number, out: Float32Array): void {
  const t = f16Table32();
  for (let b = 0, o = 0, y = 0; b < nb; b++, o += 84, y += QK_K) {
    const d = f16At(t, s, o + 80);
    const dmin = f16At(t, s, o + 82);
    for (let i = 0; i < QK_K; i++) {
      const sc = s[o + (i >> 4)];
      const q = (s[o + 16 + ((i >> 7) << 5) + (i & 31)] >> (((i >> 5) & 3) * 2)) & 3;
      out[y + i] = d * (sc & 15) * q - dmin * (sc >> 4);
    }
  }
}

// Q3_K: hmask[32], qs[64] (low 2 bits), scales[12] (16 6-bit scales), f16 d.
function decodeQ3_K(s: Uint8Array, nb: number, out: Float32Array): void {
  const t = f16Table32();
  const scale = new Float64Array(16);
  for (let b = 0, o = 0, y = 0; b < nb; b++, o += 110, y += QK_K) {
    const d = f16At(t, s, o + 108);
    for (let i = 0; i < 16; i++) {
      const lo = (i < 8 ? s[o + 96 + i] : s[o + 96 + i - 8] >> 4) & 15;
      const hi = (s[o + 104 + (i & 3)] >> (2 * (i >> 2))) & 3;
      scale[i] = d * ((lo | (hi << 4)) - 32);
    }
    for (let i = 0; i < QK_K; i++) {
      const l = i & 31;
      const low = (s[o + 32 + ((i >> 7) << 5) + l] >> (((i >> 5) & 3) * 2)) & 3;
      const high = (s[o + l] >> (i >> 5)) & 1;
      out[y + i] = scale[i >> 4] * (low - (high ? 0 : 4));
    }
  }
}

// The 8 6-bit scales and mins of Q4_K/Q5_K, packed in 12 bytes at o.
function scaleMinK4(s: Uint8Array, o: number, d: number, dmin: number, sc: Float64Array, mn: Float64Array): void {
  for (let j = 0; j < 8; j++) {
    let a: number, m: number;
    if (j < 4) {
      a = s[o + j] & 63;
      m = s[o + j + 4] & 63;
    } else {
      a = (s[o + j + 4] & 15) | ((s[o + j - 4] >> 6) << 4);
      m = (s[o + j + 4] >> 4) | ((s[o + j] >> 6) << 4);
    }
    sc[j] = d * a;
    mn[j] = dmin * m;
  }
}

// Q4_K: f16 d, f16 dmin, scales[12], qs[128]; 8 sub-blocks of 32.
function decodeQ4_K(s: Uint8Array, nb: number, out: Float32Array): void {
  const t = f16Table32();
  const sc = new Float64Array(8), mn = new Float64Array(8);
  for (let b = 0, o = 0, y = 0; b < nb; b++, o += 144, y += QK_K) {
    scaleMinK4(s, o + 4, f16At(t, s, o), f16At(t, s, o + 2), sc, mn);
    for (let c = 0; c < 4; c++) {
      const a0 = sc[2 * c], m0 = mn[2 * c], a1 = sc[2 * c + 1], m1 = mn[2 * c + 1];
      const base = o + 16 + 32 * c, yo = y + 64 * c;
      for (let l = 0; l < 32; l++) {
        const q = s[base + l];
        out[yo + l] = a0 * (q & 15) - m0;
        out[yo + 32 + l] = a1 * (q >> 4) - m1;
      }
    }
  }
}

// Q5_K: f16 d, f16 dmin, scales[12], qh[32], qs[128].
function decodeQ5_K(s: Uint8Array, nb: number, out: Float32Array): void {
  const t = f16Table32();
  const sc = new Float64Array(8), mn = new Float64Array(8);
  for (let b = 0, o = 0, y = 0; b < nb; b++, o += 176, y += QK_K) {
    scaleMinK4(s, o + 4, f16At(t, s, o), f16At(t, s, o + 2), sc, mn);
    for (let c = 0; c < 4; c++) {
      const a0 = sc[2 * c], m0 = mn[2 * c], a1 = sc[2 * c + 1], m1 = mn[2 * c + 1];
      const base = o + 48 + 32 * c, yo = y + 64 * c;
      for (let l = 0; l < 32; l++) {
        const q = s[base + l], h = s[o + 16 + l];
        out[yo + l] = a0 * ((q & 15) | (((h >> (2 * c)) & 1) << 4)) - m0;
        out[yo + 32 + l] = a1 * ((q >> 4) | (((h >> (2 * c + 1)) & 1) << 4)) - m1;
      }
    }
  }
}

// Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d.
function decodeQ6_K(s: Uint8Array, nb: number, out: Float32Array): void {
  const t = f16Table32();
  for (let b = 0, o = 0, y = 0; b < nb; b++, o += 210, y += QK_K) {
    const d = f16At(t, s, o + 208);
    for (let i = 0; i < QK_K; i++) {
      const h = i >> 7, m = i & 127;
      const lo = (s[o + h * 64 + (m & 63)] >> (m >= 64 ? 4 : 0)) & 15;
      const hi = (s[o + 128 + h * 32 + (m & 31)] >> (2 * (m >> 5))) & 3;
      out[y + i] = d * i8(s[o + 192 + (i >> 4)]) * ((lo | (hi << 4)) - 32);
    }
  }
}

// Q8_K: f32 d, int8 qs[256], int16 bsums[16] (sums, not needed to dequantize).
function decodeQ8_K(s: Uint8Array, nb: number, out: Float32Array): void {
  const v = viewOf(s);
  const q = int8View(s);
  for (let b = 0, o = 0, y = 0; b < nb; b++, o += 292, y += QK_K) {
    const d = v.getFloat32(o, true);
    for (let i = 0; i < QK_K; i++) out[y + i] = d * q[o + 4 + i];
  }
}

const DECODERS: Record<number, Decoder> = {
  0: decodeF32, 1: decodeF16, 2: decodeQ4_0, 3: decodeQ4_1, 6: decodeQ5_0, 7: decodeQ5_1, 8: decodeQ8_0,
  10: decodeQ2_K, 11: decodeQ3_K, 12: decodeQ4_K, 13: decodeQ5_K, 14: decodeQ6_K, 15: decodeQ8_K,
  24: decodeI8, 25: decodeI16, 26: decodeI32, 27: decodeI64, 28: decodeF64, 30: decodeBf16,
};

/** Whether dequantizeGgml can decode this type. */
export function canDequantizeGgml(type: number): boolean {
  return type in DECODERS;
}

/** Bytes that `count` elements of `type` occupy; FormatError when count is not whole blocks. */
export function ggmlByteLength(type: number, count: number, where = 'ggml data'): number {
  const info = GGML_TYPES[type];
  if (!info) throw new FormatError(`${where}: unknown ggml type ${type}`);
  if (!Number.isSafeInteger(count) || count < 0) throw new FormatError(`${where}: element count ${count} is not a non-negative integer`);
  if (count % info.blockSize !== 0) {
    throw new FormatError(`${where}: ${count} elements of ${info.name} are not whole blocks of ${info.blockSize}`);
  }
  return (count / info.blockSize) * info.typeSize;
}

/**
 * `count` values of ggml `type` from the blocks in `data` (row-major, as stored).
 * F32 data whose address is 4-byte aligned comes back as a zero-copy view of `data`.
 */
export function dequantizeGgml(type: number, data: Uint8Array, count: number, where = 'ggml data'): Float32Array {
  const bytes = ggmlByteLength(type, count, where);
  const info = GGML_TYPES[type];
  const decode = DECODERS[type];
  if (!decode) throw new FormatError(`${where}: ggml type ${info.name} (${type}) is unsupported: no dequantizer for it`);
  if (data.byteLength < bytes) {
    throw new FormatError(`${where}: ${count} elements of ${info.name} need ${bytes} bytes, got ${data.byteLength}`);
  }
  if (type === 0 && (data.byteOffset & 3) === 0) return new Float32Array(data.buffer, data.byteOffset, count);
  const out = new Float32Array(count);
  decode(data, count / info.blockSize, out);
  return out;
}
