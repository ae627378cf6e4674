// A linear layer whose weight is a packed QuantizedTensor, with an optional LoRA branch:
// y = x · dequantize(Q)ᵀ + b + lora(x). The quantized weight is frozen (it gets no gradient); the
// fused dequantizeMatmul kernel computes the product without a float copy of the weight.

import { isGradEnabled, noGrad } from '../autograd.js';
import { ShapeError, describeShape } from '../errors.js';
import { add, affine, siluMul } from '../ops/arithmetic.js';
import { dequantize, dequantizeMatmul, dequantizeMatmulLowRank, dequantizeMatmulMany, type QuantizedTensor } from '../quant/api.js';
import { tidy, type Tensor } from '../tensor.js';
import type { DenseWeights, LinearLayer } from './linear.js';
import type { Lora } from './lora.js';

export class QuantLinear implements LinearLayer {
  readonly inFeatures: number;
  readonly outFeatures: number;

  constructor(
    readonly weight: QuantizedTensor,
    readonly bias?: Tensor,
    /** The adapter; replaceable (initializers swap it), undefined for plain quantization. */
    public lora?: Lora,
  ) {
    if (weight.shape.length !== 2) throw new ShapeError(`QuantLinear: weight must be [out, in], got ${describeShape(weight.shape)}`);
    [this.outFeatures, this.inFeatures] = weight.shape;
    if (bias && (bias.rank !== 1 || bias.shape[0] !== this.outFeatures)) {
      throw new ShapeError(`QuantLinear: bias must be [${this.outFeatures}], got ${describeShape(bias.shape)}`);
    }
    if (lora && (lora.inFeatures !== this.inFeatures || lora.outFeatures !== this.outFeatures)) {
      throw new ShapeError(`QuantLinear: a LoRA branch for [${lora.outFeatures}, ${lora.inFeatures}] does not fit a [${this.outFeatures}, ${this.inFeatures}] weight`);
    }
  }

  /** Throws unless x ends in inFeatures. */
  checkInput(x: Tensor): void {
    if (x.shape[x.rank - 1] !== this.inFeatures) {
      throw new ShapeError(`QuantLinear: input ${describeShape(x.shape)} must end in ${this.inFeatures} features`);
    }
  }

  /** The quantized product alone (no adapter): x · dequantize(Q)ᵀ + b. */
  base(x: Tensor): Tensor {
    this.checkInput(x);
    const y = dequantizeMatmul(x, this.weight);
    return this.bias ? add(y, this.bias) : y;
  }

  forward(x: Tensor): Tensor {
    // at inference (no gradient wanted), the adapter's product (IEC included) rides on the GEMV
    // where the backend has that kernel (one or two kernels instead of four or five)
    const factors = this.lora?.factors();
    if (factors && !isGradEnabled()) {
      this.checkInput(x);
      const y = dequantizeMatmulLowRank(x, this.weight, factors.a, factors.b, factors.scale, factors.iec);
      if (y) return this.bias ? add(y, this.bias) : y;
    }
    const y = this.base(x);
    return this.lora ? add(y, this.lora.forward(x)) : y;
  }

  /** dequantize(Q) + scaling·B'·A' (IEC merged), made for the caller. */
  dense(): DenseWeights {
    return noGrad(() => tidy(() => {
      const w = dequantize(this.weight);
      const weight = this.lora ? add(w, this.lora.delta()) : w;
      return { weight, bias: this.bias ? affine(this.bias, 1) : undefined, owned: true };
    }));
  }

  /** The adapter's trainable tensors (none without an adapter). */
  parameters(): Tensor[] {
    return this.lora?.parameters() ?? [];
  }

  tensors(): Tensor[] {
    const out = [...this.weight.tensors(), ...(this.lora?.tensors() ?? [])];
    if (this.bias) out.push(this.bias);
    return out;
  }

  dispose(): void {
    for (const t of this.tensors()) t.dispose();
  }
}

/** Several layers on the same x (attention's q/k/v, a gated MLP's gate and up): each layer's
 *  forward, or with glu [silu(first) · second]. Where they are all quantized layers (with glu,
 *  without a bias) and either none has an adapter or, at inference (no gradient wanted), all have
 *  plain ones (no IEC, no dropout), one dequantizeMatmulMany: one kernel where the backend has it. */
export function forwardMany(x: Tensor, layers: LinearLayer[], glu = false): Tensor[] {
  const qls = layers.filter((l): l is QuantLinear => l instanceof QuantLinear && !(glu && l.bias));
  const factors = qls.map((l) => l.lora?.factors());
  const plain = qls.every((l) => !l.lora) || (!isGradEnabled() && factors.every((f) => f && !f.iec));
  if (qls.length < layers.length || !plain) {
    const ys = layers.map((l) => l.forward(x));
    return glu ? [consume(ys, () => siluMul(ys[0], ys[1]))] : ys;
  }
  for (const l of qls) l.checkInput(x);
  const lora = factors[0] ? factors.map((f) => ({ a: f!.a, b: f!.b, scale: f!.scale })) : undefined;
  const ys = dequantizeMatmulMany(x, qls.map((l) => l.weight), { glu, lora });
  return glu ? ys : ys.map((y, i) => (qls[i].bias ? consume([y], () => add(y, qls[i].bias!)) : y));
}

/** f()'s result, the tensors `used` disposed after it (autograd keeps what it needs). */
function consume(used: Tensor[], f: () => Tensor): Tensor {
  try {
    return f();
  } finally {
    for (const t of used) t.dispose();
  }
}
