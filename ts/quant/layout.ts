// Which parts a quantized weight has for a format, and their shapes: the one place both the
// QuantizedTensor API and the backends (which allocate the parts) read them from.

import type { DType } from '../dtype.js';
import { DOUBLE_QUANT_BLOCK, type QuantFormat } from './formats.js';
import { rowBytes } from './packing.js';
import { groupsPerRow } from './reference.js';

export type PartName = 'codes' | 'scales' | 'zeros' | 'scaleCodes' | 'scale2' | 'scaleOffset' | 'offsetCodes' | 'offset2';
/** The parts the backend quantize/dequantize kernels see, in their order (NF-ICQ's offset parts are
 *  composed in TS, see api.ts). */
export const PART_NAMES: readonly PartName[] = ['codes', 'scales', 'zeros', 'scaleCodes', 'scale2', 'scaleOffset'];

export interface PartSpec {
  shape: number[];
  dtype: DType;
  size: number;
}

/** The parts a [rows, cols] weight in format f is stored as (absent parts are left out). */
export function partLayout(rows: number, cols: number, f: QuantFormat): Partial<Record<PartName, PartSpec>> {
  const groups = rows * groupsPerRow(cols, f);
  const spec = (shape: number[], dtype: DType): PartSpec => ({ shape, dtype, size: shape.reduce((a, b) => a * b, 1) });
  const out: Partial<Record<PartName, PartSpec>> = { codes: spec([rows, rowBytes(cols, f.bits)], 'u8') };
  if (f.doubleQuant) {
    out.scaleCodes = spec([groups], 'u8');
    out.scale2 = spec([Math.ceil(groups / DOUBLE_QUANT_BLOCK)], 'f32');
    out.scaleOffset = spec([1], 'f32');
  } else {
    out.scales = spec([groups], 'f32');
  }
  if (f.kind === 'int' && !f.symmetric) out.zeros = spec([groups], 'u8');
  return out;
}

/** NF-ICQ's extra parts (formats.ts, "ICQ"): τ's 8-bit code per group and its absmax per 256 groups. */
export function offsetLayout(rows: number, cols: number, f: QuantFormat): { offsetCodes: PartSpec; offset2: PartSpec } {
  const groups = rows * groupsPerRow(cols, f);
  const blocks = Math.ceil(groups / DOUBLE_QUANT_BLOCK);
  return { offsetCodes: { shape: [groups], dtype: 'u8', size: groups }, offset2: { shape: [blocks], dtype: 'f32', size: blocks } };
}
