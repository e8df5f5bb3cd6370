//! What every source produces: the class names in index order, and for
//! each image its path and its labels. Paths are kept as one byte string
//! under a shared root and labels as flat arrays ([`Labels`]), so that a
//! 9 M-image Open Images index fits in a few hundred megabytes.

use super::labels::{encode, LabelState, Labels, Unlisted};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Target value of an unknown label (partial annotation), as in `asl::metrics`.
pub const UNKNOWN: f32 = -1.0;

/// One image as a source reads it, and as [`Dataset::sample`] shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    pub path: PathBuf,
    /// Classes present in the image.
    pub positives: Vec<u32>,
    /// Classes verified absent.
    pub negatives: Vec<u32>,
    /// Classes whose presence is not known.
    pub unknown: Vec<u32>,
}

impl Sample {
    /// An image with positives and unknowns (every other class takes the dataset's rule).
    pub fn new(path: PathBuf, positives: Vec<u32>, unknown: Vec<u32>) -> Self {
        Self { path, positives, negatives: Vec::new(), unknown }
    }

    /// Writes its target row, unlisted labels taking `unlisted`'s value; a
    /// class listed twice takes the stronger state, as [`Labels`] keeps it.
    pub fn write_targets(&self, unlisted: Unlisted, row: &mut [f32]) {
        row.fill(unlisted.target());
        let states = [
            (&self.unknown, LabelState::Unknown),
            (&self.negatives, LabelState::Negative),
            (&self.positives, LabelState::Positive),
        ];
        for (classes, state) in states {
            classes.iter().for_each(|&c| row[c as usize] = state.target());
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub class_names: Vec<String>,
    /// What a label an image does not list is.
    pub unlisted: Unlisted,
    /// Every image's path is this joined with its own part.
    root: PathBuf,
    /// The images' own parts of their paths, one after the other.
    names: Vec<u8>,
    /// `name_ends[i - 1]..name_ends[i]` is image i's part (0 before the first).
    name_ends: Vec<u64>,
    labels: Labels,
    /// What the source left out (labels of untrainable classes, missing images), for the run's log.
    pub notes: Vec<String>,
}

impl Dataset {
    /// An empty dataset of these classes, whose image paths lie under `root`.
    pub fn new(class_names: Vec<String>, unlisted: Unlisted, root: PathBuf) -> Self {
        Self {
            class_names,
            unlisted,
            root,
            names: Vec::new(),
            name_ends: Vec::new(),
            labels: Labels::default(),
            notes: Vec::new(),
        }
    }

    /// A fully annotated dataset (unlisted labels are negatives) from whole samples.
    pub fn from_samples(class_names: Vec<String>, samples: Vec<Sample>) -> Self {
        let mut dataset = Self::new(class_names, Unlisted::Negative, PathBuf::new());
        for sample in &samples {
            dataset.push_sample(sample);
        }
        dataset
    }

    /// Appends an image at `root.join(path)` listing `entries` (see [`Labels::push`]).
    pub fn push(&mut self, path: &Path, entries: &mut [u32]) {
        self.names.extend_from_slice(path.as_os_str().as_bytes());
        self.name_ends.push(self.names.len() as u64);
        self.labels.push(entries);
    }

    pub fn push_sample(&mut self, sample: &Sample) {
        let states = [
            (&sample.positives, LabelState::Positive),
            (&sample.negatives, LabelState::Negative),
            (&sample.unknown, LabelState::Unknown),
        ];
        let mut entries: Vec<u32> =
            states.iter().flat_map(|(classes, state)| classes.iter().map(|&c| encode(c, *state))).collect();
        self.push(&sample.path, &mut entries);
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    pub fn len(&self) -> usize {
        self.name_ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.name_ends.is_empty()
    }

    /// Image `index`'s path.
    pub fn path(&self, index: usize) -> PathBuf {
        let start = if index == 0 { 0 } else { self.name_ends[index - 1] as usize };
        self.root.join(OsStr::from_bytes(&self.names[start..self.name_ends[index] as usize]))
    }

    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Every image's own part of its path (under the root), in order: what
    /// says whether two loads list the same images, wherever the data was
    /// moved to.
    pub fn listed_names(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.name_ends.iter().map(|&e| e as usize));
        starts.zip(self.name_ends.iter()).map(|(start, &end)| &self.names[start..end as usize])
    }

    /// Image `index` with its listed labels.
    pub fn sample(&self, index: usize) -> Sample {
        let mut sample = Sample { path: self.path(index), ..Sample::default() };
        for (class, state) in self.labels.listed(index) {
            match state {
                LabelState::Positive => sample.positives.push(class),
                LabelState::Negative => sample.negatives.push(class),
                LabelState::Unknown => sample.unknown.push(class),
            }
        }
        sample
    }

    /// Whether some label of some image is unknown: the loss then weights those (`loss.unknown_weight`).
    pub fn has_unknown_labels(&self) -> bool {
        self.unlisted == Unlisted::Unknown || self.labels.lists_unknown()
    }

    /// Writes sample `index`'s target row: 1 positive, 0 negative, -1 unknown.
    pub fn write_targets(&self, index: usize, row: &mut [f32]) {
        row.fill(self.unlisted.target());
        for (class, state) in self.labels.listed(index) {
            row[class as usize] = state.target();
        }
    }

    /// Mean number of positives per image: COCO has about 2.9 of 80.
    pub fn mean_positives(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        (0..self.len()).map(|i| self.labels.positives(i).count()).sum::<usize>() as f64 / self.len() as f64
    }

    /// Keeps the images for which `keep(index)` is true, in order.
    pub fn retain(&mut self, keep: impl Fn(usize) -> bool) {
        let mut names = Vec::with_capacity(self.names.len());
        let mut ends = Vec::with_capacity(self.len());
        for index in (0..self.len()).filter(|&i| keep(i)) {
            let start = if index == 0 { 0 } else { self.name_ends[index - 1] as usize };
            names.extend_from_slice(&self.names[start..self.name_ends[index] as usize]);
            ends.push(names.len() as u64);
        }
        self.labels.retain(keep);
        (self.names, self.name_ends) = (names, ends);
    }

    /// Rewrites every image's labels: `edit(path, entries)` may change the
    /// image's listed entries ([`encode`]d), which are then stored as
    /// [`Labels::push`] stores them.
    pub fn relabel(&mut self, mut edit: impl FnMut(&Path, &mut Vec<u32>)) {
        let mut labels = Labels::with_capacity(self.len(), self.labels.total());
        for index in 0..self.len() {
            let mut entries: Vec<u32> = self.labels.listed(index).map(|(c, s)| encode(c, s)).collect();
            edit(&self.path(index), &mut entries);
            labels.push(&mut entries);
        }
        self.labels = labels;
    }

    /// Gives back the memory the arrays reserved ahead while growing.
    pub fn shrink_to_fit(&mut self) {
        self.names.shrink_to_fit();
        self.name_ends.shrink_to_fit();
        self.labels.shrink_to_fit();
    }

    /// Heap bytes held by the index (paths and labels).
    pub fn heap_bytes(&self) -> usize {
        self.names.capacity() + self.name_ends.capacity() * 8 + self.labels.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_round_trip_and_targets_follow_the_unlisted_rule() {
        let samples = vec![
            Sample { path: "a/1.jpg".into(), positives: vec![2], negatives: vec![0], unknown: vec![3] },
            Sample { path: "b/2.jpg".into(), positives: vec![], negatives: vec![], unknown: vec![] },
        ];
        let mut dataset = Dataset::from_samples(vec!["w".into(), "x".into(), "y".into(), "z".into()], samples.clone());
        assert_eq!((0..2).map(|i| dataset.sample(i)).collect::<Vec<_>>(), samples);
        let mut row = [9.0; 4];
        dataset.write_targets(0, &mut row);
        assert_eq!(row, [0.0, 0.0, 1.0, -1.0]);
        let mut twice = samples[0].clone();
        twice.unknown.push(2);
        twice.write_targets(Unlisted::Negative, &mut row);
        assert_eq!(row, [0.0, 0.0, 1.0, -1.0], "a positive listed as unknown too stays positive");
        dataset.unlisted = Unlisted::Unknown;
        dataset.write_targets(0, &mut row);
        assert_eq!(row, [0.0, -1.0, 1.0, -1.0]);
        dataset.retain(|i| i == 1);
        assert_eq!((dataset.len(), dataset.path(0)), (1, PathBuf::from("b/2.jpg")));
    }
}
