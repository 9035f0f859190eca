//! `events.k8s.io/v1` Events are another view of the core `v1` Events, as on the real server:
//! one storage, field names converted, so `kubectl describe` shows what a kube-runtime
//! `Recorder` published.

use serde_json::{Map, Value};

/// (events.k8s.io/v1 field, core v1 field)
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: Value, to_core: bool) -> Value {
    let Value::Object(map) = obj else { return obj };
    let mut out = Map::new();
    for (k, v) in map {
        let renamed = RENAMES.iter().find_map(|(new, old)| {
            if to_core && k == *new {
                Some(*old)
            } else if !to_core && k == *old {
                Some(*new)
            } else {
                None
            }
        });
        out.insert(renamed.map_or(k, String::from), v);
    }
    Value::Object(out)
}

/// events.k8s.io/v1 shape -> stored (core v1) shape.
pub fn to_core(obj: Value) -> Value {
    rename(obj, true)
}

/// Stored (core v1) shape -> events.k8s.io/v1 shape.
pub fn to_events_v1(obj: Value) -> Value {
    rename(obj, false)
}

/// A field selector on events.k8s.io/v1 events, in stored (core) field names.
pub fn core_field(field: &str) -> String {
    for (new, old) in RENAMES {
        if let Some(rest) = field
            .strip_prefix(new)
            .filter(|r| r.is_empty() || r.starts_with('.'))
        {
            return format!("{old}{rest}");
        }
    }
    field.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let v1 = json!({"regarding": {"name": "a"}, "note": "hi", "reason": "R"});
        let core = to_core(v1.clone());
        assert_eq!(
            core,
            json!({"involvedObject": {"name": "a"}, "message": "hi", "reason": "R"})
        );
        assert_eq!(to_events_v1(core), v1);
        assert_eq!(core_field("regarding.name"), "involvedObject.name");
    }
}
