// GPU benchmarks for the speed goals, every ratio measured in one run (tinybench):
//  1. dequantizeMatmul nf4 (4-bit, double-quantized absmax), one token, 8192² and 16384²: weight
//     bytes read per second against a plain WGSL copy kernel's bandwidth (bytes read + written).
//  2. f32 matmul 4096³ against PyTorch's fp32 matmul with TF32 off (bench/torch_ref.py).
//  3. One RILQ step (batch 1 x 512 tokens, nf2, rank 16, hidden-state + LM loss, Adam) on a model
//     shaped like SmolLM2-135M, against the same step in PyTorch eager on the same GPU
//     (bench/torch_ref.py loads our Hugging Face export of that model).
// GPU work is timed as `reps` kernels recorded, then one wait; a sample is the mean per kernel. The
// device submits as a user's code gets it: the first 32 dispatches after a wait, then batches
// doubling up to 2048, so the GPU runs while the host records. (Up to the fifth session the bench
// submitted every 4 kernels itself, which made the wall time of small kernels mostly submits.)
//
// Usage: npx tsx bench/gpu.ts [--quick] [--time ms] [--out file] [--no-torch] [--only substring]
//        [--sweep] (GEMV decoders on the best shapes; --sweep-all: every shape; --formats nf4,int4,
//        --shapes JSON, --decoders fmt:JSON narrow it; --no-extras leaves out the read-only and
//        wide-kernel rows, --no-goal the goal rows after it, --sizes 8192 sets the words rows'
//        sizes; --sweep-rows adds 4 and 8 x rows)
//        [--ab] (the RILQ step also with the earlier scheduling and without shader checks)
//        [--warmup S] (S seconds of back-to-back copies first, to bring the GPU to its clocks)
//        --only decode: greedy decoding's ms per token (SmolLM2-135M's shape, int4, f32 and int8 GEMV;
//        [--floor] (before the GEMV rows: an empty kernel's dispatch, the GEMV's loads alone and a
//        plain read of its bytes, streamed)
//        --batches FIRST:MAX,... times f32 again under those submit schedules; --anatomy splits its
//        time per token into wall, host recording and GPU busy)
// Needs the gpu backend (a real adapter, or QUANTLORA_GPU_SOFTWARE=1 for a functional run).

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { backendByName, dequantizeMatmul, formats, generate, matmul, noGrad, quantize, randn, setBackend, slice, tensor, tidy, type Tensor } from '../ts/index.js';
import type { GpuBackend } from '../ts/backends/gpu/index.js';
import { GRID_INDEX } from '../ts/backends/gpu/device.js';
import { gemvShape } from '../ts/backends/gpu/quant.js';
import type { WordsShape } from '../ts/backends/gpu/gemv.js';
import { matmulSizing } from '../ts/backends/gpu/matmul.js';
import type { QuantFormat } from '../ts/quant/formats.js';
import type { QuantizedTensor } from '../ts/quant/api.js';
import { exportHf } from '../ts/io/export-hf.js';
import { calibrationWindows } from '../ts/methods/calibration.js';
import { quantizeModel, rtnLayers } from '../ts/methods/quantize-model.js';
import { rilq } from '../ts/methods/rilq.js';
import { KvCache, LlamaModel } from '../ts/nn/llama.js';
import type { LlamaConfig } from '../ts/nn/config.js';
import { gaussianArray } from '../ts/tensor.js';

const arg = (name: string) => { const i = process.argv.indexOf(`--${name}`); return i >= 0 ? process.argv[i + 1] : undefined; };
const quick = process.argv.includes('--quick');
const time = Number(arg('time') ?? (quick ? 50 : 2000));
const only = arg('only') ?? '';
const here = dirname(fileURLToPath(import.meta.url));
const outFile = arg('out') ?? join(here, 'results', 'gpu-latest.json');

const gpu = backendByName('gpu') as GpuBackend;
const dev = gpu.dev;
/** Shader runtime checks as the environment set them (QUANTLORA_GPU_SHADER_CHECKS; off by default); the sweeps switch and restore it. */
const defaultChecks = dev.checks;
console.log(`adapter: ${dev.info.name} (${dev.info.backend}, ${dev.info.deviceType}); host kernels: ${gpu.hostKernels.join(' ') || 'none'}`);

const NF4 = formats.nf(4, { group: 64, doubleQuant: true });

/** ms: wall time per call (host recording overlapped with the GPU); gpuMs: the GPU's own time per
 *  call (timestamps around the command batches), where the adapter has timestamp queries. */
interface Row { name: string; ms: number; gpuMs?: number; hostMs?: number; gbps?: number; gpuGbps?: number; gflops?: number; note?: string }
const rows: Row[] = [];

/** Wall ms per call of `call` (which records GPU work and frees its result), the mean over `reps`
 *  calls per tinybench sample; then, where the adapter has timestamps, the GPU's ms per call over
 *  3 x reps more calls recorded the same way, as one submission queued behind enough other GPU
 *  work (keepBusy) to cover the host's recording: so the timed calls run back to back on a GPU
 *  that has not gone idle. (Ninth session, H200: the 8192² int8 GEMV's GPU time varied with the
 *  host's time per call, 16.5-20 µs for 51-66 µs, when the calls were submitted as recorded. With
 *  keepBusy the numbers did not change. What moved them was the time since the process started:
 *  see --warmup.) */
async function timeGpu(name: string, reps: number, call: () => void, host = false): Promise<{ ms: number; gpuMs?: number; hostMs?: number }> {
  const bench = new Bench({ name, time, iterations: 3, warmupIterations: 1, warmupTime: 0 });
  bench.add(name, () => {
    for (let i = 0; i < reps; i++) call();
    dev.addon.gpuWait();
  });
  await bench.run();
  const r = bench.tasks[0].result as { latency?: { mean: number }; error?: unknown; state: string };
  if (!r.latency) throw new Error(`${name}: ${String(r.error ?? r.state)}`);
  const ms = r.latency.mean / reps;
  // host: also the host's own time per call (hostMs), recording `reps` calls with no submit before
  // the wait (the best of 3): what a call costs the JS thread, apart from the GPU (for calls that
  // do not wait for the GPU themselves)
  let hostMs: number | undefined;
  if (host) {
    hostMs = Infinity;
    const first = dev.addon.gpuSetFirstBatch(2048);
    try {
      for (let k = 0; k < 3; k++) {
        const t0 = performance.now();
        for (let i = 0; i < reps; i++) call();
        hostMs = Math.min(hostMs, (performance.now() - t0) / reps);
        dev.addon.gpuWait();
      }
    } finally {
      dev.addon.gpuSetFirstBatch(first);
    }
  }
  if (!timestamps) return { ms, hostMs };
  keepBusy(1.2 * ms * 3 * reps);
  const before = dev.addon.gpuSetFirstBatch(2048); // no early submit: one batch, sent at the stop
  try {
    dev.addon.gpuTimingStart(); // submits the busy work, untimed
    for (let i = 0; i < 3 * reps; i++) call();
    const t = dev.addon.gpuTimingStop()!;
    return { ms, gpuMs: t.ms / (3 * reps), hostMs };
  } finally {
    dev.addon.gpuSetFirstBatch(before);
  }
}

/** Whether the adapter times passes (starting and stopping an empty timing once). */
const timestamps = dev.addon.gpuTimingStart() && !!dev.addon.gpuTimingStop();
/** The busy work: the copy kernel over its own pair of buffers, with its GPU ms per call. */
let busy: { bufs: ReturnType<typeof dev.alloc>[]; vecs: number; ms: number } | undefined;
/** Queues about `ms` (at most 500) of GPU work that nothing waits for. */
function keepBusy(ms: number): void {
  if (!busy) {
    const bytes = (quick ? 4 : 256) * 2 ** 20;
    const b = { bufs: [dev.alloc(bytes, true), dev.alloc(bytes, true)], vecs: bytes / 16, ms: 0 };
    dev.addon.gpuTimingStart();
    for (let i = 0; i < 10; i++) copyRun(b.bufs, b.vecs);
    b.ms = dev.addon.gpuTimingStop()!.ms / 10;
    busy = b;
  }
  const n = Math.min(Math.ceil(Math.min(ms, 500) / busy.ms), 2000);
  for (let i = 0; i < n; i++) copyRun(busy.bufs, busy.vecs);
}

/** Bytes per call over ms per call, as GB/s. */
const gbpsOf = (bytes: number, ms: number | undefined) => (ms === undefined ? undefined : bytes / (ms * 1e6));

const COPY = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;
override WG: u32 = 256u;
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i < P[0]) { dst[i] = src[i]; }
}`;

/** Records one copy kernel over `vecs` vec4s from bufs[0] to bufs[1]. */
const copyRun = (bufs: ReturnType<typeof dev.alloc>[], vecs: number) => dev.run(dev.pipeline('bench_copy', COPY), [vecs], bufs, dev.grid(vecs, 256));

/** The copy kernel's bandwidth (read + write bytes) copying `bytes` (a multiple of 16), cycling
 *  through `copies` source/destination pairs (so that small copies are not served from L2). */
async function copyBandwidth(bytes: number, copies = 1): Promise<Row> {
  const bufs = Array.from({ length: copies }, () => [dev.alloc(bytes, true), dev.alloc(bytes, true)]);
  let i = 0;
  const mib = +(bytes / 2 ** 20).toFixed(1);
  const { ms, gpuMs } = await timeGpu(`copy ${mib} MiB`, 20, () => copyRun(bufs[i++ % copies], bytes / 16));
  for (const b of bufs.flat()) dev.free(b);
  const row = { name: `copy kernel ${mib} MiB (read + write)${copies > 1 ? ` [${copies} in turn]` : ''}`, ms, gpuMs, gbps: gbpsOf(2 * bytes, ms)!, gpuGbps: gbpsOf(2 * bytes, gpuMs) };
  rows.push(row);
  return row;
}

/** Streamed buffers (weights, copies) come in enough copies (up to 8) to pass this many bytes. */
const STREAMED = 160 * 2 ** 20;
/** How many copies of `bytes` pass STREAMED (1 to 8). */
const streamCopies = (bytes: number) => Math.max(1, Math.min(8, Math.ceil(STREAMED / bytes)));

/** The copy kernel moving as many bytes as a GEMV row reads (`r`: half of them read, half
 *  written), streamed as weightCopies streams weights: a copy of the same duration, so with the
 *  same fixed cost per dispatch (the drain and ramp between dependent kernels). */
function copyLike(r: Row): Promise<Row> {
  const bytes = Math.floor((r.gbps! * r.ms * 1e6) / 32) * 16;
  return copyBandwidth(bytes, streamCopies(2 * bytes));
}

// Reads the code words of an n x n 4-bit weight in the words GEMV's pattern (R rows per workgroup,
// WG threads striding along the columns in vec2<u32>) and nothing else: the bandwidth that
// pattern allows without any decoding (the GEMV's ceiling at that shape).
const READ_ONLY = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>; // [rows, units per row]
@group(0) @binding(1) var<storage, read> codes: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;
override R: u32 = 8u;
override WG: u32 = 64u;
@compute @workgroup_size(WG) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let rows = P[0]; let units = P[1];
  let wg = wid.x + wid.y * nwg.x;
  let row0 = wg * R;
  var acc = 0u;
  for (var k = t; k < units; k += WG) {
    for (var r = 0u; r < R; r++) {
      let q = codes[min(row0 + r, rows - 1u) * units + k];
      acc = acc ^ (q.x + q.y);
    }
  }
  y[wg * WG + t] = acc;
}`;

async function readOnly(n: number, R: number, NW: number, streamed = false): Promise<Row> {
  const bytes = (n * n) / 2;
  const copies = streamed ? streamCopies(bytes) : 1;
  const codes = Array.from({ length: copies }, () => dev.alloc(bytes, true));
  const groups = Math.ceil(n / R);
  const y = dev.alloc(groups * NW * 32 * 4);
  const pipe = dev.pipeline('bench_read_only', READ_ONLY, 'main', { R, WG: NW * 32 });
  let i = 0;
  const { ms, gpuMs } = await timeGpu(`read only ${n}`, 50, () => dev.run(pipe, [n, n / 16], [codes[i++ % copies], y], dev.grid(groups * NW * 32, NW * 32)));
  for (const c of codes) dev.free(c);
  dev.free(y);
  const row = { name: `read only (the words GEMV's loads, no decode) ${n}² 4-bit, R ${R} NW ${NW} W 2${copies > 1 ? ` [${copies} in turn]` : ''}`, ms, gpuMs, gbps: gbpsOf(bytes, ms)!, gpuGbps: gbpsOf(bytes, gpuMs) };
  rows.push(row);
  return row;
}

// The fixed costs under the GEMV at 8192² (--floor): a kernel that does nothing but write one word
// per workgroup (the dispatch and the drain between dependent kernels, at 1 and at 1024 workgroups
// of 128 threads), and a kernel that reads `bytes` as plain vec4s, one per thread, and writes
// nothing (the copy's read half alone: the same bytes as a GEMV, streamed the same way).
const EMPTY = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
@compute @workgroup_size(128) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (t == 0u) { y[wid.x] = P[0]; }
}`;
const READ = /* wgsl */ `
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;
override WG: u32 = 256u;
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = ${GRID_INDEX};
  if (i < P[0]) { let v = src[i]; if ((v.x ^ v.y ^ v.z ^ v.w) == P[1]) { y[0] = i; } }
}`;

/** GPU ms per dispatch of EMPTY over `groups` workgroups. */
async function emptyKernel(groups: number): Promise<Row> {
  const y = dev.alloc(groups * 4);
  const pipe = dev.pipeline('bench_empty', EMPTY);
  const { ms, gpuMs } = await timeGpu(`empty ${groups}`, 50, () => dev.run(pipe, [1], [y], [groups, 1, 1]));
  dev.free(y);
  const row = { name: `empty kernel, ${groups} workgroups of 128 threads (one word written per workgroup)`, ms, gpuMs };
  rows.push(row);
  return row;
}

/** The READ kernel's bandwidth over `bytes` (a multiple of 16), streamed through copies as the
 *  GEMV rows stream their weights. */
async function readBandwidth(bytes: number): Promise<Row> {
  const copies = streamCopies(bytes);
  const bufs = Array.from({ length: copies }, () => dev.alloc(bytes, true));
  const y = dev.alloc(4);
  const pipe = dev.pipeline('bench_read', READ);
  let i = 0;
  const { ms, gpuMs } = await timeGpu(`read ${bytes}`, 50, () => dev.run(pipe, [bytes / 16, 0x9e3779b9], [bufs[i++ % copies], y], dev.grid(bytes / 16, 256)));
  for (const b of bufs) dev.free(b);
  dev.free(y);
  const row = { name: `read kernel ${+(bytes / 2 ** 20).toFixed(1)} MiB (read only, vec4 per thread) [${copies} in turn]`, ms, gpuMs, gbps: gbpsOf(bytes, ms)!, gpuGbps: gbpsOf(bytes, gpuMs) };
  rows.push(row);
  return row;
}

/** A weight size: n for n x n, or [rows, cols]. */
type Size = number | [number, number];
const dimsOf = (n: Size): [number, number] => (typeof n === 'number' ? [n, n] : n);
const sizeLabel = (n: Size) => (typeof n === 'number' ? `${n}²` : `${n[0]}x${n[1]}`);

/** A random weight of size n (n x n or rows x cols) quantized to f, in enough copies (up to 8) to pass 160 MiB: the GEMV rows
 *  use them in turn, so that they measure weights streamed from memory, as in decoding, where each
 *  layer's weights are read once per token (one 8192² 4-bit weight, 37 MiB with its scales, read
 *  again and again partly stays in the H200's 50 MiB L2: up to 125% of copy for the loads alone). */
function weightCopies(f: QuantFormat, n: Size, most = 8): QuantizedTensor[] {
  const qs: QuantizedTensor[] = [];
  do {
    const w = randn(dimsOf(n), { seed: 11 + qs.length, std: 0.02 }, gpu);
    qs.push(quantize(w, f));
    w.dispose();
  } while (qs.length < Math.min(most, streamCopies(qs[0].bytes)));
  return qs;
}

/** GB/s of packed weight bytes read by a one-token dequantizeMatmul over a weight of format f and
 *  size n (weightCopies, made here unless `q` is given: sweeps reuse them). */
async function gemv(n: Size, f: QuantFormat = NF4, label = '', q?: QuantizedTensor[], T = 1): Promise<Row> {
  const own = !q;
  const [wr, cols] = dimsOf(n);
  const qs = q ?? weightCopies(f, n);
  const x = randn([T, cols], { seed: 12 }, gpu);
  let i = 0;
  const { ms, gpuMs, hostMs } = await timeGpu(`dequantizeMatmul ${f.name} ${sizeLabel(n)}`, 50, () => dequantizeMatmul(x, qs[i++ % qs.length]).dispose(), true);
  const bytes = qs[0].bytes;
  const row = { name: `dequantizeMatmul ${f.name} ${T}x${cols} · (${wr}x${cols})ᵀ${label ? ` (${label})` : ''}${qs.length > 1 ? ` [${qs.length} weights in turn]` : ''}`, ms, gpuMs, hostMs, gbps: gbpsOf(bytes, ms)!, gpuGbps: gbpsOf(bytes, gpuMs) };
  rows.push(row);
  if (own) for (const w of qs) w.dispose();
  x.dispose();
  return row;
}

async function sgemm(n: number): Promise<number> {
  const a = randn([n, n], { seed: 1 }, gpu);
  const b = randn([n, n], { seed: 2 }, gpu);
  const { ms, gpuMs } = await timeGpu(`matmul ${n}`, quick ? 2 : 10, () => matmul(a, b).dispose());
  a.dispose();
  b.dispose();
  const gflops = (2 * n ** 3) / (ms * 1e6);
  rows.push({ name: `matmul f32 ${n}³`, ms, gpuMs, gflops });
  return gflops;
}

const SMOLLM2: LlamaConfig = {
  family: 'llama', vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9, numKvHeads: 3,
  headDim: 64, ropeTheta: 100000, rmsNormEps: 1e-5, maxPositions: 8192, tieWordEmbeddings: true, attentionBias: false,
};

/** A model of the given shape with Gaussian weights (norms 1): timing does not depend on values. */
function randomModel(c: LlamaConfig): LlamaModel {
  let seed = 100;
  return LlamaModel.fromWeights(c, {
    has: () => true,
    read: (name, shape) => {
      const size = shape.reduce((x, y) => x * y, 1);
      return name.endsWith('norm.weight') ? new Float32Array(size).fill(1) : gaussianArray(size, seed++, 0.02);
    },
  }, gpu);
}

/** With QUANTLORA_GPU_PROFILE=1: the per-kernel profile gathered so far, under `title`, then cleared. */
function printProfile(title: string): void {
  if (!gpu.profile.size) return;
  const total = [...gpu.profile.values()].reduce((x, e) => x + e.ms, 0);
  console.log(title);
  console.table([...gpu.profile].sort((x, y) => y[1].ms - x[1].ms).map(([k, e]) => ({ kernel: k, calls: e.calls, ms: e.ms.toFixed(1), share: `${((100 * e.ms) / total).toFixed(1)}%` })));
  gpu.profile.clear();
}

async function rilqStep(c: LlamaConfig, tokens: number, rank: number): Promise<{ ms: number; gpuMs?: number; dir: string }> {
  const fp = randomModel(c);
  const dir = mkdtempSync(join(tmpdir(), 'quantlora-gpu-bench-'));
  await exportHf(fp, dir);
  const qm = quantizeModel(fp, rtnLayers({ format: formats.nf(2, { group: 64 }), lora: { rank } }));
  const ids = Int32Array.from({ length: tokens * 4 }, (_, i) => (i * 7919 + (i >> 3) * 13) % c.vocabSize);
  const data = calibrationWindows(ids, { count: 1, seqlen: tokens, seed: 1 });
  let ms: number;
  let gpuMs: number | undefined;
  try {
    // GPU time too: how much of the step's wall time the GPU is busy (the rest is the host)
    const s0 = dev.addon.gpuStats();
    ({ ms, gpuMs } = await timeGpu('rilq step', 1, () => { rilq(fp, qm, { data, steps: 1, lr: 1e-4 }); }));
    const s1 = dev.addon.gpuStats();
    console.log(`rilq step: bind groups reused for ${((100 * (s1.bindHits - s0.bindHits)) / (s1.dispatches - s0.dispatches)).toFixed(0)}% of ${s1.dispatches - s0.dispatches} dispatches`);
  } finally {
    fp.dispose();
    qm.dispose();
  }
  printProfile(`profile of ${ms.toFixed(0)} ms steps (all samples; kernels serialized):`);
  rows.push({ name: `rilq step (SmolLM2-135M shape${quick ? ', quick: 2 layers' : ''}, 1x${tokens} tokens, nf2, rank ${rank})`, ms, gpuMs });
  if (gpuMs !== undefined) console.log(`rilq step: ${ms.toFixed(1)} ms wall, the GPU busy ${gpuMs.toFixed(1)} ms of it (${((100 * gpuMs) / ms).toFixed(0)}%)`);
  return { ms, gpuMs, dir };
}

/** Decoding as a user sees it: ms per token of greedy generation (each token waits for its logits)
 *  after a 32-token prompt, on a model of shape c with random weights and its linear layers
 *  quantized to f; the GEMV kernels at the device's compute dtype (Device.gemv). */
async function decode(c: LlamaConfig, f: QuantFormat, tokens: number, label: string, model?: LlamaModel): Promise<Row> {
  const qm = model ?? decodeModel(c, f);
  setBackend('gpu'); // generate makes its token ids on the default backend
  const prompt = Array.from({ length: 32 }, (_, i) => (i * 7919 + 13) % c.vocabSize);
  try {
    for await (const _ of generate(qm, prompt, { maxTokens: 4, stop: [] })); // compiles the kernels
    let first = 0;
    let n = 0;
    const t0 = performance.now();
    for await (const _ of generate(qm, prompt, { maxTokens: tokens + 1, stop: [] })) if (n++ === 0) first = performance.now();
    const ms = (performance.now() - first) / tokens;
    printProfile(`profile of decoding ${f.name} (${label}; the warm-up, prefill and tokens; kernels serialized):`);
    const row: Row = { name: `decode ${f.name}${label ? ` (${label})` : ''}: ${c.numLayers} layers of SmolLM2-135M's shape, ms per token after a 32-token prompt (prefill ${(first - t0).toFixed(1)} ms)`, ms };
    rows.push(row);
    return row;
  } finally {
    if (!model) qm.dispose();
  }
}

/** Where a decoded token's time goes (model qm, greedy steps as generate takes them, after a
 *  32-token prompt): `wall`, ms per token with each token's logits read back (as generate);
 *  `host`, the host's ms per token recording steps with no submit and no read (the best of 5 rounds
 *  of 4 tokens); `gpu`, the GPU's busy ms per token (timestamps over 16 tokens recorded with no read
 *  between them), where the adapter has timestamps; `gen`, ms per token of greedy `generate`. */
async function decodeAnatomy(qm: LlamaModel, tokens: number): Promise<{ wall: number; host: number; gpu?: number; gen: number }> {
  setBackend('gpu');
  const cache = new KvCache();
  const step = (ids: number[]) => noGrad(() => tidy(() => {
    const h = qm.hidden(tensor(Int32Array.from(ids), [1, ids.length], 'i32'), cache);
    return qm.head(slice(h, [0, ids.length - 1, 0], [1, 1, -1]));
  }));
  const read = async (ids: number[]) => {
    const r = step(ids);
    await r.data();
    r.dispose();
  };
  try {
    await read(Array.from({ length: 32 }, (_, i) => (i * 7919 + 13) % qm.config.vocabSize));
    for (let i = 0; i < 4; i++) await read([i + 1]);
    let t0 = performance.now();
    for (let i = 0; i < tokens; i++) await read([i + 5]);
    const wall = (performance.now() - t0) / tokens;
    const first = dev.addon.gpuSetFirstBatch(2048);
    const most = dev.addon.gpuSetMaxBatch(2048);
    let host = Infinity;
    try {
      for (let round = 0; round < 5; round++) {
        t0 = performance.now();
        for (let i = 0; i < 4; i++) step([i + 7]).dispose();
        host = Math.min(host, (performance.now() - t0) / 4);
        dev.addon.gpuWait();
      }
    } finally {
      dev.addon.gpuSetFirstBatch(first);
      dev.addon.gpuSetMaxBatch(most);
    }
    // generate itself (greedy: a step ahead where the backend picks the token on the device)
    const prompt = Array.from({ length: 32 }, (_, i) => (i * 7919 + 13) % qm.config.vocabSize);
    let n = 0;
    for await (const _ of generate(qm, prompt, { maxTokens: tokens + 1, stop: [] })) if (n++ === 0) t0 = performance.now();
    const gen = (performance.now() - t0) / tokens;
    if (!timestamps) return { wall, host, gen };
    dev.addon.gpuTimingStart();
    for (let i = 0; i < 16; i++) step([i + 9]).dispose();
    const gpu = dev.addon.gpuTimingStop()!.ms / 16;
    return { wall, host, gpu, gen };
  } finally {
    cache.dispose();
  }
}

/** A model of shape c with random weights, its linear layers quantized to f (for decode), with
 *  LoRA adapters of that rank on every projection when `rank` is given. */
function decodeModel(c: LlamaConfig, f: QuantFormat, rank?: number): LlamaModel {
  const fp = randomModel(c);
  const qm = quantizeModel(fp, rtnLayers({ format: f, lora: rank ? { rank, alpha: 2 * rank } : undefined }));
  fp.dispose();
  return qm;
}

function torch(args: string[]): Record<string, number> | undefined {
  if (process.argv.includes('--no-torch')) return undefined;
  try {
    const out = execFileSync('python3', [join(here, 'torch_ref.py'), ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    return JSON.parse(out.trim().split('\n').pop()!);
  } catch (e) {
    console.error(`torch reference skipped: ${(e as Error).message.split('\n')[0]}`);
    return undefined;
  }
}

const goals: string[] = [];
const want = (s: string) => s.includes(only);
/** The reference copy's size: 1 GiB (16 MiB with --quick). */
const COPY_BYTES = (quick ? 16 : 1024) * 2 ** 20;
/** "X GB/s = Y% of copy" by wall time, and by GPU time where the adapter has timestamps. */
const vsCopy = (r: Row, copy: Row) =>
  `${r.gbps!.toFixed(0)} GB/s = ${((100 * r.gbps!) / copy.gbps!).toFixed(0)}% of the copy kernel's ${copy.gbps!.toFixed(0)} (wall)` +
  (r.gpuGbps !== undefined && copy.gpuGbps !== undefined ? `; GPU time: ${r.gpuGbps.toFixed(0)} GB/s = ${((100 * r.gpuGbps) / copy.gpuGbps).toFixed(0)}% of ${copy.gpuGbps.toFixed(0)}` : '');
// --warmup S: S seconds of back-to-back copies before the first row (ninth session, H200: early in
// a process the 8192² int8 GEMV took 29% of copy and one 4096² weight from L2 13.8 µs, rising over
// ~40 s of rows to 55–59% and 5.8 µs: the SM clock under light, gappy load is the suspect)
const warmup = Number(arg('warmup') ?? 0);
if (warmup > 0) {
  const until = performance.now() + warmup * 1000;
  while (performance.now() < until) {
    keepBusy(200);
    dev.addon.gpuWait();
  }
}
if (want('gemv')) {
  const copy = await copyBandwidth(COPY_BYTES);
  if (process.argv.includes('--floor')) {
    // what a GEMV at 8192² (37.7 MB of int4 weights) cannot go below: the dispatch alone, the
    // GEMV's loads alone, and a plain read of its bytes, each as a share of the copy's bandwidth
    for (const groups of [1, 1024]) {
      const e = await emptyKernel(groups);
      console.log(`floor: ${e.name}: ${(1000 * (e.gpuMs ?? e.ms)).toFixed(2)} µs per dispatch`);
    }
    for (const n of quick ? [1024] : [8192, 16384]) {
      const g = await readOnly(n, 8, 4, true);
      console.log(`floor: ${g.name}: ${vsCopy(g, copy)}; ${(1000 * (g.gpuMs ?? g.ms)).toFixed(2)} µs per call`);
      const b = Math.round((n * n * 4.5) / 8 / 16) * 16; // int4 with a 64-group's scale and zero point
      const r = await readBandwidth(b);
      console.log(`floor: ${r.name}: ${vsCopy(r, copy)}; ${(1000 * (r.gpuMs ?? r.ms)).toFixed(2)} µs per call`);
    }
  }
  if (process.argv.includes('--sweep')) {
    // the GEMV kernels' shapes: the words kernel (gemv.ts: rows per workgroup, teams, words per
    // thread, prefetch, staged scales) and the wide kernel's best setting of the earlier sweep
    const base = { ...gemvShape };
    const n = quick ? 1024 : 16384;
    const INT4 = formats.int(4, { group: 64 });
    const q = weightCopies(NF4, n);
    const found: [number, string][] = [];
    /** GB/s of a row: GPU time where measured, else wall; and that as a share of the copy kernel's. */
    const gbps = (r: Row) => r.gpuGbps ?? r.gbps!;
    const pct = (g: number) => `${((100 * g) / gbps(copy)).toFixed(1)}%`;
    const time1 = async (label: string, f = NF4, qw = q, size: Size = n) => {
      const g = await gemv(size, f, label, qw);
      found.push([gbps(g), label]);
      console.log(`gemv sweep ${label}: ${vsCopy(g, copy)}`);
      return gbps(g);
    };
    // the loads alone in the words kernel's pattern: what the shapes could reach without decoding
    const extras = !process.argv.includes('--no-extras');
    for (const [R, NW, size] of !extras ? [] : [[8, 2, n], [16, 2, n], [8, 4, n], [4, 4, n], [16, 8, n], ...(quick ? [] : [[8, 4, 8192], [16, 2, 8192], [8, 4, 4096]])]) {
      const g = await readOnly(size, R, NW);
      console.log(`gemv sweep read only R ${R} NW ${NW} W 2 at ${size}²: ${vsCopy(g, copy)}`);
    }
    Object.assign(gemvShape, { words: false, lut: 'banked', teams: 2, rows: () => 8 });
    if (extras) await time1('wide banked, teams 2, rows 8');
    // the words kernel for nf4 (double-quantized) and int4 (asymmetric) at the default shader checks
    // (off), at 16384² and 8192²: the fifth session's decoders (pt: the pair table replicated pt
    // times; xs: INT weights as 1 + code/16 with the zero point through the x sums; f16: the opt-in
    // f16 products through a pair table of f16 pairs; pw: that many persistent workgroups, 4 per SM
    // of an H200) and the sixth's x loads (px: prefetched with the codes; sx: staged in workgroup
    // memory, where T·cols·4 bytes fit: 8192² but not 16384²; i8: int8 x and integer dot products,
    // INT only, also with W 4) on the best shapes of the earlier
    // sweeps (--sweep-all: every R 4/8/16 x NW 2/4/8 x W 1/2/4 x pf shape instead). Each format's
    // ranking is by the lower of its two sizes' shares of copy.
    const shapes: WordsShape[] = [];
    if (process.argv.includes('--sweep-all')) {
      for (const W of [1, 2, 4] as const) for (const NW of [2, 4, 8]) for (const R of [4, 8, 16]) for (const pf of [false, true]) shapes.push({ R, NW, W, pf });
    } else {
      for (const [R, NW] of [[8, 4], [16, 2], [8, 2]]) shapes.push({ R, NW, W: 2, pf: true });
    }
    const decoders: Record<string, Partial<WordsShape>[]> = {
      // seventh session, after deeper prefetch (pd), fma chains (fc) and hl were timed: int8 x
      // quantized in the GEMV (xf) against x8Source's pass, with the weights streamed (weightCopies);
      // eighth: ip (INT codes decoded in place: within noise of xs and hl, now off the list), then
      // the int8 kernel's fixed cost per call at 8192²: x prefetched (px) or two steps ahead
      // (pd 2); ninth: those measured below xf (55% and 50% of copy at 8192², against 59%)
      nf4: [{}],
      int4: [{ xs: true }, { i8: true, xf: false }, { i8: true }, { i8: true, px: true }, { i8: true, pd: 2 }],
      int4s: [{ xs: true }, { i8: true }],
    };
    const shapeLabel = (s: WordsShape) =>
      `R ${s.R} NW ${s.NW} W ${s.W}${s.pf ? ' pf' : ''}${s.ss ? ' ss' : ''}${s.pt ? ` pt ${s.pt}` : ''}${s.xs ? ' xs' : ''}${s.h ? ' f16' : ''}${s.pw ? ` pw ${s.pw}` : ''}${s.px ? ' px' : ''}${s.sx ? ' sx' : ''}${s.i8 ? ' i8' : ''}${s.pd && s.pd > 1 ? ` pd ${s.pd}` : ''}${s.hl ? ' hl' : ''}${s.fc ? ' fc' : ''}${s.xf === false ? ' x8Source' : ''}${s.ip ? ' ip' : ''}`;
    // --sizes 16384,8192,6336x8192: n for n x n, rows x cols otherwise
    const sizes: Size[] = arg('sizes')?.split(',').map((z) => (z.includes('x') ? (z.split('x').map(Number) as [number, number]) : Number(z))) ?? (quick ? [n] : [n, 8192]);
    // --decoders nf4:JSON (a list of decoder settings) replaces one format's list; --formats nf4 times one
    // (repeatable: one flag per format)
    for (const [i, a] of process.argv.entries()) {
      if (a !== '--decoders') continue;
      const d = process.argv[i + 1];
      decoders[d.slice(0, d.indexOf(':'))] = JSON.parse(d.slice(d.indexOf(':') + 1));
    }
    if (arg('shapes')) shapes.splice(0, shapes.length, ...(JSON.parse(arg('shapes')!) as WordsShape[]));
    const fmts = arg('formats')?.split(',');
    // int4s (symmetric int4: no zero points to load and decode) only when --formats names it
    const INT4S = formats.int(4, { group: 64, symmetric: true });
    const named = new Map<QuantFormat, string>([[NF4, 'nf4'], [INT4, 'int4'], [INT4S, 'int4s']]);
    for (const f of [NF4, INT4, INT4S].filter((g) => (fmts ? fmts.includes(named.get(g)!) : g !== INT4S))) {
      const name = named.get(f)!;
      const qs = sizes.map((size) => (f === NF4 && size === n ? q : weightCopies(f, size)));
      const mine: [number[], WordsShape][] = [];
      const l2 = f !== NF4 ? weightCopies(f, 4096, 1) : [];
      for (const base of shapes) {
        for (const d of decoders[name]) {
          const shape = { ...base, ...d };
          Object.assign(gemvShape, { words: true, wordsShape: () => shape });
          const got: number[] = [];
          for (const [i, size] of sizes.entries()) got.push(await time1(`${name} words ${shapeLabel(shape)} at ${sizeLabel(size)}`, f, qs[i], size));
          mine.push([got, shape]);
          // int4 at the first shape, 4096², one weight timed again and again: served from L2, so
          // the kernel's own limit (compute and issue), apart from memory
          if (f !== NF4 && base === shapes[0]) await time1(`${name} words ${shapeLabel(shape)} at 4096², one weight (L2)`, f, l2, 4096);
        }
      }
      for (const qw of [...qs, l2]) if (qw !== q) for (const c of qw) c.dispose();
      mine.sort((a, b) => Math.min(...b[0]) - Math.min(...a[0]));
      console.log(`gemv sweep ${name} top (${sizes.map(sizeLabel).join(' / ')}): ${mine.slice(0, 5).map(([g, sh]) => `${shapeLabel(sh)}: ${g.map(pct).join(' / ')}`).join('; ')}`);
    }
    // a few x rows: the words kernel's default shapes against the banked kernel, then more rows per
    // workgroup (each x slice serves R rows: at T 8 the default R 2 reads 16x more x than codes)
    for (const T of process.argv.includes('--sweep-rows') ? (quick ? [4] : [4, 8]) : []) {
      for (const words of [false, true]) {
        Object.assign(gemvShape, base, { words });
        const g = await gemv(n, NF4, words ? 'words' : 'banked', q, T);
        console.log(`gemv ${T} x rows ${words ? 'words' : 'banked'}: weights at ${vsCopy(g, copy)}`);
      }
      const tops: [number, string][] = [];
      for (const R of T === 4 ? [4, 8, 16] : [2, 4, 8]) {
        for (const NW of [2, 4]) {
          for (const d of [{}, { pt: 16 }, { i8: true, pt: 16 }]) {
            const shape: WordsShape = { R, NW, W: 2, pf: true, ...d };
            Object.assign(gemvShape, base, { words: true, wordsShape: () => shape });
            const g = await gemv(n, NF4, `words ${shapeLabel(shape)}`, q, T);
            tops.push([gbps(g), shapeLabel(shape)]);
          }
        }
      }
      tops.sort((a, b) => b[0] - a[0]);
      console.log(`gemv sweep ${T} x rows top: ${tops.slice(0, 3).map(([g, l]) => `${l}: ${pct(g)}`).join('; ')}`);
    }
    for (const c of q) c.dispose();
    Object.assign(gemvShape, base);
    found.sort((a, b) => b[0] - a[0]);
    console.log(`gemv sweep best (GB/s, GPU time where measured): ${found.slice(0, 5).map(([g, l]) => `${l}: ${g.toFixed(0)}`).join('; ')}`);
  }
  // the goal's rows at the default kernel shapes: first at the opt-in int8 compute (Device.gemv,
  // QUANTLORA_GPU_GEMV=int8: x quantized to int8, integer dot products), then in f32 with wgpu's
  // shader runtime checks and without (--default-checks: the default only); each against the 1 GiB
  // copy and a copy of the same bytes; --formats int4 leaves nf4 out, int4s (symmetric int4) only when named
  const compute = dev.gemv;
  const modes = [
    { gemv: 'int8' as const, checks: defaultChecks, tag: 'int8 x' },
    ...(process.argv.includes('--default-checks') ? [defaultChecks] : [true, false]).map((checks) => ({ gemv: compute, checks, tag: checks ? '' : 'shader checks off' })),
  ];
  const goalFormats = process.argv.includes('--no-goal') ? [] : (arg('formats') ?? 'nf4,int4').split(',');
  const ROUNDS = quick ? 1 : 3;
  // each format and size's weight copies made once for every mode (making them takes longer than
  // timing them)
  const made = new Map<string, QuantizedTensor[]>();
  const copiesOf = (f: QuantFormat, n: number) => made.get(`${f.name} ${n}`) ?? made.set(`${f.name} ${n}`, weightCopies(f, n)).get(`${f.name} ${n}`)!;
  // and each format and size's same-bytes copy timed once (every mode reads the same bytes)
  const likes = new Map<string, Row>();
  for (const m of modes) {
    Object.assign(dev, { gemv: m.gemv, checks: m.checks });
    for (const n of quick ? [1024] : [8192, 16384]) {
      for (const [name, f] of [['int4', formats.int(4, { group: 64 })], ['int4s', formats.int(4, { group: 64, symmetric: true })], ['nf4', NF4]] as const) {
        if (!goalFormats.includes(name)) continue;
        // ROUNDS rounds, each followed by the reference copy again: the median round's share of the
        // copy timed next to it (a slow round, or a drift of the clocks over a long run, moves
        // neither), the other rounds' shares beside it
        const rounds: [Row, Row][] = [];
        for (let i = 0; i < ROUNDS; i++) rounds.push([await gemv(n, f, m.tag, copiesOf(f, n)), await copyBandwidth(COPY_BYTES)]);
        const share = ([g, c]: [Row, Row]) => (g.gpuGbps ?? g.gbps!) / (c.gpuGbps ?? c.gbps!);
        rounds.sort((a, b) => share(a) - share(b));
        const [r, near] = rounds[ROUNDS >> 1];
        let like = likes.get(`${name} ${n}`);
        if (!like) likes.set(`${name} ${n}`, (like = await copyLike(r)));
        const all = rounds.map((x) => `${(100 * share(x)).toFixed(1)}%`).join(' / ');
        goals.push(`dequantizeMatmul ${name} 1 token ${n}²${m.tag ? ` (${m.tag})` : ''}, median of ${ROUNDS} rounds (${all}): ${vsCopy(r, near)}; against a copy of the same bytes: ${vsCopy(r, like)} (goal ≥ 60%); host ${(1000 * r.hostMs!).toFixed(1)} µs per call`);
        console.log(goals[goals.length - 1]); // as they come (a long run may be stopped)
      }
    }
  }
  Object.assign(dev, { gemv: compute, checks: defaultChecks });
  for (const c of [...made.values()].flat()) c.dispose();
}
if (want('decode')) {
  // greedy decoding, 4-bit INT weights, at the f32 and int8 GEMV computes
  const c = quick ? { ...SMOLLM2, numLayers: 2 } : SMOLLM2;
  const f = formats.int(4, { group: 64 });
  const report = (r: Row) => {
    goals.push(`${r.name}: ${r.ms.toFixed(2)} ms = ${(1000 / r.ms).toFixed(0)} tokens/s`);
    console.log(goals[goals.length - 1]);
  };
  // (and once with the f32 head through the tiled matmul, as before the matmul GEMV kernel)
  const compute = dev.gemv;
  for (const [gemv, tiled] of [['f32', true], ['f32', false], ['int8', false]] as const) {
    dev.gemv = gemv;
    matmulSizing.gemv = !tiled;
    report(await decode(c, f, quick ? 8 : 64, `${gemv}${tiled ? ', head by the tiled matmul' : ''}`));
  }
  // LoRA adapters (rank 16) on every projection, as the methods leave a model: the branch in the
  // GEMVs' epilogues with q/k/v and gate/up in one kernel each (the default), and composed (four
  // kernels more per projection), in turn
  dev.gemv = 'f32';
  const lora = decodeModel(c, f, 16);
  const kernels = { lowRank: gpu.dequantizeMatmulLowRank, many: gpu.dequantizeMatmulMany };
  // 'fused': both kernels; 'per projection': one GEMV per projection (as before dequantizeMatmulMany);
  // 'composed': neither
  const fusion = (level: 'fused' | 'per projection' | 'composed') => {
    gpu.dequantizeMatmulLowRank = level === 'composed' ? undefined : kernels.lowRank;
    gpu.dequantizeMatmulMany = level === 'fused' ? kernels.many : undefined;
  };
  try {
    for (const on of [true, false, true, false]) {
      fusion(on ? 'fused' : 'composed');
      report(await decode(c, f, quick ? 8 : 64, `f32, LoRA rank 16 on every projection, ${on ? 'in the GEMVs' : 'composed'}`, lora));
    }
    // --anatomy: where the f32 decode's time per token goes (decodeAnatomy): the plain model and
    // the LoRA one, fused, one GEMV per projection, and (LoRA) composed, 3 rounds in turn
    if (process.argv.includes('--anatomy')) {
      const plain = decodeModel(c, f);
      const variants = [['', plain, 'fused'], [', one GEMV per projection', plain, 'per projection'], [', LoRA rank 16 in the GEMVs', lora, 'fused'], [', LoRA rank 16 in one GEMV per projection', lora, 'per projection'], [', LoRA rank 16 composed', lora, 'composed']] as const;
      try {
        for (let round = 0; round < 3; round++) {
          for (const [label, qm, level] of variants) {
            fusion(level);
            const a = await decodeAnatomy(qm, quick ? 8 : 64);
            const name = `decode anatomy ${f.name} (f32${label}), ${c.numLayers} layers, round ${round + 1}: ms per token`;
            rows.push({ name, ms: a.wall, gpuMs: a.gpu, hostMs: a.host, note: `ms: wall with a read per token; GPU ms: busy; host: recording only; generate ${a.gen.toFixed(3)} ms per token` });
            goals.push(`${name}: wall ${a.wall.toFixed(2)}, host recording ${a.host.toFixed(2)}, GPU busy ${a.gpu?.toFixed(2) ?? '(no timestamps)'}, generate ${a.gen.toFixed(2)}`);
            console.log(goals[goals.length - 1]);
          }
        }
      } finally {
        plain.dispose();
      }
    }
  } finally {
    fusion('fused');
    lora.dispose();
  }
  // --batches FIRST:MAX,...: the f32 decode under other submit schedules (the first batch after a
  // wait, and the most dispatches per batch: the host records while the GPU runs what was
  // submitted; the batch still pending at the read runs after the recording, in series), and the
  // default schedule beside them: 3 rounds in turn, one model, the median of each
  const schedules = arg('batches')?.split(',').map((b) => b.split(':').map(Number) as [number, number]) ?? [];
  if (schedules.length) {
    dev.gemv = 'f32';
    const qm = decodeModel(c, f);
    // the settings in force (each setter returns the one it replaces)
    const f0 = dev.addon.gpuSetFirstBatch(1);
    const m0 = dev.addon.gpuSetMaxBatch(1);
    const all: [number, number][] = [[f0, m0], ...schedules];
    const times = all.map(() => [] as number[]);
    try {
      for (let round = 0; round < 3; round++) {
        for (const [i, [first, most]] of all.entries()) {
          dev.addon.gpuSetFirstBatch(first);
          dev.addon.gpuSetMaxBatch(most);
          times[i].push((await decode(c, f, quick ? 8 : 64, `f32, batches ${first} doubling to ${most}`, qm)).ms);
        }
      }
    } finally {
      dev.addon.gpuSetFirstBatch(f0);
      dev.addon.gpuSetMaxBatch(m0);
      qm.dispose();
    }
    for (const [i, [first, most]] of all.entries()) {
      const t = [...times[i]].sort((a, b) => a - b);
      goals.push(`decode ${f.name} (f32, batches ${first} doubling to ${most}${i === 0 ? ': the default' : ''}), ${c.numLayers} layers, median of 3 rounds (${times[i].map((x) => x.toFixed(2)).join(' / ')} ms): ${t[1].toFixed(2)} ms = ${(1000 / t[1]).toFixed(0)} tokens/s`);
      console.log(goals[goals.length - 1]);
    }
  }
  matmulSizing.gemv = true;
  dev.gemv = compute;
}
if (want('matmul')) {
  const n = quick ? 512 : 4096;
  const ours = await sgemm(n);
  const ref = torch(['matmul', String(n)]);
  if (ref) goals.push(`matmul f32 ${n}³: ${ours.toFixed(0)} GFLOP/s = ${((100 * ours) / ref.gflops).toFixed(0)}% of PyTorch fp32 (TF32 off) ${ref.gflops.toFixed(0)} GFLOP/s (goal ≥ 30%)`);
  else goals.push(`matmul f32 ${n}³: ${ours.toFixed(0)} GFLOP/s (no PyTorch reference here)`);
}
if (want('rilq')) {
  const c = quick ? { ...SMOLLM2, numLayers: 2 } : SMOLLM2;
  const tokens = quick ? 64 : 512;
  if (process.argv.includes('--ab')) {
    // the same step with the scheduling before the work-sizing change (plain tiles, no k split,
    // whole batches of 2048 dispatches even after a wait), in the same run
    matmulSizing.on = false;
    const before = dev.addon.gpuSetFirstBatch(2048);
    const old = await rilqStep(c, tokens, 16);
    rows[rows.length - 1].note = 'matmul work sizing off, first batch 2048';
    matmulSizing.on = true;
    dev.addon.gpuSetFirstBatch(before);
    goals.push(`rilq step without work sizing and early submits: ${old.ms.toFixed(1)} ms`);
    const cache = dev.addon.gpuSetBindCache(false);
    const fresh = await rilqStep(c, tokens, 16);
    rows[rows.length - 1].note = 'a bind group per dispatch';
    dev.addon.gpuSetBindCache(cache);
    goals.push(`rilq step with a bind group made per dispatch: ${fresh.ms.toFixed(1)} ms`);
    dev.checks = !defaultChecks; // the setting that is not the default
    const other = await rilqStep(c, tokens, 16);
    const label = `shader checks ${dev.checks ? 'on' : 'off'}`;
    rows[rows.length - 1].note = label;
    dev.checks = defaultChecks;
    goals.push(`rilq step with ${label}: ${other.ms.toFixed(1)} ms`);
  }
  const { ms, dir } = await rilqStep(c, tokens, 16);
  const ref = torch(['rilq', dir, String(tokens), '16']);
  if (ref) goals.push(`rilq step: ${ms.toFixed(1)} ms vs PyTorch eager ${ref.ms.toFixed(1)} ms = ${(ms / ref.ms).toFixed(2)}x (goal ≤ 3x)`);
  else goals.push(`rilq step: ${ms.toFixed(1)} ms (no PyTorch reference here)`);
}

console.table(rows.map((r) => ({ name: r.name, 'ms': r.ms.toFixed(4), 'GPU ms': r.gpuMs?.toFixed(4) ?? '', 'host µs': r.hostMs === undefined ? '' : (1000 * r.hostMs).toFixed(1), 'GB/s': r.gbps?.toFixed(1) ?? '', 'GPU GB/s': r.gpuGbps?.toFixed(1) ?? '', 'GFLOP/s': r.gflops?.toFixed(0) ?? '' })));
for (const g of goals) console.log(g);
const report = { date: new Date().toISOString(), adapter: dev.info, hostKernels: gpu.hostKernels, quick, rows, goals };
mkdirSync(dirname(outFile), { recursive: true });
writeFileSync(`${outFile}.tmp`, JSON.stringify(report, null, 2));
renameSync(`${outFile}.tmp`, outFile);
console.log(`wrote ${outFile}`);
