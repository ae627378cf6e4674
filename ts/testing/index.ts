// quantlora/testing: property-test quantizers (quantlora's formats or your own) with fast-check.

export {
  WEIGHT_KINDS, HUGE_LIMIT, generateWeights, weightMatrix,
  gaussianMatrix, heavyTailedMatrix, zeroGroupsMatrix, tinyMatrix, hugeMatrix, mixedMatrix,
} from './arbitraries.js';
export type { WeightKind, WeightMatrix, WeightMatrixOptions } from './arbitraries.js';
export {
  InvariantError, BOUND_REL_TOL, ABS_TOL, IDEMPOTENCE_REL_TOL,
  checkCodesInRange, checkPackRoundTrip, checkErrorBound, checkIdempotence, checkBytes,
  checkQuantizer, assertQuantizer, checkRejectsNonFinite, quantizerProperty, referenceQuantizer,
} from './invariants.js';
export type { Bound, CheckName, IdempotenceAllowance, QuantizerUnderTest, ReferenceQuantized, Violation } from './invariants.js';
