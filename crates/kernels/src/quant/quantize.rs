//! Optimized quantization: per group, the absmax / min / max in vectors, NF codes by counting
//! thresholds 16 values at a time, INT codes in float64 exactly as the reference (a division per
//! element: roundHalfAway(w / scale) must see the float64 quotient), each row packed at once.
//! Bit-exact with `quantize_reference`.

use super::reference::{double_quantize, scale_to_unit};
use super::simd::{int_codes8, nf_codes16, V};
use super::tables::{f32_toward_zero, nf_table, round_half_away, NfTable};
use super::{groups_per_row, part_lengths, Format, Kind, PartsMut};
use crate::packing::row_bytes;

/// Index of the first NaN or infinite element (integer test on the exponent bits, vectorizable).
pub(super) fn first_non_finite(w: &[f32]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    for (k, chunk) in w.chunks(1024).enumerate() {
        let bad = chunk.iter().fold(false, |a, x| a | (x.to_bits() & EXP == EXP));
        if bad {
            return chunk.iter().position(|x| x.to_bits() & EXP == EXP).map(|i| k * 1024 + i);
        }
    }
    None
}

/// Quantizes w [rows, cols] (row-major) to format f into `out` (lengths as `part_lengths`).
/// Err(i): w[i] is NaN or infinite (the first such index); nothing is written then.
pub fn quantize(w: &[f32], rows: usize, cols: usize, f: &Format, out: PartsMut) -> Result<(), usize> {
    assert_eq!(w.len(), rows * cols);
    if let Some(i) = first_non_finite(w) {
        return Err(i);
    }
    let l = part_lengths(rows, cols, f);
    assert!(out.codes.len() == l.codes && out.scales.len() >= l.scales && out.zeros.len() >= l.zeros);
    assert!(out.scale_codes.len() >= l.scale_codes && out.scale2.len() >= l.scale2 && out.scale_offset.len() >= l.scale_offset);
    let rb = row_bytes(cols, f.bits);
    let gpr = groups_per_row(cols, f);
    let mut codes = vec![0u8; cols];
    match f.kind {
        Kind::Nf => {
            let t = nf_table(f.bits);
            let mut absmax = if f.dq() { vec![0.0f32; rows * gpr] } else { Vec::new() };
            for r in 0..rows {
                let wr = &w[r * cols..(r + 1) * cols];
                for gi in 0..gpr {
                    let (begin, end) = (gi * f.group, ((gi + 1) * f.group).min(cols));
                    let m = nf_group(&wr[begin..end], &t, &mut codes[begin..end]);
                    if f.dq() {
                        absmax[r * gpr + gi] = m;
                    } else {
                        out.scales[r * gpr + gi] = m;
                    }
                }
                pack_row(&codes, f.bits, &mut out.codes[r * rb..(r + 1) * rb]);
            }
            if f.dq() {
                double_quantize(&absmax, out.scale_codes, out.scale2, out.scale_offset);
            }
        }
        Kind::Int => {
            for r in 0..rows {
                let wr = &w[r * cols..(r + 1) * cols];
                for gi in 0..gpr {
                    let g = r * gpr + gi;
                    let (begin, end) = (gi * f.group, ((gi + 1) * f.group).min(cols));
                    let (scale, zero) = int_group(&wr[begin..end], f, &mut codes[begin..end]);
                    out.scales[g] = scale;
                    if f.has_zeros() {
                        out.zeros[g] = zero;
                    }
                }
                pack_row(&codes, f.bits, &mut out.codes[r * rb..(r + 1) * rb]);
            }
        }
    }
    Ok(())
}

/// max |w| over a slice (exact: max is order-free).
fn absmax(w: &[f32]) -> f32 {
    let n4 = w.len() / 4 * 4;
    let mut mv = [V::zero(); 2];
    let p = w.as_ptr();
    let mut i = 0;
    while i + 8 <= n4 {
        // SAFETY: i + 8 <= w.len().
        unsafe {
            mv[0] = mv[0].pmax(V::load(p.add(i)).abs());
            mv[1] = mv[1].pmax(V::load(p.add(i + 4)).abs());
        }
        i += 8;
    }
    if i < n4 {
        // SAFETY: i + 4 <= w.len().
        mv[0] = mv[0].pmax(unsafe { V::load(p.add(i)) }.abs());
    }
    let mut m = mv[0].pmax(mv[1]).hmax();
    for x in &w[n4..] {
        m = m.max(x.abs());
    }
    m
}

/// NF codes of one group into `codes`; returns its absmax.
pub(super) fn nf_group(w: &[f32], t: &NfTable, codes: &mut [u8]) -> f32 {
    let m = absmax(w);
    if m == 0.0 {
        for c in codes.iter_mut() {
            *c = t.zero_code;
        }
        return m;
    }
    let inv = (1.0 / m as f64) as f32;
    let th = &t.thresholds[..t.len - 1];
    let mut i = 0;
    if inv != f32::INFINITY {
        while i + 16 <= w.len() {
            // SAFETY: i + 16 <= w.len() == codes.len().
            unsafe { nf_codes16(w.as_ptr().add(i), inv, th, codes.as_mut_ptr().add(i)) };
            i += 16;
        }
    }
    for k in i..w.len() {
        let n = scale_to_unit(w[k], m, inv);
        codes[k] = th.iter().fold(0u8, |c, &t| c + (n > t) as u8);
    }
    m
}

/// INT codes of one group into `codes`; returns (scale, zero point).
pub(super) fn int_group(w: &[f32], f: &Format, codes: &mut [u8]) -> (f32, u8) {
    let maxq = (1u32 << f.bits) - 1;
    let half = (1u32 << (f.bits - 1)) - 1;
    let n4 = w.len() / 4 * 4;
    let (mut lov, mut hiv) = (V::zero(), V::zero());
    let p = w.as_ptr();
    for i in (0..n4).step_by(4) {
        // SAFETY: i + 4 <= w.len().
        let x = unsafe { V::load(p.add(i)) };
        lov = lov.pmin(x);
        hiv = hiv.pmax(x);
    }
    let (mut lo, mut hi) = (lov.hmin() as f64, hiv.hmax() as f64);
    for &x in &w[n4..] {
        lo = lo.min(x as f64);
        hi = hi.max(x as f64);
    }
    let mut scale = if f.symmetric {
        f32_toward_zero(hi.max(-lo) / half as f64)
    } else {
        f32_toward_zero((hi - lo) / maxq as f64)
    };
    if scale == 0.0 {
        scale = 1.0;
    }
    let zero = if f.symmetric {
        half
    } else {
        round_half_away(-lo / scale as f64).max(0.0).min(maxq as f64) as u32
    };
    let (s, z, mq) = (scale as f64, zero as f64, maxq as f64);
    let n8 = w.len() / 8 * 8;
    for i in (0..n8).step_by(8) {
        // SAFETY: i + 8 <= w.len() == codes.len().
        unsafe { int_codes8(w.as_ptr().add(i), s, z, mq, codes.as_mut_ptr().add(i)) };
    }
    for (c, &x) in codes[n8..].iter_mut().zip(&w[n8..]) {
        *c = (round_half_away(x as f64 / s) + z).max(0.0).min(mq) as u8;
    }
    (scale, zero as u8)
}

/// Packs one row of codes (each < 2^bits) into row_bytes(codes.len(), bits) bytes, MSB first, the
/// last byte padded with zero bits (same bytes as `crate::packing::pack`, written whole).
pub(super) fn pack_row(codes: &[u8], bits: u32, out: &mut [u8]) {
    let per = match bits {
        4 => 2,
        2 => 4,
        _ => 8,
    };
    let whole = codes.len() / per;
    match bits {
        4 => {
            for (o, c) in out.iter_mut().zip(codes.chunks_exact(2)) {
                *o = c[0] << 4 | c[1];
            }
        }
        2 => {
            for (o, c) in out.iter_mut().zip(codes.chunks_exact(4)) {
                *o = c[0] << 6 | c[1] << 4 | c[2] << 2 | c[3];
            }
        }
        _ => {
            for (o, c) in out.chunks_exact_mut(3).zip(codes.chunks_exact(8)) {
                let v = (c[0] as u32) << 21
                    | (c[1] as u32) << 18
                    | (c[2] as u32) << 15
                    | (c[3] as u32) << 12
                    | (c[4] as u32) << 9
                    | (c[5] as u32) << 6
                    | (c[6] as u32) << 3
                    | c[7] as u32;
                o[0] = (v >> 16) as u8;
                o[1] = (v >> 8) as u8;
                o[2] = v as u8;
            }
        }
    }
    let done = whole * per;
    if done < codes.len() {
        let mut v = 0u32;
        for i in 0..per {
            v = v << bits | codes.get(done + i).copied().unwrap_or(0) as u32;
        }
        let start = whole * per * bits as usize / 8;
        let nbytes = per * bits as usize / 8;
        for (i, o) in out[start..].iter_mut().enumerate() {
            *o = (v >> (8 * (nbytes - 1 - i))) as u8;
        }
    }
}
