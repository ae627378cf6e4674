// dtype conversion (no gradient: integer tensors are never differentiated).

import type { DType } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { out } from './util.js';

export function cast(a: Tensor, to: DType): Tensor {
  if (a.dtype === to) return a;
  return out(a.backend, a.backend.cast(a.handle, a.dtype, to, a.size), a.shape, to);
}
