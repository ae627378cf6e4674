// Learning-rate schedules: functions lrAt(step, total) of the 0-based optimizer step and the total
// number of steps. With the default lr = 1 they give a multiplier, for AdamW.setLrScale().
// Warmup is linear from 0 (Hugging Face's get_*_schedule_with_warmup: step 0 gets lr 0).

import { ValueError } from '../errors.js';

export type LrAt = (step: number, total: number) => number;

export interface ScheduleOptions {
  /** Peak learning rate (default 1: the schedule is a multiplier). */
  lr?: number;
  /** Steps of linear warmup from 0 (default 0). */
  warmup?: number;
}

export interface CosineOptions extends ScheduleOptions {
  /** Learning rate at the end of the decay (default 0). */
  minLr?: number;
}

function check(where: string, opts: CosineOptions): { lr: number; warmup: number; minLr: number } {
  const lr = opts.lr ?? 1;
  const warmup = opts.warmup ?? 0;
  const minLr = opts.minLr ?? 0;
  if (!(Number.isFinite(lr) && lr >= 0)) throw new ValueError(`${where}: lr must be a finite number >= 0, got ${lr}`);
  if (!Number.isInteger(warmup) || warmup < 0) throw new ValueError(`${where}: warmup must be a non-negative integer, got ${warmup}`);
  if (!(Number.isFinite(minLr) && minLr >= 0 && minLr <= lr)) throw new ValueError(`${where}: minLr must be in [0, lr=${lr}], got ${minLr}`);
  return { lr, warmup, minLr };
}

function checkStep(where: string, step: number, total: number): void {
  if (!Number.isInteger(step) || step < 0) throw new ValueError(`${where}: step must be a non-negative integer, got ${step}`);
  if (!Number.isInteger(total) || total < 0) throw new ValueError(`${where}: total must be a non-negative integer, got ${total}`);
}

/** lr after an optional linear warmup. */
export function constantLr(opts: ScheduleOptions = {}): LrAt {
  const { lr, warmup } = check('constantLr', opts);
  return (step, total) => {
    checkStep('constantLr', step, total);
    return step < warmup ? (lr * step) / warmup : lr;
  };
}

/** Linear warmup, then half a cosine from lr down to minLr at step `total` (minLr after it). */
export function cosineLr(opts: CosineOptions = {}): LrAt {
  const { lr, warmup, minLr } = check('cosineLr', opts);
  return (step, total) => {
    checkStep('cosineLr', step, total);
    if (step < warmup) return (lr * step) / warmup;
    const progress = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
    return minLr + (lr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
  };
}
