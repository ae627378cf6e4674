//! `simd.rs` for wasm32 with simd128: v128 intrinsics.

use core::arch::wasm32::*;

/// Four f32 lanes: the crate's one v128 wrapper.
pub use crate::elementwise::simd::F32x4 as V;

/// A 16-entry f32 table as 4 byte planes (plane b holds byte b of every entry), with the
/// decoding constants. The constants are read through a volatile load so that neither LLVM
/// (which would turn the 3-bit multipliers, powers of two, into per-lane shifts that wasm lacks
/// and scalarize them) nor V8 (which rematerializes constant splats inside loops) sees them as
/// constants: they stay in registers or one load away.
#[derive(Clone, Copy)]
pub struct Lut {
    planes: [v128; 4],
    m0f: v128,
    m03: v128,
    mul3: v128,
    /// 0x4B000000 in every u32 lane: OR-ed onto a small integer n, the f32 2^23 + n.
    magic: v128,
}

static CONSTS: [[u8; 16]; 4] = [
    [0x0f; 16],
    [0x03; 16],
    [1, 0, 8, 0, 64, 0, 2, 0, 16, 0, 128, 0, 4, 0, 32, 0],
    [0, 0, 0, 0x4b, 0, 0, 0, 0x4b, 0, 0, 0, 0x4b, 0, 0, 0, 0x4b],
];

impl Lut {
    pub fn new(vals: &[f32; 16]) -> Lut {
        let mut bytes = [[0u8; 16]; 4];
        for (i, v) in vals.iter().enumerate() {
            let b = v.to_bits().to_le_bytes();
            for p in 0..4 {
                bytes[p][i] = b[p];
            }
        }
        // SAFETY: [u8; 16] and v128 have the same size; unaligned reads.
        let plane = |p: usize| unsafe { core::ptr::read_unaligned(bytes[p].as_ptr() as *const v128) };
        let k = |i: usize| unsafe { core::ptr::read_unaligned(&core::ptr::read_volatile(&CONSTS[i]) as *const [u8; 16] as *const v128) };
        Lut {
            planes: [plane(0), plane(1), plane(2), plane(3)],
            m0f: k(0),
            m03: k(1),
            mul3: k(2),
            magic: k(3),
        }
    }
}

/// An int zero point, as the f32 2^23 + z in every lane (see `widen16`).
#[derive(Clone, Copy)]
pub struct Zp(v128);

impl Zp {
    #[inline(always)]
    pub fn new(z: u32) -> Zp {
        Zp(f32x4_splat(8388608.0 + z as f32))
    }
}

/// 16 codes (u8 lanes, < 16) -> 16 table values as 4 vectors, in lane order.
#[inline(always)]
fn expand16(lut: &Lut, c: v128) -> [V; 4] {
    let p0 = u8x16_swizzle(lut.planes[0], c);
    let p1 = u8x16_swizzle(lut.planes[1], c);
    let p2 = u8x16_swizzle(lut.planes[2], c);
    let p3 = u8x16_swizzle(lut.planes[3], c);
    let l01 = i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(p0, p1);
    let h01 = i8x16_shuffle::<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(p0, p1);
    let l23 = i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(p2, p3);
    let h23 = i8x16_shuffle::<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(p2, p3);
    [
        V(i8x16_shuffle::<0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23>(l01, l23)),
        V(i8x16_shuffle::<8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31>(
            l01, l23,
        )),
        V(i8x16_shuffle::<0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23>(h01, h23)),
        V(i8x16_shuffle::<8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31>(
            h01, h23,
        )),
    ]
}

/// 16 codes (u8 lanes) minus z, as 4 vectors of f32, exactly: each code widened to u32 and
/// OR-ed into the f32 2^23 + code, minus 2^23 + z. (LLVM 14 would scalarize the plain
/// widen-and-convert: it fuses it into an i16 -> f32 conversion that wasm lacks.)
#[inline(always)]
fn widen16(c: v128, lut: &Lut, z: Zp) -> [V; 4] {
    let lo = u16x8_extend_low_u8x16(c);
    let hi = u16x8_extend_high_u8x16(c);
    let f = |w: v128| V(f32x4_sub(v128_or(w, lut.magic), z.0));
    [
        f(u32x4_extend_low_u16x8(lo)),
        f(u32x4_extend_high_u16x8(lo)),
        f(u32x4_extend_low_u16x8(hi)),
        f(u32x4_extend_high_u16x8(hi)),
    ]
}

/// The 32 codes at p (4 * BITS bytes) as 2 vectors of 16 u8 codes, in element order.
#[inline(always)]
unsafe fn codes32<const BITS: u32>(p: *const u8, lut: &Lut) -> (v128, v128) {
    match BITS {
        4 => {
            let b = v128_load(p as *const v128);
            let hi = v128_and(u16x8_shr(b, 4), lut.m0f);
            let lo = v128_and(b, lut.m0f);
            (
                i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(hi, lo),
                i8x16_shuffle::<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(hi, lo),
            )
        }
        2 => {
            let b = v128_load64_zero(p as *const u64);
            let m = lut.m03;
            let s6 = v128_and(u16x8_shr(b, 6), m);
            let s4 = v128_and(u16x8_shr(b, 4), m);
            let s2 = v128_and(u16x8_shr(b, 2), m);
            let s0 = v128_and(b, m);
            let t0 = i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(s6, s4);
            let t1 = i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(s2, s0);
            (
                i8x16_shuffle::<0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23>(t0, t1),
                i8x16_shuffle::<8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31>(t0, t1),
            )
        }
        _ => {
            // 3 bits: each 3-byte chunk holds 8 codes. u16 lane k of chunk j is the big-endian
            // window of bytes (3j + p_k, 3j + p_k + 1), p = [0,0,0,1,1,1,2,2]; multiplying by
            // 2^(3k mod 8) (mod 2^16) brings code k to the top 3 bits, then >> 13.
            let b = v128_load32_lane::<2>(v128_load64_zero(p as *const u64), p.add(8) as *const u32);
            let mul = lut.mul3;
            let w0 = i8x16_shuffle::<1, 0, 1, 0, 1, 0, 2, 1, 2, 1, 2, 1, 3, 2, 3, 2>(b, b);
            let w1 = i8x16_shuffle::<4, 3, 4, 3, 4, 3, 5, 4, 5, 4, 5, 4, 6, 5, 6, 5>(b, b);
            let w2 = i8x16_shuffle::<7, 6, 7, 6, 7, 6, 8, 7, 8, 7, 8, 7, 9, 8, 9, 8>(b, b);
            let w3 = i8x16_shuffle::<10, 9, 10, 9, 10, 9, 11, 10, 11, 10, 11, 10, 12, 11, 12, 11>(b, b);
            let c0 = u16x8_shr(i16x8_mul(w0, mul), 13);
            let c1 = u16x8_shr(i16x8_mul(w1, mul), 13);
            let c2 = u16x8_shr(i16x8_mul(w2, mul), 13);
            let c3 = u16x8_shr(i16x8_mul(w3, mul), 13);
            (u8x16_narrow_i16x8(c0, c1), u8x16_narrow_i16x8(c2, c3))
        }
    }
}

/// The 32 codes at p mapped through the table, as 8 vectors in element order.
/// # Safety: p..p + 4 * BITS readable.
#[inline(always)]
pub unsafe fn decode32<const BITS: u32>(p: *const u8, lut: &Lut) -> [V; 8] {
    let (ca, cb) = codes32::<BITS>(p, lut);
    let a = expand16(lut, ca);
    let b = expand16(lut, cb);
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

/// The 32 codes at p minus the zero point z, as f32 (int formats); `lut` only lends constants.
/// # Safety: p..p + 4 * BITS readable.
#[inline(always)]
pub unsafe fn decode32_int<const BITS: u32>(p: *const u8, lut: &Lut, z: Zp) -> [V; 8] {
    let (ca, cb) = codes32::<BITS>(p, lut);
    let a = widen16(ca, lut, z);
    let b = widen16(cb, lut, z);
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

/// out[i] = number of thresholds t with n[i] > t, for 16 values n at np.
/// # Safety: np..np+16 readable, out..out+16 writable.
#[inline(always)]
pub unsafe fn nf_codes16(np: *const f32, inv: f32, thresholds: &[f32], out: *mut u8) {
    let s = f32x4_splat(inv);
    let n = [
        f32x4_mul(v128_load(np as *const v128), s),
        f32x4_mul(v128_load(np.add(4) as *const v128), s),
        f32x4_mul(v128_load(np.add(8) as *const v128), s),
        f32x4_mul(v128_load(np.add(12) as *const v128), s),
    ];
    let mut c = [i32x4_splat(0); 4];
    for &t in thresholds {
        let tv = f32x4_splat(t);
        for k in 0..4 {
            c[k] = i32x4_sub(c[k], f32x4_gt(n[k], tv));
        }
    }
    let lo = i16x8_narrow_i32x4(c[0], c[1]);
    let hi = i16x8_narrow_i32x4(c[2], c[3]);
    v128_store(out as *mut v128, u8x16_narrow_i16x8(lo, hi));
}

/// INT codes of 8 values: q = clamp(roundHalfAway(x / s) + z, 0, maxq), all in float64 as the
/// reference (the quotient must be the float64 one).
/// # Safety: xp..xp+8 readable, out..out+8 writable.
#[inline(always)]
pub unsafe fn int_codes8(xp: *const f32, s: f64, z: f64, maxq: f64, out: *mut u8) {
    let (sv, zv, mq) = (f64x2_splat(s), f64x2_splat(z), f64x2_splat(maxq));
    let (half, one, zero, magic) = (
        f64x2_splat(0.5),
        f64x2_splat(1.0),
        f64x2_splat(0.0),
        f64x2_splat(4503599627370496.0),
    );
    // q in [0, maxq] as f64; + 2^52 puts the integer in the low mantissa bits (byte 0 of each
    // lane). (i32x4_trunc_sat_f64x2_zero gets scalarized by LLVM here; this stays vector.)
    let q = |v: v128| -> v128 {
        let d = f64x2_div(v, sv);
        let a = f64x2_abs(d);
        let r = f64x2_floor(a);
        let r = f64x2_add(r, v128_and(f64x2_ge(f64x2_sub(a, r), half), one));
        let r = v128_bitselect(f64x2_neg(r), r, f64x2_lt(d, zero));
        f64x2_add(f64x2_pmin(f64x2_pmax(f64x2_add(r, zv), zero), mq), magic)
    };
    let a = v128_load(xp as *const v128);
    let b = v128_load(xp.add(4) as *const v128);
    let q0 = q(f64x2_promote_low_f32x4(a));
    let q1 = q(f64x2_promote_low_f32x4(i32x4_shuffle::<2, 3, 0, 1>(a, a)));
    let q2 = q(f64x2_promote_low_f32x4(b));
    let q3 = q(f64x2_promote_low_f32x4(i32x4_shuffle::<2, 3, 0, 1>(b, b)));
    let lo = i8x16_shuffle::<0, 8, 16, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0>(q0, q1);
    let hi = i8x16_shuffle::<0, 8, 16, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0>(q2, q3);
    v128_store64_lane::<0>(i32x4_shuffle::<0, 4, 0, 0>(lo, hi), out as *mut u64);
}
