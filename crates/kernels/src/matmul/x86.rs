//! x86-64 AVX2+FMA micro-kernel for the blocked matmul, chosen at run time (`avx2_fma()`).
//! 6 rows × 16 columns: 12 ymm accumulators + 2 B vectors + 1 broadcast (of 16 ymm registers),
//! one `vfmadd231ps` per accumulator per k step. Packing, blocking and edge tiles are the generic
//! driver's (`gemm::<K6x16>`); only the inner kernel is compiled with `avx2,fma`.
//! Same semantics as the 4-wide path up to float reassociation (FMA rounds once per step).

use super::kernel::MicroKernel;
use core::arch::x86_64::*;
use std::sync::atomic::{AtomicU8, Ordering};

static AVX2_FMA: AtomicU8 = AtomicU8::new(0); // 0 = not probed yet, 1 = absent, 2 = present

/// Whether this CPU has AVX2 and FMA (probed once, cached).
#[inline]
pub fn avx2_fma() -> bool {
    match AVX2_FMA.load(Ordering::Relaxed) {
        2 => true,
        1 => false,
        _ => {
            let yes = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            AVX2_FMA.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// The AVX2+FMA tile. Only use it after `avx2_fma()` returned true.
pub struct K6x16;

impl MicroKernel for K6x16 {
    const MR: usize = 6;
    const NR: usize = 16;
    #[inline(always)]
    unsafe fn run(kc: usize, a: *const f32, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, first: bool) {
        kernel_6x16(kc, a, b, ldb, c, ldc, first)
    }
}

/// # Safety
/// AVX2 and FMA present; `a` holds kc*6 floats, `b` (kc-1)*ldb + 16, `c` 5*ldc + 16.
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn kernel_6x16(kc: usize, a: *const f32, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, first: bool) {
    let z = _mm256_setzero_ps();
    let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
    let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        let a0 = _mm256_broadcast_ss(&*ap);
        c00 = _mm256_fmadd_ps(a0, b0, c00);
        c01 = _mm256_fmadd_ps(a0, b1, c01);
        let a1 = _mm256_broadcast_ss(&*ap.add(1));
        c10 = _mm256_fmadd_ps(a1, b0, c10);
        c11 = _mm256_fmadd_ps(a1, b1, c11);
        let a2 = _mm256_broadcast_ss(&*ap.add(2));
        c20 = _mm256_fmadd_ps(a2, b0, c20);
        c21 = _mm256_fmadd_ps(a2, b1, c21);
        let a3 = _mm256_broadcast_ss(&*ap.add(3));
        c30 = _mm256_fmadd_ps(a3, b0, c30);
        c31 = _mm256_fmadd_ps(a3, b1, c31);
        let a4 = _mm256_broadcast_ss(&*ap.add(4));
        c40 = _mm256_fmadd_ps(a4, b0, c40);
        c41 = _mm256_fmadd_ps(a4, b1, c41);
        let a5 = _mm256_broadcast_ss(&*ap.add(5));
        c50 = _mm256_fmadd_ps(a5, b0, c50);
        c51 = _mm256_fmadd_ps(a5, b1, c51);
        ap = ap.add(6);
        bp = bp.add(ldb);
    }
    let rows = [(c00, c01), (c10, c11), (c20, c21), (c30, c31), (c40, c41), (c50, c51)];
    for (r, &(x0, x1)) in rows.iter().enumerate() {
        let p = c.add(r * ldc);
        if first {
            _mm256_storeu_ps(p, x0);
            _mm256_storeu_ps(p.add(8), x1);
        } else {
            _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), x0));
            _mm256_storeu_ps(p.add(8), _mm256_add_ps(_mm256_loadu_ps(p.add(8)), x1));
        }
    }
}
