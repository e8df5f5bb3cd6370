//! Merging one YAML layer into another.

use serde_yaml::Value;

/// Merges `patch` into `base`: mappings key by key, anything else replaces.
/// A mapping whose `kind` differs from the base's (an internally tagged
/// enum, such as `loss`) replaces it whole, since the other variant's keys
/// would not belong to it.
pub(super) fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Mapping(base), Value::Mapping(patch)) if !switches_kind(base, &patch) => {
            for (key, value) in patch {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, patch) => *base = patch,
    }
}

fn switches_kind(base: &serde_yaml::Mapping, patch: &serde_yaml::Mapping) -> bool {
    let kind = Value::String("kind".into());
    matches!((base.get(&kind), patch.get(&kind)), (Some(a), Some(b)) if a != b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn mappings_merge_and_other_values_replace() {
        let mut base = yaml("{a: {b: 1, c: [1, 2]}, d: null}");
        merge(&mut base, yaml("{a: {c: [3]}, d: {e: 5}}"));
        assert_eq!(base, yaml("{a: {b: 1, c: [3]}, d: {e: 5}}"));
        merge(&mut base, yaml("{d: null}"));
        assert_eq!(base, yaml("{a: {b: 1, c: [3]}, d: null}"));
    }

    #[test]
    fn another_kind_replaces_the_whole_mapping() {
        let mut base = yaml("{loss: {kind: asymmetric, gamma_neg: 4, clip: 0.05}}");
        merge(&mut base, yaml("{loss: {kind: asymmetric, gamma_neg: 2}}"));
        assert_eq!(base, yaml("{loss: {kind: asymmetric, gamma_neg: 2, clip: 0.05}}"));
        merge(&mut base, yaml("{loss: {kind: single_label}}"));
        assert_eq!(base, yaml("{loss: {kind: single_label}}"));
    }
}
