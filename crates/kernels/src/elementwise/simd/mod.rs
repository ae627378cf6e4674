//! `F32x4`: four f32 lanes, compiled to wasm `v128` when the target has `simd128`, to SSE2
//! `__m128` on x86-64 (sse2.rs, bit-identical to the lane array) and to a plain lane array
//! elsewhere (portable.rs). The optimized kernels are written
//! once against this type, so host tests exercise the same code as the simd128 build.
//! Seam for later issues: an AVX2 path would add a wider type next to this one and pick it at run
//! time with `is_x86_feature_detected!`; the kernels' scalar references stay the oracle.
//!
//! Comparisons are spelled out so that NaN behaves as in the JS reference: binary max is
//! `ge(x, y).select(x, y)` (`x >= y ? x : y`: a NaN operand yields y), and `m.pmax(x)` is
//! `m < x ? x : m` (keeps m when x is NaN: the running max of the reference, which skips NaN).
//! Note for wasm: prefer pmin/pmax (one instruction in V8) over f32x4.min/max (a long sequence).

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[path = "wasm128.rs"]
mod imp;
#[cfg(target_arch = "x86_64")]
#[path = "sse2.rs"]
mod imp;
#[cfg(not(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64")))]
#[path = "portable.rs"]
mod imp;
/// The lane-array version, compiled for tests on x86-64 too (sse2.rs must match it bit for bit).
#[cfg(all(test, target_arch = "x86_64"))]
#[allow(dead_code)]
#[path = "portable.rs"]
pub(crate) mod portable;

pub use imp::{F32x4, M4};

/// True when the optimized kernels run on wasm simd128 lanes.
pub const SIMD128: bool = cfg!(all(target_arch = "wasm32", target_feature = "simd128"));

impl F32x4 {
    /// Largest lane (lanes are finite where this is used).
    #[inline(always)]
    pub fn hmax(self) -> f32 {
        let a = self.to_array();
        a[0].max(a[1]).max(a[2].max(a[3]))
    }
    /// Smallest lane (lanes are finite where this is used).
    #[inline(always)]
    pub fn hmin(self) -> f32 {
        let a = self.to_array();
        a[0].min(a[1]).min(a[2].min(a[3]))
    }
    /// Loads lanes `i..i+4` of `s` (bounds-checked).
    #[inline(always)]
    pub fn from_slice(s: &[f32], i: usize) -> Self {
        assert!(i + 4 <= s.len());
        unsafe { F32x4::load(s.as_ptr().add(i)) }
    }
    /// Stores into lanes `i..i+4` of `s` (bounds-checked).
    #[inline(always)]
    pub fn write_to(self, s: &mut [f32], i: usize) {
        assert!(i + 4 <= s.len());
        unsafe { self.store(s.as_mut_ptr().add(i)) }
    }

    /// e^x per lane (Cephes expf polynomial, within ~2 ulp of the true value over the whole range;
    /// overflows to +inf above ln(f32::MAX), underflows through subnormals to 0; NaN stays NaN).
    /// In loops, use `exp_k` with an `ExpConsts` made outside the loop.
    #[inline(always)]
    pub fn exp(self) -> Self {
        self.exp_k(&ExpConsts::new())
    }

    #[inline(always)]
    pub fn exp_k(self, k: &ExpConsts) -> Self {
        if !SIMD128 {
            // without simd128 the polynomial runs one lane at a time: libm's expf is faster there
            let v = self.to_array();
            return F32x4::from_array([v[0].exp(), v[1].exp(), v[2].exp(), v[3].exp()]);
        }
        self.exp_poly(k)
    }

    /// The polynomial behind `exp_k` (used on simd128; tested on every target).
    #[inline(always)]
    pub fn exp_poly(self, k: &ExpConsts) -> Self {
        // x < -104 ? -104 : x, then x > 89 ? 89 : x (a NaN x stays NaN)
        let x = self.pmax(k.lo).pmin(k.hi);
        let n = x.mul(k.log2e).add(k.half).floor();
        let r = x.sub(n.mul(k.c1)).sub(n.mul(k.c2));
        let mut p = k.p[0];
        for &c in &k.p[1..] {
            p = p.mul(r).add(c);
        }
        let y = p.mul(r.mul(r)).add(r).add(k.one);
        // 2^n as two factors so that n in [-150, 128] neither overflows the exponent field nor skips
        // the subnormal rounding
        let n1 = n.mul(k.half).floor();
        let n2 = n.sub(n1);
        y.mul(n1.pow2i_k(k)).mul(n2.pow2i_k(k))
    }

    /// 2^n for lanes holding integers in [-126, 127] (see `pow2i`).
    #[inline(always)]
    fn pow2i_k(self, k: &ExpConsts) -> Self {
        self.add(k.magic).shl23()
    }

    /// 1 / (1 + e^-x), as e^x / (1 + e^x) for negative x so that tiny results do not flush to 0.
    #[inline(always)]
    pub fn sigmoid(self) -> Self {
        self.sigmoid_k(&ExpConsts::new())
    }

    #[inline(always)]
    pub fn sigmoid_k(self, k: &ExpConsts) -> Self {
        if !SIMD128 {
            let v = self.to_array();
            let f = |x: f32| {
                let e = (-x.abs()).exp();
                let r = 1.0 / (1.0 + e);
                if x >= 0.0 {
                    r
                } else {
                    e * r
                }
            };
            return F32x4::from_array([f(v[0]), f(v[1]), f(v[2]), f(v[3])]);
        }
        let e = self.abs().neg().exp_k(k);
        let r = k.one.div(k.one.add(e));
        self.ge(k.zero).select(r, e.mul(r))
    }
}

static EXP_CONSTS_STATIC: [f32; 14] = [
    -104.0, 89.0, core::f32::consts::LOG2_E, 0.5, 0.693_359_375, -2.121_944_4e-4,
    1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1,
    1.0, 12_583_039.0,
];

/// The constants of `F32x4::exp`, made once outside a loop. They are read with a volatile load so
/// that LLVM keeps them in locals: as known constants it re-materializes `v128.const` inside the
/// loop (V8 builds each one from scalar moves) and folds the clamps into NaN-propagating
/// `f32x4.min/max` (a long sequence in V8 where `pmin/pmax` are one instruction). 2x on exp.
#[derive(Clone, Copy)]
pub struct ExpConsts {
    lo: F32x4,
    hi: F32x4,
    log2e: F32x4,
    half: F32x4,
    c1: F32x4,
    c2: F32x4,
    p: [F32x4; 6],
    pub one: F32x4,
    pub zero: F32x4,
    magic: F32x4,
}

impl ExpConsts {
    #[inline(always)]
    pub fn new() -> Self {
        // SAFETY: a read of a static array.
        let c: [f32; 14] = unsafe { core::ptr::read_volatile(&EXP_CONSTS_STATIC) };
        let s = F32x4::splat;
        ExpConsts {
            lo: s(c[0]),
            hi: s(c[1]),
            log2e: s(c[2]),
            half: s(c[3]),
            c1: s(c[4]),
            c2: s(c[5]),
            p: [s(c[6]), s(c[7]), s(c[8]), s(c[9]), s(c[10]), s(c[11])],
            one: s(c[12]),
            zero: s(c[12]).sub(s(c[12])),
            magic: s(c[13]),
        }
    }
}

impl Default for ExpConsts {
    fn default() -> Self {
        ExpConsts::new()
    }
}

/// Scalar e^x with the same algorithm as `F32x4::exp` (for tails, so a row's lanes and tail agree).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    F32x4::splat(x).exp().to_array()[0]
}

/// Scalar e^x through the polynomial of simd128 builds, whatever the target (tests).
pub fn exp_poly_f32(x: f32) -> f32 {
    F32x4::splat(x).exp_poly(&ExpConsts::new()).to_array()[0]
}

impl F32x4 {
    #[inline(always)]
    pub fn from_array(v: [f32; 4]) -> Self {
        F32x4::from_slice(&v, 0)
    }
}

/// Σ f(i) over the 4-lane steps i = 0, 4, ..., < n4: two f32 accumulators, flushed into an f64
/// total every 64 elements (f32 error stays that of a 16-term sum, whatever the row length).
#[inline(always)]
fn lanes_sum_f64<F: FnMut(usize) -> F32x4>(n4: usize, mut f: F) -> f64 {
    let mut total = 0f64;
    let mut i = 0;
    while i < n4 {
        let end = n4.min(i + 64);
        let (mut a0, mut a1) = (F32x4::zero(), F32x4::zero());
        while i + 8 <= end {
            a0 = a0.add(f(i));
            a1 = a1.add(f(i + 4));
            i += 8;
        }
        if i < end {
            a0 = a0.add(f(i));
            i += 4;
        }
        total += a0.add(a1).hsum() as f64;
    }
    total
}

/// Sum of `x`: f32 lanes in blocks of 64 elements, blocks added in f64.
#[inline]
pub fn sum_f64(x: &[f32]) -> f64 {
    let n4 = x.len() / 4 * 4;
    let mut total = lanes_sum_f64(n4, |i| F32x4::from_slice(x, i));
    for &v in &x[n4..] {
        total += v as f64;
    }
    total
}

/// Σ x_i·y_i like `sum_f64` (f32 products and partial sums per 64-element block, f64 across blocks).
#[inline]
pub fn dot_f64(x: &[f32], y: &[f32]) -> f64 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let n4 = n / 4 * 4;
    let mut total = lanes_sum_f64(n4, |i| F32x4::from_slice(x, i).mul(F32x4::from_slice(y, i)));
    for j in n4..n {
        total += (x[j] * y[j]) as f64;
    }
    total
}

/// Σ a·b·c like `dot_f64`.
#[inline]
pub fn dot3_f64(a: &[f32], b: &[f32], c: &[f32]) -> f64 {
    let n = a.len();
    let (b, c) = (&b[..n], &c[..n]);
    let n4 = n / 4 * 4;
    let mut total = lanes_sum_f64(n4, |i| F32x4::from_slice(a, i).mul(F32x4::from_slice(b, i)).mul(F32x4::from_slice(c, i)));
    for j in n4..n {
        total += (a[j] * b[j] * c[j]) as f64;
    }
    total
}

/// out[j] = e^(x[j] − m); returns Σ out[j] (f32 lanes per 64-element block, blocks in f64).
#[inline]
pub fn exp_shift_store(x: &[f32], m: f32, out: &mut [f32]) -> f64 {
    let n = x.len();
    let out = &mut out[..n];
    let mv = F32x4::splat(m);
    let k = ExpConsts::new();
    let n4 = n / 4 * 4;
    let mut total = lanes_sum_f64(n4, |i| {
        let e = F32x4::from_slice(x, i).sub(mv).exp_k(&k);
        e.write_to(out, i);
        e
    });
    if n4 < n {
        // the tail as one padded vector; only its valid lanes count
        let mut t = [0f32; 4];
        t[..n - n4].copy_from_slice(&x[n4..]);
        let e = F32x4::from_slice(&t, 0).sub(mv).exp_k(&k).to_array();
        for j in 0..n - n4 {
            out[n4 + j] = e[j];
            total += e[j] as f64;
        }
    }
    total
}

/// x[j] *= f.
#[inline]
pub fn scale_in_place(x: &mut [f32], f: f32) {
    let n4 = x.len() / 4 * 4;
    let fv = F32x4::splat(f);
    let mut i = 0;
    while i < n4 {
        F32x4::from_slice(x, i).mul(fv).write_to(x, i);
        i += 4;
    }
    for v in &mut x[n4..] {
        *v *= f;
    }
}

/// Largest element skipping NaN (`v > m` as the JS reference), starting from -inf.
#[inline]
pub fn max_skip_nan(x: &[f32]) -> f32 {
    let n4 = x.len() / 4 * 4;
    let (mut m0, mut m1) = (F32x4::splat(f32::NEG_INFINITY), F32x4::splat(f32::NEG_INFINITY));
    let mut i = 0;
    while i + 8 <= n4 {
        m0 = m0.pmax(F32x4::from_slice(x, i));
        m1 = m1.pmax(F32x4::from_slice(x, i + 4));
        i += 8;
    }
    if i < n4 {
        m0 = m0.pmax(F32x4::from_slice(x, i));
    }
    let mut best = f32::NEG_INFINITY;
    for v in [m0, m1].iter() {
        for &l in v.to_array().iter() {
            if l > best {
                best = l;
            }
        }
    }
    for &v in &x[n4..] {
        if v > best {
            best = v;
        }
    }
    best
}
