//! What every source produces: image paths with their labels, and the
//! class names in index order.

use std::path::PathBuf;

/// Target value of an unknown label (partial annotation), as in `asl::metrics`.
pub const UNKNOWN: f32 = -1.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub path: PathBuf,
    /// Class indices present in the image.
    pub positives: Vec<u32>,
    /// Class indices whose presence is not known; all others are negatives.
    pub unknown: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub class_names: Vec<String>,
    pub samples: Vec<Sample>,
}

impl Dataset {
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Writes sample `index`'s target row: 1 positive, 0 negative, -1 unknown.
    pub fn write_targets(&self, index: usize, row: &mut [f32]) {
        row.fill(0.0);
        let sample = &self.samples[index];
        for &c in &sample.unknown {
            row[c as usize] = UNKNOWN;
        }
        for &c in &sample.positives {
            row[c as usize] = 1.0;
        }
    }

    /// Mean number of positives per image: COCO has about 2.9 of 80.
    pub fn mean_positives(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.samples.iter().map(|s| s.positives.len()).sum::<usize>() as f64 / self.samples.len() as f64
    }
}
