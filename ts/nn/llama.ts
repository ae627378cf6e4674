// A Llama-family decoder (Llama, Mistral, Qwen2, SmolLM): token embedding, N blocks of
// [RMSNorm -> grouped-query attention with RoPE -> residual, RMSNorm -> SwiGLU MLP -> residual],
// a final RMSNorm and a tied or separate output head. Weights use Hugging Face names and layouts
// (rotary 'half' style); every projection is a LinearLayer so quantized layers can replace it.

import { ShapeError, ValueError, describeShape } from '../errors.js';
import { add } from '../ops/arithmetic.js';
import { gather } from '../ops/gather.js';
import { crossEntropy } from '../ops/loss.js';
import { matmul } from '../ops/matmul.js';
import { addRmsnorm, attention, rmsnorm, rope, type RopeOptions } from '../ops/nn.js';
import { reshape, slice, transpose } from '../ops/shape.js';
import { out } from '../ops/util.js';
import type { Backend } from '../backend.js';
import { getBackend } from '../registry.js';
import { isGradEnabled } from '../autograd.js';
import { keep, tensor, tidy, zeros, type Tensor, type TensorContainer } from '../tensor.js';
import type { LlamaConfig } from './config.js';
import { Linear, type LinearLayer } from './linear.js';
import { forwardMany } from './quant-linear.js';

/** Where the model's float weights come from: Hugging Face names, row-major values. */
export interface WeightSource {
  has(name: string): boolean;
  /** The values of `name`; throws a FormatError naming the file when it is missing or not `shape`. */
  read(name: string, shape: readonly number[]): Float32Array;
}

export interface LlamaBlock {
  inputNorm: Tensor;
  q: LinearLayer; k: LinearLayer; v: LinearLayer; o: LinearLayer;
  postNorm: Tensor;
  gate: LinearLayer; up: LinearLayer; down: LinearLayer;
}

/** The projections of a block by their Hugging Face module names. */
export const PROJECTIONS = {
  q: 'self_attn.q_proj', k: 'self_attn.k_proj', v: 'self_attn.v_proj', o: 'self_attn.o_proj',
  gate: 'mlp.gate_proj', up: 'mlp.up_proj', down: 'mlp.down_proj',
} as const;
export type ProjectionName = keyof typeof PROJECTIONS;

/** Options of a KvCache. */
export interface KvCacheOptions {
  /** Positions to make room for at the first extend (default 64); past it the storage doubles. */
  capacity?: number;
}

/**
 * Keys and values of earlier positions, per layer, for decoding one token at a time (inference
 * only: the positions are written in place, so no gradient flows through the cache).
 *
 * Each layer's keys and values live in storage [batch, kvHeads, capacity, headDim] that extend
 * writes into (one strided write each), rather than a new tensor of every position each token;
 * the attention (ops/nn.ts attention) reads the storage up to each query's position. The storage
 * doubles when a forward needs more room (a copy of what it holds).
 */
export class KvCache implements TensorContainer {
  keys: (Tensor | undefined)[] = [];
  values: (Tensor | undefined)[] = [];
  /** Positions written per layer. */
  private lengths: number[] = [];
  private readonly initial: number;

  constructor(opts: KvCacheOptions = {}) {
    const c = opts.capacity ?? 64;
    if (!(Number.isInteger(c) && c >= 1)) throw new ValueError(`KvCache: capacity must be a positive integer, got ${c}`);
    this.initial = c;
  }

  /** Positions held (by the first layer: the others catch up within a forward). */
  get length(): number { return this.lengths[0] ?? 0; }
  /** Positions the storage has room for (0 before the first extend). */
  get capacity(): number { return this.keys[0]?.shape[2] ?? 0; }

  /**
   * Writes k/v [batch, kvHeads, t, headDim] of layer i after its earlier positions; returns the
   * layer's whole storage [batch, kvHeads, capacity, headDim] (owned by the cache; positions from
   * the length on are zeros).
   */
  extend(i: number, k: Tensor, v: Tensor): [Tensor, Tensor] {
    noGradFor(k, v);
    const [B, H, T, D] = k.shape;
    const [ck, cv] = this.reserve(i, B, H, T, D, k);
    const past = this.lengths[i] ?? 0;
    writeAt(ck, k, past);
    writeAt(cv, v, past);
    this.lengths[i] = past + T;
    return [ck, cv];
  }

  /**
   * Layer i's attention input from its projections q [batch, t, qHeads·headDim] and k, v [batch,
   * t, kvHeads·headDim]: rope(q) as [batch, qHeads, t, headDim], and the storages after writing
   * rope(k) and v (as extend). One kernel where the backend has Backend.ropeAppend and q needs no
   * gradient; otherwise the heads' transposes, rope on q and k, then extend: the same values.
   */
  extendRoped(i: number, q: Tensor, k: Tensor, v: Tensor, heads: { q: number; kv: number }, ropeOpts: RopeOptions): [Tensor, Tensor, Tensor] {
    noGradFor(k, v);
    const [B, T, qw] = q.shape;
    const D = qw / heads.q;
    if (q.rank !== 3 || !Number.isInteger(D) || D % 2 || k.rank !== 3 || k.shape[0] !== B || k.shape[1] !== T || k.shape[2] !== heads.kv * D || v.rank !== 3 || v.shape.some((n, a) => n !== k.shape[a])) {
      throw new ShapeError(`KvCache: q ${describeShape(q.shape)}, k ${describeShape(k.shape)} and v ${describeShape(v.shape)} are not [batch, t, heads · headDim] of ${heads.q} and ${heads.kv} heads of one even headDim`);
    }
    const be = q.backend;
    const fused = be.ropeAppend && !(isGradEnabled() && q.requiresGrad) && k.backend === be && v.backend === be && [q, k, v].every((x) => x.dtype === 'f32');
    if (!fused) {
      const split = (y: Tensor, n: number) => transpose(reshape(y, [B, T, n, D]), [0, 2, 1, 3]);
      const [ck, cv] = this.extend(i, rope(split(k, heads.kv), ropeOpts), split(v, heads.kv));
      return [rope(split(q, heads.q), ropeOpts), ck, cv];
    }
    const theta = ropeOpts.theta ?? 10000;
    const offset = ropeOpts.offset ?? 0;
    if (!(theta > 0)) throw new ValueError(`rope: theta must be > 0, got ${theta}`);
    const [ck, cv] = this.reserve(i, B, heads.kv, T, D, k);
    const at = this.lengths[i] ?? 0;
    const d = { batch: B, t: T, qHeads: heads.q, kvHeads: heads.kv, dim: D, capacity: ck.shape[2], at, offset, theta, style: ropeOpts.style ?? 'half' } as const;
    const y = out(be, be.ropeAppend!(q.handle, k.handle, v.handle, ck.handle, cv.handle, d), [B, heads.q, T, D]);
    this.lengths[i] = at + T;
    return [y, ck, cv];
  }

  /** Layer i's storages with room for t more positions of [B, H, ·, D] (made or doubled as needed). */
  private reserve(i: number, B: number, H: number, T: number, D: number, like: Tensor): [Tensor, Tensor] {
    const past = this.lengths[i] ?? 0;
    let ck = this.keys[i];
    let cv = this.values[i];
    if (ck && (ck.shape[0] !== B || ck.shape[1] !== H || ck.shape[3] !== D)) {
      throw new ShapeError(`KvCache: layer ${i} holds ${describeShape(ck.shape)}, extended with ${describeShape([B, H, T, D])}`);
    }
    if (!ck || !cv || past + T > ck.shape[2]) {
      const cap = Math.max(past + T, ck ? 2 * ck.shape[2] : this.initial);
      [ck, cv] = [grown(ck, [B, H, cap, D], like), grown(cv, [B, H, cap, D], like)];
      this.keys[i]?.dispose();
      this.values[i]?.dispose();
      this.keys[i] = ck;
      this.values[i] = cv;
    }
    return [ck, cv];
  }

  tensors(): Tensor[] { return [...this.keys, ...this.values].filter((t): t is Tensor => !!t); }
  dispose(): void {
    for (const t of this.tensors()) t.dispose();
    this.keys = [];
    this.values = [];
    this.lengths = [];
  }
}

/** Keys and values may not require grad under grad mode: the cache writes them in place. */
function noGradFor(k: Tensor, v: Tensor): void {
  if (isGradEnabled() && (k.requiresGrad || v.requiresGrad)) {
    throw new ValueError('KvCache: keys and values that require grad (the cache writes in place, so no gradient would reach them): decode under noGrad');
  }
}

/** New zeroed storage of `shape` [B, H, cap, D] (like's dtype and backend), holding old's (if any). */
function grown(old: Tensor | undefined, shape: number[], like: Tensor): Tensor {
  const t = keep(zeros(shape, like.dtype, like.backend));
  if (old) writeAt(t, old, 0);
  return t;
}

/** Writes src [B, H, t, D] into storage dst [B, H, cap, D] at positions at..at+t (in place). */
function writeAt(dst: Tensor, src: Tensor, at: number): void {
  const [, H, cap, D] = dst.shape;
  dst.backend.writeStrided(dst.handle, dst.dtype, src.handle, at * D, [H * cap * D, cap * D, D, 1], [...src.shape]);
}

export class LlamaModel implements TensorContainer {
  constructor(
    readonly config: LlamaConfig,
    readonly embed: Tensor,
    readonly blocks: LlamaBlock[],
    readonly norm: Tensor,
    /** undefined when the head is tied to the embedding. */
    readonly lmHead?: LinearLayer,
  ) {}

  /** Builds the model from a weight source, checking every shape against the config. */
  static fromWeights(config: LlamaConfig, src: WeightSource, backend: Backend = getBackend()): LlamaModel {
    const c = config;
    const t = (name: string, shape: number[]): Tensor => tensor(src.read(name, shape), shape, 'f32', backend);
    const linear = (name: string, out: number, inp: number, bias: boolean): Linear =>
      new Linear(t(`${name}.weight`, [out, inp]), bias ? t(`${name}.bias`, [out]) : undefined);
    const qDim = c.numHeads * c.headDim;
    const kvDim = c.numKvHeads * c.headDim;
    const H = c.hiddenSize;
    const I = c.intermediateSize;
    const blocks: LlamaBlock[] = [];
    for (let i = 0; i < c.numLayers; i++) {
      const p = `model.layers.${i}`;
      blocks.push({
        inputNorm: t(`${p}.input_layernorm.weight`, [H]),
        q: linear(`${p}.self_attn.q_proj`, qDim, H, c.attentionBias),
        k: linear(`${p}.self_attn.k_proj`, kvDim, H, c.attentionBias),
        v: linear(`${p}.self_attn.v_proj`, kvDim, H, c.attentionBias),
        o: linear(`${p}.self_attn.o_proj`, H, qDim, false),
        postNorm: t(`${p}.post_attention_layernorm.weight`, [H]),
        gate: linear(`${p}.mlp.gate_proj`, I, H, false),
        up: linear(`${p}.mlp.up_proj`, I, H, false),
        down: linear(`${p}.mlp.down_proj`, H, I, false),
      });
    }
    const embed = t('model.embed_tokens.weight', [c.vocabSize, H]);
    const norm = t('model.norm.weight', [H]);
    const head = c.tieWordEmbeddings ? undefined : linear('lm_head', c.vocabSize, H, false);
    return new LlamaModel(config, embed, blocks, norm, head);
  }

  /**
   * Every tensor under its Hugging Face name, projections as dense weights (a quantized layer's
   * dequantized weight with its adapter merged). The third element marks tensors made for the
   * caller, who disposes them; the others belong to the model.
   */
  namedTensors(): [string, Tensor, boolean][] {
    const out: [string, Tensor, boolean][] = [['model.embed_tokens.weight', this.embed, false]];
    const dense = (name: string, layer: LinearLayer): void => {
      const { weight, bias, owned } = layer.dense();
      out.push([`${name}.weight`, weight, !!owned]);
      if (bias) out.push([`${name}.bias`, bias, !!owned]);
    };
    this.blocks.forEach((b, i) => {
      const p = `model.layers.${i}`;
      out.push([`${p}.input_layernorm.weight`, b.inputNorm, false]);
      for (const [key, module] of Object.entries(PROJECTIONS) as [ProjectionName, string][]) dense(`${p}.${module}`, b[key]);
      out.push([`${p}.post_attention_layernorm.weight`, b.postNorm, false]);
    });
    out.push(['model.norm.weight', this.norm, false]);
    if (this.lmHead) dense('lm_head', this.lmHead);
    return out;
  }

  /** Final hidden states [batch, seq, hidden] (after the last RMSNorm) for i32 ids [batch, seq]. */
  hidden(ids: Tensor, cache?: KvCache): Tensor {
    if (ids.rank !== 2 || ids.dtype !== 'i32') throw new ShapeError(`LlamaModel: ids must be i32 [batch, seq], got ${ids.dtype} ${describeShape(ids.shape)}`);
    const past = cache?.length ?? 0;
    if (past + ids.shape[1] > this.config.maxPositions) {
      throw new ValueError(`LlamaModel: ${past + ids.shape[1]} positions exceed the model's ${this.config.maxPositions}`);
    }
    const eps = this.config.rmsNormEps;
    let x = gather(this.embed, ids);
    // each block's residual sum and the next norm (the next block's input norm, then the final
    // one) in one pass: blockStep with nextNorm
    let h = rmsnorm(x, this.blocks[0]?.inputNorm ?? this.norm, eps);
    this.blocks.forEach((_, i) => {
      const [nx, nh] = tidy(() => this.blockStep(i, x, h, this.blocks[i + 1]?.inputNorm ?? this.norm, past, cache));
      x.dispose(); // autograd keeps its own references where it needs them
      h.dispose();
      [x, h] = [nx, nh!];
    });
    x.dispose();
    return h;
  }

  /** Logits [batch, seq, vocab]. */
  logits(ids: Tensor, cache?: KvCache): Tensor {
    return tidy(() => this.head(this.hidden(ids, cache)));
  }

  /** The output head applied to hidden states [..., hidden]. */
  head(h: Tensor): Tensor {
    return this.lmHead ? this.lmHead.forward(h) : matmul(h, this.embed, { transB: true });
  }

  /** Mean next-token NLL of ids [batch, seq] (positions 1.. predicted from their prefixes). */
  loss(ids: Tensor): Tensor {
    return tidy(() => {
      const [b, s] = ids.shape;
      const logits = this.logits(ids);
      const pred = slice(logits, [0, 0, 0], [b, s - 1, -1]);
      const targets = slice(ids, [0, 1], [b, s - 1]);
      return crossEntropy(pred, targets);
    });
  }

  /** Block `layer` applied to hidden states x [batch, seq, hidden] (positions past..). */
  blockForward(layer: number, x: Tensor, past = 0, cache?: KvCache): Tensor {
    return this.blockStep(layer, x, rmsnorm(x, this.blocks[layer].inputNorm, this.config.rmsNormEps), undefined, past, cache)[0];
  }

  /** Block `layer` on x, given h = its input norm of x: the block's output and, with nextNorm, the
   *  RMSNorm of that output under nextNorm, from the last residual add in the same pass (addRmsnorm). */
  private blockStep(layer: number, x: Tensor, h: Tensor, nextNorm: Tensor | undefined, past: number, cache?: KvCache): [Tensor, Tensor | undefined] {
    const b = this.blocks[layer];
    const c = this.config;
    const [B, T] = x.shape;
    const D = c.headDim;
    const groups = c.numHeads / c.numKvHeads;
    const heads = (y: Tensor, n: number): Tensor => transpose(reshape(y, [B, T, n, D]), [0, 2, 1, 3]);
    const ropeOpts = { theta: c.ropeTheta, offset: past, style: 'half' as const };
    // q, k and v (and below gate and up with silu·mul) in one kernel where the backend has it
    const [pq, pk, pv] = forwardMany(h, [b.q, b.k, b.v]);
    let q: Tensor, k: Tensor, v: Tensor;
    if (cache) [q, k, v] = cache.extendRoped(layer, pq, pk, pv, { q: c.numHeads, kv: c.numKvHeads }, ropeOpts);
    else [q, k, v] = [rope(heads(pq, c.numHeads), ropeOpts), rope(heads(pk, c.numKvHeads), ropeOpts), heads(pv, c.numKvHeads)];
    const S = k.shape[2]; // with a cache: its capacity (attention reads the positions up to each query's)
    // grouped-query attention without copies: the query heads sharing a kv head are rows of one block
    const o = attention(reshape(q, [B * c.numKvHeads, groups * T, D]), reshape(k, [B * c.numKvHeads, S, D]), reshape(v, [B * c.numKvHeads, S, D]), { t: T, past, scale: 1 / Math.sqrt(D) });
    const attn = reshape(transpose(reshape(o, [B, c.numHeads, T, D]), [0, 2, 1, 3]), [B, T, c.numHeads * D]);
    const [x1, h2] = addRmsnorm(x, b.o.forward(attn), b.postNorm, c.rmsNormEps);
    const mlp = b.down.forward(forwardMany(h2, [b.gate, b.up], true)[0]);
    return nextNorm ? addRmsnorm(x1, mlp, nextNorm, c.rmsNormEps) : [add(x1, mlp), undefined];
  }

  tensors(): Tensor[] {
    const out = new Set<Tensor>([this.embed, this.norm]);
    for (const b of this.blocks) {
      out.add(b.inputNorm); out.add(b.postNorm);
      for (const key of Object.keys(PROJECTIONS) as ProjectionName[]) for (const t of b[key].tensors()) out.add(t);
    }
    if (this.lmHead) for (const t of this.lmHead.tensors()) out.add(t);
    return [...out];
  }

  dispose(): void { for (const t of this.tensors()) t.dispose(); }
}
