//! Offline HTML reports: one self-contained file each, its charts inline
//! SVG and its images `data:` thumbnails, no script, nothing fetched from
//! elsewhere. Rendered with minijinja templates (`templates/`), which
//! escape every value inserted into the page but the ones this module
//! makes itself: the charts' SVG and the thumbnails' base64 `data:` URIs.
//!
//! - [`audit_page`]: `asl audit`'s contact sheet of suspect labels, grouped
//!   by class, and a per-class summary.
//! - [`validation_page`]: `asl validate --report`: per-class AP, PR curves
//!   of the worst and best classes, per-class thresholds, the worst false
//!   positives and negatives, and the run's Δp and γ− over its epochs.

mod charts;
mod thumbnail;
mod validation;

pub use thumbnail::thumbnail;
pub use validation::{validation_page, ValidationPage};

use minijinja::{context, Environment};
use serde::Serialize;

/// One suspect label on the audit's contact sheet.
#[derive(Debug, Clone, Serialize)]
pub struct AuditCard {
    pub image: String,
    /// A `data:` URI ([`thumbnail`]); `None` for an image that cannot be read.
    pub thumbnail: Option<String>,
    /// The image's observed positive classes.
    pub observed: Vec<String>,
    /// What is suspected, in words.
    pub suspected: String,
    /// `missing` or `wrong`.
    pub kind: &'static str,
    pub probability: String,
    pub score: String,
}

/// One class of the audit's summary table.
#[derive(Debug, Clone, Serialize)]
pub struct AuditClassRow {
    pub name: String,
    pub positives: usize,
    pub negatives: usize,
    pub unknown: usize,
    /// Its labels likely the other way.
    pub flipped: usize,
    pub noise_rate: String,
}

/// What the audit page shows.
pub struct AuditPage {
    pub images: usize,
    pub classes: Vec<AuditClassRow>,
    /// The suspects shown, by class, the class with most first.
    pub groups: Vec<(String, Vec<AuditCard>)>,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.add_template("audit.html", include_str!("templates/audit.html")).expect("the audit template parses");
    env.add_template("validation.html", include_str!("templates/validation.html"))
        .expect("the validation template parses");
    env
}

/// The audit's `report.html`.
pub fn audit_page(page: &AuditPage) -> Result<String, String> {
    let env = environment();
    let template = env.get_template("audit.html").map_err(|e| e.to_string())?;
    template
        .render(context! {
            style => include_str!("templates/style.css"),
            images => page.images,
            class_count => page.classes.len(),
            shown => page.groups.iter().map(|(_, cards)| cards.len()).sum::<usize>(),
            groups => page.groups,
            classes => page.classes,
        })
        .map_err(|e| e.to_string())
}
