//! The AVX-512 tiles against `matmul_reference`, and under the pool's 2-D split; each test is
//! skipped with a note when the CPU lacks AVX-512F. Benchmarks (single thread: 4-wide, AVX2,
//! AVX-512 tiles and blockings; all threads: row strips vs the 2-D grid):
//! `cargo test --release --features avx512 bench_avx512 -- --ignored --nocapture`.

use super::kernel::{MicroKernel, K4x8};
use super::tests::{gflops, random};
use super::x86::K6x16;
use super::x86_512::alt::{K14x32, K6x64};
use super::x86_512::{avx512, K12x32};
use super::x86_tests::{awkward_sizes, batches_and_rows, check_entry_points, dims, run_case, split_grid_bit_identical, tiny_blocks, TRANSPOSES};
use super::*;

fn skip(what: &str) -> bool {
    if avx512() {
        return false;
    }
    eprintln!("{}: this CPU has no AVX-512F, skipped", what);
    true
}

const PACKED: Blocking = Blocking { small_m: 0, small_m_tb: 0, ..Blocking::AVX512 };

/// K12x32 packed (small path off) and dispatched on every awkward size combination and transpose.
#[test]
fn avx512_matches_reference_awkward_sizes() {
    if skip("avx512_matches_reference_awkward_sizes") {
        return;
    }
    awkward_sizes::<K12x32>(&PACKED, &Blocking::AVX512, "avx512 12x32");
}

/// The other tiles (benchmark candidates) on edge shapes: tails in m of every residue of 14 and
/// 6, in n of 32 and 64.
#[test]
fn avx512_alt_tiles_match_reference() {
    if skip("avx512_alt_tiles_match_reference") {
        return;
    }
    let mut seed = 4u64;
    for &m in &[1usize, 5, 6, 13, 14, 15, 29, 100] {
        for &(k, n) in &[(1usize, 1usize), (33, 31), (100, 32), (257, 65), (17, 130), (600, 64)] {
            for &(ta, tb) in TRANSPOSES {
                let d = dims(1, m, k, n, ta, tb);
                run_case::<K14x32>(&d, 0, m, &PACKED, &mut seed, "avx512 14x32");
                run_case::<K6x64>(&d, 0, m, &PACKED, &mut seed, "avx512 6x64");
                run_case::<K12x32>(&d, 0, m, &PACKED, &mut seed, "avx512 12x32");
            }
        }
    }
}

/// Tiny blocks: many kc slices (C accumulated across them), mc and nc edges; every tile.
#[test]
fn avx512_tiny_blocks() {
    if skip("avx512_tiny_blocks") {
        return;
    }
    let blks = [
        Blocking { kc: 7, mc: 12, nc: 32, small_m: 0, small_m_tb: 0 },
        Blocking { kc: 16, mc: 24, nc: 96, small_m: 0, small_m_tb: 0 },
        Blocking { kc: 1, mc: 1, nc: 1, small_m: 0, small_m_tb: 0 },
    ];
    tiny_blocks::<K12x32>(&blks, "avx512 12x32");
    tiny_blocks::<K14x32>(&blks, "avx512 14x32");
    tiny_blocks::<K6x64>(&blks, "avx512 6x64");
}

/// Batches (own strides, broadcast A or B, the folded shared-B case) and row ranges.
#[test]
fn avx512_batches_and_rows() {
    if skip("avx512_batches_and_rows") {
        return;
    }
    let mut seed = 9u64;
    for blk in [PACKED, Blocking::AVX512] {
        batches_and_rows::<K12x32>(&blk, &mut seed, "avx512");
    }
    // the public entry points dispatch to it
    let d = MatmulDims { a_batch_stride: 0, ..dims(2, 65, 130, 70, true, false) };
    assert_eq!(plan(&d).kernel, "avx512 12x32");
    assert_eq!((plan(&d).mr, plan(&d).nr), (K12x32::MR, K12x32::NR));
    check_entry_points(&mut seed);
}

/// The AVX-512 kernel under the pool's 2-D split: bit-identical to one call.
#[test]
fn avx512_split_grid_bit_identical() {
    if skip("avx512_split_grid_bit_identical") {
        return;
    }
    for blk in [Blocking::AVX512, Blocking { kc: 7, mc: 24, nc: 64, ..Blocking::AVX512 }] {
        split_grid_bit_identical::<K12x32>(&blk, "avx512");
    }
}

struct Ptr(*mut f32);
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

/// GFLOP/s of one matmul split into `rects` over as many scoped threads (best of 20 calls).
fn threaded<K: MicroKernel>(d: &MatmulDims, blk: &Blocking, rects: &[(usize, usize, usize, usize)]) -> f64 {
    let mut seed = 1u64;
    let (a, b) = (random(d.a_len(), &mut seed), random(d.b_len(), &mut seed));
    let mut out = vec![0f32; d.out_len()];
    let p = Ptr(out.as_mut_ptr());
    let (a, b, p) = (&a[..], &b[..], &p);
    let mut best = f64::INFINITY;
    for _ in 0..21 {
        let t = std::time::Instant::now();
        std::thread::scope(|sc| {
            for &(r0, r1, j0, j1) in rects {
                // SAFETY: the rectangles are disjoint; `out` outlives the scope.
                sc.spawn(move || unsafe { block::<K>(a, b, d, 0, r0, r1, j0, j1, p.0, blk) });
            }
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (d.m * d.k * d.n) as f64 / best / 1e9
}

/// Single thread: the 4-wide K4x8, AVX2 K6x16 and the AVX-512 tiles; K12x32 blockings; then all
/// threads: row strips vs the 2-D grid (`split_grid`), AVX2 and AVX-512.
#[test]
#[ignore]
fn bench_avx512_matmul() {
    if skip("bench_avx512_matmul") {
        return;
    }
    for &(m, k, n, tb) in &[(1024usize, 1024usize, 1024usize, false), (1024, 1024, 1024, true), (512, 512, 512, false), (128, 576, 1536, false)] {
        let d = dims(1, m, k, n, false, tb);
        let g4 = gflops(&d, &mut |a, b, o| gemm::<K4x8>(a, b, &d, 0, m, o, &Blocking::DEFAULT));
        let g8 = gflops(&d, &mut |a, b, o| gemm::<K6x16>(a, b, &d, 0, m, o, &Blocking::AVX2));
        let g12 = gflops(&d, &mut |a, b, o| gemm::<K12x32>(a, b, &d, 0, m, o, &Blocking::AVX512));
        let blk14 = Blocking { mc: 140, ..Blocking::AVX512 };
        let g14 = gflops(&d, &mut |a, b, o| gemm::<K14x32>(a, b, &d, 0, m, o, &blk14));
        let g6 = gflops(&d, &mut |a, b, o| gemm::<K6x64>(a, b, &d, 0, m, o, &Blocking { mc: 96, ..Blocking::AVX512 }));
        println!(
            "1 thread {}x{}x{} tB={}: K4x8 {:6.1}  AVX2 K6x16 {:6.1}  AVX-512 K12x32 {:6.1} (x{:.2} AVX2)  K14x32 {:6.1}  K6x64 {:6.1} GFLOP/s",
            m, k, n, tb as u8, g4, g8, g12, g12 / g8, g14, g6
        );
    }
    let d = dims(1, 1024, 1024, 1024, false, false);
    for &(kc, mc, nc) in &[(256usize, 96usize, 2048usize), (256, 144, 2048), (384, 144, 2048), (384, 96, 2048), (512, 96, 2048), (512, 144, 2048), (384, 240, 4096), (256, 288, 1024)] {
        let blk = Blocking { kc, mc, nc, ..Blocking::AVX512 };
        let g = gflops(&d, &mut |a, b, o| gemm::<K12x32>(a, b, &d, 0, d.m, o, &blk));
        println!("1 thread K12x32 kc {} mc {} nc {} 1024^3: {:6.1} GFLOP/s", kc, mc, nc, g);
    }
    let t = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    for &(m, k, n) in &[(1024usize, 1024usize, 1024usize), (2048, 2048, 2048), (256, 1024, 1024)] {
        let d = dims(1, m, k, n, false, false);
        let p512 = plan_with(&d, &Blocking::AVX512, 12, 32, "");
        let p2 = plan_with(&d, &Blocking::AVX2, 6, 16, "");
        let strips = |mr: usize| split_grid(m, n, &MatmulPlan { small: false, mr, nr: n, kernel: "" }, t);
        let (g512s, g512g) = (threaded::<K12x32>(&d, &Blocking::AVX512, &strips(12)), threaded::<K12x32>(&d, &Blocking::AVX512, &split_grid(m, n, &p512, t)));
        let (g2s, g2g) = (threaded::<K6x16>(&d, &Blocking::AVX2, &strips(6)), threaded::<K6x16>(&d, &Blocking::AVX2, &split_grid(m, n, &p2, t)));
        println!(
            "{} threads {}x{}x{}: AVX2 strips {:6.1} grid {:6.1} | AVX-512 strips {:6.1} grid {:6.1} GFLOP/s ({} grid pieces)",
            t, m, k, n, g2s, g2g, g512s, g512g, split_grid(m, n, &p512, t).len()
        );
    }
}

/// K12x32 blockings at 1024³, and AVX2 vs AVX-512, single thread: three interleaved rounds, best
/// of each (a shared VM's noise moves single measurements by 20%).
#[test]
#[ignore]
fn bench_avx512_blocking() {
    if skip("bench_avx512_blocking") {
        return;
    }
    let d = dims(1, 1024, 1024, 1024, false, false);
    let cfgs: &[(usize, usize, usize)] = &[(256, 96, 2048), (256, 144, 2048), (256, 192, 2048), (320, 96, 2048), (384, 96, 2048), (384, 144, 2048), (384, 192, 2048), (512, 96, 2048), (512, 144, 2048), (768, 96, 2048), (384, 96, 1024)];
    let mut best = vec![0f64; cfgs.len() + 2];
    for _ in 0..3 {
        for (i, &(kc, mc, nc)) in cfgs.iter().enumerate() {
            let blk = Blocking { kc, mc, nc, ..Blocking::AVX512 };
            best[i] = best[i].max(gflops(&d, &mut |a, b, o| gemm::<K12x32>(a, b, &d, 0, d.m, o, &blk)));
        }
        let n = cfgs.len();
        best[n] = best[n].max(gflops(&d, &mut |a, b, o| gemm::<K6x16>(a, b, &d, 0, d.m, o, &Blocking::AVX2)));
        best[n + 1] = best[n + 1].max(gflops(&d, &mut |a, b, o| gemm::<K12x32>(a, b, &d, 0, d.m, o, &Blocking::AVX512)));
    }
    for (i, &(kc, mc, nc)) in cfgs.iter().enumerate() {
        println!("1 thread K12x32 kc {} mc {} nc {} 1024^3: {:6.1} GFLOP/s", kc, mc, nc, best[i]);
    }
    let n = cfgs.len();
    println!("1 thread 1024^3 best of 3 rounds: AVX2 K6x16 {:6.1}, AVX-512 K12x32 {:?} {:6.1} GFLOP/s (x{:.2})", best[n], Blocking::AVX512, best[n + 1], best[n + 1] / best[n]);
}
