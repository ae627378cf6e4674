// The numeric codes of crates/kernels' op and dtype enums, in the order the Rust side decodes them
// (UnaryOp::from_u32 and friends). One table for every backend that calls the Rust kernels.

import type { BinaryOp, ReduceOp, UnaryOp } from '../backend.js';
import type { DType } from '../dtype.js';

export const UNARY: UnaryOp[] = ['neg', 'exp', 'log', 'sqrt', 'rsqrt', 'abs', 'sign', 'square', 'sigmoid', 'silu', 'siluGrad', 'relu', 'step'];
export const BINARY: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'max', 'min', 'eq', 'gt'];
export const REDUCE: ReduceOp[] = ['sum', 'max'];
export const DTYPE_CODE: Record<DType, number> = { f32: 0, i32: 1, u8: 2 };
