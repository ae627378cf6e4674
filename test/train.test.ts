// The training toolkit: AdamW/Adam against PyTorch's update written out in float64, schedules,
// global-norm clipping, the NaN guard, and checkpoints (round trip, corrupt files, resume).

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import * as q from '../ts/index.js';
import { Adam, AdamW } from '../ts/train/optim.js';
import { constantLr, cosineLr } from '../ts/train/schedule.js';
import { clipGradNorm, gradNorm } from '../ts/train/clip.js';
import { NanGuard } from '../ts/train/guard.js';
import { assignHost } from '../ts/train/tensors.js';
import { CheckpointError, TrainingDivergedError } from '../ts/train/errors.js';
import { loadCheckpoint, readCheckpoint, restoreTensors, saveCheckpoint } from '../ts/train/checkpoint.js';

const js = q.backendByName('js');
const backendNames = q.backends().filter((s) => s.available).map((s) => s.name);
const dir = mkdtempSync(join(tmpdir(), 'quantlora-train-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const host = (t: q.Tensor) => Array.from(t.dataSync() as Float32Array);
const close = (a: number[], b: number[], tol: number, what: string) => {
  assert.equal(a.length, b.length, what);
  a.forEach((x, i) => assert.ok(Math.abs(x - b[i]) <= tol * Math.max(1, Math.abs(b[i])), `${what}[${i}]: ${x} vs ${b[i]}`));
};

/** PyTorch's AdamW / Adam for one parameter, in float64. */
function torchAdam(p: number[], grads: (number[] | null)[], lrs: number[], o: { wd: number; b1: number; b2: number; eps: number; decoupled: boolean }): number[] {
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  let t = 0;
  grads.forEach((g0, k) => {
    if (!g0) return;
    t++;
    const lr = lrs[k];
    const g = o.decoupled ? g0 : g0.map((x, i) => x + o.wd * p[i]);
    if (o.decoupled) p = p.map((x) => x * (1 - lr * o.wd));
    for (let i = 0; i < p.length; i++) {
      m[i] = o.b1 * m[i] + (1 - o.b1) * g[i];
      v[i] = o.b2 * v[i] + (1 - o.b2) * g[i] * g[i];
      const denom = Math.sqrt(v[i]) / Math.sqrt(1 - o.b2 ** t) + o.eps;
      p[i] -= (lr / (1 - o.b1 ** t)) * (m[i] / denom);
    }
  });
  return p;
}

test('AdamW and Adam match PyTorch\'s update over groups, lr changes and a missing gradient', () => {
  for (const decoupled of [true, false]) {
    q.tidy(() => {
      const p0 = [0.5, -1.25, 2, 0.01];
      const p1 = [3, -0.2];
      const a = q.tensor(p0, [2, 2], 'f32', js);
      const b = q.tensor(p1, [2], 'f32', js);
      const groups = [
        { params: [a], lr: 0.1, weightDecay: 0.05 },
        { params: [b], lr: 0.01, weightDecay: 0.2, betas: [0.8, 0.99] as [number, number], eps: 1e-6 },
      ];
      const opt = decoupled ? new AdamW(groups) : new Adam(groups);
      const ga = [[0.3, -0.1, 0.02, 5], [-0.3, 0.2, 0.5, 1], [1e-3, -2, 0.1, 0.1], [0.4, 0.4, -0.4, 0]];
      const gb: (number[] | null)[] = [[1, -1], null, [0.5, 2], [-3, 0.25]];
      const scales = [1, 0.5, 0.5, 2];
      for (let k = 0; k < 4; k++) {
        opt.setLrScale(scales[k]);
        const grads = [q.tensor(ga[k], [2, 2], 'f32', js), gb[k] ? q.tensor(gb[k]!, [2], 'f32', js) : null];
        opt.step(k % 2 ? new Map([[a, grads[0]], [b, grads[1]]]) : grads);
      }
      const ea = torchAdam([...p0], ga, scales.map((s) => 0.1 * s), { wd: 0.05, b1: 0.9, b2: 0.999, eps: 1e-8, decoupled });
      const eb = torchAdam([...p1], gb, scales.map((s) => 0.01 * s), { wd: 0.2, b1: 0.8, b2: 0.99, eps: 1e-6, decoupled });
      close(host(a), ea, 2e-6, `${decoupled ? 'AdamW' : 'Adam'} a`);
      close(host(b), eb, 2e-6, `${decoupled ? 'AdamW' : 'Adam'} b`);
      assert.deepEqual(opt.state().paramSteps, [4, 3]);
      assert.equal(opt.state().step, 4);
      opt.dispose();
    });
  }
});

test('AdamW: default weight decay 0.01, .grad from backward(), zeroGrad, in-place update, every backend', () => {
  for (const name of backendNames) {
    const be = q.backendByName(name);
    const live = q.liveBuffers(be);
    q.tidy(() => {
      const w = q.tensor([1, 2, 3], [3], 'f32', be).requireGrad();
      const opt = new AdamW([{ params: [w], lr: 0.1 }]);
      assert.equal(opt.groups[0].weightDecay, 0.01);
      for (let k = 0; k < 2; k++) {
        q.backward(q.sum(q.square(w)));
        opt.step();
        opt.zeroGrad();
        assert.equal(w.grad, undefined);
      }
      const o = { wd: 0.01, b1: 0.9, b2: 0.999, eps: 1e-8, decoupled: true };
      const p1 = torchAdam([1, 2, 3], [[2, 4, 6]], [0.1], o); // the second gradient is 2·p1
      const exp2 = torchAdam([1, 2, 3], [[2, 4, 6], p1.map((x) => 2 * x)], [0.1, 0.1], o);
      close(host(w), exp2, 2e-6, `${name}: w`);
      opt.dispose();
    });
    assert.equal(q.liveBuffers(be), live, `${name}: optimizer steps leak no buffers`);
  }
});

test('AdamW: state()/loadState() continue exactly; mismatched states are refused', () => {
  q.tidy(() => {
    const mk = () => { const p = q.tensor([0.1, 0.2, 0.3, 0.4], [4], 'f32', js); return { p, opt: new AdamW([{ params: [p], lr: 0.05 }]) }; };
    const g = (k: number) => q.tensor([k, -k, 0.5 * k, 1], [4], 'f32', js);
    const a = mk();
    for (let k = 1; k <= 3; k++) a.opt.step([g(k)]);
    const saved = a.opt.state();
    const pSaved = host(a.p);
    for (let k = 4; k <= 5; k++) a.opt.step([g(k)]);
    const b = mk();
    assignHost(b.p, Float32Array.from(pSaved)); // restore the parameter as a checkpoint would
    b.opt.loadState(saved);
    for (let k = 4; k <= 5; k++) b.opt.step([g(k)]);
    assert.deepEqual(host(b.p), host(a.p));
    assert.throws(() => b.opt.loadState({ ...saved, m: [new Float32Array(3)] }), q.ShapeError);
    assert.throws(() => b.opt.loadState({ ...saved, m: [] }), q.ValueError);
    assert.throws(() => b.opt.step([g(1), g(1)]), q.ValueError);
    assert.throws(() => new AdamW([{ params: [a.p, a.p], lr: 1 }]), q.ValueError);
    assert.throws(() => new AdamW([{ params: [a.p], lr: -1 }]), q.ValueError);
    a.opt.dispose();
    b.opt.dispose();
  });
});

test('schedules: constant and cosine with linear warmup', () => {
  const c = constantLr({ lr: 0.2, warmup: 4 });
  assert.deepEqual([0, 1, 2, 3, 4, 50].map((s) => c(s, 100)), [0, 0.05, 0.1, 0.15000000000000002, 0.2, 0.2]);
  assert.equal(constantLr()(7, 10), 1);
  const cos = cosineLr({ lr: 1, warmup: 10, minLr: 0.1 });
  assert.equal(cos(0, 110), 0);
  assert.equal(cos(5, 110), 0.5);
  assert.equal(cos(10, 110), 1);
  assert.ok(Math.abs(cos(60, 110) - 0.55) < 1e-12);
  assert.ok(Math.abs(cos(110, 110) - 0.1) < 1e-12);
  assert.ok(Math.abs(cos(500, 110) - 0.1) < 1e-12);
  const plain = cosineLr({ lr: 2 });
  assert.equal(plain(0, 8), 2);
  assert.ok(Math.abs(plain(2, 8) - (1 + Math.cos(Math.PI / 4))) < 1e-12);
  assert.throws(() => cosineLr({ lr: 1, minLr: 2 }), q.ValueError);
  assert.throws(() => cos(-1, 10), q.ValueError);
});

test('clipGradNorm: returns the norm before clipping and scales in place to maxNorm', () => {
  q.tidy(() => {
    const g1 = q.tensor([3, 0, 0], [3], 'f32', js);
    const g2 = q.tensor([[0, 4]], [1, 2], 'f32', js);
    assert.equal(gradNorm([g1, null, g2]), 5);
    assert.equal(clipGradNorm([g1, null, g2], 10), 5);
    assert.deepEqual(host(g1), [3, 0, 0], 'under the limit: untouched');
    const n = clipGradNorm(new Map([[g1, g1], [g2, g2]]), 1);
    assert.equal(n, 5);
    close(host(g1), [0.6, 0, 0], 1e-6, 'g1');
    close(host(g2), [0, 0.8], 1e-6, 'g2');
    close([gradNorm([g1, g2])], [1], 1e-6, 'norm after');
    const bad = q.tensor([NaN, 1], [2], 'f32', js);
    assert.ok(Number.isNaN(clipGradNorm([bad, g1], 0.1)));
    close(host(g1), [0.6, 0, 0], 1e-6, 'a non-finite norm leaves gradients as they were');
    assert.throws(() => clipGradNorm([g1], 0), q.ValueError);
  });
});

test('NanGuard: skips non-finite steps, halves the lr scale, resets, throws after 5 in a row', () => {
  q.tidy(() => {
    const guard = new NanGuard();
    const ok = q.tensor([1, 2], [2], 'f32', js);
    const nan = q.tensor([1, NaN], [2], 'f32', js);
    const inf = q.tensor([Infinity, 0], [2], 'f32', js);
    assert.equal(guard.check(0.5, [ok, null]), true);
    assert.equal(guard.check(NaN, [ok]), false);
    assert.equal(guard.lrScale, 0.5);
    assert.equal(guard.check(q.tensor([0.1], [1], 'f32', js), [ok, inf]), false);
    assert.equal(guard.lrScale, 0.25);
    assert.equal(guard.check(1, Infinity), false, 'a non-finite gradient norm');
    assert.equal(guard.consecutive, 3);
    assert.equal(guard.check(1, [ok]), true);
    assert.equal(guard.consecutive, 0, 'a finite step resets the run');
    assert.equal(guard.lrScale, 0.125, 'the lr stays lowered');
    assert.match(guard.report(), /skipped 3 of 5 steps/);
    const saved = JSON.parse(JSON.stringify(guard.state()));
    for (let k = 0; k < 4; k++) assert.equal(guard.check(1, new Map([[ok, nan]])), false);
    let err: unknown;
    try { guard.check(1, [nan]); } catch (e) { err = e; }
    assert.ok(err instanceof TrainingDivergedError && err instanceof q.QuantloraError);
    assert.equal(err.skipped.length, 8);
    assert.match(err.message, /5 consecutive non-finite steps/);
    assert.match(err.report, /step 9: gradient 0 not finite/);
    const again = new NanGuard({ lrFactor: 0.1, maxConsecutive: 2 });
    again.loadState(saved);
    assert.equal(again.lrScale, 0.125);
    assert.ok(Number.isNaN(again.skipped[0].loss));
    assert.equal(again.check(NaN), false);
    assert.throws(() => again.check(NaN), TrainingDivergedError);
  });
});

test('checkpoint: tensors, optimizer state and metadata round-trip; mismatches are CheckpointErrors', () => {
  q.tidy(() => {
    const a = q.tensor([1.5, -2, 3.25, 1e-30], [2, 2], 'f32', js);
    const b = q.tensor([7], [1], 'f32', js);
    const opt = new AdamW([{ params: [a], lr: 0.1 }, { params: [b], lr: 0.2 }]);
    opt.step([q.tensor([1, 2, 3, 4], [2, 2], 'f32', js), q.tensor([-1], [1], 'f32', js)]);
    const path = join(dir, 'rt.safetensors');
    const meta = { step: 1, rng: 12345, best: 0.25, note: 'ünïcode' };
    const best = Float32Array.of(0.5, -1, 2);
    saveCheckpoint(path, { tensors: { 'layer.a': a, 'layer.b': b }, optimizer: opt, arrays: { 'best/0': best }, meta });
    const ck = readCheckpoint(path);
    assert.deepEqual(ck.meta, meta);
    assert.deepEqual([...ck.tensors.keys()], ['layer.a', 'layer.b'], 'arrays are not among the tensors');
    assert.deepEqual([...ck.arrays.entries()], [['best/0', best]]);
    assert.deepEqual(ck.tensors.get('layer.a')!.shape, [2, 2]);
    assert.deepEqual(Array.from(ck.tensors.get('layer.a')!.data), host(a));
    const st = opt.state();
    assert.deepEqual(ck.optimizer, st);

    const a2 = q.zeros([2, 2], 'f32', js);
    const b2 = q.zeros([1], 'f32', js);
    const opt2 = new AdamW([{ params: [a2], lr: 0.1 }, { params: [b2], lr: 0.2 }]);
    loadCheckpoint(path, { tensors: new Map([['layer.a', a2], ['layer.b', b2]]), optimizer: opt2 });
    assert.deepEqual(host(a2), host(a));
    assert.deepEqual(opt2.state(), st);

    assert.throws(() => restoreTensors(ck, { 'layer.a': q.zeros([4], 'f32', js), 'layer.b': b2 }), (e: Error) => e instanceof CheckpointError && /is \[2, 2\], expected \[4\]/.test(e.message));
    assert.throws(() => restoreTensors(ck, { 'layer.c': b2 }), /has no tensor 'layer.c'/);
    assert.throws(() => restoreTensors(ck, { 'layer.a': a2 }), /not restored: layer.b/);
    restoreTensors(ck, { 'layer.a': a2 }, { strict: false });
    const opt3 = new AdamW([{ params: [a2, b2], lr: 0.1 }]);
    assert.throws(() => loadCheckpoint(path, { tensors: { 'layer.a': a2, 'layer.b': b2 }, optimizer: opt3 }), /for 2 groups, the optimizer has 1/);
    const opt4 = new AdamW([{ params: [a2], lr: 0.1 }]);
    assert.throws(() => loadCheckpoint(path, { tensors: { 'layer.a': a2, 'layer.b': b2 }, optimizer: opt4 }), /for 2 parameters, the optimizer has 1/);
    assert.throws(() => saveCheckpoint(join(dir, 'x.safetensors'), { tensors: { 'optimizer/m/0': a } }), CheckpointError);
    assert.throws(() => saveCheckpoint(join(dir, 'x.safetensors'), { tensors: { 'arrays/x': a } }), CheckpointError);
    for (const o of [opt, opt2, opt3, opt4]) o.dispose();
  });
});

test('checkpoint: corrupt, truncated, foreign and missing files raise CheckpointError', () => {
  const path = join(dir, 'good.safetensors');
  q.tidy(() => saveCheckpoint(path, { tensors: { w: q.tensor([1, 2, 3], [3], 'f32', js) }, meta: { step: 3 } }));
  const bytes = readFileSync(path);
  const cases: [string, Uint8Array, RegExp][] = [
    ['truncated', bytes.subarray(0, bytes.length - 4), /not a readable checkpoint/],
    ['garbage', new Uint8Array(64).fill(0xff), /not a readable checkpoint/],
    ['empty', new Uint8Array(0), /not a readable checkpoint/],
  ];
  const header = Buffer.from(bytes).toString('latin1');
  const flip = (from: string, to: string) => Buffer.from(header.replace(from, to), 'latin1');
  cases.push(['foreign safetensors', q.encodeSafetensors([{ name: 'w', shape: [1], data: new Float32Array(1) }]), /not a quantlora checkpoint/]);
  cases.push(['bad meta JSON', flip('"meta":"{', '"meta":"['), /metadata 'meta'/]);
  cases.push(['unsupported version', flip('"version":"1"', '"version":"9"'), /version "9"/]);
  // an array listed in the metadata but not in the file, and an array list that is not a list
  // (same-length edits: the header's length prefix stays right)
  const withArray = join(dir, 'arrays.safetensors');
  q.tidy(() => saveCheckpoint(withArray, { tensors: { w: q.tensor([1, 2, 3], [3], 'f32', js) }, arrays: { best: Float32Array.of(4, 5) } }));
  const arrayHeader = readFileSync(withArray).toString('latin1');
  const flipArrays = (from: string, to: string) => Buffer.from(arrayHeader.replace(from, to), 'latin1');
  cases.push(['array missing', flipArrays('"arrays":"[\\"best\\"]"', '"arrays":"[\\"bust\\"]"'), /tensor 'arrays\/bust' is missing/]);
  cases.push(['array names not a list', flipArrays('"arrays":"[\\"best\\"]"', '"arrays":"{\\"b\\":12}"'), /metadata 'arrays' is not a list of names/]);
  for (const [what, data, re] of cases) {
    const p = join(dir, `bad-${what.replace(/ /g, '-')}.safetensors`);
    writeFileSync(p, data);
    assert.throws(() => readCheckpoint(p), (e: Error) => e instanceof CheckpointError && e instanceof q.FormatError && re.test(e.message), what);
  }
  assert.throws(() => readCheckpoint(join(dir, 'nope.safetensors')), CheckpointError);
  // a failed save leaves the previous checkpoint in place
  assert.throws(() => q.tidy(() => saveCheckpoint(path, { tensors: { w: q.tensor([9], [1], 'f32', js) }, meta: { big: 10n } as never })), CheckpointError);
  assert.deepEqual(Array.from(readCheckpoint(path).tensors.get('w')!.data), [1, 2, 3]);
});

// ---- resume: 10 steps straight == 5 steps, checkpoint, fresh objects, 5 more ----

/** mulberry32 with its state exposed (so a checkpoint can carry it). */
function nextRandom(state: number): [number, number] {
  const s = (state + 0x6d2b79f5) >>> 0;
  let t = s;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return [((t ^ (t >>> 14)) >>> 0) / 4294967296, s];
}

interface Run { w: q.Tensor; b: q.Tensor; opt: AdamW; guard: NanGuard; step: number; rng: number; best: number }
const TOTAL = 10;

function freshRun(be: q.Backend): Run {
  const w = q.keep(q.zeros([2, 3], 'f32', be)).requireGrad();
  const b = q.keep(q.zeros([2], 'f32', be)).requireGrad();
  return { w, b, opt: new AdamW([{ params: [w], lr: 0.1 }, { params: [b], lr: 0.05, weightDecay: 0 }]), guard: new NanGuard(), step: 0, rng: 42, best: Infinity };
}

function trainSteps(r: Run, n: number): void {
  const sched = cosineLr({ warmup: 2, minLr: 0.1 });
  for (let k = 0; k < n; k++, r.step++) {
    q.tidy(() => {
      const xs = new Float32Array(8 * 3);
      for (let i = 0; i < xs.length; i++) [xs[i], r.rng] = nextRandom(r.rng);
      const x = q.tensor(xs, [8, 3], 'f32', r.w.backend);
      const target = q.add(q.matmul(x, q.tensor([1, -2, 0.5, 3, 0, -1], [2, 3], 'f32', r.w.backend), { transB: true }), 0.5);
      const loss = q.mean(q.square(q.sub(q.add(q.matmul(x, r.w, { transB: true }), r.b), target)));
      const grads = q.grad(loss, [r.w, r.b]);
      const norm = clipGradNorm(grads, 1);
      const lossValue = r.step === 3 ? NaN : (loss.dataSync() as Float32Array)[0]; // an injected bad step
      if (!r.guard.check(lossValue, norm, r.step)) return;
      r.best = Math.min(r.best, lossValue);
      r.opt.setLrScale(sched(r.step, TOTAL) * r.guard.lrScale);
      r.opt.step(grads);
    });
  }
}

test('checkpoint: resuming from step 5 reproduces 10 straight steps bit for bit', () => {
  for (const name of backendNames.filter((n) => n === 'js' || n === 'native')) {
    const be = q.backendByName(name);
    const straight = freshRun(be);
    trainSteps(straight, TOTAL);

    const first = freshRun(be);
    trainSteps(first, 5);
    const path = join(dir, `resume-${name}.safetensors`);
    saveCheckpoint(path, { tensors: { w: first.w, b: first.b }, optimizer: first.opt, meta: { step: first.step, rng: first.rng, best: first.best, guard: first.guard.state() } });

    const resumed = freshRun(be);
    const meta = loadCheckpoint(path, { tensors: { w: resumed.w, b: resumed.b }, optimizer: resumed.opt }).meta as { step: number; rng: number; best: number; guard: ReturnType<NanGuard['state']> };
    resumed.step = meta.step;
    resumed.rng = meta.rng;
    resumed.best = meta.best;
    resumed.guard.loadState(meta.guard);
    trainSteps(resumed, TOTAL - 5);

    assert.equal(straight.guard.skipped.length, 1, 'the injected NaN step was skipped');
    assert.equal(resumed.guard.lrScale, 0.5);
    assert.notDeepEqual(host(straight.w), [0, 0, 0, 0, 0, 0], 'training moved the weights');
    assert.deepEqual(new Uint32Array(straight.w.dataSync().buffer), new Uint32Array(resumed.w.dataSync().buffer), `${name}: w`);
    assert.deepEqual(new Uint32Array(straight.b.dataSync().buffer), new Uint32Array(resumed.b.dataSync().buffer), `${name}: b`);
    assert.deepEqual(straight.opt.state(), resumed.opt.state());
    assert.equal(straight.best, resumed.best);
    for (const r of [straight, first, resumed]) { r.opt.dispose(); r.w.dispose(); r.b.dispose(); }
  }
});
