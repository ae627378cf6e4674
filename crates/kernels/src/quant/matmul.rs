//! Fused dequantize-matmul: out[i * rows + r] = sum_c x[i * cols + c] * W[r, c], W never
//! materialized. Two paths:
//! - GEMV (one x row, group % 32 == 0): codes decoded in registers 32 at a time through a table of
//!   (code - zero) values, dotted with x; the group's scale multiplies the group's partial sum.
//! - Panels (everything else, and batches): 4 weight rows x 512 columns decoded once (scales applied,
//!   so exactly the reference's weights) into a scratch buffer, then a 4-rows x 2-tokens register
//!   tile runs over every x row. Each weight group is decoded once per call whatever x_rows is.
//! Results differ from the reference (f64 accumulation of the exact weights) only by f32
//! reassociation and, in the GEMV path, the factored-out scale.

use super::decode::{row_scales, Decoder};
use super::simd::{decode32, Lut, V};
use super::{check_parts, code_values, group_scale, group_zero, groups_per_row, read_code, Format, Kind, Parts};
use crate::packing::row_bytes;

/// Weight rows per panel.
const R: usize = 4;
/// Columns per panel chunk (a multiple of 32, so chunks start on whole bytes for every width).
const KC: usize = 512;

/// out[i * rows + r] = sum_c x[i * cols + c] * W[r, c] (x: [x_rows, cols], out: [x_rows, rows]).
pub fn dequantize_matmul(x: &[f32], x_rows: usize, p: &Parts, rows: usize, cols: usize, f: &Format, out: &mut [f32]) {
    dequantize_matmul_rows(x, x_rows, p, rows, cols, f, 0, rows, out)
}

/// Same, for weight rows [row_start, row_end) only: out is still [x_rows, rows] and only its
/// columns row_start..row_end are written (for splitting rows across threads / workers).
#[allow(clippy::too_many_arguments)]
pub fn dequantize_matmul_rows(x: &[f32], x_rows: usize, p: &Parts, rows: usize, cols: usize, f: &Format, row_start: usize, row_end: usize, out: &mut [f32]) {
    check_parts(p, rows, cols, f);
    assert!(x.len() == x_rows * cols && out.len() == x_rows * rows && row_start <= row_end && row_end <= rows);
    if x_rows == 0 || row_start == row_end {
        return;
    }
    if cols == 0 {
        for i in 0..x_rows {
            for o in &mut out[i * rows + row_start..i * rows + row_end] {
                *o = 0.0;
            }
        }
        return;
    }
    if x_rows == 1 && f.group % 32 == 0 {
        match f.bits {
            4 => gemv::<4>(x, p, cols, f, row_start, row_end, out),
            3 => gemv::<3>(x, p, cols, f, row_start, row_end, out),
            _ => gemv::<2>(x, p, cols, f, row_start, row_end, out),
        }
    } else {
        panels(x, x_rows, p, rows, cols, f, row_start, row_end, out);
    }
}

/// Tables of (code - z) for every zero point z a group of this format can have (one for nf / sym).
fn zero_tables(f: &Format) -> (Vec<[f32; 16]>, Vec<Lut>) {
    let base = code_values(f);
    let zs: Vec<u32> = match f.kind {
        Kind::Nf => vec![0],
        Kind::Int if f.symmetric => vec![(1 << (f.bits - 1)) - 1],
        Kind::Int => (0..(1u32 << f.bits)).collect(),
    };
    let vals: Vec<[f32; 16]> = zs.iter().map(|&z| base.map(|v| if f.kind == Kind::Nf { v } else { v - z as f32 })).collect();
    let luts = vals.iter().map(Lut::new).collect();
    (vals, luts)
}

#[allow(clippy::too_many_arguments)]
fn gemv<const BITS: u32>(x: &[f32], p: &Parts, cols: usize, f: &Format, r0: usize, r1: usize, out: &mut [f32]) {
    let (vals, luts) = zero_tables(f);
    let asym = f.has_zeros();
    let rb = row_bytes(cols, BITS);
    let gpr = groups_per_row(cols, f);
    let bytes = 4 * BITS as usize;
    for r in r0..r1 {
        let row = &p.codes[r * rb..(r + 1) * rb];
        let mut acc = V::zero();
        let mut tail = 0.0f32;
        for gi in 0..gpr {
            let g = r * gpr + gi;
            let s = group_scale(p, f, g);
            let zi = if asym { group_zero(p, f, g) as usize } else { 0 };
            let c0 = gi * f.group;
            let len = f.group.min(cols - c0);
            let nb = len / 32;
            let base = c0 * BITS as usize / 8;
            assert!(base + nb * bytes <= row.len() && c0 + nb * 32 <= x.len());
            let lut = &luts[zi];
            let mut a = [V::zero(); 4];
            for b in 0..nb {
                // SAFETY: bounds asserted above.
                unsafe {
                    let w = decode32::<BITS>(row.as_ptr().add(base + b * bytes), lut);
                    let xp = x.as_ptr().add(c0 + 32 * b);
                    for k in 0..8 {
                        a[k & 3] = a[k & 3].add(w[k].mul(V::load(xp.add(4 * k))));
                    }
                }
            }
            acc = acc.add(a[0].add(a[1]).add(a[2].add(a[3])).mul(V::splat(s)));
            if nb * 32 < len {
                let mut t = 0.0f32;
                for c in c0 + nb * 32..c0 + len {
                    t += vals[zi][read_code(row, 0, c, BITS) as usize] * x[c];
                }
                tail += t * s;
            }
        }
        out[r] = acc.hsum() + tail;
    }
}

#[allow(clippy::too_many_arguments)]
fn panels(x: &[f32], x_rows: usize, p: &Parts, rows: usize, cols: usize, f: &Format, row_start: usize, row_end: usize, out: &mut [f32]) {
    let d = Decoder::new(f);
    let rb = row_bytes(cols, f.bits);
    let gpr = groups_per_row(cols, f);
    let mut wbuf = vec![0.0f32; R * KC];
    let mut scales = vec![0.0f32; R * gpr];
    let mut zeros = vec![0.0f32; R * gpr];
    let mut acc = vec![V::zero(); x_rows * R];
    let mut r0 = row_start;
    while r0 < row_end {
        let nr = R.min(row_end - r0);
        for a in acc.iter_mut() {
            *a = V::zero();
        }
        for i in 0..nr {
            row_scales(p, f, r0 + i, gpr, &mut scales[i * gpr..(i + 1) * gpr], &mut zeros[i * gpr..(i + 1) * gpr]);
        }
        let mut kc = 0;
        let mut n = 0;
        while kc < cols {
            n = KC.min(cols - kc);
            for i in 0..nr {
                let w = &mut wbuf[i * KC..i * KC + n];
                d.values(&p.codes[(r0 + i) * rb..(r0 + i + 1) * rb], kc, n, w);
                d.scale(f.group, &scales[i * gpr..(i + 1) * gpr], &zeros[i * gpr..(i + 1) * gpr], kc, n, w);
            }
            let n4 = n / 4 * 4;
            match nr {
                4 => chunk::<4>(&wbuf, x, x_rows, cols, kc, n4, &mut acc),
                3 => chunk::<3>(&wbuf, x, x_rows, cols, kc, n4, &mut acc),
                2 => chunk::<2>(&wbuf, x, x_rows, cols, kc, n4, &mut acc),
                _ => chunk::<1>(&wbuf, x, x_rows, cols, kc, n4, &mut acc),
            }
            kc += n;
        }
        // the last chunk's columns past its last multiple of 4, then the horizontal sums
        let (klast, n4) = (kc - n, n / 4 * 4);
        for t in 0..x_rows {
            for i in 0..nr {
                let mut s = acc[t * R + i].hsum();
                for k in n4..n {
                    s += wbuf[i * KC + k] * x[t * cols + klast + k];
                }
                out[t * rows + r0 + i] = s;
            }
        }
        r0 += nr;
    }
}

/// acc[t * R + i] += lanes of w[i][0..n4] * x[t][kc..kc + n4], for all tokens t.
fn chunk<const NR: usize>(w: &[f32], x: &[f32], x_rows: usize, cols: usize, kc: usize, n4: usize, acc: &mut [V]) {
    assert!(w.len() >= (NR - 1) * KC + n4 && x.len() >= (x_rows - 1) * cols + kc + n4 && acc.len() >= x_rows * R);
    let mut t = 0;
    // SAFETY: every load below is within the bounds asserted above.
    unsafe {
        while t + 2 <= x_rows {
            tile::<NR, 2>(w.as_ptr(), x.as_ptr().add(t * cols + kc), cols, n4, acc.as_mut_ptr().add(t * R));
            t += 2;
        }
        if t < x_rows {
            tile::<NR, 1>(w.as_ptr(), x.as_ptr().add(t * cols + kc), cols, n4, acc.as_mut_ptr().add(t * R));
        }
    }
}

/// The register tile: NR weight rows (stride KC) x T tokens (stride cols), 4 lanes along k.
#[inline(always)]
unsafe fn tile<const NR: usize, const T: usize>(w: *const f32, x: *const f32, cols: usize, n4: usize, acc: *mut V) {
    let mut a = [[V::zero(); NR]; T];
    for t in 0..T {
        for i in 0..NR {
            a[t][i] = *acc.add(t * R + i);
        }
    }
    let mut k = 0;
    while k < n4 {
        let mut wv = [V::zero(); NR];
        for i in 0..NR {
            wv[i] = V::load(w.add(i * KC + k));
        }
        for t in 0..T {
            let xv = V::load(x.add(t * cols + k));
            for i in 0..NR {
                a[t][i] = a[t][i].add(wv[i].mul(xv));
            }
        }
        k += 4;
    }
    for t in 0..T {
        for i in 0..NR {
            *acc.add(t * R + i) = a[t][i];
        }
    }
}
