use super::*;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn random(len: usize, scale: f32, seed: &mut u64) -> Vec<f32> {
    (0..len).map(|_| lcg(seed) * scale).collect()
}

/// Row length for the tests: around the 4-lane and 64-element block edges.
const DIMS: &[usize] = &[1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 130, 257];

/// max |got − want| ≤ rel · scale, NaN where the reference has NaN.
fn assert_rows_close(got: &[f32], want: &[f32], rows: usize, cols: usize, rel: f64, scale: &dyn Fn(usize) -> f64, what: &str) {
    for r in 0..rows {
        let s = scale(r);
        for j in 0..cols {
            let (g, w) = (got[r * cols + j], want[r * cols + j]);
            if w.is_nan() {
                assert!(g.is_nan(), "{}: [{}, {}] = {} want NaN", what, r, j, g);
                continue;
            }
            assert!(((g as f64) - (w as f64)).abs() <= rel * s + 1e-37, "{}: [{}, {}] = {} want {} (scale {})", what, r, j, g, w, s);
        }
    }
}

#[test]
fn rmsnorm_matches_reference() {
    let mut seed = 1;
    for &dim in DIMS {
        for &rows in &[1usize, 3, 17, 40] {
            let x = random(rows * dim, 3.0, &mut seed);
            let w = random(dim, 2.0, &mut seed);
            let mut want = vec![0f32; rows * dim];
            let mut got = vec![0f32; rows * dim];
            rmsnorm_reference(&x, &w, rows, dim, 1e-5, &mut want);
            rmsnorm(&x, &w, rows, dim, 1e-5, &mut got);
            // relative to each element: few f32 roundings
            for i in 0..rows * dim {
                assert!(((got[i] - want[i]) as f64).abs() <= 1e-6 * (want[i] as f64).abs() + 1e-37, "rmsnorm dim {} [{}]: {} want {}", dim, i, got[i], want[i]);
            }
            let dy = random(rows * dim, 1.0, &mut seed);
            let (mut dxw, mut dww) = (vec![0f32; rows * dim], vec![0f32; dim]);
            let (mut dxg, mut dwg) = (vec![0f32; rows * dim], vec![0f32; dim]);
            rmsnorm_backward_reference(&x, &w, &dy, rows, dim, 1e-5, &mut dxw, &mut dww);
            rmsnorm_backward(&x, &w, &dy, rows, dim, 1e-5, &mut dxg, &mut dwg);
            // dx: terms are r·g and r·x̂·mean; tolerance relative to their size per row
            let scale = |r: usize| {
                let xr = &x[r * dim..(r + 1) * dim];
                let inv = 1.0 / (xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64 + 1e-5).sqrt();
                (0..dim).map(|j| inv * ((dy[r * dim + j] * w[j]).abs() as f64 + 1.0)).fold(0.0, f64::max)
            };
            assert_rows_close(&dxg, &dxw, rows, dim, 2e-6, &scale, "rmsnorm dx");
            // dw: Σ over rows of |dy·x̂|
            for j in 0..dim {
                let mag: f64 = (0..rows).map(|r| (dy[r * dim + j] as f64 * x[r * dim + j] as f64).abs() * 3.0).sum();
                assert!(((dwg[j] - dww[j]) as f64).abs() <= 2e-6 * mag + 1e-37, "rmsnorm dw dim {} [{}]: {} want {}", dim, j, dwg[j], dww[j]);
            }
        }
    }
}

#[test]
fn rope_matches_reference_both_styles_and_inverse() {
    let mut seed = 2;
    for &dim in &[2usize, 4, 6, 8, 10, 16, 18, 64, 128, 130] {
        for &(outer, seq, offset) in &[(1usize, 1usize, 0usize), (2, 5, 0), (3, 7, 11), (1, 33, 1000)] {
            for &interleaved in &[false, true] {
                for &inverse in &[false, true] {
                    let x = random(outer * seq * dim, 2.0, &mut seed);
                    let mut want = vec![0f32; x.len()];
                    let mut got = vec![0f32; x.len()];
                    rope_reference(&x, outer, seq, dim, 10000.0, offset, interleaved, inverse, &mut want);
                    rope(&x, outer, seq, dim, 10000.0, offset, interleaved, inverse, &mut got);
                    let what = format!("rope dim {} {:?} interleaved {} inverse {}", dim, (outer, seq, offset), interleaved, inverse);
                    // scale: |x1| + |x2| of the pair ≤ 2 · max |x| of the row
                    let rows = outer * seq;
                    let scale = |r: usize| 2.0 * x[r * dim..(r + 1) * dim].iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
                    assert_rows_close(&got, &want, rows, dim, 4e-7, &scale, &what);
                    // inverse undoes forward
                    if !inverse {
                        let mut back = vec![0f32; x.len()];
                        rope(&got, outer, seq, dim, 10000.0, offset, interleaved, true, &mut back);
                        assert_rows_close(&back, &x, rows, dim, 2e-6, &scale, "rope round trip");
                    }
                }
            }
        }
    }
    // the pairing: interleaved rotates (0,1), half rotates (0, dim/2)
    let x = [1.0f32, 0.0, 0.0, 0.0];
    let mut out = [0f32; 4];
    rope(&x, 1, 1, 4, 10000.0, 1, true, false, &mut out);
    assert!((out[0] - 1f32.cos()).abs() < 1e-7 && (out[1] - 1f32.sin()).abs() < 1e-7 && out[2] == 0.0);
    rope(&x, 1, 1, 4, 10000.0, 1, false, false, &mut out);
    assert!((out[0] - 1f32.cos()).abs() < 1e-7 && (out[2] - 1f32.sin()).abs() < 1e-7 && out[1] == 0.0);
}

#[test]
fn softmax_matches_reference_with_causal_masks() {
    let mut seed = 3;
    for &cols in DIMS {
        for &(rows, cq) in &[(1usize, 0usize), (5, 0), (6, 3), (cols, cols), (2 * cols, cols), (4, cols + 2), (7, 1)] {
            let mut x = random(rows * cols, 8.0, &mut seed);
            if rows * cols > 10 {
                x[3] = f32::NEG_INFINITY;
                x[7] = 90.0;
            }
            let mut want = vec![0f32; rows * cols];
            let mut got = vec![f32::NAN; rows * cols];
            softmax_reference(&x, rows, cols, cq, &mut want);
            softmax(&x, rows, cols, cq, &mut got);
            assert_rows_close(&got, &want, rows, cols, 1e-6, &|_| 1.0, &format!("softmax cols {} rows {} causal {}", cols, rows, cq));
            for r in 0..rows {
                for j in visible(r, cols, cq)..cols {
                    assert_eq!(got[r * cols + j], 0.0);
                }
            }
            let dy = random(rows * cols, 1.0, &mut seed);
            let mut dxw = vec![0f32; rows * cols];
            let mut dxg = vec![0f32; rows * cols];
            softmax_backward_reference(&want, &dy, rows, cols, &mut dxw);
            softmax_backward(&want, &dy, rows, cols, &mut dxg);
            assert_rows_close(&dxg, &dxw, rows, cols, 2e-6, &|_| 1.0, "softmax backward");
        }
    }
    // visibility rule: query q sees keys ≤ q + (cols − queries)
    assert_eq!(visible(0, 5, 0), 5);
    assert_eq!(visible(0, 5, 5), 1);
    assert_eq!(visible(4, 5, 5), 5);
    assert_eq!(visible(6, 5, 5), 2);
    assert_eq!(visible(0, 5, 2), 4);
    assert_eq!(visible(0, 2, 5), 0);
    // all -inf row and NaN row give NaN, as the reference
    let mut out = [0f32; 3];
    softmax(&[f32::NEG_INFINITY; 3], 1, 3, 0, &mut out);
    assert!(out.iter().all(|v| v.is_nan()));
    softmax(&[1.0, f32::NAN, 0.0], 1, 3, 0, &mut out);
    assert!(out.iter().all(|v| v.is_nan()));
}

#[test]
fn cross_entropy_matches_reference() {
    let mut seed = 4;
    for &vocab in DIMS {
        for &rows in &[1usize, 2, 5, 9] {
            let logits = random(rows * vocab, 6.0, &mut seed);
            let mut targets: Vec<i32> = (0..rows).map(|r| ((r * 7 + 3) % vocab) as i32).collect();
            if rows > 2 {
                targets[1] = -100;
            }
            let want = cross_entropy_reference(&logits, &targets, rows, vocab, -100).unwrap();
            let got = cross_entropy(&logits, &targets, rows, vocab, -100).unwrap();
            assert!(((got - want) as f64).abs() <= 1e-6 * (want.abs() as f64 + 6.0), "ce vocab {} rows {}: {} want {}", vocab, rows, got, want);
            for &dl in &[1.0f32, 0.37] {
                let mut gw = vec![0f32; rows * vocab];
                let mut gg = vec![f32::NAN; rows * vocab];
                cross_entropy_backward_reference(&logits, &targets, dl, rows, vocab, -100, &mut gw).unwrap();
                cross_entropy_backward(&logits, &targets, dl, rows, vocab, -100, &mut gg).unwrap();
                assert_rows_close(&gg, &gw, rows, vocab, 1e-6, &|_| dl as f64, "ce backward");
            }
        }
    }
    // errors: first bad non-ignored row, in row order; in-range ignore index; all ignored
    let logits = vec![0.5f32; 4 * 3];
    assert_eq!(cross_entropy(&logits, &[0, 3, -1, 1], 4, 3, -1), Err((1, 3)));
    assert_eq!(cross_entropy_reference(&logits, &[0, 3, -1, 1], 4, 3, -1), Err((1, 3)));
    assert_eq!(cross_entropy(&logits, &[0, -1, 7, -5], 4, 3, -1), Err((2, 7)));
    let mut g = vec![0f32; 12];
    assert_eq!(cross_entropy_backward(&logits, &[0, 1, 2, -5], 1.0, 4, 3, 0, &mut g), Err((3, -5)));
    assert_eq!(cross_entropy_backward_reference(&logits, &[0, 1, 2, -5], 1.0, 4, 3, 0, &mut g), Err((3, -5)));
    assert_eq!(cross_entropy(&logits, &[2, 2, 2, 2], 4, 3, 2), Ok(0.0));
    let mut g = vec![f32::NAN; 12];
    assert_eq!(cross_entropy_backward(&logits, &[2, 2, 2, 2], 1.0, 4, 3, 2, &mut g), Ok(()));
    assert!(g.iter().all(|&v| v == 0.0));
    // uniform logits: loss ln(vocab), gradient (1/3 − onehot)/count
    let l = cross_entropy(&logits, &[0, 1, 2, 0], 4, 3, -1).unwrap();
    assert!((l - 3f32.ln()).abs() < 1e-6);
    cross_entropy_backward(&logits, &[0, 1, 2, 0], 1.0, 4, 3, -1, &mut g).unwrap();
    assert!((g[0] - (1.0 / 3.0 - 1.0) / 4.0).abs() < 1e-7 && (g[1] - 1.0 / 12.0).abs() < 1e-7);
}

// ---- benchmarks: cargo test --release -- --ignored --nocapture bench_ ----

/// Best-of-5 milliseconds per call. `f` returns something computed from its output (read back
/// with a volatile load, so the call cannot be optimized out: no `black_box` in Rust 1.63).
pub(crate) fn time_ms(mut f: impl FnMut() -> f32) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let mut reps = 0;
        while t.elapsed().as_secs_f64() < 0.05 {
            let v = f();
            // SAFETY: a read of a local.
            unsafe { std::ptr::read_volatile(&v) };
            reps += 1;
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e3 / reps as f64);
    }
    best
}

#[test]
#[ignore]
fn bench_transformer() {
    let mut seed = 9;
    let report = |name: &str, fast: f64, refr: f64| println!("{:<44} {:8.3} ms  reference {:8.3} ms  x{:.1}", name, fast, refr, refr / fast);
    {
        let (rows, cols) = (12 * 256, 256);
        let x = random(rows * cols, 4.0, &mut seed);
        let mut out = vec![0f32; rows * cols];
        let f = time_ms(|| { softmax(&x, rows, cols, 256, &mut out); out[0] });
        let r = time_ms(|| { softmax_reference(&x, rows, cols, 256, &mut out); out[0] });
        report("softmax causal [12*256, 256]", f, r);
        let dy = random(rows * cols, 1.0, &mut seed);
        let mut dx = vec![0f32; rows * cols];
        let f = time_ms(|| { softmax_backward(&out, &dy, rows, cols, &mut dx); dx[0] });
        let r = time_ms(|| { softmax_backward_reference(&out, &dy, rows, cols, &mut dx); dx[0] });
        report("softmax backward [12*256, 256]", f, r);
    }
    {
        let (rows, dim) = (256, 2048);
        let x = random(rows * dim, 2.0, &mut seed);
        let w = random(dim, 1.0, &mut seed);
        let mut out = vec![0f32; rows * dim];
        let f = time_ms(|| { rmsnorm(&x, &w, rows, dim, 1e-5, &mut out); out[0] });
        let r = time_ms(|| { rmsnorm_reference(&x, &w, rows, dim, 1e-5, &mut out); out[0] });
        report("rmsnorm [256, 2048]", f, r);
        let dy = random(rows * dim, 1.0, &mut seed);
        let (mut dx, mut dw) = (vec![0f32; rows * dim], vec![0f32; dim]);
        let f = time_ms(|| { rmsnorm_backward(&x, &w, &dy, rows, dim, 1e-5, &mut dx, &mut dw); dw[0] });
        let r = time_ms(|| { rmsnorm_backward_reference(&x, &w, &dy, rows, dim, 1e-5, &mut dx, &mut dw); dw[0] });
        report("rmsnorm backward [256, 2048]", f, r);
    }
    {
        let (outer, seq, dim) = (16, 256, 64);
        let x = random(outer * seq * dim, 1.0, &mut seed);
        let mut out = vec![0f32; x.len()];
        for &il in &[false, true] {
            let f = time_ms(|| { rope(&x, outer, seq, dim, 10000.0, 0, il, false, &mut out); out[0] });
            let r = time_ms(|| { rope_reference(&x, outer, seq, dim, 10000.0, 0, il, false, &mut out); out[0] });
            report(&format!("rope [16, 256, 64] interleaved={}", il), f, r);
        }
    }
    {
        let (rows, vocab) = (64, 32000);
        let logits = random(rows * vocab, 5.0, &mut seed);
        let targets: Vec<i32> = (0..rows as i32).map(|r| r * 97).collect();
        let f = time_ms(|| cross_entropy(&logits, &targets, rows, vocab, -100).unwrap());
        let r = time_ms(|| cross_entropy_reference(&logits, &targets, rows, vocab, -100).unwrap());
        report("cross_entropy [64, 32000]", f, r);
        let mut g = vec![0f32; rows * vocab];
        let f = time_ms(|| { cross_entropy_backward(&logits, &targets, 1.0, rows, vocab, -100, &mut g).unwrap(); g[0] });
        let r = time_ms(|| { cross_entropy_backward_reference(&logits, &targets, 1.0, rows, vocab, -100, &mut g).unwrap(); g[0] });
        report("cross_entropy backward [64, 32000]", f, r);
    }
}
