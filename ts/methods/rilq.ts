// RILQ: all LoRA adapters of the quantized model trained together against a model-level loss:
//   loss = (1 - gtWeight) · discrepancy + gtWeight · causal-LM loss on the calibration text,
// where discrepancy is the mean squared difference of the last hidden states (after the final norm)
// or of the logits between the quantized and the full-precision model. The full-precision outputs
// are computed once per window. Adam, gradient accumulation, validation on held-out windows with
// early stopping that restores the best adapters, atomic checkpoints and resume.
// finetune() is the same loop with the plain causal-LM loss and no full-precision model.

import { noGrad } from '../autograd.js';
import { ValueError } from '../errors.js';
import { CheckpointError } from '../train/errors.js';
import { add, affine } from '../ops/arithmetic.js';
import { crossEntropy } from '../ops/loss.js';
import { slice } from '../ops/shape.js';
import type { LlamaModel } from '../nn/llama.js';
import { keep, tensor, tidy, type Tensor } from '../tensor.js';
import { nodeFs } from '../io/atomic.js';
import { loadCheckpoint, saveCheckpoint } from '../train/checkpoint.js';
import { NanGuard, type GuardState } from '../train/guard.js';
import { AdamW } from '../train/optim.js';
import { constantLr, cosineLr } from '../train/schedule.js';
import { assignHost, readF32 } from '../train/tensors.js';
import type { CalibrationSet } from './calibration.js';
import { adapterParameters, namedAdapters, quantLayers, setTraining } from './quantize-model.js';
import { mse, trainStep } from './trainer.js';

export interface AdapterTrainingOptions {
  data: CalibrationSet;
  /** Optimizer steps (each over `accumulate` windows). */
  steps: number;
  lr?: number;
  weightDecay?: number;
  /** Windows per optimizer step (gradient accumulation). */
  accumulate?: number;
  schedule?: 'constant' | 'cosine';
  warmup?: number;
  clip?: number;
  /** Validate every this many steps (with validation windows). */
  evalEvery?: number;
  /** Stop after this many validations without improvement. */
  patience?: number;
  /** Write a checkpoint here every checkpointEvery steps; resume from it when it exists. */
  checkpoint?: string;
  checkpointEvery?: number;
  log?: (line: string) => void;
}

export interface RilqOptions extends AdapterTrainingOptions {
  loss?: 'hidden' | 'logits';
  /** Weight of the causal-LM loss (default 0.5). */
  gtWeight?: number;
}

export interface TrainingReport {
  steps: number;
  trainLoss: number[];
  validation: { step: number; loss: number }[];
  bestStep: number;
  bestLoss: number;
  skippedSteps: number;
  resumedFrom?: number;
  seconds: number;
}

const ids = (w: Int32Array, m: LlamaModel) => tensor(w, [1, w.length], 'i32', m.embed.backend);

/** Next-token loss of a window (labels, when given, say what to predict; -100 is skipped). */
function lmLoss(m: LlamaModel, logits: Tensor, w: Int32Array, labels?: Int32Array): Tensor {
  const T = w.length;
  return crossEntropy(slice(logits, [0, 0, 0], [1, T - 1, -1]), slice(ids(labels ?? w, m), [0, 1], [1, T - 1]));
}

/** RILQ on qm (in place) against fp. */
export function rilq(fp: LlamaModel, qm: LlamaModel, opts: RilqOptions): TrainingReport {
  const kind = opts.loss ?? 'hidden';
  const gt = opts.gtWeight ?? 0.5;
  if (!(gt >= 0 && gt <= 1)) throw new ValueError(`rilq: gtWeight must be in [0, 1], got ${gt}`);
  if (kind !== 'hidden' && kind !== 'logits') throw new ValueError(`rilq: loss must be 'hidden' or 'logits', got '${String(kind)}'`);
  const target = (w: Int32Array): Tensor => keep(noGrad(() => tidy(() => (kind === 'hidden' ? fp.hidden(ids(w, fp)) : fp.logits(ids(w, fp))))));
  const all = [...opts.data.train, ...opts.data.validation];
  const targets = new Map(all.map((w) => [w, target(w)]));
  const loss = (w: Int32Array): Tensor => tidy(() => {
    const h = qm.hidden(ids(w, qm));
    const logits = kind === 'logits' || gt > 0 ? qm.head(h) : undefined;
    const disc = mse(kind === 'hidden' ? h : logits!, targets.get(w)!);
    return gt > 0 ? add(affine(disc, 1 - gt), affine(lmLoss(qm, logits!, w, opts.data.labels?.get(w)), gt)) : disc;
  });
  try {
    return trainAdapters('rilq', qm, loss, opts);
  } finally {
    for (const t of targets.values()) t.dispose();
  }
}

/** LoRA finetuning of qm's adapters on the causal-LM loss of the windows (text, or instruction
 *  examples whose labels mask the prompt: methods/instructions.ts). */
export function finetune(qm: LlamaModel, opts: AdapterTrainingOptions): TrainingReport {
  return trainAdapters('finetune', qm, (w) => tidy(() => lmLoss(qm, qm.logits(ids(w, qm)), w, opts.data.labels?.get(w))), opts);
}

/** The shared loop: steps over the training windows in order (cycling), validation, best restore. */
export function trainAdapters(name: string, qm: LlamaModel, loss: (w: Int32Array) => Tensor, opts: AdapterTrainingOptions): TrainingReport {
  const t0 = Date.now();
  const log = opts.log ?? (() => {});
  const params = adapterParameters(qm);
  if (!params.length) throw new ValueError(`${name}: the model has no LoRA adapters to train (quantize it with lora options first)`);
  const { train, validation } = opts.data;
  if (!train.length) throw new ValueError(`${name}: no training windows`);
  if (!Number.isInteger(opts.steps) || opts.steps < 0) throw new ValueError(`${name}: steps must be a non-negative integer, got ${opts.steps}`);
  const accumulate = opts.accumulate ?? 1;
  const evalEvery = opts.evalEvery ?? Math.max(1, Math.floor(opts.steps / 10));
  const patience = opts.patience ?? Infinity;
  const sched = (opts.schedule ?? 'constant') === 'cosine' ? cosineLr({ warmup: opts.warmup }) : constantLr({ warmup: opts.warmup });
  const opt = new AdamW([{ params, lr: opts.lr ?? 1e-4, weightDecay: opts.weightDecay ?? 0 }]);
  const guard = new NanGuard();
  const named = namedAdapters(qm);
  const report: TrainingReport = { steps: 0, trainLoss: [], validation: [], bestStep: 0, bestLoss: Infinity, skippedSteps: 0, seconds: 0 };
  let best: Float32Array[] | undefined;
  let stale = 0;
  let step = 0;
  const validate = (): number => noGrad(() => validation.reduce((s, w) => s + tidy(() => readF32(loss(w), name)[0]), 0) / validation.length);
  const snapshot = () => params.map((p) => readF32(p, name));

  if (opts.checkpoint && nodeFs().existsSync(opts.checkpoint)) {
    const ck = loadCheckpoint(opts.checkpoint, { tensors: named, optimizer: opt });
    const meta = ck.meta as { step: number; bestStep: number; bestLoss: number; stale: number; trainLoss: number[]; validation: { step: number; loss: number }[]; guard: GuardState; dropout?: (number | null)[] };
    // the best-so-far parameters (saved from the first validation on): one array per parameter
    if (ck.arrays.size) {
      best = params.map((p, i) => {
        const b = ck.arrays.get(`best/${i}`);
        if (!b || b.length !== p.size) throw new CheckpointError(`${opts.checkpoint}: best parameters ${i} ${b ? `hold ${b.length} values, expected ${p.size}` : 'are missing'}`);
        return b;
      });
    }
    step = meta.step;
    Object.assign(report, { bestStep: meta.bestStep, bestLoss: meta.bestLoss ?? Infinity, trainLoss: meta.trainLoss, validation: meta.validation, resumedFrom: step });
    stale = meta.stale;
    guard.loadState(meta.guard);
    quantLayers(qm).forEach(({ layer }, i) => { if (layer.lora && meta.dropout?.[i] !== undefined) layer.lora.dropRng.state = meta.dropout[i]!; });
    log(`${name}: resumed from ${opts.checkpoint} at step ${step}`);
  } else if (validation.length) {
    report.bestLoss = validate();
    report.validation.push({ step: 0, loss: report.bestLoss });
    best = snapshot();
    log(`${name}: step 0 validation loss ${report.bestLoss.toFixed(5)}`);
  }

  setTraining(qm, true);
  try {
    while (step < opts.steps) {
      const micro = Array.from({ length: accumulate }, (_, j) => train[(step * accumulate + j) % train.length]);
      const { loss: l } = trainStep(opt, micro.map((w) => () => loss(w)), { guard, clip: opts.clip, lrScale: sched(step, opts.steps) });
      step++;
      report.trainLoss.push(l);
      if (validation.length && (step % evalEvery === 0 || step === opts.steps)) {
        setTraining(qm, false);
        const v = validate();
        setTraining(qm, true);
        report.validation.push({ step, loss: v });
        if (v < report.bestLoss) { report.bestLoss = v; report.bestStep = step; best = snapshot(); stale = 0; } else stale++;
        log(`${name}: step ${step}/${opts.steps} train ${l.toFixed(5)} validation ${v.toFixed(5)}${stale ? ` (no gain ${stale}/${patience})` : ' (best)'}`);
        if (stale >= patience) { log(`${name}: early stop at step ${step}`); break; }
      } else if (step % Math.max(1, Math.floor(opts.steps / 20)) === 0) log(`${name}: step ${step}/${opts.steps} train ${l.toFixed(5)}`);
      if (opts.checkpoint && step % (opts.checkpointEvery ?? 50) === 0 && step < opts.steps) {
        saveCheckpoint(opts.checkpoint, { tensors: named, optimizer: opt, meta: {
          step, bestStep: report.bestStep, bestLoss: Number.isFinite(report.bestLoss) ? report.bestLoss : null, stale, trainLoss: report.trainLoss,
          validation: report.validation, guard: guard.state(), dropout: quantLayers(qm).map(({ layer }) => layer.lora?.dropRng.state ?? null),
        }, arrays: best ? Object.fromEntries(best.map((b, i) => [`best/${i}`, b])) : undefined });
      }
    }
  } finally {
    setTraining(qm, false);
    opt.dispose();
  }
  if (best && validation.length) params.forEach((p, i) => assignHost(p, best![i]));
  report.steps = step;
  report.skippedSteps = guard.skipped.length;
  report.seconds = (Date.now() - t0) / 1000;
  return report;
}
