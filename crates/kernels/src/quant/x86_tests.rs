//! The AVX2 dequantize-matmul paths against the scalar reference (skipped without AVX2+FMA), and
//! their benchmark: `cargo test --release bench_avx2_quant -- --ignored --nocapture`.

use super::owned::Owned;
use super::tests::{all_formats, Rng};
use super::*;

fn avx2() -> bool {
    crate::matmul::x86::avx2_fma()
}

const AWKWARD: &[usize] = &[1, 7, 17, 33, 100, 257];

#[test]
fn avx2_dequantize_matmul_matches_reference() {
    if !avx2() {
        eprintln!("no AVX2+FMA: skipped");
        return;
    }
    let mut rng = Rng(99);
    let mut formats = all_formats();
    for &(kind, sym) in &[(Kind::Nf, false), (Kind::Int, true), (Kind::Int, false)] {
        formats.push(Format { kind, bits: 4, group: 96, double_quant: kind == Kind::Nf, symmetric: sym });
    }
    let mut checked = 0;
    for f in formats {
        for &rows in &[1usize, 7, 17, 33] {
            for &cols in AWKWARD {
                let w: Vec<f32> = (0..rows * cols).map(|i| if i % 11 == 3 { 0.0 } else { rng.uni() }).collect();
                let mut q = Owned::new(rows, cols, &f, 0);
                quantize(&w, rows, cols, &f, q.parts_mut()).unwrap();
                let p = q.parts();
                let mut deq = vec![0.0f32; rows * cols];
                dequantize(&p, rows, cols, &f, &mut deq);
                for &x_rows in &[1usize, 2, 3, 7] {
                    let x: Vec<f32> = (0..x_rows * cols).map(|_| rng.uni()).collect();
                    let mut want = vec![0.0f32; x_rows * rows];
                    dequantize_matmul_reference(&x, x_rows, &p, rows, cols, &f, &mut want);
                    let mag: Vec<f64> = (0..x_rows * rows)
                        .map(|o| (0..cols).map(|c| (x[o / rows * cols + c] as f64 * deq[o % rows * cols + c] as f64).abs()).sum())
                        .collect();
                    let cmp = |got: &[f32], what: &str| {
                        for o in 0..want.len() {
                            let err = (got[o] as f64 - want[o] as f64).abs();
                            assert!(err <= 1e-5 * mag[o] + 1e-30, "{} {:?} {}x{} x_rows={} o={}: got {} want {}", what, f, rows, cols, x_rows, o, got[o], want[o]);
                        }
                    };
                    // the public entry (dispatched), the AVX2 panels on every shape, gemv4 where it applies
                    let mut got = vec![f32::NAN; x_rows * rows];
                    dequantize_matmul(&x, x_rows, &p, rows, cols, &f, &mut got);
                    cmp(&got, "dispatched");
                    let mut got = vec![f32::NAN; x_rows * rows];
                    unsafe { super::x86::panels(&x, x_rows, &p, rows, cols, &f, 0, rows, &mut got) };
                    cmp(&got, "avx2 panels");
                    if x_rows == 1 && f.bits == 4 && f.group % 32 == 0 {
                        let mut got = vec![f32::NAN; rows];
                        unsafe { super::x86::gemv4(&x, &p, cols, &f, 0, rows, &mut got) };
                        cmp(&got, "avx2 gemv4");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0);
}

/// Larger shapes: several panels and chunks, row ranges written alone.
#[test]
fn avx2_dequantize_matmul_rows_large() {
    if !avx2() {
        return;
    }
    let mut rng = Rng(5);
    for f in all_formats().into_iter().filter(|f| f.group >= 32 || f.bits == 4) {
        let (rows, cols) = (37usize, 600usize);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.uni()).collect();
        let mut q = Owned::new(rows, cols, &f, 0);
        quantize(&w, rows, cols, &f, q.parts_mut()).unwrap();
        let p = q.parts();
        for &x_rows in &[1usize, 5] {
            let x: Vec<f32> = (0..x_rows * cols).map(|_| rng.uni()).collect();
            let mut want = vec![0.0f32; x_rows * rows];
            dequantize_matmul_reference(&x, x_rows, &p, rows, cols, &f, &mut want);
            let mut full = vec![0.0f32; x_rows * rows];
            dequantize_matmul(&x, x_rows, &p, rows, cols, &f, &mut full);
            let mut part = vec![-7.0f32; x_rows * rows];
            for &(a, b) in &[(0usize, 5usize), (5, 21), (21, 37)] {
                dequantize_matmul_rows(&x, x_rows, &p, rows, cols, &f, a, b, &mut part);
            }
            for o in 0..want.len() {
                assert_eq!(part[o].to_bits(), full[o].to_bits(), "{:?} rows split", f);
                let tol = 1e-4 * (1.0 + want[o].abs()) as f64 * (cols as f64).sqrt();
                assert!(((full[o] - want[o]) as f64).abs() <= tol, "{:?} x_rows {} o {}: {} vs {}", f, x_rows, o, full[o], want[o]);
            }
        }
    }
}

fn ms<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = std::time::Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    best
}

/// 4096 x 4096: one token (GB/s of packed code bytes) and 64 tokens, 4-wide path vs AVX2.
#[test]
#[ignore]
fn bench_avx2_quant() {
    if !avx2() {
        return;
    }
    let (rows, cols) = (4096usize, 4096usize);
    let mut rng = Rng(0x1234_5678_9abc_def0);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.uni() * 0.05).collect();
    let x: Vec<f32> = (0..64 * cols).map(|_| rng.uni()).collect();
    for f in [
        Format { kind: Kind::Nf, bits: 4, group: 64, double_quant: true, symmetric: false },
        Format { kind: Kind::Nf, bits: 4, group: 64, double_quant: false, symmetric: false },
        Format { kind: Kind::Int, bits: 4, group: 64, double_quant: false, symmetric: false },
        Format { kind: Kind::Nf, bits: 3, group: 64, double_quant: true, symmetric: false },
    ] {
        let mut q = Owned::new(rows, cols, &f, 0);
        quantize(&w, rows, cols, &f, q.parts_mut()).unwrap();
        let p = q.parts();
        let gb = p.codes.len() as f64 / 1e9;
        let mut out = vec![0f32; 64 * rows];
        let x1 = &x[..cols];
        let t1_old = ms(20, || super::matmul::gemv_portable(x1, &p, cols, &f, 0, rows, &mut out[..rows]));
        let t1_new = ms(20, || dequantize_matmul(x1, 1, &p, rows, cols, &f, &mut out[..rows]));
        let t64_old = ms(3, || super::matmul::panels(&x, 64, &p, rows, cols, &f, 0, rows, &mut out));
        let t64_new = ms(3, || unsafe { super::x86::panels(&x, 64, &p, rows, cols, &f, 0, rows, &mut out) });
        let t4_old = ms(5, || super::matmul::panels(&x[..4 * cols], 4, &p, rows, cols, &f, 0, rows, &mut out[..4 * rows]));
        let t4_new = ms(5, || unsafe { super::x86::panels(&x[..4 * cols], 4, &p, rows, cols, &f, 0, rows, &mut out[..4 * rows]) });
        println!(
            "{:?}{} g{}{}: 1 tok {:.2} ms ({:.1} GB/s) -> {:.2} ms ({:.1} GB/s); 4 tok {:.1} -> {:.1} ms; 64 tok {:.1} -> {:.1} ms ({:.1} -> {:.1} GFLOP/s)",
            f.kind, f.bits, f.group, if f.dq() { " dq" } else { "" },
            t1_old, gb / t1_old * 1e3, t1_new, gb / t1_new * 1e3, t4_old, t4_new, t64_old, t64_new,
            2.0 * 64.0 * (rows * cols) as f64 / t64_old / 1e6, 2.0 * 64.0 * (rows * cols) as f64 / t64_new / 1e6
        );
    }
}

/// The SSE2 `int_codes8` / `nf_codes16` (simd_portable.rs on x86-64) against the scalar formulas
/// of the reference, on ties, signed zeros, clamps and huge quotients.
#[test]
fn sse2_code_helpers_match_scalar() {
    use super::simd::{int_codes8, nf_codes16};
    use super::tables::round_half_away;
    let mut xs: Vec<f32> = vec![0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 7.5, -7.5, 8.5, -8.5, 1e30, -1e30, f32::MAX, f32::MIN, 1e-40, -1e-40, 3.4999998, -3.4999998];
    let mut rng = Rng(99);
    for _ in 0..4000 {
        xs.push(rng.uni() * 10.0);
    }
    xs.truncate(xs.len() / 16 * 16);
    for &s in &[1.0f64, 0.5, 0.1, 3.0, 1e-30, 1e30, f32::from_bits(1) as f64] {
        for &(z, mq) in &[(0.0f64, 15.0f64), (7.0, 15.0), (8.0, 15.0), (1.0, 3.0), (3.0, 7.0), (15.0, 15.0)] {
            for c in xs.chunks(8) {
                let mut got = [0u8; 8];
                unsafe { int_codes8(c.as_ptr(), s, z, mq, got.as_mut_ptr()) };
                for i in 0..8 {
                    let want = (round_half_away(c[i] as f64 / s) + z).max(0.0).min(mq) as u8;
                    assert_eq!(got[i], want, "x {} s {} z {} maxq {}", c[i], s, z, mq);
                }
            }
        }
    }
    for bits in [2u32, 3, 4] {
        let t = nf_table(bits);
        let th = &t.thresholds[..t.len - 1];
        for &inv in &[1.0f32, 0.1, 0.37, 3.0, 1e-3] {
            for c in xs.chunks(16) {
                let mut got = [0u8; 16];
                unsafe { nf_codes16(c.as_ptr(), inv, th, got.as_mut_ptr()) };
                for i in 0..16 {
                    let n = c[i] * inv;
                    let want = th.iter().fold(0u8, |k, &t| k + (n > t) as u8);
                    assert_eq!(got[i], want, "x {} inv {} bits {}", c[i], inv, bits);
                }
            }
        }
    }
}

/// 8192 x 8192 NF4 double-quant g64 (and INT4 g64), one token, gemv4 on one thread: GB/s of
/// packed code bytes, against a plain streaming read of the same bytes.
#[test]
#[ignore]
fn bench_avx2_gemv4_8k() {
    if !avx2() {
        return;
    }
    let rows: usize = std::env::var("GEMV_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(8192);
    let cols = 8192usize;
    let mut rng = Rng(0x1234_5678_9abc_def0);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.uni() * 0.05).collect();
    let x: Vec<f32> = (0..cols).map(|_| rng.uni()).collect();
    for f in [
        Format { kind: Kind::Nf, bits: 4, group: 64, double_quant: true, symmetric: false },
        Format { kind: Kind::Int, bits: 4, group: 64, double_quant: false, symmetric: false },
    ] {
        let mut q = Owned::new(rows, cols, &f, 0);
        quantize(&w, rows, cols, &f, q.parts_mut()).unwrap();
        let p = q.parts();
        let gb = p.codes.len() as f64 / 1e9;
        let mut out = vec![0f32; rows];
        let t = ms(if rows < 1024 { 200 } else { 10 }, || unsafe { super::x86::gemv4(&x, &p, cols, &f, 0, rows, &mut out) });
        let mut sink = 0u64;
        let tr = ms(10, || {
            let mut s = 0u64;
            for c in p.codes.chunks_exact(8) {
                s = s.wrapping_add(u64::from_le_bytes(c.try_into().unwrap()));
            }
            sink = sink.wrapping_add(s);
        });
        println!("gemv4 8k {:?}{}: {:.2} ms ({:.1} GB/s); read {:.1} GB/s ({})", f.kind, if f.dq() { " dq" } else { "" }, t, gb / t * 1e3, gb / tr * 1e3, sink % 2);
    }
}
