use super::*;

pub(crate) fn lcg(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

const SPECIAL: &[f32] = &[
    0.0, -0.0, 1.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-40, -1e-40, 88.7, 88.73, 89.5, -87.5,
    -103.9, -104.5, 1e30, -1e30, 0.5, -1.2785, 20.0, -20.0, 100.0, -100.0, f32::MAX, f32::MIN_POSITIVE,
];
const LENS: &[usize] = &[0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 127, 257];

fn values(len: usize, scale: f32, seed: &mut u64) -> Vec<f32> {
    (0..len).map(|i| if i % 11 == 4 { SPECIAL[(i / 11) % SPECIAL.len()] } else { lcg(seed) * scale }).collect()
}

/// Bit-equal, or both NaN.
fn same(g: f32, w: f32) -> bool {
    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan())
}

/// Equal infinities/NaN, else |g − w| ≤ rel·scale + 1e-37 (subnormal results compare absolutely).
fn close(g: f32, w: f32, rel: f64, scale: f64) -> bool {
    if w.is_nan() || g.is_nan() || w.is_infinite() || g.is_infinite() {
        return same(g, w) || (g == w);
    }
    ((g as f64) - (w as f64)).abs() <= rel * scale + 1e-37
}

#[test]
fn op_codes_round_trip() {
    for (i, op) in UnaryOp::ALL.iter().enumerate() {
        assert_eq!(*op as u32, i as u32);
        assert_eq!(UnaryOp::from_u32(i as u32), Some(*op));
    }
    assert_eq!(UnaryOp::from_u32(13), None);
    for (i, op) in BinaryOp::ALL.iter().enumerate() {
        assert_eq!(BinaryOp::from_u32(i as u32), Some(*op));
    }
    assert_eq!(BinaryOp::from_u32(8), None);
    assert_eq!(ReduceOp::from_u32(1), Some(ReduceOp::Max));
    assert_eq!(ReduceOp::from_u32(2), None);
}

#[test]
fn unary_matches_reference() {
    let mut seed = 1u64;
    for &op in UnaryOp::ALL.iter() {
        for &len in LENS {
            for &scale in &[1.0f32, 30.0, 120.0] {
                let a = values(len, scale, &mut seed);
                let mut want = vec![0f32; len];
                let mut got = vec![0f32; len];
                unary_reference(op, &a, &mut want);
                unary(op, &a, &mut got);
                for i in 0..len {
                    let (x, g, w) = (a[i] as f64, got[i], want[i]);
                    let ok = match op {
                        UnaryOp::Exp | UnaryOp::Sigmoid | UnaryOp::Silu => close(g, w, 1e-6, (w as f64).abs()),
                        UnaryOp::SiluGrad => {
                            // σ(x)·(1 + x·(1−σ(x))) cancels near x ≈ −1.28: tolerance on the terms
                            let s = 1.0 / (1.0 + (-x).exp());
                            close(g, w, 1e-6, s * (1.0 + x.abs()))
                        }
                        UnaryOp::Rsqrt | UnaryOp::Log => close(g, w, 2e-7, (w as f64).abs()),
                        _ => same(g, w),
                    };
                    assert!(ok, "{:?}({}) = {} want {}", op, a[i], g, w);
                }
            }
        }
    }
}

#[test]
fn exp_edges() {
    use super::simd::{exp_f32, exp_poly_f32};
    for &exp_f32 in &[exp_f32 as fn(f32) -> f32, exp_poly_f32] {
        exp_edges_of(exp_f32);
    }
}

fn exp_edges_of(exp_f32: fn(f32) -> f32) {
    assert_eq!(exp_f32(0.0), 1.0);
    assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
    assert!(exp_f32(f32::NAN).is_nan());
    assert_eq!(exp_f32(89.0), f32::INFINITY);
    assert!(exp_f32(88.72).is_finite());
    assert!(exp_f32(-103.0) > 0.0); // subnormal, not flushed
    assert_eq!(exp_f32(-105.0), 0.0);
    // accuracy sweep
    let mut x = -103.0f32;
    while x < 88.7 {
        let w = (x as f64).exp();
        let g = exp_f32(x) as f64;
        let tol = if w < 1.2e-38 { 1.5e-45 } else { 3e-7 * w };
        assert!((g - w).abs() <= tol, "exp({}) = {} want {}", x, g, w);
        x += 0.0137;
    }
}

#[test]
fn affine_and_pow_match_reference() {
    let mut seed = 2u64;
    for &len in LENS {
        let a = values(len, 10.0, &mut seed);
        for &(m, c) in &[(1.0f32, 0.0f32), (0.5, -3.0), (-1.0 / 3.0, 0.1), (1e6, 1.0)] {
            let mut want = vec![0f32; len];
            let mut got = vec![0f32; len];
            affine_reference(&a, m, c, &mut want);
            affine(&a, m, c, &mut got);
            for i in 0..len {
                let scale = (a[i] as f64 * m as f64).abs() + (c as f64).abs();
                assert!(close(got[i], want[i], 1.2e-7, scale), "affine({}, {}, {}) = {} want {}", a[i], m, c, got[i], want[i]);
            }
        }
        for &p in &[0.0f32, 1.0, 2.0, -1.0, 0.5, 3.0, -0.5, 1.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -2.0] {
            let mut want = vec![0f32; len];
            let mut got = vec![0f32; len];
            pow_reference(&a, p, &mut want);
            pow(&a, p, &mut got);
            for i in 0..len {
                let ok = if p == 0.5 { close(got[i], want[i], 1.2e-7, (want[i] as f64).abs()) } else { same(got[i], want[i]) };
                assert!(ok, "pow({}, {}) = {} want {}", a[i], p, got[i], want[i]);
            }
        }
    }
    // JavaScript's Math.pow specials
    assert!(js_pow(1.0, f64::NAN).is_nan());
    assert!(js_pow(-1.0, f64::INFINITY).is_nan());
    assert_eq!(js_pow(f64::NAN, 0.0), 1.0);
}

fn binary_case(op: BinaryOp, a_shape: &[usize], b_shape: &[usize], seed: &mut u64) {
    let out_shape: Vec<usize> = a_shape.iter().zip(b_shape).map(|(&x, &y)| if x == 1 { y } else { x }).collect();
    let a = values(a_shape.iter().product(), 3.0, seed);
    let mut b = values(b_shape.iter().product(), 3.0, seed);
    // equal values for eq/max/min ties (and ±0 pairs)
    for (i, v) in b.iter_mut().enumerate() {
        if i % 5 == 2 && i < a.len() {
            *v = a[i];
        }
        if i % 13 == 7 {
            *v = -0.0;
        }
    }
    let size: usize = out_shape.iter().product();
    let mut want = vec![0f32; size];
    let mut got = vec![0f32; size];
    binary_reference(op, &a, a_shape, &b, b_shape, &out_shape, &mut want);
    binary(op, &a, a_shape, &b, b_shape, &out_shape, &mut got);
    for i in 0..size {
        assert!(same(got[i], want[i]), "{:?} {:?} {:?} element {}: {} want {}", op, a_shape, b_shape, i, got[i], want[i]);
    }
}

#[test]
fn binary_matches_reference_with_broadcasting() {
    let mut seed = 3u64;
    let cases: &[(&[usize], &[usize])] = &[
        (&[], &[]),
        (&[1], &[1]),
        (&[7], &[7]),
        (&[17], &[1]),
        (&[1], &[33]),
        (&[0], &[1]),
        (&[5, 9], &[5, 9]),
        (&[5, 9], &[1, 9]),
        (&[5, 9], &[5, 1]),
        (&[5, 1], &[1, 9]),
        (&[1, 9], &[5, 1]),
        (&[1, 1], &[6, 7]),
        (&[3, 1, 5], &[1, 4, 1]),
        (&[2, 3, 4, 5], &[2, 1, 4, 1]),
        (&[2, 3, 4, 5], &[1, 3, 1, 5]),
        (&[1, 3, 1, 5], &[2, 3, 4, 5]),
        (&[2, 1, 1, 65], &[2, 3, 1, 65]),
        (&[4, 1, 33], &[4, 1, 1]),
        (&[1, 1, 1], &[1, 1, 1]),
        (&[3, 0, 2], &[3, 1, 2]),
    ];
    for &op in BinaryOp::ALL.iter() {
        for &(sa, sb) in cases {
            binary_case(op, sa, sb, &mut seed);
        }
    }
    // the NaN rule of max/min: x >= y ? x : y yields y when either is NaN
    let mut out = [0f32; 2];
    binary(BinaryOp::Max, &[f32::NAN, 1.0], &[2], &[1.0, f32::NAN], &[2], &[2], &mut out);
    assert!(out[0] == 1.0 && out[1].is_nan());
}

fn reduce_case(op: ReduceOp, shape: &[usize], axes: &[usize], seed: &mut u64) {
    let size: usize = shape.iter().product();
    let a = values(size, 2.0, seed);
    let n = reduce::reduced_size(shape, axes);
    let mut want = vec![0f32; n];
    let mut got = vec![0f32; n];
    reduce_reference(op, &a, shape, axes, &mut want);
    reduce(op, &a, shape, axes, &mut got);
    // Σ|x| per output, for the tolerance of sums
    let mut absa = a.iter().map(|v| v.abs()).collect::<Vec<_>>();
    for v in absa.iter_mut() {
        if !v.is_finite() {
            *v = 0.0;
        }
    }
    let mut mag = vec![0f32; n];
    reduce_reference(ReduceOp::Sum, &absa, shape, axes, &mut mag);
    for i in 0..n {
        let ok = match op {
            ReduceOp::Sum => close(got[i], want[i], 1e-6, mag[i] as f64),
            ReduceOp::Max => got[i] == want[i] || (got[i].is_nan() && want[i].is_nan()),
        };
        assert!(ok, "{:?} {:?} axes {:?} element {}: {} want {}", op, shape, axes, i, got[i], want[i]);
    }
}

#[test]
fn reduce_matches_reference() {
    let mut seed = 4u64;
    let cases: &[(&[usize], &[usize])] = &[
        (&[], &[]),
        (&[1], &[0]),
        (&[7], &[0]),
        (&[7], &[]),
        (&[300], &[0]),
        (&[0], &[0]),
        (&[3, 0], &[1]),
        (&[3, 0], &[0]),
        (&[3, 5], &[0]),
        (&[3, 5], &[1]),
        (&[3, 5], &[0, 1]),
        (&[3, 5], &[1, 0]),
        (&[65, 33], &[0]),
        (&[33, 65], &[1]),
        (&[2, 3, 4, 5], &[1, 3]),
        (&[2, 3, 4, 5], &[0, 2]),
        (&[2, 3, 4, 5], &[0, 1, 2]),
        (&[2, 3, 4, 5], &[3]),
        (&[2, 1, 4, 1, 9], &[1, 2]),
        (&[2, 1, 4, 1, 9], &[0, 4]),
        (&[1, 1, 1], &[1]),
        (&[6, 1], &[0]),
        (&[4, 129, 3], &[1]),
    ];
    for &op in &[ReduceOp::Sum, ReduceOp::Max] {
        for &(shape, axes) in cases {
            reduce_case(op, shape, axes, &mut seed);
        }
    }
    // NaN is sticky in max, -inf stays
    let mut out = [0f32; 1];
    reduce(ReduceOp::Max, &[1.0, f32::NAN, 5.0, 2.0, 3.0, 1.0, 1.0, 1.0, 9.0], &[9], &[0], &mut out);
    assert!(out[0].is_nan());
    reduce(ReduceOp::Max, &[f32::NEG_INFINITY; 3], &[3], &[0], &mut out);
    assert_eq!(out[0], f32::NEG_INFINITY);
    reduce(ReduceOp::Sum, &[-0.0], &[1], &[0], &mut out);
    assert_eq!(out[0].to_bits(), 0); // 0 + -0 = +0, as the f64 accumulator of the reference
}

// ---- benchmarks: cargo test --release -- --ignored --nocapture bench_ ----

#[test]
#[ignore]
fn bench_elementwise() {
    use crate::transformer::tests::time_ms;
    let mut seed = 9;
    let report = |name: &str, fast: f64, refr: f64| println!("{:<44} {:8.3} ms  reference {:8.3} ms  x{:.1}", name, fast, refr, refr / fast);
    let n = 1 << 20;
    let a: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 4.0).collect();
    let b: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 4.0).collect();
    let mut out = vec![0f32; n];
    for &op in &[UnaryOp::Exp, UnaryOp::Silu, UnaryOp::Rsqrt, UnaryOp::Relu] {
        let f = time_ms(|| { unary(op, &a, &mut out); out[0] });
        let r = time_ms(|| { unary_reference(op, &a, &mut out); out[0] });
        report(&format!("unary {:?} [2^20]", op), f, r);
    }
    let shp = [1024usize, 1024];
    let f = time_ms(|| { binary(BinaryOp::Add, &a, &shp, &b, &shp, &shp, &mut out); out[0] });
    let r = time_ms(|| { binary_reference(BinaryOp::Add, &a, &shp, &b, &shp, &shp, &mut out); out[0] });
    report("binary add [1024, 1024] + same", f, r);
    let f = time_ms(|| { binary(BinaryOp::Mul, &a, &shp, &b, &[1, 1024], &shp, &mut out); out[0] });
    let r = time_ms(|| { binary_reference(BinaryOp::Mul, &a, &shp, &b, &[1, 1024], &shp, &mut out); out[0] });
    report("binary mul [1024, 1024] * [1, 1024]", f, r);
    let f = time_ms(|| { binary(BinaryOp::Mul, &a, &shp, &b, &[1024, 1], &shp, &mut out); out[0] });
    let r = time_ms(|| { binary_reference(BinaryOp::Mul, &a, &shp, &b, &[1024, 1], &shp, &mut out); out[0] });
    report("binary mul [1024, 1024] * [1024, 1]", f, r);
    let mut small = vec![0f32; 1024];
    let f = time_ms(|| { reduce(ReduceOp::Sum, &a, &shp, &[1], &mut small); small[0] });
    let r = time_ms(|| { reduce_reference(ReduceOp::Sum, &a, &shp, &[1], &mut small); small[0] });
    report("reduce sum [1024, 1024] axis 1", f, r);
    let f = time_ms(|| { reduce(ReduceOp::Sum, &a, &shp, &[0], &mut small); small[0] });
    let r = time_ms(|| { reduce_reference(ReduceOp::Sum, &a, &shp, &[0], &mut small); small[0] });
    report("reduce sum [1024, 1024] axis 0", f, r);
    let f = time_ms(|| { reduce(ReduceOp::Max, &a, &shp, &[1], &mut small); small[0] });
    let r = time_ms(|| { reduce_reference(ReduceOp::Max, &a, &shp, &[1], &mut small); small[0] });
    report("reduce max [1024, 1024] axis 1", f, r);
}
