// Reductions along axes (sum, mean, max) and sumTo, the gradient of broadcasting.

import { record } from '../autograd.js';
import { ShapeError, ValueError, describeShape } from '../errors.js';
import { tensor, type Tensor } from '../tensor.js';
import { affine, equal, mul, div } from './arithmetic.js';
import { broadcastTo, reshape } from './shape.js';
import { expectDType, normalizeAxes, out, sameShape } from './util.js';

function reduceRaw(op: 'sum' | 'max', a: Tensor, axes: number[]): Tensor {
  expectDType(op, a, 'f32');
  const kept = a.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  return out(a.backend, a.backend.reduce(op, a.handle, [...a.shape], axes), kept);
}

function finish(y: Tensor, a: Tensor, axes: number[], keepDims: boolean): Tensor {
  return keepDims ? y : reshape(y, a.shape.filter((_, i) => !axes.includes(i)));
}

export interface ReduceOptions {
  keepDims?: boolean;
}

/** Sum over axes (all by default). */
export function sum(a: Tensor, axes?: number | number[], opts: ReduceOptions = {}): Tensor {
  const ax = normalizeAxes('sum', a.rank, axes);
  const y = record('sum', [a], reduceRaw('sum', a, ax), (g, { inputs: [x] }) => [broadcastTo(g, x.shape)]);
  return finish(y, a, ax, !!opts.keepDims);
}

export function mean(a: Tensor, axes?: number | number[], opts: ReduceOptions = {}): Tensor {
  const ax = normalizeAxes('mean', a.rank, axes);
  const count = ax.reduce((n, i) => n * a.shape[i], 1);
  return affine(sum(a, ax, opts), 1 / Math.max(count, 1));
}

/** Max over axes; the gradient is shared equally among tied maxima. */
export function max(a: Tensor, axes?: number | number[], opts: ReduceOptions = {}): Tensor {
  const ax = normalizeAxes('max', a.rank, axes);
  const m = reduceRaw('max', a, ax);
  const y = record('max', [a], m, (g, { inputs: [x], saved: [mx] }) => {
    const mask = equal(x, broadcastTo(mx, x.shape));
    const count = reduceRaw('sum', mask, ax);
    return [mul(broadcastTo(div(g, count), x.shape), mask)];
  }, [m]);
  return finish(y, a, ax, !!opts.keepDims);
}

/**
 * The index of the largest value of each row (the last axis) as i32, of shape x.shape without the
 * last axis: the first of equal maxima; NaNs are passed over (a row of NaNs gives 0). No gradient.
 * A kernel where the backend has Backend.argmaxRows (the GPU: greedy decoding picks its next token
 * there, and the id stays on the device, known to lie in [0, cols) without a read); elsewhere the
 * values are read on the host.
 */
export function argmaxRows(x: Tensor): Tensor {
  expectDType('argmaxRows', x, 'f32');
  if (x.rank < 1) throw new ShapeError('argmaxRows: needs rank >= 1');
  const cols = x.shape[x.rank - 1];
  if (cols === 0) throw new ValueError(`argmaxRows: rows of ${describeShape(x.shape)} are empty, with no largest value`);
  const rows = x.size / cols;
  const shape = x.shape.slice(0, -1);
  const be = x.backend;
  if (be.argmaxRows) {
    const y = out(be, be.argmaxRows(x.handle, rows, cols), shape, 'i32');
    if (rows) y.storage.bounds = [0, cols - 1];
    return y;
  }
  const v = x.dataSync() as Float32Array;
  const ids = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = -Infinity;
    let at = cols; // none yet: NaNs never win, -Infinity does (from the first)
    for (let c = 0; c < cols; c++) {
      const a = v[r * cols + c];
      if (a > best || (a === best && c < at)) [best, at] = [a, c];
    }
    ids[r] = at === cols ? 0 : at;
  }
  return tensor(ids, shape, 'i32', be);
}

/** Sums g over the axes along which `shape` was broadcast to g's shape (the inverse of broadcastTo). */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  const s = axes.length ? reduceRaw('sum', g, axes) : g;
  return reshape(s, shape);
}
