// The LoRA branch of a linear layer: y = scaling · B · (A · x), with IR-QLoRA's elastic
// connections (IEC) as an option.
//
// IEC adds two trained scalars per layer, βA and βB (init 0):
//   xa = A·x + βA · meanA(x)      meanA: [.., in] -> [.., r]
//   y  = scaling · (B·xa + βB · expandB(xa))      expandB: [.., r] -> [.., out]
// meanA splits the input into g = gcd(in, r) contiguous groups, takes each group's mean and repeats
// it r/g times (with r | in: the mean of each of the r groups). expandB splits the rank vector into
// g = gcd(r, out) groups, takes each group's mean and repeats it out/g times (with r | out: each
// element repeated out/r times, contiguous). Both are linear maps, so IEC merges exactly into
// plain factors (merged()): A' = A + βA·M_A, B' = B + βB·M_B and y = scaling · B'·A'·x, which any
// LoRA runtime can load.

import { ShapeError, ValueError, describeShape } from '../errors.js';
import { add, affine, mul } from '../ops/arithmetic.js';
import { matmul } from '../ops/matmul.js';
import { mean } from '../ops/reduce.js';
import { reshape } from '../ops/shape.js';
import { gcd, type Backend } from '../backend.js';
import { noGrad } from '../autograd.js';
import { gaussianArray, ones, rng, Rng, tensor, tidy, type Tensor, type TensorContainer } from '../tensor.js';

export type LoraInit = 'kaiming' | 'gaussian';

export interface LoraOptions {
  rank: number;
  /** scaling = alpha / rank; default alpha = rank (scaling 1). */
  alpha?: number;
  /** Dropout probability on the branch's input while training (0 = none). */
  dropout?: number;
  /** IR-QLoRA's elastic connections. */
  iec?: boolean;
  /** A's initialization (B starts at 0): PEFT's kaiming-uniform (a = √5) or N(0, 1/rank). */
  init?: LoraInit;
  seed?: number;
}


export class Lora implements TensorContainer {
  readonly rank: number;
  readonly alpha: number;
  readonly dropout: number;
  /** Dropout applies only while training is set (by the trainers). */
  training = false;
  /** Dropout's generator (its state goes into training checkpoints). */
  readonly dropRng: Rng;

  constructor(
    /** [rank, in] */
    readonly a: Tensor,
    /** [out, rank] */
    readonly b: Tensor,
    opts: { alpha?: number; dropout?: number; seed?: number } = {},
    /** IEC scalars [1] each, or undefined without IEC. */
    readonly iec?: { betaA: Tensor; betaB: Tensor },
  ) {
    if (a.rank !== 2 || b.rank !== 2 || b.shape[1] !== a.shape[0]) {
      throw new ShapeError(`Lora: expected A [r, in] and B [out, r], got ${describeShape(a.shape)} and ${describeShape(b.shape)}`);
    }
    this.rank = a.shape[0];
    this.alpha = opts.alpha ?? this.rank;
    this.dropout = opts.dropout ?? 0;
    if (!(this.dropout >= 0 && this.dropout < 1)) throw new ValueError(`Lora: dropout must be in [0, 1), got ${this.dropout}`);
    if (!(this.alpha > 0) || !Number.isFinite(this.alpha)) throw new ValueError(`Lora: alpha must be a positive number, got ${this.alpha}`);
    this.dropRng = new Rng((opts.seed ?? 0) ^ 0x5eed);
  }

  /** A fresh branch for a [out, in] layer: A initialized, B = 0, IEC scalars 0. */
  static create(inFeatures: number, outFeatures: number, opts: LoraOptions, backend: Backend): Lora {
    const r = opts.rank;
    if (!Number.isInteger(r) || r < 1 || r > Math.min(inFeatures, outFeatures)) {
      throw new ValueError(`Lora: rank must be an integer in [1, ${Math.min(inFeatures, outFeatures)}] for a [${outFeatures}, ${inFeatures}] layer, got ${r}`);
    }
    const seed = opts.seed ?? 0;
    const next = rng(seed);
    const av = new Float32Array(r * inFeatures);
    if ((opts.init ?? 'kaiming') === 'kaiming') {
      const bound = 1 / Math.sqrt(inFeatures); // kaiming_uniform_(a=√5): √(6 / ((1 + 5) · fan_in))
      for (let i = 0; i < av.length; i++) av[i] = (2 * next() - 1) * bound;
    } else {
      av.set(gaussianArray(av.length, seed, 1 / r));
    }
    const a = tensor(av, [r, inFeatures], 'f32', backend).requireGrad();
    const b = tensor(new Float32Array(outFeatures * r), [outFeatures, r], 'f32', backend).requireGrad();
    const iec = opts.iec
      ? { betaA: tensor([0], [1], 'f32', backend).requireGrad(), betaB: tensor([0], [1], 'f32', backend).requireGrad() }
      : undefined;
    return new Lora(a, b, { alpha: opts.alpha, dropout: opts.dropout, seed }, iec);
  }

  get inFeatures(): number { return this.a.shape[1]; }
  get outFeatures(): number { return this.b.shape[0]; }
  get scaling(): number { return this.alpha / this.rank; }

  /** The trainable tensors: A, B (and βA, βB with IEC). */
  parameters(): Tensor[] {
    return this.iec ? [this.a, this.b, this.iec.betaA, this.iec.betaB] : [this.a, this.b];
  }

  /** scaling · B · A · x (+ IEC), x [..., in] -> [..., out]. */
  forward(x: Tensor): Tensor {
    if (x.shape[x.rank - 1] !== this.inFeatures) {
      throw new ShapeError(`Lora: input ${describeShape(x.shape)} must end in ${this.inFeatures} features`);
    }
    const xin = this.training && this.dropout > 0 ? this.drop(x) : x;
    let xa = matmul(xin, this.a, { transB: true });
    if (this.iec) xa = add(xa, mul(groupMean(xin, this.rank), this.iec.betaA));
    let y = matmul(xa, this.b, { transB: true });
    if (this.iec) y = add(y, mul(groupMean(xa, this.outFeatures), this.iec.betaB));
    return this.scaling === 1 ? y : affine(y, this.scaling);
  }

  /** What forward() computes, as factors: scaling · (x · Aᵀ + IEC's βA term) · Bᵀ (+ its βB term),
   *  when no dropout applies (undefined in training mode with dropout). The tensors are the
   *  branch's own. */
  factors(): { a: Tensor; b: Tensor; scale: number; iec?: { betaA: Tensor; betaB: Tensor } } | undefined {
    return this.training && this.dropout > 0 ? undefined : { a: this.a, b: this.b, scale: this.scaling, iec: this.iec };
  }

  /** Plain factors with IEC folded in (new tensors): scaling · B'·A' equals forward() (Eq. 16 of IR-QLoRA). */
  merged(): { a: Tensor; b: Tensor } {
    return noGrad(() => {
      if (!this.iec) return { a: affine(this.a, 1), b: affine(this.b, 1) };
      const [betaA] = this.iec.betaA.dataSync();
      const [betaB] = this.iec.betaB.dataSync();
      const be = this.a.backend;
      return tidy(() => ({
        a: add(this.a, tensor(groupMeanMatrix(this.inFeatures, this.rank, betaA), this.a.shape, 'f32', be)),
        b: add(this.b, tensor(groupMeanMatrix(this.rank, this.outFeatures, betaB), this.b.shape, 'f32', be)),
      }));
    });
  }

  /** scaling · B'·A' as a dense [out, in] weight delta. */
  delta(): Tensor {
    return tidy(() => {
      const { a, b } = this.merged();
      return affine(matmul(b, a), this.scaling);
    });
  }

  private drop(x: Tensor): Tensor {
    const keepP = 1 - this.dropout;
    const mask = new Float32Array(x.size);
    for (let i = 0; i < mask.length; i++) mask[i] = this.dropRng.next() < keepP ? 1 / keepP : 0;
    return mul(x, tensor(mask, x.shape, 'f32', x.backend));
  }

  tensors(): Tensor[] { return this.parameters(); }
  dispose(): void { for (const t of this.tensors()) t.dispose(); }
}

/** x [..., n] -> [..., m]: n split into g = gcd(n, m) groups, each group's mean repeated m/g times. */
export function groupMean(x: Tensor, m: number): Tensor {
  const n = x.shape[x.rank - 1];
  const g = gcd(n, m);
  const lead = x.shape.slice(0, -1);
  const means = mean(reshape(x, [...lead, g, n / g]), -1, { keepDims: true }); // [..., g, 1]
  const rep = m / g === 1 ? means : mul(means, ones([g, m / g], x.backend));
  return reshape(rep, [...lead, m]);
}

/** The [m, n] matrix of groupMean scaled by beta: row j averages the input group j / (m/g). */
export function groupMeanMatrix(n: number, m: number, beta: number): Float32Array {
  const g = gcd(n, m);
  const inPer = n / g;
  const outPer = m / g;
  const w = new Float32Array(m * n);
  for (let j = 0; j < m; j++) {
    const grp = Math.floor(j / outPer);
    for (let c = grp * inPer; c < (grp + 1) * inPer; c++) w[j * n + c] = beta / inPer;
  }
  return w;
}
