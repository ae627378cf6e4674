//! Transformer-block kernels (ts/backends/js/transformer.ts): RMSNorm, rotary embeddings, softmax
//! with an optional causal mask, and fused cross-entropy, each with its backward.
//!
//! The `_reference` versions compute in f64 exactly as the JS loops do. The optimized ones use f32
//! lanes (`simd::F32x4`) with row sums in f32 over 64-element blocks added in f64, the polynomial
//! exp of `simd`, and per-call tables (RoPE cos/sin); results agree with the references to a few
//! f32 ulps of the row's magnitude (see tests.rs for the stated tolerances).

mod loss;
#[cfg(test)]
pub(crate) mod tests;

pub use loss::{cross_entropy, cross_entropy_backward, cross_entropy_backward_reference, cross_entropy_reference};

use crate::elementwise::simd::{dot3_f64, dot_f64, max_skip_nan, F32x4};
pub(crate) use crate::elementwise::simd::{exp_shift_store, scale_in_place};

// ---------------------------------------------------------------- RMSNorm

/// 1 / sqrt(mean(x²) + eps) of one row, in f64.
fn inv_rms_reference(row: &[f32], eps: f32) -> f64 {
    let ss: f64 = row.iter().map(|&v| v as f64 * v as f64).sum();
    1.0 / (ss / row.len() as f64 + eps as f64).sqrt()
}

pub fn rmsnorm_reference(x: &[f32], w: &[f32], rows: usize, dim: usize, eps: f32, out: &mut [f32]) {
    for r in 0..rows {
        let o = r * dim;
        let inv = inv_rms_reference(&x[o..o + dim], eps);
        for j in 0..dim {
            out[o + j] = (x[o + j] as f64 * inv * w[j] as f64) as f32;
        }
    }
}

/// y = x·w / sqrt(mean(x²) + eps) per row of x [rows, dim].
pub fn rmsnorm(x: &[f32], w: &[f32], rows: usize, dim: usize, eps: f32, out: &mut [f32]) {
    let w = &w[..dim];
    let d4 = dim / 4 * 4;
    for r in 0..rows {
        let xr = &x[r * dim..(r + 1) * dim];
        let yr = &mut out[r * dim..(r + 1) * dim];
        let ss = dot_f64(xr, xr);
        let inv = (1.0 / (ss / dim as f64 + eps as f64).sqrt()) as f32;
        let iv = F32x4::splat(inv);
        let mut j = 0;
        while j < d4 {
            F32x4::from_slice(xr, j).mul(iv).mul(F32x4::from_slice(w, j)).write_to(yr, j);
            j += 4;
        }
        for j in d4..dim {
            yr[j] = xr[j] * inv * w[j];
        }
    }
}

pub fn rmsnorm_backward_reference(x: &[f32], w: &[f32], dy: &[f32], rows: usize, dim: usize, eps: f32, dx: &mut [f32], dw: &mut [f32]) {
    let mut dw64 = vec![0f64; dim];
    for r in 0..rows {
        let o = r * dim;
        let inv = inv_rms_reference(&x[o..o + dim], eps);
        let mut dot = 0f64;
        for j in 0..dim {
            dot += dy[o + j] as f64 * w[j] as f64 * x[o + j] as f64 * inv;
        }
        let mean = dot / dim as f64;
        for j in 0..dim {
            let xhat = x[o + j] as f64 * inv;
            dx[o + j] = (inv * (dy[o + j] as f64 * w[j] as f64 - xhat * mean)) as f32;
            dw64[j] += dy[o + j] as f64 * xhat;
        }
    }
    for j in 0..dim {
        dw[j] = dw64[j] as f32;
    }
}

/// dx = r·(g − x̂·mean(g·x̂)) with g = dy·w, x̂ = x·r, r = (mean(x²)+eps)^-½; dw = Σ_rows dy·x̂
/// (summed in f32 over 16 rows at a time, those partial sums added in f64).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(x: &[f32], w: &[f32], dy: &[f32], rows: usize, dim: usize, eps: f32, dx: &mut [f32], dw: &mut [f32]) {
    const FLUSH: usize = 16;
    let w = &w[..dim];
    let d4 = dim / 4 * 4;
    let mut dw64 = vec![0f64; dim];
    let mut part = vec![0f32; dim];
    for r in 0..rows {
        let xr = &x[r * dim..(r + 1) * dim];
        let gr = &dy[r * dim..(r + 1) * dim];
        let dxr = &mut dx[r * dim..(r + 1) * dim];
        let ss = dot_f64(xr, xr);
        let inv64 = 1.0 / (ss / dim as f64 + eps as f64).sqrt();
        let mean = (dot3_f64(gr, w, xr) * inv64 / dim as f64) as f32;
        let inv = inv64 as f32;
        let (iv, mv) = (F32x4::splat(inv), F32x4::splat(mean));
        let mut j = 0;
        while j < d4 {
            let xhat = F32x4::from_slice(xr, j).mul(iv);
            let g = F32x4::from_slice(gr, j);
            iv.mul(g.mul(F32x4::from_slice(w, j)).sub(xhat.mul(mv))).write_to(dxr, j);
            F32x4::from_slice(&part, j).add(g.mul(xhat)).write_to(&mut part, j);
            j += 4;
        }
        for j in d4..dim {
            let xhat = xr[j] * inv;
            dxr[j] = inv * (gr[j] * w[j] - xhat * mean);
            part[j] += gr[j] * xhat;
        }
        if (r + 1) % FLUSH == 0 || r + 1 == rows {
            for (d, p) in dw64.iter_mut().zip(part.iter_mut()) {
                *d += *p as f64;
                *p = 0.0;
            }
        }
    }
    for j in 0..dim {
        dw[j] = dw64[j] as f32;
    }
}

// ---------------------------------------------------------------- RoPE

/// The angle of pair i at position pos, as the JS expression evaluates it.
#[inline]
fn rope_angle(pos: usize, i: usize, dim: usize, theta: f32, inverse: bool) -> f64 {
    let sign = if inverse { -1.0 } else { 1.0 };
    sign * pos as f64 * (theta as f64).powf((-2.0 * i as f64) / dim as f64)
}

pub fn rope_reference(x: &[f32], outer: usize, seq: usize, dim: usize, theta: f32, offset: usize, interleaved: bool, inverse: bool, out: &mut [f32]) {
    let half = dim / 2;
    for o in 0..outer {
        for t in 0..seq {
            let base = (o * seq + t) * dim;
            for i in 0..half {
                let angle = rope_angle(t + offset, i, dim, theta, inverse);
                let (s, c) = angle.sin_cos();
                let (i1, i2) = if interleaved { (base + 2 * i, base + 2 * i + 1) } else { (base + i, base + i + half) };
                let (x1, x2) = (x[i1] as f64, x[i2] as f64);
                out[i1] = (x1 * c - x2 * s) as f32;
                out[i2] = (x1 * s + x2 * c) as f32;
            }
        }
    }
}

/// Rotates pairs of x [outer, seq, dim] (dim even): (i, i+dim/2) for 'half' (HF),
/// (2i, 2i+1) when `interleaved`; `inverse` rotates by minus the angle (the backward).
/// cos/sin come from one [seq, dim] table per call (f64 angles rounded to f32).
#[allow(clippy::too_many_arguments)]
pub fn rope(x: &[f32], outer: usize, seq: usize, dim: usize, theta: f32, offset: usize, interleaved: bool, inverse: bool, out: &mut [f32]) {
    let half = dim / 2;
    if half == 0 || outer == 0 || seq == 0 {
        return;
    }
    // table row t: half style [cos_0..cos_{h-1}, sin_0..sin_{h-1}];
    // interleaved [c0, c0, c1, c1, ...] and [-s0, s0, -s1, s1, ...] (x·cc + swap_pairs(x)·ss)
    let mut cs = vec![0f32; seq * 2 * dim];
    for t in 0..seq {
        let row = &mut cs[t * 2 * dim..(t + 1) * 2 * dim];
        for i in 0..half {
            let (s, c) = rope_angle(t + offset, i, dim, theta, inverse).sin_cos();
            let (s, c) = (s as f32, c as f32);
            if interleaved {
                row[2 * i] = c;
                row[2 * i + 1] = c;
                row[dim + 2 * i] = -s;
                row[dim + 2 * i + 1] = s;
            } else {
                row[i] = c;
                row[half + i] = s;
            }
        }
    }
    let h4 = half / 4 * 4;
    let d4 = dim / 4 * 4;
    for o in 0..outer {
        for t in 0..seq {
            let base = (o * seq + t) * dim;
            let xr = &x[base..base + dim];
            let yr = &mut out[base..base + dim];
            let row = &cs[t * 2 * dim..(t + 1) * 2 * dim];
            if interleaved {
                let (cc, ss) = row.split_at(dim);
                let mut j = 0;
                while j < d4 {
                    let v = F32x4::from_slice(xr, j);
                    v.mul(F32x4::from_slice(cc, j)).add(v.swap_pairs().mul(F32x4::from_slice(ss, j))).write_to(yr, j);
                    j += 4;
                }
                // d4 is even, so the tail holds whole pairs
                while j < dim {
                    let (x1, x2) = (xr[j], xr[j + 1]);
                    yr[j] = x1 * cc[j] + x2 * ss[j];
                    yr[j + 1] = x2 * cc[j + 1] + x1 * ss[j + 1];
                    j += 2;
                }
            } else {
                let (c, s) = (&row[..half], &row[half..dim]);
                let (x1s, x2s) = xr.split_at(half);
                let (y1s, y2s) = yr.split_at_mut(half);
                let mut i = 0;
                while i < h4 {
                    let (x1, x2) = (F32x4::from_slice(x1s, i), F32x4::from_slice(x2s, i));
                    let (cv, sv) = (F32x4::from_slice(c, i), F32x4::from_slice(s, i));
                    x1.mul(cv).sub(x2.mul(sv)).write_to(y1s, i);
                    x1.mul(sv).add(x2.mul(cv)).write_to(y2s, i);
                    i += 4;
                }
                for i in h4..half {
                    let (x1, x2) = (x1s[i], x2s[i]);
                    y1s[i] = x1 * c[i] - x2 * s[i];
                    y2s[i] = x1 * s[i] + x2 * c[i];
                }
            }
        }
    }
}

// ---------------------------------------------------------------- softmax

/// Keys visible to row `row`: all `cols`, or (causal) those up to the query's own position, where
/// query q = row % causal_queries sits at key q + (cols − causal_queries). Can be 0.
pub fn visible(row: usize, cols: usize, causal_queries: usize) -> usize {
    if causal_queries == 0 {
        return cols;
    }
    let q = (row % causal_queries) as i64;
    let v = q + cols as i64 - causal_queries as i64 + 1;
    v.max(0).min(cols as i64) as usize
}

pub fn softmax_reference(x: &[f32], rows: usize, cols: usize, causal_queries: usize, out: &mut [f32]) {
    for r in 0..rows {
        let o = r * cols;
        let n = visible(r, cols, causal_queries);
        let mut max = f64::NEG_INFINITY;
        for j in 0..n {
            if x[o + j] as f64 > max {
                max = x[o + j] as f64;
            }
        }
        let mut sum = 0f64;
        for j in 0..n {
            sum += (x[o + j] as f64 - max).exp();
        }
        for j in 0..cols {
            out[o + j] = if j < n { ((x[o + j] as f64 - max).exp() / sum) as f32 } else { 0.0 };
        }
    }
}

/// Softmax over rows of x [rows, cols]; masked keys (causal) get exactly 0.
pub fn softmax(x: &[f32], rows: usize, cols: usize, causal_queries: usize, out: &mut [f32]) {
    for r in 0..rows {
        let xr = &x[r * cols..(r + 1) * cols];
        let yr = &mut out[r * cols..(r + 1) * cols];
        let n = visible(r, cols, causal_queries);
        let m = max_skip_nan(&xr[..n]);
        let sum = exp_shift_store(&xr[..n], m, yr);
        scale_in_place(&mut yr[..n], (1.0 / sum) as f32);
        for v in &mut yr[n..] {
            *v = 0.0;
        }
    }
}

pub fn softmax_backward_reference(y: &[f32], dy: &[f32], rows: usize, cols: usize, dx: &mut [f32]) {
    for r in 0..rows {
        let o = r * cols;
        let mut dot = 0f64;
        for j in 0..cols {
            dot += dy[o + j] as f64 * y[o + j] as f64;
        }
        for j in 0..cols {
            dx[o + j] = (y[o + j] as f64 * (dy[o + j] as f64 - dot)) as f32;
        }
    }
}

/// dx = y·(dy − Σ dy·y) per row; masked entries have y = 0 and so get 0.
pub fn softmax_backward(y: &[f32], dy: &[f32], rows: usize, cols: usize, dx: &mut [f32]) {
    let c4 = cols / 4 * 4;
    for r in 0..rows {
        let yr = &y[r * cols..(r + 1) * cols];
        let gr = &dy[r * cols..(r + 1) * cols];
        let dr = &mut dx[r * cols..(r + 1) * cols];
        let dot = dot_f64(gr, yr) as f32;
        let dv = F32x4::splat(dot);
        let mut j = 0;
        while j < c4 {
            F32x4::from_slice(yr, j).mul(F32x4::from_slice(gr, j).sub(dv)).write_to(dr, j);
            j += 4;
        }
        for j in c4..cols {
            dr[j] = yr[j] * (gr[j] - dot);
        }
    }
}
