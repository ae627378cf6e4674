// ApiQ: activation-preserving initialization of the LoRA adapters (and, for INT formats, the
// quantizer itself through learnable weight clipping). The quantized model is calibrated from the
// first block to the last; each part is fed X_q, the activations the already-calibrated quantized
// model produces, and trained to reproduce the full-precision model's outputs on X_fp:
//   'layer': every projection in forward order:  min || (Q + s·BA)(X_q) - W(X_fp) ||²
//   'block': a whole transformer block:          min || qblock(X_q) - block(X_fp) ||² + || qblock(X_q) - block(X_q) ||²
// AdamW with two parameter groups (LWC logits lr 5e-3, LoRA lr 5e-4, weight decay 0.1). After a
// part is trained, LWC is turned into real packed weights (Lwc.finalize) and X_q moves on.

import { isGradEnabled, noGrad } from '../autograd.js';
import { ValueError } from '../errors.js';
import { add } from '../ops/arithmetic.js';
import { gather } from '../ops/gather.js';
import { matmul } from '../ops/matmul.js';
import type { DenseWeights, LinearLayer } from '../nn/linear.js';
import { PROJECTIONS, type LlamaModel, type ProjectionName } from '../nn/llama.js';
import type { Lora } from '../nn/lora.js';
import { QuantLinear } from '../nn/quant-linear.js';
import { Lwc, withLogits } from '../quant/lwc.js';
import { keep, tensor, tidy, type Tensor } from '../tensor.js';
import { nodeFs } from '../io/atomic.js';
import { readCheckpoint, restoreTensors, saveCheckpoint } from '../train/checkpoint.js';
import { NanGuard, type GuardState } from '../train/guard.js';
import { assignHost, hostSums, readF32 } from '../train/tensors.js';
import { AdamW, type ParamGroup } from '../train/optim.js';
import { namedAdapters } from './quantize-model.js';
import { mse, trainStep } from './trainer.js';

export interface ApiqOptions {
  mode: 'layer' | 'block';
  /** Calibration windows (token ids of one length). */
  windows: Int32Array[];
  /** Passes over the windows per layer/block (default 2). */
  epochs?: number;
  /** Learnable weight clipping (default: on for INT formats; NF formats have no clipping range). */
  lwc?: boolean;
  lrLwc?: number;
  lrLora?: number;
  weightDecay?: number;
  clip?: number;
  /** Write a checkpoint here after every block; resume from it when it exists. */
  checkpoint?: string;
  log?: (line: string) => void;
}

export interface ApiqReport {
  /** Per calibrated part (layer or block): loss before training and after. */
  parts: { name: string; before: number; after: number }[];
  skippedSteps: number;
  /** The first block of this run when it resumed from a checkpoint. */
  resumedFrom?: number;
  seconds: number;
}

const KEYS = Object.keys(PROJECTIONS) as ProjectionName[];

/** A QuantLinear's stand-in while its clipping is learned: x · fakeQuant(W)ᵀ + b + lora(x). */
class LwcLinear implements LinearLayer {
  readonly inFeatures: number;
  readonly outFeatures: number;
  constructor(readonly lwc: Lwc, readonly bias: Tensor | undefined, readonly lora: Lora | undefined) {
    [this.outFeatures, this.inFeatures] = lwc.shape;
  }
  private cached: Tensor | undefined;
  /** The fake-quantized weight; passes without gradients (recording, loss before/after) reuse one
   *  copy, and any pass with gradients (a training step changes the logits) drops it. */
  private weight(): Tensor {
    if (isGradEnabled()) { this.drop(); return this.lwc.fakeQuant(); }
    this.cached ??= keep(this.lwc.fakeQuant());
    return this.cached;
  }
  private drop(): void { this.cached?.dispose(); this.cached = undefined; }
  forward(x: Tensor): Tensor {
    let y = matmul(x, this.weight(), { transB: true });
    if (this.bias) y = add(y, this.bias);
    return this.lora ? add(y, this.lora.forward(x)) : y;
  }
  dense(): DenseWeights { return { weight: this.lwc.fakeQuant(), bias: this.bias, owned: true }; }
  /** Set once finalize() has handed the bias and the adapter to the QuantLinear. */
  private handedOver = false;
  finalize(): QuantLinear {
    const q = new QuantLinear(this.lwc.finalize(), this.bias, this.lora);
    this.handedOver = true;
    return q;
  }
  /** The clipping state, and the bias and adapter until finalize() hands them over (so a model
   *  left mid-calibration by an error frees everything on dispose). */
  tensors(): Tensor[] {
    const own = [...this.lwc.tensors(), ...(this.cached ? [this.cached] : [])];
    return this.handedOver ? own : [...own, ...(this.bias ? [this.bias] : []), ...(this.lora?.tensors() ?? [])];
  }
  dispose(): void {
    this.drop();
    if (!this.handedOver) {
      this.bias?.dispose();
      this.lora?.dispose();
    }
    this.lwc.dispose();
  }
}

/** Records the input of a layer on each forward (the activations a layer is calibrated on); the
 *  last recorder of a pass stops the pass. */
class InputRecorder implements LinearLayer {
  inputs: Tensor[] = [];
  constructor(readonly inner: LinearLayer, readonly stop = false) {}
  get inFeatures(): number { return this.inner.inFeatures; }
  get outFeatures(): number { return this.inner.outFeatures; }
  forward(x: Tensor): Tensor {
    this.inputs.push(keep(x));
    if (this.stop) throw new Captured();
    return this.inner.forward(x);
  }
  dense(): DenseWeights { return this.inner.dense(); }
  tensors(): Tensor[] { return this.inner.tensors(); }
  dispose(): void { this.inner.dispose(); }
}

/** Calibrates qm's adapters (and clipping) against fp in place; returns a report. */
export function apiq(fp: LlamaModel, qm: LlamaModel, opts: ApiqOptions): ApiqReport {
  const t0 = Date.now();
  if (!opts.windows.length) throw new ValueError('apiq: no calibration windows');
  if (opts.mode !== 'layer' && opts.mode !== 'block') throw new ValueError(`apiq: mode must be 'layer' or 'block', got '${String(opts.mode)}'`);
  const epochs = opts.epochs ?? 2;
  const log = opts.log ?? (() => {});
  const guard = new NanGuard();
  const report: ApiqReport = { parts: [], skippedSteps: 0, seconds: 0 };
  const embed = (m: LlamaModel) => opts.windows.map((w) => frozen(() => gather(m.embed, tensor(w, [1, w.length], 'i32', m.embed.backend))));
  let xfp = embed(fp);
  let xq = embed(qm);
  // the learned clipping logits of finalized layers (host copies), for checkpoints
  const learned = new Map<string, Float32Array>();
  const name = (i: number, k: ProjectionName) => `model.layers.${i}.${PROJECTIONS[k]}`;
  const useLwc = (layer: QuantLinear) => (opts.lwc ?? layer.weight.format.kind === 'int') && layer.weight.format.kind === 'int';
  const standIn = (i: number, k: ProjectionName, logits?: { u: Float32Array; l?: Float32Array }) => {
    const qb = qm.blocks[i];
    const layer = qb[k] as QuantLinear;
    const w = fp.blocks[i][k].dense();
    const lwc = new Lwc(w.weight, layer.weight.format);
    if (w.owned) w.weight.dispose();
    if (logits) { assignHost(lwc.u, logits.u); if (lwc.l && logits.l) assignHost(lwc.l, logits.l); }
    qb[k] = new LwcLinear(lwc, layer.bias, layer.lora);
    layer.weight.dispose();
  };
  const finalize = (i: number, k: ProjectionName) => {
    const stand = qm.blocks[i][k] as LwcLinear;
    learned.set(`${name(i, k)}.lwc_u`, readF32(stand.lwc.u, 'apiq'));
    if (stand.lwc.l) learned.set(`${name(i, k)}.lwc_l`, readF32(stand.lwc.l, 'apiq'));
    qm.blocks[i][k] = stand.finalize();
    stand.dispose();
  };
  // activations of the block being calibrated (and the embeddings), freed here if a step throws (normally freed as the
  // loop goes; dispose() is idempotent)
  let temps: Tensor[] = [];
  const hold = <T extends Tensor[]>(ts: T): T => { temps.push(...ts); return ts; };
  try {
  let start = 0;
  if (opts.checkpoint && nodeFs().existsSync(opts.checkpoint)) {
    const ck = readCheckpoint(opts.checkpoint);
    const meta = ck.meta as { mode: string; block: number; windows: number; guard: GuardState; parts: ApiqReport['parts'] };
    if (meta.mode !== opts.mode || meta.windows !== opts.windows.length || !(meta.block >= 0 && meta.block <= qm.blocks.length)) {
      throw new ValueError(`apiq: checkpoint ${opts.checkpoint} is for mode '${meta.mode}', ${meta.windows} windows, ${meta.block} blocks; this run is '${opts.mode}' with ${opts.windows.length} windows`);
    }
    start = meta.block;
    for (let i = 0; i < start; i++) {
      for (const k of KEYS.filter((k) => qm.blocks[i][k] instanceof QuantLinear)) {
        const u = ck.tensors.get(`${name(i, k)}.lwc_u`);
        if (!u) continue;
        standIn(i, k, { u: u.data, l: ck.tensors.get(`${name(i, k)}.lwc_l`)?.data });
        finalize(i, k);
      }
    }
    restoreTensors(ck, namedAdapters(qm, start), { strict: false });
    guard.loadState(meta.guard);
    report.parts = meta.parts;
    report.resumedFrom = start;
    for (let i = 0; i < start; i++) {
      const nf = xfp.map((x) => frozen(() => fp.blockForward(i, x)));
      const nq = xq.map((x) => frozen(() => qm.blockForward(i, x)));
      for (const t of [...xfp, ...xq]) t.dispose();
      [xfp, xq] = [nf, nq];
    }
    log(`apiq: resumed from ${opts.checkpoint} at block ${start}`);
  }

  for (let i = start; i < qm.blocks.length; i++) {
    temps = [];
    const qb = qm.blocks[i];
    const quantKeys = KEYS.filter((k) => qb[k] instanceof QuantLinear);
    // swap in LWC stand-ins where clipping is learned
    for (const k of quantKeys) if (useLwc(qb[k] as QuantLinear)) standIn(i, k);
    const yfp = hold(xfp.map((x) => frozen(() => fp.blockForward(i, x))));
    if (opts.mode === 'block') {
      const yfpq = hold(xq.map((x) => frozen(() => fp.blockForward(i, x))));
      const groups = paramGroups(quantKeys.map((k) => qb[k]), opts);
      if (groups.length) {
        const part = calibrate(`block ${i}`, groups, xq.map((x, j) => () => {
          const y = qm.blockForward(i, x);
          return add(mse(y, yfp[j]), mse(y, yfpq[j]));
        }), epochs, guard, opts, lwcsOf(quantKeys.map((k) => qb[k])));
        report.parts.push(part);
        log(`apiq block ${i}: loss ${part.before.toExponential(3)} -> ${part.after.toExponential(3)}`);
      }
      for (const t of yfpq) t.dispose();
    } else {
      // targets of every layer from one pass of the fp block on X_fp
      const fpIn = recordInputs(fp, i, quantKeys, xfp);
      for (const v of fpIn.values()) hold(v);
      const targets = new Map(quantKeys.map((k) => [k, hold(fpIn.get(k)!.map((x) => frozen(() => fp.blocks[i][k].forward(x))))]));
      for (const t of [...fpIn.values()].flat()) t.dispose();
      // layers that read the same activation share one recording of the (partly calibrated) block on X_q
      for (const group of SHARED_INPUT.map((g) => g.filter((k) => quantKeys.includes(k))).filter((g) => g.length)) {
        const qIn = hold(recordInputs(qm, i, [group[0]], xq).get(group[0])!);
        for (const k of group) {
          const layer = qm.blocks[i][k];
          const tk = targets.get(k)!;
          const groups = paramGroups([layer], opts);
          if (groups.length) {
            const part = calibrate(`layer ${i}.${k}`, groups, qIn.map((x, j) => () => mse(layer.forward(x), tk[j])), epochs, guard, opts, lwcsOf([layer]));
            report.parts.push(part);
            log(`apiq layer ${i}.${k}: loss ${part.before.toExponential(3)} -> ${part.after.toExponential(3)}`);
          }
          if (layer instanceof LwcLinear) finalize(i, k);
        }
        for (const t of qIn) t.dispose();
      }
      for (const t of [...targets.values()].flat()) t.dispose();
    }
    for (const k of quantKeys) if (qb[k] instanceof LwcLinear) finalize(i, k);
    const nextQ = hold(xq.map((x) => frozen(() => qm.blockForward(i, x))));
    for (const t of [...xq, ...xfp]) t.dispose();
    xq = nextQ;
    xfp = yfp;
    if (opts.checkpoint) {
      const be = qm.embed.backend;
      const logits = [...learned].map(([n, v]) => [n, tensor(v, [v.length], 'f32', be)] as [string, Tensor]);
      try {
        saveCheckpoint(opts.checkpoint, { tensors: new Map([...logits, ...namedAdapters(qm, i + 1)]), meta: {
          mode: opts.mode, block: i + 1, windows: opts.windows.length, guard: guard.state(), parts: report.parts } });
      } finally {
        for (const [, t] of logits) t.dispose();
      }
    }
  }
  } catch (e) {
    for (const t of [...temps, ...xq, ...xfp]) t.dispose();
    throw e;
  }
  for (const t of [...xq, ...xfp]) t.dispose();
  report.skippedSteps = guard.skipped.length;
  report.seconds = (Date.now() - t0) / 1000;
  return report;
}

/** fn's result without a graph, owned by the caller (every intermediate freed). */
function frozen(fn: () => Tensor): Tensor {
  return keep(noGrad(() => tidy(fn)));
}

/** The learned clippings among layers (the LWC stand-ins). */
const lwcsOf = (layers: LinearLayer[]): Lwc[] => layers.flatMap((l) => (l instanceof LwcLinear ? [l.lwc] : []));

function paramGroups(layers: LinearLayer[], opts: ApiqOptions): ParamGroup[] {
  const wd = opts.weightDecay ?? 0.1;
  const lwc = lwcsOf(layers).flatMap((l) => l.params());
  const lora = layers.flatMap((l) => {
    const branch = l instanceof LwcLinear ? l.lora : l instanceof QuantLinear ? l.lora : undefined;
    return branch?.parameters() ?? [];
  });
  const groups: ParamGroup[] = [];
  if (lwc.length) groups.push({ params: lwc, lr: opts.lrLwc ?? 5e-3, weightDecay: wd });
  if (lora.length) groups.push({ params: lora, lr: opts.lrLora ?? 5e-4, weightDecay: wd });
  return groups;
}

/** Trains one part; loss before/after measured over all windows without updates. `lwcs`: the
 *  part's clipping, whose logits each forward pass reads in one go (withLogits). */
function calibrate(name: string, groups: ParamGroup[], parts: (() => Tensor)[], epochs: number, guard: NanGuard, opts: ApiqOptions, lwcs: Lwc[]): { name: string; before: number; after: number } {
  const losses = parts.map((f) => () => withLogits(lwcs, f));
  // every window's loss recorded, then one read (a GPU waits once, not once per window); summed on
  // the host in window order
  const meanLoss = () => noGrad(() => {
    const ls = losses.map((f) => keep(tidy(f)));
    try {
      return hostSums(ls, (t) => t, 'apiq').reduce((s, v) => s + v, 0) / losses.length;
    } finally {
      for (const l of ls) l.dispose();
    }
  });
  const before = meanLoss();
  const opt = new AdamW(groups);
  try {
    for (let e = 0; e < epochs; e++) for (const f of losses) trainStep(opt, [f], { guard, clip: opts.clip });
  } finally {
    opt.dispose();
  }
  return { name, before, after: meanLoss() };
}

/** Layers of a block that read the same activation (in forward order). */
const SHARED_INPUT: ProjectionName[][] = [['q', 'k', 'v'], ['o'], ['gate', 'up'], ['down']];

/** Thrown by a recorder once every wanted input of a pass is captured (the rest of the block is skipped). */
class Captured extends Error {}

/** Inputs of the given projections of block i for each x (the block run without gradients). */
function recordInputs(m: LlamaModel, i: number, keys: ProjectionName[], xs: Tensor[]): Map<ProjectionName, Tensor[]> {
  const block = m.blocks[i];
  const last = keys.reduce((a, k) => Math.max(a, KEYS.indexOf(k)), 0);
  const recs = new Map(keys.map((k) => [k, new InputRecorder(block[k], KEYS.indexOf(k) === last)]));
  for (const [k, r] of recs) block[k] = r;
  try {
    for (const x of xs) {
      try {
        noGrad(() => tidy(() => { m.blockForward(i, x); }));
      } catch (e) {
        if (!(e instanceof Captured)) throw e;
      }
    }
  } finally {
    for (const [k, r] of recs) block[k] = r.inner;
  }
  return new Map([...recs].map(([k, r]) => [k, r.inputs]));
}
