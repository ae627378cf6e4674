// Calibration windows: token windows drawn (seeded) from a text that is not the evaluation text.
// Training windows come from the first 90% of the token stream, validation windows from the rest,
// so early stopping never looks at text the adapters were trained on.

import { ValueError } from '../errors.js';
import { rng } from '../tensor.js';

export interface CalibrationSet {
  /** Window length (the longest example for instruction data). */
  seqlen: number;
  train: Int32Array[];
  validation: Int32Array[];
  /** Per window, the ids to predict (-100 where the loss skips a position, e.g. a prompt);
   *  without an entry a window predicts its own next tokens. */
  labels?: Map<Int32Array, Int32Array>;
}

export interface CalibrationOptions {
  count: number;
  seqlen: number;
  /** Validation windows (default 0). */
  validation?: number;
  seed?: number;
}

/** Random windows of `seqlen` tokens from ids (train from the head, validation from the tail). */
export function calibrationWindows(ids: ArrayLike<number>, opts: CalibrationOptions): CalibrationSet {
  const { count, seqlen } = opts;
  const nval = opts.validation ?? 0;
  if (!Number.isInteger(count) || count < 1) throw new ValueError(`calibration: count must be a positive integer, got ${count}`);
  if (!Number.isInteger(seqlen) || seqlen < 2) throw new ValueError(`calibration: seqlen must be an integer >= 2, got ${seqlen}`);
  const split = nval > 0 ? Math.floor(ids.length * 0.9) : ids.length;
  if (split < seqlen || ids.length - split < (nval > 0 ? seqlen : 0)) {
    throw new ValueError(`calibration: ${ids.length} tokens are too few for windows of ${seqlen}${nval ? ' with a validation tail' : ''}`);
  }
  const next = rng(opts.seed ?? 0);
  const pick = (lo: number, hi: number): Int32Array => {
    const start = lo + Math.floor(next() * (hi - lo - seqlen + 1));
    return Int32Array.from({ length: seqlen }, (_, i) => ids[start + i]);
  };
  return {
    seqlen,
    train: Array.from({ length: count }, () => pick(0, split)),
    validation: Array.from({ length: nval }, () => pick(split, ids.length)),
  };
}
