//! Multi-label metrics: AP/mAP as the ASL reference defines them, and the
//! per-class and overall precision/recall/F1 at a threshold and for top-3;
//! for single-label data, top-1, top-5 and macro-F1.

mod accumulator;
mod average_precision;
mod error;
mod report;
mod scored;
mod scores;
mod single_label;
mod threshold;
mod tuning;

pub use accumulator::MetricsAccumulator;
pub use average_precision::{class_average_precision, per_class_average_precision};
pub use error::{MetricsError, Result};
pub use report::{MeanAveragePrecision, MetricsReport, TOP_K};
pub use scored::{ScoredLabel, ScoredLabels};
pub use scores::{ScoreMatrix, UNKNOWN_TARGET};
pub use single_label::{SingleLabelMetrics, TOP_5};
pub use threshold::{Selection, ThresholdMetrics};
pub use tuning::{tune_thresholds, ClassThresholds};
