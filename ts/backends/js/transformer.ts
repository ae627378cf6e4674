// Transformer-block kernels of the JS reference backend: RMSNorm, rotary embeddings, softmax with
// an optional causal mask, and fused cross-entropy, each with its backward.

import type { RopeParams } from '../../backend.js';
import { ValueError } from '../../errors.js';

export function rmsnorm(x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): Float32Array {
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let ss = 0;
    for (let j = 0; j < dim; j++) ss += x[o + j] * x[o + j];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let j = 0; j < dim; j++) out[o + j] = x[o + j] * inv * w[j];
  }
  return out;
}

// y = x·r·w with r = (mean(x²)+eps)^-½:  dx = r·(g − x̂·mean(g·x̂)), g = dy·w, x̂ = x·r;  dw = Σ_rows dy·x̂
export function rmsnormBackward(x: Float32Array, w: Float32Array, dy: Float32Array, rows: number, dim: number, eps: number): [Float32Array, Float32Array] {
  const dx = new Float32Array(rows * dim);
  const dw = new Float64Array(dim);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let ss = 0;
    for (let j = 0; j < dim; j++) ss += x[o + j] * x[o + j];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    let dot = 0;
    for (let j = 0; j < dim; j++) dot += dy[o + j] * w[j] * x[o + j] * inv;
    const mean = dot / dim;
    for (let j = 0; j < dim; j++) {
      const xhat = x[o + j] * inv;
      dx[o + j] = inv * (dy[o + j] * w[j] - xhat * mean);
      dw[j] += dy[o + j] * xhat;
    }
  }
  return [dx, Float32Array.from(dw)];
}

/** Rotates pairs of x [outer, seq, dim]: (i, i+dim/2) for 'half' (HF), (2i, 2i+1) for 'interleaved'. */
export function rope(x: Float32Array, p: RopeParams): Float32Array {
  const { outer, seq, dim, theta, offset, style } = p;
  const half = dim / 2;
  const out = new Float32Array(outer * seq * dim);
  const sign = p.inverse ? -1 : 1;
  for (let o = 0; o < outer; o++) {
    for (let t = 0; t < seq; t++) {
      const base = (o * seq + t) * dim;
      const pos = t + offset;
      for (let i = 0; i < half; i++) {
        const angle = sign * pos * Math.pow(theta, (-2 * i) / dim);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const i1 = style === 'half' ? base + i : base + 2 * i;
        const i2 = style === 'half' ? base + i + half : base + 2 * i + 1;
        const x1 = x[i1];
        const x2 = x[i2];
        out[i1] = x1 * c - x2 * s;
        out[i2] = x1 * s + x2 * c;
      }
    }
  }
  return out;
}

/** Number of visible keys in a row: all of them, or (causal) up to the query's own position. */
function visible(row: number, cols: number, causalQueries: number): number {
  if (causalQueries <= 0) return cols;
  const q = row % causalQueries;
  return Math.min(cols, q + (cols - causalQueries) + 1);
}

export function softmax(x: Float32Array, rows: number, cols: number, causalQueries: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    const n = visible(r, cols, causalQueries);
    let max = -Infinity;
    for (let j = 0; j < n; j++) if (x[o + j] > max) max = x[o + j];
    let sum = 0;
    for (let j = 0; j < n; j++) sum += Math.exp(x[o + j] - max);
    for (let j = 0; j < n; j++) out[o + j] = Math.exp(x[o + j] - max) / sum;
  }
  return out;
}

// dx = y·(dy − Σ dy·y); masked entries have y = 0 and so get 0.
export function softmaxBackward(y: Float32Array, dy: Float32Array, rows: number, cols: number): Float32Array {
  const dx = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let dot = 0;
    for (let j = 0; j < cols; j++) dot += dy[o + j] * y[o + j];
    for (let j = 0; j < cols; j++) dx[o + j] = y[o + j] * (dy[o + j] - dot);
  }
  return dx;
}

function logSumExp(x: Float32Array, o: number, n: number): number {
  let max = -Infinity;
  for (let j = 0; j < n; j++) if (x[o + j] > max) max = x[o + j];
  let sum = 0;
  for (let j = 0; j < n; j++) sum += Math.exp(x[o + j] - max);
  return max + Math.log(sum);
}

function checkTarget(t: number, row: number, vocab: number): void {
  if (!Number.isInteger(t) || t < 0 || t >= vocab) {
    throw new ValueError(`crossEntropy: target ${t} of row ${row} is outside [0, ${vocab}) and is not the ignore index`);
  }
}

/** Mean over non-ignored rows of logsumexp(logits) − logits[target]; 0 when every row is ignored. */
export function crossEntropy(logits: Float32Array, targets: Int32Array, rows: number, vocab: number, ignoreIndex: number): Float32Array {
  let total = 0;
  let count = 0;
  for (let r = 0; r < rows; r++) {
    const t = targets[r];
    if (t === ignoreIndex) continue;
    checkTarget(t, r, vocab);
    total += logSumExp(logits, r * vocab, vocab) - logits[r * vocab + t];
    count++;
  }
  return Float32Array.of(count ? total / count : 0);
}

export function crossEntropyBackward(logits: Float32Array, targets: Int32Array, dLoss: Float32Array, rows: number, vocab: number, ignoreIndex: number): Float32Array {
  let count = 0;
  for (let r = 0; r < rows; r++) if (targets[r] !== ignoreIndex) count++;
  const out = new Float32Array(rows * vocab);
  if (!count) return out;
  const scale = dLoss[0] / count;
  for (let r = 0; r < rows; r++) {
    const t = targets[r];
    if (t === ignoreIndex) continue;
    checkTarget(t, r, vocab);
    const o = r * vocab;
    const lse = logSumExp(logits, o, vocab);
    for (let j = 0; j < vocab; j++) out[o + j] = Math.exp(logits[o + j] - lse) * scale;
    out[o + t] -= scale;
  }
  return out;
}
