//! A built-in multi-label dataset: images of coloured shapes, written in
//! COCO format so the COCO source reads it. Each (shape, colour) pair is a
//! class; an image holds 1–4 objects, so positives are rare as in COCO
//! (about 1.9 of 32 here, 2.9 of 80 there). Generated deterministically from
//! a seed, in parallel. The same images can also be written in an Open
//! Images download's layout, with partial labels.

use crate::data::error::{io_error, DataError, Result};
use crate::data::rng::{sample_rng, Stream};
use image::{ImageFormat, Rgb, RgbImage};
use rand::Rng;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::json;
use std::path::Path;

const SHAPES: [&str; 8] = ["circle", "square", "triangle", "diamond", "plus", "ring", "bar", "cross"];
const COLOURS: [(&str, [u8; 3]); 4] =
    [("red", [220, 40, 40]), ("green", [40, 180, 60]), ("blue", [40, 80, 230]), ("yellow", [235, 210, 40])];
/// Probability of 1, 2, 3 and 4 objects in an image.
const OBJECT_COUNT_WEIGHTS: [f64; 4] = [0.4, 0.35, 0.2, 0.05];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynthFormat {
    Png,
    Jpeg,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthConfig {
    /// Number of classes, 1..=32 (shape × colour pairs, shape-major).
    pub classes: usize,
    pub train_images: usize,
    pub val_images: usize,
    pub image_size: u32,
    pub seed: u64,
    /// Fraction of positive labels removed from the training annotations,
    /// imitating missing labels. The validation split stays clean.
    pub drop_positive: f64,
    pub format: SynthFormat,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            classes: 32,
            train_images: 1200,
            val_images: 300,
            image_size: 64,
            seed: 0,
            drop_positive: 0.0,
            format: SynthFormat::Png,
        }
    }
}

pub fn class_names(classes: usize) -> Vec<String> {
    SHAPES.iter().flat_map(|s| COLOURS.iter().map(move |(c, _)| format!("{c} {s}"))).take(classes).collect()
}

/// Writes `out/{train,val}/NNNNNN.{png,jpg}` and
/// `out/annotations/instances_{train,val}.json`.
pub fn write_synthetic(out: &Path, config: &SynthConfig) -> Result<()> {
    write_synthetic_checks(config)?;
    let annotations = out.join("annotations");
    std::fs::create_dir_all(&annotations).map_err(io_error(&annotations))?;
    for (split, count, offset) in [("train", config.train_images, 0), ("val", config.val_images, config.train_images)] {
        let drop = if split == "train" { config.drop_positive } else { 0.0 };
        write_split(out, split, count, offset as u64, drop, config)?;
    }
    Ok(())
}

fn write_synthetic_checks(config: &SynthConfig) -> Result<()> {
    let max = SHAPES.len() * COLOURS.len();
    if !(1..=max).contains(&config.classes) {
        return Err(DataError::Option {
            name: "classes",
            message: format!("must be 1..={max}, got {}", config.classes),
        });
    }
    if !(0.0..1.0).contains(&config.drop_positive) {
        return Err(DataError::Option { name: "drop_positive", message: "must lie in [0, 1)".into() });
    }
    if config.image_size < 16 {
        return Err(DataError::Option { name: "image_size", message: "must be at least 16".into() });
    }
    Ok(())
}

fn write_split(out: &Path, split: &str, count: usize, offset: u64, drop: f64, config: &SynthConfig) -> Result<()> {
    let dir = out.join(split);
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let extension = if config.format == SynthFormat::Png { "png" } else { "jpg" };
    let labels: Vec<Vec<usize>> = (0..count)
        .into_par_iter()
        .map(|i| {
            let mut rng = sample_rng(Stream::Synthesize, config.seed, 0, offset + i as u64);
            let (image, classes) = draw_image(&mut rng, config);
            let path = dir.join(format!("{i:06}.{extension}"));
            let format = if config.format == SynthFormat::Png { ImageFormat::Png } else { ImageFormat::Jpeg };
            image
                .save_with_format(&path, format)
                .map_err(|e| DataError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
            Ok(classes.into_iter().filter(|_| drop == 0.0 || rng.random::<f64>() >= drop).collect())
        })
        .collect::<Result<_>>()?;
    let images: Vec<_> = (0..count)
        .map(|i| json!({"id": i, "file_name": format!("{i:06}.{extension}"), "width": config.image_size, "height": config.image_size}))
        .collect();
    let mut annotations = Vec::new();
    for (image_id, classes) in labels.iter().enumerate() {
        for &class in classes {
            annotations
                .push(json!({"id": annotations.len(), "image_id": image_id, "category_id": class + 1, "iscrowd": 0}));
        }
    }
    let categories: Vec<_> = class_names(config.classes)
        .into_iter()
        .enumerate()
        .map(|(i, name)| json!({"id": i + 1, "name": name}))
        .collect();
    let file = json!({"images": images, "annotations": annotations, "categories": categories});
    let path = out.join("annotations").join(format!("instances_{split}.json"));
    std::fs::write(&path, file.to_string()).map_err(io_error(&path))
}

/// Draws one image; returns it with its sorted, distinct class indices.
fn draw_image(rng: &mut impl Rng, config: &SynthConfig) -> (RgbImage, Vec<usize>) {
    let size = config.image_size;
    let base: [f32; 3] = std::array::from_fn(|_| rng.random_range(60.0..160.0));
    let tilt: [f32; 3] = std::array::from_fn(|_| rng.random_range(-50.0..50.0));
    let mut image = RgbImage::from_fn(size, size, |x, y| {
        let t = (x + y) as f32 / (2 * size) as f32;
        Rgb(std::array::from_fn(|c| (base[c] + tilt[c] * t).clamp(0.0, 255.0) as u8))
    });
    let draw = rng.random::<f64>();
    let mut cumulative = 0.0;
    let objects = 1 + OBJECT_COUNT_WEIGHTS
        .iter()
        .take_while(|&&w| {
            cumulative += w;
            cumulative < draw
        })
        .count();
    let mut classes = Vec::with_capacity(objects);
    for _ in 0..objects {
        let class = rng.random_range(0..config.classes);
        let radius = rng.random_range(0.12..0.24) * size as f32;
        let centre = [rng.random_range(radius..size as f32 - radius), rng.random_range(radius..size as f32 - radius)];
        draw_shape(&mut image, class / COLOURS.len(), COLOURS[class % COLOURS.len()].1, centre, radius);
        classes.push(class);
    }
    classes.sort_unstable();
    classes.dedup();
    (image, classes)
}

fn draw_shape(image: &mut RgbImage, shape: usize, colour: [u8; 3], centre: [f32; 2], radius: f32) {
    let (x0, x1) = ((centre[0] - radius).floor().max(0.0) as u32, (centre[0] + radius).ceil() as u32);
    let (y0, y1) = ((centre[1] - radius).floor().max(0.0) as u32, (centre[1] + radius).ceil() as u32);
    for y in y0..y1.min(image.height()) {
        for x in x0..x1.min(image.width()) {
            let u = (x as f32 + 0.5 - centre[0]) / radius;
            let v = (y as f32 + 0.5 - centre[1]) / radius;
            if inside(shape, u, v) {
                image.put_pixel(x, y, Rgb(colour));
            }
        }
    }
}

/// Whether (u, v), in units of the radius from the centre, lies in `shape`.
fn inside(shape: usize, u: f32, v: f32) -> bool {
    let (au, av) = (u.abs(), v.abs());
    match SHAPES[shape] {
        "circle" => u * u + v * v <= 1.0,
        "square" => au <= 0.8 && av <= 0.8,
        "triangle" => (-0.8..=0.8).contains(&v) && au <= (v + 0.8) * 0.6,
        "diamond" => au + av <= 1.0,
        "plus" => (au <= 0.3 && av <= 1.0) || (av <= 0.3 && au <= 1.0),
        "ring" => (0.3..=1.0).contains(&(u * u + v * v)),
        "bar" => au <= 1.0 && av <= 0.35,
        _ => ((u - v).abs() <= 0.4 || (u + v).abs() <= 0.4) && au <= 0.9 && av <= 0.9,
    }
}

/// How many listed training images [`write_synthetic_openimages`] leaves
/// unwritten, as a real download has some that failed.
pub const SYNTH_OPENIMAGES_MISSING: usize = 2;

/// The MID of synthetic class `class`.
pub fn synthetic_mid(class: usize) -> String {
    format!("/m/synth{class:02}")
}

/// The same shapes in an Open Images download folder's layout and file
/// names (V7): `oidv7-classes-trainable.txt`, `oidv7-class-descriptions.csv`
/// (quoted fields, and two classes that are not trainable),
/// `oidv7-{train,val}-annotations-human-imagelabels.csv` and
/// `{train,validation}/<ImageID>.jpg`. Each image's human-verified labels
/// are most of its positives (Confidence 1) and a few of its absent classes
/// (Confidence 0); every other class is unknown, as in Open Images. Some
/// rows name an untrainable class, and the last
/// [`SYNTH_OPENIMAGES_MISSING`] training images are listed but not written.
pub fn write_synthetic_openimages(out: &Path, config: &SynthConfig) -> Result<()> {
    write_synthetic_checks(config)?;
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    let names = class_names(config.classes);
    let trainable: String = (0..config.classes).map(|c| synthetic_mid(c) + "\n").collect();
    write_file(&out.join("oidv7-classes-trainable.txt"), &trainable)?;
    let mut descriptions = String::from("LabelName,DisplayName\n");
    for (class, name) in names.iter().enumerate() {
        descriptions += &format!("\"{}\",\"{name}\"\n", synthetic_mid(class));
    }
    descriptions += "/m/untrainable0,\"sky, cloudy\"\n/m/untrainable1,grass\n";
    write_file(&out.join("oidv7-class-descriptions.csv"), &descriptions)?;
    let splits =
        [("train", "train", config.train_images, 0), ("validation", "val", config.val_images, config.train_images)];
    for (folder, file, count, offset) in splits {
        write_openimages_split(out, folder, file, count, offset as u64, config)?;
    }
    Ok(())
}

fn write_openimages_split(
    out: &Path,
    folder: &str,
    file: &str,
    count: usize,
    offset: u64,
    config: &SynthConfig,
) -> Result<()> {
    let dir = out.join(folder);
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let written = if folder == "train" { count.saturating_sub(SYNTH_OPENIMAGES_MISSING) } else { count };
    let rows: Vec<String> = (0..count)
        .into_par_iter()
        .map(|i| {
            let mut rng = sample_rng(Stream::Synthesize, config.seed, 1, offset + i as u64);
            let (image, classes) = draw_image(&mut rng, config);
            let id = format!("{:016x}", rng.random::<u64>());
            if i < written {
                let path = dir.join(format!("{id}.jpg"));
                image
                    .save_with_format(&path, ImageFormat::Jpeg)
                    .map_err(|e| DataError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
            }
            let mut rows = String::new();
            for class in 0..config.classes {
                let present = classes.contains(&class);
                let verified = rng.random::<f64>() < if present { 0.9 } else { 0.15 };
                if verified {
                    rows += &format!("{id},verification,{},{}\n", synthetic_mid(class), u8::from(present));
                }
            }
            if rng.random::<f64>() < 0.1 {
                rows += &format!("{id},verification,/m/untrainable0,1\n");
            }
            Ok(rows)
        })
        .collect::<Result<_>>()?;
    let csv = format!("ImageID,Source,LabelName,Confidence\n{}", rows.concat());
    write_file(&out.join(format!("oidv7-{file}-annotations-human-imagelabels.csv")), &csv)
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io_error(path))
}
