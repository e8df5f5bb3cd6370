//! Layered YAML configuration, generic over the config type: the type's
//! `Default` (the one place defaults live), then a recipe file that states
//! only what differs, then `--set key.path=value` overrides. Each layer is
//! merged into the one below as YAML, then deserialized once, so every
//! error names the key path at fault (`loss.gamma_neg`, …).
//!
//! The section types themselves live with the modules that own them; this
//! module knows none of them.

mod annotate;
mod checks;
mod merge;

pub use annotate::annotated_yaml;
pub use checks::{at_least_one, finite_non_negative, in_closed_unit, in_unit, positive};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_yaml::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path} is not valid YAML: {message}")]
    Yaml { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("--set {0}: expected key=value")]
    Override(String),
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The error for a value that deserializes but is not allowed.
pub fn key_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key { key: key.to_string(), message: message.into() }
}

/// Checks the values serde cannot: ranges and cross-field rules.
pub trait Validate {
    fn validate(&self) -> Result<()>;
}

/// Reads a YAML file into a value.
pub fn read_yaml(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    parse_yaml(&text, &path.display().to_string())
}

/// Parses YAML text; `origin` names it in errors.
pub fn parse_yaml(text: &str, origin: &str) -> Result<Value> {
    serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml { path: origin.to_string(), message: e.to_string() })
}

/// `T::default()`, with `recipe` merged over it, then each `key=value` of
/// `overrides` (the value parsed as YAML), then validated.
pub fn resolve<T>(recipe: Value, overrides: &[String]) -> Result<T>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    let mut value = serde_yaml::to_value(T::default()).expect("a config's defaults always serialize");
    merge::merge(&mut value, recipe);
    for assignment in overrides {
        merge::merge(&mut value, override_patch(assignment)?);
    }
    let config: T = deserialize(value)?;
    config.validate()?;
    Ok(config)
}

/// The YAML of a resolved config, every key present.
pub fn to_yaml<T: Serialize>(config: &T) -> String {
    serde_yaml::to_string(config).expect("a config always serializes")
}

/// Where two configs first differ, in document order: the key path and
/// its value in each (as inline YAML), or `None` when they are the same.
pub fn first_difference<T: Serialize>(a: &T, b: &T) -> Option<Difference> {
    let value = |c: &T| serde_yaml::to_value(c).expect("a config always serializes");
    difference(&value(a), &value(b), String::new())
}

/// A key whose value differs between two configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub key: String,
    pub left: String,
    pub right: String,
}

fn difference(a: &Value, b: &Value, key: String) -> Option<Difference> {
    if let (Value::Mapping(x), Value::Mapping(y)) = (a, b) {
        let keys = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k)));
        return keys.into_iter().find_map(|k| {
            let name = k.as_str().map_or_else(|| format!("{k:?}"), str::to_string);
            let path = if key.is_empty() { name } else { format!("{key}.{name}") };
            difference(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), path)
        });
    }
    let inline = |v: &Value| serde_yaml::to_string(v).map_or_else(|_| format!("{v:?}"), |s| s.trim().to_string());
    (a != b).then(|| Difference { key, left: inline(a), right: inline(b) })
}

fn deserialize<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        key_error(if key == "." { "(top level)" } else { &key }, e.inner().to_string())
    })
}

/// `a.b.c=value` as the mapping `{a: {b: {c: value}}}`.
fn override_patch(assignment: &str) -> Result<Value> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| ConfigError::Override(assignment.to_string()))?;
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(ConfigError::Override(assignment.to_string()));
    }
    let mut patch: Value =
        serde_yaml::from_str(raw).map_err(|e| key_error(key, format!("cannot parse `{raw}`: {e}")))?;
    for part in key.rsplit('.') {
        let mut mapping = serde_yaml::Mapping::new();
        mapping.insert(Value::String(part.to_string()), patch);
        patch = Value::Mapping(mapping);
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Outer {
        count: u32,
        inner: Inner,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        rate: f64,
        label: String,
    }

    impl Default for Inner {
        fn default() -> Self {
            Self { rate: 0.5, label: "x".into() }
        }
    }

    impl Validate for Outer {
        fn validate(&self) -> Result<()> {
            positive("inner.rate", self.inner.rate)
        }
    }

    fn resolve_text(recipe: &str, overrides: &[&str]) -> Result<Outer> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        resolve(parse_yaml(recipe, "test")?, &overrides)
    }

    #[test]
    fn layers_apply_in_order_and_keep_untouched_defaults() {
        let config = resolve_text("inner: {label: recipe}", &["count=3", "inner.rate=2"]).unwrap();
        assert_eq!(config, Outer { count: 3, inner: Inner { rate: 2.0, label: "recipe".into() } });
        assert_eq!(resolve_text("", &[]).unwrap(), Outer::default());
    }

    #[test]
    fn the_first_difference_names_the_nested_key_and_both_values() {
        let a = resolve_text("", &["inner.rate=2", "count=1"]).unwrap();
        let b = resolve_text("", &["inner.rate=3", "count=2"]).unwrap();
        let d = first_difference(&a, &b).unwrap();
        assert_eq!((d.key.as_str(), d.left.as_str(), d.right.as_str()), ("count", "1", "2"));
        let c = resolve_text("", &["inner.rate=3", "count=1"]).unwrap();
        assert_eq!(first_difference(&a, &c).unwrap().key, "inner.rate");
        assert_eq!(first_difference(&a, &a), None);
    }

    #[test]
    fn errors_name_the_key() {
        let err = resolve_text("inner: {lable: y}", &[]).unwrap_err().to_string();
        assert!(err.starts_with("config key `inner.lable`: unknown field `lable`"), "{err}");
        let err = resolve_text("", &["inner.rate=-1"]).unwrap_err().to_string();
        assert_eq!(err, "config key `inner.rate`: must be > 0, got -1");
        let err = resolve_text("", &["count"]).unwrap_err().to_string();
        assert_eq!(err, "--set count: expected key=value");
        let err = resolve_text("", &["inner..rate=1"]).unwrap_err().to_string();
        assert_eq!(err, "--set inner..rate=1: expected key=value");
    }
}
