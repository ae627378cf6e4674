// Adam and AdamW over parameter groups, with PyTorch's semantics (torch.optim.AdamW / Adam,
// non-amsgrad, non-fused): for each parameter p with gradient g at its step t (1-based),
//
//   AdamW: p ← p·(1 − lr·wd)                      (decoupled weight decay)
//   Adam:  g ← g + wd·p                            (L2 penalty folded into the gradient)
//   m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
//   p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
//
// The moments m, v are tensors on the parameter's backend; the parameter is updated in place (its
// storage is overwritten), so layers holding it see the new values. A parameter whose gradient is
// missing in a step is skipped and its own step count does not advance, as in PyTorch.

import { ShapeError, ValueError, describeShape } from '../errors.js';
import { noGrad } from '../autograd.js';
import { add, affine, div, mul, sqrt, square } from '../ops/arithmetic.js';
import { keep, tidy, zeros, type Tensor } from '../tensor.js';
import { assignHost, assignInPlace, readF32 } from './tensors.js';

export interface ParamGroup {
  params: Tensor[];
  lr: number;
  /** Default 0.01 for AdamW (PyTorch's default), 0 for Adam. */
  weightDecay?: number;
  /** Default [0.9, 0.999]. */
  betas?: [number, number];
  /** Default 1e-8. */
  eps?: number;
}

/** A group's hyperparameters as the optimizer uses them. `lr` is baseLr · the last lrScale. */
export interface GroupSettings {
  readonly params: Tensor[];
  readonly baseLr: number;
  lr: number;
  weightDecay: number;
  betas: [number, number];
  eps: number;
}

/** Gradients for step(): a map from parameter to gradient, or one entry per params() in order. */
export type Gradients = Map<Tensor, Tensor | null | undefined> | readonly (Tensor | null | undefined)[];

/** Everything step() depends on besides the parameters and hyperparameters (for checkpoints). */
export interface OptimizerState {
  /** step() calls so far. */
  step: number;
  /** Per parameter (params() order): updates applied to it so far (its bias-correction t). */
  paramSteps: number[];
  /** Per group: the current learning rate. */
  lrs: number[];
  /** First and second moments, per parameter in params() order. */
  m: Float32Array[];
  v: Float32Array[];
}

function checkGroup(g: ParamGroup, i: number, defaultWd: number): GroupSettings {
  const where = `optimizer group ${i}`;
  if (!g || !Array.isArray(g.params)) throw new ValueError(`${where}: expected { params: Tensor[], lr }`);
  const betas = g.betas ?? [0.9, 0.999];
  const wd = g.weightDecay ?? defaultWd;
  const eps = g.eps ?? 1e-8;
  if (!(Number.isFinite(g.lr) && g.lr >= 0)) throw new ValueError(`${where}: lr must be a finite number >= 0, got ${g.lr}`);
  if (!(Number.isFinite(wd) && wd >= 0)) throw new ValueError(`${where}: weightDecay must be a finite number >= 0, got ${wd}`);
  if (!(eps >= 0 && Number.isFinite(eps))) throw new ValueError(`${where}: eps must be a finite number >= 0, got ${eps}`);
  if (betas.length !== 2 || !betas.every((b) => b >= 0 && b < 1)) throw new ValueError(`${where}: betas must be two numbers in [0, 1), got [${betas.join(', ')}]`);
  for (const p of g.params) {
    p.assertAlive();
    if (p.dtype !== 'f32') throw new ValueError(`${where}: parameters must be f32, got ${p.dtype} ${describeShape(p.shape)}`);
  }
  return { params: [...g.params], baseLr: g.lr, lr: g.lr, weightDecay: wd, betas: [betas[0], betas[1]], eps };
}

/** AdamW with decoupled weight decay (torch.optim.AdamW). */
export class AdamW {
  readonly groups: GroupSettings[];
  /** step() calls so far. */
  stepCount = 0;
  private readonly all: Tensor[];
  private readonly m: Tensor[];
  private readonly v: Tensor[];
  private readonly steps: number[];
  protected readonly decoupled: boolean = true;

  constructor(groups: ParamGroup[], defaultWeightDecay = 0.01) {
    if (!Array.isArray(groups) || groups.length === 0) throw new ValueError('optimizer: expected at least one parameter group');
    this.groups = groups.map((g, i) => checkGroup(g, i, defaultWeightDecay));
    this.all = this.groups.flatMap((g) => g.params);
    if (new Set(this.all).size !== this.all.length) throw new ValueError('optimizer: a parameter appears twice');
    this.m = this.all.map((p) => keep(zeros(p.shape, 'f32', p.backend)));
    this.v = this.all.map((p) => keep(zeros(p.shape, 'f32', p.backend)));
    this.steps = this.all.map(() => 0);
  }

  /** Every parameter, group by group (the order Gradients arrays and state() use). */
  params(): Tensor[] {
    return [...this.all];
  }

  /** Sets every group's lr to its base lr times `scale` (for schedules and the NaN guard). */
  setLrScale(scale: number): void {
    if (!(Number.isFinite(scale) && scale >= 0)) throw new ValueError(`setLrScale: expected a finite scale >= 0, got ${scale}`);
    for (const g of this.groups) g.lr = g.baseLr * scale;
  }

  /** Applies one update. Without `grads`, uses each parameter's `.grad` (from backward()). */
  step(grads?: Gradients): void {
    const gradOf = this.gradLookup(grads);
    this.stepCount++;
    let k = 0;
    for (const group of this.groups) {
      for (const p of group.params) {
        const i = k++;
        const g = gradOf(p, i);
        if (!g) continue;
        if (g.size !== p.size) throw new ShapeError(`optimizer: gradient ${describeShape(g.shape)} does not match parameter ${describeShape(p.shape)}`);
        this.steps[i]++;
        this.update(group, p, g, i);
      }
    }
  }

  private update(group: GroupSettings, p: Tensor, g0: Tensor, i: number): void {
    const { lr, weightDecay: wd, eps } = group;
    const [b1, b2] = group.betas;
    const t = this.steps[i];
    const bc1 = 1 - b1 ** t;
    const bc2sqrt = Math.sqrt(1 - b2 ** t);
    const be = p.backend;
    if (be.adamStep && g0.backend === be && g0.dtype === 'f32') {
      be.adamStep(p.handle, g0.handle, this.m[i].handle, this.v[i].handle, p.size, { lr, beta1: b1, beta2: b2, eps, weightDecay: wd, decoupled: this.decoupled, bc1, bc2sqrt });
      return;
    }
    noGrad(() => tidy(() => {
      const g = !this.decoupled && wd !== 0 ? add(g0, affine(p, wd)) : g0;
      const m = add(affine(this.m[i], b1), affine(g, 1 - b1));
      const v = add(affine(this.v[i], b2), affine(square(g), 1 - b2));
      const denom = affine(sqrt(v), 1 / bc2sqrt, eps);
      const decayed = this.decoupled && wd !== 0 ? affine(p, 1 - lr * wd) : p;
      const next = add(decayed, affine(div(m, denom), -lr / bc1));
      assignInPlace(this.m[i], m);
      assignInPlace(this.v[i], v);
      assignInPlace(p, next);
    }));
  }

  private gradLookup(grads: Gradients | undefined): (p: Tensor, i: number) => Tensor | null | undefined {
    if (grads === undefined) return (p) => p.grad;
    if (grads instanceof Map) return (p) => grads.get(p);
    if (grads.length !== this.all.length) {
      throw new ValueError(`optimizer.step: expected ${this.all.length} gradients (one per parameter, params() order), got ${grads.length}`);
    }
    return (_p, i) => grads[i];
  }

  /** Drops the `.grad` of every parameter (backward() accumulates into it). */
  zeroGrad(): void {
    for (const p of this.all) {
      p.grad?.dispose();
      p.grad = undefined;
    }
  }

  /** A host copy of the optimizer state (for checkpoints). */
  state(): OptimizerState {
    return {
      step: this.stepCount,
      paramSteps: [...this.steps],
      lrs: this.groups.map((g) => g.lr),
      m: this.m.map((t) => readF32(t, 'optimizer.state')),
      v: this.v.map((t) => readF32(t, 'optimizer.state')),
    };
  }

  /** Restores a state() taken from an optimizer over parameters of the same shapes. */
  loadState(s: OptimizerState): void {
    const n = this.all.length;
    if (!s || !Number.isInteger(s.step) || s.step < 0) throw new ValueError(`optimizer.loadState: expected a state with a non-negative integer step, got ${JSON.stringify(s?.step)}`);
    for (const [name, list] of [['paramSteps', s.paramSteps], ['m', s.m], ['v', s.v]] as const) {
      if (!Array.isArray(list) || list.length !== n) throw new ValueError(`optimizer.loadState: expected ${name} for ${n} parameters, got ${Array.isArray(list) ? list.length : typeof list}`);
    }
    if (!Array.isArray(s.lrs) || s.lrs.length !== this.groups.length) throw new ValueError(`optimizer.loadState: expected lrs for ${this.groups.length} groups, got ${s.lrs?.length}`);
    this.all.forEach((p, i) => {
      for (const [name, a] of [['m', s.m[i]], ['v', s.v[i]]] as const) {
        if (!(a instanceof Float32Array) || a.length !== p.size) {
          throw new ShapeError(`optimizer.loadState: ${name}[${i}] has ${a?.length} values, parameter ${i} is ${describeShape(p.shape)} (${p.size})`);
        }
      }
      if (!Number.isInteger(s.paramSteps[i]) || s.paramSteps[i] < 0) throw new ValueError(`optimizer.loadState: paramSteps[${i}] = ${s.paramSteps[i]} is not a step count`);
    });
    this.all.forEach((_p, i) => {
      assignHost(this.m[i], s.m[i]);
      assignHost(this.v[i], s.v[i]);
      this.steps[i] = s.paramSteps[i];
    });
    this.groups.forEach((g, i) => { g.lr = s.lrs[i]; });
    this.stepCount = s.step;
  }

  /** Frees the moment tensors (the parameters belong to the caller). */
  dispose(): void {
    for (const t of [...this.m, ...this.v]) t.dispose();
  }
}

/** Adam (torch.optim.Adam): weight decay, default 0, is an L2 term added to the gradient. */
export class Adam extends AdamW {
  protected override readonly decoupled: boolean = false;
  constructor(groups: ParamGroup[]) {
    super(groups, 0);
  }
}
