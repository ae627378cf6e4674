//! ICQ (IR-QLoRA's information calibration quantization): per group, the calibration value that
//! maximizes the entropy of the group's code histogram. NF: the offset τ subtracted before
//! quantizing; INT: the clip ratio p that scales the group's range. One f32 per group, bit-exact
//! with the TS reference (ts/quant/icq.ts; the definitions are written down in ts/quant/formats.ts,
//! "ICQ").
//!
//! Entropy comparisons are exact functions of integer histograms: a candidate's score is
//! S = sum over codes (in code order) of c·ln(c), the table of c·ln(c) built with `ln_int` from
//! +, -, *, / only (so JS and Rust get the same bits, whatever their libm), and a candidate wins
//! only when S drops by more than ICQ_TIE·n (entropy up by more than 1e-9 nats), so float noise
//! in S (~1e-16 relative) can never decide; mathematically equal entropies are ties.
//!
//! Two versions: `icq_search_reference` evaluates every candidate on every element (the spec,
//! line by line); `icq_search` sorts each group once and finds the histogram from the code
//! boundaries in the sorted group (codes are monotone in w for a fixed candidate: every step is a
//! monotone float operation), walking each boundary from where the previous candidate left it, so
//! a candidate costs O(codes) code evaluations instead of O(group). Both give identical histograms.

use super::reference::scale_to_unit;
use super::tables::{f32_toward_zero, nf_table, round_half_away, NfTable};
use super::{groups_per_row, Format, Kind};

/// A candidate must raise the entropy by more than this many nats to replace the best.
pub const ICQ_TIE: f64 = 1e-9;

/// Search parameters (defaults: IR-QLoRA's λ = 0.1, n = 100, σ = 0.54109; INT clip ratios
/// {1} ∪ 101 points in [0.9, 1.1]).
#[derive(Clone, Copy, Debug)]
pub struct IcqParams {
    pub lambda: f64,
    pub n: usize,
    pub sigma: f64,
    pub clip_low: f64,
    pub clip_high: f64,
    pub clip_points: usize,
}

impl Default for IcqParams {
    fn default() -> Self {
        IcqParams { lambda: 0.1, n: 100, sigma: 0.54109, clip_low: 0.9, clip_high: 1.1, clip_points: 101 }
    }
}

const LN2: f64 = 0.6931471805599453;
const SQRT2: f64 = 1.4142135623730951;

/// ln(c) for a positive integer, from +, -, *, / only: c = 2^e·m with m in (0.707, 1.415], then
/// ln m = 2·atanh(z), z = (m-1)/(m+1), 14 terms of the series (|z| <= 0.172). Identical bits in
/// ts/quant/icq.ts lnInt.
pub fn ln_int(c: u32) -> f64 {
    if c <= 1 {
        return 0.0;
    }
    let mut m = c as f64;
    let mut e = 0.0f64;
    while m >= 2.0 {
        m /= 2.0;
        e += 1.0;
    }
    if m > SQRT2 {
        m /= 2.0;
        e += 1.0;
    }
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    let mut s = 0.0f64;
    let mut k = 14;
    while k > 0 {
        k -= 1;
        s = s * z2 + 1.0 / (2 * k + 1) as f64;
    }
    e * LN2 + 2.0 * z * s
}

/// c·ln(c) for c = 0..=n.
pub fn plogp_table(n: usize) -> Vec<f64> {
    (0..=n).map(|c| c as f64 * ln_int(c as u32)).collect()
}

/// S = sum of c·ln(c) over the histogram, in code order.
#[inline]
fn score(counts: &[u32], table: &[f64]) -> f64 {
    counts.iter().fold(0.0, |s, &c| s + table[c as usize])
}

/// NF candidate j of 2n+1: τ = f32(τ0 + f·A0), f = λ·σ·((j - n) / n) (f = 0 when n = 0).
#[inline]
pub fn nf_candidate(tau0: f32, a0: f64, j: usize, p: &IcqParams) -> f32 {
    let f = if p.n == 0 { 0.0 } else { p.lambda * p.sigma * ((j as f64 - p.n as f64) / p.n as f64) };
    (tau0 as f64 + f * a0) as f32
}

/// INT candidate i of 1 + clip_points: 1 first, then f32(low + (high - low)·(i-1) / (points - 1)).
#[inline]
pub fn clip_candidate(i: usize, p: &IcqParams) -> f32 {
    if i == 0 {
        return 1.0;
    }
    if p.clip_points <= 1 {
        return p.clip_low as f32;
    }
    (p.clip_low + (p.clip_high - p.clip_low) * (i - 1) as f64 / (p.clip_points - 1) as f64) as f32
}

/// The lower median (element (n-1)/2 of the block sorted with -0 before +0) and A0 = max|w - τ0|.
fn median_and_range(sorted: &[f32]) -> (f32, f64) {
    let tau0 = sorted[(sorted.len() - 1) / 2];
    let a0 = (sorted[0] as f64 - tau0 as f64).abs().max((sorted[sorted.len() - 1] as f64 - tau0 as f64).abs());
    (tau0, a0)
}

/// The INT group's standard scale and zero point (reference.ts quantizeInt) from lo <= 0 <= hi,
/// and the largest code a clipped value takes: maxq, or 2·zero for symmetric (its grid's end).
fn int_scale_zero(lo: f64, hi: f64, f: &Format) -> (f64, f64, f64) {
    let maxq = ((1u32 << f.bits) - 1) as f64;
    let half = ((1u32 << (f.bits - 1)) - 1) as f64;
    let mut scale = if f.symmetric { f32_toward_zero(hi.max(-lo) / half) } else { f32_toward_zero((hi - lo) / maxq) };
    if scale == 0.0 {
        scale = 1.0;
    }
    let zero = if f.symmetric { half } else { round_half_away(-lo / scale as f64).max(0.0).min(maxq) };
    (scale as f64, zero, if f.symmetric { 2.0 * half } else { maxq })
}

/// The INT ICQ code of x for clip ratio p: the standard rule applied to f32(x / p) with the
/// group's own scale and zero point, clamped to [0, top].
#[inline(always)]
fn int_code(x: f32, p: f32, s: f64, z: f64, top: f64) -> u32 {
    let v = (x as f64 / p as f64) as f32;
    (round_half_away(v as f64 / s) + z).max(0.0).min(top) as u32
}

/// The NF code of x for offset τ, with m = absmax of the shifted group and inv = f32(1 / m).
#[inline(always)]
fn nf_unit(x: f32, tau: f32, m: f32, inv: f32) -> f32 {
    scale_to_unit((x as f64 - tau as f64) as f32, m, inv)
}

fn sort_block(w: &[f32], buf: &mut Vec<f32>) {
    buf.clear();
    buf.extend_from_slice(w);
    buf.sort_unstable_by(|a, b| a.total_cmp(b));
}

// ---- reference: every candidate on every element ----

fn nf_block_reference(w: &[f32], t: &NfTable, p: &IcqParams, table: &[f64], buf: &mut Vec<f32>) -> f32 {
    sort_block(w, buf);
    let tau0 = buf[(w.len() - 1) / 2];
    let mut a0 = 0.0f64;
    for &x in w {
        a0 = a0.max((x as f64 - tau0 as f64).abs());
    }
    let (mut best, mut best_s) = (tau0, f64::INFINITY);
    for j in 0..=2 * p.n {
        let tau = nf_candidate(tau0, a0, j, p);
        let mut m = 0.0f32;
        for &x in w {
            m = m.max(((x as f64 - tau as f64) as f32).abs());
        }
        let inv = (1.0 / m as f64) as f32;
        let mut counts = [0u32; 16];
        for &x in w {
            let code = if m == 0.0 {
                t.zero_code as usize
            } else {
                let n = nf_unit(x, tau, m, inv);
                let mut c = 0;
                while c < t.len - 1 && n > t.thresholds[c] {
                    c += 1;
                }
                c
            };
            counts[code] += 1;
        }
        let s = score(&counts[..t.len], table);
        if s < best_s - ICQ_TIE * w.len() as f64 {
            best_s = s;
            best = tau;
        }
    }
    best
}

fn int_block_reference(w: &[f32], f: &Format, p: &IcqParams, table: &[f64]) -> f32 {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for &x in w {
        lo = lo.min(x as f64);
        hi = hi.max(x as f64);
    }
    let (s, z, top) = int_scale_zero(lo, hi, f);
    let len = 1usize << f.bits;
    let (mut best, mut best_s) = (1.0f32, f64::INFINITY);
    for i in 0..=p.clip_points {
        let pr = clip_candidate(i, p);
        let mut counts = [0u32; 16];
        for &x in w {
            counts[int_code(x, pr, s, z, top) as usize] += 1;
        }
        let sc = score(&counts[..len], table);
        if sc < best_s - ICQ_TIE * w.len() as f64 {
            best_s = sc;
            best = pr;
        }
    }
    best
}

// ---- optimized: sort once, histogram by binary search ----

/// counts[k] for k in 0..len from a monotone code function over sorted values (`code_le(x, k)`:
/// code(x) <= k, true then false along `sorted`). bounds[k] holds the number of values with code
/// <= k for the previous candidate and is walked to this one's: consecutive candidates move τ or p
/// by a tiny step, so a boundary moves by a few elements, usually none (any start is correct;
/// a far one only costs a longer walk).
#[inline(always)]
fn walk_counts(sorted: &[f32], len: usize, bounds: &mut [usize; 16], counts: &mut [u32; 16], code_le: impl Fn(f32, usize) -> bool) {
    let n = sorted.len();
    let mut prev = 0usize;
    for k in 0..len - 1 {
        let mut at = bounds[k];
        if at < n && code_le(sorted[at], k) {
            at += 1;
            while at < n && code_le(sorted[at], k) {
                at += 1;
            }
        } else {
            while at > 0 && !code_le(sorted[at - 1], k) {
                at -= 1;
            }
        }
        bounds[k] = at;
        counts[k] = (at - prev) as u32;
        prev = at;
    }
    counts[len - 1] = (n - prev) as u32;
}

fn nf_block(w: &[f32], t: &NfTable, p: &IcqParams, table: &[f64], buf: &mut Vec<f32>) -> f32 {
    sort_block(w, buf);
    let sorted = &buf[..];
    let (tau0, a0) = median_and_range(sorted);
    let (first, last) = (sorted[0], sorted[sorted.len() - 1]);
    let th = &t.thresholds;
    let (mut best, mut best_s) = (tau0, f64::INFINITY);
    let mut counts = [0u32; 16];
    let mut bounds = [sorted.len() / 2; 16];
    for j in 0..=2 * p.n {
        let tau = nf_candidate(tau0, a0, j, p);
        // f32(x - τ) is monotone in x: the absmax is at an end of the sorted group
        let m = ((first as f64 - tau as f64) as f32).abs().max(((last as f64 - tau as f64) as f32).abs());
        if m == 0.0 {
            counts = [0; 16];
            counts[t.zero_code as usize] = w.len() as u32;
        } else {
            let inv = (1.0 / m as f64) as f32;
            walk_counts(sorted, t.len, &mut bounds, &mut counts, |x, k| nf_unit(x, tau, m, inv) <= th[k]);
        }
        let s = score(&counts[..t.len], table);
        if s < best_s - ICQ_TIE * w.len() as f64 {
            best_s = s;
            best = tau;
        }
    }
    best
}

fn int_block(w: &[f32], f: &Format, p: &IcqParams, table: &[f64], buf: &mut Vec<f32>) -> f32 {
    sort_block(w, buf);
    let sorted = &buf[..];
    let lo = (sorted[0] as f64).min(0.0);
    let hi = (sorted[sorted.len() - 1] as f64).max(0.0);
    let (s, z, top) = int_scale_zero(lo, hi, f);
    let len = 1usize << f.bits;
    let (mut best, mut best_s) = (1.0f32, f64::INFINITY);
    let mut counts = [0u32; 16];
    let mut bounds = [sorted.len() / 2; 16];
    for i in 0..=p.clip_points {
        let pr = clip_candidate(i, p);
        walk_counts(sorted, len, &mut bounds, &mut counts, |x, k| int_code(x, pr, s, z, top) <= k as u32);
        let sc = score(&counts[..len], table);
        if sc < best_s - ICQ_TIE * w.len() as f64 {
            best_s = sc;
            best = pr;
        }
    }
    best
}

fn search(w: &[f32], rows: usize, cols: usize, f: &Format, p: &IcqParams, out: &mut [f32], optimized: bool) -> Result<(), usize> {
    assert_eq!(w.len(), rows * cols);
    if let Some(i) = w.iter().position(|x| !x.is_finite()) {
        return Err(i);
    }
    let gpr = groups_per_row(cols, f);
    assert!(out.len() >= rows * gpr, "icq_search: out has {} values, needs {}", out.len(), rows * gpr);
    let table = plogp_table(f.group.min(cols));
    let t = nf_table(f.bits);
    let mut buf = Vec::with_capacity(f.group.min(cols));
    for r in 0..rows {
        for gi in 0..gpr {
            let block = &w[r * cols + gi * f.group..r * cols + ((gi + 1) * f.group).min(cols)];
            out[r * gpr + gi] = match (f.kind, optimized) {
                (Kind::Nf, true) => nf_block(block, &t, p, &table, &mut buf),
                (Kind::Nf, false) => nf_block_reference(block, &t, p, &table, &mut buf),
                (Kind::Int, true) => int_block(block, f, p, &table, &mut buf),
                (Kind::Int, false) => int_block_reference(block, f, p, &table),
            };
        }
    }
    Ok(())
}

/// ICQ search over w [rows, cols]: out[g] = τ (NF) or clip ratio p (INT) of group g.
/// Err(i): w[i] is NaN or infinite (the first such index); nothing is written then.
pub fn icq_search(w: &[f32], rows: usize, cols: usize, f: &Format, p: &IcqParams, out: &mut [f32]) -> Result<(), usize> {
    search(w, rows, cols, f, p, out, true)
}

/// The scalar reference of `icq_search` (every candidate evaluated on every element).
pub fn icq_search_reference(w: &[f32], rows: usize, cols: usize, f: &Format, p: &IcqParams, out: &mut [f32]) -> Result<(), usize> {
    search(w, rows, cols, f, p, out, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn formats() -> Vec<Format> {
        let mut v = Vec::new();
        for &group in &[1usize, 2, 5, 16, 64] {
            for &bits in &[2u32, 3, 4] {
                v.push(Format { kind: Kind::Nf, bits, group, double_quant: true, symmetric: false });
                v.push(Format { kind: Kind::Int, bits, group, double_quant: false, symmetric: false });
                v.push(Format { kind: Kind::Int, bits, group, double_quant: false, symmetric: true });
            }
        }
        v
    }

    #[test]
    fn ln_int_is_accurate() {
        for c in 1..70000u32 {
            let (a, b) = (ln_int(c), (c as f64).ln());
            assert!((a - b).abs() <= 4.0 * f64::EPSILON * b.max(1.0), "ln({}) = {} vs {}", c, a, b);
        }
    }

    #[test]
    fn optimized_matches_reference() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let p = IcqParams { n: 20, clip_points: 21, ..IcqParams::default() };
        for f in formats() {
            for &(rows, cols) in &[(1usize, 1usize), (3, 7), (4, 70), (2, 129)] {
                let mut w: Vec<f32> = (0..rows * cols).map(|_| (0..4).map(|_| rng(&mut seed)).sum::<f32>() * 0.05).collect();
                // awkward content: an all-equal row, zeros, duplicates
                if rows > 2 {
                    for c in 0..cols {
                        w[cols + c] = 0.25;
                        w[2 * cols + c] = if c % 3 == 0 { 0.0 } else { w[2 * cols + c] };
                    }
                }
                let gpr = groups_per_row(cols, &f);
                let (mut a, mut b) = (vec![0.0f32; rows * gpr], vec![0.0f32; rows * gpr]);
                icq_search(&w, rows, cols, &f, &p, &mut a).unwrap();
                icq_search_reference(&w, rows, cols, &f, &p, &mut b).unwrap();
                for g in 0..a.len() {
                    assert_eq!(a[g].to_bits(), b[g].to_bits(), "{:?} [{}, {}] group {}", f, rows, cols, g);
                }
            }
        }
    }

    #[test]
    fn default_grid_and_errors() {
        let f = Format { kind: Kind::Nf, bits: 4, group: 64, double_quant: true, symmetric: false };
        let mut seed = 99u64;
        let w: Vec<f32> = (0..4 * 64).map(|_| rng(&mut seed)).collect();
        let (mut a, mut b) = (vec![0.0f32; 4], vec![0.0f32; 4]);
        let p = IcqParams::default();
        icq_search(&w, 4, 64, &f, &p, &mut a).unwrap();
        icq_search_reference(&w, 4, 64, &f, &p, &mut b).unwrap();
        assert_eq!(a, b);
        let mut bad = w.clone();
        bad[77] = f32::NAN;
        assert_eq!(icq_search(&bad, 4, 64, &f, &p, &mut a), Err(77));
        // an all-equal group keeps τ = its value
        let same = vec![0.5f32; 64];
        icq_search(&same, 1, 64, &f, &p, &mut a[..1]).unwrap();
        assert_eq!(a[0], 0.5);
    }
}
