//! Batched f32 matmul: `out[s] = op(A[s]) · op(B[s])` with op = optional transpose, per batch s.
//!
//! `matmul_reference` mirrors ts/backends/js/matmul.ts exactly (f64 accumulation per output row,
//! zero elements of A skipped). `matmul` is GotoBLAS-style: B is packed into kc×NR panels, A into
//! MR×kc panels (every transpose combination is absorbed by packing, so there is one micro-kernel),
//! and a register-tiled micro-kernel accumulates in f32 per kc slice; slices add into C.
//! Up to 64 rows (32 when B is transposed) skip packing (`small`): each pair of output rows is
//! built from B as stored (axpy over B rows, or dot products with B rows), so one token costs one
//! pass over B. Batches that share B with A's batches back to back are folded into one matmul.
//! Tile shape and block sizes were measured under V8 (tests.rs: bench_tiles, bench_blocking,
//! bench_small_m). On x86-64 with AVX2+FMA (detected once at run time), `matmul_rows` runs the same
//! driver with x86.rs's 6x16 FMA tile and `Blocking::AVX2` instead.
//!
//! Differences from the reference, all within rounding: f32 accumulation (per kc = 256 slice, then
//! summed in C), and products 0·inf / 0·NaN are not skipped (the reference skips a zero A element,
//! so a 0 in A times an inf in B gives NaN here, nothing there).

mod kernel;
mod pack;
mod small;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;
#[cfg(all(test, target_arch = "x86_64"))]
mod x86_tests;

use kernel::MicroKernel;

/// Shapes of a batched matmul, as ts/backend.ts `MatmulDims`.
#[derive(Clone, Copy, Debug)]
pub struct MatmulDims {
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// a is [m, k] (or [k, m] when trans_a), b is [k, n] (or [n, k] when trans_b), per batch.
    pub trans_a: bool,
    pub trans_b: bool,
    /// Element stride between batches; 0 broadcasts one matrix over the batch.
    pub a_batch_stride: usize,
    pub b_batch_stride: usize,
}

impl MatmulDims {
    /// Elements of `a` the call reads: (batch-1)·a_batch_stride + m·k (0 for an empty batch).
    pub fn a_len(&self) -> usize {
        if self.batch == 0 { 0 } else { (self.batch - 1) * self.a_batch_stride + self.m * self.k }
    }
    /// Elements of `b` the call reads.
    pub fn b_len(&self) -> usize {
        if self.batch == 0 { 0 } else { (self.batch - 1) * self.b_batch_stride + self.k * self.n }
    }
    /// Elements of `out`: batch·m·n.
    pub fn out_len(&self) -> usize {
        self.batch * self.m * self.n
    }
    /// (row stride, column stride) of A(i, p) and of B(p, j) within one batch.
    fn strides(&self) -> (usize, usize, usize, usize) {
        let (ars, acs) = if self.trans_a { (1, self.m) } else { (self.k, 1) };
        let (brs, bcs) = if self.trans_b { (1, self.k) } else { (self.n, 1) };
        (ars, acs, brs, bcs)
    }
    fn check(&self, a: &[f32], b: &[f32], out: &[f32]) {
        assert!(a.len() >= self.a_len(), "matmul: a has {} elements, needs {}", a.len(), self.a_len());
        assert!(b.len() >= self.b_len(), "matmul: b has {} elements, needs {}", b.len(), self.b_len());
        assert!(out.len() >= self.out_len(), "matmul: out has {} elements, needs {}", out.len(), self.out_len());
    }
}

/// Reference: the JS loops (f64 accumulation of one output row, zero A elements skipped).
pub fn matmul_reference(a: &[f32], b: &[f32], d: &MatmulDims, out: &mut [f32]) {
    d.check(a, b, out);
    let (m, k, n) = (d.m, d.k, d.n);
    let (ars, acs, brs, bcs) = d.strides();
    let mut acc = vec![0f64; n];
    for s in 0..d.batch {
        let ab = s * d.a_batch_stride;
        let bb = s * d.b_batch_stride;
        for i in 0..m {
            for v in acc.iter_mut() {
                *v = 0.0;
            }
            for p in 0..k {
                let aip = a[ab + i * ars + p * acs];
                if aip == 0.0 {
                    continue;
                }
                let aip = aip as f64;
                let mut bi = bb + p * brs;
                for v in acc.iter_mut() {
                    *v += aip * b[bi] as f64;
                    bi += bcs;
                }
            }
            let o = (s * m + i) * n;
            for j in 0..n {
                out[o + j] = acc[j] as f32;
            }
        }
    }
}

/// Optimized matmul; `out` [batch, m, n] is overwritten.
pub fn matmul(a: &[f32], b: &[f32], d: &MatmulDims, out: &mut [f32]) {
    matmul_rows(a, b, d, 0, d.m, out)
}

/// Like `matmul` but only writes output rows [row_start, row_end) of every batch (other rows of
/// `out` are left untouched). `out` is the whole [batch, m, n] buffer, so workers sharing one
/// output (or each holding a full-size one) can split the rows between them.
pub fn matmul_rows(a: &[f32], b: &[f32], d: &MatmulDims, row_start: usize, row_end: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if x86::avx2_fma() {
            return gemm::<x86::K6x16>(a, b, d, row_start, row_end, out, &Blocking::AVX2);
        }
    }
    gemm::<Tile>(a, b, d, row_start, row_end, out, &Blocking::DEFAULT)
}

/// The micro-kernel the optimized matmul uses (measured: see tests::bench_tiles).
type Tile = kernel::K4x8;

/// Cache blocking: kc×NR B panels stay in L1, the mc×kc A block in L2, the kc×nc B block in L3.
#[derive(Clone, Copy, Debug)]
struct Blocking {
    kc: usize,
    mc: usize,
    nc: usize,
    /// Row counts up to this take the unpacked `small` path (B row-major, B transposed).
    small_m: usize,
    small_m_tb: usize,
}

impl Blocking {
    const DEFAULT: Blocking = Blocking { kc: 256, mc: 128, nc: 2048, small_m: 64, small_m_tb: 32 };
    /// x86-64 AVX2+FMA tile (x86::K6x16; measured in x86_tests::bench_avx2_blocking).
    #[cfg(target_arch = "x86_64")]
    const AVX2: Blocking = Blocking { kc: 512, mc: 96, nc: 2048, small_m: 8, small_m_tb: 4 };
}

fn gemm<K: MicroKernel>(a: &[f32], b: &[f32], d: &MatmulDims, row_start: usize, row_end: usize, out: &mut [f32], blk: &Blocking) {
    d.check(a, b, out);
    let row_end = row_end.min(d.m);
    if row_start >= row_end || d.n == 0 || d.batch == 0 {
        return;
    }
    let mut d = *d;
    // B shared by every batch and A's batches back to back: one matmul with batch·m rows
    if d.batch > 1 && d.b_batch_stride == 0 && !d.trans_a && d.a_batch_stride == d.m * d.k && row_start == 0 && row_end == d.m {
        d = MatmulDims { batch: 1, m: d.batch * d.m, ..d };
        return gemm::<K>(a, b, &d, 0, d.m, out, blk);
    }
    let (m, k, n) = (d.m, d.k, d.n);
    let (ars, acs, brs, bcs) = d.strides();
    let rows = row_end - row_start;
    let mut bufs = Buffers::default();
    for s in 0..d.batch {
        let a_s = &a[s * d.a_batch_stride..s * d.a_batch_stride + m * k];
        let b_s = &b[s * d.b_batch_stride..s * d.b_batch_stride + k * n];
        let c_s = &mut out[s * m * n..(s + 1) * m * n];
        if k == 0 {
            for v in &mut c_s[row_start * n..row_end * n] {
                *v = 0.0;
            }
        } else if rows <= if d.trans_b { blk.small_m_tb } else { blk.small_m } {
            small::small_m(a_s, ars, acs, b_s, brs, bcs, k, n, row_start, row_end, c_s, &mut bufs.a);
        } else {
            blocked::<K>(a_s, ars, acs, b_s, brs, bcs, k, n, row_start, row_end, c_s, blk, &mut bufs);
        }
    }
}

#[derive(Default)]
struct Buffers {
    a: Vec<f32>,
    b: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn blocked<K: MicroKernel>(
    a: &[f32], ars: usize, acs: usize, b: &[f32], brs: usize, bcs: usize, k: usize, n: usize,
    r0: usize, r1: usize, c: &mut [f32], blk: &Blocking, bufs: &mut Buffers,
) {
    let (mr, nr) = (K::MR, K::NR);
    let kc_max = blk.kc.min(k);
    let mc_max = (blk.mc / mr * mr).max(mr).min((r1 - r0 + mr - 1) / mr * mr);
    let nc_max = (blk.nc / nr * nr).max(nr).min((n + nr - 1) / nr * nr);
    if bufs.a.len() < mc_max * kc_max {
        bufs.a.resize(mc_max * kc_max, 0.0);
    }
    if bufs.b.len() < nc_max * kc_max {
        bufs.b.resize(nc_max * kc_max, 0.0);
    }
    let mut edge = [0f32; 16 * 16];
    assert!(mr * nr <= edge.len() && c.len() >= r1 * n);
    let cp = c.as_mut_ptr();
    let mut jc = 0;
    while jc < n {
        let nc = nc_max.min(n - jc);
        let mut pc = 0;
        while pc < k {
            let kc = kc_max.min(k - pc);
            let first = pc == 0;
            pack::pack_b(b, brs, bcs, pc, kc, jc, nc, nr, &mut bufs.b);
            let mut ic = r0;
            while ic < r1 {
                let mc = mc_max.min(r1 - ic);
                pack::pack_a(a, ars, acs, ic, mc, pc, kc, mr, &mut bufs.a);
                let mut jr = 0;
                while jr < nc {
                    let cols = nr.min(nc - jr);
                    let bp = bufs.b[jr * kc..].as_ptr();
                    let mut ir = 0;
                    while ir < mc {
                        let rows = mr.min(mc - ir);
                        let ap = bufs.a[ir * kc..].as_ptr();
                        // SAFETY: the packed panels hold kc*mr and kc*nr floats (asserted by the
                        // slicing above); the C tile lies inside rows < r1 ≤ c.len()/n, cols < n.
                        unsafe {
                            let ct = cp.add((ic + ir) * n + jc + jr);
                            if rows == mr && cols == nr {
                                K::run(kc, ap, bp, nr, ct, n, first);
                            } else {
                                K::run(kc, ap, bp, nr, edge.as_mut_ptr(), nr, true);
                                for r in 0..rows {
                                    for cc in 0..cols {
                                        let dst = ct.add(r * n + cc);
                                        let v = edge[r * nr + cc];
                                        *dst = if first { v } else { *dst + v };
                                    }
                                }
                            }
                        }
                        ir += mr;
                    }
                    jr += nr;
                }
                ic += mc;
            }
            pc += kc;
        }
        jc += nc;
    }
}
