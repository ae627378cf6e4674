// Transformer-block ops: RMSNorm, rotary position embedding, softmax (optionally causal) and causal
// attention over grouped query heads (fused on backends that have the kernel).

import { ATTENTION_MAX_DIM, ATTENTION_MAX_T, type Backend, type Handle, type RopeStyle } from '../backend.js';
import { isGradEnabled, record } from '../autograd.js';
import { ShapeError, ValueError, describeShape } from '../errors.js';
import { tensor, type Tensor } from '../tensor.js';
import { add, affine } from './arithmetic.js';
import { matmul } from './matmul.js';
import { reshape } from './shape.js';
import { backendOf, expectDType, out } from './util.js';

/** y = x / sqrt(mean(x², last axis) + eps) · w, for x [..., dim] and w [dim]. */
export function rmsnorm(x: Tensor, w: Tensor, eps = 1e-5): Tensor {
  const be = backendOf('rmsnorm', x, w);
  const { rows, dim } = normDims('rmsnorm', x, w, eps);
  return recordRmsnorm(be, x, w, be.rmsnorm(x.handle, w.handle, rows, dim, eps), rows, dim, eps);
}

/** [s, rmsnorm(s, w)] for the residual sum s = x + r: one kernel where the backend has it and x
 *  and r have one shape, else add then rmsnorm, broadcasting as add does (the same values either
 *  way); differentiable as the pair. */
export function addRmsnorm(x: Tensor, r: Tensor, w: Tensor, eps = 1e-5): [Tensor, Tensor] {
  const be = backendOf('addRmsnorm', x, r, w);
  const same = x.rank === r.rank && x.shape.every((d, i) => d === r.shape[i]);
  // one shape: checked here on every backend (the same errors, fused or not)
  if (same) expectDType('addRmsnorm', r, 'f32', 'r');
  const dims = same ? normDims('addRmsnorm', x, w, eps) : undefined;
  if (!dims || !be.addRmsnorm) {
    const s = add(x, r);
    return [s, rmsnorm(s, w, eps)];
  }
  const { rows, dim } = dims;
  const [sh, yh] = be.addRmsnorm(x.handle, r.handle, w.handle, rows, dim, eps);
  const s = record('add', [x, r], out(be, sh, x.shape), (g) => [g, g]);
  return [s, recordRmsnorm(be, s, w, yh, rows, dim, eps)];
}

/** The checks of an RMSNorm's operands (f32 x [..., dim], f32 w [dim], eps >= 0); its rows and dim. */
function normDims(name: string, x: Tensor, w: Tensor, eps: number): { rows: number; dim: number } {
  expectDType(name, x, 'f32', 'x');
  expectDType(name, w, 'f32', 'weight');
  const dim = x.shape[x.rank - 1];
  if (w.rank !== 1 || w.shape[0] !== dim) throw new ShapeError(`${name}: weight must be [${dim}] for x ${describeShape(x.shape)}, got ${describeShape(w.shape)}`);
  if (!(eps >= 0)) throw new ValueError(`${name}: eps must be >= 0, got ${eps}`);
  return { rows: x.size / dim, dim };
}

/** y = rmsnorm(x)·w (the handle computed) as a tensor, recorded with RMSNorm's backward. */
function recordRmsnorm(be: Backend, x: Tensor, w: Tensor, y: Handle, rows: number, dim: number, eps: number): Tensor {
  return record('rmsnorm', [x, w], out(be, y, x.shape), (g, { inputs: [xi, wi] }) => {
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

export interface AttentionOptions {
  /** Query positions per query head (default: all rows, one head per block). */
  t?: number;
  /** Position of the first query: row r sees keys 0 ..= past + r % t (default keys − t). */
  past?: number;
  /** Multiplies q (default 1 / sqrt(dim)). */
  scale?: number;
}

/** Key scores a query may not see get this added: exp of it minus any score is 0 in f32, and it
 *  stays finite, so no backend meets an infinity. */
const MASKED = -1e30;

/**
 * Causal softmax attention: q [blocks, rows, dim] (the query heads sharing a key/value head, t
 * positions each: row r is position past + r % t) over k, v [blocks, keys, dim]; row r attends to
 * keys 0 ..= past + r % t, so k and v may be longer storage (a KvCache's) whose later rows are never
 * seen. Returns [blocks, rows, dim]. One fused kernel where the backend has one, no gradient is
 * wanted and there are few positions (t <= ATTENTION_MAX_T: decoding); otherwise a matmul, the
 * causal softmax (with a mask over keys past the last query) and a matmul, differentiable.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const be = backendOf('attention', q, k, v);
  for (const [name, x] of [['q', q], ['k', k], ['v', v]] as const) {
    expectDType('attention', x, 'f32', name);
    if (x.rank !== 3) throw new ShapeError(`attention: ${name} must be [blocks, rows, dim], got ${describeShape(x.shape)}`);
  }
  const [blocks, rows, dim] = q.shape;
  const keys = k.shape[1];
  if (k.shape[0] !== blocks || k.shape[2] !== dim || v.shape[0] !== blocks || v.shape[1] !== keys || v.shape[2] !== dim) {
    throw new ShapeError(`attention: k ${describeShape(k.shape)} and v ${describeShape(v.shape)} must be [${blocks}, keys, ${dim}] for q ${describeShape(q.shape)}`);
  }
  const t = opts.t ?? rows;
  if (!(Number.isInteger(t) && t >= 1 && rows % t === 0)) throw new ValueError(`attention: t = ${t} positions must divide the ${rows} query rows`);
  const past = opts.past ?? keys - t;
  if (!(Number.isInteger(past) && past >= 0 && past + t <= keys)) throw new ValueError(`attention: past = ${past} with ${t} positions needs ${past + t} keys, k has ${keys}`);
  const scale = opts.scale ?? 1 / Math.sqrt(dim);
  if (!Number.isFinite(scale)) throw new ValueError(`attention: scale must be finite, got ${scale}`);
  const wantsGrad = isGradEnabled() && (q.requiresGrad || k.requiresGrad || v.requiresGrad);
  if (be.attention && !wantsGrad && dim <= ATTENTION_MAX_DIM && t <= ATTENTION_MAX_T && blocks * rows > 0) {
    return out(be, be.attention(q.handle, k.handle, v.handle, { blocks, rows, t, keys, dim, past, scale }), q.shape);
  }
  // scale on q (the smaller side), the scores per query head [blocks · heads, t, keys]
  const heads = rows / t;
  const scores = reshape(matmul(affine(q, scale), k, { transB: true }), [blocks * heads, t, keys]);
  let p: Tensor;
  if (past + t === keys) p = softmax(scores, { causal: true });
  else {
    const mask = causalMask(t, past, keys, be);
    p = softmax(add(scores, mask));
    mask.dispose();
  }
  return matmul(reshape(p, [blocks, rows, keys]), v);
}

/** The additive mask [t, keys] of queries at positions past.. (0 where key j <= past + query). */
function causalMask(t: number, past: number, keys: number, be: Backend): Tensor {
  const data = new Float32Array(t * keys);
  for (let q = 0; q < t; q++) data.fill(MASKED, q * keys + past + q + 1, (q + 1) * keys);
  return tensor(data, [t, keys], 'f32', be);
}
