//! The backward of dequantizeMatmul without a float copy of the weight: dx = dy · W
//! (crates/kernels quant/matmul_t.rs), output columns split over the process-wide pool
//! (`pool::dequantize_matmul_t`: bit-identical to one thread).

use crate::args::{prod, size, View};
use crate::pool;
use napi::Result;
use napi_derive::napi;

/// out [n, cols] = dy [n, rows] · W, W = dequantize(parts) of shape [rows, cols].
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)]
pub fn dequantize_matmul_t(dy: View<f32>, n: f64, #[napi(ts_arg_type = "Uint8Array[]")] parts: Vec<View<u8>>, rows: f64, cols: f64, kind: u32, bits: u32, group: f64, double_quant: bool, symmetric: bool, out: View<f32>) -> Result<()> {
    const F: &str = "dequantizeMatmulT";
    let (n, rows, cols) = (size(F, "n", n)?, size(F, "rows", rows)?, size(F, "cols", cols)?);
    let fm = crate::format(F, kind, bits, group, double_quant, symmetric)?;
    let lens = crate::part_bytes(F, rows, cols, &fm)?;
    crate::check_parts(F, &parts, &lens)?;
    let (ndy, no) = (prod(F, &[n, rows])?, prod(F, &[n, cols])?);
    dy.need(F, "dy", ndy)?;
    out.need(F, "out", no)?;
    let o = [out.range(no)];
    let p = crate::parts_in(&parts, &lens, &o);
    let dy = dy.input(ndy, &o);
    pool::dequantize_matmul_t(&dy, n, &p.parts(), rows, cols, &fm, unsafe { out.output(no) });
    Ok(())
}
