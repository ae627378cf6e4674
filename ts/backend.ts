// The Backend interface: every backend implements every kernel listed here.
// Kernels take opaque storage handles plus plain shape numbers and return new handles;
// one call does a whole kernel. The JS backend (ts/backends/js) is the reference oracle.

import type { AnyTypedArray, DType } from './dtype.js';
import type { QuantFormat } from './quant/formats.js';

/** Opaque storage owned by a backend (a typed array, an offset into WASM memory, a GPU buffer...). */
export type Handle = object;

export type UnaryOp =
  | 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'abs' | 'sign' | 'square'
  | 'sigmoid' | 'silu' | 'siluGrad' | 'relu' | 'step';
export type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'max' | 'min' | 'eq' | 'gt';
export type ReduceOp = 'sum' | 'max';
export type RopeStyle = 'half' | 'interleaved';

export interface MatmulDims {
  batch: number;
  m: number;
  k: number;
  n: number;
  /** a is [m, k] (or [k, m] when transA), b is [k, n] (or [n, k] when transB), per batch. */
  transA: boolean;
  transB: boolean;
  /** Element stride between batches; 0 broadcasts one matrix over the batch. */
  aBatchStride: number;
  bBatchStride: number;
}

export interface RopeParams {
  /** x is [outer, T, D] flattened; position of row t is t + offset. */
  outer: number;
  seq: number;
  dim: number;
  theta: number;
  offset: number;
  style: RopeStyle;
  /** Rotate by minus the angle (the backward pass of rope). */
  inverse: boolean;
}

/** The greatest common divisor: IEC's groups (nn/lora.ts groupMean; LowRank.iec) are gcd(n, m). */
export function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** The low-rank term of Backend.dequantizeMatmulLowRank: scale · (x · aᵀ) · bᵀ, a [rank, cols],
 *  b [rows, rank]. */
export interface LowRank {
  a: Handle;
  b: Handle;
  rank: number;
  scale: number;
  /** IR-QLoRA's IEC scalars ([1] each; nn/lora.ts): x · aᵀ gains βA · groupMean(x, rank), and the
   *  product with b gains βB · groupMean(that, rows). */
  iec?: { betaA: Handle; betaB: Handle };
}

/** Dimensions of Backend.ropeAppend: q [batch, t, qHeads·dim], k and v [batch, t, kvHeads·dim];
 *  the key/value storages [batch, kvHeads, capacity, dim]. */
export interface RopeAppendDims {
  batch: number;
  t: number;
  qHeads: number;
  kvHeads: number;
  /** Features per head (even). */
  dim: number;
  /** Positions the storages hold. */
  capacity: number;
  /** The storage position of k and v's first row (at + t <= capacity). */
  at: number;
  /** The rotation's position of the first row, with theta and style as RopeParams'. */
  offset: number;
  theta: number;
  style: RopeStyle;
}

/** Dimensions of Backend.attention: q [blocks, rows, dim], k and v [blocks, keys, dim]. */
export interface AttentionDims {
  /** Blocks (batch · key/value heads). */
  blocks: number;
  /** Query rows per block: the query heads sharing a key/value head, t positions each. */
  rows: number;
  /** Positions per query head: row r is position past + r % t. */
  t: number;
  /** Key/value rows per block (storage: the keys past a row's limit are not read). */
  keys: number;
  /** Features per head (at most ATTENTION_MAX_DIM). */
  dim: number;
  /** Row r sees keys 0 ..= past + r % t. */
  past: number;
  /** Multiplies q before the dot products. */
  scale: number;
}
/** The largest head size Backend.attention takes (ops/nn.ts composes larger ones). */
export const ATTENTION_MAX_DIM = 256;
/** The most query positions per head for which ops/nn.ts calls Backend.attention (decoding; more
 *  positions, as in a prompt or an evaluation window, go through the matmuls, which share the key
 *  reads between queries: on lavapipe the fused kernel wins at 1 position, 3.5x, and loses at 8). */
export const ATTENTION_MAX_T = 4;

/** ICQ search parameters (defaults in ts/quant/icq.ts DEFAULT_ICQ). */
export interface IcqSearchParams { lambda: number; n: number; sigma: number; clipLow: number; clipHigh: number; clipPoints: number }

/** Handles of a quantized weight's parts; which exist depends on the format. */
export interface QuantHandles {
  codes: Handle;
  scales?: Handle;
  zeros?: Handle;
  scaleCodes?: Handle;
  scale2?: Handle;
  scaleOffset?: Handle;
}

/** One Adam/AdamW update's constants (ts/train/optim.ts): g' = g + wd·p when !decoupled;
 *  m = b1·m + (1−b1)·g'; v = b2·v + (1−b2)·g'²; p = p·(1 − lr·wd if decoupled) + (m / (√v / bc2sqrt + eps))·(−lr / bc1). */
export interface AdamHyper { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; decoupled: boolean; bc1: number; bc2sqrt: number }

/** One LWC weight (ts/quant/lwc.ts) for the optional lwc kernels: w is f32 [rows, cols] in groups
 *  of `group` columns per row (the last one of a row may be shorter), rows·ceil(cols / group)
 *  groups, each with an f32 scale and a u8 zero point (laid out as an INT format's scales and zeros). */
export interface LwcDims { rows: number; cols: number; group: number; bits: number }

export interface BackendInfo {
  name: string;
  /** Human-readable facts for `quantlora doctor` (SIMD, threads, adapter...). */
  details: Record<string, string | number | boolean>;
}

export interface Backend {
  readonly name: string;
  info(): BackendInfo;

  // storage
  upload(data: AnyTypedArray): Handle;
  zeros(dtype: DType, size: number): Handle;
  fill(size: number, value: number): Handle;
  read(h: Handle, dtype: DType, size: number): Promise<AnyTypedArray>;
  /** Synchronous read where the backend allows it (JS, WASM, native CPU); undefined otherwise. */
  readSync?(h: Handle, dtype: DType, size: number): AnyTypedArray;
  free(h: Handle): void;
  /** Buffers allocated and not yet freed. */
  liveBuffers(): number;
  /** Device memory in bytes, where the backend counts it: behind live buffers, and the most it held
   *  (live, pooled and waiting for the GPU together) since the last reset. `resetPeak` restarts the
   *  peak from what is held now, after reading it. */
  memoryStats?(resetPeak?: boolean): { liveBytes: number; peakBytes: number };

  // elementwise
  unary(op: UnaryOp, a: Handle, size: number): Handle;
  /** a*mul + add elementwise. */
  affine(a: Handle, size: number, mul: number, add: number): Handle;
  pow(a: Handle, size: number, p: number): Handle;
  /** Broadcasting binary op; shapes have equal rank (already aligned by the caller). */
  binary(op: BinaryOp, a: Handle, aShape: number[], b: Handle, bShape: number[], outShape: number[]): Handle;
  cast(a: Handle, from: DType, to: DType, size: number): Handle;
  /** Reduce over the given axes; output keeps those axes with size 1. */
  reduce(op: ReduceOp, a: Handle, shape: number[], axes: number[]): Handle;

  // layout
  /** out[i] = a[offset + sum_d idx_d * strides_d] for every index of outShape (transpose, slice, broadcast). */
  strided(a: Handle, dtype: DType, offset: number, strides: number[], outShape: number[]): Handle;
  /** In place: dst[offset + sum_d idx_d * strides_d] = src[i] over src's shape (concat, slice backward). */
  writeStrided(dst: Handle, dtype: DType, src: Handle, offset: number, strides: number[], srcShape: number[]): void;
  /** Rows of table [rows, dim] picked by i32 ids. */
  gather(table: Handle, rows: number, dim: number, ids: Handle, count: number): Handle;
  /** Backward of gather: out [rows, dim] = sum of grad rows into the rows named by ids. */
  scatterAddRows(grad: Handle, count: number, dim: number, ids: Handle, rows: number): Handle;

  // linear algebra
  matmul(a: Handle, b: Handle, d: MatmulDims): Handle;

  // transformer blocks
  rmsnorm(x: Handle, w: Handle, rows: number, dim: number, eps: number): Handle;
  /** Returns [dx, dw]. */
  rmsnormBackward(x: Handle, w: Handle, dy: Handle, rows: number, dim: number, eps: number): [Handle, Handle];
  rope(x: Handle, p: RopeParams): Handle;
  /** Softmax over rows of length cols; causal masks key k > q + (cols - queries) for row q = row % queries. */
  softmax(x: Handle, rows: number, cols: number, causalQueries: number): Handle;
  softmaxBackward(y: Handle, dy: Handle, rows: number, cols: number): Handle;
  /** Mean cross-entropy of logits [rows, vocab] against i32 targets, skipping ignoreIndex; returns [1].
   *  `checked`, when given: the caller knows every target is in [0, vocab) or ignoreIndex and that
   *  this many are not ignoreIndex (a backend that would read the targets back to check them and
   *  count them can skip that read). */
  crossEntropy(logits: Handle, targets: Handle, rows: number, vocab: number, ignoreIndex: number, checked?: number): Handle;
  crossEntropyBackward(logits: Handle, targets: Handle, dLoss: Handle, rows: number, vocab: number, ignoreIndex: number, checked?: number): Handle;

  // quantization
  quantize(w: Handle, rows: number, cols: number, f: QuantFormat): QuantHandles;
  dequantize(q: QuantHandles, rows: number, cols: number, f: QuantFormat): Handle;
  /** x [xRows, cols] · Wᵀ with W = dequantize(q) of shape [rows, cols]; returns [xRows, rows]. */
  dequantizeMatmul(x: Handle, xRows: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat): Handle;
  /** dy [n, rows] · W with W = dequantize(q) of shape [rows, cols]; returns [n, cols] (the
   *  backward of dequantizeMatmul in x, without a float copy of W). */
  dequantizeMatmulT(dy: Handle, n: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat): Handle;
  /** ICQ's entropy search (ts/quant/icq.ts, formats.ts "ICQ"): f32 per group, τ (nf) or clip
   *  ratio (int); bit-identical on every backend. Throws NonFiniteError on NaN/Inf weights. */
  icqSearch(w: Handle, rows: number, cols: number, f: QuantFormat, params: IcqSearchParams): Handle;

  /** Optional fused Adam/AdamW update of one parameter, in place on p, m and v (f32, `size`
   *  elements): the element-wise sequence of ts/train/optim.ts in one kernel (the GPU has it:
   *  one launch per parameter instead of about fourteen). */
  adamStep?(p: Handle, g: Handle, m: Handle, v: Handle, size: number, h: AdamHyper): void;

  /** Optional silu(a)·b of two f32 arrays of `size` (SwiGLU's gate and up; the GPU has it: one
   *  pass instead of two), with silu computed as unary('silu') does: the same values. */
  siluMul?(a: Handle, b: Handle, size: number): Handle;

  /** Optional residual add and RMSNorm in one pass (the GPU has it): returns [s = x + r,
   *  rmsnorm(s)·w] for x, r [rows, dim], the same values as binary add then rmsnorm. */
  addRmsnorm?(x: Handle, r: Handle, w: Handle, rows: number, dim: number, eps: number): [Handle, Handle];

  /** Optional fused causal attention (ops/nn.ts attention; the GPU has it: decoding's attention
   *  in one kernel instead of two matmuls, a mask and a softmax): y [blocks, rows, dim], row r of
   *  block b = Σ_j p_j · v[b, j] over j <= limit = past + r % t, p = softmax_j(f32(scale · q[b, r]) ·
   *  k[b, j]). No gradient (the op composes when one is wanted). */
  attention?(q: Handle, k: Handle, v: Handle, d: AttentionDims): Handle;

  /** Optional x · Wᵀ + scale · (x · aᵀ) · bᵀ for a quantized layer's LoRA branch at inference
   *  (quant/api.ts dequantizeMatmulLowRank), a [rank, cols], b [rows, rank]: the GPU computes
   *  u = x · aᵀ, then adds scale · u · bᵀ in the GEMV's epilogue (two kernels instead of five).
   *  Returns null, having done nothing, where the backend has no such kernel for this format or
   *  size (the caller composes). No gradient. */
  dequantizeMatmulLowRank?(x: Handle, xRows: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat, lr: LowRank): Handle | null;

  /** Optional x · Wᵢᵀ for several quantized weights of one format on the same x [xRows, cols] in
   *  one kernel (quant/api.ts dequantizeMatmulMany; decoding's q/k/v and gate/up projections),
   *  with `lrs` each plus its low-rank term (as dequantizeMatmulLowRank's, without IEC): one y
   *  [xRows, rows[i]] each, or with glu (two weights of equal rows) one y = silu(first) · second.
   *  Returns null, having done nothing, where the backend has no such kernel for these weights
   *  (the caller composes). No gradient. */
  dequantizeMatmulMany?(x: Handle, xRows: number, qs: QuantHandles[], rows: number[], cols: number, f: QuantFormat, glu: boolean, lrs?: LowRank[]): Handle[] | null;

  /** Optional argmax of each row of x [rows, cols] as i32 [rows] (ops/reduce.ts argmaxRows: the
   *  first of equal maxima, NaNs passed over, 0 for a row of NaNs); cols >= 1. */
  argmaxRows?(x: Handle, rows: number, cols: number): Handle;

  /** Optional fused attention input of a decoding step (nn/llama.ts KvCache.extendRoped; the GPU
   *  has it: one kernel instead of two ropes, two storage writes and the head transposes): returns
   *  rope(q) as [batch, qHeads, t, dim] and writes rope(k) and v at positions at.. of the storages
   *  (in place), with the values of rope and writeStrided. No gradient. */
  ropeAppend?(q: Handle, k: Handle, v: Handle, keys: Handle, values: Handle, d: RopeAppendDims): Handle;

  /** Optional LWC fake quantization (ts/quant/lwc.ts; the GPU has it, elsewhere LWC runs on the
   *  host): f32 [rows, cols], element f32((q − zero)·scale) of its group, with
   *  q = clamp(roundHalfAway(w / scale) + zero, 0, 2^bits − 1) decided on the exact quotient, so
   *  bit-identical with the host path. */
  lwcFakeQuant?(w: Handle, scales: Handle, zeros: Handle, d: LwcDims): Handle;
  /** Optional backward of lwcFakeQuant with dL/dw_fq = dy: f32 [2, groups], per group
   *  dS = Σ dy·∂w_fq/∂scale at fixed zero (q − zero − w/scale inside the clamp, q − zero outside) and
   *  dZ = Σ dy·∂w_fq/∂zero at fixed scale (−scale outside the clamp, 0 inside); straight-through
   *  round, clamp bounds inside. Summed in a fixed order (deterministic). */
  lwcGrad?(w: Handle, scales: Handle, zeros: Handle, dy: Handle, d: LwcDims): Handle;

  // optional: the long kernels off the JS thread (the native backend has them). Same results as
  // the synchronous kernels; inputs must not change until the promise settles (whether freeing one
  // meanwhile is safe is up to the backend: native defers the free). ts/ops/async.ts picks them.
  matmulAsync?(a: Handle, b: Handle, d: MatmulDims): Promise<Handle>;
  dequantizeMatmulAsync?(x: Handle, xRows: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat): Promise<Handle>;
  dequantizeAsync?(q: QuantHandles, rows: number, cols: number, f: QuantFormat): Promise<Handle>;
}
