//! GPU time of recorded work, for benchmarks: a timestamp at the start and the end of every compute
//! pass (one pass per command batch), summed. Wall time also counts the host's recording and the
//! gaps between submits; this counts only the time the GPU spent inside the passes.

use super::device::{read_staged, Res};

/// Timestamp pairs per query set (wgpu allows at most 4096 queries in one set); when they run out
/// the pending work is submitted and the pairs are read (a wait) before the next pass.
pub const PAIRS: u32 = 2048;

pub struct Timing {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    period_ns: f64,
    /// Pairs handed to passes since the last harvest.
    pub used: u32,
    /// Nanoseconds and passes harvested so far.
    pub ns: f64,
    pub passes: u64,
}

impl Timing {
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Timing {
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("timing"), ty: wgpu::QueryType::Timestamp, count: 2 * PAIRS });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timing resolve"),
            size: 16 * PAIRS as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Timing { queries, resolve, period_ns: queue.get_timestamp_period() as f64, used: 0, ns: 0.0, passes: 0 }
    }

    /// The timestamp writes for a new pass, or None when every pair is in use (harvest first).
    pub fn writes(&mut self) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        if self.used >= PAIRS {
            return None;
        }
        let i = self.used;
        self.used += 1;
        Some(wgpu::ComputePassTimestampWrites { query_set: &self.queries, beginning_of_pass_write_index: Some(2 * i), end_of_pass_write_index: Some(2 * i + 1) })
    }

    /// Reads the pairs in use (their passes must have been submitted), waiting for the GPU, and
    /// adds their durations.
    pub fn harvest(&mut self, device: &wgpu::Device, queue: &wgpu::Queue) -> Res<()> {
        if self.used == 0 {
            return Ok(());
        }
        let bytes = 16 * self.used as u64;
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timing readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("timing") });
        enc.resolve_query_set(&self.queries, 0..2 * self.used, &self.resolve, 0);
        enc.copy_buffer_to_buffer(&self.resolve, 0, &staging, 0, bytes);
        queue.submit([enc.finish()]);
        let data = read_staged(device, &staging, 0, bytes as usize)?;
        let at = |k: usize| u64::from_le_bytes(data[8 * k..8 * k + 8].try_into().unwrap());
        for i in 0..self.used as usize {
            let (begin, end) = (at(2 * i), at(2 * i + 1));
            if end > begin {
                self.ns += (end - begin) as f64 * self.period_ns;
            }
        }
        self.passes += self.used as u64;
        self.used = 0;
        Ok(())
    }
}
