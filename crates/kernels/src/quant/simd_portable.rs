//! `simd.rs` for every other target: lane arrays (LLVM vectorizes what it can).

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
        *x = V([o[4 * k], o[4 * k + 1], o[4 * k + 2], o[4 * k + 3]]);
    }
    v
}

/// out[i] = number of thresholds t with n[i] > t, for 16 values n = f32(np[i] * inv).
/// # Safety: np..np+16 readable, out..out+16 writable.
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
/// reference (the quotient must be the float64 one).
/// # Safety: xp..xp+8 readable, out..out+8 writable.
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
