// Element types. f32 for values, i32 for token ids, u8 for packed quantization codes.

export type DType = 'f32' | 'i32' | 'u8';

export type TypedArrayFor<D extends DType> = D extends 'f32'
  ? Float32Array
  : D extends 'i32'
    ? Int32Array
    : Uint8Array;

export type AnyTypedArray = Float32Array | Int32Array | Uint8Array;

export const BYTES_PER_ELEMENT: Record<DType, number> = { f32: 4, i32: 4, u8: 1 };

export function allocArray(dtype: DType, size: number): AnyTypedArray {
  if (dtype === 'f32') return new Float32Array(size);
  if (dtype === 'i32') return new Int32Array(size);
  return new Uint8Array(size);
}

export function dtypeOfArray(a: AnyTypedArray): DType {
  if (a instanceof Float32Array) return 'f32';
  if (a instanceof Int32Array) return 'i32';
  return 'u8';
}
