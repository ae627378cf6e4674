// The JS reference backend: every kernel in plain TypeScript over typed arrays. It is the oracle
// that every other backend is tested against, so each kernel is written for clarity.

import type { Backend, BackendInfo, Handle, IcqSearchParams, MatmulDims, QuantHandles, RopeParams } from '../../backend.js';
import { allocArray, type AnyTypedArray, type DType } from '../../dtype.js';
import type { QuantFormat } from '../../quant/formats.js';
import { dequantizeMatmulRows, dequantizeMatmulTRows, dequantizeRows, quantizeRows, type QuantParts } from '../../quant/reference.js';
import { icqSearchRows } from '../../quant/icq.js';
import { registerBackend } from '../../registry.js';
import { affine, binary, cast, pow, reduce, unary } from './elementwise.js';
import { gather, scatterAddRows, strided, writeStrided } from './layout.js';
import { matmul } from './matmul.js';
import * as tf from './transformer.js';

type F = Float32Array;

export class JsBackend implements Backend {
  readonly name = 'js';
  private live = new Set<object>();

  info(): BackendInfo {
    return { name: this.name, details: { kind: 'reference (plain TypeScript)', simd: false, threads: 1 } };
  }

  private own<T extends AnyTypedArray>(a: T): T {
    this.live.add(a);
    return a;
  }

  upload(data: AnyTypedArray): Handle {
    return this.own(data.slice());
  }
  zeros(dtype: DType, size: number): Handle {
    return this.own(allocArray(dtype, size));
  }
  fill(size: number, value: number): Handle {
    return this.own(new Float32Array(size).fill(value));
  }
  async read(h: Handle, dtype: DType, size: number): Promise<AnyTypedArray> {
    return this.readSync(h, dtype, size);
  }
  readSync(h: Handle, _dtype: DType, size: number): AnyTypedArray {
    return (h as AnyTypedArray).slice(0, size);
  }
  free(h: Handle): void {
    this.live.delete(h);
  }
  liveBuffers(): number {
    return this.live.size;
  }

  unary(op: Parameters<Backend['unary']>[0], a: Handle, size: number): Handle {
    return this.own(unary(op, a as F, size));
  }
  affine(a: Handle, size: number, mul: number, add: number): Handle {
    return this.own(affine(a as F, size, mul, add));
  }
  pow(a: Handle, size: number, p: number): Handle {
    return this.own(pow(a as F, size, p));
  }
  binary(op: Parameters<Backend['binary']>[0], a: Handle, aShape: number[], b: Handle, bShape: number[], outShape: number[]): Handle {
    return this.own(binary(op, a as F, aShape, b as F, bShape, outShape));
  }
  cast(a: Handle, _from: DType, to: DType, size: number): Handle {
    return this.own(cast(a as AnyTypedArray, to, size));
  }
  reduce(op: Parameters<Backend['reduce']>[0], a: Handle, shape: number[], axes: number[]): Handle {
    return this.own(reduce(op, a as F, shape, axes));
  }

  strided(a: Handle, dtype: DType, offset: number, strides: number[], outShape: number[]): Handle {
    return this.own(strided(a as AnyTypedArray, dtype, offset, strides, outShape));
  }
  writeStrided(dst: Handle, _dtype: DType, src: Handle, offset: number, strides: number[], srcShape: number[]): void {
    writeStrided(dst as AnyTypedArray, src as AnyTypedArray, offset, strides, srcShape);
  }
  gather(table: Handle, rows: number, dim: number, ids: Handle, count: number): Handle {
    return this.own(gather(table as F, rows, dim, ids as Int32Array, count));
  }
  scatterAddRows(grad: Handle, count: number, dim: number, ids: Handle, rows: number): Handle {
    return this.own(scatterAddRows(grad as F, count, dim, ids as Int32Array, rows));
  }

  matmul(a: Handle, b: Handle, d: MatmulDims): Handle {
    return this.own(matmul(a as F, b as F, d));
  }

  rmsnorm(x: Handle, w: Handle, rows: number, dim: number, eps: number): Handle {
    return this.own(tf.rmsnorm(x as F, w as F, rows, dim, eps));
  }
  rmsnormBackward(x: Handle, w: Handle, dy: Handle, rows: number, dim: number, eps: number): [Handle, Handle] {
    const [dx, dw] = tf.rmsnormBackward(x as F, w as F, dy as F, rows, dim, eps);
    return [this.own(dx), this.own(dw)];
  }
  rope(x: Handle, p: RopeParams): Handle {
    return this.own(tf.rope(x as F, p));
  }
  softmax(x: Handle, rows: number, cols: number, causalQueries: number): Handle {
    return this.own(tf.softmax(x as F, rows, cols, causalQueries));
  }
  softmaxBackward(y: Handle, dy: Handle, rows: number, cols: number): Handle {
    return this.own(tf.softmaxBackward(y as F, dy as F, rows, cols));
  }
  crossEntropy(logits: Handle, targets: Handle, rows: number, vocab: number, ignoreIndex: number): Handle {
    return this.own(tf.crossEntropy(logits as F, targets as Int32Array, rows, vocab, ignoreIndex));
  }
  crossEntropyBackward(logits: Handle, targets: Handle, dLoss: Handle, rows: number, vocab: number, ignoreIndex: number): Handle {
    return this.own(tf.crossEntropyBackward(logits as F, targets as Int32Array, dLoss as F, rows, vocab, ignoreIndex));
  }

  quantize(w: Handle, rows: number, cols: number, f: QuantFormat): QuantHandles {
    const parts = quantizeRows(w as F, rows, cols, f);
    const out: Record<string, Handle> = {};
    for (const [key, arr] of Object.entries(parts)) if (arr) out[key] = this.own(arr as AnyTypedArray);
    return out as unknown as QuantHandles;
  }
  dequantize(q: QuantHandles, rows: number, cols: number, f: QuantFormat): Handle {
    return this.own(dequantizeRows(q as unknown as QuantParts, rows, cols, f));
  }
  dequantizeMatmul(x: Handle, xRows: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat): Handle {
    return this.own(dequantizeMatmulRows(x as F, xRows, q as unknown as QuantParts, rows, cols, f));
  }
  dequantizeMatmulT(dy: Handle, n: number, q: QuantHandles, rows: number, cols: number, f: QuantFormat): Handle {
    return this.own(dequantizeMatmulTRows((dy as F).subarray(0, n * rows), n, q as unknown as QuantParts, rows, cols, f));
  }
  icqSearch(w: Handle, rows: number, cols: number, f: QuantFormat, params: IcqSearchParams): Handle {
    return this.own(icqSearchRows(w as F, rows, cols, f, params));
  }
}

registerBackend('js', () => new JsBackend(), 0);
