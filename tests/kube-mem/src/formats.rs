//! The schema formats a real apiserver recognises in a CRD, and the `Warning` it answers a
//! create or update with for the others (`unrecognized format "uint32"`).

use std::collections::BTreeSet;

use serde_json::Value;

/// The apiserver's string-format registry (apiextensions-apiserver `formats.go`), stored as it
/// compares them: lower case without dashes (`date-time` is `datetime`).
const STRING_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
];

/// OpenAPI's numeric formats. The 1.32 apiserver kube-mem stands for warns about any other
/// format on a number too, which is how schemars' `uint32` shows up.
const NUMBER_FORMATS: &[&str] = &["int32", "int64", "float", "double"];

fn recognised(type_: Option<&str>, format: &str) -> bool {
    match type_ {
        Some("integer" | "number") => NUMBER_FORMATS.contains(&format),
        _ => STRING_FORMATS.contains(&format.replace('-', "").to_lowercase().as_str()),
    }
}

/// Every unrecognised format in the schemas of `crd` (a CustomResourceDefinition).
fn unrecognised(crd: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(f)) = m.get("format")
                    && !recognised(m.get("type").and_then(Value::as_str), f)
                {
                    out.insert(f.clone());
                }
                // A property named `format` is an object under `properties`: walked like the rest.
                m.values().for_each(|child| walk(child, out));
            }
            Value::Array(a) => a.iter().for_each(|child| walk(child, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array);
    for schema in versions
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/schema/openAPIV3Schema"))
    {
        walk(schema, &mut out);
    }
    out
}

/// The warnings for writing `crd` over `old` (None on create): one per unrecognised format
/// the write brings in, as the apiserver's CRD strategy words them.
pub fn warnings(crd: &Value, old: Option<&Value>) -> Vec<String> {
    let before = old.map(unrecognised).unwrap_or_default();
    unrecognised(crd)
        .difference(&before)
        .map(|f| format!("unrecognized format {f:?}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(props: Value) -> Value {
        json!({"spec": {"versions": [{"schema": {"openAPIV3Schema": {"type": "object", "properties": props}}}]}})
    }

    #[test]
    fn warns_once_per_new_unrecognised_format() {
        let old = crd(json!({"a": {"type": "integer", "format": "uint32"}}));
        let new = crd(json!({
            "a": {"type": "integer", "format": "uint32"},
            "b": {"type": "integer", "format": "uint8"},
            "c": {"type": "integer", "format": "uint8"},
            "d": {"type": "integer", "format": "int64"},
            "e": {"type": "string", "format": "date-time"},
            "format": {"type": "string", "format": "k8s-unknown"},
        }));
        assert_eq!(
            warnings(&new, None),
            [
                "unrecognized format \"k8s-unknown\"",
                "unrecognized format \"uint32\"",
                "unrecognized format \"uint8\""
            ]
        );
        assert_eq!(
            warnings(&new, Some(&old)),
            [
                "unrecognized format \"k8s-unknown\"",
                "unrecognized format \"uint8\""
            ]
        );
    }
}
