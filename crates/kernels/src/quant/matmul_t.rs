//! The backward of the fused dequantize-matmul: dx [n, cols] = dy [n, rows] · W, W [rows, cols]
//! the packed weight, never materialized as a whole float matrix.
//!
//! Structure: columns in chunks of KC; per chunk, weight rows in panels of RP, each panel's row
//! segments decoded once (scales applied, exactly the reference's weights, by the shared
//! `Decoder`) into a small buffer; then register tiles of tokens x columns run over the panel:
//! accumulators loaded from dx, one multiply-add per panel row (dy[i, r] broadcast times the
//! decoded row), stored back. Every weight element is decoded once per call whatever n is.
//!
//! Every element dx[i, c] is the same chain: acc = 0, then acc = acc + dy[i, r] * W[r, c] for r =
//! 0, 1, ..., rows - 1 in that order (FMA on the AVX2 path: one rounding per step; mul then add
//! on the 4-wide path, simd128 on wasm). Tiles, chunks and vector-or-scalar only decide which
//! lane computes it, never the operations, so the result does not depend on the column range a
//! call covers: `dequantize_matmul_t_cols` over any split of [0, cols) at multiples of 32 writes
//! bit-identical values to one whole call (crates/node/src/pool.rs splits over threads this way).
//!
//! On x86-64 with AVX2+FMA (detected at run time), `avx2` takes over: codes decoded 8 at a time
//! (a broadcast of 4 code bytes, per-lane shifts, `vpermps` table lookup), 6-tokens x 16-column
//! FMA tiles. The scalar reference (f64 accumulation of the exact weights) is
//! `dequantize_matmul_t_reference`; results differ from it only by f32 rounding of the chain.

use super::decode::Decoder;
use super::simd::V;
use super::{check_parts, dequantize_reference, group_scale, group_zero, groups_per_row, Format, Parts};
use crate::packing::row_bytes;

/// Weight rows per panel (the register tiles' k loop between loads and stores of dx).
const RP: usize = 64;
/// Columns per chunk, a multiple of 32 (chunks start on whole code bytes for every width): the
/// decoded panel (RP * KC f32, 16 KiB) stays in L1. bench_matmul_t (AVX2, one thread) put 64 x 64
/// ahead of 32 x 128 and 16 x 256 at 512 tokens, level at 128.
const KC: usize = 64;

/// dx [n, cols] = dy [n, rows] · W (W = dequantize(p), [rows, cols]).
pub fn dequantize_matmul_t(dy: &[f32], n: usize, p: &Parts, rows: usize, cols: usize, f: &Format, out: &mut [f32]) {
    dequantize_matmul_t_cols(dy, n, p, rows, cols, f, 0, cols, out)
}

/// Same, for output columns [col_start, col_end) only (col_start a multiple of 32): out is still
/// [n, cols] and only those columns of each row are written; bit-identical to the whole call.
pub fn dequantize_matmul_t_cols(
    dy: &[f32],
    n: usize,
    p: &Parts,
    rows: usize,
    cols: usize,
    f: &Format,
    col_start: usize,
    col_end: usize,
    out: &mut [f32],
) {
    check_parts(p, rows, cols, f);
    assert!(dy.len() == n * rows && out.len() == n * cols && col_start <= col_end && col_end <= cols);
    assert!(col_start % 32 == 0 || col_start == col_end, "dequantize_matmul_t_cols: col_start {} is not a multiple of 32", col_start);
    if n == 0 || col_start == col_end {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if crate::matmul::x86::avx2_fma() {
            // SAFETY: AVX2 and FMA are present; shapes checked above.
            unsafe { avx2::run(dy, n, p, rows, cols, f, col_start, col_end, out) };
            return;
        }
    }
    portable(dy, n, p, rows, cols, f, col_start, col_end, out)
}

/// The scalar reference: f64 sums of dy[i, r] * W[r, c] over r, W from `dequantize_reference`.
pub fn dequantize_matmul_t_reference(dy: &[f32], n: usize, p: &Parts, rows: usize, cols: usize, f: &Format, out: &mut [f32]) {
    check_parts(p, rows, cols, f);
    assert!(dy.len() == n * rows && out.len() == n * cols);
    let mut w = vec![0.0f32; rows * cols];
    dequantize_reference(p, rows, cols, f, &mut w);
    let mut acc = vec![0.0f64; cols];
    for i in 0..n {
        for a in acc.iter_mut() {
            *a = 0.0;
        }
        for r in 0..rows {
            let d = dy[i * rows + r] as f64;
            for c in 0..cols {
                acc[c] += d * w[r * cols + c] as f64;
            }
        }
        for c in 0..cols {
            out[i * cols + c] = acc[c] as f32;
        }
    }
}

/// Scales and zero points of the groups of row r that columns [kc, kc + nc) touch, at their
/// index within the row (what `Decoder::scale` reads).
#[inline]
fn chunk_scales(p: &Parts, f: &Format, r: usize, gpr: usize, kc: usize, nc: usize, scales: &mut [f32], zeros: &mut [f32]) {
    for gi in kc / f.group..=(kc + nc - 1) / f.group {
        scales[gi] = group_scale(p, f, r * gpr + gi);
        zeros[gi] = group_zero(p, f, r * gpr + gi) as f32;
    }
}

/// Zeroes columns [kc, kc + nc) of every row of out [n, cols].
fn zero_cols(out: &mut [f32], n: usize, cols: usize, kc: usize, nc: usize) {
    for i in 0..n {
        for o in &mut out[i * cols + kc..i * cols + kc + nc] {
            *o = 0.0;
        }
    }
}

/// What a path brings to the shared loops (`drive`, `chunk`): how it decodes a row segment, its
/// register tiles, and the step of a lone column. The loops themselves are the same on every path.
trait Lanes {
    /// Tokens per register tile (1 to 6).
    const TT: usize;
    /// Columns per vector.
    const W: usize;
    /// `Decoder::values`: the table values of the codes of elements [c0, c0 + n) of a row.
    unsafe fn values(&self, d: &Decoder, row: &[u8], c0: usize, n: usize, out: &mut [f32]);
    /// NT tokens (dy stride rows, out stride cols) x NV vectors of W columns, over np panel rows:
    /// accumulators loaded from out, one multiply-add per panel row, stored back.
    unsafe fn tile<const NT: usize, const NV: usize>(w: *const f32, dy: *const f32, rows: usize, out: *mut f32, cols: usize, np: usize);
    /// acc + w * d for a lone column, rounded as a lane of `tile` rounds it.
    unsafe fn step(acc: f32, w: f32, d: f32) -> f32;
}

/// The 4-wide path (SSE2 lanes on x86-64, simd128 on wasm32, lane arrays elsewhere).
pub(super) fn portable(dy: &[f32], n: usize, p: &Parts, rows: usize, cols: usize, f: &Format, c0: usize, c1: usize, out: &mut [f32]) {
    // SAFETY: the 4-wide path needs no CPU feature; `chunk` asserts the bounds its tiles rely on.
    unsafe { drive(&Portable, &Decoder::new(f), dy, n, p, rows, cols, f, c0, c1, out) }
}

/// Columns [c0, c1) in chunks of KC; per chunk, panels of RP weight rows decoded (scales
/// applied) into a buffer, then `chunk` over each panel.
/// # Safety: the CPU features `L` needs are present.
#[inline(always)]
unsafe fn drive<L: Lanes>(lanes: &L, d: &Decoder, dy: &[f32], n: usize, p: &Parts, rows: usize, cols: usize, f: &Format, c0: usize, c1: usize, out: &mut [f32]) {
    let rb = row_bytes(cols, f.bits);
    let gpr = groups_per_row(cols, f);
    let mut wbuf = vec![0.0f32; RP * KC];
    let mut sz = vec![0.0f32; 2 * gpr];
    let (scales, zeros) = sz.split_at_mut(gpr);
    let mut kc = c0;
    while kc < c1 {
        let nc = KC.min(c1 - kc);
        zero_cols(out, n, cols, kc, nc);
        let mut r0 = 0;
        while r0 < rows {
            let np = RP.min(rows - r0);
            for k in 0..np {
                let r = r0 + k;
                let w = &mut wbuf[k * KC..k * KC + nc];
                chunk_scales(p, f, r, gpr, kc, nc, scales, zeros);
                lanes.values(d, &p.codes[r * rb..(r + 1) * rb], kc, nc, w);
                d.scale(f.group, scales, zeros, kc, nc, w);
            }
            chunk::<L>(&wbuf, np, dy, n, rows, r0, out, cols, kc, nc);
            r0 += np;
        }
        kc += nc;
    }
}

/// out[i, kc + j] += sum over k < np of dy[i, r0 + k] * w[k][j], every token i, j < nc: tiles of
/// L::TT tokens x 2 then 1 vectors, the last columns one at a time (the same chain as a lane).
/// # Safety: the CPU features `L` needs are present.
#[inline(always)]
unsafe fn chunk<L: Lanes>(w: &[f32], np: usize, dy: &[f32], n: usize, rows: usize, r0: usize, out: &mut [f32], cols: usize, kc: usize, nc: usize) {
    assert!(np >= 1 && nc >= 1 && w.len() >= (np - 1) * KC + nc && dy.len() >= (n - 1) * rows + r0 + np && out.len() >= (n - 1) * cols + kc + nc);
    let (n2, n1) = (nc / (2 * L::W) * (2 * L::W), nc / L::W * L::W);
    let mut t = 0;
    while t < n {
        let nt = L::TT.min(n - t);
        // every access below is within the bounds asserted above (tiles cover tokens t..t + nt,
        // columns j..j + 2W or + W <= nc, panel rows < np)
        let (dp, op) = (dy.as_ptr().add(t * rows + r0), out.as_mut_ptr().add(t * cols + kc));
        let mut j = 0;
        while j < n2 {
            tiles::<L, 2>(nt, w.as_ptr().add(j), dp, rows, op.add(j), cols, np);
            j += 2 * L::W;
        }
        if j < n1 {
            tiles::<L, 1>(nt, w.as_ptr().add(j), dp, rows, op.add(j), cols, np);
            j += L::W;
        }
        for jj in j..nc {
            for a in 0..nt {
                let o = op.add(a * cols + jj);
                let mut s = *o;
                for k in 0..np {
                    s = L::step(s, *w.get_unchecked(k * KC + jj), *dp.add(a * rows + k));
                }
                *o = s;
            }
        }
        t += nt;
    }
}

/// `L::tile::<nt, NV>` for a run-time nt from 1 to L::TT.
#[inline(always)]
unsafe fn tiles<L: Lanes, const NV: usize>(nt: usize, w: *const f32, dy: *const f32, rows: usize, out: *mut f32, cols: usize, np: usize) {
    match nt.min(L::TT) {
        1 => L::tile::<1, NV>(w, dy, rows, out, cols, np),
        2 => L::tile::<2, NV>(w, dy, rows, out, cols, np),
        3 => L::tile::<3, NV>(w, dy, rows, out, cols, np),
        4 => L::tile::<4, NV>(w, dy, rows, out, cols, np),
        5 => L::tile::<5, NV>(w, dy, rows, out, cols, np),
        _ => L::tile::<6, NV>(w, dy, rows, out, cols, np),
    }
}

/// `V` lanes: `Decoder::values`, mul then add.
struct Portable;

impl Lanes for Portable {
    const TT: usize = 4;
    const W: usize = 4;

    #[inline(always)]
    unsafe fn values(&self, d: &Decoder, row: &[u8], c0: usize, n: usize, out: &mut [f32]) {
        d.values(row, c0, n, out)
    }

    #[inline(always)]
    unsafe fn tile<const NT: usize, const NV: usize>(w: *const f32, dy: *const f32, rows: usize, out: *mut f32, cols: usize, np: usize) {
        let mut a = [[V::zero(); NV]; NT];
        for t in 0..NT {
            for v in 0..NV {
                a[t][v] = V::load(out.add(t * cols + 4 * v));
            }
        }
        for k in 0..np {
            let mut wv = [V::zero(); NV];
            for v in 0..NV {
                wv[v] = V::load(w.add(k * KC + 4 * v));
            }
            for t in 0..NT {
                let d = V::splat(*dy.add(t * rows + k));
                for v in 0..NV {
                    a[t][v] = a[t][v].add(wv[v].mul(d));
                }
            }
        }
        for t in 0..NT {
            for v in 0..NV {
                a[t][v].store(out.add(t * cols + 4 * v));
            }
        }
    }

    #[inline(always)]
    unsafe fn step(acc: f32, w: f32, d: f32) -> f32 {
        acc + w * d
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use super::super::decode::Decoder;
    use super::super::{read_code, Format, Parts};
    use super::{drive, Lanes, KC};
    use core::arch::x86_64::*;

    /// # Safety: AVX2 and FMA present; shapes checked by the caller (dequantize_matmul_t_cols).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn run(dy: &[f32], n: usize, p: &Parts, rows: usize, cols: usize, f: &Format, c0: usize, c1: usize, out: &mut [f32]) {
        let d = Decoder::new(f);
        let lanes = Avx2 { lo: _mm256_loadu_ps(d.vals.as_ptr()), hi: _mm256_loadu_ps(d.vals.as_ptr().add(8)) };
        drive(&lanes, &d, dy, n, p, rows, cols, f, c0, c1, out)
    }

    /// 8 lanes with FMA: the decoder's table in two halves for `values`; 6 tokens x 2 vectors =
    /// 12 accumulators, 2 weight vectors, 1 broadcast.
    struct Avx2 {
        lo: __m256,
        hi: __m256,
    }

    impl Lanes for Avx2 {
        const TT: usize = 6;
        const W: usize = 8;

        #[inline(always)]
        unsafe fn values(&self, d: &Decoder, row: &[u8], c0: usize, n: usize, out: &mut [f32]) {
            values(d, self.lo, self.hi, row, c0, n, out)
        }

        #[inline(always)]
        unsafe fn tile<const NT: usize, const NV: usize>(w: *const f32, dy: *const f32, rows: usize, out: *mut f32, cols: usize, np: usize) {
            tile::<NT, NV>(w, dy, rows, out, cols, np)
        }

        #[inline(always)]
        unsafe fn step(acc: f32, w: f32, d: f32) -> f32 {
            fma_ss(acc, w, d)
        }
    }

    /// `Decoder::values` (table values of the codes of elements [c0, c0 + n) of a row, c0 % 32 ==
    /// 0; for int the code itself), 8 codes per step: their bits (8 * bits <= 32) read as one
    /// big-endian u32 broadcast to every lane, shifted per lane, masked; looked up in the table's
    /// two halves (`vpermps` reads index bits 0..3) and blended on bit 3.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn values(d: &Decoder, lo: __m256, hi: __m256, row: &[u8], c0: usize, n: usize, out: &mut [f32]) {
        let b = d.bits as i32;
        assert!(c0 % 32 == 0 && out.len() >= n);
        let sh = _mm256_setr_epi32(32 - b, 32 - 2 * b, 32 - 3 * b, 32 - 4 * b, 32 - 5 * b, 32 - 6 * b, 32 - 7 * b, 32 - 8 * b);
        let mask = _mm256_set1_epi32((1 << b) - 1);
        let base = c0 * b as usize / 8;
        let mut k = 0;
        // whole groups of 8 codes whose 4-byte read stays within the row
        while 8 * (k + 1) <= n && base + k * b as usize + 4 <= row.len() {
            let q = row.as_ptr().add(base + k * b as usize);
            let be = u32::from_be_bytes([*q, *q.add(1), *q.add(2), *q.add(3)]);
            let idx = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(be as i32), sh), mask);
            let v = if d.nf {
                let (l, h) = (_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx));
                _mm256_blendv_ps(l, h, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)))
            } else {
                _mm256_cvtepi32_ps(idx)
            };
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * k), v);
            k += 1;
        }
        for c in c0 + 8 * k..c0 + n {
            out[c - c0] = d.vals[read_code(row, 0, c, d.bits) as usize];
        }
    }

    /// NT tokens x NV vectors of 8 columns over np panel rows: acc = fma(w, dy, acc).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const NT: usize, const NV: usize>(w: *const f32, dy: *const f32, rows: usize, out: *mut f32, cols: usize, np: usize) {
        let mut a = [[_mm256_setzero_ps(); NV]; NT];
        for t in 0..NT {
            for v in 0..NV {
                a[t][v] = _mm256_loadu_ps(out.add(t * cols + 8 * v));
            }
        }
        for k in 0..np {
            let mut wv = [_mm256_setzero_ps(); NV];
            for v in 0..NV {
                wv[v] = _mm256_loadu_ps(w.add(k * KC + 8 * v));
            }
            for t in 0..NT {
                let d = _mm256_broadcast_ss(&*dy.add(t * rows + k));
                for v in 0..NV {
                    a[t][v] = _mm256_fmadd_ps(wv[v], d, a[t][v]);
                }
            }
        }
        for t in 0..NT {
            for v in 0..NV {
                _mm256_storeu_ps(out.add(t * cols + 8 * v), a[t][v]);
            }
        }
    }

    /// acc + w * d, one rounding (a lane of `tile`).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn fma_ss(acc: f32, w: f32, d: f32) -> f32 {
        _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(w), _mm_set_ss(d), _mm_set_ss(acc)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::owned::Owned;
    use super::super::tests::{all_formats, Rng};
    use super::super::*;
    use super::*;

    fn bits_eq(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    /// Every path the machine has: (name, kernel over a column range).
    #[allow(clippy::type_complexity)]
    fn paths() -> Vec<(&'static str, fn(&[f32], usize, &Parts, usize, usize, &Format, usize, usize, &mut [f32]))> {
        let mut v: Vec<(&'static str, fn(&[f32], usize, &Parts, usize, usize, &Format, usize, usize, &mut [f32]))> = vec![("4-wide", portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::matmul::x86::avx2_fma() {
                fn a(dy: &[f32], n: usize, p: &Parts, rows: usize, cols: usize, f: &Format, c0: usize, c1: usize, out: &mut [f32]) {
                    // SAFETY: AVX2 and FMA checked above; shapes are the test's own
                    unsafe { avx2::run(dy, n, p, rows, cols, f, c0, c1, out) }
                }
                v.push(("avx2", a));
            } else {
                eprintln!("no AVX2+FMA: only the 4-wide path checked");
            }
        }
        v
    }

    const SHAPES: &[(usize, usize, usize)] = &[
        // n, rows, cols: ones, odd sizes, partial groups and chunks, tiles' edges
        (1, 1, 1),
        (1, 3, 7),
        (2, 5, 33),
        (3, 33, 65),
        (5, 7, 129),
        (7, 40, 100),
        (13, 70, 257),
        (6, 17, 300),
        (1, 64, 512),
    ];

    #[test]
    fn dequantize_matmul_t_matches_reference_on_every_path_and_format() {
        let mut rng = Rng(0x5eed);
        let mut formats = all_formats();
        formats.push(Format { kind: Kind::Nf, bits: 2, group: 96, double_quant: true, symmetric: false });
        formats.push(Format { kind: Kind::Int, bits: 3, group: 48, double_quant: false, symmetric: false });
        let mut worst = 0.0f64;
        for f in formats {
            for &(n, rows, cols) in SHAPES {
                let w: Vec<f32> = (0..rows * cols).map(|i| if i % 13 == 5 { 0.0 } else { rng.uni() }).collect();
                let mut q = Owned::new(rows, cols, &f, 0);
                quantize(&w, rows, cols, &f, q.parts_mut()).unwrap();
                let mut deq = vec![0.0f32; rows * cols];
                dequantize(&q.parts(), rows, cols, &f, &mut deq);
                let dy: Vec<f32> = (0..n * rows).map(|_| rng.uni()).collect();
                let mut want = vec![0.0f32; n * cols];
                dequantize_matmul_t_reference(&dy, n, &q.parts(), rows, cols, &f, &mut want);
                // tolerance: relative to sum |dy * w| of each output
                let mut scale = vec![0.0f64; n * cols];
                for i in 0..n {
                    for r in 0..rows {
                        for c in 0..cols {
                            scale[i * cols + c] += (dy[i * rows + r] as f64 * deq[r * cols + c] as f64).abs();
                        }
                    }
                }
                let mut whole = vec![f32::NAN; n * cols];
                dequantize_matmul_t(&dy, n, &q.parts(), rows, cols, &f, &mut whole);
                for (pname, run) in paths() {
                    let mut got = vec![f32::NAN; n * cols];
                    run(&dy, n, &q.parts(), rows, cols, &f, 0, cols, &mut got);
                    for k in 0..want.len() {
                        let err = (want[k] as f64 - got[k] as f64).abs();
                        worst = worst.max(if scale[k] > 0.0 { err / scale[k] } else { err });
                        assert!(err <= 1e-5 * scale[k] + 1e-30, "{} {:?} n={} {}x{} k={}: want {} got {}", pname, f, n, rows, cols, k, want[k], got[k]);
                    }
                }
                assert!(whole.iter().all(|v| !v.is_nan()), "{:?} {}x{}: dispatch wrote every element", f, rows, cols);
            }
        }
        println!("dequantize_matmul_t: worst |got - want| / sum|dy*w| = {:e}", worst);
    }

    #[test]
    fn column_ranges_are_bit_identical_to_the_whole_call() {
        let mut rng = Rng(77);
        let fs = [
            Format { kind: Kind::Nf, bits: 2, group: 64, double_quant: true, symmetric: false },
            Format { kind: Kind::Nf, bits: 3, group: 7, double_quant: false, symmetric: false },
            Format { kind: Kind::Int, bits: 4, group: 32, double_quant: false, symmetric: false },
            Format { kind: Kind::Int, bits: 2, group: 100, double_quant: false, symmetric: true },
        ];
        for f in fs {
            for &(n, rows, cols) in &[(7usize, 45usize, 300usize), (13, 70, 257), (1, 3, 64)] {
                let w: Vec<f32> = (0..rows * cols).map(|_| rng.uni()).collect();
                let mut q = Owned::new(rows, cols, &f, 0);
                quantize(&w, rows, cols, &f, q.parts_mut()).unwrap();
                let dy: Vec<f32> = (0..n * rows).map(|_| rng.uni()).collect();
                for (pname, run) in paths() {
                    let mut whole = vec![f32::NAN; n * cols];
                    run(&dy, n, &q.parts(), rows, cols, &f, 0, cols, &mut whole);
                    // cuts at every kind of multiple of 32, including ones inside a 128-column chunk
                    for cuts in [vec![0, 32, cols], vec![0, 96, 160, cols], vec![0, 64, 128, 192, 224, 256, cols]] {
                        let cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(cols)).collect();
                        let mut pieces = vec![f32::NAN; n * cols];
                        for w in cuts.windows(2) {
                            run(&dy, n, &q.parts(), rows, cols, &f, w[0], w[1], &mut pieces);
                        }
                        assert!(bits_eq(&whole, &pieces), "{} {:?} {}x{}x{} cuts {:?}", pname, f, n, rows, cols, cuts);
                    }
                    // a range writes only its columns
                    if cols >= 64 {
                        let mut one = vec![f32::NAN; n * cols];
                        run(&dy, n, &q.parts(), rows, cols, &f, 32, 64, &mut one);
                        for i in 0..n {
                            for c in 0..cols {
                                let v = one[i * cols + c];
                                assert!(if (32..64).contains(&c) { v.to_bits() == whole[i * cols + c].to_bits() } else { v.is_nan() });
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn empty_shapes() {
        let f = Format { kind: Kind::Nf, bits: 4, group: 64, double_quant: true, symmetric: false };
        // rows = 0: dx is all zeros
        let q = Owned::new(0, 70, &f, 0);
        let mut out = vec![f32::NAN; 3 * 70];
        dequantize_matmul_t(&[], 3, &q.parts(), 0, 70, &f, &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
        // n = 0 and cols = 0: nothing to write
        let q = Owned::new(5, 70, &f, 0);
        dequantize_matmul_t(&[], 0, &q.parts(), 5, 70, &f, &mut []);
        let q = Owned::new(5, 0, &f, 0);
        dequantize_matmul_t(&[0.0; 10], 2, &q.parts(), 5, 0, &f, &mut []);
    }

    /// `cargo test --release bench_matmul_t -- --ignored --nocapture`: the fused backward vs
    /// dequantize + a plain matmul (what the old backward ran), one thread.
    #[test]
    #[ignore]
    fn bench_matmul_t() {
        use crate::matmul::{matmul, MatmulDims};
        use std::time::Instant;
        let mut rng = Rng(5);
        let f = Format { kind: Kind::Nf, bits: 2, group: 64, double_quant: true, symmetric: false };
        for &(n, rows, cols) in &[(128usize, 576usize, 1536usize), (512, 1536, 576), (512, 576, 1536)] {
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.uni()).collect();
            let mut q = Owned::new(rows, cols, &f, 0);
            quantize(&w, rows, cols, &f, q.parts_mut()).unwrap();
            let dy: Vec<f32> = (0..n * rows).map(|_| rng.uni()).collect();
            let d = MatmulDims { batch: 1, m: n, k: rows, n: cols, trans_a: false, trans_b: false, a_batch_stride: 0, b_batch_stride: 0 };
            let mut out = vec![0.0f32; n * cols];
            // interleaved runs (the same background load on both); median and best of 21
            let (mut fused, mut old) = (Vec::new(), Vec::new());
            for _ in 0..21 {
                let t = Instant::now();
                dequantize_matmul_t(&dy, n, &q.parts(), rows, cols, &f, &mut out);
                fused.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                let mut wf = vec![0.0f32; rows * cols];
                dequantize(&q.parts(), rows, cols, &f, &mut wf);
                matmul(&dy, &wf, &d, &mut out);
                old.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let stats = |mut v: Vec<f64>| {
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                (v[v.len() / 2], v[0])
            };
            let (fused, old) = (stats(fused), stats(old));
            println!("nf2-g64-dq dx [{}, {}] = dy · W[{}, {}]: fused {:.2} ms (best {:.2}), dequantize + matmul {:.2} ms (best {:.2})", n, cols, rows, cols, fused.0, fused.1, old.0, old.1);
        }
    }
}
