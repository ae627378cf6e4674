//! Owned buffers for every part of a quantized weight (tests and benchmarks).

use super::*;

pub struct Owned {
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
    pub zeros: Vec<u8>,
    pub scale_codes: Vec<u8>,
    pub scale2: Vec<f32>,
    pub scale_offset: Vec<f32>,
}

impl Owned {
    pub fn new(rows: usize, cols: usize, f: &Format, fill: u8) -> Owned {
        let l = part_lengths(rows, cols, f);
        let nan = f32::from_bits(0x7fc0_0000 | fill as u32);
        Owned {
            codes: vec![fill; l.codes],
            scales: vec![nan; l.scales],
            zeros: vec![fill; l.zeros],
            scale_codes: vec![fill; l.scale_codes],
            scale2: vec![nan; l.scale2],
            scale_offset: vec![nan; l.scale_offset],
        }
    }
    pub fn parts(&self) -> Parts<'_> {
        Parts {
            codes: &self.codes,
            scales: &self.scales,
            zeros: &self.zeros,
            scale_codes: &self.scale_codes,
            scale2: &self.scale2,
            scale_offset: &self.scale_offset,
        }
    }
    pub fn parts_mut(&mut self) -> PartsMut<'_> {
        PartsMut {
            codes: &mut self.codes,
            scales: &mut self.scales,
            zeros: &mut self.zeros,
            scale_codes: &mut self.scale_codes,
            scale2: &mut self.scale2,
            scale_offset: &mut self.scale_offset,
        }
    }
    #[allow(clippy::type_complexity)]
    pub fn bits(&self) -> (Vec<u8>, Vec<u32>, Vec<u8>, Vec<u8>, Vec<u32>, Vec<u32>) {
        let b = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        (
            self.codes.clone(),
            b(&self.scales),
            self.zeros.clone(),
            self.scale_codes.clone(),
            b(&self.scale2),
            b(&self.scale_offset),
        )
    }
}
