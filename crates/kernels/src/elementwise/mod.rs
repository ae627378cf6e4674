//! Elementwise, broadcasting and reduction kernels (ts/backends/js/elementwise.ts).
//!
//! References compute in f64 and round once, as the JS backend does. The optimized versions run
//! on `simd::F32x4` lanes in f32: add/sub/mul/div/max/min/eq/gt/neg/abs/sign/square/sqrt/relu/step
//! are bit-identical to the reference (one f32 rounding of an exact result equals rounding the f64
//! result); exp/sigmoid/silu/siluGrad use a polynomial exp (≤ ~2 ulp apart); rsqrt is 1/sqrt in
//! f32 (≤ 1 ulp); log and pow (general exponent) call libm per element.

mod binary;
pub mod reduce;
pub mod simd;
#[cfg(test)]
mod tests;

pub use binary::{binary, binary_reference, broadcast_strides, BinaryOp};
pub use reduce::{reduce, reduce_reference, ReduceOp};
use simd::{ExpConsts, F32x4};

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg = 0,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Abs,
    Sign,
    Square,
    Sigmoid,
    Silu,
    SiluGrad,
    Relu,
    Step,
}

impl UnaryOp {
    /// In the order of ts/backend.ts `UnaryOp` (the u32 codes the wasm layer passes).
    pub const ALL: [UnaryOp; 13] = [
        UnaryOp::Neg, UnaryOp::Exp, UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Rsqrt, UnaryOp::Abs, UnaryOp::Sign,
        UnaryOp::Square, UnaryOp::Sigmoid, UnaryOp::Silu, UnaryOp::SiluGrad, UnaryOp::Relu, UnaryOp::Step,
    ];
    pub fn from_u32(v: u32) -> Option<UnaryOp> {
        UnaryOp::ALL.get(v as usize).copied()
    }
}

// ---------------------------------------------------------------- unary

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// One element as the JS reference computes it (f64, rounded once).
pub fn unary_scalar_reference(op: UnaryOp, x: f32) -> f32 {
    let v = x as f64;
    let r = match op {
        UnaryOp::Neg => -v,
        UnaryOp::Exp => v.exp(),
        UnaryOp::Log => v.ln(),
        UnaryOp::Sqrt => v.sqrt(),
        UnaryOp::Rsqrt => 1.0 / v.sqrt(),
        UnaryOp::Abs => v.abs(),
        UnaryOp::Sign => {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        UnaryOp::Square => v * v,
        UnaryOp::Sigmoid => sigmoid64(v),
        UnaryOp::Silu => v * sigmoid64(v),
        UnaryOp::SiluGrad => {
            let s = sigmoid64(v);
            s * (1.0 + v * (1.0 - s))
        }
        UnaryOp::Relu => {
            if v > 0.0 {
                v
            } else {
                0.0
            }
        }
        UnaryOp::Step => {
            if v > 0.0 {
                1.0
            } else {
                0.0
            }
        }
    };
    r as f32
}

pub fn unary_reference(op: UnaryOp, a: &[f32], out: &mut [f32]) {
    for (o, &x) in out[..a.len()].iter_mut().zip(a) {
        *o = unary_scalar_reference(op, x);
    }
}

/// Applies `f` to `a` four lanes at a time; the tail goes through the same `f` on a padded vector
/// so every element sees identical arithmetic.
#[inline(always)]
pub(crate) fn map4<F: Fn(F32x4) -> F32x4>(a: &[f32], out: &mut [f32], f: F) {
    let n = a.len();
    let out = &mut out[..n];
    let n4 = n / 4 * 4;
    let mut i = 0;
    while i < n4 {
        f(F32x4::from_slice(a, i)).write_to(out, i);
        i += 4;
    }
    if n4 < n {
        let mut t = [0f32; 4];
        t[..n - n4].copy_from_slice(&a[n4..]);
        let r = f(F32x4::from_slice(&t, 0)).to_array();
        out[n4..].copy_from_slice(&r[..n - n4]);
    }
}

pub fn unary(op: UnaryOp, a: &[f32], out: &mut [f32]) {
    let k = ExpConsts::new();
    let (one, zero) = (k.one, k.zero);
    match op {
        UnaryOp::Neg => map4(a, out, |x| x.neg()),
        UnaryOp::Exp => map4(a, out, |x| x.exp_k(&k)),
        UnaryOp::Log => {
            for (o, &x) in out[..a.len()].iter_mut().zip(a) {
                *o = x.ln();
            }
        }
        UnaryOp::Sqrt => map4(a, out, |x| x.sqrt()),
        UnaryOp::Rsqrt => map4(a, out, |x| one.div(x.sqrt())),
        UnaryOp::Abs => map4(a, out, |x| x.abs()),
        UnaryOp::Sign => map4(a, out, |x| x.gt(zero).select(one, x.lt(zero).and(one.neg()))),
        UnaryOp::Square => map4(a, out, |x| x.mul(x)),
        UnaryOp::Sigmoid => map4(a, out, |x| x.sigmoid_k(&k)),
        UnaryOp::Silu => map4(a, out, |x| x.mul(x.sigmoid_k(&k))),
        UnaryOp::SiluGrad => map4(a, out, |x| {
            let s = x.sigmoid_k(&k);
            s.mul(one.add(x.mul(one.sub(s))))
        }),
        UnaryOp::Relu => map4(a, out, |x| x.gt(zero).and(x)),
        UnaryOp::Step => map4(a, out, |x| x.gt(zero).and(one)),
    }
}

// ---------------------------------------------------------------- affine, pow

pub fn affine_reference(a: &[f32], mul: f32, add: f32, out: &mut [f32]) {
    for (o, &x) in out[..a.len()].iter_mut().zip(a) {
        *o = (x as f64 * mul as f64 + add as f64) as f32;
    }
}

/// a·mul + add in f32 (two roundings; the reference rounds once).
pub fn affine(a: &[f32], mul: f32, add: f32, out: &mut [f32]) {
    let (m, c) = (F32x4::splat(mul), F32x4::splat(add));
    map4(a, out, |x| x.mul(m).add(c))
}

/// JavaScript's Math.pow: as C pow except that a NaN exponent always gives NaN and
/// (±1) ** ±Infinity is NaN.
pub fn js_pow(x: f64, p: f64) -> f64 {
    if p.is_nan() || (x.abs() == 1.0 && p.is_infinite()) {
        f64::NAN
    } else {
        x.powf(p)
    }
}

pub fn pow_reference(a: &[f32], p: f32, out: &mut [f32]) {
    for (o, &x) in out[..a.len()].iter_mut().zip(a) {
        *o = js_pow(x as f64, p as f64) as f32;
    }
}

/// Exponents 0, 1, 2, -1, 0.5 on lanes; others through f64 pow per element.
pub fn pow(a: &[f32], p: f32, out: &mut [f32]) {
    let one = F32x4::splat(1.0);
    if p == 0.0 {
        map4(a, out, |_| one)
    } else if p == 1.0 {
        map4(a, out, |x| x)
    } else if p == 2.0 {
        map4(a, out, |x| x.mul(x))
    } else if p == -1.0 {
        map4(a, out, |x| one.div(x))
    } else if p == 0.5 {
        // pow(-0, .5) = +0 and pow(-inf, .5) = +inf where sqrt gives -0 and NaN
        let ninf = F32x4::splat(f32::NEG_INFINITY);
        map4(a, out, |x| x.eq(ninf).select(F32x4::splat(f32::INFINITY), x.sqrt().add(F32x4::zero())))
    } else {
        pow_reference(a, p, out)
    }
}
