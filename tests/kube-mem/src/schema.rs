//! Structural-schema handling of custom objects, in the order the real server runs it:
//! prune unknown fields, apply defaults, then validate, reporting causes that name the field.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use serde_json::{Map, Value};

use crate::status::Cause;

/// Prunes, defaults and validates `obj` (a whole custom object) against `schema`. The paths
/// of pruned fields (`spec.bogus`) are added to `unknown` (for `fieldValidation`).
pub fn process(obj: &mut Value, schema: &Value, unknown: &mut Vec<String>) -> Vec<Cause> {
    if let Value::Object(map) = obj {
        for (k, v) in map.iter_mut() {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(s) = schema.pointer(&format!("/properties/{k}")) {
                prune(v, s, k, unknown);
            }
        }
        let preserve = preserves(schema);
        let props = schema.get("properties");
        map.retain(|k, _| {
            let keep = matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                || preserve
                || props.and_then(|p| p.get(k)).is_some();
            if !keep {
                unknown.push(k.clone());
            }
            keep
        });
    }
    default(obj, schema);
    let mut causes = Vec::new();
    if let Value::Object(map) = obj {
        for (k, prop) in schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(v) = map.get(k) {
                validate(v, prop, k, &mut causes);
            }
        }
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(r) = r.as_str().filter(|r| !map.contains_key(*r)) {
                causes.push(Cause::new("FieldValueRequired", r, "Required value"));
            }
        }
    }
    causes
}

/// Applies defaults only (the server also defaults objects when reading them).
pub fn apply_defaults(obj: &mut Value, schema: &Value) {
    default(obj, schema);
}

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn prune(v: &mut Value, schema: &Value, path: &str, unknown: &mut Vec<String>) {
    if schema.get("x-kubernetes-int-or-string").is_some() && !v.is_object() {
        return;
    }
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = preserves(schema);
            let embedded = schema
                .get("x-kubernetes-embedded-resource")
                .and_then(Value::as_bool)
                == Some(true);
            map.retain(|k, _| {
                let keep = preserve
                    || props.is_some_and(|p| p.contains_key(k))
                    || additional.is_some_and(|a| a.is_object() || a == &Value::Bool(true))
                    || (embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"));
                if !keep {
                    unknown.push(format!("{path}.{k}"));
                }
                keep
            });
            for (k, child) in map.iter_mut() {
                let child_path = format!("{path}.{k}");
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    prune(child, s, &child_path, unknown);
                } else if let Some(s) = additional.filter(|a| a.is_object()) {
                    prune(child, s, &child_path, unknown);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (n, i) in items.iter_mut().enumerate() {
                    prune(i, s, &format!("{path}[{n}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true)
}

fn default(v: &mut Value, schema: &Value) {
    match v {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    let missing = match map.get(k) {
                        None => true,
                        Some(Value::Null) => !nullable(s),
                        Some(_) => false,
                    };
                    if let Some(d) = s.get("default").filter(|_| missing) {
                        map.insert(k.clone(), d.clone());
                    } else if missing && map.get(k) == Some(&Value::Null) {
                        map.remove(k);
                    }
                }
                for (k, child) in map.iter_mut() {
                    if let Some(s) = props.get(k) {
                        default(child, s);
                    }
                }
            } else if let Some(s) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in map.values_mut() {
                    default(child, s);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for i in items {
                    default(i, s);
                }
            }
        }
        _ => {}
    }
}

/// A value the way the server's messages print it: strings quoted, numbers bare.
fn show(v: &Value) -> String {
    v.to_string()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => true,
    }
}

fn regex(pattern: &str) -> Option<Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).ok())
        .clone()
}

fn num(schema: &Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

fn validate(v: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let invalid = |msg: String| {
        Cause::new(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {}: {path} in body {msg}", show(v)),
        )
    };
    if v.is_null() {
        if !nullable(schema) && schema.get("type").is_some() {
            let t = schema["type"].as_str().unwrap_or_default();
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!("Invalid value: \"null\": {path} in body must be of type {t}: \"null\""),
            ));
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = if int_or_string {
            v.is_string() || type_ok(v, "integer")
        } else {
            type_ok(v, t)
        };
        if !ok {
            let found = type_name(v);
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: \"{found}\": {path} in body must be of type {t}: \"{found}\""
                ),
            ));
            return;
        }
    }
    if let Some(allowed) = schema
        .get("enum")
        .and_then(Value::as_array)
        .filter(|a| !a.contains(v))
    {
        let list: Vec<String> = allowed.iter().map(show).collect();
        causes.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                show(v),
                list.join(", ")
            ),
        ));
    }
    match v {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or_default();
            if let Some(max) = num(schema, "maximum") {
                let excl = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
                if f > max || (excl && f == max) {
                    let rel = if excl {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    causes.push(invalid(format!("should be {rel} {}", fmt_num(max))));
                }
            }
            if let Some(min) = num(schema, "minimum") {
                let excl = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
                if f < min || (excl && f == min) {
                    let rel = if excl {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    causes.push(invalid(format!("should be {rel} {}", fmt_num(min))));
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as f64;
            if let Some(max) = num(schema, "maxLength").filter(|m| len > *m) {
                causes.push(Cause::new(
                    "FieldValueTooLong",
                    path,
                    format!("Too long: may not be more than {} bytes", fmt_num(max)),
                ));
            }
            if let Some(min) = num(schema, "minLength").filter(|m| len < *m) {
                causes.push(invalid(format!(
                    "should be at least {} chars long",
                    fmt_num(min)
                )));
            }
            if let Some(p) = schema
                .get("pattern")
                .and_then(Value::as_str)
                .filter(|p| regex(p).is_some_and(|re| !re.is_match(s)))
            {
                causes.push(invalid(format!("should match '{p}'")));
            }
        }
        Value::Array(items) => {
            let len = items.len() as f64;
            if let Some(max) = num(schema, "maxItems").filter(|m| len > *m) {
                causes.push(Cause::new(
                    "FieldValueTooMany",
                    path,
                    format!(
                        "Too many: {}: must have at most {} items",
                        items.len(),
                        fmt_num(max)
                    ),
                ));
            }
            if let Some(min) = num(schema, "minItems").filter(|m| len < *m) {
                causes.push(invalid(format!(
                    "should have at least {} items",
                    fmt_num(min)
                )));
            }
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item, s, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(map) => validate_object(map, schema, path, causes),
        _ => {}
    }
}

fn validate_object(map: &Map<String, Value>, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let props = schema.get("properties").and_then(Value::as_object);
    for (k, child) in map {
        let child_path = format!("{path}.{k}");
        if let Some(s) = props.and_then(|p| p.get(k)) {
            validate(child, s, &child_path, causes);
        } else if let Some(s) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            validate(child, s, &child_path, causes);
        }
    }
    for r in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(r) = r.as_str().filter(|r| !map.contains_key(*r)) {
            causes.push(Cause::new(
                "FieldValueRequired",
                format!("{path}.{r}"),
                "Required value",
            ));
        }
    }
    if let Some(max) = num(schema, "maxProperties").filter(|m| map.len() as f64 > *m) {
        causes.push(Cause::new(
            "FieldValueTooMany",
            path,
            format!(
                "Too many: {}: must have at most {} items",
                map.len(),
                fmt_num(max)
            ),
        ));
    }
}

const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// Checks `metadata.labels`: qualified-name keys and label values, as the server does.
pub fn validate_labels(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) else {
        return causes;
    };
    let value_re = regex(LABEL_VALUE);
    let bad_chars = |what: &str, example: &str, shown: &str| {
        format!(
            "{what} consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. {example}, regex used for validation is '{shown}')"
        )
    };
    for (k, v) in labels {
        let (prefix, name) = k
            .rsplit_once('/')
            .map_or((None, k.as_str()), |(p, n)| (Some(p), n));
        let key_ok = !name.is_empty()
            && name.len() <= 63
            && value_re.as_ref().is_some_and(|r| r.is_match(name))
            && prefix.is_none_or(|p| validate_name(p, false).is_none());
        if !key_ok {
            let msg = bad_chars(
                "name part must",
                "'MyName',  or 'my.name',  or '123-abc'",
                "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]",
            );
            causes.push(Cause::new(
                "FieldValueInvalid",
                "metadata.labels",
                format!("Invalid value: \"{k}\": {msg}"),
            ));
        }
        let Some(v) = v.as_str() else {
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                format!("metadata.labels.{k}"),
                "Invalid value: label values must be strings",
            ));
            continue;
        };
        if v.len() > 63 {
            causes.push(Cause::new(
                "FieldValueInvalid",
                "metadata.labels",
                format!("Invalid value: \"{v}\": must be no more than 63 characters"),
            ));
        } else if value_re.as_ref().is_some_and(|r| !r.is_match(v)) {
            let msg = bad_chars(
                "a valid label must be an empty string or",
                "'MyValue',  or 'my_value',  or '12345'",
                "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            );
            causes.push(Cause::new(
                "FieldValueInvalid",
                "metadata.labels",
                format!("Invalid value: \"{v}\": {msg}"),
            ));
        }
    }
    causes
}

const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS1123_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Checks `metadata.name`: a DNS-1123 label for namespaces, a subdomain otherwise.
pub fn validate_name(name: &str, label: bool) -> Option<Cause> {
    let (re, max, what, example, shown) = if label {
        (
            DNS1123_LABEL,
            63,
            "RFC 1123 label",
            "'my-name',  or '123-abc'",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?",
        )
    } else {
        (
            DNS1123_SUBDOMAIN,
            253,
            "RFC 1123 subdomain",
            "'example.com'",
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
        )
    };
    if name.len() > max {
        return Some(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": must be no more than {max} characters"),
        ));
    }
    if regex(re).is_some_and(|r| !r.is_match(name)) {
        let chars = if label { "'-'" } else { "'-' or '.'" };
        return Some(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!(
                "Invalid value: \"{name}\": a lowercase {what} must consist of lower case alphanumeric characters, {chars}, and must start and end with an alphanumeric character (e.g. {example}, regex used for validation is '{shown}')"
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["vxnets"], "properties": {
            "size": {"type": "integer", "default": 3, "minimum": 0, "maximum": 63},
            "mode": {"type": "string", "enum": ["A", "B"]},
            "vxnets": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^vxnet-[a-z0-9]+$"}},
            "sel": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }}, "status": {"type": "object", "nullable": true}}})
    }

    #[test]
    fn defaults_prunes_and_validates() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"}, "junk": 1,
            "spec": {"vxnets": ["vxnet-a"], "unknown": true, "sel": {"a": "b"}, "free": {"x": {"y": 1}}}});
        let mut unknown = Vec::new();
        assert!(process(&mut o, &schema(), &mut unknown).is_empty());
        assert_eq!(
            unknown,
            vec!["spec.unknown".to_string(), "junk".to_string()]
        );
        assert_eq!(o["spec"]["size"], 3);
        assert!(o.get("junk").is_none());
        assert!(o["spec"].get("unknown").is_none());
        assert_eq!(o["spec"]["sel"]["a"], "b");
        assert_eq!(o["spec"]["free"]["x"]["y"], 1);
    }

    #[test]
    fn causes_name_fields_like_the_server() {
        let mut o = json!({"spec": {"size": 70, "mode": "C", "vxnets": ["bad"]}});
        let lines: Vec<String> = process(&mut o, &schema(), &mut Vec::new())
            .iter()
            .map(Cause::line)
            .collect();
        assert!(lines.contains(&"spec.size: Invalid value: 70: spec.size in body should be less than or equal to 63".to_string()), "{lines:?}");
        assert!(
            lines.contains(
                &"spec.mode: Unsupported value: \"C\": supported values: \"A\", \"B\"".to_string()
            ),
            "{lines:?}"
        );
        assert!(lines.contains(&"spec.vxnets[0]: Invalid value: \"bad\": spec.vxnets[0] in body should match '^vxnet-[a-z0-9]+$'".to_string()), "{lines:?}");
        let mut o = json!({"spec": {"size": "x"}});
        let lines: Vec<String> = process(&mut o, &schema(), &mut Vec::new())
            .iter()
            .map(Cause::line)
            .collect();
        assert!(
            lines.contains(&"spec.vxnets: Required value".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"".to_string()), "{lines:?}");
    }

    #[test]
    fn labels() {
        assert!(
            validate_labels(
                &json!({"metadata": {"labels": {"hostnic.qingcloud.com/node": "n-1", "a": ""}}})
            )
            .is_empty()
        );
        assert_eq!(
            validate_labels(&json!({"metadata": {"labels": {"a": "bad value"}}})).len(),
            1
        );
        assert_eq!(
            validate_labels(&json!({"metadata": {"labels": {"a": "x".repeat(64)}}})).len(),
            1
        );
        assert_eq!(
            validate_labels(&json!({"metadata": {"labels": {"Bad_Prefix/a": "v"}}})).len(),
            1
        );
    }

    #[test]
    fn names() {
        assert!(validate_name("a.b-c", false).is_none());
        assert!(validate_name("A_b", false).is_some());
        assert!(validate_name("a.b", true).is_some());
    }
}
