//! Few output rows (one token, short batches): packing B would cost as much as the multiply, so B
//! is streamed as stored. B [k, n] row-major: each output row is Σ_p A(i,p)·B[p,:], four p at a
//! time, two output rows sharing every B load. B stored [n, k] (trans_b): dot products of A rows
//! with four B rows at a time.

use crate::elementwise::simd::F32x4;

#[allow(clippy::too_many_arguments)]
pub fn small_m(
    a: &[f32], ars: usize, acs: usize, b: &[f32], brs: usize, bcs: usize, k: usize, n: usize,
    r0: usize, r1: usize, c: &mut [f32], abuf: &mut Vec<f32>,
) {
    assert!(c.len() >= r1 * n && b.len() >= k * n);
    if bcs == 1 {
        debug_assert_eq!(brs, n);
        // blocks of B rows of about 256 KiB, so that row pairs after the first read them from L2
        let kb = if r1 - r0 <= 2 { k } else { ((1usize << 16) / n.max(1)).max(4) / 4 * 4 };
        let mut p0 = 0;
        while p0 < k {
            let p1 = k.min(p0 + kb);
            let mut i = r0;
            while i + 2 <= r1 {
                rows_axpy::<2>(a, ars, acs, i, b, p0, p1, n, c);
                i += 2;
            }
            if i < r1 {
                rows_axpy::<1>(a, ars, acs, i, b, p0, p1, n, c);
            }
            p0 = p1;
        }
    } else {
        debug_assert_eq!((brs, bcs), (1, k));
        // rows of A contiguous in p: use them in place, or copy (trans_a) once
        let rows = r1 - r0;
        let (arows, stride, base): (&[f32], usize, usize) = if acs == 1 {
            (a, ars, r0)
        } else {
            abuf.clear();
            abuf.resize(rows * k, 0.0);
            for r in 0..rows {
                for p in 0..k {
                    abuf[r * k + p] = a[(r0 + r) * ars + p * acs];
                }
            }
            (&abuf[..], k, 0)
        };
        assert!(arows.len() >= (base + rows - 1) * stride + k);
        let row = |r: usize| &arows[(base + r) * stride..(base + r) * stride + k];
        let mut j = 0;
        while j + 4 <= n {
            let b4 = &b[j * k..(j + 4) * k];
            let mut r = 0;
            while r + 2 <= rows {
                let v = dot2x4(row(r), row(r + 1), b4, k);
                c[(r0 + r) * n + j..(r0 + r) * n + j + 4].copy_from_slice(&v[0]);
                c[(r0 + r + 1) * n + j..(r0 + r + 1) * n + j + 4].copy_from_slice(&v[1]);
                r += 2;
            }
            if r < rows {
                let v = dot4(row(r), b4, k);
                c[(r0 + r) * n + j..(r0 + r) * n + j + 4].copy_from_slice(&v);
            }
            j += 4;
        }
        while j < n {
            for r in 0..rows {
                c[(r0 + r) * n + j] = dot1(row(r), &b[j * k..(j + 1) * k]);
            }
            j += 1;
        }
    }
}

/// Output rows i..i+R of C: C[i+r, :] (= when p0 is 0, else +=) Σ_{p0≤p<p1} A(i+r, p)·B[p, :],
/// B row-major [k, n].
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn rows_axpy<const R: usize>(a: &[f32], ars: usize, acs: usize, i: usize, b: &[f32], p0: usize, p1: usize, n: usize, c: &mut [f32]) {
    let mut p = p0;
    while p < p1 {
        let np = (p1 - p).min(4);
        let mut coef = [[0f32; 4]; R];
        for r in 0..R {
            for q in 0..np {
                coef[r][q] = a[(i + r) * ars + (p + q) * acs];
            }
        }
        match np {
            4 => axpy::<R, 4>(&coef, b, p, n, c, i, p == 0),
            3 => axpy::<R, 3>(&coef, b, p, n, c, i, p == 0),
            2 => axpy::<R, 2>(&coef, b, p, n, c, i, p == 0),
            _ => axpy::<R, 1>(&coef, b, p, n, c, i, p == 0),
        }
        p += np;
    }
}

/// C[i+r, :] (= or +=) Σ_{q<P} coef[r][q]·B[p+q, :].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn axpy<const R: usize, const P: usize>(coef: &[[f32; 4]; R], b: &[f32], p: usize, n: usize, c: &mut [f32], i: usize, first: bool) {
    assert!(b.len() >= (p + P) * n && c.len() >= (i + R) * n);
    let mut cv = [[F32x4::zero(); P]; R];
    for r in 0..R {
        for q in 0..P {
            cv[r][q] = F32x4::splat(coef[r][q]);
        }
    }
    let bp = b.as_ptr();
    let cp = c.as_mut_ptr();
    let n4 = n / 4 * 4;
    // SAFETY: rows p..p+P of b and rows i..i+R of c are in bounds (asserted), j+4 ≤ n.
    unsafe {
        let mut j = 0;
        while j < n4 {
            let mut bv = [F32x4::zero(); P];
            for q in 0..P {
                bv[q] = F32x4::load(bp.add((p + q) * n + j));
            }
            for r in 0..R {
                let dst = cp.add((i + r) * n + j);
                let mut acc = if first { F32x4::zero() } else { F32x4::load(dst) };
                for q in 0..P {
                    acc = acc.add(cv[r][q].mul(bv[q]));
                }
                acc.store(dst);
            }
            j += 4;
        }
    }
    for j in n4..n {
        for r in 0..R {
            let mut acc = if first { 0.0 } else { c[(i + r) * n + j] };
            for q in 0..P {
                acc += coef[r][q] * b[(p + q) * n + j];
            }
            c[(i + r) * n + j] = acc;
        }
    }
}

/// Dot products of x (length k) with the four rows of b4 [4, k].
#[inline(never)]
fn dot4(x: &[f32], b4: &[f32], k: usize) -> [f32; 4] {
    assert!(x.len() >= k && b4.len() >= 4 * k);
    let k4 = k / 4 * 4;
    let mut acc = [F32x4::zero(); 4];
    let xp = x.as_ptr();
    let bp = b4.as_ptr();
    // SAFETY: p + 4 ≤ k4 ≤ k for x and each of the four rows of b4 (asserted).
    unsafe {
        let mut p = 0;
        while p < k4 {
            let xv = F32x4::load(xp.add(p));
            for t in 0..4 {
                acc[t] = acc[t].add(xv.mul(F32x4::load(bp.add(t * k + p))));
            }
            p += 4;
        }
    }
    let mut out = [acc[0].hsum(), acc[1].hsum(), acc[2].hsum(), acc[3].hsum()];
    for p in k4..k {
        for t in 0..4 {
            out[t] += x[p] * b4[t * k + p];
        }
    }
    out
}

/// Dot products of x0 and x1 (length k) with the four rows of b4 [4, k]: 8 accumulators, every B
/// load used twice.
#[inline(never)]
fn dot2x4(x0: &[f32], x1: &[f32], b4: &[f32], k: usize) -> [[f32; 4]; 2] {
    assert!(x0.len() >= k && x1.len() >= k && b4.len() >= 4 * k);
    let k4 = k / 4 * 4;
    let mut acc0 = [F32x4::zero(); 4];
    let mut acc1 = [F32x4::zero(); 4];
    let (p0, p1, bp) = (x0.as_ptr(), x1.as_ptr(), b4.as_ptr());
    // SAFETY: p + 4 ≤ k4 ≤ k for x0, x1 and each row of b4 (asserted).
    unsafe {
        let mut p = 0;
        while p < k4 {
            let (u, v) = (F32x4::load(p0.add(p)), F32x4::load(p1.add(p)));
            for t in 0..4 {
                let bv = F32x4::load(bp.add(t * k + p));
                acc0[t] = acc0[t].add(u.mul(bv));
                acc1[t] = acc1[t].add(v.mul(bv));
            }
            p += 4;
        }
    }
    let mut out = [[0f32; 4]; 2];
    for t in 0..4 {
        out[0][t] = acc0[t].hsum();
        out[1][t] = acc1[t].hsum();
    }
    for p in k4..k {
        for t in 0..4 {
            out[0][t] += x0[p] * b4[t * k + p];
            out[1][t] += x1[p] * b4[t * k + p];
        }
    }
    out
}

fn dot1(x: &[f32], y: &[f32]) -> f32 {
    let k = y.len();
    let k4 = k / 4 * 4;
    let mut acc = F32x4::zero();
    let mut p = 0;
    while p < k4 {
        acc = acc.add(F32x4::from_slice(x, p).mul(F32x4::from_slice(y, p)));
        p += 4;
    }
    let mut s = acc.hsum();
    for p in k4..k {
        s += x[p] * y[p];
    }
    s
}
