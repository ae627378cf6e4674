// 16-bit floats: IEEE half (f16) and bfloat16 (bf16) to and from f32, in bulk.
// f32 -> f16/bf16 rounds to nearest, ties to even; NaN stays NaN, overflow goes to ±Inf.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The f32 value of one f16 bit pattern (exact). */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1024 + frac) * 2 ** (exp - 25);
}

let f16Table: Float32Array | undefined;
/** All 65536 f16 values as f32, built once. */
export function f16Table32(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToF32(h);
  }
  return f16Table;
}

/** The f16 bit pattern nearest to x (ties to even). */
export function f32ToF16(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const frac = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (frac ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // subnormal half (or zero): shift the full mantissa, round half to even
    if (e < -10) return sign;
    const m = frac | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (frac >>> 13);
  const rem = frac & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // may carry into the exponent: still correct
  return sign | h;
}

/** The f32 value of one bf16 bit pattern (exact). */
export function bf16ToF32(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0];
}

/** The bf16 bit pattern nearest to x (ties to even). */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  if ((bits & 0x7f800000) === 0x7f800000 && bits & 0x7fffff) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** f16 bit patterns -> f32 values. */
export function decodeF16(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const t = f16Table32();
  for (let i = 0; i < src.length; i++) dst[i] = t[src[i]];
  return dst;
}

/** bf16 bit patterns -> f32 values. */
export function decodeBf16(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
  return dst;
}

/** f32 values -> f16 bit patterns. */
export function encodeF16(src: ArrayLike<number>, dst = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) dst[i] = f32ToF16(src[i]);
  return dst;
}

/** f32 values -> bf16 bit patterns. */
export function encodeBf16(src: ArrayLike<number>, dst = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) dst[i] = f32ToBf16(src[i]);
  return dst;
}
