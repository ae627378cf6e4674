// Engine behaviour: values of ops, memory accounting, autograd bookkeeping, typed errors.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as q from '../ts/index.js';
import { knownBounds } from '../ts/tensor.js';

const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-5) => {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= tol * Math.max(1, Math.abs(b[i])), `index ${i}: ${a[i]} vs ${b[i]}`);
};

test('matmul values, transposes and broadcast', async () => {
  const a = q.tensor([[1, 2], [3, 4]]);
  const b = q.tensor([[5, 6], [7, 8]]);
  close(await q.matmul(a, b).data(), [19, 22, 43, 50]);
  close(await q.matmul(a, b, { transA: true }).data(), [26, 30, 38, 44]);
  close(await q.matmul(a, b, { transB: true }).data(), [17, 23, 39, 53]);
  const batched = q.tensor([1, 2, 3, 4, 1, 0, 0, 1], [2, 2, 2]);
  close(await q.matmul(batched, b).data(), [19, 22, 43, 50, 5, 6, 7, 8]);
});

test('broadcasting binary ops and reductions', async () => {
  const a = q.tensor([[1, 2, 3], [4, 5, 6]]);
  close(await q.add(a, q.tensor([10, 20, 30])).data(), [11, 22, 33, 14, 25, 36]);
  close(await q.mul(a, q.tensor([[2], [3]])).data(), [2, 4, 6, 12, 15, 18]);
  close(await q.sum(a, 0).data(), [5, 7, 9]);
  close(await q.mean(a, 1).data(), [2, 5]);
  close(await q.max(a, 1).data(), [3, 6]);
  assert.deepEqual(q.sum(a, 1, { keepDims: true }).shape, [2, 1]);
  assert.deepEqual(q.sum(a).shape, []);
});

test('shape ops move the right elements', async () => {
  const a = q.tensor([0, 1, 2, 3, 4, 5], [2, 3]);
  close(await q.transpose(a).data(), [0, 3, 1, 4, 2, 5]);
  close(await q.slice(a, [0, 1], [2, 2]).data(), [1, 2, 4, 5]);
  close(await q.concat([a, a], 0).data(), [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]);
  close(await q.concat([a, q.tensor([[9], [9]])], 1).data(), [0, 1, 2, 9, 3, 4, 5, 9]);
  close(await q.broadcastTo(q.tensor([1, 2]), [2, 2]).data(), [1, 2, 1, 2]);
  assert.deepEqual(q.reshape(a, [3, -1]).shape, [3, 2]);
});

test('softmax, causal mask, rmsnorm and cross-entropy values', async () => {
  const s = await q.softmax(q.tensor([[0, 0], [0, Math.log(3)]]), { causal: true }).data();
  close(s, [1, 0, 0.25, 0.75]);
  const n = await q.rmsnorm(q.tensor([[3, 4]]), q.tensor([1, 2]), 0).data();
  const r = Math.sqrt((9 + 16) / 2);
  close(n, [3 / r, 8 / r]);
  const ce = await q.crossEntropy(q.tensor([[0, 0], [0, 0]]), q.tensor([1, -100], [2], 'i32')).data();
  close(ce, [Math.log(2)]);
});

test('rope rotates position t by t·θ^(-2i/d) and keeps norms', async () => {
  const x = q.tensor([1, 0, 0, 1], [2, 2]);
  const y = await q.rope(x, { theta: 10000, style: 'half' }).data();
  close(y, [1, 0, -Math.sin(1), Math.cos(1)]);
});

test('tidy frees intermediates; backward through disposed intermediates still works', () => {
  const before = q.liveBuffers();
  const w = q.randn([4, 3], { seed: 1 }).requireGrad();
  const loss = q.tidy(() => {
    const h = q.matmul(q.ones([2, 4]), w);
    return q.sum(q.square(q.silu(h)));
  });
  assert.ok(q.liveBuffers() > before + 2, 'the graph keeps what backward needs');
  q.backward(loss);
  assert.deepEqual(w.grad!.shape, [4, 3]);
  loss.dispose();
  w.dispose();
  assert.equal(q.liveBuffers(), before, 'everything freed after disposing the loss and the leaf');
});

test('grads accumulate across backward calls; grad() returns without touching .grad', async () => {
  const x = q.tensor([1, 2, 3]).requireGrad();
  q.backward(q.sum(q.mul(x, 2)));
  q.backward(q.sum(q.mul(x, 2)));
  close(await x.grad!.data(), [4, 4, 4]);
  const [g] = q.grad(q.sum(q.square(x)), [x]);
  close(await g!.data(), [2, 4, 6]);
  close(await x.grad!.data(), [4, 4, 4]);
});

test('noGrad records nothing', () => {
  const x = q.tensor([1, 2]).requireGrad();
  const y = q.noGrad(() => q.mul(x, 3));
  assert.equal(y.requiresGrad, false);
  assert.throws(() => q.backward(q.sum(y)), q.ValueError);
});

test('typed errors name what was expected and given', () => {
  assert.throws(() => q.add(q.zeros([2, 3]), q.zeros([4])), (e: Error) => e instanceof q.ShapeError && /\[2, 3\].*\[4\]/.test(e.message));
  assert.throws(() => q.matmul(q.zeros([2, 3]), q.zeros([4, 5])), (e: Error) => e instanceof q.ShapeError && /inner dimensions/.test(e.message));
  assert.throws(() => q.reshape(q.zeros([2, 3]), [4, 2]), q.ShapeError);
  assert.throws(() => q.sum(q.zeros([2]), 3), q.ValueError);
  assert.throws(() => q.gather(q.zeros([3, 2]), q.tensor([0, 3], [2], 'i32')), (e: Error) => e instanceof q.ValueError && /id 3/.test(e.message));
  assert.throws(() => q.crossEntropy(q.zeros([2, 3]), q.tensor([0, 7], [2], 'i32')), (e: Error) => e instanceof q.ValueError && /target 7/.test(e.message));
  assert.throws(() => q.crossEntropy(q.zeros([2, 3]), q.zeros([2])), q.DTypeError);
  assert.throws(() => q.tensor([1, 2, 3], [2, 2]), q.ShapeError);
  assert.throws(() => q.rope(q.zeros([2, 3])), q.ShapeError);
  const t = q.zeros([2]);
  t.dispose();
  assert.throws(() => q.add(t, t), q.DisposedError);
});

test('registry: forced unknown backend and failing backends list every reason', () => {
  assert.throws(() => q.setBackend('nope'), (e: Error) => e instanceof q.BackendError && /nope/.test(e.message) && /js/.test(e.message));
  q.registerBackend('broken', () => { throw new Error('no device here'); }, 100);
  try {
    const list = q.backends();
    const broken = list.find((b) => b.name === 'broken')!;
    assert.equal(broken.available, false);
    assert.match(broken.failure!, /no device here/);
    assert.throws(() => q.setBackend('broken'), (e: Error) => e instanceof q.BackendError && /no device here/.test(e.message));
    // the broken backend outranks every other one, yet the active backend is the best one that works
    assert.equal(q.getBackend().name, list.find((b) => b.available)!.name);
    assert.notEqual(q.getBackend().name, 'broken');
  } finally {
    q.removeBackend('broken');
  }
});

test('public quantize API: typed errors for bad formats and non-finite weights; tidy frees quantized parts', () => {
  assert.throws(() => q.formats.nf(5), (e: Error) => e instanceof q.FormatError && /2, 3 or 4/.test(e.message) && /5/.test(e.message));
  assert.throws(() => q.formats.int(4, { group: 0 }), q.QuantloraError);
  const bad = q.tensor([0.1, 0.2, NaN, 0.4], [2, 2]);
  assert.throws(() => q.quantize(bad, q.formats.nf(4)), (e: Error) => e instanceof q.NonFiniteError && /row 1, col 0/.test(e.message));
  assert.throws(() => q.quantize(q.zeros([2, 2], 'i32'), q.formats.nf(4)), q.DTypeError);
  assert.throws(() => q.dequantizeMatmul(q.zeros([3, 5]), q.quantize(q.ones([4, 6]), q.formats.int(4))), (e: Error) => e instanceof q.ShapeError && /input size 6/.test(e.message));
  const before = q.liveBuffers();
  const kept = q.tidy(() => q.quantize(q.randn([4, 70], { seed: 5 }), q.formats.nf(3, { group: 32 })));
  assert.equal(q.liveBuffers(), before + kept.tensors().length, 'only the returned parts survive tidy');
  assert.equal(kept.shape.join(), '4,70');
  kept.dispose();
  assert.equal(q.liveBuffers(), before);
});

test('integer tensors made from host data carry their value range through copies', () => {
  const be = q.backendByName('js');
  const ids = q.tensor(Int32Array.from([5, -2, 9, 0]), [2, 2], 'i32', be);
  assert.deepEqual(knownBounds(ids), [-2, 9]);
  assert.deepEqual(knownBounds(q.slice(ids, [0, 1], [2, 1])), [-2, 9], 'a slice keeps the (conservative) range');
  assert.deepEqual(knownBounds(q.transpose(ids)), [-2, 9]);
  assert.deepEqual(knownBounds(q.reshape(ids, [4])), [-2, 9]);
  assert.deepEqual(knownBounds(q.concat([ids, q.tensor(Int32Array.from([40, 1]), [1, 2], 'i32', be)])), [-2, 40]);
  assert.equal(knownBounds(q.concat([ids, q.zeros([1, 2], 'i32', be)])), undefined, 'a part of unknown range: unknown');
  assert.equal(knownBounds(q.tensor([1, 2], [2], 'f32', be)), undefined);
  // a gather whose ids are proven in range does not read them; one that is not still names the id
  const table = q.tensor(new Float32Array(20), [10, 2], 'f32', be);
  assert.throws(() => q.gather(table, ids), (e: Error) => e instanceof q.ValueError && /id -2 at position 1/.test(e.message));
  assert.throws(() => q.crossEntropy(q.zeros([2, 2, 10], 'f32', be), ids), q.ValueError);
});
