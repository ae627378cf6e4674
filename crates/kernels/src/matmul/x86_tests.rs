//! The AVX2+FMA tile against `matmul_reference` (skipped when the CPU lacks AVX2/FMA), and its
//! benchmark: `cargo test --release bench_avx2 -- --ignored --nocapture`.

use super::kernel::{MicroKernel, K4x8};
use super::tests::{check_grid, gflops, random};
use super::x86::{avx2_fma, K6x16};
use super::*;


/// |got − want| ≤ 1e-5·Σ_p|a·b| per element (as tests.rs), for rows [r0, r1) of every batch;
/// the other rows must still hold their sentinel.
pub(super) fn check(a: &[f32], b: &[f32], d: &MatmulDims, r0: usize, r1: usize, got: &[f32], what: &str) {
    let mut want = vec![0f32; d.out_len()];
    matmul_reference(a, b, d, &mut want);
    let (ars, acs, brs, bcs) = d.strides();
    for s in 0..d.batch {
        for i in 0..d.m {
            for j in 0..d.n {
                let idx = (s * d.m + i) * d.n + j;
                if i < r0 || i >= r1 {
                    assert_eq!(got[idx].to_bits(), 12345.0f32.to_bits(), "{} {:?}: row {} outside [{}, {}) written", what, d, i, r0, r1);
                    continue;
                }
                let mut mag = 0f64;
                for p in 0..d.k {
                    let x = a[s * d.a_batch_stride + i * ars + p * acs] as f64;
                    let y = b[s * d.b_batch_stride + p * brs + j * bcs] as f64;
                    mag += (x * y).abs();
                }
                let (g, w) = (got[idx] as f64, want[idx] as f64);
                assert!((g - w).abs() <= 1e-5 * mag + 1e-30, "{} {:?}: element {}: got {} want {}", what, d, idx, g, w);
            }
        }
    }
}

/// One gemm::<K> over rows [r0, r1) of random a, b, checked by `check`.
pub(super) fn run_case<K: MicroKernel>(d: &MatmulDims, r0: usize, r1: usize, blk: &Blocking, seed: &mut u64, what: &str) {
    let a = random(d.a_len(), seed);
    let b = random(d.b_len(), seed);
    let mut got = vec![12345.0f32; d.out_len()];
    gemm::<K>(&a, &b, d, r0, r1, &mut got, blk);
    check(&a, &b, d, r0, r1.min(d.m), &got, what);
}

/// Batches (own strides, broadcast A or B, the folded shared-B case) and row ranges, K under blk.
pub(super) fn batches_and_rows<K: MicroKernel>(blk: &Blocking, seed: &mut u64, what: &str) {
    for &(m, k, n) in &[(100usize, 33usize, 17usize), (7, 257, 100), (257, 17, 33), (33, 100, 7)] {
        for &(ta, tb) in TRANSPOSES {
            for &(abs, bbs) in &[(m * k, k * n), (0, k * n), (m * k, 0), (m * k + 3, k * n + 5)] {
                let d = MatmulDims { batch: 3, a_batch_stride: abs, b_batch_stride: bbs, ..dims(3, m, k, n, ta, tb) };
                run_case::<K>(&d, 0, m, blk, seed, &format!("{} batch", what));
                for &(r0, r1) in &[(1usize, m - m / 3), (m / 2, m), (0, 1), (m - 1, m + 4)] {
                    run_case::<K>(&d, r0, r1, blk, seed, &format!("{} rows", what));
                }
            }
        }
    }
}

/// The public entry points (matmul_rows, matmul), dispatched to whatever kernel the CPU picks.
pub(super) fn check_entry_points(seed: &mut u64) {
    let d = MatmulDims { a_batch_stride: 0, ..dims(2, 65, 130, 70, true, false) };
    let a = random(d.a_len(), seed);
    let b = random(d.b_len(), seed);
    let mut got = vec![12345.0f32; d.out_len()];
    matmul_rows(&a, &b, &d, 10, 50, &mut got);
    check(&a, &b, &d, 10, 50, &got, "matmul_rows");
    matmul(&a, &b, &d, &mut got);
    check(&a, &b, &d, 0, d.m, &got, "matmul");
}

pub(super) fn dims(batch: usize, m: usize, k: usize, n: usize, ta: bool, tb: bool) -> MatmulDims {
    MatmulDims { batch, m, k, n, trans_a: ta, trans_b: tb, a_batch_stride: m * k, b_batch_stride: k * n }
}

pub(super) const AWKWARD: &[usize] = &[1, 7, 17, 33, 100, 257];
pub(super) const TRANSPOSES: &[(bool, bool)] = &[(false, false), (false, true), (true, false), (true, true)];

/// K with `packed` (small path off) and with `default` on every awkward size combination and
/// transpose (the default only where it differs: small m, one larger shape).
pub(super) fn awkward_sizes<K: MicroKernel>(packed: &Blocking, default: &Blocking, what: &str) {
    let mut seed = 3u64;
    for &m in AWKWARD {
        for &k in AWKWARD {
            for &n in AWKWARD {
                for &(ta, tb) in TRANSPOSES {
                    let d = dims(1, m, k, n, ta, tb);
                    run_case::<K>(&d, 0, m, packed, &mut seed, &format!("{} packed", what));
                    if m <= 17 || (k == 33 && n == 100) {
                        run_case::<K>(&d, 0, m, default, &mut seed, &format!("{} default", what));
                    }
                }
            }
        }
    }
}

/// Tiny blocks: many kc slices (C accumulated across them), mc and nc edges.
pub(super) fn tiny_blocks<K: MicroKernel>(blks: &[Blocking], what: &str) {
    let mut seed = 5u64;
    for blk in blks {
        for &(m, k, n) in &[(17usize, 33usize, 100usize), (100, 7, 17), (7, 257, 33), (33, 100, 257)] {
            for &(ta, tb) in TRANSPOSES {
                run_case::<K>(&dims(1, m, k, n, ta, tb), 0, m, blk, &mut seed, &format!("{} tiny blocks", what));
            }
        }
    }
}

/// K under blk and the pool's 2-D split (tests::check_grid): bit-identical to one call.
pub(super) fn split_grid_bit_identical<K: MicroKernel>(blk: &Blocking, what: &str) {
    check_grid(
        &|d| plan_with(d, blk, K::MR, K::NR, ""),
        &|a, b, d, o| gemm::<K>(a, b, d, 0, d.m, o, blk),
        // SAFETY: `o` is a live buffer of d.out_len() floats; one block at a time.
        &|a, b, d, s, r0, r1, j0, j1, o| unsafe { block::<K>(a, b, d, s, r0, r1, j0, j1, o, blk) },
        what,
    );
}

/// The packed AVX2 path (small path off) and the dispatched default, on every size combination
/// and transpose.
#[test]
fn avx2_matches_reference_awkward_sizes() {
    if !avx2_fma() {
        eprintln!("no AVX2+FMA: skipped");
        return;
    }
    awkward_sizes::<K6x16>(&Blocking { small_m: 0, small_m_tb: 0, ..Blocking::AVX2 }, &Blocking::AVX2, "avx2");
}

#[test]
fn avx2_tiny_blocks() {
    if !avx2_fma() {
        return;
    }
    let blks = [
        Blocking { kc: 7, mc: 6, nc: 16, small_m: 0, small_m_tb: 0 },
        Blocking { kc: 16, mc: 12, nc: 48, small_m: 0, small_m_tb: 0 },
        Blocking { kc: 1, mc: 1, nc: 1, small_m: 0, small_m_tb: 0 },
    ];
    tiny_blocks::<K6x16>(&blks, "avx2");
}

/// Batches (own strides, broadcast A or B, the folded shared-B case) and row ranges.
#[test]
fn avx2_batches_and_rows() {
    if !avx2_fma() {
        return;
    }
    let mut seed = 9u64;
    let packed = Blocking { small_m: 0, small_m_tb: 0, ..Blocking::AVX2 };
    for blk in [packed, Blocking::AVX2] {
        batches_and_rows::<K6x16>(&blk, &mut seed, "avx2");
    }
    check_entry_points(&mut seed);
}

/// The AVX2 kernel under the pool's 2-D split: bit-identical to one call.
#[test]
fn avx2_split_grid_bit_identical() {
    if !avx2_fma() {
        eprintln!("no AVX2+FMA: skipped");
        return;
    }
    for blk in [Blocking::AVX2, Blocking { kc: 7, mc: 12, nc: 32, ..Blocking::AVX2 }] {
        split_grid_bit_identical::<K6x16>(&blk, "avx2");
    }
}

/// GFLOP/s single-threaded: the 4-wide K4x8 path vs the AVX2 K6x16 path.
#[test]
#[ignore]
fn bench_avx2_matmul() {
    if !avx2_fma() {
        return;
    }
    for &(m, k, n, tb) in &[(1024usize, 1024usize, 1024usize, false), (512, 512, 512, false), (1024, 1024, 1024, true), (64, 576, 1536, false), (128, 576, 1536, false), (1, 4096, 4096, false)] {
        let d = dims(1, m, k, n, false, tb);
        let g4 = gflops(&d, &mut |a, b, o| gemm::<K4x8>(a, b, &d, 0, m, o, &Blocking::DEFAULT));
        let g8 = gflops(&d, &mut |a, b, o| gemm::<K6x16>(a, b, &d, 0, m, o, &Blocking::AVX2));
        println!("{}x{}x{} tB={}: 4-wide K4x8 {:6.2} GFLOP/s, AVX2 K6x16 {:6.2} GFLOP/s, x{:.2}", m, k, n, tb as u8, g4, g8, g8 / g4);
    }
}

#[test]
#[ignore]
fn bench_avx2_blocking() {
    if !avx2_fma() {
        return;
    }
    for &(kc, mc, nc) in &[(256usize, 120usize, 2048usize), (256, 72, 2048), (384, 96, 2048), (512, 96, 2048), (128, 120, 2048), (256, 240, 4096), (384, 120, 1024)] {
        let blk = Blocking { kc, mc, nc, ..Blocking::AVX2 };
        for &(m, k, n) in &[(1024usize, 1024usize, 1024usize), (128, 576, 1536)] {
            let d = dims(1, m, k, n, false, false);
            let g = gflops(&d, &mut |a, b, o| gemm::<K6x16>(a, b, &d, 0, m, o, &blk));
            println!("kc {} mc {} nc {} {}x{}x{}: {:6.2} GFLOP/s", kc, mc, nc, m, k, n, g);
        }
    }
    for &m in &[8usize, 16, 32, 64] {
        for &small in &[0usize, 1024] {
            for &tb in &[false, true] {
                let blk = Blocking { small_m: small, small_m_tb: small, ..Blocking::AVX2 };
                let d = dims(1, m, 576, 1536, false, tb);
                let g = gflops(&d, &mut |a, b, o| gemm::<K6x16>(a, b, &d, 0, m, o, &blk));
                println!("small path {} {}x576x1536 tB={}: {:6.2} GFLOP/s", small > 0, m, tb as u8, g);
            }
        }
    }
}
