// `npx tsx bench/async-line.ts`: where the async kernels start to pay. For growing sizes it times,
// on the native backend, the synchronous kernel call against awaiting its async twin (both through
// the backend interface, output allocated and freed each call; one call at a time, so this is the
// pure hand-off cost: libuv queue, worker wake-up, promise settlement). Prints medians and the
// ratio async/sync; the smallest size from which every larger one is within 10% (and the one
// within 5%) are what ts/ops/async.ts's ASYNC_MIN_MACS come from. Work: multiply-adds for matmul
// and GEMV, weight elements for dequantize.
// Options: --time <ms per size and variant> (default 300), --quick (smaller sizes only).

import { formats } from '../ts/quant/formats.js';
import { NativeBackend } from '../ts/backends/native/index.js';
import { loadNativeAddon } from '../ts/backends/native/addon.js';
import type { Handle, MatmulDims } from '../ts/backend.js';
import { gaussianArray } from '../ts/tensor.js';

const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const budget = Number(arg('time') ?? 300);
const quick = process.argv.includes('--quick');
const be = new NativeBackend(loadNativeAddon());
const info = be.addon.info();
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Median µs per call of sync() and of await async(), in alternating blocks so drift hits both. */
async function race(sync: () => Handle, async_: () => Promise<Handle>): Promise<[number, number]> {
  for (let i = 0; i < 3; i++) { be.free(sync()); be.free(await async_()); }
  const ts: number[] = [];
  const ta: number[] = [];
  const end = performance.now() + 2 * budget;
  while ((performance.now() < end || ts.length < 7) && ts.length < 5000) {
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const h = sync();
      ts.push(performance.now() - t0);
      be.free(h);
    }
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const h = await async_();
      ta.push(performance.now() - t0);
      be.free(h);
    }
  }
  return [median(ts) * 1e3, median(ta) * 1e3];
}

interface Row { op: string; size: string; work: number; syncUs: number; asyncUs: number; ratio: number }
const rows: Row[] = [];
function report(r: Row) {
  rows.push(r);
  console.log(`${r.op.padEnd(16)} ${r.size.padEnd(14)} ${r.work.toExponential(2).padStart(9)}   sync ${r.syncUs.toFixed(1).padStart(9)} µs  async ${r.asyncUs.toFixed(1).padStart(9)} µs  ratio ${r.ratio.toFixed(3)}  (+${(r.asyncUs - r.syncUs).toFixed(1)} µs)`);
}

console.log(`native addon ${info.version}, ${info.simd}, ${info.threads} pool threads; ${budget} ms per variant and size`);

const mm: [number, number, number][] = [[16, 64, 64], [32, 128, 128], [64, 128, 128], [64, 256, 256], [128, 256, 256], [256, 256, 256], [512, 512, 512], [1024, 1024, 1024]];
for (const [m, k, n] of quick ? mm.slice(0, 5) : mm) {
  const a = be.upload(gaussianArray(m * k, 1));
  const b = be.upload(gaussianArray(k * n, 2));
  const d: MatmulDims = { batch: 1, m, k, n, transA: false, transB: false, aBatchStride: 0, bBatchStride: 0 };
  const [s, as] = await race(() => be.matmul(a, b, d), () => be.matmulAsync(a, b, d));
  report({ op: 'matmul', size: `${m}x${k}x${n}`, work: m * k * n, syncUs: s, asyncUs: as, ratio: as / s });
  be.free(a);
  be.free(b);
}

const nf4 = formats.nf(4, { group: 64, doubleQuant: true });
const gemv = [256, 512, 1024, 2048, 4096, 8192];
for (const dim of quick ? gemv.slice(0, 4) : gemv) {
  const w = be.upload(gaussianArray(dim * dim, 3, 0.02));
  const q = be.quantize(w, dim, dim, nf4);
  be.free(w);
  const x = be.upload(gaussianArray(dim, 4));
  const [s, as] = await race(() => be.dequantizeMatmul(x, 1, q, dim, dim, nf4), () => be.dequantizeMatmulAsync(x, 1, q, dim, dim, nf4));
  report({ op: 'gemv nf4-dq', size: `1x${dim}x${dim}`, work: dim * dim, syncUs: s, asyncUs: as, ratio: as / s });
  be.free(x);
  for (const h of Object.values(q)) if (h) be.free(h as Handle);
}

const deq = [256, 512, 1024, 2048, 4096];
for (const dim of quick ? deq.slice(0, 3) : deq) {
  const w = be.upload(gaussianArray(dim * dim, 5, 0.02));
  const q = be.quantize(w, dim, dim, nf4);
  be.free(w);
  const [s, as] = await race(() => be.dequantize(q, dim, dim, nf4), () => be.dequantizeAsync(q, dim, dim, nf4));
  report({ op: 'dequantize nf4-dq', size: `${dim}x${dim}`, work: dim * dim, syncUs: s, asyncUs: as, ratio: as / s });
  for (const h of Object.values(q)) if (h) be.free(h as Handle);
}

for (const op of ['matmul', 'gemv nf4-dq', 'dequantize nf4-dq']) {
  const r = rows.filter((x) => x.op === op);
  for (const lim of [1.1, 1.05]) {
    const i = r.findIndex((_, j) => r.slice(j).every((x) => x.ratio <= lim));
    console.log(`${op}: async within ${Math.round((lim - 1) * 100)}% from ${i >= 0 ? `${r[i].size} (work ${r[i].work.toExponential(2)})` : 'no size measured'}`);
  }
}
