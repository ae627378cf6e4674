//! `F32x4` on x86-64 SSE2 `__m128` lanes (SSE2 is part of the x86-64 baseline: no run-time
//! detection). Every operation gives the same bits as portable.rs (IEEE add/sub/mul/div/sqrt per
//! lane, no FMA; comparisons ordered like Rust's `<`/`==`):
//! - `pmax(self, x)` = `self < x ? x : self` is `maxps(x, self)` (maxps(a, b) = `a > b ? a : b`,
//!   so b = self whenever either is NaN or they compare equal, ±0 included); `pmin` likewise with
//!   `minps(x, self)`;
//! - `floor` has no SSE2 instruction (roundps is SSE4.1): truncate through cvttps2dq, subtract 1
//!   where that rounded up, and OR in the input's sign bit (so -0.0 and -0.3 → -0.0 / -1.0 as
//!   `f32::floor`); lanes with |x| ≥ 2^23 (already integers), inf and NaN pass through unchanged.

use core::arch::x86_64::*;

#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct F32x4(pub __m128);

/// Lane mask: all ones (true) or all zeros (false) per lane.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct M4(pub __m128);

#[inline(always)]
fn sign_mask() -> __m128 {
    // SAFETY: SSE2 is baseline on x86-64.
    unsafe { _mm_castsi128_ps(_mm_set1_epi32(i32::MIN)) }
}

// SAFETY (every `unsafe` block below): the intrinsics need only SSE/SSE2, which every x86-64 CPU
// has (and rustc enables for the target by default); pointer contracts are the callers'.
impl F32x4 {
    #[inline(always)]
    pub fn splat(x: f32) -> Self {
        unsafe { F32x4(_mm_set1_ps(x)) }
    }
    #[inline(always)]
    pub fn zero() -> Self {
        unsafe { F32x4(_mm_setzero_ps()) }
    }
    /// # Safety
    /// `p..p+4` must be readable.
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> Self {
        F32x4(_mm_loadu_ps(p))
    }
    /// # Safety
    /// `p` must be readable.
    #[inline(always)]
    pub unsafe fn load_splat(p: *const f32) -> Self {
        F32x4(_mm_set1_ps(*p))
    }
    /// # Safety
    /// `p..p+4` must be writable.
    #[inline(always)]
    pub unsafe fn store(self, p: *mut f32) {
        _mm_storeu_ps(p, self.0)
    }
    #[inline(always)]
    pub fn add(self, o: Self) -> Self {
        unsafe { F32x4(_mm_add_ps(self.0, o.0)) }
    }
    #[inline(always)]
    pub fn sub(self, o: Self) -> Self {
        unsafe { F32x4(_mm_sub_ps(self.0, o.0)) }
    }
    #[inline(always)]
    pub fn mul(self, o: Self) -> Self {
        unsafe { F32x4(_mm_mul_ps(self.0, o.0)) }
    }
    #[inline(always)]
    pub fn div(self, o: Self) -> Self {
        unsafe { F32x4(_mm_div_ps(self.0, o.0)) }
    }
    #[inline(always)]
    pub fn sqrt(self) -> Self {
        unsafe { F32x4(_mm_sqrt_ps(self.0)) }
    }
    /// Clears the sign bit (NaN payloads kept, as portable's bit operation).
    #[inline(always)]
    pub fn abs(self) -> Self {
        unsafe { F32x4(_mm_andnot_ps(sign_mask(), self.0)) }
    }
    /// Flips the sign bit (as Rust's scalar `-x`).
    #[inline(always)]
    pub fn neg(self) -> Self {
        unsafe { F32x4(_mm_xor_ps(self.0, sign_mask())) }
    }
    /// `f32::floor` per lane (see the module comment).
    #[inline(always)]
    pub fn floor(self) -> Self {
        unsafe {
            let x = self.0;
            let sign = _mm_and_ps(x, sign_mask());
            let ax = _mm_andnot_ps(sign_mask(), x);
            // |x| < 2^23 (false for NaN): the lanes that may have a fraction
            let small = _mm_cmplt_ps(ax, _mm_set1_ps(8_388_608.0));
            let t = _mm_cvtepi32_ps(_mm_cvttps_epi32(x));
            // t > x: truncation went up (x negative with a fraction) → t - 1
            let up = _mm_and_ps(_mm_cmpgt_ps(t, x), _mm_set1_ps(1.0));
            let f = _mm_or_ps(_mm_sub_ps(t, up), sign);
            F32x4(_mm_or_ps(_mm_and_ps(small, f), _mm_andnot_ps(small, x)))
        }
    }
    /// `self < x ? x : self` per lane (keeps self when either is NaN).
    #[inline(always)]
    pub fn pmax(self, x: Self) -> Self {
        unsafe { F32x4(_mm_max_ps(x.0, self.0)) }
    }
    /// `x < self ? x : self` per lane (keeps self when either is NaN).
    #[inline(always)]
    pub fn pmin(self, x: Self) -> Self {
        unsafe { F32x4(_mm_min_ps(x.0, self.0)) }
    }
    #[inline(always)]
    pub fn gt(self, o: Self) -> M4 {
        unsafe { M4(_mm_cmpgt_ps(self.0, o.0)) }
    }
    #[inline(always)]
    pub fn ge(self, o: Self) -> M4 {
        unsafe { M4(_mm_cmpge_ps(self.0, o.0)) }
    }
    #[inline(always)]
    pub fn lt(self, o: Self) -> M4 {
        unsafe { M4(_mm_cmplt_ps(self.0, o.0)) }
    }
    #[inline(always)]
    pub fn le(self, o: Self) -> M4 {
        unsafe { M4(_mm_cmple_ps(self.0, o.0)) }
    }
    #[inline(always)]
    pub fn eq(self, o: Self) -> M4 {
        unsafe { M4(_mm_cmpeq_ps(self.0, o.0)) }
    }
    /// Bits shifted left by 23 (as i32 lanes).
    #[inline(always)]
    pub fn shl23(self) -> Self {
        unsafe { F32x4(_mm_castsi128_ps(_mm_slli_epi32(_mm_castps_si128(self.0), 23))) }
    }
    #[inline(always)]
    pub fn to_array(self) -> [f32; 4] {
        let mut a = [0f32; 4];
        unsafe { _mm_storeu_ps(a.as_mut_ptr(), self.0) };
        a
    }
    /// [l1, l0, l3, l2].
    #[inline(always)]
    pub fn swap_pairs(self) -> Self {
        unsafe { F32x4(_mm_shuffle_ps(self.0, self.0, 0b10_11_00_01)) }
    }
    /// (l0 + l2) + (l1 + l3).
    #[inline(always)]
    pub fn hsum(self) -> f32 {
        unsafe {
            let s = _mm_add_ps(self.0, _mm_movehl_ps(self.0, self.0));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01)))
        }
    }
}

impl M4 {
    /// self ? a : b per lane.
    #[inline(always)]
    pub fn select(self, a: F32x4, b: F32x4) -> F32x4 {
        unsafe { F32x4(_mm_or_ps(_mm_and_ps(self.0, a.0), _mm_andnot_ps(self.0, b.0))) }
    }
    /// self ? a : 0.0 per lane.
    #[inline(always)]
    pub fn and(self, a: F32x4) -> F32x4 {
        unsafe { F32x4(_mm_and_ps(a.0, self.0)) }
    }
    #[inline(always)]
    pub fn or(self, o: M4) -> M4 {
        unsafe { M4(_mm_or_ps(self.0, o.0)) }
    }
    #[inline(always)]
    pub fn not(self) -> M4 {
        unsafe { M4(_mm_xor_ps(self.0, _mm_castsi128_ps(_mm_set1_epi32(-1)))) }
    }
}

#[cfg(test)]
mod tests {
    use super::super::portable as pt;
    use super::{F32x4, M4};

    /// Awkward values: NaNs, ±0, ±inf, subnormals, halves, around 2^23 and 2^31, plus a spread of
    /// random bit patterns.
    fn values() -> Vec<f32> {
        let mut v: Vec<f32> = vec![
            0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 0.3, -0.3, 1.5, -1.5, 2.5, -2.5, 0.999_999_94, -0.999_999_94,
            f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, f32::from_bits(0x7fc0_1234), f32::from_bits(0xffa0_0001),
            f32::MIN_POSITIVE, -f32::MIN_POSITIVE, f32::from_bits(1), f32::from_bits(0x8000_0001), f32::MAX, f32::MIN,
            8_388_607.5, -8_388_607.5, 8_388_608.0, -8_388_608.0, 8_388_609.0, -8_388_609.0, 16_777_217.0,
            2_147_483_648.0, -2_147_483_648.0, 4_294_967_296.0, -4_294_967_296.0, 1e-30, -1e-30, 104.5, -104.5, 89.0,
        ];
        let mut s = 0x9e37_79b9u32;
        for _ in 0..4000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            v.push(f32::from_bits(s));
            v.push((s as i32 as f32) * 1e-6);
        }
        v
    }

    fn same(a: f32, b: f32, nan_any: bool) -> bool {
        a.to_bits() == b.to_bits() || (nan_any && a.is_nan() && b.is_nan())
    }

    #[test]
    fn sse2_matches_portable_bit_for_bit() {
        let v = values();
        let n = v.len();
        let mut checked = 0;
        for i in 0..n {
            // a few partners per value: neighbours, specials
            for &j in &[i, (i + 1) % n, (i + 7) % n, i % 42, (i * 31 + 5) % n] {
                let a4 = [v[i], v[j], v[(i + 3) % n], v[(j + 2) % n]];
                let b4 = [v[j], v[i], v[(j + 5) % n], v[(i + 11) % 42]];
                let (xs, ys) = (F32x4::from_array(a4), F32x4::from_array(b4));
                let (xp, yp) = (pt::F32x4(a4), pt::F32x4(b4));
                let cmp = |name: &str, s: F32x4, p: pt::F32x4, nan_any: bool| {
                    let (s, p) = (s.to_array(), p.to_array());
                    for l in 0..4 {
                        assert!(same(s[l], p[l], nan_any), "{name}({:?}, {:?}) lane {l}: sse2 {:e} ({:#x}) portable {:e} ({:#x})", a4, b4, s[l], s[l].to_bits(), p[l], p[l].to_bits());
                    }
                };
                let cmpm = |name: &str, s: M4, p: pt::M4| {
                    let s = F32x4(s.0).to_array();
                    for l in 0..4 {
                        assert_eq!(s[l].to_bits(), p.0[l], "{name}({:?}, {:?}) lane {l}", a4, b4);
                    }
                };
                cmp("add", xs.add(ys), xp.add(yp), true);
                cmp("sub", xs.sub(ys), xp.sub(yp), true);
                cmp("mul", xs.mul(ys), xp.mul(yp), true);
                cmp("div", xs.div(ys), xp.div(yp), true);
                cmp("sqrt", xs.sqrt(), xp.sqrt(), true);
                cmp("floor", xs.floor(), xp.floor(), true);
                cmp("abs", xs.abs(), xp.abs(), false);
                cmp("neg", xs.neg(), xp.neg(), false);
                cmp("pmax", xs.pmax(ys), xp.pmax(yp), false);
                cmp("pmin", xs.pmin(ys), xp.pmin(yp), false);
                cmp("shl23", xs.shl23(), xp.shl23(), false);
                cmp("swap_pairs", xs.swap_pairs(), xp.swap_pairs(), false);
                cmpm("gt", xs.gt(ys), xp.gt(yp));
                cmpm("ge", xs.ge(ys), xp.ge(yp));
                cmpm("lt", xs.lt(ys), xp.lt(yp));
                cmpm("le", xs.le(ys), xp.le(yp));
                cmpm("eq", xs.eq(ys), xp.eq(yp));
                cmpm("or", xs.lt(ys).or(xs.eq(ys)), xp.lt(yp).or(xp.eq(yp)));
                cmpm("not", xs.ge(ys).not(), xp.ge(yp).not());
                cmp("select", xs.gt(ys).select(xs, ys), xp.gt(yp).select(xp, yp), false);
                cmp("and", xs.le(ys).and(xs), xp.le(yp).and(xp), false);
                let (hs, hp) = (xs.hsum(), xp.hsum());
                assert!(same(hs, hp, true), "hsum({:?}): {hs:e} vs {hp:e}", a4);
                let (mut o, mut q) = ([0f32; 4], [0f32; 4]);
                unsafe {
                    F32x4::load_splat(&a4[1]).store(o.as_mut_ptr());
                    pt::F32x4::load_splat(&a4[1]).store(q.as_mut_ptr());
                }
                assert_eq!(o.map(f32::to_bits), q.map(f32::to_bits));
                checked += 1;
            }
        }
        assert!(checked > 20_000);
    }
}
