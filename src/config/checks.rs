//! Range checks shared by the config sections; each error names its key.

use super::{key_error, Result};

/// `v > 0` and finite.
pub fn positive(key: &str, v: f64) -> Result<()> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(key_error(key, format!("must be > 0, got {v}")))
    }
}

/// `v >= 0` and finite.
pub fn finite_non_negative(key: &str, v: f64) -> Result<()> {
    if v >= 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(key_error(key, format!("must be >= 0, got {v}")))
    }
}

/// `0 <= v < 1`.
pub fn in_unit(key: &str, v: f64) -> Result<()> {
    if (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(key_error(key, format!("must satisfy 0 <= value < 1, got {v}")))
    }
}

/// `0 <= v <= 1`.
pub fn in_closed_unit(key: &str, v: f64) -> Result<()> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(key_error(key, format!("must lie in [0, 1], got {v}")))
    }
}

/// A count that must be at least 1.
pub fn at_least_one(key: &str, v: usize) -> Result<()> {
    if v >= 1 {
        Ok(())
    } else {
        Err(key_error(key, "must be at least 1"))
    }
}
