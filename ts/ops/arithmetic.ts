// Elementwise ops with broadcasting, scalar ops and unary functions, each with its backward rule.

import type { BinaryOp, UnaryOp } from '../backend.js';
import { record, setGradAdd } from '../autograd.js';
import { ValueError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { sumTo } from './reduce.js';
import { backendOf, broadcastShapes, expectDType, out, padShape } from './util.js';

function binaryRaw(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const be = backendOf(op, a, b);
  expectDType(op, a, 'f32', 'first input');
  expectDType(op, b, 'f32', 'second input');
  const shape = broadcastShapes(op, a.shape, b.shape);
  const h = be.binary(op, a.handle, padShape(a.shape, shape.length), b.handle, padShape(b.shape, shape.length), shape);
  return out(be, h, shape);
}

function unaryRaw(op: UnaryOp, a: Tensor): Tensor {
  expectDType(op, a, 'f32');
  return out(a.backend, a.backend.unary(op, a.handle, a.size), a.shape);
}

/** a*mul + add elementwise. */
export function affine(a: Tensor, mul: number, add = 0): Tensor {
  expectDType('affine', a, 'f32');
  if (!Number.isFinite(mul) || !Number.isFinite(add)) throw new ValueError(`affine: scalars must be finite, got mul=${mul}, add=${add}`);
  const y = out(a.backend, a.backend.affine(a.handle, a.size, mul, add), a.shape);
  return record('affine', [a], y, (g) => [affine(g, mul)]);
}

export function pow(a: Tensor, p: number): Tensor {
  expectDType('pow', a, 'f32');
  const y = out(a.backend, a.backend.pow(a.handle, a.size, p), a.shape);
  return record('pow', [a], y, (g, { inputs: [x] }) => [mul(g, affine(pow(x, p - 1), p))]);
}

type Operand = Tensor | number;

function isNum(x: Operand): x is number {
  return typeof x === 'number';
}

export function add(a: Operand, b: Operand): Tensor {
  if (isNum(b)) return affine(a as Tensor, 1, b);
  if (isNum(a)) return affine(b, 1, a);
  const y = binaryRaw('add', a, b);
  return record('add', [a, b], y, (g, { inputs: [x, z] }) => [sumTo(g, x.shape), sumTo(g, z.shape)]);
}

export function sub(a: Operand, b: Operand): Tensor {
  if (isNum(b)) return affine(a as Tensor, 1, -b);
  if (isNum(a)) return affine(b, -1, a);
  const y = binaryRaw('sub', a, b);
  return record('sub', [a, b], y, (g, { inputs: [x, z], needs }) => [sumTo(g, x.shape), needs[1] ? sumTo(neg(g), z.shape) : null]);
}

export function mul(a: Operand, b: Operand): Tensor {
  if (isNum(b)) return affine(a as Tensor, b, 0);
  if (isNum(a)) return affine(b, a, 0);
  const y = binaryRaw('mul', a, b);
  return record('mul', [a, b], y, (g, { inputs: [x, z], needs }) => [
    needs[0] ? sumTo(mul(g, z), x.shape) : null,
    needs[1] ? sumTo(mul(g, x), z.shape) : null,
  ]);
}

export function div(a: Operand, b: Operand): Tensor {
  if (isNum(b)) {
    if (b === 0) throw new ValueError('div: division by the scalar 0');
    return affine(a as Tensor, 1 / b, 0);
  }
  if (isNum(a)) return affine(pow(b, -1), a, 0);
  const y = binaryRaw('div', a, b);
  return record('div', [a, b], y, (g, { inputs: [x, z], needs }) => [
    needs[0] ? sumTo(div(g, z), x.shape) : null,
    // d(x/z)/dz = −x/z²
    needs[1] ? sumTo(neg(div(mul(g, x), square(z))), z.shape) : null,
  ]);
}

/** Elementwise maximum; the gradient goes to a where a >= b, else to b. */
export function maximum(a: Tensor, b: Tensor): Tensor {
  const y = binaryRaw('max', a, b);
  return record('maximum', [a, b], y, (g, { inputs: [x, z] }) => {
    const bWins = binaryRaw('gt', z, x);
    return [sumTo(mul(g, affine(bWins, -1, 1)), x.shape), sumTo(mul(g, bWins), z.shape)];
  });
}

/** 1 where a == b else 0 (no gradient). */
export function equal(a: Tensor, b: Tensor): Tensor {
  return binaryRaw('eq', a, b);
}

/** 1 where a > b else 0 (no gradient). */
export function greater(a: Tensor, b: Tensor): Tensor {
  return binaryRaw('gt', a, b);
}

export function neg(a: Tensor): Tensor {
  return affine(a, -1, 0);
}

export function exp(a: Tensor): Tensor {
  const y = unaryRaw('exp', a);
  return record('exp', [a], y, (g, { saved: [e] }) => [mul(g, e)], [y]);
}

export function log(a: Tensor): Tensor {
  return record('log', [a], unaryRaw('log', a), (g, { inputs: [x] }) => [div(g, x)]);
}

export function sqrt(a: Tensor): Tensor {
  const y = unaryRaw('sqrt', a);
  return record('sqrt', [a], y, (g, { saved: [s] }) => [div(affine(g, 0.5), s)], [y]);
}

export function rsqrt(a: Tensor): Tensor {
  const y = unaryRaw('rsqrt', a);
  return record('rsqrt', [a], y, (g, { saved: [r] }) => [mul(g, affine(pow(r, 3), -0.5))], [y]);
}

export function abs(a: Tensor): Tensor {
  return record('abs', [a], unaryRaw('abs', a), (g, { inputs: [x] }) => [mul(g, unaryRaw('sign', x))]);
}

export function square(a: Tensor): Tensor {
  return record('square', [a], unaryRaw('square', a), (g, { inputs: [x] }) => [mul(g, affine(x, 2))]);
}

export function sigmoid(a: Tensor): Tensor {
  const y = unaryRaw('sigmoid', a);
  return record('sigmoid', [a], y, (g, { saved: [s] }) => [mul(g, mul(s, affine(s, -1, 1)))], [y]);
}

export function silu(a: Tensor): Tensor {
  return record('silu', [a], unaryRaw('silu', a), (g, { inputs: [x] }) => [mul(g, unaryRaw('siluGrad', x))]);
}

/** silu(a)·b (SwiGLU's gate and up): one kernel where the backend has it and a and b have one
 *  shape, else silu then mul, broadcasting as mul does (the same values either way). The fused
 *  backward recomputes silu(a), so only a and b are kept for it. */
export function siluMul(a: Tensor, b: Tensor): Tensor {
  const be = backendOf('siluMul', a, b);
  expectDType('siluMul', a, 'f32', 'first input');
  expectDType('siluMul', b, 'f32', 'second input');
  if (!be.siluMul || a.rank !== b.rank || a.shape.some((d, i) => d !== b.shape[i])) return mul(silu(a), b);
  const y = out(be, be.siluMul(a.handle, b.handle, a.size), a.shape);
  return record('siluMul', [a, b], y, (g, { inputs: [x, z], needs }) => [
    needs[0] ? mul(mul(g, z), unaryRaw('siluGrad', x)) : null,
    needs[1] ? mul(g, unaryRaw('silu', x)) : null,
  ]);
}

export function relu(a: Tensor): Tensor {
  return record('relu', [a], unaryRaw('relu', a), (g, { inputs: [x] }) => [mul(g, unaryRaw('step', x))]);
}

/** Sign of each element (no gradient). */
export function sign(a: Tensor): Tensor {
  return unaryRaw('sign', a);
}

setGradAdd((a, b) => binaryRaw('add', a, b));
