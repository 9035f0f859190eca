//! `meta.k8s.io/v1` Table output: the server-side columns kubectl prints, from a CRD's
//! additionalPrinterColumns (evaluated the way the apiextensions server does) or built-in ones.

use serde_json::{Value, json};

use crate::jsonpath::JsonPath;
use crate::resources::Column;

/// How much of each object a row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// The representation a GET/watch answers with, from its Accept header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Object,
    Table(IncludeObject),
    /// `as=PartialObjectMetadata(List)`: metadata only (kube-runtime's metadata_watcher).
    Metadata,
}

impl View {
    pub fn from_accept(accept: &str, include: IncludeObject) -> View {
        let first = accept.split(',').next().unwrap_or_default();
        if first.contains("as=Table") {
            View::Table(include)
        } else if first.contains("as=PartialObjectMetadata") {
            View::Metadata
        } else {
            View::Object
        }
    }
}

/// An object reduced to `meta.k8s.io/v1` PartialObjectMetadata.
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_default(),
    })
}

/// `HumanDuration` from k8s.io/apimachinery, which kubectl shows in AGE columns.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn date_cell(v: &Value) -> Value {
    let Some(s) = v.as_str() else {
        return Value::Null;
    };
    match s.parse::<jiff::Timestamp>() {
        Ok(t) => json!(human_duration(
            jiff::Timestamp::now().as_second() - t.as_second()
        )),
        Err(_) => json!("<invalid>"),
    }
}

/// One cell, as the apiextensions table convertor computes it.
fn cell(col: &Column, obj: &Value) -> Value {
    let Some(path) = JsonPath::parse(&col.json_path) else {
        return Value::Null;
    };
    let Some(v) = path.find(obj).into_iter().next() else {
        return Value::Null;
    };
    match col.type_.as_str() {
        "string" => match v {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
        "integer" => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map_or(Value::Null, |i| json!(i)),
        "number" => v.as_f64().map_or(Value::Null, |f| json!(f)),
        "boolean" => v.as_bool().map_or(Value::Null, |b| json!(b)),
        "date" => date_cell(v),
        _ => Value::Null,
    }
}

fn row_object(obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => partial(obj),
    }
}

/// A Table of `objects` with `columns`.
pub fn table(
    columns: &[Column],
    objects: &[Value],
    resource_version: &str,
    include: IncludeObject,
) -> Value {
    let defs: Vec<Value> = columns
        .iter()
        .map(|c| json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": columns.iter().map(|c| cell(c, o)).collect::<Vec<_>>()});
            if include != IncludeObject::None {
                row["object"] = row_object(o, include);
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(human_duration(50 * 3600), "2d2h");
    }

    #[test]
    fn cells_follow_column_types() {
        let col = |t: &str, p: &str| Column {
            name: "x".into(),
            type_: t.into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: p.into(),
        };
        let o = json!({"spec": {"v": ["a"], "n": 3}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(cell(&col("string", ".spec.v"), &o), json!("[\"a\"]"));
        assert_eq!(cell(&col("integer", ".spec.n"), &o), json!(3));
        assert_eq!(cell(&col("integer", ".spec.v"), &o), Value::Null);
        assert_eq!(
            cell(
                &col("string", ".status.conditions[?(@.type==\"Ready\")].status"),
                &o
            ),
            json!("True")
        );
        assert_eq!(cell(&col("string", ".status.missing"), &o), Value::Null);
    }
}
