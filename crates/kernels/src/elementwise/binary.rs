//! Broadcasting binary ops (equal ranks, numpy rules on size-1 dims).

use super::simd::F32x4;

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add = 0,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Eq,
    Gt,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 8] =
        [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min, BinaryOp::Eq, BinaryOp::Gt];
    pub fn from_u32(v: u32) -> Option<BinaryOp> {
        BinaryOp::ALL.get(v as usize).copied()
    }
}

fn binary_scalar_reference(op: BinaryOp, x: f32, y: f32) -> f32 {
    let (x, y) = (x as f64, y as f64);
    let r = match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Max => {
            if x >= y {
                x
            } else {
                y
            }
        }
        BinaryOp::Min => {
            if x <= y {
                x
            } else {
                y
            }
        }
        BinaryOp::Eq => (x == y) as u8 as f64,
        BinaryOp::Gt => (x > y) as u8 as f64,
    };
    r as f32
}

/// Row-major strides of `shape`, 0 where a size-1 dimension broadcasts against a larger `out` one.
pub fn broadcast_strides(shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut s = 1;
    for d in (0..shape.len()).rev() {
        strides[d] = if shape[d] == 1 && out_shape[d] != 1 { 0 } else { s };
        s *= shape[d];
    }
    strides
}

/// The JS loop: fast paths for equal sizes and a one-element b, else an odometer over out_shape.
pub fn binary_reference(op: BinaryOp, a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize], out_shape: &[usize], out: &mut [f32]) {
    let size: usize = out_shape.iter().product();
    let (asz, bsz): (usize, usize) = (a_shape.iter().product(), b_shape.iter().product());
    if asz == size && bsz == size {
        for i in 0..size {
            out[i] = binary_scalar_reference(op, a[i], b[i]);
        }
        return;
    }
    if bsz == 1 && asz == size {
        for i in 0..size {
            out[i] = binary_scalar_reference(op, a[i], b[0]);
        }
        return;
    }
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let rank = out_shape.len();
    let mut idx = vec![0usize; rank];
    let (mut ai, mut bi) = (0usize, 0usize);
    for o in out[..size].iter_mut() {
        *o = binary_scalar_reference(op, a[ai], b[bi]);
        for d in (0..rank).rev() {
            idx[d] += 1;
            ai += sa[d];
            bi += sb[d];
            if idx[d] < out_shape[d] {
                break;
            }
            ai -= sa[d] * out_shape[d];
            bi -= sb[d] * out_shape[d];
            idx[d] = 0;
        }
    }
}

trait Bin {
    fn v(x: F32x4, y: F32x4) -> F32x4;
    fn s(x: f32, y: f32) -> f32;
}
macro_rules! bin_op {
    ($name:ident, |$x:ident, $y:ident| $v:expr, $s:expr) => {
        struct $name;
        impl Bin for $name {
            #[inline(always)]
            fn v($x: F32x4, $y: F32x4) -> F32x4 {
                $v
            }
            #[inline(always)]
            fn s($x: f32, $y: f32) -> f32 {
                $s
            }
        }
    };
}
bin_op!(AddOp, |x, y| x.add(y), x + y);
bin_op!(SubOp, |x, y| x.sub(y), x - y);
bin_op!(MulOp, |x, y| x.mul(y), x * y);
bin_op!(DivOp, |x, y| x.div(y), x / y);
bin_op!(MaxOp, |x, y| x.ge(y).select(x, y), if x >= y { x } else { y });
bin_op!(MinOp, |x, y| x.le(y).select(x, y), if x <= y { x } else { y });
bin_op!(EqOp, |x, y| x.eq(y).and(F32x4::splat(1.0)), (x == y) as u8 as f32);
bin_op!(GtOp, |x, y| x.gt(y).and(F32x4::splat(1.0)), (x > y) as u8 as f32);

/// out[0..n] = op(a-run, b-run), each run contiguous (stride 1) or one repeated element (stride 0).
#[inline(always)]
fn run<O: Bin>(a: &[f32], sa: usize, b: &[f32], sb: usize, out: &mut [f32]) {
    let n = out.len();
    let n4 = n / 4 * 4;
    match (sa, sb) {
        (1, 1) => {
            let (a, b) = (&a[..n], &b[..n]);
            let mut i = 0;
            while i < n4 {
                O::v(F32x4::from_slice(a, i), F32x4::from_slice(b, i)).write_to(out, i);
                i += 4;
            }
            for i in n4..n {
                out[i] = O::s(a[i], b[i]);
            }
        }
        (1, 0) => {
            let (a, y) = (&a[..n], b[0]);
            let yv = F32x4::splat(y);
            let mut i = 0;
            while i < n4 {
                O::v(F32x4::from_slice(a, i), yv).write_to(out, i);
                i += 4;
            }
            for i in n4..n {
                out[i] = O::s(a[i], y);
            }
        }
        (0, 1) => {
            let (x, b) = (a[0], &b[..n]);
            let xv = F32x4::splat(x);
            let mut i = 0;
            while i < n4 {
                O::v(xv, F32x4::from_slice(b, i)).write_to(out, i);
                i += 4;
            }
            for i in n4..n {
                out[i] = O::s(x, b[i]);
            }
        }
        _ => {
            let v = O::s(a[0], b[0]);
            for o in out.iter_mut() {
                *o = v;
            }
        }
    }
}

/// Dimensions of a broadcast after dropping size-1 output dims and merging neighbours that step
/// both operands alike: (length, a stride, b stride), outermost first. Inner strides are 0 or 1.
fn merged_dims(a_shape: &[usize], b_shape: &[usize], out_shape: &[usize]) -> Vec<(usize, usize, usize)> {
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let mut dims: Vec<(usize, usize, usize)> = Vec::with_capacity(out_shape.len());
    for d in 0..out_shape.len() {
        let len = out_shape[d];
        if len == 1 {
            continue;
        }
        if let Some(last) = dims.last_mut() {
            if last.1 == sa[d] * len && last.2 == sb[d] * len {
                *last = (last.0 * len, sa[d], sb[d]);
                continue;
            }
        }
        dims.push((len, sa[d], sb[d]));
    }
    dims
}

fn binary_with<O: Bin>(a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize], out_shape: &[usize], out: &mut [f32]) {
    let size: usize = out_shape.iter().product();
    if size == 0 {
        return;
    }
    let dims = merged_dims(a_shape, b_shape, out_shape);
    let (inner, isa, isb) = dims.last().copied().unwrap_or((1, 0, 0));
    let outer = &dims[..dims.len().saturating_sub(1)];
    let mut idx = vec![0usize; outer.len()];
    let (mut ai, mut bi) = (0usize, 0usize);
    let mut o = 0;
    while o < size {
        run::<O>(&a[ai..], isa, &b[bi..], isb, &mut out[o..o + inner]);
        o += inner;
        for d in (0..outer.len()).rev() {
            idx[d] += 1;
            ai += outer[d].1;
            bi += outer[d].2;
            if idx[d] < outer[d].0 {
                break;
            }
            ai -= outer[d].1 * outer[d].0;
            bi -= outer[d].2 * outer[d].0;
            idx[d] = 0;
        }
    }
}

/// Broadcasting binary op; equal ranks, size-1 dimensions broadcast. Innermost runs go through
/// F32x4 lanes (same shape, scalar b, row/column broadcasts all become runs).
pub fn binary(op: BinaryOp, a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize], out_shape: &[usize], out: &mut [f32]) {
    assert!(a_shape.len() == out_shape.len() && b_shape.len() == out_shape.len(), "binary: ranks differ");
    let f = match op {
        BinaryOp::Add => binary_with::<AddOp>,
        BinaryOp::Sub => binary_with::<SubOp>,
        BinaryOp::Mul => binary_with::<MulOp>,
        BinaryOp::Div => binary_with::<DivOp>,
        BinaryOp::Max => binary_with::<MaxOp>,
        BinaryOp::Min => binary_with::<MinOp>,
        BinaryOp::Eq => binary_with::<EqOp>,
        BinaryOp::Gt => binary_with::<GtOp>,
    };
    f(a, a_shape, b, b_shape, out_shape, out)
}
