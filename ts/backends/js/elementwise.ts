// Elementwise, broadcasting and reduction kernels of the JS reference backend.

import type { BinaryOp, ReduceOp, UnaryOp } from '../../backend.js';
import { allocArray, type AnyTypedArray, type DType } from '../../dtype.js';
import { walk } from './layout.js';

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

const unaryFns: Record<UnaryOp, (x: number) => number> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  abs: Math.abs,
  sign: (x) => (x > 0 ? 1 : x < 0 ? -1 : 0),
  square: (x) => x * x,
  sigmoid,
  silu: (x) => x * sigmoid(x),
  // d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x)))
  siluGrad: (x) => {
    const s = sigmoid(x);
    return s * (1 + x * (1 - s));
  },
  relu: (x) => (x > 0 ? x : 0),
  step: (x) => (x > 0 ? 1 : 0),
};

export function unary(op: UnaryOp, a: Float32Array, size: number): Float32Array {
  const f = unaryFns[op];
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) out[i] = f(a[i]);
  return out;
}

export function affine(a: Float32Array, size: number, mul: number, add: number): Float32Array {
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) out[i] = a[i] * mul + add;
  return out;
}

export function pow(a: Float32Array, size: number, p: number): Float32Array {
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) out[i] = Math.pow(a[i], p);
  return out;
}

const binaryFns: Record<BinaryOp, (x: number, y: number) => number> = {
  add: (x, y) => x + y,
  sub: (x, y) => x - y,
  mul: (x, y) => x * y,
  div: (x, y) => x / y,
  max: (x, y) => (x >= y ? x : y),
  min: (x, y) => (x <= y ? x : y),
  eq: (x, y) => (x === y ? 1 : 0),
  gt: (x, y) => (x > y ? 1 : 0),
};

/** Row-major strides of shape, with 0 for dimensions of size 1 that broadcast to a larger out dim. */
export function broadcastStrides(shape: number[], outShape: number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = shape[d] === 1 && outShape[d] !== 1 ? 0 : s;
    s *= shape[d];
  }
  return strides;
}

export function binary(op: BinaryOp, a: Float32Array, aShape: number[], b: Float32Array, bShape: number[], outShape: number[]): Float32Array {
  const f = binaryFns[op];
  let size = 1;
  for (const d of outShape) size *= d;
  const out = new Float32Array(size);
  if (a.length === size && b.length === size) {
    for (let i = 0; i < size; i++) out[i] = f(a[i], b[i]);
    return out;
  }
  if (b.length === 1 && a.length === size) {
    const y = b[0];
    for (let i = 0; i < size; i++) out[i] = f(a[i], y);
    return out;
  }
  const as = broadcastStrides(aShape, outShape);
  const bs = broadcastStrides(bShape, outShape);
  const rank = outShape.length;
  const idx = new Array<number>(rank).fill(0);
  let ai = 0;
  let bi = 0;
  for (let i = 0; i < size; i++) {
    out[i] = f(a[ai], b[bi]);
    // odometer step over outShape, moving both source offsets
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      ai += as[d];
      bi += bs[d];
      if (idx[d] < outShape[d]) break;
      ai -= as[d] * outShape[d];
      bi -= bs[d] * outShape[d];
      idx[d] = 0;
    }
  }
  return out;
}

export function cast(a: AnyTypedArray, to: DType, size: number): AnyTypedArray {
  const out = allocArray(to, size);
  for (let i = 0; i < size; i++) out[i] = to === 'f32' ? a[i] : Math.trunc(a[i]);
  return out;
}

export function reduce(op: ReduceOp, a: Float32Array, shape: number[], axes: number[]): Float32Array {
  const outShape = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  let outSize = 1;
  for (const d of outShape) outSize *= d;
  const out = new Float64Array(outSize).fill(op === 'sum' ? 0 : -Infinity); // f64 accumulation
  // walk the input in order; oi is the offset of the output element it reduces into
  walk(shape, broadcastStrides(outShape, shape), 0, (i, oi) => {
    const v = a[i];
    if (op === 'sum') out[oi] += v;
    else if (v > out[oi] || Number.isNaN(v)) out[oi] = v;
  });
  return Float32Array.from(out);
}
