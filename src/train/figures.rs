//! The running figures of an epoch, kept where they are computed: on the
//! training device. A training step then never waits to read a number back
//! to the host; the figures are read, in one transfer, every
//! `train.log_every` optimizer steps, at the end of an epoch and for a
//! checkpoint. The trainer counts those reads ([`Trainer::host_reads`]).
//!
//! [`Trainer::host_reads`]: super::Trainer::host_reads

use super::data_parallel::DataParallel;
use super::error::Result;
use crate::loss::ProbabilityStats;
use std::cell::Cell;
use tch::{Device, Kind, Tensor};

/// Slots of the summed figures: the loss of the epoch's finite batches, its
/// non-finite batches, the epoch's Δp sums and the latest batch's.
const LOSS: usize = 0;
const NON_FINITE: usize = 1;
const EPOCH_STATS: usize = 2;
const LAST_STATS: usize = 6;
const SUMMED: usize = 10;

pub(super) struct DeviceFigures {
    /// `[10]` f64: summed over ranks when read.
    summed: Tensor,
    /// `[3]` f64: optimizer steps the grad scaler skipped, in all, in a row now, and the longest streak
    /// since the last read (equal on every rank). The longest is kept on the device because a streak can
    /// start and end between two reads.
    skipped: Tensor,
    device: Device,
    reads: Cell<u64>,
}

/// The figures as the host sees them after a read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct HostFigures {
    pub loss_sum: f64,
    /// Batches whose loss was not finite (skipped under AMP, fatal in fp32).
    pub non_finite: f64,
    pub epoch_stats: ProbabilityStats,
    pub last_stats: ProbabilityStats,
    pub skipped_steps: usize,
    pub skipped_in_a_row: usize,
    /// The longest streak of skipped steps since the previous read.
    pub longest_skipped_in_a_row: usize,
}

impl DeviceFigures {
    /// Starts at the saved skip counters (a resumed run) and zero otherwise.
    pub fn new(device: Device, skipped_steps: usize, skipped_in_a_row: usize) -> tch::Result<Self> {
        Ok(Self {
            summed: Tensor::f_zeros([SUMMED as i64], (Kind::Double, device))?,
            skipped: Tensor::f_from_slice(&[skipped_steps as f64, skipped_in_a_row as f64, skipped_in_a_row as f64])?
                .f_to_device(device)?,
            device,
            reads: Cell::new(0),
        })
    }

    /// A new epoch, or a resumed one: the sums start again from `loss_sum`
    /// (the epoch's loss so far); the skip counters go on.
    pub fn seed_loss(&mut self, loss_sum: f64) -> tch::Result<()> {
        let _ = self.summed.f_zero_()?;
        let _ = self.summed.f_narrow(0, LOSS as i64, 1)?.f_fill_(loss_sum)?;
        Ok(())
    }

    /// Adds a batch: its loss (a scalar; left out of the sum when not
    /// finite, and counted as such) and its Δp sums (`[4]`).
    pub fn add_batch(&mut self, loss: &Tensor, stats: &Tensor) -> tch::Result<()> {
        let loss = loss.f_detach()?.f_to_kind(Kind::Double)?.f_reshape([1])?;
        let finite = loss.f_isfinite()?;
        let kept = loss.f_where_scalarother(&finite, 0.0)?;
        let non_finite = finite.f_logical_not()?.f_to_kind(Kind::Double)?;
        let previous_last = self.summed.f_narrow(0, LAST_STATS as i64, 4)?;
        let increment = Tensor::f_cat(&[kept, non_finite, stats.shallow_clone(), stats.f_sub(&previous_last)?], 0)?;
        let _ = self.summed.f_add_(&increment)?;
        Ok(())
    }

    /// After an optimizer step: `found_inf` is the grad scaler's flag (1 when it skipped the step).
    pub fn count_skip(&mut self, found_inf: &Tensor) -> tch::Result<()> {
        let flag = found_inf.f_to_kind(Kind::Double)?.f_reshape([1])?;
        let in_a_row = self.skipped.f_narrow(0, 1, 1)?.f_add(&flag)?.f_mul(&flag)?;
        let total = self.skipped.f_narrow(0, 0, 1)?.f_add(&flag)?;
        let longest = self.skipped.f_narrow(0, 2, 1)?.f_maximum(&in_a_row)?;
        self.skipped.f_copy_(&Tensor::f_cat(&[total, in_a_row, longest], 0)?)?;
        Ok(())
    }

    /// The latest batch's Δp sums alone (what adaptive γ− needs every step),
    /// summed over ranks.
    pub fn read_last_stats(&self, parallel: Option<&DataParallel>) -> Result<ProbabilityStats> {
        let last = self.summed.f_narrow(0, LAST_STATS as i64, 4)?.f_contiguous()?.f_detach_copy()?;
        let values = self.read_local(&self.reduced(last, parallel)?)?;
        Ok(ProbabilityStats::from_sums(&values))
    }

    /// Everything, in one transfer (after one all-reduce among ranks); the
    /// longest streak starts again from the current one.
    pub fn read_all(&mut self, parallel: Option<&DataParallel>) -> Result<HostFigures> {
        let summed = self.reduced(self.summed.f_detach_copy()?, parallel)?;
        let all = self.read_local(&Tensor::f_cat(&[summed, self.skipped.shallow_clone()], 0)?)?;
        let current = self.skipped.f_narrow(0, 1, 1)?;
        self.skipped.f_narrow(0, 2, 1)?.f_copy_(&current)?;
        let (summed, skipped) = all.split_at(SUMMED);
        Ok(HostFigures {
            loss_sum: summed[LOSS],
            non_finite: summed[NON_FINITE],
            epoch_stats: ProbabilityStats::from_sums(&summed[EPOCH_STATS..EPOCH_STATS + 4]),
            last_stats: ProbabilityStats::from_sums(&summed[LAST_STATS..LAST_STATS + 4]),
            skipped_steps: skipped[0].round() as usize,
            skipped_in_a_row: skipped[1].round() as usize,
            longest_skipped_in_a_row: skipped[2].round() as usize,
        })
    }

    pub fn reads(&self) -> u64 {
        self.reads.get()
    }

    /// `values` summed over the ranks, back on the training device.
    fn reduced(&self, values: Tensor, parallel: Option<&DataParallel>) -> Result<Tensor> {
        let Some(parallel) = parallel else { return Ok(values) };
        let on_group = values.f_to_device(parallel.group().tensor_device(self.device))?;
        parallel.group().allreduce_sum(&[&on_group])?;
        Ok(on_group.f_to_device(self.device)?)
    }

    fn read_local(&self, values: &Tensor) -> Result<Vec<f64>> {
        self.reads.set(self.reads.get() + 1);
        Ok(Vec::<f64>::try_from(values.f_to_device(Device::Cpu)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_that_ends_between_two_reads_is_still_seen() {
        let mut figures = DeviceFigures::new(Device::Cpu, 0, 0).unwrap();
        let flag = |skipped: bool| Tensor::from_slice(&[f32::from(u8::from(skipped))]);
        for skipped in [true, true, true, false, true] {
            figures.count_skip(&flag(skipped)).unwrap();
        }
        let read = figures.read_all(None).unwrap();
        assert_eq!((read.skipped_steps, read.skipped_in_a_row, read.longest_skipped_in_a_row), (4, 1, 3));
        // After a read, the longest streak starts again from the current one.
        figures.count_skip(&flag(false)).unwrap();
        let read = figures.read_all(None).unwrap();
        assert_eq!((read.skipped_in_a_row, read.longest_skipped_in_a_row), (0, 1));
    }
}
