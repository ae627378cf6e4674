//! Fused cross-entropy over logits [rows, vocab] against i32 targets, and its gradient.
//! Rows whose target equals `ignore_index` are skipped; any other target outside [0, vocab) is an
//! error Err((row, target)) for the first such row (the JS backend throws a ValueError there).

use super::{exp_shift_store, scale_in_place};
use crate::elementwise::simd::max_skip_nan;

fn log_sum_exp_reference(x: &[f32]) -> f64 {
    let mut max = f64::NEG_INFINITY;
    for &v in x {
        if v as f64 > max {
            max = v as f64;
        }
    }
    let mut sum = 0f64;
    for &v in x {
        sum += (v as f64 - max).exp();
    }
    max + sum.ln()
}

/// First row (in order) whose target is neither the ignore index nor inside [0, vocab).
fn check_targets(targets: &[i32], rows: usize, vocab: usize, ignore_index: i32) -> Result<usize, (usize, i32)> {
    let mut count = 0;
    for (r, &t) in targets[..rows].iter().enumerate() {
        if t == ignore_index {
            continue;
        }
        if t < 0 || t as usize >= vocab {
            return Err((r, t));
        }
        count += 1;
    }
    Ok(count)
}

pub fn cross_entropy_reference(logits: &[f32], targets: &[i32], rows: usize, vocab: usize, ignore_index: i32) -> Result<f32, (usize, i32)> {
    let count = check_targets(targets, rows, vocab, ignore_index)?;
    let mut total = 0f64;
    for r in 0..rows {
        let t = targets[r];
        if t == ignore_index {
            continue;
        }
        let row = &logits[r * vocab..(r + 1) * vocab];
        total += log_sum_exp_reference(row) - row[t as usize] as f64;
    }
    Ok(if count > 0 { (total / count as f64) as f32 } else { 0.0 })
}

/// Mean over non-ignored rows of logsumexp(row) − row[target]; 0 when every row is ignored.
/// (The exps of one row go to a buffer allocated once per call.)
pub fn cross_entropy(logits: &[f32], targets: &[i32], rows: usize, vocab: usize, ignore_index: i32) -> Result<f32, (usize, i32)> {
    let count = check_targets(targets, rows, vocab, ignore_index)?;
    if count == 0 {
        return Ok(0.0);
    }
    let mut e = vec![0f32; vocab];
    let mut total = 0f64;
    for r in 0..rows {
        let t = targets[r];
        if t == ignore_index {
            continue;
        }
        let row = &logits[r * vocab..(r + 1) * vocab];
        let m = max_skip_nan(row);
        let sum = exp_shift_store(row, m, &mut e);
        total += m as f64 + sum.ln() - row[t as usize] as f64;
    }
    Ok((total / count as f64) as f32)
}

#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_backward_reference(logits: &[f32], targets: &[i32], d_loss: f32, rows: usize, vocab: usize, ignore_index: i32, out: &mut [f32]) -> Result<(), (usize, i32)> {
    let out = &mut out[..rows * vocab];
    for v in out.iter_mut() {
        *v = 0.0;
    }
    let count = check_targets(targets, rows, vocab, ignore_index)?;
    if count == 0 {
        return Ok(());
    }
    let scale = d_loss as f64 / count as f64;
    for r in 0..rows {
        let t = targets[r];
        if t == ignore_index {
            continue;
        }
        let row = &logits[r * vocab..(r + 1) * vocab];
        let lse = log_sum_exp_reference(row);
        let o = &mut out[r * vocab..(r + 1) * vocab];
        for j in 0..vocab {
            o[j] = ((row[j] as f64 - lse).exp() * scale) as f32;
        }
        o[t as usize] = (o[t as usize] as f64 - scale) as f32;
    }
    Ok(())
}

/// d logits = (softmax(row) − onehot(target))·d_loss/count for non-ignored rows, 0 for ignored.
/// `out` [rows, vocab] is overwritten (also on error, where its content is unspecified).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_backward(logits: &[f32], targets: &[i32], d_loss: f32, rows: usize, vocab: usize, ignore_index: i32, out: &mut [f32]) -> Result<(), (usize, i32)> {
    let count = check_targets(targets, rows, vocab, ignore_index)?;
    let out = &mut out[..rows * vocab];
    if count == 0 {
        for v in out.iter_mut() {
            *v = 0.0;
        }
        return Ok(());
    }
    let scale = d_loss as f64 / count as f64;
    for r in 0..rows {
        let t = targets[r];
        let o = &mut out[r * vocab..(r + 1) * vocab];
        if t == ignore_index {
            for v in o.iter_mut() {
                *v = 0.0;
            }
            continue;
        }
        let row = &logits[r * vocab..(r + 1) * vocab];
        let m = max_skip_nan(row);
        let sum = exp_shift_store(row, m, o);
        scale_in_place(o, (scale / sum) as f32);
        o[t as usize] = (o[t as usize] as f64 - scale) as f32;
    }
    Ok(())
}
