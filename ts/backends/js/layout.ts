// Layout kernels of the JS reference backend: strided reads/writes (transpose, slice, broadcast,
// concat) and row gather/scatter (embedding lookup and its gradient).

import { allocArray, type AnyTypedArray, type DType } from '../../dtype.js';
import { ValueError } from '../../errors.js';

/** Calls visit(i, offset) for every element i of shape, offset = base + sum idx_d * strides_d. */
export function walk(shape: number[], strides: number[], base: number, visit: (i: number, offset: number) => void): void {
  let size = 1;
  for (const d of shape) size *= d;
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  let off = base;
  for (let i = 0; i < size; i++) {
    visit(i, off);
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      off += strides[d];
      if (idx[d] < shape[d]) break;
      off -= strides[d] * shape[d];
      idx[d] = 0;
    }
  }
}

export function strided(a: AnyTypedArray, dtype: DType, offset: number, strides: number[], outShape: number[]): AnyTypedArray {
  let size = 1;
  for (const d of outShape) size *= d;
  const out = allocArray(dtype, size);
  walk(outShape, strides, offset, (i, off) => { out[i] = a[off]; });
  return out;
}

export function writeStrided(dst: AnyTypedArray, src: AnyTypedArray, offset: number, strides: number[], srcShape: number[]): void {
  walk(srcShape, strides, offset, (i, off) => { dst[off] = src[i]; });
}

export function gather(table: Float32Array, rows: number, dim: number, ids: Int32Array, count: number): Float32Array {
  const out = new Float32Array(count * dim);
  for (let i = 0; i < count; i++) {
    const r = ids[i];
    if (r < 0 || r >= rows) throw new ValueError(`gather: id ${r} at position ${i} is outside [0, ${rows})`);
    out.set(table.subarray(r * dim, r * dim + dim), i * dim);
  }
  return out;
}

export function scatterAddRows(grad: Float32Array, count: number, dim: number, ids: Int32Array, rows: number): Float32Array {
  const out = new Float32Array(rows * dim);
  for (let i = 0; i < count; i++) {
    const base = ids[i] * dim;
    for (let j = 0; j < dim; j++) out[base + j] += grad[i * dim + j];
  }
  return out;
}
