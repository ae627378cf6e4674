//! Constant tables of the quantization formats, as exact float32 bit patterns (copied from the TS
//! reference, ts/quant/codebooks.ts and ts/quant/doublequant.ts; tests re-derive them), and the
//! small scalar rules every path shares: bnb's dynamic-map code search, rounding half away from
//! zero, float32 rounding toward zero.

/// Groups of scale codes quantized together by double quantization (bitsandbytes' blocksize 256).
pub const DOUBLE_QUANT_BLOCK: usize = 256;

const NF4_VALUES: [u32; 16] = [
    0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0x00000000, 0x3da2faff, 0x3e24cae3, 0x3e7c04dd,
    0x3ead033a, 0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000,
];
/// bitsandbytes' dQuantizeNF4 decision-tree constants read as float32 (4 of them one ulp away
/// from f32 of the midpoint; see codebooks.ts).
const NF4_THRESHOLDS: [u32; 15] = [
    0xbf591cd9, 0xbf1c5270, 0xbeeb8480, 0xbeadea76, 0xbe703cec, 0xbe0d38bc, 0xbd3a7871, 0x3d22faff, 0x3df64863, 0x3e5067e0, 0x3e9582d4,
    0x3ec753f9, 0x3f006d03, 0x3f248daf, 0x3f5c89d9,
];
const NF3_VALUES: [u32; 8] = [
    0xbf800000, 0xbef50ee2, 0xbe5e5a6d, 0x00000000, 0x3e24cae1, 0x3ead0338, 0x3f1007aa, 0x3f800000,
];
const NF2_VALUES: [u32; 4] = [0xbf800000, 0xbead0338, 0x3ead0338, 0x3f800000];

/// An NF codebook with what quantizing to it needs. `values` and `thresholds` are padded
/// (values with 0, thresholds with +inf) past `len` / `len - 1`.
#[derive(Clone, Copy, Debug)]
pub struct NfTable {
    pub values: [f32; 16],
    pub thresholds: [f32; 15],
    /// Number of values: 2^bits.
    pub len: usize,
    /// Code of the value with the smallest |value| (lowest index on a tie): all-zero groups use it.
    pub zero_code: u8,
}

/// The NF table for 2, 3 or 4 bits. NF3/NF2 thresholds are f32((c[i] + c[i+1]) / 2) computed in
/// float64 as the TS does; NF4's are bnb's constants.
pub fn nf_table(bits: u32) -> NfTable {
    let src: &[u32] = match bits {
        2 => &NF2_VALUES,
        3 => &NF3_VALUES,
        4 => &NF4_VALUES,
        _ => panic!("nf_table: bits must be 2, 3 or 4, got {}", bits),
    };
    let mut t = NfTable {
        values: [0.0; 16],
        thresholds: [f32::INFINITY; 15],
        len: src.len(),
        zero_code: 0,
    };
    for (i, &b) in src.iter().enumerate() {
        t.values[i] = f32::from_bits(b);
    }
    for i in 0..src.len() {
        if t.values[i].abs() < t.values[t.zero_code as usize].abs() {
            t.zero_code = i as u8;
        }
        if i + 1 < src.len() {
            t.thresholds[i] = if bits == 4 {
                f32::from_bits(NF4_THRESHOLDS[i])
            } else {
                ((t.values[i] as f64 + t.values[i + 1] as f64) / 2.0) as f32
            };
        }
    }
    t
}

/// bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(signed=True)), sorted ascending;
/// 0.0 at index 127. The test re-derives it the way doublequant.ts does.
pub const DYNAMIC_MAP: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000, 0xbf616666, 0xbf5dcccd, 0xbf5a3333,
    0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333, 0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a,
    0xbf2f0000, 0xbf2b6666, 0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a, 0xbf0b0000,
    0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a, 0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc,
    0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000, 0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333,
    0xbe60cccd, 0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334, 0xbdc9eb85, 0xbdc428f7,
    0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a, 0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd,
    0xbd7e147b, 0xbd728f5d, 0xbd670a3d, 0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148, 0xbc1f3b64, 0xbc160418, 0xbc0ccccd,
    0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4, 0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d,
    0xbaf1a9fc, 0xbaa7ef9d, 0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b, 0xb8ba1f4b,
    0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000, 0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206,
    0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b, 0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff,
    0x3aa7ef9d, 0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4, 0x3bcfdf3b, 0x3be24dd3,
    0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148, 0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7,
    0x3ce7ae15, 0x3cfeb852, 0x3d0ae148, 0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a, 0x3da75c2a, 0x3dad1eb8, 0x3db2e148,
    0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334, 0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000,
    0x3e526666, 0x3e60cccd, 0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000, 0x3eb13333,
    0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a, 0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333,
    0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a, 0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd,
    0x3f2b6666, 0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333, 0x3f4bcccd, 0x3f4f6666,
    0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000, 0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000,
    0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

/// Index of 0.0 in the dynamic map: the code of every value in a block whose absmax is 0.
pub const DYNAMIC_ZERO_CODE: u8 = 127;

#[inline(always)]
pub fn dynamic_value(code: u8) -> f32 {
    f32::from_bits(DYNAMIC_MAP[code as usize])
}

/// The 8-bit code of x: a port of bitsandbytes' CUDA dQuantize<0> (doublequant.ts dynamicCode).
pub fn dynamic_code(x: f32) -> u8 {
    let map = |i: usize| f32::from_bits(DYNAMIC_MAP[i]);
    let mut pivot = 127usize;
    let mut upper_pivot = 255usize;
    let mut lower_pivot = 0usize;
    let mut lower = -1.0f32;
    let mut upper = 1.0f32;
    let mut val = map(pivot);
    let mut step = 64usize;
    while step > 0 {
        if x > val {
            lower_pivot = pivot;
            lower = val;
            pivot += step;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= step;
        }
        val = map(pivot);
        step >>= 1;
    }
    if upper_pivot == 255 {
        upper = map(255);
    }
    if lower_pivot == 0 {
        lower = map(0);
    }
    let code = if x > val {
        if x > (upper + val) * 0.5 {
            upper_pivot
        } else {
            pivot
        }
    } else if x < (lower + val) * 0.5 {
        lower_pivot
    } else {
        pivot
    };
    code as u8
}

/// Round half away from zero (formats.ts roundHalfAway): a - floor(a) is exact.
#[inline(always)]
pub fn round_half_away(x: f64) -> f64 {
    let a = x.abs();
    let mut r = a.floor();
    if a - r >= 0.5 {
        r += 1.0;
    }
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// x (>= 0) rounded to float32 toward zero (reference.ts f32TowardZero).
#[inline(always)]
pub fn f32_toward_zero(x: f64) -> f32 {
    let y = x as f32;
    if (y as f64) > x {
        f32::from_bits(y.to_bits() - 1)
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_rederived() {
        // The dynamic map the way doublequant.ts builds it (torch.linspace with a fused multiply-add).
        let f32r = |x: f64| x as f32 as f64;
        let mut v: Vec<f32> = Vec::new();
        let scales = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
        let start = f32r(0.1);
        for i in 0..7 {
            let steps = (1usize << i) + 1;
            let step = f32r((1.0 - start) / (steps - 1) as f64);
            let bnd = |j: usize| {
                if j < steps >> 1 {
                    f32r(start + step * j as f64)
                } else {
                    f32r(1.0 - step * (steps - 1 - j) as f64)
                }
            };
            let scale = f32r(scales[i]);
            for j in 0..steps - 1 {
                let mean = f32r(f32r(bnd(j) + bnd(j + 1)) / 2.0);
                v.push((scale * mean) as f32);
                v.push(-((scale * mean) as f32));
            }
        }
        v.push(0.0);
        v.push(1.0);
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let want: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        assert_eq!(&want[..], &DYNAMIC_MAP[..]);
        assert_eq!(dynamic_value(DYNAMIC_ZERO_CODE), 0.0);
        // dynamic_code: each map value maps to itself; midpoints go toward the final pivot.
        for c in 0..=255u8 {
            assert_eq!(dynamic_code(dynamic_value(c)), c);
        }
        for (bits, zero) in [(2u32, 1u8), (3, 3), (4, 7)] {
            let t = nf_table(bits);
            assert_eq!(t.zero_code, zero);
            assert_eq!(t.values[0], -1.0);
            assert_eq!(t.values[t.len - 1], 1.0);
            for i in 0..t.len - 1 {
                assert!(t.values[i] < t.values[i + 1] && t.thresholds[i] > t.values[i] && t.thresholds[i] < t.values[i + 1]);
                let mid = ((t.values[i] as f64 + t.values[i + 1] as f64) / 2.0) as f32;
                // NF4: bnb's constants, one ulp off the midpoint at indices 0, 8, 12, 14
                let off = bits == 4 && [0, 8, 12, 14].contains(&i);
                assert_eq!(t.thresholds[i] != mid, off, "bits {} threshold {}", bits, i);
            }
        }
        assert_eq!(round_half_away(2.5), 3.0);
        assert_eq!(round_half_away(-2.5), -3.0);
        assert_eq!(round_half_away(0.49999999999999994), 0.0);
        assert_eq!(f32_toward_zero(0.1), f32::from_bits(0x3dcccccc));
        assert_eq!(f32_toward_zero(0.5), 0.5);
    }
}
