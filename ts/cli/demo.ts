// The demo job: quantize a random Llama-shaped layer set (SmolLM2-135M's block shapes) in every
// format and report reconstruction error, code entropy and storage size per format.

import { formats, type QuantFormat } from '../quant/formats.js';
import { dequantize, quantize } from '../quant/api.js';
import { tensor, gaussianArray, rng, tidy } from '../tensor.js';
import { getBackend } from '../registry.js';

/** One transformer block of SmolLM2-135M: hidden 576, MLP 1536, 3 KV heads of 64. */
export const LLAMA_LAYERS: { name: string; shape: [number, number] }[] = [
  { name: 'q_proj', shape: [576, 576] },
  { name: 'k_proj', shape: [192, 576] },
  { name: 'v_proj', shape: [192, 576] },
  { name: 'o_proj', shape: [576, 576] },
  { name: 'gate_proj', shape: [1536, 576] },
  { name: 'up_proj', shape: [1536, 576] },
  { name: 'down_proj', shape: [576, 1536] },
];

export const DEMO_FORMATS: QuantFormat[] = [
  formats.nf(4, { group: 64, doubleQuant: true }),
  formats.nf(4, { group: 64, doubleQuant: false }),
  formats.nf(3, { group: 64, doubleQuant: true }),
  formats.nf(2, { group: 64, doubleQuant: true }),
  formats.int(4, { group: 64 }),
  formats.int(4, { group: 128, symmetric: true }),
  formats.int(3, { group: 64 }),
  formats.int(3, { group: 128, symmetric: true }),
  formats.int(2, { group: 64 }),
  formats.int(2, { group: 64, symmetric: true }),
];

/** Gaussian weights (std 0.02) with a sprinkle of 10x outliers, like trained LLM layers. */
export function llamaLikeWeights(rows: number, cols: number, seed: number): Float32Array {
  const w = gaussianArray(rows * cols, seed, 0.02);
  const next = rng(seed ^ 0x5bd1e995);
  for (let i = 0; i < w.length; i++) if (next() < 0.001) w[i] *= 10;
  return w;
}

export interface FormatReport {
  format: string;
  bits: number;
  /** ||W − Q(W)||_F / ||W||_F over all layers. */
  relError: number;
  /** Mean entropy of the codes in bits (max = bits). */
  entropy: number;
  bytes: number;
  bitsPerWeight: number;
  ms: number;
}

function entropyBits(codes: Uint8Array, levels: number): number {
  const hist = new Float64Array(levels);
  for (const c of codes) hist[c]++;
  let h = 0;
  for (const n of hist) if (n) h -= (n / codes.length) * Math.log2(n / codes.length);
  return h;
}

export async function runDemo(opts: { seed?: number; formats?: QuantFormat[] } = {}): Promise<FormatReport[]> {
  const seed = opts.seed ?? 0;
  const layers = LLAMA_LAYERS.map((l, i) => ({ ...l, data: llamaLikeWeights(l.shape[0], l.shape[1], seed * 100 + i) }));
  const reports: FormatReport[] = [];
  for (const f of opts.formats ?? DEMO_FORMATS) {
    let err = 0;
    let norm = 0;
    let bytes = 0;
    let params = 0;
    let entropySum = 0;
    const start = performance.now();
    for (const layer of layers) {
      const q = tidy(() => quantize(tensor(layer.data, layer.shape), f));
      const deq = dequantize(q);
      const d = (await deq.data()) as Float32Array;
      for (let i = 0; i < d.length; i++) {
        err += (d[i] - layer.data[i]) ** 2;
        norm += layer.data[i] ** 2;
      }
      entropySum += entropyBits(await q.unpackedCodes(), 1 << f.bits) * d.length;
      bytes += q.bytes;
      params += d.length;
      deq.dispose();
      q.dispose();
    }
    reports.push({
      format: f.name, bits: f.bits, relError: Math.sqrt(err / norm), entropy: entropySum / params,
      bytes, bitsPerWeight: (bytes * 8) / params, ms: performance.now() - start,
    });
  }
  return reports;
}

export function printDemo(reports: FormatReport[]): void {
  console.log(`backend: ${getBackend().name}; layers: ${LLAMA_LAYERS.map((l) => `${l.name} ${l.shape.join('x')}`).join(', ')}`);
  console.table(reports.map((r) => ({
    format: r.format,
    'rel. error': r.relError.toFixed(4),
    'entropy (bits)': `${r.entropy.toFixed(3)} / ${r.bits}`,
    'size (KiB)': (r.bytes / 1024).toFixed(1),
    'bits/weight': r.bitsPerWeight.toFixed(3),
    'time (ms)': r.ms.toFixed(0),
  })));
}
