// Linear layers. The model talks to every projection through LinearLayer, so a quantized layer
// (packed weight + LoRA, later issues) can replace a dense one without the model knowing.

import { ShapeError, describeShape } from '../errors.js';
import { add } from '../ops/arithmetic.js';
import { matmul } from '../ops/matmul.js';
import type { Tensor, TensorContainer } from '../tensor.js';

export interface DenseWeights {
  weight: Tensor;
  bias?: Tensor;
  owned?: boolean;
}

export interface LinearLayer extends TensorContainer {
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** x [..., in] -> [..., out]. */
  forward(x: Tensor): Tensor;
  /** The float weight [out, in] and bias [out] this layer computes with (for export). With
   *  `owned`, the tensors were made for the caller (e.g. dequantized), who disposes them. */
  dense(): DenseWeights;
  dispose(): void;
}

/** y = x · Wᵀ + b with a float weight [out, in] (the PyTorch layout). */
export class Linear implements LinearLayer {
  readonly inFeatures: number;
  readonly outFeatures: number;

  constructor(readonly weight: Tensor, readonly bias?: Tensor) {
    if (weight.rank !== 2) throw new ShapeError(`Linear: weight must be [out, in], got ${describeShape(weight.shape)}`);
    [this.outFeatures, this.inFeatures] = weight.shape;
    if (bias && (bias.rank !== 1 || bias.shape[0] !== this.outFeatures)) {
      throw new ShapeError(`Linear: bias must be [${this.outFeatures}], got ${describeShape(bias.shape)}`);
    }
  }

  forward(x: Tensor): Tensor {
    if (x.shape[x.rank - 1] !== this.inFeatures) {
      throw new ShapeError(`Linear: input ${describeShape(x.shape)} must end in ${this.inFeatures} features`);
    }
    const y = matmul(x, this.weight, { transB: true });
    return this.bias ? add(y, this.bias) : y;
  }

  dense(): DenseWeights {
    return { weight: this.weight, bias: this.bias };
  }

  tensors(): Tensor[] {
    return this.bias ? [this.weight, this.bias] : [this.weight];
  }

  dispose(): void {
    for (const t of this.tensors()) t.dispose();
  }
}
