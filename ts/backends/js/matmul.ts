// Batched f32 matmul of the JS reference backend: plain loops, f64 accumulation per output row.

import type { MatmulDims } from '../../backend.js';

export function matmul(a: Float32Array, b: Float32Array, d: MatmulDims): Float32Array {
  const { batch, m, k, n } = d;
  const out = new Float32Array(batch * m * n);
  // element (i, p) of A is a[aBase + i*ars + p*acs]; element (p, j) of B is b[bBase + p*brs + j*bcs]
  const ars = d.transA ? 1 : k;
  const acs = d.transA ? m : 1;
  const brs = d.transB ? 1 : n;
  const bcs = d.transB ? k : 1;
  const acc = new Float64Array(n);
  for (let s = 0; s < batch; s++) {
    const aBase = s * d.aBatchStride;
    const bBase = s * d.bBatchStride;
    for (let i = 0; i < m; i++) {
      acc.fill(0);
      for (let p = 0; p < k; p++) {
        const aip = a[aBase + i * ars + p * acs];
        if (aip === 0) continue;
        let bi = bBase + p * brs;
        for (let j = 0; j < n; j++, bi += bcs) acc[j] += aip * b[bi];
      }
      const o = (s * m + i) * n;
      for (let j = 0; j < n; j++) out[o + j] = acc[j];
    }
  }
  return out;
}
