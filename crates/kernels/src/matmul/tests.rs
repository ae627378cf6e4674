use super::kernel::alt::{K2x16, K3x12, K3x16, K4x12, K5x8, K6x8, K8x8};
use super::kernel::{K4x8, MicroKernel};
use super::*;

pub(crate) fn lcg_f32(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

pub(crate) fn random(len: usize, seed: &mut u64) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let v = lcg_f32(seed);
            // a few exact zeros (the reference skips them) and larger magnitudes
            if i % 17 == 5 { 0.0 } else if i % 29 == 3 { v * 100.0 } else { v }
        })
        .collect()
}

/// Σ_p |A(i,p)·B(p,j)| per output element: the scale the tolerance is relative to.
fn magnitude(a: &[f32], b: &[f32], d: &MatmulDims) -> Vec<f64> {
    let (ars, acs, brs, bcs) = d.strides();
    let mut mag = vec![0f64; d.out_len()];
    for s in 0..d.batch {
        for i in 0..d.m {
            for j in 0..d.n {
                let mut t = 0f64;
                for p in 0..d.k {
                    let x = a[s * d.a_batch_stride + i * ars + p * acs] as f64;
                    let y = b[s * d.b_batch_stride + p * brs + j * bcs] as f64;
                    t += (x * y).abs();
                }
                mag[(s * d.m + i) * d.n + j] = t;
            }
        }
    }
    mag
}

/// |got − want| ≤ 1e-5·Σ_p|a·b| (f32 accumulation against the f64 reference; k ≤ 300 here).
fn assert_close(got: &[f32], want: &[f32], mag: &[f64], _k: usize, what: &str) {
    let rel = 1e-5;
    for (idx, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = rel * mag[idx] + 1e-30;
        assert!(((g as f64) - (w as f64)).abs() <= tol, "{}: element {}: got {} want {} (tol {})", what, idx, g, w, tol);
    }
}

fn dims(batch: usize, m: usize, k: usize, n: usize, ta: bool, tb: bool, abs: Option<usize>, bbs: Option<usize>) -> MatmulDims {
    MatmulDims { batch, m, k, n, trans_a: ta, trans_b: tb, a_batch_stride: abs.unwrap_or(m * k), b_batch_stride: bbs.unwrap_or(k * n) }
}

fn check_case<F: Fn(&[f32], &[f32], &MatmulDims, &mut [f32])>(d: &MatmulDims, seed: &mut u64, f: F, what: &str) {
    let a = random(d.a_len(), seed);
    let b = random(d.b_len(), seed);
    let mut want = vec![0f32; d.out_len()];
    matmul_reference(&a, &b, d, &mut want);
    let mut got = vec![f32::NAN; d.out_len()];
    f(&a, &b, d, &mut got);
    assert_close(&got, &want, &magnitude(&a, &b, d), d.k, &format!("{} {:?}", what, d));
}

const SIZES: &[(usize, usize, usize)] = &[
    (1, 1, 1), (1, 7, 1), (2, 3, 5), (3, 1, 4), (4, 4, 4), (5, 9, 3), (6, 8, 8), (7, 13, 9), (8, 16, 8),
    (9, 17, 15), (12, 5, 16), (13, 31, 17), (1, 64, 33), (2, 37, 31), (3, 100, 7), (4, 3, 65), (5, 70, 12),
    (17, 1, 23), (31, 33, 29), (37, 257, 41), (64, 64, 64), (121, 19, 130), (7, 300, 25), (130, 5, 9),
];

/// Default blocking edges: several kc slices in the packed path, several B-row blocks in `small`.
const LARGE: &[(usize, usize, usize)] = &[(70, 600, 40), (5, 300, 300), (3, 1100, 70), (65, 9, 2100)];

#[test]
fn matmul_matches_reference_across_default_blocks() {
    let mut seed = 17u64;
    for &(m, k, n) in LARGE {
        for &ta in &[false, true] {
            for &tb in &[false, true] {
                let d = dims(1, m, k, n, ta, tb, None, None);
                check_case(&d, &mut seed, matmul, "matmul large");
            }
        }
    }
}

#[test]
fn matmul_matches_reference_all_transposes() {
    let mut seed = 7u64;
    for &(m, k, n) in SIZES {
        for &ta in &[false, true] {
            for &tb in &[false, true] {
                let d = dims(1, m, k, n, ta, tb, None, None);
                check_case(&d, &mut seed, matmul, "matmul");
            }
        }
    }
}

#[test]
fn matmul_batches_and_broadcast() {
    let mut seed = 11u64;
    for &(m, k, n) in &[(1usize, 5usize, 7usize), (3, 4, 5), (7, 9, 17), (9, 33, 10), (20, 21, 22)] {
        for &ta in &[false, true] {
            for &tb in &[false, true] {
                for &(abs, bbs) in &[(None, None), (Some(0), None), (None, Some(0)), (Some(0), Some(0)), (Some(m * k + 3), Some(k * n + 1))] {
                    let d = dims(3, m, k, n, ta, tb, abs, bbs);
                    check_case(&d, &mut seed, matmul, "batched");
                }
            }
        }
    }
}

#[test]
fn matmul_degenerate_shapes() {
    let mut seed = 3u64;
    for &(batch, m, k, n) in &[(0usize, 3usize, 4usize, 5usize), (2, 0, 3, 4), (2, 3, 0, 4), (2, 3, 4, 0), (1, 1, 0, 1)] {
        let d = dims(batch, m, k, n, false, false, None, None);
        check_case(&d, &mut seed, matmul, "degenerate");
    }
}

#[test]
fn matmul_rows_writes_only_its_rows() {
    let mut seed = 5u64;
    for &(m, k, n) in &[(13usize, 17usize, 19usize), (40, 9, 33), (3, 8, 8)] {
        for &ta in &[false, true] {
            for &tb in &[false, true] {
                let d = dims(2, m, k, n, ta, tb, None, Some(0));
                let a = random(d.a_len(), &mut seed);
                let b = random(d.b_len(), &mut seed);
                let mut want = vec![0f32; d.out_len()];
                matmul_reference(&a, &b, &d, &mut want);
                let mag = magnitude(&a, &b, &d);
                let mut got = vec![f32::NAN; d.out_len()];
                let cuts = [0, 1, m / 3, m / 2 + 1, m - 1, m];
                for w in cuts.windows(2) {
                    matmul_rows(&a, &b, &d, w[0], w[1].max(w[0]), &mut got);
                }
                assert_close(&got, &want, &mag, k, "matmul_rows pieces");
                let mut part = vec![f32::NAN; d.out_len()];
                matmul_rows(&a, &b, &d, 2, m.min(5), &mut part);
                for s in 0..2 {
                    for i in 0..m {
                        for j in 0..n {
                            let v = part[(s * m + i) * n + j];
                            assert_eq!(v.is_nan(), !(2..m.min(5)).contains(&i));
                        }
                    }
                }
            }
        }
    }
}

fn all_tiles_with(blk: Blocking, seed: &mut u64) {
    fn one<K: MicroKernel>(blk: Blocking, seed: &mut u64) {
        for &(m, k, n) in SIZES {
            for &ta in &[false, true] {
                for &tb in &[false, true] {
                    let d = dims(2, m, k, n, ta, tb, None, if m % 2 == 0 { Some(0) } else { None });
                    let name = format!("tile {}x{} {:?}", K::MR, K::NR, blk);
                    check_case(&d, seed, |a, b, d, o| gemm::<K>(a, b, d, 0, d.m, o, &blk), &name);
                }
            }
        }
    }
    one::<K4x8>(blk, seed);
    one::<K6x8>(blk, seed);
    one::<K4x12>(blk, seed);
    one::<K8x8>(blk, seed);
    one::<K3x16>(blk, seed);
    one::<K5x8>(blk, seed);
    one::<K2x16>(blk, seed);
    one::<K3x12>(blk, seed);
}

#[test]
fn every_tile_and_tiny_blocks_match_reference() {
    let mut seed = 13u64;
    // tiny blocks put kc, mc and nc edges inside every size above
    all_tiles_with(Blocking { kc: 7, mc: 13, nc: 20, small_m: 0, small_m_tb: 0 }, &mut seed);
    all_tiles_with(Blocking { kc: 64, mc: 24, nc: 48, small_m: 3, small_m_tb: 5 }, &mut seed);
}

#[test]
fn nan_and_inf_propagate() {
    let d = dims(1, 2, 3, 2, false, false, None, None);
    let a = [1.0, 2.0, 3.0, 1.0, f32::NAN, 1.0];
    let b = [1.0, 1.0, f32::INFINITY, 1.0, 1.0, 1.0];
    let mut want = vec![0f32; 4];
    let mut got = vec![0f32; 4];
    matmul_reference(&a, &b, &d, &mut want);
    matmul(&a, &b, &d, &mut got);
    assert_eq!(format!("{:?}", want), format!("{:?}", got));
    assert_eq!(want[0], f32::INFINITY);
    assert!(want[2].is_nan());
}

// ---- benchmarks: cargo test --release -- --ignored --nocapture bench_ ----

pub(crate) fn gflops(d: &MatmulDims, f: &mut dyn FnMut(&[f32], &[f32], &mut [f32])) -> f64 {
    let mut seed = 1u64;
    let a = random(d.a_len(), &mut seed);
    let b = random(d.b_len(), &mut seed);
    let mut out = vec![0f32; d.out_len()];
    let flop = 2.0 * (d.batch * d.m * d.k * d.n) as f64;
    f(&a, &b, &mut out); // warm-up
    let reps = ((2e9 / flop) as usize).max(1).min(50);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        for _ in 0..reps {
            f(&a, &b, &mut out);
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    flop / best / 1e9
}

const BENCH_SHAPES: &[(usize, usize, usize, bool, bool)] = &[
    (512, 512, 512, false, false),
    (512, 512, 512, true, true),
    (1024, 1024, 1024, false, false),
    (1, 4096, 4096, false, false),
    (1, 4096, 4096, false, true),
    (64, 576, 1536, false, false),
    (64, 576, 1536, false, true),
    (4, 4096, 4096, false, true),
];

#[test]
#[ignore]
fn bench_matmul() {
    println!("simd128: {}", crate::elementwise::simd::SIMD128);
    for &(m, k, n, ta, tb) in BENCH_SHAPES {
        let d = dims(1, m, k, n, ta, tb, None, None);
        let fast = gflops(&d, &mut |a, b, o| matmul(a, b, &d, o));
        let refr = if m * k * n <= 1 << 27 { gflops(&d, &mut |a, b, o| matmul_reference(a, b, &d, o)) } else { f64::NAN };
        println!("{:>5}x{:>5}x{:>5} tA={} tB={}: matmul {:6.2} GFLOP/s, reference {:5.2} GFLOP/s, x{:.1}", m, k, n, ta as u8, tb as u8, fast, refr, fast / refr);
    }
}

#[test]
#[ignore]
fn bench_tiles() {
    fn one<K: MicroKernel>(blk: Blocking) {
        for &(m, k, n) in &[(512usize, 512usize, 512usize), (1024, 1024, 1024), (64, 576, 1536)] {
            let d = dims(1, m, k, n, false, false, None, None);
            let g = gflops(&d, &mut |a, b, o| gemm::<K>(a, b, &d, 0, d.m, o, &blk));
            println!("tile {}x{:<2} {:?} {}x{}x{}: {:6.2} GFLOP/s", K::MR, K::NR, blk, m, k, n, g);
        }
    }
    let blk = Blocking::DEFAULT;
    for _ in 0..2 {
        one::<K4x8>(blk);
        one::<K6x8>(blk);
        one::<K4x12>(blk);
        one::<K8x8>(blk);
        one::<K3x16>(blk);
        one::<K5x8>(blk);
        one::<K2x16>(blk);
        one::<K3x12>(blk);
    }
}

#[test]
#[ignore]
fn bench_blocking() {
    for &(kc, mc, nc) in &[(128usize, 128usize, 2048usize), (256, 64, 2048), (256, 128, 2048), (256, 256, 2048), (384, 128, 2048), (512, 96, 1024), (256, 128, 512), (512, 256, 4096)] {
        let blk = Blocking { kc, mc, nc, ..Blocking::DEFAULT };
        for &(m, k, n) in &[(512usize, 512usize, 512usize), (1024, 1024, 1024), (64, 576, 1536)] {
            let d = dims(1, m, k, n, false, false, None, None);
            let g = gflops(&d, &mut |a, b, o| gemm::<Tile>(a, b, &d, 0, d.m, o, &blk));
            println!("{:?} {}x{}x{}: {:6.2} GFLOP/s", blk, m, k, n, g);
        }
    }
}

#[test]
#[ignore]
fn bench_small_m() {
    for &tb in &[false, true] {
        for &(m, k, n) in &[(1usize, 4096usize, 4096usize), (2, 4096, 4096), (4, 4096, 4096), (8, 4096, 4096), (16, 4096, 4096), (32, 4096, 4096), (64, 4096, 4096), (8, 576, 1536), (16, 576, 1536), (32, 576, 1536), (64, 576, 1536), (16, 512, 512), (32, 512, 512), (128, 576, 1536), (256, 512, 512), (512, 512, 512)] {
            let d = dims(1, m, k, n, false, tb, None, None);
            for &small in &[0usize, 1024] {
                let blk = Blocking { small_m: small, small_m_tb: small, ..Blocking::DEFAULT };
                let g = gflops(&d, &mut |a, b, o| gemm::<Tile>(a, b, &d, 0, d.m, o, &blk));
                println!("{}x{}x{} tB={} small path {}: {:6.2} GFLOP/s", m, k, n, tb as u8, small > 0, g);
            }
        }
    }
}

/// Shapes for the split tests: packed and unpacked, every transpose, tails of every tile width,
/// folded batches (B shared), own batches, broadcast A, k = 0.
pub(crate) const SPLIT_SHAPES: &[(usize, usize, usize, usize, bool, bool, Option<usize>, Option<usize>)] = &[
    (1, 257, 300, 129, false, false, None, None),
    (1, 100, 64, 1000, false, false, None, None),
    (1, 200, 513, 96, false, true, None, None),
    (1, 150, 280, 200, true, false, None, None),
    (1, 131, 260, 77, true, true, None, None),
    (1, 13, 100, 333, false, false, None, None),
    (1, 64, 200, 300, false, false, None, None),
    (1, 31, 100, 70, false, true, None, None),
    (1, 5, 37, 90, true, false, None, None),
    (1, 7, 0, 50, false, false, None, None),
    (4, 40, 96, 128, false, false, None, Some(0)),
    (4, 3, 50, 90, false, true, None, Some(0)),
    (3, 70, 100, 90, false, false, None, None),
    (3, 20, 120, 100, true, true, None, None),
    (2, 100, 64, 130, false, false, Some(0), None),
];

/// Every rectangle `split_grid` makes (for many part counts), run one by one through `blk_fn`,
/// covers the output exactly once and gives, bit for bit, what `whole` gives (the pool's split:
/// folded batches first, as `matmul` does).
#[allow(clippy::type_complexity)]
pub(crate) fn check_grid(
    plan_fn: &dyn Fn(&MatmulDims) -> MatmulPlan,
    whole: &dyn Fn(&[f32], &[f32], &MatmulDims, &mut [f32]),
    blk_fn: &dyn Fn(&[f32], &[f32], &MatmulDims, usize, usize, usize, usize, usize, *mut f32),
    what: &str,
) {
    let mut seed = 77u64;
    for &(batch, m, k, n, ta, tb, abs, bbs) in SPLIT_SHAPES {
        let d0 = dims(batch, m, k, n, ta, tb, abs, bbs);
        let a = random(d0.a_len(), &mut seed);
        let b = random(d0.b_len(), &mut seed);
        let mut want = vec![0f32; d0.out_len()];
        whole(&a, &b, &d0, &mut want);
        let d = if folds(&d0) { MatmulDims { batch: 1, m: d0.batch * d0.m, a_batch_stride: 0, ..d0 } } else { d0 };
        let plan = plan_fn(&d);
        assert_eq!(plan, plan_fn(&d0), "{}: plan of the folded problem", what);
        for parts in [1usize, 2, 3, 4, 5, 7, 8, 12, 16, 17, 32] {
            let mut got = vec![12345.0f32; d.out_len()];
            let mut hits = vec![0u8; d.out_len()];
            let rects = split_grid(d.m, d.n, &plan, parts);
            assert!(rects.len() <= parts.max(1), "{}: {} rectangles for {} parts", what, rects.len(), parts);
            for s in 0..d.batch {
                for &(r0, r1, j0, j1) in &rects {
                    if !plan.small {
                        assert!(r0 % plan.mr == 0 && j0 % plan.nr == 0, "{}: cut off the tile grid", what);
                    }
                    blk_fn(&a, &b, &d, s, r0, r1, j0, j1, got.as_mut_ptr());
                    for i in r0..r1 {
                        for j in j0..j1 {
                            hits[(s * d.m + i) * d.n + j] += 1;
                        }
                    }
                }
            }
            assert!(hits.iter().all(|&h| h == 1), "{} {:?} parts {}: rectangles do not cover the output once", what, d0, parts);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{} {:?} parts {} ({} rects): element {} got {} want {}", what, d0, parts, rects.len(), i, g, w);
            }
        }
    }
}

/// The public split (`plan`, `split_grid`, `matmul_block` on whatever kernel this CPU runs) is
/// bit-identical to `matmul`; and the portable 4x8 kernel's, forced.
#[test]
fn split_grid_blocks_bit_identical_to_matmul() {
    // SAFETY (closures below): `o` is a live buffer of d.out_len() floats; one block at a time.
    check_grid(&plan, &|a, b, d, o| matmul(a, b, d, o), &|a, b, d, s, r0, r1, j0, j1, o| unsafe { matmul_block(a, b, d, s, r0, r1, j0, j1, o) }, "dispatched");
    let blk = Blocking::DEFAULT;
    check_grid(
        &|d| plan_with(d, &blk, Tile::MR, Tile::NR, ""),
        &|a, b, d, o| gemm::<Tile>(a, b, d, 0, d.m, o, &blk),
        &|a, b, d, s, r0, r1, j0, j1, o| unsafe { block::<Tile>(a, b, d, s, r0, r1, j0, j1, o, &blk) },
        "portable 4x8",
    );
    // small blocks: many kc slices and nc / mc edges inside a piece
    let tiny = Blocking { kc: 7, mc: 8, nc: 16, ..Blocking::DEFAULT };
    check_grid(
        &|d| plan_with(d, &tiny, Tile::MR, Tile::NR, ""),
        &|a, b, d, o| gemm::<Tile>(a, b, d, 0, d.m, o, &tiny),
        &|a, b, d, s, r0, r1, j0, j1, o| unsafe { block::<Tile>(a, b, d, s, r0, r1, j0, j1, o, &tiny) },
        "portable 4x8 tiny blocks",
    );
}

#[test]
fn split_grid_shapes() {
    let plan = MatmulPlan { small: false, mr: 12, nr: 32, kernel: "" };
    // square: a 4x4 grid for 16 threads rather than 16 (or 15) row strips
    let g = split_grid(1024, 1024, &plan, 16);
    assert_eq!(g.len(), 16);
    assert!(g.iter().all(|r| r.1 - r.0 < 1024 && r.3 - r.2 < 1024), "{:?}", g);
    // few rows: columns only
    let g = split_grid(12, 4096, &plan, 8);
    assert_eq!(g.len(), 8);
    assert!(g.iter().all(|r| (r.0, r.1) == (0, 12)), "{:?}", g);
    // unpacked: row pairs, whole columns
    let small = MatmulPlan { small: true, ..plan };
    assert_eq!(split_grid(7, 100, &small, 8), vec![(0, 2, 0, 100), (2, 4, 0, 100), (4, 6, 0, 100), (6, 7, 0, 100)]);
    assert_eq!(split_grid(1, 100, &small, 8), vec![(0, 1, 0, 100)]);
    assert!(split_grid(0, 100, &plan, 4).is_empty());
}
