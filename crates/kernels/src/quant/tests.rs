//! Optimized kernels vs the scalar references, on every format and awkward shapes; the tables
//! re-derived the way the TS derives them.

use super::tables::{f32_toward_zero, nf_table};
use super::*;

/// xorshift64: the quant tests' (and their siblings') random numbers.
pub(super) struct Rng(pub(super) u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// uniform in [-1, 1)
    pub(super) fn uni(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// roughly normal
    fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.uni()).sum::<f32>() * 0.8
    }
}

pub(super) fn all_formats() -> Vec<Format> {
    let mut v = Vec::new();
    for &group in &[1usize, 7, 32, 64, 128] {
        for &bits in &[2u32, 3, 4] {
            for &dq in &[false, true] {
                v.push(Format {
                    kind: Kind::Nf,
                    bits,
                    group,
                    double_quant: dq,
                    symmetric: false,
                });
            }
            for &sym in &[false, true] {
                v.push(Format {
                    kind: Kind::Int,
                    bits,
                    group,
                    double_quant: false,
                    symmetric: sym,
                });
            }
        }
    }
    v
}

const SHAPES: [(usize, usize); 12] = [
    (1, 1),
    (1, 7),
    (3, 5),
    (2, 33),
    (5, 67),
    (4, 64),
    (3, 130),
    (7, 129),
    (1, 600),
    (37, 300),
    (300, 65),
    (6, 1029),
];

/// Weights with the awkward cases mixed in: zeros, -0, an all-zero group, a negative-only group,
/// tiny (1/absmax overflows) and huge groups, values exactly on NF thresholds.
fn weights(rng: &mut Rng, rows: usize, cols: usize, f: &Format) -> Vec<f32> {
    let mut w: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
    let t = nf_table(f.bits);
    let gpr = groups_per_row(cols, f);
    for r in 0..rows {
        for gi in 0..gpr {
            let (b, e) = (r * cols + gi * f.group, r * cols + ((gi + 1) * f.group).min(cols));
            let kind = rng.next() % 12;
            for i in b..e {
                let u = rng.uni();
                w[i] = match kind {
                    0 => 0.0,
                    1 => -w[i].abs(),
                    2 => w[i] * 1e-39,
                    3 => w[i] * 1e37,
                    4 => t.thresholds[(rng.next() % (t.len as u64 - 1)) as usize],
                    5 if u < 0.5 => -0.0,
                    6 => (u * 8.0).round() / 8.0,
                    7 => w[i] * 3e-45,
                    _ => w[i],
                };
            }
            if kind == 4 && e > b {
                w[b] = 1.0;
            }
        }
    }
    w
}

use super::owned::Owned;

fn name(f: &Format) -> String {
    format!(
        "{:?}{}-g{}{}{}",
        f.kind,
        f.bits,
        f.group,
        if f.dq() { "-dq" } else { "" },
        if f.kind == Kind::Int && f.symmetric { "-sym" } else { "" }
    )
}

fn bits_eq(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn quantize_and_dequantize_match_reference_bit_for_bit() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for f in all_formats() {
        for &(rows, cols) in SHAPES.iter() {
            let w = weights(&mut rng, rows, cols, &f);
            let mut a = Owned::new(rows, cols, &f, 0x55);
            let mut b = Owned::new(rows, cols, &f, 0xaa);
            quantize_reference(&w, rows, cols, &f, a.parts_mut()).unwrap();
            quantize(&w, rows, cols, &f, b.parts_mut()).unwrap();
            assert!(a.bits() == b.bits(), "quantize {} {}x{}", name(&f), rows, cols);
            let mut da = vec![0.0f32; rows * cols];
            let mut db = vec![1.0f32; rows * cols];
            dequantize_reference(&a.parts(), rows, cols, &f, &mut da);
            dequantize(&a.parts(), rows, cols, &f, &mut db);
            assert!(bits_eq(&da, &db), "dequantize {} {}x{}", name(&f), rows, cols);
            // invariants the TS checks: |w - deq| bounded, nothing NaN
            assert!(da.iter().all(|x| x.is_finite()), "finite {}", name(&f));
        }
    }
}

/// sum |x * w| per output, for the tolerance.
fn abs_dot(x: &[f32], x_rows: usize, w: &[f32], rows: usize, cols: usize) -> Vec<f64> {
    let mut o = vec![0.0f64; x_rows * rows];
    for i in 0..x_rows {
        for r in 0..rows {
            o[i * rows + r] = (0..cols).map(|c| (x[i * cols + c] as f64 * w[r * cols + c] as f64).abs()).sum();
        }
    }
    o
}

#[test]
fn dequantize_matmul_matches_reference() {
    let mut rng = Rng(12345);
    let mut worst = 0.0f64;
    for f in all_formats() {
        for &(rows, cols) in SHAPES.iter() {
            let w: Vec<f32> = (0..rows * cols)
                .map(|_| if rng.next() % 9 == 0 { 0.0 } else { rng.normal() })
                .collect();
            let mut q = Owned::new(rows, cols, &f, 0);
            quantize(&w, rows, cols, &f, q.parts_mut()).unwrap();
            let mut deq = vec![0.0f32; rows * cols];
            dequantize(&q.parts(), rows, cols, &f, &mut deq);
            for &x_rows in &[1usize, 2, 3, 5] {
                let x: Vec<f32> = (0..x_rows * cols).map(|_| rng.normal()).collect();
                let mut want = vec![0.0f32; x_rows * rows];
                let mut got = vec![f32::NAN; x_rows * rows];
                dequantize_matmul_reference(&x, x_rows, &q.parts(), rows, cols, &f, &mut want);
                dequantize_matmul(&x, x_rows, &q.parts(), rows, cols, &f, &mut got);
                let scale = abs_dot(&x, x_rows, &deq, rows, cols);
                for k in 0..want.len() {
                    let err = (want[k] as f64 - got[k] as f64).abs();
                    let rel = if scale[k] > 0.0 { err / scale[k] } else { err };
                    worst = worst.max(rel);
                    assert!(
                        err <= 1e-5 * scale[k],
                        "{} {}x{} x_rows={} k={} want {} got {}",
                        name(&f),
                        rows,
                        cols,
                        x_rows,
                        k,
                        want[k],
                        got[k]
                    );
                }
            }
        }
    }
    println!("dequantize_matmul: worst |got - want| / sum|x*w| = {:e}", worst);
}

#[test]
fn dequantize_rows_pieces_equal_whole() {
    // 40 x 70 with groups of 7 or 32: 400 / 120 groups, so double-quant blocks of 256 groups span
    // rows and the cuts below
    let mut rng = Rng(4242);
    for f in all_formats().into_iter().filter(|f| f.group == 32 || f.group == 7) {
        let (rows, cols) = (40, 70);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
        let mut q = Owned::new(rows, cols, &f, 0);
        quantize(&w, rows, cols, &f, q.parts_mut()).unwrap();
        let mut whole = vec![0.0f32; rows * cols];
        dequantize_reference(&q.parts(), rows, cols, &f, &mut whole);
        let mut pieces = vec![-7.0f32; rows * cols];
        for &(a, b) in &[(0usize, 3usize), (3, 3), (3, 26), (26, 37), (37, 40)] {
            dequantize_rows(&q.parts(), rows, cols, &f, a, b, &mut pieces[a * cols..b * cols]);
        }
        assert!(bits_eq(&pieces, &whole), "{}", name(&f));
    }
}

#[test]
fn dequantize_matmul_rows_writes_only_its_rows() {
    let mut rng = Rng(777);
    for f in all_formats().into_iter().filter(|f| f.group == 32 || f.group == 7) {
        let (rows, cols, x_rows) = (11, 70, 3);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
        let x: Vec<f32> = (0..x_rows * cols).map(|_| rng.normal()).collect();
        let mut q = Owned::new(rows, cols, &f, 0);
        quantize(&w, rows, cols, &f, q.parts_mut()).unwrap();
        let mut full = vec![0.0f32; x_rows * rows];
        dequantize_matmul(&x, x_rows, &q.parts(), rows, cols, &f, &mut full);
        for &xr in &[1usize, 3] {
            let mut part = vec![-7.0f32; xr * rows];
            let mut full1 = vec![0.0f32; xr * rows];
            dequantize_matmul(&x[..xr * cols], xr, &q.parts(), rows, cols, &f, &mut full1);
            for &(a, b) in &[(0usize, 3usize), (3, 10), (10, 11)] {
                dequantize_matmul_rows(&x[..xr * cols], xr, &q.parts(), rows, cols, &f, a, b, &mut part);
            }
            assert!(bits_eq(&part, &full1), "{}", name(&f));
            let mut one = vec![-7.0f32; xr * rows];
            dequantize_matmul_rows(&x[..xr * cols], xr, &q.parts(), rows, cols, &f, 4, 6, &mut one);
            for i in 0..xr {
                for r in 0..rows {
                    let v = one[i * rows + r];
                    assert!(if (4..6).contains(&r) {
                        v.to_bits() == full1[i * rows + r].to_bits()
                    } else {
                        v == -7.0
                    });
                }
            }
        }
    }
}

#[test]
fn empty_shapes_and_non_finite_weights() {
    for f in all_formats() {
        for &(rows, cols) in &[(0usize, 5usize), (3, 0), (0, 0)] {
            let mut a = Owned::new(rows, cols, &f, 1);
            let mut b = Owned::new(rows, cols, &f, 2);
            quantize_reference(&[], rows, cols, &f, a.parts_mut()).unwrap();
            quantize(&[], rows, cols, &f, b.parts_mut()).unwrap();
            assert!(a.bits() == b.bits());
            let mut out = vec![1.0f32; 2 * rows];
            dequantize_matmul(&vec![0.0; 2 * cols], 2, &a.parts(), rows, cols, &f, &mut out);
            assert!(out.iter().all(|&v| v == 0.0));
        }
        let mut w = vec![0.5f32; 3 * 70];
        for &(i, v) in &[(0usize, f32::NAN), (69, f32::INFINITY), (209, f32::NEG_INFINITY), (100, -f32::NAN)] {
            w[i] = v;
            let mut a = Owned::new(3, 70, &f, 0x33);
            assert_eq!(quantize(&w, 3, 70, &f, a.parts_mut()), Err(first(&w)));
            assert_eq!(quantize_reference(&w, 3, 70, &f, a.parts_mut()), Err(first(&w)));
            assert!(a.codes.iter().all(|&c| c == 0x33), "nothing written");
        }
    }
    fn first(w: &[f32]) -> usize {
        w.iter().position(|x| !x.is_finite()).unwrap()
    }
}

#[test]
fn part_lengths_worked_examples() {
    let nf4 = Format {
        kind: Kind::Nf,
        bits: 4,
        group: 64,
        double_quant: true,
        symmetric: false,
    };
    let l = part_lengths(3, 100, &nf4);
    assert_eq!(
        l,
        PartLengths {
            codes: 150,
            scales: 0,
            zeros: 0,
            scale_codes: 6,
            scale2: 1,
            scale_offset: 1
        }
    );
    let int3 = Format {
        kind: Kind::Int,
        bits: 3,
        group: 7,
        double_quant: false,
        symmetric: false,
    };
    assert_eq!(
        part_lengths(2, 9, &int3),
        PartLengths {
            codes: 8,
            scales: 4,
            zeros: 4,
            ..Default::default()
        }
    );
    let big = part_lengths(300, 65, &nf4);
    assert_eq!((big.scale_codes, big.scale2), (600, 3));
}

#[test]
fn known_vectors() {
    // INT4 asym, one group: lo = -1, hi = 2 -> scale = f32 toward zero of 3/15, zero = 5.
    let f = Format {
        kind: Kind::Int,
        bits: 4,
        group: 4,
        double_quant: false,
        symmetric: false,
    };
    let mut q = Owned::new(1, 4, &f, 0);
    quantize(&[-1.0, 0.0, 2.0, 0.1], 1, 4, &f, q.parts_mut()).unwrap();
    assert_eq!(q.scales[0], f32_toward_zero(0.2));
    assert_eq!(q.zeros, vec![5]);
    assert_eq!(q.codes, vec![0x05, 0xf6]); // 0.1 / scale is just above 0.5: rounds away to 1
                                           // NF4: absmax 2; 2 -> code 15, -2 -> 0, 0 -> 7, 0.16093020141124725*2 -> 9 (high nibble first)
    let f = Format {
        kind: Kind::Nf,
        bits: 4,
        group: 64,
        double_quant: false,
        symmetric: false,
    };
    let mut q = Owned::new(1, 4, &f, 0);
    quantize(&[2.0, -2.0, 0.0, nf_table(4).values[9] * 2.0], 1, 4, &f, q.parts_mut()).unwrap();
    assert_eq!((q.codes.clone(), q.scales.clone()), (vec![0xf0, 0x79], vec![2.0]));
}
