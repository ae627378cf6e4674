//! Bit-packing of 2/3/4-bit codes. Each row is an MSB-first bit stream of `bits`-bit codes padded
//! to a whole byte: element i of a row occupies bits [i*bits, (i+1)*bits) counted from the most
//! significant bit of the row's first byte (4 bits: first element in the high nibble, as
//! bitsandbytes). This is the layout of ts/quant/packing.ts; both are tested on the same vectors.

/// Bytes of one packed row.
pub fn row_bytes(cols: usize, bits: u32) -> usize {
    (cols * bits as usize + 7) / 8
}

/// Reference: one code at a time through a bit cursor. `out` must be zeroed, rows*row_bytes long.
pub fn pack_reference(codes: &[u8], rows: usize, cols: usize, bits: u32, out: &mut [u8]) {
    let rb = row_bytes(cols, bits);
    for r in 0..rows {
        for c in 0..cols {
            let code = codes[r * cols + c] as u32 & ((1 << bits) - 1);
            for b in 0..bits {
                let bit = (code >> (bits - 1 - b)) & 1;
                let pos = c * bits as usize + b as usize;
                out[r * rb + pos / 8] |= (bit as u8) << (7 - pos % 8);
            }
        }
    }
}

/// Reference unpack: one bit at a time.
pub fn unpack_reference(packed: &[u8], rows: usize, cols: usize, bits: u32, out: &mut [u8]) {
    let rb = row_bytes(cols, bits);
    for r in 0..rows {
        for c in 0..cols {
            let mut code = 0u8;
            for b in 0..bits as usize {
                let pos = c * bits as usize + b;
                code = (code << 1) | ((packed[r * rb + pos / 8] >> (7 - pos % 8)) & 1);
            }
            out[r * cols + c] = code;
        }
    }
}

/// Fast pack: whole bytes at once for 2 and 4 bits, 8 codes into 3 bytes for 3 bits.
pub fn pack(codes: &[u8], rows: usize, cols: usize, bits: u32, out: &mut [u8]) {
    let rb = row_bytes(cols, bits);
    let per = match bits {
        2 => 4,
        4 => 2,
        _ => 8,
    };
    for r in 0..rows {
        let row = &codes[r * cols..(r + 1) * cols];
        let dst = &mut out[r * rb..(r + 1) * rb];
        let whole = cols / per;
        for chunk in 0..whole {
            let src = &row[chunk * per..chunk * per + per];
            let mut acc: u32 = 0;
            for &c in src {
                acc = (acc << bits) | (c as u32 & ((1 << bits) - 1));
            }
            let nbytes = per * bits as usize / 8;
            for i in 0..nbytes {
                dst[chunk * nbytes + i] = (acc >> (8 * (nbytes - 1 - i))) as u8;
            }
        }
        // tail: fewer than `per` codes left, padded with zero bits
        let done = whole * per;
        if done < cols {
            let mut acc: u32 = 0;
            for i in 0..per {
                let c = if done + i < cols { row[done + i] as u32 & ((1 << bits) - 1) } else { 0 };
                acc = (acc << bits) | c;
            }
            let nbytes = per * bits as usize / 8;
            let start = whole * nbytes;
            for i in 0..(rb - start) {
                dst[start + i] = (acc >> (8 * (nbytes - 1 - i))) as u8;
            }
        }
    }
}

/// Fast unpack, the inverse of `pack`.
pub fn unpack(packed: &[u8], rows: usize, cols: usize, bits: u32, out: &mut [u8]) {
    let rb = row_bytes(cols, bits);
    let per = match bits {
        2 => 4,
        4 => 2,
        _ => 8,
    };
    let nbytes = per * bits as usize / 8;
    let mask = (1u32 << bits) - 1;
    for r in 0..rows {
        let src = &packed[r * rb..(r + 1) * rb];
        let row = &mut out[r * cols..(r + 1) * cols];
        let chunks = (cols + per - 1) / per;
        for chunk in 0..chunks {
            let mut acc: u32 = 0;
            for i in 0..nbytes {
                let b = src.get(chunk * nbytes + i).copied().unwrap_or(0);
                acc = (acc << 8) | b as u32;
            }
            for i in 0..per {
                let c = chunk * per + i;
                if c < cols {
                    row[c] = ((acc >> (bits as usize * (per - 1 - i))) & mask) as u8;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u8 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 33) as u8
    }

    #[test]
    fn known_bytes() {
        let mut out = vec![0u8; 2];
        pack(&[15, 0, 7, 8], 1, 4, 4, &mut out);
        assert_eq!(out, vec![0xF0, 0x78]);
        let mut out3 = vec![0u8; 3];
        pack(&[1, 2, 3, 4, 5, 6, 7, 0], 1, 8, 3, &mut out3);
        // 001 010 011 100 101 110 111 000
        assert_eq!(out3, vec![0b0010_1001, 0b1100_1011, 0b1011_1000]);
    }

    #[test]
    fn fast_matches_reference_on_awkward_shapes() {
        let mut seed = 42u64;
        for &bits in &[2u32, 3, 4] {
            for &(rows, cols) in &[(1usize, 1usize), (3, 5), (2, 7), (4, 8), (5, 13), (1, 64), (3, 67)] {
                let codes: Vec<u8> = (0..rows * cols).map(|_| lcg(&mut seed) & ((1 << bits) - 1) as u8).collect();
                let rb = row_bytes(cols, bits);
                let mut a = vec![0u8; rows * rb];
                let mut b = vec![0u8; rows * rb];
                pack_reference(&codes, rows, cols, bits, &mut a);
                pack(&codes, rows, cols, bits, &mut b);
                assert_eq!(a, b, "pack bits={} shape={}x{}", bits, rows, cols);
                let mut u1 = vec![0u8; rows * cols];
                let mut u2 = vec![0u8; rows * cols];
                unpack_reference(&a, rows, cols, bits, &mut u1);
                unpack(&a, rows, cols, bits, &mut u2);
                assert_eq!(u1, codes);
                assert_eq!(u2, codes);
            }
        }
    }
}
