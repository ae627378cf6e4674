// The one optimizer step every method uses: losses of one or more micro-batches (gradients
// accumulated), global-norm clipping, the NaN/Inf guard (a bad step is skipped and the learning
// rate lowered), then the update. Returns the mean loss, or undefined for a skipped step.

import { grad } from '../autograd.js';
import { add, affine, square, sub } from '../ops/arithmetic.js';
import { mean } from '../ops/reduce.js';
import { keep, tidy, type Tensor } from '../tensor.js';
import { checkMaxNorm, clipToNorm } from '../train/clip.js';
import type { NanGuard } from '../train/guard.js';
import type { AdamW } from '../train/optim.js';
import { hostSums } from '../train/tensors.js';

export interface StepOptions {
  /** Global gradient-norm limit (none when undefined). */
  clip?: number;
  guard: NanGuard;
  /** Learning-rate multiplier from the schedule (the guard's own factor is applied on top). */
  lrScale?: number;
}

/** One update from the mean of the micro-batch losses. */
export function trainStep(opt: AdamW, microLosses: (() => Tensor)[], opts: StepOptions): { loss: number; applied: boolean } {
  if (opts.clip !== undefined) checkMaxNorm(opts.clip);
  const params = opt.params();
  const n = microLosses.length;
  let grads: (Tensor | null)[] = params.map(() => null);
  const losses: Tensor[] = [];
  try {
    for (const lossFn of microLosses) {
      tidy(() => {
        const loss = lossFn();
        losses.push(keep(loss));
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
    // one read for the step (a GPU waits once): the micro-batch losses, then per gradient its sum
    // of squares (the norm for clipping) or 0·sum (finite iff every element is: the NaN guard)
    const at = grads.flatMap((g, i) => (g ? [i] : []));
    const clip = opts.clip;
    const sums = hostSums([...losses, ...at.map((i) => grads[i]!)], (t, i) => (i < n ? t : clip !== undefined ? square(t) : affine(t, 0)), 'trainStep');
    let total = 0;
    for (let i = 0; i < n; i++) total += sums[i];
    const loss = total / n;
    let checked: number | { firstNonFinite: number };
    if (clip !== undefined) {
      let sq = 0;
      for (let i = n; i < sums.length; i++) sq += sums[i];
      checked = clipToNorm(grads, clip, Math.sqrt(sq));
    } else {
      const bad = sums.subarray(n).findIndex((v) => !Number.isFinite(v));
      checked = { firstNonFinite: bad < 0 ? -1 : at[bad] };
    }
    const ok = opts.guard.check(loss, checked);
    if (ok) {
      opt.setLrScale((opts.lrScale ?? 1) * opts.guard.lrScale);
      opt.step(grads);
    }
    return { loss, applied: ok };
  } finally {
    for (const g of grads) g?.dispose();
    for (const l of losses) l.dispose();
  }
}

/** Mean squared difference of two tensors of one shape. */
export function mse(a: Tensor, b: Tensor): Tensor {
  return mean(square(sub(a, b)));
}
