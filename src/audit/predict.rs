//! A fold's model on its held-out images: every image's probability for
//! every class, with its observed labels. Above the size limit only the
//! verified labels and each image's best classes are kept ([`Kept`]).

use super::score::{LabelScore, Observed};
use super::AuditError;
use crate::data::{Loader, LoaderConfig, SplitData, UNKNOWN};
use crate::evaluate::input_normalization;
use crate::model::Network;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

/// Dense probabilities above this many bytes are kept sparsely instead.
pub const DENSE_LIMIT_BYTES: u64 = 2 << 30;
/// The best classes a sparse row keeps besides its verified labels.
pub const SPARSE_TOP_K: usize = 20;

/// What of each image's probabilities is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kept {
    /// Every class.
    Dense,
    /// The verified labels, and the best [`SPARSE_TOP_K`] classes.
    Sparse,
}

impl Kept {
    /// Dense unless `images × classes` float32s pass the limit.
    pub fn for_size(images: usize, classes: usize) -> Self {
        if images as u64 * classes as u64 * 4 > DENSE_LIMIT_BYTES {
            Kept::Sparse
        } else {
            Kept::Dense
        }
    }
}

/// One image's out-of-sample probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePrediction {
    /// As the dataset names it (its file, or `<shard>/<key>`).
    pub image: String,
    /// Dense: every class's probability. Sparse: empty.
    pub probabilities: Vec<f32>,
    /// Dense: every class's target (1, 0, -1 unknown). Sparse: empty.
    pub targets: Vec<i8>,
    /// Sparse: the verified labels, `(class, target, probability)`, then the best unverified classes
    /// (target -1). Dense: empty.
    pub listed: Vec<(u32, i8, f32)>,
}

impl ImagePrediction {
    fn new(image: String, probabilities: &[f32], targets: &[f32], kept: Kept) -> Self {
        let target = |t: f32| t.round() as i8;
        match kept {
            Kept::Dense => Self {
                image,
                probabilities: probabilities.to_vec(),
                targets: targets.iter().map(|&t| target(t)).collect(),
                listed: Vec::new(),
            },
            Kept::Sparse => {
                let mut listed: Vec<(u32, i8, f32)> = (0..targets.len())
                    .filter(|&c| targets[c] != UNKNOWN)
                    .map(|c| (c as u32, target(targets[c]), probabilities[c]))
                    .collect();
                let mut unverified: Vec<usize> = (0..targets.len()).filter(|&c| targets[c] == UNKNOWN).collect();
                unverified.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
                listed.extend(unverified.iter().take(SPARSE_TOP_K).map(|&c| (c as u32, -1, probabilities[c])));
                Self { image, probabilities: Vec::new(), targets: Vec::new(), listed }
            }
        }
    }

    /// Its labels as the scoring reads them, as image `row` of the audit.
    pub fn labels(&self, row: u32) -> Vec<LabelScore> {
        let label = |class: u32, target: i8, probability: f32| LabelScore {
            image: row,
            class,
            observed: Observed::from_target(f32::from(target)),
            probability,
        };
        if self.listed.is_empty() {
            self.probabilities
                .iter()
                .zip(&self.targets)
                .enumerate()
                .map(|(c, (&p, &t))| label(c as u32, t, p))
                .collect()
        } else {
            self.listed.iter().map(|&(c, t, p)| label(c, t, p)).collect()
        }
    }

    /// The image's best `k` classes, best first: `(class, probability)`.
    pub fn top(&self, k: usize) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = if self.listed.is_empty() {
            self.probabilities.iter().enumerate().map(|(c, &p)| (c as u32, p)).collect()
        } else {
            self.listed.iter().map(|&(c, _, p)| (c, p)).collect()
        };
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }
}

/// Every image of `split` scored by `network`, in the split's order.
/// `on_batch` is told how many images each batch held. Images that cannot
/// be read are left out, and counted in the second value.
pub fn predict(
    network: &mut Network,
    split: &SplitData,
    batch_size: usize,
    kept: Kept,
    on_batch: &mut dyn FnMut(usize),
) -> Result<(Vec<ImagePrediction>, usize), AuditError> {
    network.set_train(false)?;
    let normalization = input_normalization(network)?;
    let size = u32::try_from(network.card().input_size).unwrap_or(224);
    let loader = Loader::new(split.clone(), LoaderConfig::evaluation(batch_size, size))?;
    let classes = split.num_classes();
    let (mut predictions, mut skipped) = (Vec::with_capacity(split.len()), 0);
    for batch in loader.epoch(0, 0) {
        let batch = batch?;
        skipped += batch.skipped.len();
        if batch.is_empty() {
            continue;
        }
        let images = batch.images_tensor(network.device(), &normalization)?;
        let amp = network.device().is_cuda();
        let logits = tch::no_grad(|| crate::ops::with_cuda_autocast(amp, || network.forward(&images)))?;
        let probabilities = Vec::<f32>::try_from(
            logits.f_to_kind(Kind::Float)?.f_sigmoid()?.f_to_device(Device::Cpu)?.f_reshape([-1])?,
        )?;
        if probabilities.len() != batch.len() * classes {
            return Err(AuditError::Classes { outputs: probabilities.len() / batch.len(), classes });
        }
        for (row, name) in batch.names(split).into_iter().enumerate() {
            let span = row * classes..(row + 1) * classes;
            let image = name.display().to_string();
            predictions.push(ImagePrediction::new(image, &probabilities[span.clone()], &batch.targets[span], kept));
        }
        on_batch(batch.len());
    }
    Ok((predictions, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_row_keeps_the_verified_labels_and_the_best_unverified_classes() {
        let classes = SPARSE_TOP_K + 5;
        let probabilities: Vec<f32> = (0..classes).map(|c| c as f32 / classes as f32).collect();
        let mut targets = vec![UNKNOWN; classes];
        (targets[0], targets[1]) = (1.0, 0.0);
        let row = ImagePrediction::new("a.jpg".into(), &probabilities, &targets, Kept::Sparse);
        assert_eq!(row.listed.len(), 2 + SPARSE_TOP_K);
        assert_eq!(&row.listed[..2], &[(0, 1, 0.0), (1, 0, probabilities[1])]);
        assert_eq!(row.listed[2].0 as usize, classes - 1, "the best unverified class first");
        let labels = row.labels(7);
        assert_eq!(
            (labels[0].image, labels[0].observed, labels[2].observed),
            (7, Observed::Positive, Observed::Unknown)
        );
        assert_eq!(Kept::for_size(1 << 20, 1 << 10), Kept::Sparse, "4 GiB of float32s");
        assert_eq!(Kept::for_size(40_000, 80), Kept::Dense);
        let dense = ImagePrediction::new("a.jpg".into(), &probabilities, &targets, Kept::Dense);
        assert_eq!(dense.labels(0).len(), classes);
        assert_eq!(
            dense.top(2),
            vec![
                ((classes - 1) as u32, probabilities[classes - 1]),
                ((classes - 2) as u32, probabilities[classes - 2])
            ]
        );
    }
}
