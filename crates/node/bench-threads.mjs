// Thread-split crossover of the addon's matmul / dequantizeMatmul: best-of time per call for
// 1 thread vs N threads. Usage: node crates/node/bench-threads.mjs [threads...] (default 1 2).
import { createRequire } from 'node:module';
const path = process.env.QUANTLORA_NATIVE_ADDON ?? new URL(`./quantlora.${process.platform}-${process.arch}-gnu.node`, import.meta.url).pathname;
const a = createRequire(import.meta.url)(path);
const threads = process.argv.slice(2).map(Number);
if (!threads.length) threads.push(1, 2);
function time(f) {
  for (let i = 0; i < 3; i++) f();
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    let it = 0, el;
    do { f(); it++; el = Number(process.hrtime.bigint() - t0) / 1e3; } while (el < 10000);
    best = Math.min(best, el / it);
  }
  return best;
}
const rnd = (n) => Float32Array.from({ length: n }, () => Math.random() - 0.5);
console.log(`${a.info().simd}; µs per call for threads ${threads.join(' / ')}`);
const mm = [[8, 32, 32], [16, 64, 64], [32, 64, 64], [16, 128, 128], [32, 128, 128], [4, 256, 256], [65, 64, 64], [66, 128, 64], [130, 64, 64], [130, 128, 128],
  [130, 256, 256], [256, 256, 256], [512, 512, 512], [1, 576, 1536], [4, 576, 576], [32, 576, 1536], [64, 576, 576], [512, 576, 1536]];
for (const [m, k, n] of mm) {
  const x = rnd(m * k), y = rnd(k * n), o = new Float32Array(m * n);
  const r = threads.map((t) => { a.setThreads(t); return time(() => a.matmul(x, y, 1, m, k, n, false, false, 0, 0, o)); });
  console.log(`matmul ${m}x${k}x${n} macs=${m * k * n}: ${r.map((v) => v.toFixed(1)).join(' / ')}  speedup ${(r[0] / Math.min(...r.slice(1))).toFixed(2)}`);
}
for (const [xr, rows, cols] of [[1, 64, 64], [1, 128, 128], [1, 256, 256], [1, 512, 512], [1, 576, 1536], [1, 1536, 576], [4, 128, 128], [16, 128, 128], [64, 576, 576], [512, 1536, 576]]) {
  const parts = [rows * cols / 2, 0, 0, rows * cols / 64, Math.ceil(rows * cols / 64 / 256) * 4, 4].map((n) => new Uint8Array(n));
  a.quantize(rnd(rows * cols), rows, cols, 0, 4, 64, true, false, parts);
  const x = rnd(xr * cols), o = new Float32Array(xr * rows);
  const r = threads.map((t) => { a.setThreads(t); return time(() => a.dequantizeMatmul(x, xr, parts, rows, cols, 0, 4, 64, true, false, o)); });
  console.log(`dqmm nf4 ${xr}x${rows}x${cols} macs=${xr * rows * cols}: ${r.map((v) => v.toFixed(1)).join(' / ')}  speedup ${(r[0] / Math.min(...r.slice(1))).toFixed(2)}`);
}
