// Invariant checks that any quantizer can be run through: implement QuantizerUnderTest for it, then
// call checkQuantizer (a list of violations), assertQuantizer (throws) or quantizerProperty (a
// fast-check property over weightMatrix()). referenceQuantizer wraps quantlora's own formats.

import fc from 'fast-check';
import { QuantloraError } from '../errors.js';
import { errorBound, idempotenceAllowance } from '../quant/bounds.js';
import type { QuantFormat } from '../quant/formats.js';
import { packCodes, unpackCodes } from '../quant/packing.js';
import { dequantizeRows, quantizeRows, storageBytes, type QuantParts } from '../quant/reference.js';
import { weightMatrix, type WeightMatrix } from './arbitraries.js';

type MaybePromise<T> = T | Promise<T>;

/** One number for every element, or one per element. */
export type Bound = number | ArrayLike<number>;

export interface IdempotenceAllowance {
  /** How far dequantize(quantize(dequantize(q))) may move from dequantize(q), absolute. */
  slack: Bound;
  /** Per element, nonzero where the code may change as well. */
  codesMayChange?: ArrayLike<number>;
}

export interface QuantizerUnderTest<Q> {
  name: string;
  /** Bits per code. */
  bits: number;
  /** Number of valid codes, if fewer than 2^bits (e.g. 3 for a ternary code in 2 bits). */
  levels?: number;
  quantize(w: Float32Array, rows: number, cols: number): MaybePromise<Q>;
  /** Unpacked codes, one per element, row-major. */
  codes(q: Q): MaybePromise<Uint8Array>;
  /** Packed codes, if the quantizer packs; checked to unpack (with `unpack`, else quantlora's layout) to codes(q). */
  packed?(q: Q): MaybePromise<Uint8Array>;
  unpack?(packed: Uint8Array, rows: number, cols: number): Uint8Array;
  dequantize(q: Q): MaybePromise<Float32Array>;
  /** Allowed |w - dequantize(q)| per element, including the quantizer's own float rounding. */
  errorBound(w: Float32Array, rows: number, cols: number, q: Q): MaybePromise<Bound>;
  /** Storage the quantized form takes, and what the format's formula says it should take. */
  bytes?(q: Q): number;
  expectedBytes?(rows: number, cols: number): number;
  /** Where re-quantization may move values or codes (default: nowhere, beyond float rounding). */
  idempotence?(q: Q, rows: number, cols: number): MaybePromise<IdempotenceAllowance>;
}

export type CheckName = 'quantize' | 'shape' | 'codes-in-range' | 'pack-round-trip' | 'error-bound' | 'idempotence' | 'bytes' | 'rejects-non-finite';

export interface Violation {
  check: CheckName;
  message: string;
  row?: number;
  col?: number;
}

export class InvariantError extends QuantloraError {
  constructor(readonly quantizer: string, readonly violations: readonly Violation[], context = '') {
    super(`quantizer '${quantizer}' violates its invariants${context}:\n` + violations.map((v) => `  [${v.check}] ${v.message}`).join('\n'));
  }
}

/**
 * The error-bound check allows bound * (1 + 2^-20) + 1e-37: the bound is itself computed in floating
 * point (a few roundings of 2^-24 each), and below float32's normal range (1.2e-38) values are
 * subnormal, with absolute steps of 1.4e-45 that no relative tolerance covers.
 */
export const BOUND_REL_TOL = 2 ** -20;
export const ABS_TOL = 1e-37;
/**
 * Re-quantizing recomputes scales from values that were rounded to float32, which can move a scale
 * by a few ulps without changing any code: dequantized values may differ by 8 float32 ulps
 * (8 * 2^-23, about 1e-6) relative.
 */
export const IDEMPOTENCE_REL_TOL = 1e-6;
const MAX_REPORTED = 5;

/** Collects the violations of one check: the first few in full, then a count. */
class Collector {
  private readonly list: Violation[] = [];
  private more = 0;
  constructor(private readonly check: CheckName, private readonly cols: number) {}

  add(message: string, index?: number): void {
    if (this.list.length >= MAX_REPORTED) {
      this.more++;
      return;
    }
    if (index === undefined) {
      this.list.push({ check: this.check, message });
      return;
    }
    const row = Math.floor(index / this.cols);
    const col = index % this.cols;
    this.list.push({ check: this.check, message: `row ${row}, col ${col}: ${message}`, row, col });
  }

  done(): Violation[] {
    if (this.more > 0) this.list.push({ check: this.check, message: `... and ${this.more} more` });
    return this.list;
  }
}

function at(b: Bound, i: number): number {
  return typeof b === 'number' ? b : b[i];
}

function checkLength(v: Collector, what: string, got: ArrayLike<number> | number, expected: number): boolean {
  if (typeof got === 'number') return true;
  if (got.length === expected) return true;
  v.add(`expected ${what} of ${expected} values, got ${got.length}`);
  return false;
}

function describeError(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/** Every code is an integer in [0, levels). */
export async function checkCodesInRange<Q>(qut: QuantizerUnderTest<Q>, q: Q, rows: number, cols: number): Promise<Violation[]> {
  const v = new Collector('codes-in-range', cols);
  const levels = qut.levels ?? 2 ** qut.bits;
  const codes = await qut.codes(q);
  if (!checkLength(v, 'codes', codes, rows * cols)) return v.done();
  for (let i = 0; i < codes.length; i++) {
    if (!(codes[i] < levels)) v.add(`code ${codes[i]} is outside [0, ${levels})`, i);
  }
  return v.done();
}

/** The packed codes unpack to codes(q); without packed(), quantlora's packing must round-trip them. */
export async function checkPackRoundTrip<Q>(qut: QuantizerUnderTest<Q>, q: Q, rows: number, cols: number): Promise<Violation[]> {
  const v = new Collector('pack-round-trip', cols);
  const codes = await qut.codes(q);
  if (!checkLength(v, 'codes', codes, rows * cols)) return v.done();
  let unpacked: Uint8Array;
  try {
    if (qut.packed) {
      const packed = await qut.packed(q);
      unpacked = qut.unpack ? qut.unpack(packed, rows, cols) : unpackCodes(packed, rows, cols, qut.bits);
    } else {
      unpacked = unpackCodes(packCodes(codes, rows, cols, qut.bits), rows, cols, qut.bits);
    }
  } catch (err) {
    v.add(`packing or unpacking threw ${describeError(err)}`);
    return v.done();
  }
  if (!checkLength(v, 'unpacked codes', unpacked, rows * cols)) return v.done();
  for (let i = 0; i < codes.length; i++) {
    if (unpacked[i] !== codes[i]) v.add(`code ${codes[i]} unpacked as ${unpacked[i]}`, i);
  }
  return v.done();
}

/** |w - dequantize(q)| <= errorBound per element (with the float tolerance above); never NaN. */
export async function checkErrorBound<Q>(qut: QuantizerUnderTest<Q>, w: Float32Array, rows: number, cols: number, q: Q): Promise<Violation[]> {
  const v = new Collector('error-bound', cols);
  const d = await qut.dequantize(q);
  const bound = await qut.errorBound(w, rows, cols, q);
  if (!checkLength(v, 'dequantized values', d, w.length) || !checkLength(v, 'error bounds', bound, w.length)) return v.done();
  for (let i = 0; i < w.length; i++) {
    const err = Math.abs(w[i] - d[i]);
    const allowed = at(bound, i) * (1 + BOUND_REL_TOL) + ABS_TOL;
    if (!(err <= allowed)) v.add(`|${w[i]} - ${d[i]}| = ${err} exceeds the bound ${allowed}`, i);
  }
  return v.done();
}

/**
 * quantize(dequantize(q)) reproduces q: the same codes (except where the quantizer's idempotence()
 * allows a change) and the same dequantized values up to IDEMPOTENCE_REL_TOL plus its slack.
 */
export async function checkIdempotence<Q>(qut: QuantizerUnderTest<Q>, q: Q, rows: number, cols: number): Promise<Violation[]> {
  const v = new Collector('idempotence', cols);
  const d1 = await qut.dequantize(q);
  const c1 = await qut.codes(q);
  let d2: Float32Array;
  let c2: Uint8Array;
  try {
    const q2 = await qut.quantize(Float32Array.from(d1), rows, cols);
    d2 = await qut.dequantize(q2);
    c2 = await qut.codes(q2);
  } catch (err) {
    v.add(`quantize(dequantize(q)) threw ${describeError(err)}`);
    return v.done();
  }
  const allowed: IdempotenceAllowance = qut.idempotence ? await qut.idempotence(q, rows, cols) : { slack: 0 };
  const n = rows * cols;
  if (![d1, d2, c1, c2].every((a) => checkLength(v, 'values', a, n)) || !checkLength(v, 'slack', allowed.slack, n)) return v.done();
  for (let i = 0; i < n; i++) {
    if (c1[i] !== c2[i] && !allowed.codesMayChange?.[i]) v.add(`code ${c1[i]} became ${c2[i]}`, i);
    const tol = IDEMPOTENCE_REL_TOL * Math.max(Math.abs(d1[i]), Math.abs(d2[i])) + at(allowed.slack, i) + ABS_TOL;
    if (!(Math.abs(d2[i] - d1[i]) <= tol)) v.add(`dequantized value ${d1[i]} became ${d2[i]} (allowed ±${tol})`, i);
  }
  return v.done();
}

/** bytes(q) equals expectedBytes(rows, cols), when the quantizer states both. */
export async function checkBytes<Q>(qut: QuantizerUnderTest<Q>, q: Q, rows: number, cols: number): Promise<Violation[]> {
  const v = new Collector('bytes', cols);
  if (!qut.bytes || !qut.expectedBytes) return [];
  const got = qut.bytes(q);
  const expected = qut.expectedBytes(rows, cols);
  if (got !== expected) v.add(`expected ${expected} bytes for [${rows}, ${cols}], got ${got}`);
  return v.done();
}

/** Runs every check on one (finite) weight matrix; an empty list means the quantizer passed.
 *  For weights holding NaN or ±Infinity, use checkRejectsNonFinite instead. */
export async function checkQuantizer<Q>(qut: QuantizerUnderTest<Q>, w: Float32Array, rows: number, cols: number): Promise<Violation[]> {
  if (w.length !== rows * cols) return [{ check: 'shape', message: `expected ${rows * cols} weights for [${rows}, ${cols}], got ${w.length}` }];
  let q: Q;
  try {
    q = await qut.quantize(w, rows, cols);
  } catch (err) {
    return [{ check: 'quantize', message: `quantize threw ${describeError(err)}` }];
  }
  const checks = [
    () => checkCodesInRange(qut, q, rows, cols),
    () => checkPackRoundTrip(qut, q, rows, cols),
    () => checkErrorBound(qut, w, rows, cols, q),
    () => checkIdempotence(qut, q, rows, cols),
    () => checkBytes(qut, q, rows, cols),
  ];
  const out: Violation[] = [];
  for (const check of checks) out.push(...(await check()));
  return out;
}

/** checkQuantizer, throwing an InvariantError that lists the violations. */
export async function assertQuantizer<Q>(qut: QuantizerUnderTest<Q>, w: Float32Array, rows: number, cols: number): Promise<void> {
  const violations = await checkQuantizer(qut, w, rows, cols);
  if (violations.length > 0) throw new InvariantError(qut.name, violations, ` on a [${rows}, ${cols}] weight`);
}

/** quantize must reject weights holding NaN or ±Infinity (throw), never quantize them silently. */
export async function checkRejectsNonFinite<Q>(qut: QuantizerUnderTest<Q>, w: Float32Array, rows: number, cols: number): Promise<Violation[]> {
  if (w.every(Number.isFinite)) return [];
  try {
    await qut.quantize(w, rows, cols);
  } catch {
    return [];
  }
  return [{ check: 'rejects-non-finite', message: `quantize accepted a [${rows}, ${cols}] weight holding non-finite values` }];
}

/**
 * A fast-check property: every matrix from `arb` passes assertQuantizer. For example
 * `await fc.assert(quantizerProperty(myQuantizer), { numRuns: 50, includeErrorInReport: true })`
 * (includeErrorInReport puts the list of violations in the failure message).
 */
export function quantizerProperty<Q>(qut: QuantizerUnderTest<Q>, arb: fc.Arbitrary<WeightMatrix> = weightMatrix()) {
  return fc.asyncProperty(arb, (m) => assertQuantizer(qut, m.data, m.rows, m.cols));
}

/** What referenceQuantizer's quantize returns: the parts and the shape they describe. */
export interface ReferenceQuantized {
  readonly format: QuantFormat;
  readonly rows: number;
  readonly cols: number;
  readonly parts: QuantParts;
}

/**
 * quantlora's own format f (ts/quant/reference.ts) as a QuantizerUnderTest. bytes() adds up the
 * parts actually produced, expectedBytes() is the storageBytes formula; the error bound and the
 * idempotence allowance are derived in ts/quant/bounds.ts.
 */
export function referenceQuantizer(f: QuantFormat): QuantizerUnderTest<ReferenceQuantized> {
  return {
    name: `reference ${f.name}`,
    bits: f.bits,
    quantize: (w, rows, cols) => ({ format: f, rows, cols, parts: quantizeRows(w, rows, cols, f) }),
    codes: (q) => unpackCodes(q.parts.codes, q.rows, q.cols, f.bits),
    packed: (q) => q.parts.codes,
    dequantize: (q) => dequantizeRows(q.parts, q.rows, q.cols, f),
    errorBound: (w, rows, cols, q) => errorBound(w, q.parts, rows, cols, f),
    bytes: (q) => Object.values(q.parts).reduce((sum: number, part) => sum + (part ? part.byteLength : 0), 0),
    expectedBytes: (rows, cols) => storageBytes(rows, cols, f),
    idempotence: (q, rows, cols) => idempotenceAllowance(q.parts, rows, cols, f),
  };
}
