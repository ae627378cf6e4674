//! `F32x4` as a plain lane array (LLVM vectorizes the lane loops where the target has SIMD).

#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct F32x4(pub [f32; 4]);

#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct M4(pub [u32; 4]);

macro_rules! lanes {
    (|$i:ident| $e:expr) => {{
        let mut r = [Default::default(); 4];
        for $i in 0..4 {
            r[$i] = $e;
        }
        r
    }};
}

impl F32x4 {
    #[inline(always)]
    pub fn splat(x: f32) -> Self {
        F32x4([x; 4])
    }
    #[inline(always)]
    pub fn zero() -> Self {
        F32x4([0.0; 4])
    }
    /// # Safety
    /// `p..p+4` must be readable.
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> Self {
        F32x4((p as *const [f32; 4]).read_unaligned())
    }
    /// # Safety
    /// `p` must be readable.
    #[inline(always)]
    pub unsafe fn load_splat(p: *const f32) -> Self {
        F32x4([*p; 4])
    }
    /// # Safety
    /// `p..p+4` must be writable.
    #[inline(always)]
    pub unsafe fn store(self, p: *mut f32) {
        (p as *mut [f32; 4]).write_unaligned(self.0)
    }
    #[inline(always)]
    pub fn add(self, o: Self) -> Self {
        F32x4(lanes!(|i| self.0[i] + o.0[i]))
    }
    #[inline(always)]
    pub fn sub(self, o: Self) -> Self {
        F32x4(lanes!(|i| self.0[i] - o.0[i]))
    }
    #[inline(always)]
    pub fn mul(self, o: Self) -> Self {
        F32x4(lanes!(|i| self.0[i] * o.0[i]))
    }
    #[inline(always)]
    pub fn div(self, o: Self) -> Self {
        F32x4(lanes!(|i| self.0[i] / o.0[i]))
    }
    #[inline(always)]
    pub fn sqrt(self) -> Self {
        F32x4(lanes!(|i| self.0[i].sqrt()))
    }
    #[inline(always)]
    pub fn abs(self) -> Self {
        F32x4(lanes!(|i| f32::from_bits(self.0[i].to_bits() & 0x7fff_ffff)))
    }
    #[inline(always)]
    pub fn neg(self) -> Self {
        F32x4(lanes!(|i| -self.0[i]))
    }
    #[inline(always)]
    pub fn floor(self) -> Self {
        F32x4(lanes!(|i| self.0[i].floor()))
    }
    #[inline(always)]
    pub fn pmax(self, x: Self) -> Self {
        F32x4(lanes!(|i| if self.0[i] < x.0[i] { x.0[i] } else { self.0[i] }))
    }
    #[inline(always)]
    pub fn pmin(self, x: Self) -> Self {
        F32x4(lanes!(|i| if x.0[i] < self.0[i] { x.0[i] } else { self.0[i] }))
    }
    #[inline(always)]
    pub fn gt(self, o: Self) -> M4 {
        M4(lanes!(|i| if self.0[i] > o.0[i] { !0u32 } else { 0 }))
    }
    #[inline(always)]
    pub fn ge(self, o: Self) -> M4 {
        M4(lanes!(|i| if self.0[i] >= o.0[i] { !0u32 } else { 0 }))
    }
    #[inline(always)]
    pub fn lt(self, o: Self) -> M4 {
        M4(lanes!(|i| if self.0[i] < o.0[i] { !0u32 } else { 0 }))
    }
    #[inline(always)]
    pub fn le(self, o: Self) -> M4 {
        M4(lanes!(|i| if self.0[i] <= o.0[i] { !0u32 } else { 0 }))
    }
    #[inline(always)]
    pub fn eq(self, o: Self) -> M4 {
        M4(lanes!(|i| if self.0[i] == o.0[i] { !0u32 } else { 0 }))
    }
    #[inline(always)]
    pub fn shl23(self) -> Self {
        F32x4(lanes!(|i| f32::from_bits(self.0[i].to_bits() << 23)))
    }
    #[inline(always)]
    pub fn to_array(self) -> [f32; 4] {
        self.0
    }
    #[inline(always)]
    pub fn swap_pairs(self) -> Self {
        F32x4([self.0[1], self.0[0], self.0[3], self.0[2]])
    }
    #[inline(always)]
    pub fn hsum(self) -> f32 {
        let v = self.0;
        (v[0] + v[2]) + (v[1] + v[3])
    }
}

impl M4 {
    #[inline(always)]
    pub fn select(self, a: F32x4, b: F32x4) -> F32x4 {
        F32x4(lanes!(|i| f32::from_bits((a.0[i].to_bits() & self.0[i]) | (b.0[i].to_bits() & !self.0[i]))))
    }
    #[inline(always)]
    pub fn and(self, a: F32x4) -> F32x4 {
        F32x4(lanes!(|i| f32::from_bits(a.0[i].to_bits() & self.0[i])))
    }
    #[inline(always)]
    pub fn or(self, o: M4) -> M4 {
        M4(lanes!(|i| self.0[i] | o.0[i]))
    }
    #[inline(always)]
    pub fn not(self) -> M4 {
        M4(lanes!(|i| !self.0[i]))
    }
}
