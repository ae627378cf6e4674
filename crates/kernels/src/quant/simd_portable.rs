//! `simd.rs` for every other target: lane arrays (LLVM vectorizes what it can); on x86-64 `V` is
//! the SSE2 `F32x4` and `nf_codes16` is written with SSE2 intrinsics.

/// Four f32 lanes: the crate's one lane-array wrapper.
pub use crate::elementwise::simd::F32x4 as V;

#[derive(Clone, Copy)]
pub struct Lut {
    vals: [f32; 16],
}

impl Lut {
    pub fn new(vals: &[f32; 16]) -> Lut {
        Lut { vals: *vals }
    }
}

#[derive(Clone, Copy)]
pub struct Zp(f32);

impl Zp {
    #[inline(always)]
    pub fn new(z: u32) -> Zp {
        Zp(z as f32)
    }
}

/// The 32 codes at p minus the zero point z, as f32 (int formats: `lut` holds 0..15).
/// # Safety: p..p + 4 * BITS readable.
#[inline(always)]
pub unsafe fn decode32_int<const BITS: u32>(p: *const u8, lut: &Lut, z: Zp) -> [V; 8] {
    let v = decode32::<BITS>(p, lut);
    let zv = V::splat(z.0);
    [
        v[0].sub(zv),
        v[1].sub(zv),
        v[2].sub(zv),
        v[3].sub(zv),
        v[4].sub(zv),
        v[5].sub(zv),
        v[6].sub(zv),
        v[7].sub(zv),
    ]
}

/// The 32 codes at p mapped through the table, as 8 vectors in element order.
/// # Safety: p..p + 4 * BITS readable.
#[inline(always)]
pub unsafe fn decode32<const BITS: u32>(p: *const u8, lut: &Lut) -> [V; 8] {
    let mut o = [0.0f32; 32];
    let b = core::slice::from_raw_parts(p, 4 * BITS as usize);
    let t = &lut.vals;
    match BITS {
        4 => {
            for j in 0..16 {
                o[2 * j] = t[(b[j] >> 4) as usize];
                o[2 * j + 1] = t[(b[j] & 15) as usize];
            }
        }
        2 => {
            for j in 0..8 {
                for k in 0..4 {
                    o[4 * j + k] = t[((b[j] >> (6 - 2 * k)) & 3) as usize];
                }
            }
        }
        _ => {
            for j in 0..4 {
                let w = (b[3 * j] as u32) << 16 | (b[3 * j + 1] as u32) << 8 | b[3 * j + 2] as u32;
                for k in 0..8 {
                    o[8 * j + k] = t[((w >> (21 - 3 * k)) & 7) as usize];
                }
            }
        }
    }
    let mut v = [V::zero(); 8];
    for (k, x) in v.iter_mut().enumerate() {
        *x = V::load(o.as_ptr().add(4 * k));
    }
    v
}

/// out[i] = number of thresholds t with n[i] > t, for 16 values n = f32(np[i] * inv).
/// x86-64: SSE2 (baseline), the same f32 products and ordered compares as the lane loop below;
/// the counts (0..=15) narrowed with saturating packs that cannot saturate.
/// # Safety: np..np+16 readable, out..out+16 writable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn nf_codes16(np: *const f32, inv: f32, thresholds: &[f32], out: *mut u8) {
    use core::arch::x86_64::*;
    let s = _mm_set1_ps(inv);
    let n = [
        _mm_mul_ps(_mm_loadu_ps(np), s),
        _mm_mul_ps(_mm_loadu_ps(np.add(4)), s),
        _mm_mul_ps(_mm_loadu_ps(np.add(8)), s),
        _mm_mul_ps(_mm_loadu_ps(np.add(12)), s),
    ];
    let mut c = [_mm_setzero_si128(); 4];
    for &t in thresholds {
        let tv = _mm_set1_ps(t);
        for k in 0..4 {
            c[k] = _mm_sub_epi32(c[k], _mm_castps_si128(_mm_cmpgt_ps(n[k], tv)));
        }
    }
    let lo = _mm_packs_epi32(c[0], c[1]);
    let hi = _mm_packs_epi32(c[2], c[3]);
    _mm_storeu_si128(out as *mut __m128i, _mm_packus_epi16(lo, hi));
}

/// out[i] = number of thresholds t with n[i] > t, for 16 values n = f32(np[i] * inv).
/// # Safety: np..np+16 readable, out..out+16 writable.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub unsafe fn nf_codes16(np: *const f32, inv: f32, thresholds: &[f32], out: *mut u8) {
    let x = core::slice::from_raw_parts(np, 16);
    let mut n = [0.0f32; 16];
    let mut c = [0u8; 16];
    for i in 0..16 {
        n[i] = x[i] * inv;
    }
    for &t in thresholds {
        for i in 0..16 {
            c[i] += (n[i] > t) as u8;
        }
    }
    core::ptr::copy_nonoverlapping(c.as_ptr(), out, 16);
}

/// INT codes of 8 values: q = clamp(roundHalfAway(x / s) + z, 0, maxq), all in float64 as the
/// reference (the quotient must be the float64 one). x86-64: the lane loop below step for step in
/// SSE2 f64 pairs (minpd(a, 64) = `a < 64 ? a : 64`, as `f64::min` for the non-NaN a here;
/// cvttpd2dq truncates like `as i32`; the final q is an integer in [0, maxq], so sign-of-zero
/// differences cannot reach the byte).
/// # Safety: xp..xp+8 readable, out..out+8 writable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn int_codes8(xp: *const f32, s: f64, z: f64, maxq: f64, out: *mut u8) {
    use core::arch::x86_64::*;
    let (sv, zv, mq) = (_mm_set1_pd(s), _mm_set1_pd(z), _mm_set1_pd(maxq));
    let (half, one, zero, cap) = (_mm_set1_pd(0.5), _mm_set1_pd(1.0), _mm_setzero_pd(), _mm_set1_pd(64.0));
    let sign = _mm_set1_pd(-0.0);
    // two f64 lanes -> q as i32 in the low two i32 lanes
    let q = |x: __m128| -> __m128i {
        let v = _mm_div_pd(_mm_cvtps_pd(x), sv);
        let a = _mm_min_pd(_mm_andnot_pd(sign, v), cap);
        let r = _mm_cvtepi32_pd(_mm_cvttpd_epi32(a));
        let r = _mm_add_pd(r, _mm_and_pd(_mm_cmpge_pd(_mm_sub_pd(a, r), half), one));
        let neg = _mm_cmplt_pd(v, zero);
        let q = _mm_or_pd(_mm_and_pd(neg, _mm_sub_pd(zv, r)), _mm_andnot_pd(neg, _mm_add_pd(zv, r)));
        // q.max(0).min(maxq): q is never NaN
        _mm_cvttpd_epi32(_mm_min_pd(_mm_max_pd(q, zero), mq))
    };
    let x0 = _mm_loadu_ps(xp);
    let x1 = _mm_loadu_ps(xp.add(4));
    let a = _mm_unpacklo_epi64(q(x0), q(_mm_movehl_ps(x0, x0)));
    let b = _mm_unpacklo_epi64(q(x1), q(_mm_movehl_ps(x1, x1)));
    let w = _mm_packs_epi32(a, b);
    _mm_storel_epi64(out as *mut __m128i, _mm_packus_epi16(w, w));
}

/// INT codes of 8 values: q = clamp(roundHalfAway(x / s) + z, 0, maxq), all in float64 as the
/// reference (the quotient must be the float64 one).
/// # Safety: xp..xp+8 readable, out..out+8 writable.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub unsafe fn int_codes8(xp: *const f32, s: f64, z: f64, maxq: f64, out: *mut u8) {
    let x = core::slice::from_raw_parts(xp, 8);
    for i in 0..8 {
        // |x / s| capped at 64 before the integer conversion (the code saturates anyway)
        let v = x[i] as f64 / s;
        let a = v.abs().min(64.0);
        let mut r = a as i32 as f64;
        if a - r >= 0.5 {
            r += 1.0;
        }
        let q = if v < 0.0 { z - r } else { z + r };
        *out.add(i) = q.max(0.0).min(maxq) as u8;
    }
}
