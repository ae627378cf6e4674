// Reverse-mode autograd. An op records a GradNode on its output only when an input requires
// grad and grad mode is on; the node holds retained references to its inputs and saved tensors.
// backward() walks the graph once in reverse topological order.

import { ShapeError, ValueError, describeShape } from './errors.js';
import { keep, ones, retain, Tensor, tidy, track, type BackwardContext } from './tensor.js';

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn without recording any graph. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/**
 * Records `output = name(inputs)` for autograd. `backward(dy, ctx)` returns one gradient per input
 * (null where not needed), each with the input's shape; it must use ctx.inputs / ctx.saved, not
 * the caller's tensors, which may be disposed by then.
 */
export function record(
  name: string,
  inputs: Tensor[],
  output: Tensor,
  backward: (dy: Tensor, ctx: BackwardContext) => (Tensor | null | undefined)[],
  saved: Tensor[] = [],
): Tensor {
  if (!gradEnabled || !inputs.some((t) => t.requiresGrad)) return output;
  output.requiresGrad = true;
  output.node = { name, inputs: inputs.map(retain), saved: saved.map(retain), backward, refs: 1 };
  return output;
}

/** Tensors reachable from root, inputs before the ops that use them. */
function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<number>();
  const stack: [Tensor, boolean][] = [[root, false]];
  while (stack.length) {
    const [t, done] = stack.pop()!;
    if (done) { order.push(t); continue; }
    if (seen.has(t.id)) continue;
    seen.add(t.id);
    stack.push([t, true]);
    for (const i of t.node?.inputs ?? []) if (i.requiresGrad && !seen.has(i.id)) stack.push([i, false]);
  }
  return order;
}

/**
 * Gradients of root with respect to every tensor in `wanted` (by id), plus all leaves when
 * `leaves` is set. Intermediate gradients are freed as soon as they are used.
 */
function runBackward(root: Tensor, dy: Tensor | undefined, wanted: Set<number>, leaves: boolean): Map<number, { t: Tensor; g: Tensor }> {
  root.assertAlive();
  if (!root.requiresGrad) throw new ValueError(`backward(): the tensor ${describeShape(root.shape)} does not depend on any tensor that requires grad`);
  if (!dy && root.size !== 1) throw new ShapeError(`backward(): a non-scalar output ${describeShape(root.shape)} needs an explicit output gradient`);
  if (dy && dy.size !== root.size) throw new ShapeError(`backward(): output gradient ${describeShape(dy.shape)} does not match output ${describeShape(root.shape)}`);
  const grads = new Map<number, Tensor>();
  const result = new Map<number, { t: Tensor; g: Tensor }>();
  const order = topoOrder(root);
  noGrad(() => {
    grads.set(root.id, dy ? retain(dy) : keep(ones(root.shape, root.backend)));
    // (a retained dy is released like any other gradient once used)
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i];
      const g = grads.get(t.id);
      if (!g) continue;
      grads.delete(t.id);
      const node = t.node;
      if (node) {
        const needs = node.inputs.map((x) => x.requiresGrad);
        const ctx = { inputs: node.inputs, saved: node.saved, needs };
        const inGrads = tidy(() => node.backward(g, ctx).map((x, j) => (needs[j] && x ? x : null)));
        const used = new Set<Tensor>([g]);
        inGrads.forEach((gradIn, j) => {
          if (!gradIn) return;
          // a rule may pass dy through (or give two inputs one tensor): each slot owns its own reference
          let ig = used.has(gradIn) ? retain(gradIn) : gradIn;
          used.add(gradIn);
          const input = node.inputs[j];
          if (ig.size !== input.size) {
            throw new ShapeError(`backward of '${node.name}': gradient ${describeShape(ig.shape)} does not match input ${j} ${describeShape(input.shape)}`);
          }
          if (!sameShape(ig.shape, input.shape)) {
            const v = new Tensor([...input.shape], ig.storage);
            ig.storage.refs++;
            ig.dispose();
            ig = v;
          }
          keep(ig);
          const prev = grads.get(input.id);
          if (!prev) grads.set(input.id, ig);
          else {
            grads.set(input.id, keep(addTensors(prev, ig)));
            prev.dispose();
            ig.dispose();
          }
        });
      }
      if (wanted.has(t.id) || (leaves && !node)) result.set(t.id, { t: t.origin, g });
      else g.dispose();
    }
  });
  for (const g of grads.values()) g.dispose();
  return result;
}

// Set by ts/ops/arithmetic.ts to avoid an import cycle (autograd is below the ops).
let addTensors: (a: Tensor, b: Tensor) => Tensor = () => {
  throw new Error('ops not loaded');
};
export function setGradAdd(fn: (a: Tensor, b: Tensor) => Tensor): void {
  addTensors = fn;
}

/** Accumulates d(root)/d(leaf) into `leaf.grad` for every leaf that requires grad. */
export function backward(root: Tensor, dy?: Tensor): void {
  for (const { t, g } of runBackward(root, dy, new Set(), true).values()) {
    const gv = g;
    if (t.grad && !t.grad.isDisposed) {
      const sum = keep(noGrad(() => addTensors(t.grad!, gv)));
      t.grad.dispose();
      t.grad = sum;
      gv.dispose();
    } else t.grad = gv;
  }
}

/** Gradients of root with respect to xs (any tensors in the graph), in order; null where unrelated.
 *  Unlike backward(), nothing is stored on the tensors: the caller owns the results. */
export function grad(root: Tensor, xs: Tensor[], dy?: Tensor): (Tensor | null)[] {
  const res = runBackward(root, dy, new Set(xs.map((x) => x.id)), false);
  // like any op result, the gradients belong to the caller's tidy scope
  return xs.map((x) => { const g = res.get(x.id)?.g; return g ? track(g) : null; });
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
