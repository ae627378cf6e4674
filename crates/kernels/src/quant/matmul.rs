//! Fused dequantize-matmul: out[i * rows + r] = sum_c x[i * cols + c] * W[r, c], W never
//! materialized. Two paths:
//! - GEMV (one x row, group % 32 == 0): codes decoded in registers 32 at a time (nf: through the
//!   codebook table; int: widened and converted, minus the zero point), dotted with x; the group's
//!   scale multiplies the group's partial sum.
//! - Panels (everything else, and batches): 16 weight rows x 256 columns decoded once (scales
//!   applied, so exactly the reference's weights) into a scratch buffer, then 4-rows x 2-tokens
//!   register tiles run over every x row. Each weight group is decoded once per call whatever x_rows is.
//!
//! On x86-64 with AVX2+FMA (detected at run time), x86.rs takes over: 4-bit GEMV and the panels'
//! tiles 8 lanes wide (2/3-bit GEMV stays here).
//!
//! Results differ from the reference (f64 accumulation of the exact weights) only by f32
//! reassociation and, in the GEMV path, the factored-out scale.

use super::decode::{row_scales, Decoder};
use super::simd::{decode32, decode32_int, Lut, Zp, V};
use super::{check_parts, code_values, group_scale, group_zero, groups_per_row, read_code, Format, Kind, Parts};
use crate::packing::row_bytes;

/// Weight rows decoded per panel (x is streamed once per panel).
const RP: usize = 16;
/// Weight rows per register tile.
const R: usize = 4;
/// Columns per panel chunk (a multiple of 32, so chunks start on whole bytes for every width):
/// the decoded panel chunk (RP * KC f32) and a token pair's x chunk stay in L1.
const KC: usize = 256;

/// out[i * rows + r] = sum_c x[i * cols + c] * W[r, c] (x: [x_rows, cols], out: [x_rows, rows]).
pub fn dequantize_matmul(x: &[f32], x_rows: usize, p: &Parts, rows: usize, cols: usize, f: &Format, out: &mut [f32]) {
    dequantize_matmul_rows(x, x_rows, p, rows, cols, f, 0, rows, out)
}

/// Same, for weight rows [row_start, row_end) only: out is still [x_rows, rows] and only its
/// columns row_start..row_end are written (for splitting rows across threads / workers).
pub fn dequantize_matmul_rows(
    x: &[f32],
    x_rows: usize,
    p: &Parts,
    rows: usize,
    cols: usize,
    f: &Format,
    row_start: usize,
    row_end: usize,
    out: &mut [f32],
) {
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
    #[cfg(target_arch = "x86_64")]
    {
        if crate::matmul::x86::avx2_fma() {
            // SAFETY: AVX2 and FMA are present; shapes checked above, cols > 0.
            unsafe {
                if x_rows == 1 && f.group % 32 == 0 && f.bits == 4 {
                    super::x86::gemv4(x, p, cols, f, row_start, row_end, out);
                } else if x_rows == 1 && f.group % 32 == 0 {
                    gemv_portable(x, p, cols, f, row_start, row_end, out);
                } else {
                    super::x86::panels(x, x_rows, p, rows, cols, f, row_start, row_end, out);
                }
            }
            return;
        }
    }
    if x_rows == 1 && f.group % 32 == 0 {
        gemv_portable(x, p, cols, f, row_start, row_end, out);
    } else {
        panels(x, x_rows, p, rows, cols, f, row_start, row_end, out);
    }
}

/// The one-x-row path of the 4-wide kernels (f.group % 32 == 0).
pub(super) fn gemv_portable(x: &[f32], p: &Parts, cols: usize, f: &Format, row_start: usize, row_end: usize, out: &mut [f32]) {
    match f.bits {
        4 => gemv_bits::<4>(x, p, cols, f, row_start, row_end, out),
        3 => gemv_bits::<3>(x, p, cols, f, row_start, row_end, out),
        _ => gemv_bits::<2>(x, p, cols, f, row_start, row_end, out),
    }
}

fn gemv_bits<const BITS: u32>(x: &[f32], p: &Parts, cols: usize, f: &Format, r0: usize, r1: usize, out: &mut [f32]) {
    // whole groups of 32, 64 or 128 run without an inner loop
    match (f.kind == Kind::Nf, f.group) {
        (true, 32) => gemv::<BITS, true, 1>(x, p, cols, f, r0, r1, out),
        (true, 64) => gemv::<BITS, true, 2>(x, p, cols, f, r0, r1, out),
        (true, 128) => gemv::<BITS, true, 4>(x, p, cols, f, r0, r1, out),
        (true, _) => gemv::<BITS, true, 0>(x, p, cols, f, r0, r1, out),
        (false, 32) => gemv::<BITS, false, 1>(x, p, cols, f, r0, r1, out),
        (false, 64) => gemv::<BITS, false, 2>(x, p, cols, f, r0, r1, out),
        (false, 128) => gemv::<BITS, false, 4>(x, p, cols, f, r0, r1, out),
        (false, _) => gemv::<BITS, false, 0>(x, p, cols, f, r0, r1, out),
    }
}

/// sum over nb blocks of 32 of (table value or code - z) * x, as 2 vector accumulators.
/// # Safety: cp..cp + nb * 4 * BITS and xp..xp + 32 * nb readable.
#[inline(always)]
unsafe fn blocks_dot<const BITS: u32, const NF: bool>(cp: *const u8, xp: *const f32, nb: usize, lut: &Lut, z: Zp) -> V {
    let mut a = [V::zero(); 2];
    for b in 0..nb {
        let w = if NF {
            decode32::<BITS>(cp.add(b * 4 * BITS as usize), lut)
        } else {
            decode32_int::<BITS>(cp.add(b * 4 * BITS as usize), lut, z)
        };
        let xb = xp.add(32 * b);
        for k in 0..8 {
            a[k & 1] = a[k & 1].add(w[k].mul(V::load(xb.add(4 * k))));
        }
    }
    a[0].add(a[1])
}

/// One x row: per group, the sum of (value * x) over its blocks of 32, times the group's scale.
/// NB: blocks per group when fixed (1, 2, 4), 0 for a runtime count.
fn gemv<const BITS: u32, const NF: bool, const NB: usize>(
    x: &[f32],
    p: &Parts,
    cols: usize,
    f: &Format,
    r0: usize,
    r1: usize,
    out: &mut [f32],
) {
    let vals = code_values(f);
    let lut = Lut::new(&vals);
    let rb = row_bytes(cols, BITS);
    let gpr = groups_per_row(cols, f);
    let bytes = 4 * BITS as usize;
    let full = cols / f.group; // groups of exactly f.group columns in each row
    debug_assert!(NB == 0 || NB * 32 == f.group);
    let mut srow = vec![0.0f32; gpr];
    for r in r0..r1 {
        let row = &p.codes[r * rb..(r + 1) * rb];
        assert!(full * f.group * BITS as usize / 8 <= row.len() && full * f.group <= x.len());
        // the row's scales first, in a tight loop of their own (double quant decodes them)
        for (gi, s) in srow.iter_mut().enumerate() {
            *s = group_scale(p, f, r * gpr + gi);
        }
        let mut acc = V::zero();
        for gi in 0..full {
            let g = r * gpr + gi;
            let s = V::splat(srow[gi]);
            let z = Zp::new(if NF { 0 } else { group_zero(p, f, g) });
            let c0 = gi * f.group;
            // SAFETY: the whole groups lie within the row and within x (asserted above).
            let d = unsafe {
                let cp = row.as_ptr().add(c0 * BITS as usize / 8);
                let xp = x.as_ptr().add(c0);
                if NB > 0 {
                    blocks_dot::<BITS, NF>(cp, xp, NB, &lut, z)
                } else {
                    blocks_dot::<BITS, NF>(cp, xp, f.group / 32, &lut, z)
                }
            };
            acc = acc.add(d.mul(s));
        }
        let mut tail = 0.0f32;
        if full < gpr {
            // the last, partial group: whole blocks of 32, then one code at a time
            let g = r * gpr + full;
            let (s, z) = (group_scale(p, f, g), group_zero(p, f, g));
            let c0 = full * f.group;
            let nb = (cols - c0) / 32;
            assert!(c0 * BITS as usize / 8 + nb * bytes <= row.len());
            // SAFETY: bounds asserted above; c0 + 32 * nb <= cols.
            let d = unsafe { blocks_dot::<BITS, NF>(row.as_ptr().add(c0 * BITS as usize / 8), x.as_ptr().add(c0), nb, &lut, Zp::new(z)) };
            acc = acc.add(d.mul(V::splat(s)));
            let mut t = 0.0f32;
            for c in c0 + 32 * nb..cols {
                t += (vals[read_code(row, 0, c, BITS) as usize] - z as f32) * x[c];
            }
            tail = t * s;
        }
        out[r] = acc.hsum() + tail;
    }
}

pub(super) fn panels(x: &[f32], x_rows: usize, p: &Parts, rows: usize, cols: usize, f: &Format, row_start: usize, row_end: usize, out: &mut [f32]) {
    let d = Decoder::new(f);
    let rb = row_bytes(cols, f.bits);
    let gpr = groups_per_row(cols, f);
    let mut wbuf = vec![0.0f32; RP * KC];
    let mut scales = vec![0.0f32; RP * gpr];
    let mut zeros = vec![0.0f32; RP * gpr];
    let mut acc = vec![V::zero(); x_rows * RP];
    let mut r0 = row_start;
    while r0 < row_end {
        let np = RP.min(row_end - r0);
        for a in acc.iter_mut() {
            *a = V::zero();
        }
        for i in 0..np {
            let (s, z) = (&mut scales[i * gpr..(i + 1) * gpr], &mut zeros[i * gpr..(i + 1) * gpr]);
            row_scales(p, f, r0 + i, gpr, s, z);
        }
        let mut kc = 0;
        let mut n = 0;
        while kc < cols {
            n = KC.min(cols - kc);
            for i in 0..np {
                let w = &mut wbuf[i * KC..i * KC + n];
                d.values(&p.codes[(r0 + i) * rb..(r0 + i + 1) * rb], kc, n, w);
                d.scale(f.group, &scales[i * gpr..(i + 1) * gpr], &zeros[i * gpr..(i + 1) * gpr], kc, n, w);
            }
            chunk(&wbuf, np, x, x_rows, cols, kc, n / 4 * 4, &mut acc);
            kc += n;
        }
        // the last chunk's columns past its last multiple of 4, then the horizontal sums
        let (klast, n4) = (kc - n, n / 4 * 4);
        for t in 0..x_rows {
            for i in 0..np {
                let mut s = acc[t * RP + i].hsum();
                for k in n4..n {
                    s += wbuf[i * KC + k] * x[t * cols + klast + k];
                }
                out[t * rows + r0 + i] = s;
            }
        }
        r0 += np;
    }
}

/// acc[t * RP + i] += lanes of w[i][0..n4] * x[t][kc..kc + n4], for the np decoded rows and all
/// tokens t: token pairs outer (their x stays in L1), tiles of R rows inner.
fn chunk(w: &[f32], np: usize, x: &[f32], x_rows: usize, cols: usize, kc: usize, n4: usize, acc: &mut [V]) {
    assert!(np >= 1 && w.len() >= (np - 1) * KC + n4 && x.len() >= (x_rows - 1) * cols + kc + n4 && acc.len() >= x_rows * RP);
    // SAFETY: every load below is within the bounds asserted above.
    unsafe {
        let mut t = 0;
        while t < x_rows {
            let xp = x.as_ptr().add(t * cols + kc);
            let two = t + 2 <= x_rows;
            let mut i = 0;
            while i < np {
                let (wp, ap) = (w.as_ptr().add(i * KC), acc.as_mut_ptr().add(t * RP + i));
                match (np - i, two) {
                    (1, true) => tile::<1, 2>(wp, xp, cols, n4, ap),
                    (2, true) => tile::<2, 2>(wp, xp, cols, n4, ap),
                    (3, true) => tile::<3, 2>(wp, xp, cols, n4, ap),
                    (_, true) => tile::<4, 2>(wp, xp, cols, n4, ap),
                    (1, false) => tile::<1, 1>(wp, xp, cols, n4, ap),
                    (2, false) => tile::<2, 1>(wp, xp, cols, n4, ap),
                    (3, false) => tile::<3, 1>(wp, xp, cols, n4, ap),
                    (_, false) => tile::<4, 1>(wp, xp, cols, n4, ap),
                }
                i += R;
            }
            t += if two { 2 } else { 1 };
        }
    }
}

/// The register tile: NR weight rows (stride KC) x T tokens (stride cols), 4 lanes along k;
/// accumulators at acc[t * RP + i].
#[inline(always)]
unsafe fn tile<const NR: usize, const T: usize>(w: *const f32, x: *const f32, cols: usize, n4: usize, acc: *mut V) {
    let mut a = [[V::zero(); NR]; T];
    for t in 0..T {
        for i in 0..NR {
            a[t][i] = *acc.add(t * RP + i);
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
            *acc.add(t * RP + i) = a[t][i];
        }
    }
}
