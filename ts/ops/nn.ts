// Transformer-block ops: RMSNorm, rotary position embedding and softmax (optionally causal).

import type { RopeStyle } from '../backend.js';
import { record } from '../autograd.js';
import { ShapeError, ValueError, describeShape } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { backendOf, expectDType, out } from './util.js';

/** y = x / sqrt(mean(x², last axis) + eps) · w, for x [..., dim] and w [dim]. */
export function rmsnorm(x: Tensor, w: Tensor, eps = 1e-5): Tensor {
  const be = backendOf('rmsnorm', x, w);
  expectDType('rmsnorm', x, 'f32', 'x');
  expectDType('rmsnorm', w, 'f32', 'weight');
  const dim = x.shape[x.rank - 1];
  if (w.rank !== 1 || w.shape[0] !== dim) throw new ShapeError(`rmsnorm: weight must be [${dim}] for x ${describeShape(x.shape)}, got ${describeShape(w.shape)}`);
  if (!(eps >= 0)) throw new ValueError(`rmsnorm: eps must be >= 0, got ${eps}`);
  const rows = x.size / dim;
  const y = out(be, be.rmsnorm(x.handle, w.handle, rows, dim, eps), x.shape);
  return record('rmsnorm', [x, w], y, (g, { inputs: [xi, wi] }) => {
    const [dx, dw] = be.rmsnormBackward(xi.handle, wi.handle, g.handle, rows, dim, eps);
    return [out(be, dx, xi.shape), out(be, dw, wi.shape)];
  });
}

export interface RopeOptions {
  /** Base of the rotary frequencies (rope_theta). */
  theta?: number;
  /** Position of the first row (for decoding with a cache). */
  offset?: number;
  /** 'half' rotates (i, i+d/2) like Hugging Face; 'interleaved' rotates (2i, 2i+1) like GGUF. */
  style?: RopeStyle;
}

/** Rotary position embedding of x [..., seq, dim] (dim even); position of row t is t + offset. */
export function rope(x: Tensor, opts: RopeOptions = {}): Tensor {
  expectDType('rope', x, 'f32');
  if (x.rank < 2) throw new ShapeError(`rope: x must be [..., seq, dim], got ${describeShape(x.shape)}`);
  const dim = x.shape[x.rank - 1];
  const seq = x.shape[x.rank - 2];
  if (dim % 2) throw new ShapeError(`rope: the last dimension must be even, got ${dim}`);
  const params = {
    outer: x.size / (dim * seq || 1), seq, dim,
    theta: opts.theta ?? 10000, offset: opts.offset ?? 0, style: opts.style ?? 'half',
  } as const;
  if (!(params.theta > 0)) throw new ValueError(`rope: theta must be > 0, got ${params.theta}`);
  const be = x.backend;
  const y = out(be, be.rope(x.handle, { ...params, inverse: false }), x.shape);
  // the rotation is orthogonal: its backward is the rotation by the opposite angle
  return record('rope', [x], y, (g) => [out(be, be.rope(g.handle, { ...params, inverse: true }), g.shape)]);
}

export interface SoftmaxOptions {
  /** Mask keys after each query: x is [..., queries, keys], query q sees keys <= q + keys - queries. */
  causal?: boolean;
}

/** Softmax over the last axis. */
export function softmax(x: Tensor, opts: SoftmaxOptions = {}): Tensor {
  expectDType('softmax', x, 'f32');
  if (x.rank < 1) throw new ShapeError('softmax: needs rank >= 1');
  const cols = x.shape[x.rank - 1];
  const rows = x.size / (cols || 1);
  let queries = 0;
  if (opts.causal) {
    if (x.rank < 2) throw new ShapeError(`softmax: causal masking needs [..., queries, keys], got ${describeShape(x.shape)}`);
    queries = x.shape[x.rank - 2];
    if (queries > cols) throw new ShapeError(`softmax: causal masking needs queries <= keys, got ${describeShape(x.shape)}`);
  }
  const be = x.backend;
  const y = out(be, be.softmax(x.handle, rows, cols, queries), x.shape);
  return record('softmax', [x], y, (g, { saved: [s] }) => [out(be, be.softmaxBackward(s.handle, g.handle, rows, cols), s.shape)], [y]);
}
