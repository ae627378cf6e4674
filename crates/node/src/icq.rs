//! ICQ's entropy search (crates/kernels quant/icq.rs) over the process-wide pool: rows are split
//! into ranges, each searched by the one-threaded kernel (every group is independent, so the
//! result is bit-identical to one thread).

use crate::args::{err, prod, size, View};
use crate::pool;
use napi::Result;
use napi_derive::napi;
use quantlora_kernels::quant;
use rayon::prelude::*;

/// out[g] = τ (nf) or clip ratio (int) of each group. params = [lambda, n, sigma, clipLow,
/// clipHigh, clipPoints]. Returns -1, or the index of the first non-finite weight.
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)]
pub fn icq_search(w: View<f32>, rows: f64, cols: f64, kind: u32, bits: u32, group: f64, double_quant: bool, symmetric: bool, params: Vec<f64>, out: View<f32>) -> Result<i32> {
    const F: &str = "icqSearch";
    let (rows, cols) = (size(F, "rows", rows)?, size(F, "cols", cols)?);
    let fm = crate::format(F, kind, bits, group, double_quant, symmetric)?;
    if params.len() != 6 || params.iter().any(|v| !v.is_finite()) {
        return Err(err(format!("{F}: params must be 6 finite numbers [lambda, n, sigma, clipLow, clipHigh, clipPoints], got {params:?}")));
    }
    let p = quant::IcqParams {
        lambda: params[0],
        n: size(F, "n", params[1])?,
        sigma: params[2],
        clip_low: params[3],
        clip_high: params[4],
        clip_points: size(F, "clipPoints", params[5])?,
    };
    let n = prod(F, &[rows, cols])?;
    let gpr = quant::groups_per_row(cols, &fm);
    let groups = prod(F, &[rows, gpr])?;
    w.need(F, "w", n)?;
    out.need(F, "out", groups)?;
    let o = [out.range(groups)];
    let w = w.input(n, &o);
    let out = unsafe { out.output(groups) };
    if groups == 0 {
        return Ok(-1);
    }
    let pool = pool::pool();
    // about 4 row ranges per thread; a range of at least one row
    let per = (rows / (pool.current_num_threads() * 4)).max(1);
    let failed = pool.install(|| {
        out.par_chunks_mut(per * gpr)
            .enumerate()
            .filter_map(|(i, o)| {
                let (r0, r1) = (i * per, (i * per + per).min(rows));
                quant::icq_search(&w[r0 * cols..r1 * cols], r1 - r0, cols, &fm, &p, o).err().map(|e| r0 * cols + e)
            })
            .min()
    });
    Ok(failed.map_or(-1, |i| i as i32))
}
