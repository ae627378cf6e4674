// Double quantization of the per-group absmax, as bitsandbytes' quantize_4bit(compress_statistics=True)
// does it: subtract the mean, then 8-bit blockwise quantization with the signed dynamic map.
// Everything is float32 arithmetic, emulated with Math.fround at each step.

import { ShapeError, ValueError } from '../errors.js';
import { DOUBLE_QUANT_BLOCK } from './formats.js';

const f32 = Math.fround;

/**
 * bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for i in 0..6,
 * the midpoints of torch.linspace(0.1, 1, 2^i + 1) scaled by 10^(i-6), with both signs; then 0 and
 * 1.0; sorted. 127 negatives, 0 at index 127, 128 positives up to 1.0 at index 255 (the most
 * negative value is -0.99296875, not -1).
 * torch.linspace in float32 computes step = f32((end - start) / (steps - 1)) and element j as
 * start + step*j for j < steps/2, else end - step*(steps-1-j), each with ONE rounding (the CPU
 * kernel is compiled with fused multiply-add). Rounding the product separately would make 21 of the
 * 256 values one ulp off; test/fixtures/dynamic-map-torch.json holds what real torch computes.
 */
function buildDynamicMap(): Float32Array {
  const values: number[] = [];
  const scales = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1];
  const start = f32(0.1);
  const end = 1;
  for (let i = 0; i < 7; i++) {
    const steps = 2 ** i + 1;
    const step = f32((end - start) / (steps - 1));
    const boundary = (j: number) => (j < steps >> 1 ? f32(start + step * j) : f32(end - step * (steps - 1 - j)));
    const scale = f32(scales[i]); // torch multiplies by the Python scalar cast to float32
    for (let j = 0; j + 1 < steps; j++) {
      const mean = f32(f32(boundary(j) + boundary(j + 1)) / 2);
      values.push(f32(scale * mean), -f32(scale * mean));
    }
  }
  values.push(0, 1);
  return Float32Array.from(values).sort();
}

const DYNAMIC_MAP = buildDynamicMap();
/** Index of 0.0 in the dynamic map: the code of every value in a block whose absmax is 0. */
export const DYNAMIC_ZERO_CODE = DYNAMIC_MAP.indexOf(0);

/** The 256 sorted values of bitsandbytes' signed dynamic map (a fresh copy). */
export function dynamicMap(): Float32Array {
  return DYNAMIC_MAP.slice();
}

/**
 * The 8-bit code of x (normally in [-1, 1]): a port of bitsandbytes' CUDA dQuantize<0> (not
 * stochastic). A binary search from pivot 127 with steps 64..1, then x is compared with the midpoint
 * between the final pivot and the last pivot visited on the side x lies on. Nearest value, except
 * that an exact midpoint goes toward the final pivot.
 */
export function dynamicCode(x: number, map: Float32Array = DYNAMIC_MAP): number {
  let pivot = 127;
  let upperPivot = 255;
  let lowerPivot = 0;
  let lower = -1;
  let upper = 1;
  let val = map[pivot];
  for (let step = 64; step > 0; step >>= 1) {
    if (x > val) {
      lowerPivot = pivot;
      lower = val;
      pivot += step;
    } else {
      upperPivot = pivot;
      upper = val;
      pivot -= step;
    }
    val = map[pivot];
  }
  if (upperPivot === 255) upper = map[255];
  if (lowerPivot === 0) lower = map[0];
  if (x > val) return x > f32(f32(upper + val) * 0.5) ? upperPivot : pivot;
  return x < f32(f32(lower + val) * 0.5) ? lowerPivot : pivot;
}

/**
 * x * f32(1 / absmax) in float32, as bitsandbytes scales a block. When 1 / absmax overflows float32
 * (absmax below ~2.9e-39) bnb would produce Inf and NaN; we divide instead.
 */
export function scaleToUnit(x: number, absmax: number, inv: number): number {
  return inv === Infinity ? f32(x / absmax) : f32(x * inv);
}

function checkBlock(where: string, block: number): void {
  if (!Number.isInteger(block) || block < 1) throw new ValueError(`${where}: expected a positive integer block size, got ${block}`);
}

/** 8-bit blockwise quantization with the dynamic map (bnb quantize_blockwise): codes + absmax per block. */
export function quantizeBlockwise8(x: Float32Array, block = DOUBLE_QUANT_BLOCK): { codes: Uint8Array; absmax: Float32Array } {
  checkBlock('quantizeBlockwise8', block);
  const blocks = Math.ceil(x.length / block);
  const codes = new Uint8Array(x.length);
  const absmax = new Float32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    const begin = b * block;
    const end = Math.min(begin + block, x.length);
    let m = 0;
    for (let i = begin; i < end; i++) m = Math.max(m, Math.abs(x[i]));
    absmax[b] = m;
    const inv = f32(1 / m);
    for (let i = begin; i < end; i++) codes[i] = m === 0 ? DYNAMIC_ZERO_CODE : dynamicCode(scaleToUnit(x[i], m, inv));
  }
  return { codes, absmax };
}

/** Decodes one value: f32(map[code] * absmax of its block). */
export function dequantizeBlockwise8Value(code: number, blockAbsmax: number): number {
  return f32(DYNAMIC_MAP[code] * blockAbsmax);
}

/** Inverse of quantizeBlockwise8 (bnb dequantize_blockwise). */
export function dequantizeBlockwise8(codes: Uint8Array, absmax: Float32Array, block = DOUBLE_QUANT_BLOCK): Float32Array {
  checkBlock('dequantizeBlockwise8', block);
  if (absmax.length !== Math.ceil(codes.length / block)) {
    throw new ShapeError(`dequantizeBlockwise8: expected ${Math.ceil(codes.length / block)} block absmax values for ${codes.length} codes in blocks of ${block}, got ${absmax.length}`);
  }
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = dequantizeBlockwise8Value(codes[i], absmax[Math.floor(i / block)]);
  return out;
}

export interface DoubleQuantized {
  scaleCodes: Uint8Array;
  scale2: Float32Array;
  scaleOffset: Float32Array;
}

/** Double-quantizes the per-group absmax values (offset = their mean, then 8-bit blockwise). */
export function doubleQuantize(absmax: Float32Array): DoubleQuantized {
  let sum = 0;
  for (let g = 0; g < absmax.length; g++) sum += absmax[g];
  const offset = absmax.length ? f32(sum / absmax.length) : 0;
  const centered = new Float32Array(absmax.length);
  for (let g = 0; g < absmax.length; g++) centered[g] = absmax[g] - offset; // stored as float32: f32(a - offset)
  const { codes, absmax: scale2 } = quantizeBlockwise8(centered, DOUBLE_QUANT_BLOCK);
  return { scaleCodes: codes, scale2, scaleOffset: Float32Array.of(offset) };
}

/** The decoded absmax of group g: f32(f32(map[code] * scale2[block]) + offset). */
export function decodeScale(p: DoubleQuantized, g: number): number {
  return f32(dequantizeBlockwise8Value(p.scaleCodes[g], p.scale2[Math.floor(g / DOUBLE_QUANT_BLOCK)]) + p.scaleOffset[0]);
}
