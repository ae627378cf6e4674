// Shape ops: reshape (a view, no copy), transpose, slice, concat and broadcastTo. The last four
// are one strided-copy kernel with different strides; their backwards are each other. A transpose
// that moves only axes of size 1 is a view, as reshape is.

import { record } from '../autograd.js';
import { ShapeError, ValueError, describeShape } from '../errors.js';
import { inheritBounds, view, zeros, type Tensor } from '../tensor.js';
import { sumTo } from './reduce.js';
import { backendOf, normalizeAxes, out, padShape, rowMajorStrides, sameShape, sizeOf } from './util.js';

/** Same data, new shape; one dimension may be -1. Shares storage with the input. */
export function reshape(a: Tensor, shape: readonly number[]): Tensor {
  const s = [...shape];
  const unknown = s.indexOf(-1);
  if (unknown >= 0) {
    if (s.indexOf(-1, unknown + 1) >= 0) throw new ShapeError(`reshape: at most one -1 allowed, got ${describeShape(s)}`);
    const known = s.reduce((n, d, i) => (i === unknown ? n : n * d), 1);
    if (known === 0 || a.size % known !== 0) throw new ShapeError(`reshape: cannot infer -1 in ${describeShape(s)} for ${a.size} elements`);
    s[unknown] = a.size / known;
  }
  if (s.some((d) => !Number.isInteger(d) || d < 0) || sizeOf(s) !== a.size) {
    throw new ShapeError(`reshape: ${describeShape(a.shape)} (${a.size} elements) cannot become ${describeShape(shape)}`);
  }
  if (sameShape(s, a.shape)) return a;
  return viewAs('reshape', a, s);
}

/** a's storage under `shape` (same element order), its gradient reshaped back: reshape and the
 *  transposes that keep the memory order. */
function viewAs(name: string, a: Tensor, shape: number[]): Tensor {
  return record(name, [a], view(a, shape), (g, { inputs: [x] }) => [reshape(g, x.shape)]);
}

/** Permutes axes; by default swaps the last two. */
export function transpose(a: Tensor, perm?: number[]): Tensor {
  const p = perm ?? [...Array(a.rank).keys()].map((i) => (i < a.rank - 2 ? i : 2 * a.rank - 3 - i));
  if (p.length !== a.rank || [...p].sort((x, y) => x - y).some((v, i) => v !== i)) {
    throw new ValueError(`transpose: permutation [${p.join(', ')}] is not a permutation of ${a.rank} axes`);
  }
  const shape = p.map((i) => a.shape[i]);
  // moving only axes of size 1 keeps the memory order (decoding's one position split into heads):
  // a view sharing storage, as reshape makes, with no copy
  const kept = p.filter((i) => a.shape[i] !== 1);
  if (kept.every((v, j) => j === 0 || kept[j - 1] < v)) return viewAs('transpose', a, shape);
  const strides = rowMajorStrides(a.shape);
  const y = inheritBounds(out(a.backend, a.backend.strided(a.handle, a.dtype, 0, p.map((i) => strides[i]), shape), shape, a.dtype), a);
  const inverse = p.map((_, i) => p.indexOf(i));
  return record('transpose', [a], y, (g) => [transpose(g, inverse)]);
}

/** Copies the block starting at `begin` of extent `size` (-1: to the end). */
export function slice(a: Tensor, begin: number[], size?: number[]): Tensor {
  if (begin.length !== a.rank) throw new ShapeError(`slice: begin [${begin.join(', ')}] needs ${a.rank} entries for ${describeShape(a.shape)}`);
  const ext = (size ?? begin.map(() => -1)).map((s, i) => (s === -1 ? a.shape[i] - begin[i] : s));
  ext.forEach((s, i) => {
    if (!Number.isInteger(begin[i]) || begin[i] < 0 || !Number.isInteger(s) || s < 0 || begin[i] + s > a.shape[i]) {
      throw new ShapeError(`slice: begin ${begin[i]} size ${s} on axis ${i} is outside ${describeShape(a.shape)}`);
    }
  });
  const strides = rowMajorStrides(a.shape);
  const offset = begin.reduce((o, b, i) => o + b * strides[i], 0);
  const y = inheritBounds(out(a.backend, a.backend.strided(a.handle, a.dtype, offset, strides, ext), ext, a.dtype), a);
  return record('slice', [a], y, (g, { inputs: [x] }) => [padInto(g, x.shape, offset)]);
}

/** A zero tensor of `shape` with g written at the block starting at flat offset `offset`. */
function padInto(g: Tensor, shape: readonly number[], offset: number): Tensor {
  const z = zeros(shape, g.dtype, g.backend);
  g.backend.writeStrided(z.handle, g.dtype, g.handle, offset, rowMajorStrides(shape), [...g.shape]);
  return z;
}

/** Joins tensors along an axis. */
export function concat(ts: Tensor[], axis = 0): Tensor {
  if (!ts.length) throw new ValueError('concat: needs at least one tensor');
  const be = backendOf('concat', ...ts);
  const first = ts[0];
  const [ax] = normalizeAxes('concat', first.rank, axis);
  for (const t of ts) {
    if (t.dtype !== first.dtype || t.rank !== first.rank || t.shape.some((d, i) => i !== ax && d !== first.shape[i])) {
      throw new ShapeError(`concat: ${describeShape(t.shape)} (${t.dtype}) does not match ${describeShape(first.shape)} (${first.dtype}) outside axis ${ax}`);
    }
  }
  const shape = [...first.shape];
  shape[ax] = ts.reduce((n, t) => n + t.shape[ax], 0);
  const strides = rowMajorStrides(shape);
  const y = zeros(shape, first.dtype, be);
  const starts: number[] = [];
  let at = 0;
  for (const t of ts) {
    starts.push(at);
    be.writeStrided(y.handle, t.dtype, t.handle, at * strides[ax], strides, [...t.shape]);
    at += t.shape[ax];
  }
  inheritBounds(y, ...ts);
  return record('concat', ts, y, (g, { inputs }) =>
    inputs.map((t, i) => slice(g, shape.map((_, d) => (d === ax ? starts[i] : 0)), t.shape.map((d) => d))),
  );
}

/** Repeats size-1 (or missing leading) dimensions to reach `shape`. */
export function broadcastTo(a: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(a.shape, shape)) return a;
  const padded = padShape(a.shape, shape.length);
  if (a.rank > shape.length || padded.some((d, i) => d !== shape[i] && d !== 1)) {
    throw new ShapeError(`broadcastTo: ${describeShape(a.shape)} cannot broadcast to ${describeShape(shape)}`);
  }
  const src = rowMajorStrides(padded).map((s, i) => (padded[i] === 1 ? 0 : s));
  const y = inheritBounds(out(a.backend, a.backend.strided(a.handle, a.dtype, 0, src, [...shape]), shape, a.dtype), a);
  return record('broadcastTo', [a], y, (g, { inputs: [x] }) => [sumTo(g, x.shape)]);
}
