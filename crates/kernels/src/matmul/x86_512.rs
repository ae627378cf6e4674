//! x86-64 AVX-512F micro-kernels for the blocked matmul, chosen at run time (`avx512()`), behind
//! the cargo feature `avx512` (AVX-512 intrinsics are stable from Rust 1.89; the crate itself
//! must still build with 1.63, where the feature stays off).
//!
//! MR rows × 32 columns: 2·MR zmm accumulators + 2 B vectors, A broadcast from memory (embedded
//! `{1to16}` broadcasts), of 32 zmm registers; one `vfmadd231ps` per accumulator per k step.
//! K12x32 is the one `matmul` uses (24 accumulators: 12 FMAs in flight per port hide the 4-cycle
//! latency; 14 loads per 24 FMAs); K14x32 and K6x64 are kept for the benchmark. Measured on a
//! 16-core AVX-512 Xeon VM, one thread, 1024³ GFLOP/s (two runs): AVX2 K6x16 76 / 56, K12x32
//! 140 / 112, K14x32 142 / 116, K6x64 132 / 115; with B transposed K12x32 124 / 94, K14x32
//! 99 / 102; 128x576x1536: K12x32 112, K14x32 80, K6x64 82. So 12x32.
//! Packing, blocking and edge tiles are the generic driver's (`gemm::<K12x32>`).
//!
//! Numerics as the AVX2 tile: every lane runs the same FMA chain from zero over one kc slice, then
//! the slice sum is stored (first slice) or added to C, so an element's value does not depend on
//! which tile, lane or thread computed it (what the pool's bit-identity rests on).

// the intrinsics are newer than the crate's MSRV, which is why this file sits behind `avx512`
#![allow(clippy::incompatible_msrv, clippy::needless_range_loop)]

use super::kernel::MicroKernel;
use core::arch::x86_64::*;
use std::sync::atomic::{AtomicU8, Ordering};

static AVX512: AtomicU8 = AtomicU8::new(0); // 0 = not probed yet, 1 = absent, 2 = present

/// Whether this CPU has AVX-512F (and AVX2+FMA, which every AVX-512 CPU has), probed once.
#[inline]
pub fn avx512() -> bool {
    match AVX512.load(Ordering::Relaxed) {
        2 => true,
        1 => false,
        _ => {
            let yes = std::is_x86_feature_detected!("avx512f") && super::x86::avx2_fma();
            AVX512.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// # Safety
/// AVX-512F present; `a` holds kc*MR floats, `b` (kc-1)*ldb + 16*NV, `c` (MR-1)*ldc + 16*NV.
#[inline(always)]
unsafe fn tile<const MR: usize, const NV: usize>(kc: usize, a: *const f32, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, first: bool) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let mut bv = [_mm512_setzero_ps(); NV];
        for v in 0..NV {
            bv[v] = _mm512_loadu_ps(bp.add(16 * v));
        }
        for r in 0..MR {
            let ar = _mm512_set1_ps(*ap.add(r));
            for v in 0..NV {
                acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
            }
        }
        ap = ap.add(MR);
        bp = bp.add(ldb);
    }
    for r in 0..MR {
        for v in 0..NV {
            let p = c.add(r * ldc + 16 * v);
            let x = if first { acc[r][v] } else { _mm512_add_ps(_mm512_loadu_ps(p), acc[r][v]) };
            _mm512_storeu_ps(p, x);
        }
    }
}

macro_rules! avx512_kernel {
    ($(#[$doc:meta])* $name:ident, $fname:ident, $mr:literal, $nv:literal) => {
        $(#[$doc])*
        pub struct $name;
        impl MicroKernel for $name {
            const MR: usize = $mr;
            const NR: usize = 16 * $nv;
            #[inline(always)]
            unsafe fn run(kc: usize, a: *const f32, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, first: bool) {
                $fname(kc, a, b, ldb, c, ldc, first)
            }
        }
        /// # Safety
        /// AVX-512F present; sizes as `MicroKernel::run`.
        #[target_feature(enable = "avx512f,avx2,fma")]
        #[inline(never)]
        unsafe fn $fname(kc: usize, a: *const f32, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, first: bool) {
            tile::<$mr, $nv>(kc, a, b, ldb, c, ldc, first)
        }
    };
}

avx512_kernel!(
    /// The AVX-512 tile `matmul` uses: 12 rows × 32 columns. Only use it after `avx512()`.
    K12x32, kernel_12x32, 12, 2
);
/// Tiles measured against K12x32 (x86_512_tests::bench_avx512_matmul).
#[cfg(test)]
pub mod alt {
    use super::{tile, MicroKernel};
    avx512_kernel!(
        /// 14 rows × 32 columns (28 accumulators), measured against K12x32 (x86_512_tests).
        K14x32, kernel_14x32, 14, 2
    );
    avx512_kernel!(
        /// 6 rows × 64 columns (24 accumulators, 4 B loads + 6 broadcasts per k step).
        K6x64, kernel_6x64, 6, 4
    );
}
