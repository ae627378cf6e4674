//! Timings (ignored test): `cargo test --release bench_quant -- --ignored --nocapture`, on the host
//! or under the WASI runner (the simd128 build). W is 4096 x 4096. QUANT_BENCH_FULL=1 adds more
//! formats and the slow references (the WASI runner must pass the variable through).

use super::*;
use std::time::Instant;

fn ms<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    best
}

fn fmt(kind: Kind, bits: u32, group: usize, dq: bool, sym: bool) -> Format {
    Format {
        kind,
        bits,
        group,
        double_quant: dq,
        symmetric: sym,
    }
}

#[test]
#[ignore]
fn bench_quant() {
    let (rows, cols) = (4096usize, 4096usize);
    let full = std::env::var("QUANT_BENCH_FULL").is_ok();
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let w: Vec<f32> = (0..rows * cols).map(|_| rnd() * 0.05).collect();
    let x: Vec<f32> = (0..64 * cols).map(|_| rnd()).collect();
    let mut formats = vec![fmt(Kind::Nf, 4, 64, true, false), fmt(Kind::Int, 4, 64, false, false)];
    if full {
        formats.extend_from_slice(&[
            fmt(Kind::Nf, 4, 128, false, false),
            fmt(Kind::Nf, 3, 64, true, false),
            fmt(Kind::Nf, 2, 64, true, false),
            fmt(Kind::Int, 4, 128, false, true),
            fmt(Kind::Int, 3, 128, false, false),
            fmt(Kind::Int, 2, 64, false, false),
            fmt(Kind::Nf, 4, 100, true, false),
        ]);
    }
    for f in formats {
        let mut q = super::owned::Owned::new(rows, cols, &f, 0);
        let tq = ms(2, || quantize(&w, rows, cols, &f, q.parts_mut()).unwrap());
        let tq_ref = if full {
            ms(1, || quantize_reference(&w, rows, cols, &f, q.parts_mut()).unwrap())
        } else {
            f64::NAN
        };
        let p = q.parts();
        let mut deq = vec![0f32; rows * cols];
        let mut out = vec![0f32; 64 * rows];
        // warm-up on a few rows, so that V8 has tiered every function up before the timings
        for _ in 0..3 {
            dequantize_matmul_rows(&x[..cols], 1, &p, rows, cols, &f, 0, 64, &mut out[..rows]);
            dequantize_matmul_rows(&x, 64, &p, rows, cols, &f, 0, 16, &mut out);
            dequantize_matmul_rows(&x[..3 * cols], 3, &p, rows, cols, &f, 0, 16, &mut out[..3 * rows]);
        }
        let td = ms(3, || dequantize(&p, rows, cols, &f, &mut deq));
        let td_ref = ms(1, || dequantize_reference(&p, rows, cols, &f, &mut deq));
        let t1 = ms(15, || dequantize_matmul(&x[..cols], 1, &p, rows, cols, &f, &mut out[..rows]));
        let t1_ref = ms(1, || {
            dequantize_matmul_reference(&x[..cols], 1, &p, rows, cols, &f, &mut out[..rows])
        });
        let t64 = ms(4, || dequantize_matmul(&x, 64, &p, rows, cols, &f, &mut out));
        let t64_ref = if full {
            ms(1, || dequantize_matmul_reference(&x, 64, &p, rows, cols, &f, &mut out))
        } else {
            f64::NAN
        };
        println!(
            "{:?}{} g{}{}{}: matmul 1 tok {:.2} ms (ref {:.1}), 64 tok {:.1} ms (ref {:.0}); quantize {:.1} ms (ref {:.1}); dequantize {:.1} ms (ref {:.1})",
            f.kind, f.bits, f.group, if f.dq() { " dq" } else { "" }, if f.kind == Kind::Int { if f.symmetric { " sym" } else { " asym" } } else { "" },
            t1, t1_ref, t64, t64_ref, tq, tq_ref, td, td_ref
        );
    }
}

#[test]
#[ignore]
fn bench_quant_parts() {
    use super::quantize::{first_non_finite, int_group, nf_group, pack_row};
    let (rows, cols) = (4096usize, 4096usize);
    let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
    let mut codes = vec![0u8; rows * cols];
    for bits in [2u32, 3, 4] {
        let mut out = vec![0u8; rows * crate::packing::row_bytes(cols, bits)];
        let t = ms(3, || crate::packing::pack(&codes, rows, cols, bits, &mut out));
        let rb = crate::packing::row_bytes(cols, bits);
        let t2 = ms(3, || {
            for r in 0..rows {
                pack_row(&codes[r * cols..(r + 1) * cols], bits, &mut out[r * rb..(r + 1) * rb])
            }
        });
        println!("pack {} bits: packing::pack {:.1} ms, pack_row {:.1} ms", bits, t, t2);
    }
    println!("finite check {:.1} ms", ms(3, || assert!(first_non_finite(&w).is_none())));
    let f = fmt(Kind::Int, 4, 64, false, false);
    let t = ms(3, || {
        for (wg, cg) in w.chunks(64).zip(codes.chunks_mut(64)) {
            int_group(wg, &f, cg);
        }
    });
    println!("int4 groups {:.1} ms", t);
    let nf = nf_table(4);
    let t = ms(3, || {
        for (wg, cg) in w.chunks(64).zip(codes.chunks_mut(64)) {
            nf_group(wg, &nf, cg);
        }
    });
    println!("nf4 groups {:.1} ms", t);
}
