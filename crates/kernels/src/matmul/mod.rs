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
//! driver with x86.rs's 6x16 FMA tile and `Blocking::AVX2` instead; with AVX-512F (and the cargo
//! feature `avx512`, which needs Rust ≥ 1.89) x86_512.rs's 12x32 tile and `Blocking::AVX512`.
//! `plan` and `matmul_block` let a caller split one matmul over threads in rows and columns with
//! every element bit-identical to the one-call result.
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
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
pub(crate) mod x86_512;
#[cfg(all(test, target_arch = "x86_64", feature = "avx512"))]
mod x86_512_tests;

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
/// output (or each holding a full-size one) can split the rows between them. The unpacked or
/// packed path is picked from the row count of the range (see `matmul_block` for a split whose
/// pieces all go the whole problem's way).
pub fn matmul_rows(a: &[f32], b: &[f32], d: &MatmulDims, row_start: usize, row_end: usize, out: &mut [f32]) {
    match active() {
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        Active::Avx512 => gemm::<x86_512::K12x32>(a, b, d, row_start, row_end, out, &Blocking::AVX512),
        #[cfg(target_arch = "x86_64")]
        Active::Avx2 => gemm::<x86::K6x16>(a, b, d, row_start, row_end, out, &Blocking::AVX2),
        Active::Portable => gemm::<Tile>(a, b, d, row_start, row_end, out, &Blocking::DEFAULT),
    }
}

/// How the dispatched `matmul` runs a problem; what a caller splitting it over threads needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulPlan {
    /// The unpacked `small` path (few rows): `matmul_block` then takes only whole output rows.
    pub small: bool,
    /// Tile rows and columns of the micro-kernel in use (row / column cuts at multiples of these
    /// keep every tile whole; any cut is bit-identical anyway, see `matmul_block`).
    pub mr: usize,
    pub nr: usize,
    /// "avx512 12x32", "avx2 6x16" or "simd128 4x8".
    pub kernel: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Active {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

#[inline]
fn active() -> Active {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    {
        if x86_512::avx512() {
            return Active::Avx512;
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        if x86::avx2_fma() {
            return Active::Avx2;
        }
    }
    Active::Portable
}

/// Whether `matmul` would fold the batches of `d` into one tall matmul (B shared by every batch,
/// A's batches back to back).
fn folds(d: &MatmulDims) -> bool {
    d.batch > 1 && d.b_batch_stride == 0 && !d.trans_a && d.a_batch_stride == d.m * d.k
}

fn plan_with(d: &MatmulDims, blk: &Blocking, mr: usize, nr: usize, kernel: &'static str) -> MatmulPlan {
    let m = if folds(d) { d.batch * d.m } else { d.m };
    let small = d.k > 0 && m <= if d.trans_b { blk.small_m_tb } else { blk.small_m };
    MatmulPlan { small, mr, nr, kernel }
}

/// The plan of `matmul(a, b, d, ..)` on this CPU.
pub fn plan(d: &MatmulDims) -> MatmulPlan {
    match active() {
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        Active::Avx512 => plan_with(d, &Blocking::AVX512, 12, 32, "avx512 12x32"),
        #[cfg(target_arch = "x86_64")]
        Active::Avx2 => plan_with(d, &Blocking::AVX2, 6, 16, "avx2 6x16"),
        Active::Portable => plan_with(d, &Blocking::DEFAULT, Tile::MR, Tile::NR, "simd128 4x8"),
    }
}

/// Writes rows [r0, r1) × columns [j0, j1) of batch `s` of the output, bit-identical to what
/// `matmul(a, b, d, out)` writes there: the path (unpacked or packed) is the whole problem's
/// (`plan(d)`), and the packed path computes every element the same way whatever tile, block or
/// range it falls in (each kernel lane runs one FMA chain per kc slice, kc slices start at p = 0
/// whatever the range). So workers may cover the output with disjoint rectangles in any split.
/// On the unpacked path the columns must be all of [0, n).
///
/// # Safety
/// `out` points to d.out_len() writable floats; no other thread reads or writes the rectangle
/// while this runs (other threads may write other elements of `out`).
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_block(a: &[f32], b: &[f32], d: &MatmulDims, s: usize, r0: usize, r1: usize, j0: usize, j1: usize, out: *mut f32) {
    match active() {
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        Active::Avx512 => block::<x86_512::K12x32>(a, b, d, s, r0, r1, j0, j1, out, &Blocking::AVX512),
        #[cfg(target_arch = "x86_64")]
        Active::Avx2 => block::<x86::K6x16>(a, b, d, s, r0, r1, j0, j1, out, &Blocking::AVX2),
        Active::Portable => block::<Tile>(a, b, d, s, r0, r1, j0, j1, out, &Blocking::DEFAULT),
    }
}

/// Cuts one batch's output [m, n] into at most `parts` rectangles (r0, r1, j0, j1) for
/// `matmul_block` workers, covering it exactly once. The unpacked path: whole rows, cut at even
/// rows. The packed path: a grid of row pieces (cuts at multiples of plan.mr) × column pieces
/// (multiples of plan.nr), the grid whose largest piece costs least, counting its multiply-adds
/// (rows·cols) and its packing of A and B ((rows + cols)·16, each packed element about 16 lanes of
/// FMA), so square problems get square-ish pieces rather than thin row strips.
pub fn split_grid(m: usize, n: usize, plan: &MatmulPlan, parts: usize) -> Vec<(usize, usize, usize, usize)> {
    let parts = parts.max(1);
    if m == 0 || n == 0 {
        return vec![];
    }
    let cuts = |len: usize, step: usize, pieces: usize| -> Vec<(usize, usize)> {
        let units = (len + step - 1) / step;
        let pieces = pieces.min(units).max(1);
        (0..pieces)
            .map(|i| ((units * i / pieces * step).min(len), (units * (i + 1) / pieces * step).min(len)))
            .filter(|r| r.1 > r.0)
            .collect()
    };
    if plan.small {
        return cuts(m, 2, parts).into_iter().map(|(r0, r1)| (r0, r1, 0, n)).collect();
    }
    let (mp, np) = ((m + plan.mr - 1) / plan.mr, (n + plan.nr - 1) / plan.nr);
    let mut best = (usize::MAX, 0, 1, 1);
    for pr in 1..=parts.min(mp) {
        let pc = (parts / pr).min(np).max(1);
        let rows = ((mp + pr - 1) / pr * plan.mr).min(m);
        let cols = ((np + pc - 1) / pc * plan.nr).min(n);
        let cost = rows * cols + 16 * (rows + cols);
        if cost < best.0 || (cost == best.0 && pr * pc < best.1) {
            best = (cost, pr * pc, pr, pc);
        }
    }
    let (rows, cols) = (cuts(m, plan.mr, best.2), cuts(n, plan.nr, best.3));
    let mut out = Vec::with_capacity(rows.len() * cols.len());
    for &(r0, r1) in &rows {
        for &(j0, j1) in &cols {
            out.push((r0, r1, j0, j1));
        }
    }
    out
}

/// `matmul_block` with a given kernel and blocking.
#[allow(clippy::too_many_arguments)]
unsafe fn block<K: MicroKernel>(
    a: &[f32], b: &[f32], d: &MatmulDims, s: usize, r0: usize, r1: usize, j0: usize, j1: usize, out: *mut f32, blk: &Blocking,
) {
    assert!(a.len() >= d.a_len() && b.len() >= d.b_len(), "matmul_block: a or b too short");
    assert!(s < d.batch && r0 <= r1 && r1 <= d.m && j0 <= j1 && j1 <= d.n, "matmul_block: range out of bounds");
    if r0 == r1 || j0 == j1 {
        return;
    }
    let small = plan_with(d, blk, K::MR, K::NR, "").small;
    assert!(!small || (j0 == 0 && j1 == d.n), "matmul_block: the unpacked path takes whole rows");
    with_buffers(|bufs| gemm_batch::<K>(a, b, d, s, r0, r1, j0, j1, out, small, blk, bufs));
}

/// Which micro-kernel the optimized matmul uses off x86-64 (measured: see tests::bench_tiles).
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
    /// x86-64 AVX-512F tile (x86_512::K12x32). x86_512_tests::bench_avx512_blocking on a 16-core
    /// AVX-512 Xeon VM (48 KiB L1d, 2 MiB L2 a core), 1024³ one thread: kc 256..768 × mc 96..192
    /// all gave 108-135 GFLOP/s, the order changing between runs (noise ±10%); this one kept.
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    const AVX512: Blocking = Blocking { kc: 384, mc: 144, nc: 2048, small_m: 8, small_m_tb: 4 };
}

fn gemm<K: MicroKernel>(a: &[f32], b: &[f32], d: &MatmulDims, row_start: usize, row_end: usize, out: &mut [f32], blk: &Blocking) {
    d.check(a, b, out);
    let row_end = row_end.min(d.m);
    if row_start >= row_end || d.n == 0 || d.batch == 0 {
        return;
    }
    let mut d = *d;
    // B shared by every batch and A's batches back to back: one matmul with batch·m rows
    if folds(&d) && row_start == 0 && row_end == d.m {
        d = MatmulDims { batch: 1, m: d.batch * d.m, ..d };
        return gemm::<K>(a, b, &d, 0, d.m, out, blk);
    }
    let rows = row_end - row_start;
    let small = d.k > 0 && rows <= if d.trans_b { blk.small_m_tb } else { blk.small_m };
    let o = out.as_mut_ptr();
    with_buffers(|bufs| {
        for s in 0..d.batch {
            // SAFETY: `out` is borrowed exclusively and holds out_len() floats (checked).
            unsafe { gemm_batch::<K>(a, b, &d, s, row_start, row_end, 0, d.n, o, small, blk, bufs) };
        }
    });
}

/// Rows [r0, r1) × columns [j0, j1) of batch s (ranges within bounds, non-empty).
///
/// # Safety
/// `out` holds d.out_len() floats and the rectangle is this call's alone.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_batch<K: MicroKernel>(
    a: &[f32], b: &[f32], d: &MatmulDims, s: usize, r0: usize, r1: usize, j0: usize, j1: usize, out: *mut f32,
    small: bool, blk: &Blocking, bufs: &mut Buffers,
) {
    let (m, k, n) = (d.m, d.k, d.n);
    let (ars, acs, brs, bcs) = d.strides();
    let a_s = &a[s * d.a_batch_stride..s * d.a_batch_stride + m * k];
    let b_s = &b[s * d.b_batch_stride..s * d.b_batch_stride + k * n];
    let c_s = out.add(s * m * n);
    if k == 0 {
        for i in r0..r1 {
            for j in j0..j1 {
                *c_s.add(i * n + j) = 0.0;
            }
        }
    } else if small {
        debug_assert!(j0 == 0 && j1 == n);
        // the rows' own slice of the output, A from row r0 on (A(r0 + r, p) = a[r0·ars + r·ars + p·acs])
        let c = std::slice::from_raw_parts_mut(c_s.add(r0 * n), (r1 - r0) * n);
        small::small_m(&a_s[r0 * ars..], ars, acs, b_s, brs, bcs, k, n, 0, r1 - r0, c, &mut bufs.a);
    } else {
        blocked::<K>(a_s, ars, acs, b_s, brs, bcs, k, n, r0, r1, j0, j1, c_s, blk, bufs);
    }
}

#[derive(Default)]
struct Buffers {
    a: Vec<f32>,
    b: Vec<f32>,
}

std::thread_local! {
    /// Each thread's packing buffers, kept between calls: a fresh 3 MiB B panel per call and per
    /// thread meant page faults and unmaps on every matmul (through the addon, 1024³ on 16 threads
    /// took ~5 ms where the kernel needs ~2.5). Packing writes every element it uses (zero padding
    /// included), so reused contents never leak into results.
    static BUFFERS: core::cell::RefCell<Buffers> = core::cell::RefCell::new(Buffers::default());
}

/// Runs f with this thread's packing buffers (fresh ones if a caller up the stack holds them).
fn with_buffers<R>(f: impl FnOnce(&mut Buffers) -> R) -> R {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => f(&mut bufs),
        Err(_) => f(&mut Buffers::default()),
    })
}

/// # Safety
/// `cp` holds rows [0, r1) of an [m, n] output and the rectangle [r0, r1) × [j0, j1) is the caller's.
#[allow(clippy::too_many_arguments)]
unsafe fn blocked<K: MicroKernel>(
    a: &[f32], ars: usize, acs: usize, b: &[f32], brs: usize, bcs: usize, k: usize, n: usize,
    r0: usize, r1: usize, j0: usize, j1: usize, cp: *mut f32, blk: &Blocking, bufs: &mut Buffers,
) {
    let (mr, nr) = (K::MR, K::NR);
    let kc_max = blk.kc.min(k);
    let mc_max = (blk.mc / mr * mr).max(mr).min((r1 - r0 + mr - 1) / mr * mr);
    let nc_max = (blk.nc / nr * nr).max(nr).min((j1 - j0 + nr - 1) / nr * nr);
    if bufs.a.len() < mc_max * kc_max {
        bufs.a.resize(mc_max * kc_max, 0.0);
    }
    if bufs.b.len() < nc_max * kc_max {
        bufs.b.resize(nc_max * kc_max, 0.0);
    }
    let mut edge = [0f32; 16 * 64];
    assert!(mr * nr <= edge.len() && j1 <= n);
    let mut jc = j0;
    while jc < j1 {
        let nc = nc_max.min(j1 - jc);
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
                        // slicing above); the C tile lies inside rows < r1, cols < j1 ≤ n, which
                        // the caller owns.
                        #[allow(unused_unsafe)] // needed before Rust 1.65's unsafe_op_in_unsafe_fn change
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
