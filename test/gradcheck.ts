// Finite-difference gradient checking for ops (test helper).

import assert from 'node:assert/strict';
import { backward, liveBuffers, mul, noGrad, sum, tensor, tidy, type Tensor } from '../ts/index.js';
import { gaussianArray } from '../ts/tensor.js';

export interface InputSpec {
  shape: number[];
  /** Explicit values; otherwise seeded Gaussian. */
  data?: Float32Array;
  /** Not differentiated (e.g. integer ids, or values kept fixed). */
  fixed?: boolean;
  dtype?: 'f32' | 'i32';
}

/**
 * Checks d/dx of L = sum(f(x) * R) (R a fixed random tensor) against central differences,
 * for every differentiable input. Returns the worst relative error.
 */
export function gradCheck(name: string, f: (...xs: Tensor[]) => Tensor, specs: InputSpec[], opts: { eps?: number; tol?: number; seed?: number } = {}): number {
  const eps = opts.eps ?? 1e-2;
  const tol = opts.tol ?? 2e-2;
  const values = specs.map((s, i) => s.data ?? gaussianArray(s.shape.reduce((a, b) => a * b, 1), (opts.seed ?? 7) * 31 + i));
  let worst = 0;
  const live = liveBuffers();
  tidy(() => {
    const xs = specs.map((s, i) => tensor(values[i], s.shape, s.dtype ?? 'f32').requireGrad(!s.fixed && (s.dtype ?? 'f32') === 'f32'));
    const y0 = f(...xs);
    const r = tensor(gaussianArray(y0.size, 99), y0.shape);
    const lossOf = (ys: Tensor) => sum(mul(ys, r));
    backward(lossOf(y0));
    const evalLoss = (vals: Float32Array[]) =>
      noGrad(() => tidy(() => {
        const ins = specs.map((s, i) => tensor(vals[i], s.shape, s.dtype ?? 'f32'));
        return (lossOf(f(...ins)).dataSync() as Float32Array)[0];
      }));
    specs.forEach((s, i) => {
      if (s.fixed || (s.dtype ?? 'f32') !== 'f32') return;
      const analytic = xs[i].grad!.dataSync() as Float32Array;
      assert.equal(analytic.length, values[i].length, `${name}: gradient size of input ${i}`);
      for (let j = 0; j < values[i].length; j++) {
        const plus = values.map((v) => v.slice());
        const minus = values.map((v) => v.slice());
        plus[i][j] += eps;
        minus[i][j] -= eps;
        const numeric = (evalLoss(plus) - evalLoss(minus)) / (2 * eps);
        const err = Math.abs(numeric - analytic[j]) / Math.max(1, Math.abs(numeric), Math.abs(analytic[j]));
        worst = Math.max(worst, err);
        assert.ok(err < tol, `${name}: d/dx${i}[${j}] analytic ${analytic[j]} vs numeric ${numeric} (rel err ${err.toExponential(2)})`);
      }
    });
    for (const x of xs) x.grad?.dispose();
  });
  assert.equal(liveBuffers(), live, `${name}: forward + backward leaked ${liveBuffers() - live} buffers`);
  return worst;
}
