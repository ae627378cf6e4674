// Every op's backward rule against finite differences (JS reference backend).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import { gradCheck } from './gradcheck.js';

const pos = (n: number, lo = 0.5) => Float32Array.from({ length: n }, (_, i) => lo + ((i * 0.37) % 1.5));

test('elementwise binary ops with broadcasting', () => {
  gradCheck('add', (a, b) => q.add(a, b), [{ shape: [2, 3] }, { shape: [3] }]);
  gradCheck('sub', (a, b) => q.sub(a, b), [{ shape: [2, 1, 3] }, { shape: [4, 1] }]);
  gradCheck('mul', (a, b) => q.mul(a, b), [{ shape: [3, 4] }, { shape: [3, 1] }]);
  gradCheck('div', (a, b) => q.div(a, b), [{ shape: [2, 3] }, { shape: [1, 3], data: pos(3, 1) }]);
  gradCheck('maximum', (a, b) => q.maximum(a, b), [{ shape: [4, 3] }, { shape: [3] }]);
});

test('scalar ops', () => {
  gradCheck('add scalar', (a) => q.add(a, 3), [{ shape: [5] }]);
  gradCheck('scalar minus', (a) => q.sub(2, a), [{ shape: [5] }]);
  gradCheck('mul scalar', (a) => q.mul(-1.5, a), [{ shape: [2, 2] }]);
  gradCheck('scalar over', (a) => q.div(2, a), [{ shape: [4], data: pos(4, 1) }]);
  gradCheck('div scalar', (a) => q.div(a, 4), [{ shape: [4] }]);
  gradCheck('affine', (a) => q.affine(a, 0.5, 2), [{ shape: [3] }]);
  gradCheck('pow', (a) => q.pow(a, 2.5), [{ shape: [6], data: pos(6) }]);
});

test('unary functions', () => {
  gradCheck('neg', (a) => q.neg(a), [{ shape: [4] }]);
  gradCheck('exp', (a) => q.exp(a), [{ shape: [5] }]);
  gradCheck('log', (a) => q.log(a), [{ shape: [5], data: pos(5) }]);
  gradCheck('sqrt', (a) => q.sqrt(a), [{ shape: [5], data: pos(5) }]);
  gradCheck('rsqrt', (a) => q.rsqrt(a), [{ shape: [5], data: pos(5) }]);
  gradCheck('abs', (a) => q.abs(a), [{ shape: [5], data: Float32Array.of(-2, -0.5, 0.3, 1, 2) }]);
  gradCheck('square', (a) => q.square(a), [{ shape: [5] }]);
  gradCheck('sigmoid', (a) => q.sigmoid(a), [{ shape: [5] }]);
  gradCheck('silu', (a) => q.silu(a), [{ shape: [2, 4] }]);
  gradCheck('relu', (a) => q.relu(a), [{ shape: [5], data: Float32Array.of(-2, -0.5, 0.3, 1, 2) }]);
});

test('reductions along axes', () => {
  gradCheck('sum all', (a) => q.sum(a), [{ shape: [2, 3] }]);
  gradCheck('sum axis', (a) => q.sum(a, 1), [{ shape: [2, 3, 4] }]);
  gradCheck('sum axes keepDims', (a) => q.sum(a, [0, 2], { keepDims: true }), [{ shape: [2, 3, 4] }]);
  gradCheck('mean', (a) => q.mean(a, -1), [{ shape: [3, 5] }]);
  gradCheck('max', (a) => q.max(a, 0), [{ shape: [4, 3] }]);
  gradCheck('max all', (a) => q.max(a), [{ shape: [7] }]);
});

test('shape ops', () => {
  gradCheck('reshape', (a) => q.mul(q.reshape(a, [3, -1]), q.reshape(a, [3, 2])), [{ shape: [2, 3] }]);
  gradCheck('transpose', (a) => q.transpose(a), [{ shape: [2, 3, 4] }]);
  gradCheck('transpose perm', (a) => q.transpose(a, [2, 0, 1]), [{ shape: [2, 3, 4] }]);
  // moving axes of size 1 only (a view, no copy), and the identity
  gradCheck('transpose of unit axes', (a) => q.mul(q.transpose(a, [0, 2, 1, 3]), q.transpose(a, [0, 2, 1, 3])), [{ shape: [2, 1, 3, 4] }]);
  gradCheck('transpose identity', (a) => q.transpose(a, [0, 1]), [{ shape: [2, 3] }]);
  gradCheck('slice', (a) => q.slice(a, [1, 0, 1], [1, 2, -1]), [{ shape: [2, 3, 4] }]);
  gradCheck('concat', (a, b) => q.concat([a, b, a], 1), [{ shape: [2, 3] }, { shape: [2, 1] }]);
  gradCheck('broadcastTo', (a) => q.broadcastTo(a, [3, 2, 4]), [{ shape: [2, 1] }]);
});

test('a transpose that moves only axes of size 1 shares the storage and has the values of a copy', () => {
  const a = q.tensor(Float32Array.from({ length: 24 }, (_, i) => i), [2, 1, 3, 4]);
  const t = q.transpose(a, [0, 2, 1, 3]);
  assert.deepEqual(t.shape, [2, 3, 1, 4]);
  assert.equal(t.storage, a.storage, 'a view');
  assert.deepEqual(Array.from(t.dataSync()), Array.from(a.dataSync()));
  const u = q.transpose(a, [1, 0, 2, 3]); // [1, 2, 3, 4]: still the memory order
  assert.equal(u.storage, a.storage);
  const w = q.transpose(a, [0, 1, 3, 2]); // swaps 3 and 4: a copy
  assert.notEqual(w.storage, a.storage);
  assert.deepEqual(Array.from(w.dataSync().slice(0, 4)), [0, 4, 8, 1]);
  for (const x of [a, t, u, w]) x.dispose();
});

test('matmul: batched, transposed, broadcast', () => {
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const a = transA ? [2, 4, 3] : [2, 3, 4];
      const b = transB ? [2, 5, 4] : [2, 4, 5];
      gradCheck(`matmul tA=${transA} tB=${transB}`, (x, y) => q.matmul(x, y, { transA, transB }), [{ shape: a }, { shape: b }]);
      gradCheck(`matmul 2-D b tA=${transA} tB=${transB}`, (x, y) => q.matmul(x, y, { transA, transB }), [{ shape: a }, { shape: b.slice(1) }]);
      gradCheck(`matmul 2-D a tA=${transA} tB=${transB}`, (x, y) => q.matmul(x, y, { transA, transB }), [{ shape: a.slice(1) }, { shape: b }]);
    }
  }
});

test('gather (embedding lookup)', () => {
  gradCheck('gather', (t, ids) => q.gather(t, ids), [{ shape: [5, 3] }, { shape: [2, 3], data: Float32Array.of(0, 4, 4, 1, 0, 2), dtype: 'i32', fixed: true }]);
});

test('transformer ops', () => {
  gradCheck('rmsnorm', (x, w) => q.rmsnorm(x, w, 1e-5), [{ shape: [3, 6] }, { shape: [6] }]);
  gradCheck('rope half', (x) => q.rope(x, { theta: 100, offset: 3 }), [{ shape: [2, 3, 8] }]);
  gradCheck('rope interleaved', (x) => q.rope(x, { theta: 10000, style: 'interleaved' }), [{ shape: [1, 4, 6] }]);
  gradCheck('softmax', (x) => q.softmax(x), [{ shape: [3, 5] }]);
  gradCheck('softmax causal', (x) => q.softmax(x, { causal: true }), [{ shape: [2, 4, 4] }]);
  gradCheck('softmax causal with past keys', (x) => q.softmax(x, { causal: true }), [{ shape: [2, 6] }]);
});

test('losses', () => {
  gradCheck('crossEntropy', (l, t) => q.crossEntropy(l, t), [{ shape: [4, 6] }, { shape: [4], data: Float32Array.of(1, 5, 0, 3), dtype: 'i32' }]);
  gradCheck('crossEntropy ignore', (l, t) => q.crossEntropy(l, t, { ignoreIndex: -1 }), [{ shape: [2, 2, 5] }, { shape: [2, 2], data: Float32Array.of(1, -1, 4, 0), dtype: 'i32' }]);
  gradCheck('mse', (a, b) => q.mse(a, b), [{ shape: [3, 4] }, { shape: [3, 4] }]);
});

test('dequantizeMatmul is differentiable in x', () => {
  const w = q.keep(q.randn([5, 12], { seed: 3 }));
  const qw = q.quantize(w, q.formats.nf(4, { group: 4 }));
  for (const t of qw.tensors()) q.keep(t);
  gradCheck('dequantizeMatmul', (x) => q.dequantizeMatmul(x, qw), [{ shape: [2, 3, 12] }]);
  qw.dispose();
  w.dispose();
});
