// A NaN/Inf guard for training loops. Before each optimizer step the trainer asks check(loss,
// grads): a step whose loss or gradients are not all finite is to be skipped; each skip multiplies
// the guard's lrScale by `lrFactor` (the trainer applies it: opt.setLrScale(schedule(t) *
// guard.lrScale)), and `maxConsecutive` bad steps in a row throw TrainingDivergedError.

import { ValueError } from '../errors.js';
import { affine } from '../ops/arithmetic.js';
import { Tensor } from '../tensor.js';
import { TrainingDivergedError, type SkippedStep } from './errors.js';
import type { Gradients } from './optim.js';
import { hostSums, readF32 } from './tensors.js';

export interface GuardOptions {
  /** lrScale multiplier per skipped step (default 0.5). */
  lrFactor?: number;
  /** Consecutive non-finite steps that abort training (default 5). */
  maxConsecutive?: number;
}

/** What a checkpoint needs to resume a guard (JSON-serializable). */
export interface GuardState {
  checked: number;
  consecutive: number;
  lrScale: number;
  skipped: SkippedStep[];
}

/** Index of the first tensor holding NaN/±Inf (−1 when none): one reduction per tensor on its
 *  backend and a single read of all the results (a GPU waits once, not once per tensor). */
function firstNonFinite(ts: readonly (Tensor | null | undefined)[]): number {
  const idx = ts.flatMap((t, i) => (t ? [i] : []));
  if (idx.length === 0) return -1;
  // 0·x is 0 for finite x and NaN for NaN/±Inf, so the sum is finite iff every element is
  const flags = hostSums(idx.map((i) => ts[i]!), (t) => affine(t, 0), 'NanGuard');
  const bad = flags.findIndex((v) => !Number.isFinite(v));
  return bad < 0 ? -1 : idx[bad];
}

export class NanGuard {
  readonly lrFactor: number;
  readonly maxConsecutive: number;
  /** Multiplier for the learning rate, lowered by every skipped step. */
  lrScale = 1;
  /** Non-finite steps in a row (reset by a finite one). */
  consecutive = 0;
  /** check() calls so far. */
  checked = 0;
  /** Every skipped step, oldest first. */
  skipped: SkippedStep[] = [];

  constructor(opts: GuardOptions = {}) {
    this.lrFactor = opts.lrFactor ?? 0.5;
    this.maxConsecutive = opts.maxConsecutive ?? 5;
    if (!(this.lrFactor > 0 && this.lrFactor <= 1)) throw new ValueError(`NanGuard: lrFactor must be in (0, 1], got ${this.lrFactor}`);
    if (!Number.isInteger(this.maxConsecutive) || this.maxConsecutive < 1) throw new ValueError(`NanGuard: maxConsecutive must be a positive integer, got ${this.maxConsecutive}`);
  }

  /**
   * True when the step may be applied. `grads` are the gradients (missing ones skipped), an
   * already computed gradient norm (clipGradNorm's result), or the index of the first non-finite
   * gradient (-1: none) where the caller read that itself. `step` labels the report (default:
   * the number of earlier checks). Throws TrainingDivergedError on the maxConsecutive-th bad step.
   */
  check(loss: number | Tensor, grads?: Gradients | number | { firstNonFinite: number }, step = this.checked): boolean {
    this.checked++;
    const lossValue = loss instanceof Tensor ? readF32(loss, 'NanGuard.check').reduce((a, b) => a + b, 0) : loss;
    let reason: string | undefined;
    if (!Number.isFinite(lossValue)) reason = `loss ${lossValue}`;
    else if (typeof grads === 'number') {
      if (!Number.isFinite(grads)) reason = `gradient norm ${grads}`;
    } else if (grads && 'firstNonFinite' in grads) {
      if (grads.firstNonFinite >= 0) reason = `gradient ${grads.firstNonFinite} not finite`;
    } else if (grads) {
      const list = grads instanceof Map ? [...grads.values()] : grads;
      const bad = firstNonFinite(list);
      if (bad >= 0) reason = `gradient ${bad} not finite`;
    }
    if (reason === undefined) {
      this.consecutive = 0;
      return true;
    }
    this.consecutive++;
    this.lrScale *= this.lrFactor;
    this.skipped.push({ step, reason, loss: lossValue, lrScale: this.lrScale });
    if (this.consecutive >= this.maxConsecutive) {
      const report = this.report();
      throw new TrainingDivergedError(`training diverged: ${this.consecutive} consecutive non-finite steps (last at step ${step}: ${reason}).\n${report}`, [...this.skipped], report);
    }
    return false;
  }

  /** A few lines for the trainer to print. */
  report(): string {
    if (!this.skipped.length) return `no skipped steps in ${this.checked}`;
    const lines = this.skipped.slice(-20).map((s) => `  step ${s.step}: ${s.reason} (lr scale then ${s.lrScale})`);
    const more = this.skipped.length > 20 ? [`  (${this.skipped.length - 20} earlier not shown)`] : [];
    return [`skipped ${this.skipped.length} of ${this.checked} steps as non-finite; lr scale now ${this.lrScale}`, ...more, ...lines].join('\n');
  }

  state(): GuardState {
    return { checked: this.checked, consecutive: this.consecutive, lrScale: this.lrScale, skipped: this.skipped.map((s) => ({ ...s })) };
  }

  loadState(s: GuardState): void {
    if (!s || !Number.isInteger(s.checked) || !Number.isInteger(s.consecutive) || !(s.lrScale > 0) || !Array.isArray(s.skipped)) {
      throw new ValueError(`NanGuard.loadState: not a guard state: ${JSON.stringify(s)}`);
    }
    this.checked = s.checked;
    this.consecutive = s.consecutive;
    this.lrScale = s.lrScale;
    this.skipped = s.skipped.map((x) => ({ ...x, loss: x.loss ?? NaN })); // JSON writes NaN as null
  }
}
