//! The resolved config as YAML with each key's documentation above it,
//! taken from the doc comments of the section types (through their JSON
//! schema), so `asl train --print-config` hides nothing and the docs live
//! in one place.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value as Json;
use serde_yaml::Value;
use std::fmt::Write as _;

/// Comment lines are wrapped at this width.
const WIDTH: usize = 96;

/// `config` as block YAML, each key preceded by its documentation as `#` comments.
pub fn annotated_yaml<T: Serialize + JsonSchema>(config: &T) -> String {
    let schema = schemars::schema_for!(T);
    let value = serde_yaml::to_value(config).expect("a config always serializes");
    let mut out = String::new();
    if let Value::Mapping(mapping) = &value {
        let printer = Printer { definitions: schema.get("$defs").cloned().unwrap_or(Json::Null) };
        printer.mapping(mapping, schema.as_value(), 0, &mut out);
    }
    out
}

struct Printer {
    definitions: Json,
}

impl Printer {
    fn mapping(&self, mapping: &serde_yaml::Mapping, schema: &Json, indent: usize, out: &mut String) {
        let value = Value::Mapping(mapping.clone());
        let properties = self.properties(schema, &value);
        let pad = " ".repeat(indent);
        for (key, value) in mapping {
            let name = key.as_str().unwrap_or_default();
            let property = properties.iter().find(|(n, _)| n == name).map(|(_, s)| s);
            if let Some(text) = property.and_then(|s| self.description(s)) {
                for line in wrap(&text, WIDTH.saturating_sub(indent + 2)) {
                    let _ = writeln!(out, "{pad}# {line}");
                }
            }
            match value {
                Value::Mapping(inner) if !inner.is_empty() => {
                    let _ = writeln!(out, "{pad}{name}:");
                    self.mapping(inner, property.unwrap_or(&Json::Null), indent + 2, out);
                }
                other => {
                    let _ = writeln!(out, "{pad}{name}: {}", inline(other));
                }
            }
        }
    }

    /// The documented properties of the object `schema` describes for
    /// `value`: through references, `allOf`, and the `anyOf` / `oneOf`
    /// branch that fits (for tagged enums, the one whose `kind` matches).
    fn properties(&self, schema: &Json, value: &Value) -> Vec<(String, Json)> {
        let mut found = Vec::new();
        if let Some(Json::Object(own)) = schema.get("properties") {
            found.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(target) = self.reference(schema) {
            found.extend(self.properties(target, value));
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            let Some(Json::Array(branches)) = schema.get(key) else { continue };
            let fitting: Vec<&Json> = branches.iter().filter(|b| self.fits(b, value)).collect();
            for branch in if key == "allOf" { branches.iter().collect() } else { fitting } {
                found.extend(self.properties(branch, value));
            }
            if let Some(kind) = kind_description(branches, value) {
                found.insert(0, ("kind".into(), kind));
            }
        }
        found
    }

    fn fits(&self, branch: &Json, value: &Value) -> bool {
        if branch.get("type") == Some(&Json::String("null".into())) {
            return value.is_null();
        }
        let tag = branch.pointer("/properties/kind/const");
        match (tag, value.get("kind")) {
            (Some(Json::String(expected)), Some(Value::String(actual))) => expected == actual,
            (Some(_), _) => false,
            (None, _) => true,
        }
    }

    fn reference<'a>(&'a self, schema: &Json) -> Option<&'a Json> {
        let name = schema.get("$ref")?.as_str()?.strip_prefix("#/$defs/")?;
        self.definitions.get(name)
    }

    /// A property's own description, else that of the type it refers to.
    fn description(&self, schema: &Json) -> Option<String> {
        if let Some(text) = schema.get("description").and_then(Json::as_str) {
            return Some(text.to_string());
        }
        let referenced = self.reference(schema).or_else(|| {
            let branches = schema.get("anyOf")?.as_array()?;
            branches.iter().find_map(|b| self.reference(b))
        })?;
        referenced.get("description").and_then(Json::as_str).map(str::to_string)
    }
}

/// For a tagged enum: the chosen variant's description and the other
/// kinds, as the documentation of its `kind` key.
fn kind_description(branches: &[Json], value: &Value) -> Option<Json> {
    let kinds: Vec<&str> = branches.iter().filter_map(|b| b.pointer("/properties/kind/const")?.as_str()).collect();
    let chosen = value.get("kind")?.as_str()?;
    let branch =
        branches.iter().find(|b| b.pointer("/properties/kind/const").and_then(Json::as_str) == Some(chosen))?;
    let description = branch.get("description").and_then(Json::as_str).unwrap_or_default();
    Some(serde_json::json!({ "description": format!("{chosen}: {description} Kinds: {}.", kinds.join(", ")) }))
}

/// A value on one line: scalars as YAML writes them, sequences and
/// mappings in flow style.
fn inline(value: &Value) -> String {
    match value {
        Value::Sequence(items) => format!("[{}]", items.iter().map(flow_item).collect::<Vec<_>>().join(", ")),
        Value::Mapping(entries) => {
            let pairs: Vec<String> =
                entries.iter().map(|(k, v)| format!("{}: {}", flow_item(k), flow_item(v))).collect();
            format!("{{{}}}", pairs.join(", "))
        }
        scalar => serde_yaml::to_string(scalar).map(|s| s.trim_end().to_string()).unwrap_or_default(),
    }
}

/// An element inside a flow collection: strings double-quoted, so that
/// commas and brackets in them cannot end the element.
fn flow_item(value: &Value) -> String {
    match value {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        other => inline(other),
    }
}

/// Splits `text` into lines of at most `width` characters at spaces,
/// keeping the paragraph breaks of the doc comment.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split("\n\n") {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// The outer type.
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Outer {
        /// How many.
        count: u32,
        /// Which variant.
        choice: Choice,
        /// Off unless set.
        extra: Option<Inner>,
        /// Prefixes.
        names: Vec<String>,
    }

    /// Shared settings.
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Inner {
        /// A rate in [0, 1].
        rate: f64,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Choice {
        /// The usual one.
        First(Inner),
        /// The deep one.
        Second {
            /// Only the second has this.
            depth: u8,
        },
    }

    #[test]
    fn every_key_carries_its_doc_and_tagged_variants_resolve() {
        let config = Outer {
            count: 2,
            choice: Choice::Second { depth: 3 },
            extra: Some(Inner { rate: 0.5 }),
            names: vec!["a".into(), "b, c".into()],
        };
        let text = annotated_yaml(&config);
        let expected = "# How many.\ncount: 2\n# Which variant.\nchoice:\n  # second: The deep one. Kinds: first, second.\n  kind: second\n  # Only the second has this.\n  depth: 3\n\
                        # Off unless set.\nextra:\n  # A rate in [0, 1].\n  rate: 0.5\n# Prefixes.\nnames: [\"a\", \"b, c\"]\n";
        assert_eq!(text, expected);
        let round_trip: Outer = serde_yaml::from_str(&text).unwrap();
        assert_eq!(round_trip.names, config.names);
    }

    #[test]
    fn long_docs_wrap_at_spaces() {
        let lines = wrap("one two three four five", 9);
        assert_eq!(lines, ["one two", "three", "four five"]);
    }
}
