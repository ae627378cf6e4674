//! x86-64 AVX2+FMA versions of the fused dequantize-matmul's hot loops, picked at run time by
//! `matmul::dequantize_matmul_rows` when `crate::matmul::x86::avx2_fma()`:
//! - `gemv4`: one x row, 4-bit codes (NF or INT), group % 32 == 0, 32 codes (16 bytes) per step.
//!   NF: the table's 4 byte planes looked up with `vpshufb` (high nibbles in one 128-bit lane, low
//!   nibbles in the other) and interleaved in-lane into f32 lanes; that leaves the 32 values in a
//!   fixed shuffled order, so x is reordered to match once per call; the codes reach both lanes
//!   by a 128-bit broadcast load and a per-lane shift (no cross-lane insert). INT: 4 code bytes
//!   broadcast to 8 lanes and shifted per lane (`vpsrlvd`), masked, converted, minus the zero
//!   point (no shuffles at all). Per-group partial sums use 4 independent accumulators (started by
//!   a multiply, so groups overlap rather than queue on FMA latency); the group's scale (computed
//!   in the loop, not in a separate per-row pass) multiplies them into one of two row
//!   accumulators by group parity. A software prefetch runs PF bytes ahead.
//! - `panels`: every other case (batches, 2/3-bit, odd groups): the 4-wide path's structure (16
//!   weight rows x 256 columns decoded once, exactly the reference's weights, by the shared
//!   `Decoder`; 4-bit decoded with an AVX2 `vpermps` lookup into element order), then 4-rows x 2-tokens FMA tiles 8 lanes wide.
//!
//! Results differ from the reference only by reassociation (and FMA's single rounding).

use super::decode::{row_scales, Decoder};
use super::{code_values, group_scale, group_zero, groups_per_row, read_code, Format, Kind, Parts};
use crate::packing::row_bytes;
use core::arch::x86_64::*;

/// Weight rows decoded per panel, columns per panel chunk (as matmul.rs).
const RP: usize = 16;
const KC: usize = 256;
/// gemv4's software prefetch distance in code bytes.
const PF: usize = 1024;

/// The 16-entry table as two 8-lane halves.
#[derive(Clone, Copy)]
struct Table {
    lo: __m256,
    hi: __m256,
}

#[target_feature(enable = "avx2,fma")]
unsafe fn table(vals: &[f32; 16]) -> Table {
    Table { lo: _mm256_loadu_ps(vals.as_ptr()), hi: _mm256_loadu_ps(vals.as_ptr().add(8)) }
}

/// The 32 4-bit codes of 16 bytes at p (MSB-first: element 2j is the high nibble of byte j), in
/// element order, as two 16-byte vectors (elements 0..16, 16..32).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn nibbles32(p: *const u8) -> (__m128i, __m128i) {
    let v = _mm_loadu_si128(p as *const __m128i);
    let m = _mm_set1_epi8(0x0f);
    let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    let lo = _mm_and_si128(v, m);
    (_mm_unpacklo_epi8(hi, lo), _mm_unpackhi_epi8(hi, lo))
}

/// The four groups of 8 codes (as i32 lanes) of 32 elements.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn widen32(e: (__m128i, __m128i)) -> [__m256i; 4] {
    [
        _mm256_cvtepu8_epi32(e.0),
        _mm256_cvtepu8_epi32(_mm_srli_si128(e.0, 8)),
        _mm256_cvtepu8_epi32(e.1),
        _mm256_cvtepu8_epi32(_mm_srli_si128(e.1, 8)),
    ]
}

/// table[idx] per lane, idx in 0..16.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn lookup(t: &Table, idx: __m256i) -> __m256 {
    let lo = _mm256_permutevar8x32_ps(t.lo, idx);
    let hi = _mm256_permutevar8x32_ps(t.hi, idx);
    _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)))
}

/// The 32 values at p: table values (NF) or code - z (INT), 4 vectors of 8 in element order.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn decode32<const NF: bool>(p: *const u8, t: &Table, z: __m256) -> [__m256; 4] {
    let c = widen32(nibbles32(p));
    if NF {
        [lookup(t, c[0]), lookup(t, c[1]), lookup(t, c[2]), lookup(t, c[3])]
    } else {
        [
            _mm256_sub_ps(_mm256_cvtepi32_ps(c[0]), z),
            _mm256_sub_ps(_mm256_cvtepi32_ps(c[1]), z),
            _mm256_sub_ps(_mm256_cvtepi32_ps(c[2]), z),
            _mm256_sub_ps(_mm256_cvtepi32_ps(c[3]), z),
        ]
    }
}

/// NF table as 4 byte planes (plane j: byte j of each value), in both 128-bit lanes, for vpshufb.
#[derive(Clone, Copy)]
struct Planes([__m256i; 4]);

#[target_feature(enable = "avx2,fma")]
unsafe fn planes(vals: &[f32; 16]) -> Planes {
    let mut b = [[0u8; 16]; 4];
    for (i, v) in vals.iter().enumerate() {
        for (j, &byte) in v.to_le_bytes().iter().enumerate() {
            b[j][i] = byte;
        }
    }
    let pl = |j: usize| _mm256_broadcastsi128_si256(_mm_loadu_si128(b[j].as_ptr() as *const __m128i));
    Planes([pl(0), pl(1), pl(2), pl(3)])
}

/// Element of a block of 32 that lane o of `decode32_shuffled` holds (lane o = 8 * vector + i).
fn shuffled_element(o: usize) -> usize {
    let (k, lane, idx) = (o / 8, (o % 8) / 4, o % 4);
    2 * (4 * k + idx) + lane
}

/// The NF values of the 32 4-bit codes at p, in `shuffled_element` order: high nibbles (even
/// elements) in the low 128-bit lane, low nibbles in the high lane, the 4 byte planes looked up
/// with vpshufb and interleaved back into f32 lanes in-lane (no cross-lane shuffles, no vpermps).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn decode32_shuffled(p: *const u8, t: &Planes) -> [__m256; 4] {
    // the 16 bytes in both 128-bit lanes (a load, no shuffle), the low lane shifted right by 4
    let v = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
    let c = _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_setr_epi32(4, 4, 4, 4, 0, 0, 0, 0)), _mm256_set1_epi8(0x0f));
    let b0 = _mm256_shuffle_epi8(t.0[0], c);
    let b1 = _mm256_shuffle_epi8(t.0[1], c);
    let b2 = _mm256_shuffle_epi8(t.0[2], c);
    let b3 = _mm256_shuffle_epi8(t.0[3], c);
    let (l01, h01) = (_mm256_unpacklo_epi8(b0, b1), _mm256_unpackhi_epi8(b0, b1));
    let (l23, h23) = (_mm256_unpacklo_epi8(b2, b3), _mm256_unpackhi_epi8(b2, b3));
    [
        _mm256_castsi256_ps(_mm256_unpacklo_epi16(l01, l23)),
        _mm256_castsi256_ps(_mm256_unpackhi_epi16(l01, l23)),
        _mm256_castsi256_ps(_mm256_unpacklo_epi16(h01, h23)),
        _mm256_castsi256_ps(_mm256_unpackhi_epi16(h01, h23)),
    ]
}

/// Σ over nb blocks of 32 of NF value * x, x given in `shuffled_element` order per block.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn blocks_dot_shuffled(cp: *const u8, xp: *const f32, nb: usize, t: &Planes) -> __m256 {
    // 4 independent accumulators, started by a multiply: a group's sum is a short chain, so
    // consecutive groups overlap instead of queueing on FMA latency
    if nb == 0 {
        return _mm256_setzero_ps();
    }
    let w = decode32_shuffled(cp, t);
    let mut a = [
        _mm256_mul_ps(w[0], _mm256_loadu_ps(xp)),
        _mm256_mul_ps(w[1], _mm256_loadu_ps(xp.add(8))),
        _mm256_mul_ps(w[2], _mm256_loadu_ps(xp.add(16))),
        _mm256_mul_ps(w[3], _mm256_loadu_ps(xp.add(24))),
    ];
    for b in 1..nb {
        let w = decode32_shuffled(cp.add(16 * b), t);
        let xb = xp.add(32 * b);
        for k in 0..4 {
            a[k] = _mm256_fmadd_ps(w[k], _mm256_loadu_ps(xb.add(8 * k)), a[k]);
        }
    }
    _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]))
}

/// Per-lane shifts taking element i of 8 (4 code bytes read as a little-endian u32, MSB-first
/// nibbles: element 2j is the high nibble of byte j) to bits 0..4 (`SH`), and its bit 3 to bit 31
/// (`SH_SIGN`, for the blend between the table's halves).
const SH: [i32; 8] = [4, 0, 12, 8, 20, 16, 28, 24];
const SH_SIGN: [i32; 8] = [24, 28, 16, 20, 8, 12, 0, 4];

/// The 8 values of the 8 codes whose 4 bytes are at p, in element order: the u32 broadcast to
/// every lane, shifted per lane; NF: looked up in the table's halves with `vpermps` (which reads
/// only index bits 0..3) and blended on bit 3; INT: masked, converted, minus z. No byte shuffles.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn decode8<const NF: bool>(p: *const u8, t: &Table, sh: __m256i, sh_sign: __m256i, z: __m256) -> __m256 {
    let w = _mm256_set1_epi32((p as *const i32).read_unaligned());
    let idx = _mm256_srlv_epi32(w, sh);
    if NF {
        let lo = _mm256_permutevar8x32_ps(t.lo, idx);
        let hi = _mm256_permutevar8x32_ps(t.hi, idx);
        _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_sllv_epi32(w, sh_sign)))
    } else {
        _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(idx, _mm256_set1_epi32(0xf))), z)
    }
}

/// Σ over nb blocks of 32 of value * x (element order), by 8-code broadcasts.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn blocks_dot_bc<const NF: bool>(cp: *const u8, xp: *const f32, nb: usize, t: &Table, z: __m256) -> __m256 {
    let sh = _mm256_loadu_si256(SH.as_ptr() as *const __m256i);
    let shs = _mm256_loadu_si256(SH_SIGN.as_ptr() as *const __m256i);
    if nb == 0 {
        return _mm256_setzero_ps();
    }
    let mut a = [_mm256_setzero_ps(); 4];
    for k in 0..4 {
        a[k] = _mm256_mul_ps(decode8::<NF>(cp.add(4 * k), t, sh, shs, z), _mm256_loadu_ps(xp.add(8 * k)));
    }
    for b in 1..nb {
        let (c, xb) = (cp.add(16 * b), xp.add(32 * b));
        for k in 0..4 {
            a[k] = _mm256_fmadd_ps(decode8::<NF>(c.add(4 * k), t, sh, shs, z), _mm256_loadu_ps(xb.add(8 * k)), a[k]);
        }
    }
    _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// One x row, 4-bit codes, f.group % 32 == 0: out[r] for r in [r0, r1).
/// # Safety: AVX2 and FMA present. Shapes checked by the caller (dequantize_matmul_rows).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemv4(x: &[f32], p: &Parts, cols: usize, f: &Format, r0: usize, r1: usize, out: &mut [f32]) {
    debug_assert!(f.bits == 4 && f.group % 32 == 0);
    if f.kind == Kind::Nf {
        match f.group {
            32 => gemv4_k::<true, 1>(x, p, cols, f, r0, r1, out),
            64 => gemv4_k::<true, 2>(x, p, cols, f, r0, r1, out),
            128 => gemv4_k::<true, 4>(x, p, cols, f, r0, r1, out),
            _ => gemv4_k::<true, 0>(x, p, cols, f, r0, r1, out),
        }
    } else {
        match f.group {
            32 => gemv4_k::<false, 1>(x, p, cols, f, r0, r1, out),
            64 => gemv4_k::<false, 2>(x, p, cols, f, r0, r1, out),
            128 => gemv4_k::<false, 4>(x, p, cols, f, r0, r1, out),
            _ => gemv4_k::<false, 0>(x, p, cols, f, r0, r1, out),
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn gemv4_k<const NF: bool, const NB: usize>(x: &[f32], p: &Parts, cols: usize, f: &Format, r0: usize, r1: usize, out: &mut [f32]) {
    let vals = code_values(f);
    let t = table(&vals);
    let rb = row_bytes(cols, 4);
    let gpr = groups_per_row(cols, f);
    let full = cols / f.group;
    let nbg = if NB > 0 { NB } else { f.group / 32 };
    assert!(out.len() >= r1 && x.len() >= cols);
    // NF: x reordered once per call to the lane order of decode32_shuffled (whole blocks of 32)
    let pl = planes(&vals);
    let xs: Vec<f32> = if NF {
        let mut xs = vec![0.0f32; cols / 32 * 32];
        for (o, v) in xs.iter_mut().enumerate() {
            *v = x[o / 32 * 32 + shuffled_element(o % 32)];
        }
        xs
    } else {
        Vec::new()
    };
    for r in r0..r1 {
        let row = &p.codes[r * rb..(r + 1) * rb];
        assert!(full * f.group / 2 <= row.len());
        let (mut acc, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (cp, xp) = (row.as_ptr(), if NF { xs.as_ptr() } else { x.as_ptr() });
        for gi in 0..full {
            // the group's scale (and zero) computed here, overlapping the decode
            let z = _mm256_set1_ps(if NF { 0.0 } else { group_zero(p, f, r * gpr + gi) as f32 });
            let c0 = gi * f.group;
            // software prefetch PF bytes ahead, once per 64 code bytes (a hint: never faults)
            if c0 % 128 == 0 {
                _mm_prefetch::<_MM_HINT_T0>(cp.wrapping_add(c0 / 2 + PF) as *const i8);
            }
            // the whole group lies within the row and x (asserted above)
            let d = if NF { blocks_dot_shuffled(cp.add(c0 / 2), xp.add(c0), nbg, &pl) } else { blocks_dot_bc::<NF>(cp.add(c0 / 2), xp.add(c0), nbg, &t, z) };
            let sg = _mm256_set1_ps(group_scale(p, f, r * gpr + gi));
            if gi % 2 == 0 {
                acc = _mm256_fmadd_ps(d, sg, acc);
            } else {
                acc1 = _mm256_fmadd_ps(d, sg, acc1);
            }
        }
        acc = _mm256_add_ps(acc, acc1);
        let mut tail = 0.0f32;
        if full < gpr {
            let g = r * gpr + full;
            let (s, z) = (group_scale(p, f, g), if NF { 0.0 } else { group_zero(p, f, g) as f32 });
            let c0 = full * f.group;
            let nb = (cols - c0) / 32;
            assert!(c0 / 2 + nb * 16 <= row.len() && c0 + 32 * nb <= x.len());
            let d = if NF { blocks_dot_shuffled(cp.add(c0 / 2), xp.add(c0), nb, &pl) } else { blocks_dot_bc::<NF>(cp.add(c0 / 2), xp.add(c0), nb, &t, _mm256_set1_ps(z)) };
            acc = _mm256_fmadd_ps(d, _mm256_set1_ps(s), acc);
            let mut tt = 0.0f32;
            for c in c0 + 32 * nb..cols {
                tt += (vals[read_code(row, 0, c, 4) as usize] - z) * x[c];
            }
            tail = tt * s;
        }
        out[r] = hsum(acc) + tail;
    }
}

/// Table values of elements [c0, c0 + n) of a 4-bit row (c0 % 32 == 0), AVX2 lookup for whole
/// blocks of 32; the same values as `Decoder::values`.
#[target_feature(enable = "avx2,fma")]
unsafe fn values4(d: &Decoder, t: &Table, row: &[u8], c0: usize, n: usize, out: &mut [f32]) {
    let nb = n / 32;
    assert!(c0 % 32 == 0 && c0 / 2 + nb * 16 <= row.len() && out.len() >= n);
    let z = _mm256_setzero_ps();
    for b in 0..nb {
        let w = decode32::<true>(row.as_ptr().add(c0 / 2 + 16 * b), t, z);
        let o = out.as_mut_ptr().add(32 * b);
        for k in 0..4 {
            _mm256_storeu_ps(o.add(8 * k), w[k]);
        }
    }
    for c in c0 + nb * 32..c0 + n {
        out[c - c0] = d.vals[read_code(row, 0, c, 4) as usize];
    }
}

/// Every shape: decoded panels (as matmul.rs `panels`), 8-lane FMA tiles.
/// # Safety: AVX2 and FMA present. Shapes checked by the caller; cols > 0.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn panels(x: &[f32], x_rows: usize, p: &Parts, rows: usize, cols: usize, f: &Format, row_start: usize, row_end: usize, out: &mut [f32]) {
    let d = Decoder::new(f);
    let t = table(&d.vals);
    let rb = row_bytes(cols, f.bits);
    let gpr = groups_per_row(cols, f);
    let mut wbuf = vec![0.0f32; RP * KC];
    let mut scales = vec![0.0f32; RP * gpr];
    let mut zeros = vec![0.0f32; RP * gpr];
    let mut acc = vec![_mm256_setzero_ps(); x_rows * RP];
    assert!(x.len() >= x_rows * cols && out.len() >= x_rows * rows && row_end <= rows);
    let mut r0 = row_start;
    while r0 < row_end {
        let np = RP.min(row_end - r0);
        for a in acc.iter_mut() {
            *a = _mm256_setzero_ps();
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
                let row = &p.codes[(r0 + i) * rb..(r0 + i + 1) * rb];
                if f.bits == 4 {
                    values4(&d, &t, row, kc, n, w);
                } else {
                    d.values(row, kc, n, w);
                }
                d.scale(f.group, &scales[i * gpr..(i + 1) * gpr], &zeros[i * gpr..(i + 1) * gpr], kc, n, w);
            }
            chunk(&wbuf, np, x, x_rows, cols, kc, n / 8 * 8, &mut acc);
            kc += n;
        }
        let (klast, n8) = (kc - n, n / 8 * 8);
        for tk in 0..x_rows {
            for i in 0..np {
                let mut s = hsum(acc[tk * RP + i]);
                for k in n8..n {
                    s += wbuf[i * KC + k] * x[tk * cols + klast + k];
                }
                out[tk * rows + r0 + i] = s;
            }
        }
        r0 += np;
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn chunk(w: &[f32], np: usize, x: &[f32], x_rows: usize, cols: usize, kc: usize, n8: usize, acc: &mut [__m256]) {
    assert!(np >= 1 && w.len() >= (np - 1) * KC + n8 && x.len() >= (x_rows - 1) * cols + kc + n8 && acc.len() >= x_rows * RP);
    let mut t = 0;
    while t < x_rows {
        let xp = x.as_ptr().add(t * cols + kc);
        let two = t + 2 <= x_rows;
        let mut i = 0;
        while i < np {
            let (wp, ap) = (w.as_ptr().add(i * KC), acc.as_mut_ptr().add(t * RP + i));
            match (np - i, two) {
                (1, true) => tile::<1, 2>(wp, xp, cols, n8, ap),
                (2, true) => tile::<2, 2>(wp, xp, cols, n8, ap),
                (3, true) => tile::<3, 2>(wp, xp, cols, n8, ap),
                (_, true) => tile::<4, 2>(wp, xp, cols, n8, ap),
                (1, false) => tile::<1, 1>(wp, xp, cols, n8, ap),
                (2, false) => tile::<2, 1>(wp, xp, cols, n8, ap),
                (3, false) => tile::<3, 1>(wp, xp, cols, n8, ap),
                (_, false) => tile::<4, 1>(wp, xp, cols, n8, ap),
            }
            i += 4;
        }
        t += if two { 2 } else { 1 };
    }
}

/// NR weight rows (stride KC) x T tokens (stride cols), 8 lanes along k; acc[t * RP + i].
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile<const NR: usize, const T: usize>(w: *const f32, x: *const f32, cols: usize, n8: usize, acc: *mut __m256) {
    let mut a = [[_mm256_setzero_ps(); NR]; T];
    for t in 0..T {
        for i in 0..NR {
            a[t][i] = *acc.add(t * RP + i);
        }
    }
    let mut k = 0;
    while k < n8 {
        let mut wv = [_mm256_setzero_ps(); NR];
        for i in 0..NR {
            wv[i] = _mm256_loadu_ps(w.add(i * KC + k));
        }
        for t in 0..T {
            let xv = _mm256_loadu_ps(x.add(t * cols + k));
            for i in 0..NR {
                a[t][i] = _mm256_fmadd_ps(wv[i], xv, a[t][i]);
            }
        }
        k += 8;
    }
    for t in 0..T {
        for i in 0..NR {
            *acc.add(t * RP + i) = a[t][i];
        }
    }
}
