// Outside references measured in the same run as the suites: OpenBLAS sgemm through numpy (when
// python3 + numpy are present) and the machine's memory read bandwidth (a plain streaming-read
// kernel of the native addon over a buffer far larger than the caches, all threads).

import { execFileSync } from 'node:child_process';
import { backends, backendByName } from '../ts/index.js';
import type { NativeBackend } from '../ts/backends/native/index.js';

export interface Reference { name: string; value: number; unit: string; note?: string }

/** GFLOP/s of numpy's float32 n×n×n matmul (best of several runs), or a note why it is absent. */
export function numpySgemm(n: number): Reference {
  const script = `
import time, numpy as np
a = np.random.rand(${n}, ${n}).astype(np.float32); b = np.random.rand(${n}, ${n}).astype(np.float32)
a @ b
best = 1e9
for _ in range(10):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
print(2 * ${n} ** 3 / best / 1e9)
cfg = np.show_config(mode='dicts') if hasattr(np, 'show_config') else None
print((cfg or {}).get('Build Dependencies', {}).get('blas', {}).get('name', 'unknown'))`;
  try {
    const [gflops, blas] = execFileSync('python3', ['-c', script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split('\n');
    return { name: `numpy sgemm ${n}³ (${blas}, all cores)`, value: Number(gflops), unit: 'GFLOP/s' };
  } catch {
    return { name: `numpy sgemm ${n}³`, value: NaN, unit: 'GFLOP/s', note: 'skipped: python3 with numpy not found' };
  }
}

/** GB/s of the native addon's streaming read over `mib` MiB (all threads), or a note. */
export function streamRead(mib = 512): Reference {
  if (!backends().some((b) => b.name === 'native' && b.available)) {
    return { name: 'memory read bandwidth', value: NaN, unit: 'GB/s', note: 'skipped: the native backend is not available' };
  }
  const addon = (backendByName('native') as unknown as NativeBackend).addon;
  const bytes = mib * 2 ** 20;
  const buf = addon.alloc(bytes, true);
  const view = new Float32Array(buf);
  // write every page first: untouched anonymous memory reads as the shared zero page (cache speed)
  addon.fillF32(view, 1);
  addon.streamRead(view);
  let best = Infinity;
  for (let i = 0; i < 8; i++) {
    const t = performance.now();
    addon.streamRead(view);
    best = Math.min(best, performance.now() - t);
  }
  addon.release(buf);
  return { name: `memory read bandwidth (native stream read, ${mib} MiB, all threads)`, value: bytes / (best * 1e6), unit: 'GB/s' };
}
