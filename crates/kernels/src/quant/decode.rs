//! Optimized decoding: whole blocks of 32 codes through `simd::decode32`, then each group's scale
//! (and zero point) applied in f32 exactly as the reference does it (NF: f32(v * s); INT:
//! f32((q - z) * s), q - z exact in f32), so `dequantize` is bit-exact with the reference.

use super::simd::{decode32, Lut, V};
use super::{check_parts, code_values, group_scale, group_zero, groups_per_row, read_code, Format, Kind, Parts};
use crate::packing::row_bytes;

/// What decoding a weight needs, built once per call.
pub(super) struct Decoder {
    pub bits: u32,
    pub nf: bool,
    pub vals: [f32; 16],
    pub lut: Lut,
}

impl Decoder {
    pub fn new(f: &Format) -> Decoder {
        let vals = code_values(f);
        Decoder {
            bits: f.bits,
            nf: f.kind == Kind::Nf,
            vals,
            lut: Lut::new(&vals),
        }
    }

    /// Table values of the codes of elements [c0, c0 + n) of one packed row; c0 % 32 == 0.
    pub fn values(&self, row: &[u8], c0: usize, n: usize, out: &mut [f32]) {
        debug_assert!(c0 % 32 == 0 && out.len() >= n);
        let nb = n / 32;
        match self.bits {
            4 => blocks::<4>(row, c0, nb, &self.lut, out),
            3 => blocks::<3>(row, c0, nb, &self.lut, out),
            _ => blocks::<2>(row, c0, nb, &self.lut, out),
        }
        for c in c0 + nb * 32..c0 + n {
            out[c - c0] = self.vals[read_code(row, 0, c, self.bits) as usize];
        }
    }

    /// Applies group scales to out = values of elements [c0, c0 + n) of a row whose groups have
    /// scales `scales` and zero points `zeros` (indexed by group within the row).
    pub fn scale(&self, group: usize, scales: &[f32], zeros: &[f32], c0: usize, n: usize, out: &mut [f32]) {
        let mut c = c0;
        while c < c0 + n {
            let gi = c / group;
            let end = ((gi + 1) * group).min(c0 + n);
            let seg = &mut out[c - c0..end - c0];
            if self.nf {
                scale_nf(seg, scales[gi]);
            } else {
                scale_int(seg, scales[gi], zeros[gi]);
            }
            c = end;
        }
    }
}

#[inline(always)]
fn blocks<const BITS: u32>(row: &[u8], c0: usize, nb: usize, lut: &Lut, out: &mut [f32]) {
    let bytes = 4 * BITS as usize;
    let base = c0 * BITS as usize / 8;
    assert!(base + nb * bytes <= row.len() && nb * 32 <= out.len());
    for b in 0..nb {
        // SAFETY: bounds asserted above.
        unsafe {
            let v = decode32::<BITS>(row.as_ptr().add(base + b * bytes), lut);
            let o = out.as_mut_ptr().add(32 * b);
            for (k, x) in v.iter().enumerate() {
                x.store(o.add(4 * k));
            }
        }
    }
}

fn scale_nf(seg: &mut [f32], s: f32) {
    let n4 = seg.len() / 4 * 4;
    let sv = V::splat(s);
    let p = seg.as_mut_ptr();
    for i in (0..n4).step_by(4) {
        // SAFETY: i + 4 <= n4 <= seg.len().
        unsafe { V::load(p.add(i)).mul(sv).store(p.add(i)) }
    }
    for x in &mut seg[n4..] {
        *x *= s;
    }
}

fn scale_int(seg: &mut [f32], s: f32, z: f32) {
    let n4 = seg.len() / 4 * 4;
    let (sv, zv) = (V::splat(s), V::splat(z));
    let p = seg.as_mut_ptr();
    for i in (0..n4).step_by(4) {
        // SAFETY: i + 4 <= n4 <= seg.len().
        unsafe { V::load(p.add(i)).sub(zv).mul(sv).store(p.add(i)) }
    }
    for x in &mut seg[n4..] {
        *x = (*x - z) * s;
    }
}

/// Scales and zero points (as f32) of the groups of row r, into scales/zeros[0..gpr).
pub(super) fn row_scales(p: &Parts, f: &Format, r: usize, gpr: usize, scales: &mut [f32], zeros: &mut [f32]) {
    for gi in 0..gpr {
        scales[gi] = group_scale(p, f, r * gpr + gi);
        zeros[gi] = group_zero(p, f, r * gpr + gi) as f32;
    }
}

/// Dequantizes p into out[rows * cols]; bit-exact with `dequantize_reference`.
pub fn dequantize(p: &Parts, rows: usize, cols: usize, f: &Format, out: &mut [f32]) {
    assert_eq!(out.len(), rows * cols);
    dequantize_rows(p, rows, cols, f, 0, rows, out)
}

/// Weight rows [row_start, row_end) only, into out[(row_end - row_start) * cols] (row row_start
/// first), for splitting rows across threads. Each element is computed exactly as `dequantize`
/// does it: group g's scale is read by its global index (a double-quant block of 256 groups may
/// span rows and ranges; its scale2 is shared, not recomputed).
pub fn dequantize_rows(p: &Parts, rows: usize, cols: usize, f: &Format, row_start: usize, row_end: usize, out: &mut [f32]) {
    check_parts(p, rows, cols, f);
    assert!(row_start <= row_end && row_end <= rows);
    assert_eq!(out.len(), (row_end - row_start) * cols);
    let d = Decoder::new(f);
    let rb = row_bytes(cols, f.bits);
    let gpr = groups_per_row(cols, f);
    let mut sz = vec![0.0f32; 2 * gpr];
    let (scales, zeros) = sz.split_at_mut(gpr);
    for r in row_start..row_end {
        row_scales(p, f, r, gpr, scales, zeros);
        let o = &mut out[(r - row_start) * cols..(r - row_start + 1) * cols];
        d.values(&p.codes[r * rb..(r + 1) * rb], 0, cols, o);
        d.scale(f.group, scales, zeros, 0, cols, o);
    }
}
