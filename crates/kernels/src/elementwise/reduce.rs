//! Sum and max over a set of axes; the output keeps the reduced axes with size 1.
//!
//! Both versions accumulate sums in f64 like the JS reference. The optimized one merges runs of
//! dimensions, then either reduces contiguous runs to one value (f32 lanes in 64-element blocks,
//! blocks added in f64) or adds whole contiguous rows into the output (f64 accumulator per output).
//! Max follows the reference: `v > m || isNaN(v)` replaces m, so NaN is sticky; the lane version
//! can differ from the reference only in the sign of a zero maximum (max of -0 and +0).

use super::broadcast_strides;
use super::simd::{sum_f64, F32x4};

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum = 0,
    Max,
}

impl ReduceOp {
    pub fn from_u32(v: u32) -> Option<ReduceOp> {
        match v {
            0 => Some(ReduceOp::Sum),
            1 => Some(ReduceOp::Max),
            _ => None,
        }
    }
    fn init(self) -> f64 {
        match self {
            ReduceOp::Sum => 0.0,
            ReduceOp::Max => f64::NEG_INFINITY,
        }
    }
}

#[inline(always)]
fn max_step(m: f64, v: f64) -> f64 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

/// Number of output elements: the product of `shape` with reduced axes counted as 1.
pub fn reduced_size(shape: &[usize], axes: &[usize]) -> usize {
    (0..shape.len()).map(|d| if axes.contains(&d) { 1 } else { shape[d] }).product()
}

/// The JS loop: walk the input in order, each element into its output slot (f64 accumulators).
pub fn reduce_reference(op: ReduceOp, a: &[f32], shape: &[usize], axes: &[usize], out: &mut [f32]) {
    let out_shape: Vec<usize> = (0..shape.len()).map(|d| if axes.contains(&d) { 1 } else { shape[d] }).collect();
    let out_size: usize = out_shape.iter().product();
    let mut acc = vec![op.init(); out_size];
    let strides = broadcast_strides(&out_shape, shape);
    let size: usize = shape.iter().product();
    let rank = shape.len();
    let mut idx = vec![0usize; rank];
    let mut oi = 0usize;
    for &v in &a[..size] {
        let v = v as f64;
        acc[oi] = match op {
            ReduceOp::Sum => acc[oi] + v,
            ReduceOp::Max => max_step(acc[oi], v),
        };
        for d in (0..rank).rev() {
            idx[d] += 1;
            oi += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            oi -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
    for (o, &v) in out[..out_size].iter_mut().zip(&acc) {
        *o = v as f32;
    }
}

/// Max of a contiguous run with the reference's sticky-NaN rule, lanes then lanes in order.
fn run_max(x: &[f32]) -> f64 {
    let mut m = [F32x4::splat(f32::NEG_INFINITY); 2];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for j in 0..2 {
            let v = F32x4::from_slice(c, 4 * j);
            // v > m || v != v
            m[j] = v.gt(m[j]).or(v.eq(v).not()).select(v, m[j]);
        }
    }
    let mut best = f64::NEG_INFINITY;
    for l in 0..4 {
        for j in 0..2 {
            best = max_step(best, m[j].to_array()[l] as f64);
        }
    }
    for &v in chunks.remainder() {
        best = max_step(best, v as f64);
    }
    best
}

pub fn reduce(op: ReduceOp, a: &[f32], shape: &[usize], axes: &[usize], out: &mut [f32]) {
    let out_size = reduced_size(shape, axes);
    let size: usize = shape.iter().product();
    let out = &mut out[..out_size];
    // merged runs of input dims: (length, reduced?, output stride), size-1 dims dropped
    let mut dims: Vec<(usize, bool, usize)> = Vec::with_capacity(shape.len());
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        let red = axes.contains(&d);
        match dims.last_mut() {
            Some(last) if last.1 == red => last.0 *= shape[d],
            _ => dims.push((shape[d], red, 0)),
        }
    }
    let mut s = 1;
    for dim in dims.iter_mut().rev() {
        if !dim.1 {
            dim.2 = s;
            s *= dim.0;
        }
    }
    let mut acc = vec![op.init(); out_size];
    if size > 0 {
        let (inner, inner_red, _) = dims.last().copied().unwrap_or((1, true, 0));
        let outer = &dims[..dims.len().saturating_sub(1)];
        let mut idx = vec![0usize; outer.len()];
        let mut oi = 0usize;
        let mut i = 0;
        while i < size {
            let x = &a[i..i + inner];
            if inner_red {
                acc[oi] = match op {
                    ReduceOp::Sum => acc[oi] + sum_f64(x),
                    ReduceOp::Max => max_step(acc[oi], run_max(x)),
                };
            } else {
                let dst = &mut acc[oi..oi + inner];
                match op {
                    ReduceOp::Sum => {
                        for (d, &v) in dst.iter_mut().zip(x) {
                            *d += v as f64;
                        }
                    }
                    ReduceOp::Max => {
                        for (d, &v) in dst.iter_mut().zip(x) {
                            *d = max_step(*d, v as f64);
                        }
                    }
                }
            }
            i += inner;
            for d in (0..outer.len()).rev() {
                idx[d] += 1;
                oi += outer[d].2;
                if idx[d] < outer[d].0 {
                    break;
                }
                oi -= outer[d].2 * outer[d].0;
                idx[d] = 0;
            }
        }
    }
    for (o, &v) in out.iter_mut().zip(&acc) {
        *o = v as f32;
    }
}
