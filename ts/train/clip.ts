// Global-norm gradient clipping (torch.nn.utils.clip_grad_norm_): the 2-norm over all gradients
// together; when it exceeds maxNorm every gradient is scaled in place by maxNorm / (norm + 1e-6).

import { noGrad } from '../autograd.js';
import { ValueError } from '../errors.js';
import { affine, square } from '../ops/arithmetic.js';
import { tidy, type Tensor } from '../tensor.js';
import type { Gradients } from './optim.js';
import { assignInPlace, hostSums } from './tensors.js';

function present(grads: Gradients): Tensor[] {
  const list = grads instanceof Map ? [...grads.values()] : grads;
  return list.filter((g): g is Tensor => !!g);
}

/** The global 2-norm of the gradients (missing ones skipped); NaN/Infinity if any value is. */
export function gradNorm(grads: Gradients): number {
  const list = present(grads);
  if (list.length === 0) return 0;
  // one read for all the per-gradient sums (a GPU would otherwise wait once per gradient); they
  // are added on the host in float64, in order, as before
  const sums = hostSums(list, square, 'gradNorm');
  let total = 0;
  for (const s of sums) total += s;
  return Math.sqrt(total);
}

/**
 * Scales the gradients in place so that their global norm is at most maxNorm; returns the norm
 * before clipping. A non-finite norm leaves the gradients untouched (the NaN guard skips the step).
 */
export function clipGradNorm(grads: Gradients, maxNorm: number): number {
  checkMaxNorm(maxNorm);
  return clipToNorm(grads, maxNorm, gradNorm(grads));
}

/** The clipping limit must be a positive number (ValueError otherwise). */
export function checkMaxNorm(maxNorm: number): void {
  if (!(maxNorm > 0)) throw new ValueError(`clipGradNorm: maxNorm must be > 0, got ${maxNorm}`);
}

/** clipGradNorm's scaling for a norm the caller has already computed (gradNorm's value). */
export function clipToNorm(grads: Gradients, maxNorm: number, norm: number): number {
  const coef = maxNorm / (norm + 1e-6);
  if (Number.isFinite(norm) && coef < 1) {
    for (const g of present(grads)) noGrad(() => tidy(() => assignInPlace(g, affine(g, coef))));
  }
  return norm;
}
