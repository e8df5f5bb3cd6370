//! CSV/TSV image lists, for NUS-WIDE and custom data:
//!
//! ```text
//! path,labels,negatives,unknown
//! images/0001.jpg,cat dog,bird,person
//! ```
//!
//! `path` is relative to the list's folder. `labels` holds the positives;
//! the optional `negatives` (verified absent) and `unknown` columns serve
//! partial labels. Each holds class names separated by `label_separator`.
//! A class a row does not name is what [`ListOptions::unlisted`] says: a
//! negative, or unknown. The delimiter is a tab for `.tsv` files and a
//! comma otherwise.

use crate::data::dataset::{Dataset, Sample};
use crate::data::error::{DataError, Result};
use crate::data::labels::Unlisted;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct ListOptions {
    pub label_separator: char,
    /// The classes in index order. `None` takes the sorted set of labels seen.
    pub classes: Option<Vec<String>>,
    /// What a class a row does not name is.
    pub unlisted: Unlisted,
}

impl Default for ListOptions {
    fn default() -> Self {
        Self { label_separator: ' ', classes: None, unlisted: Unlisted::Negative }
    }
}

struct Row {
    line: u64,
    path: String,
    labels: Vec<String>,
    negatives: Vec<String>,
    unknown: Vec<String>,
}

pub fn load_list(path: &Path, options: &ListOptions) -> Result<Dataset> {
    let bytes = std::fs::read(path).map_err(crate::data::error::io_error(path))?;
    parse_list(&bytes, path, options)
}

/// [`load_list`] on the file's bytes; `path` names it in errors, sets the
/// delimiter (tab for `.tsv`) and is the base of relative image paths.
pub fn parse_list(bytes: &[u8], path: &Path, options: &ListOptions) -> Result<Dataset> {
    let rows = read_rows(bytes, path, options.label_separator)?;
    let class_names: Vec<String> = match &options.classes {
        Some(classes) => classes.clone(),
        None => rows
            .iter()
            .flat_map(|r| r.labels.iter().chain(&r.negatives).chain(&r.unknown))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let index: HashMap<&str, u32> = class_names.iter().enumerate().map(|(i, c)| (c.as_str(), i as u32)).collect();
    let base = path.parent().unwrap_or(Path::new("."));
    let mut dataset = Dataset::new(class_names.clone(), options.unlisted, base.to_path_buf());
    for row in &rows {
        let lookup = |names: &[String]| -> Result<Vec<u32>> {
            let mut ids = names
                .iter()
                .map(|n| {
                    index.get(n.as_str()).copied().ok_or_else(|| DataError::List {
                        path: path.to_path_buf(),
                        line: row.line,
                        message: format!("label `{n}` is not one of the {} classes", class_names.len()),
                    })
                })
                .collect::<Result<Vec<u32>>>()?;
            ids.sort_unstable();
            ids.dedup();
            Ok(ids)
        };
        let sample = Sample {
            path: row.path.clone().into(),
            positives: lookup(&row.labels)?,
            negatives: lookup(&row.negatives)?,
            unknown: lookup(&row.unknown)?,
        };
        dataset.push_sample(&sample);
    }
    if dataset.is_empty() {
        return Err(DataError::Empty(path.to_path_buf()));
    }
    Ok(dataset)
}

fn read_rows(bytes: &[u8], path: &Path, separator: char) -> Result<Vec<Row>> {
    let delimiter = if path.extension().is_some_and(|e| e == "tsv") { b'\t' } else { b',' };
    let list_error = |line: u64, message: String| DataError::List { path: path.to_path_buf(), line, message };
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).flexible(true).from_reader(bytes);
    let headers = reader.headers().map_err(|e| list_error(1, e.to_string()))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (path_col, labels_col) = match (column("path"), column("labels")) {
        (Some(p), Some(l)) => (p, l),
        _ => return Err(list_error(1, format!("the header must name `path` and `labels` columns, found {headers:?}"))),
    };
    let (negatives_col, unknown_col) = (column("negatives"), column("unknown"));
    let split = |field: Option<&str>| -> Vec<String> {
        field.unwrap_or("").split(separator).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
    };
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| list_error(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        let image = record.get(path_col).map(str::trim).filter(|p| !p.is_empty());
        let image = image.ok_or_else(|| list_error(line, "empty `path` field".into()))?;
        rows.push(Row {
            line,
            path: image.to_string(),
            labels: split(record.get(labels_col)),
            negatives: split(negatives_col.and_then(|c| record.get(c))),
            unknown: split(unknown_col.and_then(|c| record.get(c))),
        });
    }
    Ok(rows)
}
