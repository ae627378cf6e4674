// Typed errors of the training toolkit.

import { FormatError, QuantloraError } from '../errors.js';

/** One skipped (non-finite) step, as the NaN guard records it. */
export interface SkippedStep {
  step: number;
  /** What was non-finite: 'loss', 'grad 3', 'grad norm'... */
  reason: string;
  loss: number;
  /** The lr scale in force after the skip. */
  lrScale: number;
}

/** Training produced non-finite losses or gradients too many steps in a row. */
export class TrainingDivergedError extends QuantloraError {
  constructor(message: string, readonly skipped: readonly SkippedStep[], readonly report: string) {
    super(message);
  }
}

/** A checkpoint file is unreadable, or does not match what it is restored into. */
export class CheckpointError extends FormatError {}
