// LoftQ initialization (Li et al. 2023, "LoftQ: LoRA-Fine-Tuning-Aware Quantization", Algorithm 1):
// alternate quantization and a rank-r SVD of the quantization residual, so that the quantized
// weight plus the LoRA product starts close to the full-precision weight.
//
//   B·A = 0
//   repeat iters times:
//     Q = quantize(W − scaling·B·A)
//     R = W − dequantize(Q)
//     U, S, V = rank-r SVD of R
//     B = U·√S / √scaling,  A = √S·Vᵀ / √scaling         (so scaling·B·A ≈ R)
//
// The LoRA forward is then y = x·deq(Q)ᵀ + scaling·(x·Aᵀ)·Bᵀ with A [r, in] and B [out, r]
// (PEFT's lora_A / lora_B; scaling = lora_alpha / r).

import { noGrad } from '../autograd.js';
import { DTypeError, ShapeError, ValueError, describeShape } from '../errors.js';
import { truncatedSvd } from '../linalg/svd.js';
import { affine, mul, sub } from '../ops/arithmetic.js';
import { matmul } from '../ops/matmul.js';
import { sum } from '../ops/reduce.js';
import { concat, transpose } from '../ops/shape.js';
import { dequantize, quantize, type QuantizedTensor } from '../quant/api.js';
import type { QuantFormat } from '../quant/formats.js';
import { assertFinite, tensor, tidy, zeros, type Tensor } from '../tensor.js';

export interface LoftqOptions {
  format: QuantFormat;
  /** LoRA rank r (A is [r, in], B is [out, r]). */
  rank: number;
  /** Alternating steps, >= 1 (default 5). */
  iters?: number;
  /** The LoRA scaling (lora_alpha / r) the adapter will be used with (default 1). */
  scaling?: number;
  /** Replaces quantize(w, format), e.g. a calibrated quantizer; must return a new QuantizedTensor of w's shape. */
  quantizer?: (w: Tensor) => QuantizedTensor;
  /** Seed of the randomized SVD (default 0). */
  seed?: number;
}

export interface LoftqResult {
  q: QuantizedTensor;
  /** [rank, in] */
  a: Tensor;
  /** [out, rank] */
  b: Tensor;
  /**
   * After each iteration: ||W − deq(Q) − scaling·B·A||_F / ||W||_F (the absolute norm when W is
   * all zeros).
   */
  errors: number[];
}

/**
 * LoftQ's initialization of a quantized weight and its LoRA factors for w [out, in] (f32, any
 * backend with synchronous reads). A rank above min(out, in) is allowed: the factors keep the
 * requested shape and the columns past min(out, in) are zero. Only the last iteration's Q, A and
 * B survive; every other tensor is freed. No autograd graph is recorded.
 */
export function loftqInit(w: Tensor, opts: LoftqOptions): LoftqResult {
  if (w.dtype !== 'f32') throw new DTypeError(`loftqInit: w must be f32, got ${w.dtype} ${describeShape(w.shape)}`);
  if (w.rank !== 2 || w.size === 0) throw new ShapeError(`loftqInit: w must be a non-empty matrix [out, in], got ${describeShape(w.shape)}`);
  const { rank, iters = 5, scaling = 1, seed = 0 } = opts;
  if (!Number.isInteger(rank) || rank < 1) throw new ValueError(`loftqInit: expected rank to be an integer >= 1, got ${String(rank)}`);
  if (!Number.isInteger(iters) || iters < 1) throw new ValueError(`loftqInit: expected iters to be an integer >= 1, got ${String(iters)} (0 iterations would be plain quantization with zero adapters)`);
  if (typeof scaling !== 'number' || !Number.isFinite(scaling) || scaling <= 0) throw new ValueError(`loftqInit: expected scaling to be a finite number > 0, got ${String(scaling)}`);
  const quantizer = opts.quantizer ?? ((x: Tensor) => quantize(x, opts.format));
  const [outDim, inDim] = w.shape;

  const host = w.dataSync();
  assertFinite(host, w.shape, 'loftqInit');
  let norm2 = 0;
  for (let i = 0; i < host.length; i++) norm2 += host[i] * host[i];
  const wNorm = Math.sqrt(norm2);

  let state: { q: QuantizedTensor; a: Tensor; b: Tensor } | undefined;
  const errors: number[] = [];
  try {
    for (let it = 0; it < iters; it++) {
      const prev = state;
      const next = noGrad(() => tidyOrThrow(() => {
        const target = prev ? sub(w, affine(matmul(prev.b, prev.a), scaling)) : w;
        const q = quantizer(target);
        if (q.shape.length !== 2 || q.shape[0] !== outDim || q.shape[1] !== inDim) {
          throw new ShapeError(`loftqInit: the quantizer returned ${describeShape(q.shape)} for a ${describeShape(w.shape)} weight`);
        }
        const residual = sub(w, dequantize(q));
        const { u, s, v } = truncatedSvd(residual, rank, { seed });
        const k = s.length; // min(rank, out, in)
        const root = tensor(Float32Array.from(s, (x) => Math.sqrt(x / scaling)), [1, k], 'f32', w.backend);
        const b = padColumns(mul(u, root), rank); // [out, rank]
        const a = transpose(padColumns(mul(v, root), rank)); // [rank, in]
        const err = sub(residual, affine(matmul(b, a), scaling));
        const e = Math.sqrt((sum(mul(err, err)).dataSync() as Float32Array)[0]);
        return { q, a, b, error: wNorm > 0 ? e / wNorm : e };
      }));
      errors.push(next.error);
      state = { q: next.q, a: next.a, b: next.b };
      if (prev) disposeState(prev);
    }
  } catch (e) {
    if (state) disposeState(state);
    throw e;
  }
  return { ...state!, errors };
}

/** tidy(fn) that also frees fn's tensors when fn throws (tidy itself leaves them on a throw). */
function tidyOrThrow<T>(fn: () => T): T {
  let failure: { error: unknown } | undefined;
  const result = tidy(() => {
    try {
      return fn();
    } catch (error) {
      failure = { error };
      return undefined;
    }
  });
  if (failure) throw failure.error;
  return result as T;
}

/** x [rows, k] widened to [rows, width] with zero columns (x itself when k === width). */
function padColumns(x: Tensor, width: number): Tensor {
  const [rows, k] = x.shape;
  return k === width ? x : concat([x, zeros([rows, width - k], 'f32', x.backend)], 1);
}

function disposeState(s: { q: QuantizedTensor; a: Tensor; b: Tensor }): void {
  s.q.dispose();
  s.a.dispose();
  s.b.dispose();
}
