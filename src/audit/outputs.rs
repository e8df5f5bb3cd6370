//! What an audit writes, each file atomically: the out-of-sample
//! probabilities (`probabilities.npy` with `images.txt` and `classes.txt`
//! naming its rows and columns; sparse files above the size limit), the
//! ranked `suspects.csv`, the HTML contact sheet and `relabeled.yaml` with
//! its label corrections.

use super::predict::{ImagePrediction, Kept};
use super::run::{AuditOptions, AuditSummary};
use super::score::{
    calibrate, flipped, image_suspicion, most_suspect, relabelled, strong_missing, ClassCalibration, LabelScore,
    Observed, Suspect, SuspectKind,
};
use super::{AuditError, Result};
use crate::atomic::{write_atomically, write_bytes_atomically};
use crate::report::{AuditCard, AuditClassRow, AuditPage};
use crate::train::{Observer, TrainConfig, TrainEvent};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Every fold's predictions, one after the other: the audit's rows.
pub(super) struct Assembled {
    pub predictions: Vec<ImagePrediction>,
    pub class_names: Vec<String>,
    pub kept: Kept,
    pub unreadable: usize,
}

/// Suspects of each kind shown in the HTML contact sheet, the most suspect ones.
const SHOWN_SUSPECTS: usize = 60;

pub(super) fn write_outputs(
    assembled: &Assembled,
    config: &TrainConfig,
    options: &AuditOptions,
    observer: &mut dyn Observer,
) -> Result<AuditSummary> {
    let out = &options.out;
    let classes = assembled.class_names.len();
    let labels: Vec<LabelScore> =
        assembled.predictions.iter().enumerate().flat_map(|(row, p)| p.labels(row as u32)).collect();
    let calibration = calibrate(&labels, classes);
    let relabelled = relabelled(&labels, &calibration);
    let flipped = flipped(&relabelled, classes);
    write_probabilities(out, assembled)?;
    write_lines(&out.join("images.txt"), assembled.predictions.iter().map(|p| p.image.as_str()))?;
    write_lines(&out.join("classes.txt"), assembled.class_names.iter().map(String::as_str))?;
    let listed = most_suspect(&labels, &calibration, options.max_suspects, |_| true);
    write_suspects(&out.join("suspects.csv"), &listed, assembled)?;
    write_image_suspicion(
        &out.join("image_suspicion.csv"),
        &image_suspicion(&labels, assembled.predictions.len()),
        assembled,
    )?;
    let (marked_unknown, added_positives) = write_relabeled(out, config, &relabelled, assembled)?;
    let of_kind = |kind| most_suspect(&labels, &calibration, SHOWN_SUSPECTS, |s| s.kind == kind);
    let shown: Vec<Suspect> = [of_kind(SuspectKind::Missing), of_kind(SuspectKind::Wrong)].concat();
    let page = contact_sheet(assembled, &shown, &calibration, &flipped);
    let report = crate::report::audit_page(&page).map_err(AuditError::Report)?;
    let path = out.join("report.html");
    write_bytes_atomically(&path, report.as_bytes()).map_err(|source| AuditError::Write { path, source })?;
    if assembled.kept == Kept::Sparse {
        observer.on_event(&TrainEvent::Notice(&format!(
            "{} images × {classes} classes would take more than 2 GB as float32: the probabilities are kept \
             sparsely (probabilities_sparse.csv: each image's verified labels and best {} unverified classes)",
            assembled.predictions.len(),
            super::SPARSE_TOP_K
        )));
    }
    let confident = |kind| relabelled.iter().filter(|s| s.kind == kind).count();
    Ok(AuditSummary {
        images: assembled.predictions.len(),
        classes,
        kept: assembled.kept,
        suspects: listed.len(),
        confident_missing: confident(SuspectKind::Missing),
        confident_wrong: confident(SuspectKind::Wrong),
        marked_unknown,
        added_positives,
        unreadable: assembled.unreadable,
    })
}

/// The contact sheet's content: `shown` by class (the class with most
/// first), each with its thumbnail, and the per-class table.
fn contact_sheet(
    assembled: &Assembled,
    shown: &[Suspect],
    calibration: &[ClassCalibration],
    flipped: &[usize],
) -> AuditPage {
    let names = &assembled.class_names;
    let mut groups: BTreeMap<u32, Vec<AuditCard>> = BTreeMap::new();
    for suspect in shown {
        let prediction = &assembled.predictions[suspect.label.image as usize];
        let observed = prediction.labels(suspect.label.image).into_iter().filter(|l| l.observed == Observed::Positive);
        let class = &names[suspect.label.class as usize];
        let suspected = match suspect.kind {
            SuspectKind::Missing => format!("{class} is likely present (observed {})", suspect.label.observed.as_csv()),
            SuspectKind::Wrong => format!("{class} is likely absent (observed 1)"),
        };
        groups.entry(suspect.label.class).or_default().push(AuditCard {
            image: prediction.image.clone(),
            thumbnail: crate::report::thumbnail(&prediction.image),
            observed: observed.map(|l| names[l.class as usize].clone()).collect(),
            suspected,
            kind: suspect.kind.name(),
            probability: format!("{:.3}", suspect.label.probability),
            score: format!("{:.2}", suspect.score),
        });
    }
    let mut groups: Vec<(String, Vec<AuditCard>)> =
        groups.into_iter().map(|(class, cards)| (names[class as usize].clone(), cards)).collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    let classes = calibration
        .iter()
        .zip(flipped)
        .zip(names)
        .map(|((c, &flipped), name)| AuditClassRow {
            name: name.clone(),
            positives: c.positives,
            negatives: c.negatives,
            unknown: c.unknown,
            flipped,
            noise_rate: format!("{:.1}%", 100.0 * c.noise_rate(flipped)),
        })
        .collect();
    AuditPage { images: assembled.predictions.len(), classes, groups }
}

/// `probabilities.npy` (`[images, classes]` float32), or, kept sparsely,
/// `probabilities_sparse.csv` (`image,class,label,probability` rows).
fn write_probabilities(out: &Path, assembled: &Assembled) -> Result<()> {
    match assembled.kept {
        Kept::Dense => {
            let classes = assembled.class_names.len();
            let values: Vec<f32> = assembled.predictions.iter().flat_map(|p| p.probabilities.iter().copied()).collect();
            write_npy_f32(&out.join("probabilities.npy"), assembled.predictions.len(), classes, &values)
        }
        Kept::Sparse => {
            let path = out.join("probabilities_sparse.csv");
            write_csv(&path, &["image", "class", "label", "probability"], |writer| {
                for (row, prediction) in assembled.predictions.iter().enumerate() {
                    for label in prediction.labels(row as u32) {
                        let class = &assembled.class_names[label.class as usize];
                        let probability = label.probability.to_string();
                        writer.write_record([&prediction.image, class, label.observed.as_csv(), &probability])?;
                    }
                }
                Ok(())
            })
        }
    }
}

/// `suspects.csv`: `image,class,label,probability,score,kind`, most suspect first.
fn write_suspects(path: &Path, suspects: &[Suspect], assembled: &Assembled) -> Result<()> {
    write_csv(path, &["image", "class", "label", "probability", "score", "kind"], |writer| {
        for suspect in suspects {
            let label = &suspect.label;
            writer.write_record([
                assembled.predictions[label.image as usize].image.as_str(),
                &assembled.class_names[label.class as usize],
                label.observed.as_csv(),
                &label.probability.to_string(),
                &format!("{:.6}", suspect.score),
                suspect.kind.name(),
            ])?;
        }
        Ok(())
    })
}

/// `image_suspicion.csv`: `image,score`, each image's chance that the
/// model disagrees with one of its labels, most suspect first.
fn write_image_suspicion(path: &Path, scores: &[f64], assembled: &Assembled) -> Result<()> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    write_csv(path, &["image", "score"], |writer| {
        for i in order {
            writer.write_record([assembled.predictions[i].image.as_str(), &format!("{:.6}", scores[i])])?;
        }
        Ok(())
    })
}

/// `relabeled.yaml`, the recipe with every path absolute (so that it runs
/// from any directory) and `data.label_overrides` naming
/// `relabeled_labels.csv`: the confident suspects marked unknown, the
/// strongly supported missing ones added as positives. Unknown labels
/// weigh `loss.unknown_weight`; a recipe that counts them fully (1) is
/// given 0, so that the suspects are left out of the loss. Returns how many
/// labels are marked unknown and how many positives are added.
fn write_relabeled(
    out: &Path,
    config: &TrainConfig,
    relabelled: &[Suspect],
    assembled: &Assembled,
) -> Result<(usize, usize)> {
    let labels = absolute(&out.join("relabeled_labels.csv"));
    let added = relabelled.iter().filter(|s| strong_missing(s)).count();
    write_csv(&labels, &["image", "class", "label"], |writer| {
        for suspect in relabelled {
            let image = &assembled.predictions[suspect.label.image as usize].image;
            let label = if strong_missing(suspect) { "1" } else { "unknown" };
            writer.write_record([image.as_str(), &assembled.class_names[suspect.label.class as usize], label])?;
        }
        Ok(())
    })?;
    let mut recipe = config.clone();
    recipe.name = format!("{}-relabeled", config.name);
    recipe.data.fold = None;
    recipe.data.label_overrides = Some(labels);
    for path in [&mut recipe.data.path, &mut recipe.data.val_path, &mut recipe.data.classes, &mut recipe.model.path] {
        *path = path.as_deref().map(absolute);
    }
    if let crate::loss::LossConfig::Asymmetric(loss) = &mut recipe.loss {
        if loss.unknown_weight >= 1.0 {
            loss.unknown_weight = 0.0;
        }
    }
    let header = format!(
        "# asl audit's relabeled recipe: {} training labels marked unknown and {added} missing positives added \
         (data.label_overrides), everything else as the audited recipe.\n\
         # Train it with: asl train --config {}\n",
        relabelled.len() - added,
        absolute(&out.join("relabeled.yaml")).display()
    );
    let path = out.join("relabeled.yaml");
    let yaml = header + &recipe.to_yaml();
    write_bytes_atomically(&path, yaml.as_bytes()).map_err(|source| AuditError::Write { path, source })?;
    Ok((relabelled.len() - added, added))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn write_lines<'a>(path: &Path, lines: impl Iterator<Item = &'a str>) -> Result<()> {
    let text: String = lines.flat_map(|l| [l, "\n"]).collect();
    write_bytes_atomically(path, text.as_bytes()).map_err(|source| AuditError::Write { path: path.into(), source })
}

fn write_csv(
    path: &Path,
    header: &[&str],
    rows: impl FnOnce(&mut csv::Writer<std::fs::File>) -> csv::Result<()>,
) -> Result<()> {
    write_atomically(path, |tmp| {
        let mut writer = csv::Writer::from_path(tmp)?;
        writer.write_record(header)?;
        rows(&mut writer)?;
        writer.flush()
    })
    .map_err(|source| AuditError::Write { path: path.into(), source })
}

/// A `[rows, columns]` float32 array in NumPy's `.npy` format (version 1.0,
/// little-endian, C order), as `numpy.load` reads it.
pub fn write_npy_f32(path: &Path, rows: usize, columns: usize, values: &[f32]) -> Result<()> {
    assert_eq!(values.len(), rows * columns, "the values fill the array");
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {columns}), }}");
    // The magic, version and length take 10 bytes; the header is padded with spaces to a multiple of 64, then
    // ends with a newline.
    let padding = 64 - (10 + header.len() + 1) % 64;
    header.extend(std::iter::repeat_n(' ', padding % 64));
    header.push('\n');
    write_atomically(path, |tmp| {
        let mut file = std::io::BufWriter::new(std::fs::File::create(tmp)?);
        file.write_all(b"\x93NUMPY\x01\x00")?;
        file.write_all(&(header.len() as u16).to_le_bytes())?;
        file.write_all(header.as_bytes())?;
        for value in values {
            file.write_all(&value.to_le_bytes())?;
        }
        file.flush()
    })
    .map_err(|source| AuditError::Write { path: path.into(), source })
}

/// The `[rows, columns]` float32 array of a file [`write_npy_f32`] wrote.
pub fn read_npy_f32(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let bad = |message: String| AuditError::Read { path: path.into(), message };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if bytes.len() < 10 || &bytes[..8] != b"\x93NUMPY\x01\x00" {
        return Err(bad("not a version 1.0 .npy file".into()));
    }
    let length = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(bytes.get(10..10 + length).ok_or_else(|| bad("truncated header".into()))?)
        .map_err(|e| bad(e.to_string()))?;
    if !header.contains("'<f4'") || !header.contains("'fortran_order': False") {
        return Err(bad(format!("not a C-order float32 array: {header}")));
    }
    let shape =
        header.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).ok_or_else(|| bad(header.into()))?;
    let dims: Vec<usize> = shape.split(',').filter_map(|d| d.trim().parse().ok()).collect();
    let [rows, columns] = dims[..] else { return Err(bad(format!("not two-dimensional: ({shape})"))) };
    let data = &bytes[10 + length..];
    if data.len() != rows * columns * 4 {
        return Err(bad(format!("{} bytes of data for a {rows} × {columns} array", data.len())));
    }
    Ok((rows, columns, data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_files_round_trip_with_an_aligned_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.npy");
        let values: Vec<f32> = (0..12).map(|i| i as f32 / 7.0).collect();
        write_npy_f32(&path, 3, 4, &values).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_end = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!(header_end % 64, 0, "NumPy aligns the data to 64 bytes");
        assert_eq!(bytes[header_end - 1], b'\n');
        assert_eq!(read_npy_f32(&path).unwrap(), (3, 4, values));
    }
}
