//! `F32x4` on wasm simd128 `v128` lanes.

use core::arch::wasm32::*;

#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct F32x4(pub v128);

/// Lane mask: all ones (true) or all zeros (false) per lane.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct M4(pub v128);

impl F32x4 {
    #[inline(always)]
    pub fn splat(x: f32) -> Self {
        F32x4(f32x4_splat(x))
    }
    #[inline(always)]
    pub fn zero() -> Self {
        F32x4(f32x4_splat(0.0))
    }
    /// # Safety
    /// `p..p+4` must be readable.
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> Self {
        F32x4(v128_load(p as *const v128))
    }
    /// # Safety
    /// `p` must be readable.
    #[inline(always)]
    pub unsafe fn load_splat(p: *const f32) -> Self {
        F32x4(v128_load32_splat(p as *const u32))
    }
    /// # Safety
    /// `p..p+4` must be writable.
    #[inline(always)]
    pub unsafe fn store(self, p: *mut f32) {
        v128_store(p as *mut v128, self.0)
    }
    #[inline(always)]
    pub fn add(self, o: Self) -> Self {
        F32x4(f32x4_add(self.0, o.0))
    }
    #[inline(always)]
    pub fn sub(self, o: Self) -> Self {
        F32x4(f32x4_sub(self.0, o.0))
    }
    #[inline(always)]
    pub fn mul(self, o: Self) -> Self {
        F32x4(f32x4_mul(self.0, o.0))
    }
    #[inline(always)]
    pub fn div(self, o: Self) -> Self {
        F32x4(f32x4_div(self.0, o.0))
    }
    #[inline(always)]
    pub fn sqrt(self) -> Self {
        F32x4(f32x4_sqrt(self.0))
    }
    #[inline(always)]
    pub fn abs(self) -> Self {
        F32x4(f32x4_abs(self.0))
    }
    #[inline(always)]
    pub fn neg(self) -> Self {
        F32x4(f32x4_neg(self.0))
    }
    #[inline(always)]
    pub fn floor(self) -> Self {
        F32x4(f32x4_floor(self.0))
    }
    /// `self < x ? x : self` per lane (keeps self when either is NaN).
    #[inline(always)]
    pub fn pmax(self, x: Self) -> Self {
        F32x4(f32x4_pmax(self.0, x.0))
    }
    /// `x < self ? x : self` per lane (keeps self when either is NaN).
    #[inline(always)]
    pub fn pmin(self, x: Self) -> Self {
        F32x4(f32x4_pmin(self.0, x.0))
    }
    #[inline(always)]
    pub fn gt(self, o: Self) -> M4 {
        M4(f32x4_gt(self.0, o.0))
    }
    #[inline(always)]
    pub fn ge(self, o: Self) -> M4 {
        M4(f32x4_ge(self.0, o.0))
    }
    #[inline(always)]
    pub fn lt(self, o: Self) -> M4 {
        M4(f32x4_lt(self.0, o.0))
    }
    #[inline(always)]
    pub fn le(self, o: Self) -> M4 {
        M4(f32x4_le(self.0, o.0))
    }
    #[inline(always)]
    pub fn eq(self, o: Self) -> M4 {
        M4(f32x4_eq(self.0, o.0))
    }
    /// Bits shifted left by 23 (as i32 lanes).
    #[inline(always)]
    pub fn shl23(self) -> Self {
        F32x4(i32x4_shl(self.0, 23))
    }
    #[inline(always)]
    pub fn to_array(self) -> [f32; 4] {
        [f32x4_extract_lane::<0>(self.0), f32x4_extract_lane::<1>(self.0), f32x4_extract_lane::<2>(self.0), f32x4_extract_lane::<3>(self.0)]
    }
    /// [l1, l0, l3, l2].
    #[inline(always)]
    pub fn swap_pairs(self) -> Self {
        F32x4(i32x4_shuffle::<1, 0, 3, 2>(self.0, self.0))
    }
    /// (l0 + l2) + (l1 + l3).
    #[inline(always)]
    pub fn hsum(self) -> f32 {
        let s = f32x4_add(self.0, i32x4_shuffle::<2, 3, 0, 1>(self.0, self.0));
        f32x4_extract_lane::<0>(s) + f32x4_extract_lane::<1>(s)
    }
}

impl M4 {
    /// self ? a : b per lane.
    #[inline(always)]
    pub fn select(self, a: F32x4, b: F32x4) -> F32x4 {
        F32x4(v128_bitselect(a.0, b.0, self.0))
    }
    /// self ? a : 0.0 per lane.
    #[inline(always)]
    pub fn and(self, a: F32x4) -> F32x4 {
        F32x4(v128_and(a.0, self.0))
    }
    #[inline(always)]
    pub fn or(self, o: M4) -> M4 {
        M4(v128_or(self.0, o.0))
    }
    #[inline(always)]
    pub fn not(self) -> M4 {
        M4(v128_not(self.0))
    }
}
