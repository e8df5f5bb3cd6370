//! Seeding libtorch's default random generators for a stretch of work and
//! putting their state back afterwards. A TorchScript module's dropout and
//! drop-path draw from the default generator, which cannot be handed a
//! private one; so the trainer seeds it for each forward pass (the same
//! numbers after a resume, other numbers on each rank) and restores what
//! the caller had, leaving the process's random stream as it found it.

use super::{check, owned};
use crate::native::{self as ffi, handle, TensorHandle};
use tch::{Device, TchError, Tensor};

/// The default generators of the CPU and, on CUDA, of the device, seeded
/// until [`restore`](Self::restore)d, which reports a failure; dropping it
/// unrestored (an early return, a panic) puts them back as well as it can.
pub struct ScopedSeed {
    saved: Vec<(i32, Tensor)>,
}

impl ScopedSeed {
    /// Seeds the CPU's default generator and, for a CUDA `device`, its own.
    pub fn enter(seed: u64, device: Device) -> Result<Self, TchError> {
        let mut generators = vec![-1];
        if let Device::Cuda(index) = device {
            generators.push(i32::try_from(index).unwrap_or(i32::MAX));
        }
        let mut saved = Vec::with_capacity(generators.len());
        for generator in generators {
            let mut state: TensorHandle = std::ptr::null_mut();
            // SAFETY: `state` is written on success and then owned here.
            check(unsafe { ffi::asl_rng_state(generator, &mut state) })?;
            saved.push((generator, owned(state)));
            // SAFETY: seeds a generator.
            check(unsafe { ffi::asl_rng_seed(generator, seed) })?;
        }
        Ok(Self { saved })
    }
}

impl ScopedSeed {
    /// Puts the generators back as the scope found them.
    pub fn restore(mut self) -> Result<(), TchError> {
        let saved = std::mem::take(&mut self.saved);
        for (generator, state) in &saved {
            // SAFETY: a state this generator produced.
            check(unsafe { ffi::asl_rng_set_state(*generator, handle(state)) })?;
        }
        Ok(())
    }
}

impl Drop for ScopedSeed {
    fn drop(&mut self) {
        for (generator, state) in &self.saved {
            // SAFETY: a state this generator produced. Only an unwinding or early-returning caller gets
            // here, and it has an error of its own to report.
            let _ = unsafe { ffi::asl_rng_set_state(*generator, handle(state)) };
        }
    }
}

/// One seed per (run seed, rank, epoch, batch): splitmix64 over the four,
/// so that neighbouring batches and ranks get unrelated streams.
pub fn batch_seed(seed: u64, rank: usize, epoch: usize, batch: usize) -> u64 {
    [rank as u64, epoch as u64, batch as u64].into_iter().fold(splitmix(seed), |acc, v| splitmix(acc ^ v))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn draw() -> Vec<f32> {
        Vec::<f32>::try_from(Tensor::rand([4], (Kind::Float, Device::Cpu))).unwrap()
    }

    #[test]
    fn a_scope_draws_from_its_seed_and_leaves_the_callers_stream_as_it_was() {
        tch::manual_seed(11);
        let expected_after = {
            let _ = draw();
            draw()
        };
        tch::manual_seed(11);
        let before = draw();
        let inside = {
            let scope = ScopedSeed::enter(5, Device::Cpu).unwrap();
            let drawn = draw();
            scope.restore().unwrap();
            drawn
        };
        assert_eq!(draw(), expected_after, "the caller's stream goes on as if the scope had not been");
        assert_ne!(before, inside);
        let again = {
            let _scope = ScopedSeed::enter(5, Device::Cpu).unwrap();
            draw()
        };
        assert_eq!(inside, again, "the same seed draws the same numbers");
    }

    #[test]
    fn ranks_epochs_and_batches_get_different_seeds() {
        let seeds: Vec<u64> = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1)]
            .iter()
            .map(|&(rank, epoch, batch)| batch_seed(7, rank, epoch, batch))
            .collect();
        let mut unique = seeds.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seeds.len(), "{seeds:?}");
        assert_eq!(batch_seed(7, 1, 2, 3), batch_seed(7, 1, 2, 3));
    }
}
