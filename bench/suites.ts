// Benchmark suites. Each suite builds its inputs on a given backend and returns the function to
// time; the runner runs every suite on every available backend in one process.

import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { dequantize, dequantizeMatmul, formats, matmul, quantize, randn, tensor, type Backend, type QuantizedTensor, type Tensor } from '../ts/index.js';
import { loadModel } from '../ts/io/load-model.js';
import { defaultModelPath } from '../ts/io/model-cache.js';
import { methodSuites } from './method-suites.js';

export interface Work {
  /** Floating-point operations of one call (2 per multiply-add). */
  flops?: number;
  /** Weight bytes read by one call (for GB/s of quantized weights). */
  bytes?: number;
}

export interface Prepared {
  /** The problem size actually run (quick mode shrinks it). */
  size: string;
  run: () => Promise<void>;
  work: Work;
  dispose: () => void;
}

export interface Suite {
  name: string;
  /** A reason to skip this backend (printed), or undefined to run it. */
  skip?: (backend: string, quick: boolean) => string | undefined;
  prepare: (backend: Backend, quick: boolean) => Prepared;
}

async function consume(t: Tensor): Promise<void> {
  await t.data();
  t.dispose();
}

function weight(backend: Backend, rows: number, cols: number): Tensor {
  return randn([rows, cols], { seed: 11, std: 0.02 }, backend);
}

const nf4 = formats.nf(4, { group: 64, doubleQuant: true });

function quantSuite(name: string, tokens: number, size = 4096): Suite {
  return {
    name,
    prepare(backend, quick) {
      const n = quick ? 512 : size;
      const w = weight(backend, n, n);
      const q = quantize(w, nf4);
      w.dispose();
      const x = randn([tokens, n], { seed: 12 }, backend);
      return {
        size: `${tokens}x${n} · (${n}x${n})ᵀ`,
        run: () => consume(dequantizeMatmul(x, q)),
        work: { flops: 2 * tokens * n * n, bytes: q.bytes },
        dispose: () => { q.dispose(); x.dispose(); },
      };
    },
  };
}

export const suites: Suite[] = [
  {
    name: 'quantize nf4-dq',
    prepare(backend, quick) {
      const n = quick ? 512 : 4096;
      const w = weight(backend, n, n);
      return {
        size: `${n}x${n}`,
        run: async () => { const q: QuantizedTensor = quantize(w, nf4); await q.codes.data(); q.dispose(); },
        work: { bytes: n * n * 4 },
        dispose: () => w.dispose(),
      };
    },
  },
  {
    name: 'dequantize nf4-dq',
    prepare(backend, quick) {
      const n = quick ? 512 : 4096;
      const w = weight(backend, n, n);
      const q = quantize(w, nf4);
      w.dispose();
      return { size: `${n}x${n}`, run: () => consume(dequantize(q)), work: { bytes: q.bytes }, dispose: () => q.dispose() };
    },
  },
  quantSuite('dequantizeMatmul nf4-dq, 1 token', 1),
  quantSuite('dequantizeMatmul nf4-dq, 64 tokens', 64),
  quantSuite('dequantizeMatmul nf4-dq 8192, 1 token', 1, 8192),
  matmulSuite('matmul f32', 512),
  matmulSuite('matmul f32 1024', 1024),
];

function matmulSuite(name: string, size: number): Suite {
  return {
    name,
    prepare(backend, quick) {
      const n = quick ? Math.min(size, 256) : size;
      const a = randn([n, n], { seed: 1 }, backend);
      const b = randn([n, n], { seed: 2 }, backend);
      return { size: `${n}x${n}x${n}`, run: () => consume(matmul(a, b)), work: { flops: 2 * n * n * n }, dispose: () => { a.dispose(); b.dispose(); } };
    },
  };
}

// A whole model forward + loss (what perplexity evaluation runs per window): the default model
// when it is in the cache (tiny fixture model in quick mode). tokens/s = tokens / mean time.
function modelSuite(): Suite {
  return {
    name: 'llama forward+loss',
    prepare(backend, quick) {
      const path = quick || !existsSync(defaultModelPath()) ? 'test/fixtures/tiny-llama/llama-tied' : defaultModelPath();
      const { model } = loadModel(path, { backend });
      const tokens = quick ? 12 : 64;
      const ids = tensor(Int32Array.from({ length: tokens }, (_, i) => (i * 7919) % model.config.vocabSize), [1, tokens], 'i32', backend);
      const params = model.tensors().reduce((n, t) => n + t.size, 0);
      return {
        size: `${basename(path)}, ${tokens} tokens`,
        run: () => consume(model.loss(ids)),
        work: { flops: 2 * params * tokens },
        dispose: () => { model.dispose(); ids.dispose(); },
      };
    },
  };
}

suites.push(modelSuite());
suites.push(...methodSuites);
