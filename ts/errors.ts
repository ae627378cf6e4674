// Typed errors. Every message says what was expected and what was given, and where.

export class QuantloraError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A tensor has the wrong shape for an op (or shapes do not broadcast). */
export class ShapeError extends QuantloraError {}

/** A tensor has the wrong dtype for an op. */
export class DTypeError extends QuantloraError {}

/** A value is outside what an op or format accepts (bit width, group size, axis, index). */
export class ValueError extends QuantloraError {}

/** Input data holds NaN or Infinity where finite values are required. */
export class NonFiniteError extends QuantloraError {}

/** A quantization format is unsupported or used with data it cannot describe. */
export class FormatError extends QuantloraError {}

/** No backend could be initialized, or a forced backend does not exist or failed. */
export class BackendError extends QuantloraError {}

/** A tensor was used after dispose(). */
export class DisposedError extends QuantloraError {}

export function describeShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
