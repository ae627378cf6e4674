// Losses: fused cross-entropy over logits (log-softmax inside, optional ignore index) and MSE.

import { record } from '../autograd.js';
import { ShapeError, describeShape } from '../errors.js';
import { knownBounds, type Tensor } from '../tensor.js';
import { square, sub } from './arithmetic.js';
import { mean } from './reduce.js';
import { backendOf, expectDType, out } from './util.js';

export interface CrossEntropyOptions {
  /** Targets equal to this are skipped (default -100, as in PyTorch). */
  ignoreIndex?: number;
}

/** Mean token NLL of logits [..., vocab] against i32 targets [...]; a scalar. */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const be = backendOf('crossEntropy', logits, targets);
  expectDType('crossEntropy', logits, 'f32', 'logits');
  expectDType('crossEntropy', targets, 'i32', 'targets');
  const vocab = logits.shape[logits.rank - 1];
  const rows = logits.size / (vocab || 1);
  if (targets.size !== rows || logits.rank !== targets.rank + 1 || targets.shape.some((d, i) => d !== logits.shape[i])) {
    throw new ShapeError(`crossEntropy: targets ${describeShape(targets.shape)} must match logits ${describeShape(logits.shape)} without the vocab axis`);
  }
  const ignore = opts.ignoreIndex ?? -100;
  // targets made from host data carry their range: when it lies inside [0, vocab) and excludes the
  // ignore index, all rows count and the backend need not read the targets back to check them
  const b = knownBounds(targets);
  const checked = b && b[0] >= 0 && b[1] < vocab && (ignore < b[0] || ignore > b[1]) ? rows : undefined;
  const y = out(be, be.crossEntropy(logits.handle, targets.handle, rows, vocab, ignore, checked), []);
  return record('crossEntropy', [logits, targets], y, (g, { inputs: [l, t] }) => [
    out(be, be.crossEntropyBackward(l.handle, t.handle, g.handle, rows, vocab, ignore, checked), l.shape),
    null,
  ]);
}

/** Mean squared error between a and b (broadcasting). */
export function mse(a: Tensor, b: Tensor): Tensor {
  return mean(square(sub(a, b)));
}
