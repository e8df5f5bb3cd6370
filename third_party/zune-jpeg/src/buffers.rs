//! Working memory that one decoder hands on to the next (asl patch).
//!
//! A data loader decodes thousands of similar JPEGs on each thread. Upstream
//! zune-jpeg allocates every per-image buffer afresh; with these buffers
//! passed from decoder to decoder, each buffer keeps the largest capacity it
//! has needed, and once they have grown to a dataset's largest image,
//! decoding allocates nothing.

use alloc::vec::Vec;

use crate::components::Components;
use crate::decoder::MAX_COMPONENTS;

/// Buffers a finished [`JpegDecoder`](crate::JpegDecoder) leaves for the next.
///
/// Take them out with [`JpegDecoder::into_buffers`](crate::JpegDecoder::into_buffers)
/// and give them to [`JpegDecoder::new_with_buffers`](crate::JpegDecoder::new_with_buffers).
/// They carry capacity only, never pixels or state: a decoder resizes and
/// fills every buffer it takes.
#[derive(Default)]
pub struct DecoderBuffers {
    /// The frame's component list, empty.
    pub(crate) component_list:  Vec<Components>,
    /// The rows each component works in, by component position.
    pub(crate) component_rows:  [ComponentRows; MAX_COMPONENTS],
    /// Whole-image coefficient planes of progressive and non-interleaved scans.
    pub(crate) planes:          [Vec<i16>; MAX_COMPONENTS],
    /// Scratch space of the upsamplers.
    pub(crate) upsampler_scratch: Vec<i16>
}

/// The per-component buffers of [`Components`], between decoders.
#[derive(Default)]
pub(crate) struct ComponentRows {
    pub(crate) raw_coeff:               Vec<i16>,
    pub(crate) upsample_dest:           Vec<i16>,
    pub(crate) row_up:                  Vec<i16>,
    pub(crate) row:                     Vec<i16>,
    pub(crate) first_row_upsample_dest: Vec<i16>
}

impl ComponentRows {
    /// Moves the rows into `component`, emptied, as if freshly made.
    pub(crate) fn lend_to(&mut self, component: &mut Components) {
        for (slot, row) in self.rows_mut().into_iter().zip(component.rows_mut()) {
            core::mem::swap(slot, row);
            row.clear();
        }
    }
    /// Takes the rows back from a finished `component`.
    pub(crate) fn take_back(&mut self, component: &mut Components) {
        for (slot, row) in self.rows_mut().into_iter().zip(component.rows_mut()) {
            core::mem::swap(slot, row);
        }
    }
    /// In the order of [`Components::rows_mut`].
    fn rows_mut(&mut self) -> [&mut Vec<i16>; 5] {
        [
            &mut self.raw_coeff,
            &mut self.upsample_dest,
            &mut self.row_up,
            &mut self.row,
            &mut self.first_row_upsample_dest
        ]
    }
}

/// Makes `buffer` hold `len` copies of `value`, reusing its capacity: what
/// upstream's `vec![value; len]` does, without allocating once warm.
pub(crate) fn refill(buffer: &mut Vec<i16>, len: usize, value: i16) {
    buffer.clear();
    buffer.resize(len, value);
}
