// The one optimizer step every method uses: losses of one or more micro-batches (gradients
// accumulated), global-norm clipping, the NaN/Inf guard (a bad step is skipped and the learning
// rate lowered), then the update. Returns the mean loss, or undefined for a skipped step.

import { grad } from '../autograd.js';
import { add, affine, square, sub } from '../ops/arithmetic.js';
import { mean } from '../ops/reduce.js';
import { keep, tidy, type Tensor } from '../tensor.js';
import { clipGradNorm } from '../train/clip.js';
import type { NanGuard } from '../train/guard.js';
import type { AdamW } from '../train/optim.js';
import { readF32 } from '../train/tensors.js';

export interface StepOptions {
  /** Global gradient-norm limit (none when undefined). */
  clip?: number;
  guard: NanGuard;
  /** Learning-rate multiplier from the schedule (the guard's own factor is applied on top). */
  lrScale?: number;
}

/** One update from the mean of the micro-batch losses. */
export function trainStep(opt: AdamW, microLosses: (() => Tensor)[], opts: StepOptions): { loss: number; applied: boolean } {
  const params = opt.params();
  const n = microLosses.length;
  let total = 0;
  let grads: (Tensor | null)[] = params.map(() => null);
  for (const lossFn of microLosses) {
    tidy(() => {
      const loss = lossFn();
      total += readF32(loss, 'trainStep')[0];
      const gs = grad(n === 1 ? loss : affine(loss, 1 / n), params);
      grads = grads.map((prev, i) => {
        const g = gs[i];
        if (!g) return prev;
        if (!prev) return keep(g);
        const s = keep(add(prev, g));
        prev.dispose();
        return s;
      });
    });
  }
  const loss = total / n;
  try {
    const norm = opts.clip !== undefined ? clipGradNorm(grads, opts.clip) : undefined;
    const ok = opts.guard.check(loss, norm ?? grads);
    if (ok) {
      opt.setLrScale((opts.lrScale ?? 1) * opts.guard.lrScale);
      opt.step(grads);
    }
    return { loss, applied: ok };
  } finally {
    for (const g of grads) g?.dispose();
  }
}

/** Mean squared difference of two tensors of one shape. */
export function mse(a: Tensor, b: Tensor): Tensor {
  return mean(square(sub(a, b)));
}
