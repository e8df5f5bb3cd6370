//! Every image's labels, in three states, stored flat. An image lists its
//! positives, its verified negatives and the labels it marks unknown; a
//! label it does not list takes the dataset's rule ([`Unlisted`]): a
//! negative (COCO, VOC, lists) or unknown (Open Images, where each image
//! has a handful of human-verified labels out of 9,605 classes).
//!
//! One `u32` per listed label (the state in its two top bits, the class
//! below) in one array, with one offset per image: 9 M images and 60 M
//! labels take 312 MB, where a `Vec` per image would add 48 bytes of
//! headers and an allocation each, and a dense `[images, classes]` matrix
//! 345 GB.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a label an image does not list is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unlisted {
    /// Absent from the image (a fully annotated dataset: COCO, VOC).
    #[default]
    Negative,
    /// Not known (a partially annotated dataset: Open Images).
    Unknown,
}

impl Unlisted {
    /// The target of an unlisted label: 0 or -1.
    pub fn target(self) -> f32 {
        match self {
            Unlisted::Negative => LabelState::Negative.target(),
            Unlisted::Unknown => LabelState::Unknown.target(),
        }
    }
}

/// The state of one listed label. The order is the precedence when an
/// image lists a class twice: a positive wins over a verified negative,
/// which wins over unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LabelState {
    Positive = 0,
    Negative = 1,
    Unknown = 2,
}

const STATE_SHIFT: u32 = 30;
/// Classes are below 2^30, so that the state fits above them.
pub const MAX_CLASSES: usize = 1 << STATE_SHIFT;

impl LabelState {
    fn from_bits(bits: u32) -> Self {
        match bits {
            0 => LabelState::Positive,
            1 => LabelState::Negative,
            _ => LabelState::Unknown,
        }
    }

    /// The target value a loss and the metrics read: 1, 0 or -1.
    pub fn target(self) -> f32 {
        match self {
            LabelState::Positive => 1.0,
            LabelState::Negative => 0.0,
            LabelState::Unknown => -1.0,
        }
    }
}

/// One listed label as stored: state in the top two bits, class below.
/// Sorting these orders an image's labels by state, then class.
pub fn encode(class: u32, state: LabelState) -> u32 {
    debug_assert!((class as usize) < MAX_CLASSES);
    (state as u32) << STATE_SHIFT | class
}

pub fn decode(entry: u32) -> (u32, LabelState) {
    (entry & (MAX_CLASSES as u32 - 1), LabelState::from_bits(entry >> STATE_SHIFT))
}

/// The labels of every image, flat (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// `offsets[i]..offsets[i + 1]` are image i's entries.
    offsets: Vec<u64>,
    /// Per image: sorted by state, then class; one entry per class.
    entries: Vec<u32>,
}

impl Default for Labels {
    fn default() -> Self {
        Self { offsets: vec![0], entries: Vec::new() }
    }
}

impl Labels {
    pub fn with_capacity(images: usize, entries: usize) -> Self {
        let mut offsets = Vec::with_capacity(images + 1);
        offsets.push(0);
        Self { offsets, entries: Vec::with_capacity(entries) }
    }

    /// Appends an image listing `entries` (from [`encode`], in any order,
    /// repeats allowed: a class listed twice keeps its first state in
    /// [`LabelState`]'s precedence). `entries` is left sorted.
    pub fn push(&mut self, entries: &mut [u32]) {
        entries.sort_unstable_by_key(|&e| (e & (MAX_CLASSES as u32 - 1), e >> STATE_SHIFT));
        let start = self.entries.len();
        let mut last_class = None;
        for &entry in entries.iter() {
            let class = entry & (MAX_CLASSES as u32 - 1);
            if last_class != Some(class) {
                self.entries.push(entry);
                last_class = Some(class);
            }
        }
        self.entries[start..].sort_unstable();
        self.offsets.push(self.entries.len() as u64);
    }

    /// Images.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Listed labels over all images.
    pub fn total(&self) -> usize {
        self.entries.len()
    }

    /// Image `image`'s listed labels: positives, then negatives, then unknowns, each by class.
    pub fn listed(&self, image: usize) -> impl Iterator<Item = (u32, LabelState)> + '_ {
        self.raw(image).iter().map(|&e| decode(e))
    }

    /// Image `image`'s positive classes, ascending.
    pub fn positives(&self, image: usize) -> impl Iterator<Item = u32> + '_ {
        self.raw(image).iter().take_while(|&&e| e >> STATE_SHIFT == 0).copied()
    }

    /// Whether any image lists a label as unknown.
    pub fn lists_unknown(&self) -> bool {
        self.entries.iter().any(|&e| e >> STATE_SHIFT == LabelState::Unknown as u32)
    }

    fn raw(&self, image: usize) -> &[u32] {
        &self.entries[self.offsets[image] as usize..self.offsets[image + 1] as usize]
    }

    /// Keeps the images for which `keep(index)` is true, in order.
    pub fn retain(&mut self, keep: impl Fn(usize) -> bool) {
        let mut kept = Labels::with_capacity(self.len(), self.total());
        for image in (0..self.len()).filter(|&i| keep(i)) {
            kept.entries.extend_from_slice(self.raw(image));
            kept.offsets.push(kept.entries.len() as u64);
        }
        *self = kept;
    }

    pub fn shrink_to_fit(&mut self) {
        self.offsets.shrink_to_fit();
        self.entries.shrink_to_fit();
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.offsets.capacity() * 8 + self.entries.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LabelState::*;

    #[test]
    fn an_image_lists_each_class_once_in_precedence_order() {
        let mut labels = Labels::default();
        let mut first = [encode(7, Unknown), encode(2, Negative), encode(7, Positive), encode(1, Positive)];
        labels.push(&mut first);
        labels.push(&mut []);
        labels.push(&mut [encode(3, Unknown), encode(3, Negative), encode(0, Negative)]);
        assert_eq!(labels.len(), 3);
        assert_eq!(labels.listed(0).collect::<Vec<_>>(), [(1, Positive), (7, Positive), (2, Negative)]);
        assert_eq!(labels.positives(0).collect::<Vec<_>>(), [1, 7]);
        assert_eq!(labels.listed(1).count(), 0);
        assert_eq!(labels.listed(2).collect::<Vec<_>>(), [(0, Negative), (3, Negative)]);
        assert!(!labels.lists_unknown());
        labels.retain(|i| i != 1);
        assert_eq!((labels.len(), labels.total()), (2, 5));
        assert_eq!(labels.listed(1).collect::<Vec<_>>(), [(0, Negative), (3, Negative)]);
    }

    #[test]
    fn states_and_classes_round_trip_up_to_the_limit() {
        for state in [Positive, Negative, Unknown] {
            for class in [0, 1, 9604, MAX_CLASSES as u32 - 1] {
                assert_eq!(decode(encode(class, state)), (class, state));
            }
        }
        assert_eq!([Positive.target(), Negative.target(), Unknown.target()], [1.0, 0.0, -1.0]);
    }
}
