//! The process-wide rayon pool and the threaded matmul / dequantize-matmul.
//!
//! Results are bit-identical to the one-threaded kernels: every output element is computed by the
//! same code path with the same operands in the same order, only different elements go to
//! different threads.
//! - matmul: batches that share B are folded into one tall matmul first (as the kernel does),
//!   then every batch's output is cut into rectangles by `mm::split_grid`: rows and columns (a
//!   2-D grid, so a square problem gives every thread a piece) at multiples of the micro-kernel's
//!   tile (`mm::plan`: 12x32 AVX-512, 6x16 AVX2, 4x8 elsewhere), or only whole row pairs when the
//!   whole problem takes the kernel's unpacked few-rows path. Each rectangle is written by
//!   `mm::matmul_block`, which runs the path `mm::matmul` takes for the whole problem (not one
//!   picked from the piece's size) and computes each element by the same FMA chain per kc slice
//!   wherever the element falls (transposes are absorbed by packing, as in one call).
//! - dequantizeMatmul: weight rows are split with `dequantize_matmul_rows`, each worker writing
//!   only its columns of the shared output (the kernel's contract).
//! - dequantize: weight rows are split with `dequantize_rows`, each worker writing its own rows
//!   (group scales are read by global group index, so double-quant blocks spanning a cut are fine).
//!
//! Problems under PAR_MIN_MACS multiply-adds stay on the calling thread.

use quantlora_kernels::matmul::{self as mm, MatmulDims};
use quantlora_kernels::quant::{self, Format, Parts};
use rayon::prelude::*;
use std::sync::{Arc, RwLock};

/// Below this many multiply-adds a call stays on the calling thread: the hand-off to the pool and
/// back costs ~12-15 µs on a 2-core VM, and crates/node/bench-threads.mjs measured the 2-thread
/// crossover there at 0.5-1M multiply-adds (matmul 32x128x128: 0.78x, 4x576x576: 1.37x;
/// nf4 GEMV 512x512: 1.04x, 576x1536: 1.40x). QUANTLORA_PAR_MIN_MACS
/// overrides it (read once).
pub const PAR_MIN_MACS: usize = 1 << 20;

fn par_min_macs() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var("QUANTLORA_PAR_MIN_MACS").ok().and_then(|s| s.parse().ok()).unwrap_or(PAR_MIN_MACS))
}

static POOL: RwLock<Option<Arc<rayon::ThreadPool>>> = RwLock::new(None);

fn build(n: usize) -> Result<rayon::ThreadPool, String> {
    let n = if n == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { n };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("quantlora-{i}"))
        .build()
        .map_err(|e| e.to_string())
}

pub fn pool() -> Arc<rayon::ThreadPool> {
    if let Some(p) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return p.clone();
    }
    let mut g = POOL.write().unwrap_or_else(|e| e.into_inner());
    if g.is_none() {
        let env = std::env::var("QUANTLORA_THREADS").ok().and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
        *g = Some(Arc::new(build(env).or_else(|_| build(1)).expect("thread pool")));
    }
    g.as_ref().unwrap().clone()
}

pub fn set_threads(n: usize) -> Result<(), String> {
    let p = Arc::new(build(n)?);
    *POOL.write().unwrap_or_else(|e| e.into_inner()) = Some(p);
    Ok(())
}

pub fn threads() -> usize {
    pool().current_num_threads()
}

/// Split [0, m) into at most `parts` ranges, each at least `min_rows` long, boundaries at
/// multiples of `step` where possible (else anywhere); one range if nothing else fits.
fn split_rows(m: usize, parts: usize, step: usize, min_rows: usize) -> Vec<(usize, usize)> {
    let mut parts = parts.max(1).min(m.max(1));
    while parts > 1 {
        for st in [step, 1] {
            let mut cuts = vec![0];
            for i in 1..parts {
                let c = (m * i / parts) / st * st;
                if c > *cuts.last().unwrap() {
                    cuts.push(c);
                }
            }
            cuts.push(m);
            let ranges: Vec<(usize, usize)> = cuts.windows(2).map(|w| (w[0], w[1])).filter(|r| r.1 > r.0).collect();
            if ranges.len() > 1 && ranges.iter().all(|r| r.1 - r.0 >= min_rows) {
                return ranges;
            }
        }
        parts -= 1;
    }
    vec![(0, m)]
}

/// out [batch, m, n] = op(A) · op(B), threaded when large enough (bit-identical to mm::matmul).
pub fn matmul(a: &[f32], b: &[f32], d: &MatmulDims, out: &mut [f32]) {
    let macs = d.batch.saturating_mul(d.m).saturating_mul(d.n).saturating_mul(d.k);
    if macs < par_min_macs() || d.m == 0 || d.n == 0 || d.k == 0 {
        return mm::matmul(a, b, d, out);
    }
    let pool = pool();
    let t = pool.current_num_threads();
    if t <= 1 {
        return mm::matmul(a, b, d, out);
    }
    // what the kernel does first: fold batches sharing B, A's batches back to back
    let mut d = *d;
    if d.batch > 1 && d.b_batch_stride == 0 && !d.trans_a && d.a_batch_stride == d.m * d.k {
        d = MatmulDims { batch: 1, m: d.batch * d.m, a_batch_stride: 0, ..d };
    }
    let rects = mm::split_grid(d.m, d.n, &mm::plan(&d), t.div_ceil(d.batch));
    if d.batch == 1 && rects.len() <= 1 {
        return mm::matmul(a, b, &d, out);
    }
    assert!(a.len() >= d.a_len() && b.len() >= d.b_len() && out.len() >= d.out_len(), "matmul: buffers too short");
    let units: Vec<(usize, (usize, usize, usize, usize))> = (0..d.batch).flat_map(|s| rects.iter().map(move |&r| (s, r))).collect();
    let o = SendPtr(out.as_mut_ptr(), out.len());
    let o = &o;
    let d = &d;
    pool.install(|| {
        units.into_par_iter().for_each(|(s, (r0, r1, j0, j1))| {
            // SAFETY: `out` (exclusively borrowed for this call) holds d.out_len() floats; the
            // rectangles of one batch are disjoint (split_grid) and batches are disjoint, so no
            // element is written by two workers and none is read by another.
            unsafe { mm::matmul_block(a, b, d, s, r0, r1, j0, j1, o.0) }
        })
    });
}

struct SendPtr(*mut f32, usize);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// out [x_rows, rows] = x · Wᵀ, weight rows split over the pool when large enough.
#[allow(clippy::too_many_arguments)]
pub fn dequantize_matmul(x: &[f32], x_rows: usize, p: &Parts, rows: usize, cols: usize, f: &Format, out: &mut [f32]) {
    let macs = x_rows.saturating_mul(rows).saturating_mul(cols);
    let pool = if macs < par_min_macs() || rows < 32 { None } else { Some(pool()) };
    let t = pool.as_ref().map_or(1, |p| p.current_num_threads());
    if t <= 1 {
        return quant::dequantize_matmul(x, x_rows, p, rows, cols, f, out);
    }
    // pieces of ≥ 16 rows (the kernel's panel height), about 4 per thread for balance
    let ranges = split_rows(rows, (t * 4).min(rows / 16).max(1), 16, 16);
    let len = out.len();
    let o = SendPtr(out.as_mut_ptr(), len);
    let o = &o;
    pool.unwrap().install(|| {
        ranges.into_par_iter().for_each(|(r0, r1)| {
            // SAFETY: the kernel writes only columns r0..r1 of each output row; the ranges are
            // disjoint, so no element is touched by two workers; `out` outlives the install.
            let out = unsafe { std::slice::from_raw_parts_mut(o.0, o.1) };
            quant::dequantize_matmul_rows(x, x_rows, p, rows, cols, f, r0, r1, out);
        })
    });
}

/// dx [n, cols] = dy [n, rows] · W (the backward of dequantizeMatmul), output columns split over
/// the pool when large enough: each worker owns a range of columns of dx (cut at multiples of 32,
/// whole code bytes for every width) and decodes only W[:, range]; every element of dx is the
/// kernel's fixed chain over r = 0..rows (`dequantize_matmul_t_cols`), so the result is
/// bit-identical to one thread whatever the split (tested in the kernel crate and in
/// test/parity.test.ts).
pub fn dequantize_matmul_t(dy: &[f32], n: usize, p: &Parts, rows: usize, cols: usize, f: &Format, out: &mut [f32]) {
    let macs = n.saturating_mul(rows).saturating_mul(cols);
    let pool = if macs < par_min_macs() || cols < 64 { None } else { Some(pool()) };
    let t = pool.as_ref().map_or(1, |p| p.current_num_threads());
    if t <= 1 {
        return quant::dequantize_matmul_t(dy, n, p, rows, cols, f, out);
    }
    // pieces of whole 32-column units, at least 2 units, about 4 per thread, cut at 64 columns
    let units = (cols + 31) / 32;
    let ranges: Vec<(usize, usize)> =
        split_rows(units, (t * 4).min(units / 2).max(1), 2, 2).into_iter().map(|(u0, u1)| (u0 * 32, (u1 * 32).min(cols))).collect();
    if ranges.len() == 1 {
        return quant::dequantize_matmul_t(dy, n, p, rows, cols, f, out);
    }
    let o = SendPtr(out.as_mut_ptr(), out.len());
    let o = &o;
    pool.unwrap().install(|| {
        ranges.into_par_iter().for_each(|(c0, c1)| {
            // SAFETY: the kernel writes only columns c0..c1 of each row of out; the ranges are
            // disjoint, so no element is touched by two workers; `out` outlives the install.
            let out = unsafe { std::slice::from_raw_parts_mut(o.0, o.1) };
            quant::dequantize_matmul_t_cols(dy, n, p, rows, cols, f, c0, c1, out);
        })
    });
}

/// Below this many weight elements `dequantize` stays on the calling thread (at ~1 ns an element
/// after SSE2, 128K elements is ~0.1 ms, ten hand-offs' worth). QUANTLORA_PAR_MIN_DEQ overrides it.
pub const PAR_MIN_DEQ: usize = 1 << 17;

fn par_min_deq() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var("QUANTLORA_PAR_MIN_DEQ").ok().and_then(|s| s.parse().ok()).unwrap_or(PAR_MIN_DEQ))
}

/// out [rows, cols] = the dequantized weight, row ranges over the pool when large enough (each
/// range its own contiguous slice of out; every element computed as by `quant::dequantize`).
pub fn dequantize(p: &Parts, rows: usize, cols: usize, f: &Format, out: &mut [f32]) {
    let n = rows.saturating_mul(cols);
    let pool = if n < par_min_deq() || rows < 2 { None } else { Some(pool()) };
    let t = pool.as_ref().map_or(1, |p| p.current_num_threads());
    if t <= 1 {
        return quant::dequantize(p, rows, cols, f, out);
    }
    // about 4 pieces per thread, each at least 32K elements
    let min_rows = ((1usize << 15) / cols.max(1)).max(1);
    let ranges = split_rows(rows, (t * 4).min(rows / min_rows).max(1), 1, min_rows);
    if ranges.len() == 1 {
        return quant::dequantize(p, rows, cols, f, out);
    }
    let mut units: Vec<(usize, usize, &mut [f32])> = Vec::with_capacity(ranges.len());
    let mut rest = &mut out[..n];
    for &(r0, r1) in &ranges {
        let (chunk, tail) = rest.split_at_mut((r1 - r0) * cols);
        units.push((r0, r1, chunk));
        rest = tail;
    }
    pool.unwrap().install(|| {
        units.into_par_iter().for_each(|(r0, r1, chunk)| quant::dequantize_rows(p, rows, cols, f, r0, r1, chunk))
    });
}

/// Sum of x, read in 256 KiB pieces across the pool (8 independent accumulators per piece).
pub fn stream_read(x: &[f32]) -> f64 {
    fn piece(c: &[f32]) -> f64 {
        let mut acc = [0f32; 8];
        let mut it = c.chunks_exact(8);
        for v in &mut it {
            for i in 0..8 {
                acc[i] += v[i];
            }
        }
        acc.iter().map(|&v| v as f64).sum::<f64>() + it.remainder().iter().map(|&v| v as f64).sum::<f64>()
    }
    pool().install(|| x.par_chunks(1 << 16).map(piece).sum())
}
