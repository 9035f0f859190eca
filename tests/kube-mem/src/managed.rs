//! Server-side apply field ownership, simplified: `metadata.managedFields` records which
//! manager set which leaf fields (lists are atomic), so an apply can conflict with another
//! manager's fields and fields a manager stops applying are removed, as on the real server.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A field path: object keys from the root.
pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `""` for the main resource, `status` for the status subresource.
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

fn fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            let next = cur.entry(format!("f:{seg}")).or_insert_with(|| json!({}));
            if !next.is_object() {
                *next = json!({});
            }
            let Value::Object(m) = next else {
                unreachable!("made an object above")
            };
            cur = m;
        }
    }
    Value::Object(root)
}

fn parse_fields_v1(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    for (k, child) in m {
        let Some(seg) = k.strip_prefix("f:") else {
            continue;
        };
        prefix.push(seg.to_string());
        if child.as_object().is_none_or(|c| c.is_empty()) {
            out.insert(prefix.clone());
        } else {
            parse_fields_v1(child, prefix, out);
        }
        prefix.pop();
    }
}

/// The entries stored on `obj`.
pub fn entries(obj: &Value) -> Vec<Entry> {
    let s = |e: &Value, k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let mut fields = FieldSet::new();
            parse_fields_v1(
                e.get("fieldsV1").unwrap_or(&Value::Null),
                &mut Vec::new(),
                &mut fields,
            );
            Entry {
                manager: s(e, "manager"),
                operation: s(e, "operation"),
                subresource: s(e, "subresource"),
                api_version: s(e, "apiVersion"),
                time: s(e, "time"),
                fields,
            }
        })
        .collect()
}

/// Writes `entries` (without empty ones and paths `obj` no longer has) to `obj`.
pub fn store(obj: &mut Value, mut entries: Vec<Entry>) {
    for e in &mut entries {
        e.fields.retain(|p| value_at(obj, p).is_some());
    }
    entries.retain(|e| !e.fields.is_empty());
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn walk(v: &Value, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(k.clone());
                walk(child, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The leaf fields of `obj` a manager can own, for the main resource or the status
/// subresource (`status_part`); `status_is_sub` says whether status is a subresource.
pub fn leaves(obj: &Value, status_part: bool, status_is_sub: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else { return out };
    for (k, v) in m {
        let mut path = vec![k.clone()];
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" if !status_part => {
                for key in ["labels", "annotations"] {
                    if let Some(map) = v.get(key).and_then(Value::as_object) {
                        for (lk, lv) in map {
                            let mut p = vec!["metadata".to_string(), key.to_string(), lk.clone()];
                            walk(lv, &mut p, &mut out);
                        }
                    }
                }
                for key in ["finalizers", "ownerReferences"] {
                    if v.get(key).is_some() {
                        out.insert(vec!["metadata".to_string(), key.to_string()]);
                    }
                }
            }
            "metadata" => {}
            "status" if status_is_sub && !status_part => {}
            "status" => walk(v, &mut path, &mut out),
            _ if status_part => {}
            _ => walk(v, &mut path, &mut out),
        }
    }
    out
}

pub fn value_at<'a>(v: &'a Value, path: &Path) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, seg| cur.get(seg))
}

pub fn remove_at(v: &mut Value, path: &Path) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parent {
        match cur.get_mut(seg) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// `.spec.size`-style rendering of a path, as conflict messages print it.
pub fn dotted(path: &Path) -> String {
    path.iter().map(|s| format!(".{s}")).collect()
}

/// Fields of `applied` other managers own with a different value than the apply sets.
pub fn conflicts(
    entries: &[Entry],
    manager: &str,
    applied: &FieldSet,
    live: &Value,
    patch: &Value,
) -> Vec<(String, Path)> {
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.manager != manager) {
        for p in applied.intersection(&e.fields) {
            if value_at(live, p) != value_at(patch, p) {
                out.push((e.manager.clone(), p.clone()));
            }
        }
    }
    out
}

/// Fields `manager` applied before, does not apply now, and nobody else owns: the apply
/// removes them from the object.
pub fn dropped(
    entries: &[Entry],
    manager: &str,
    subresource: &str,
    applied: &FieldSet,
) -> FieldSet {
    let mine =
        |e: &&Entry| e.manager == manager && e.operation == "Apply" && e.subresource == subresource;
    let previous: FieldSet = entries
        .iter()
        .filter(mine)
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !mine(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    previous
        .into_iter()
        .filter(|p| !applied.contains(p) && !others.contains(p))
        .collect()
}

/// How a write changes ownership.
#[derive(Debug, Clone)]
pub enum Op {
    /// A create/update/patch by `manager`: it takes the fields it changed.
    Update(String),
    /// An apply: `manager` owns exactly `fields` now; `force` takes them from others.
    Apply {
        manager: String,
        fields: FieldSet,
        force: bool,
    },
}

/// Records `op` in `entries`. `changed` are the fields the write changed (for updates).
pub fn record(
    entries: &mut Vec<Entry>,
    op: &Op,
    subresource: &str,
    changed: FieldSet,
    api_version: &str,
    now: &str,
) {
    let (manager, operation, fields, steal) = match op {
        Op::Update(m) => (m.as_str(), "Update", changed, true),
        Op::Apply {
            manager,
            fields,
            force,
        } => (manager.as_str(), "Apply", fields.clone(), *force),
    };
    if fields.is_empty() && operation == "Update" {
        return;
    }
    if steal {
        for e in entries.iter_mut().filter(|e| {
            !(e.manager == manager && e.operation == operation && e.subresource == subresource)
        }) {
            e.fields.retain(|p| !fields.contains(p));
        }
    }
    let pos = entries.iter().position(|e| {
        e.manager == manager && e.operation == operation && e.subresource == subresource
    });
    let entry = match pos {
        Some(i) => &mut entries[i],
        None => {
            entries.push(Entry {
                manager: manager.to_string(),
                operation: operation.to_string(),
                subresource: subresource.to_string(),
                api_version: api_version.to_string(),
                time: now.to_string(),
                fields: FieldSet::new(),
            });
            entries.last_mut().expect("pushed above")
        }
    };
    if operation == "Apply" {
        entry.fields = fields;
    } else {
        entry.fields.extend(fields);
    }
    entry.time = now.to_string();
    entry.api_version = api_version.to_string();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        s.split('.').map(String::from).collect()
    }

    #[test]
    fn fields_v1_round_trip() {
        let set: FieldSet = [p("spec.size"), p("spec.vxnets"), p("metadata.labels.a")].into();
        let mut obj =
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"size": 1, "vxnets": ["x"]}});
        store(
            &mut obj,
            vec![Entry {
                manager: "m".into(),
                operation: "Apply".into(),
                subresource: String::new(),
                api_version: "v1".into(),
                time: "t".into(),
                fields: set.clone(),
            }],
        );
        assert_eq!(
            obj["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:size": {}, "f:vxnets": {}}})
        );
        assert_eq!(entries(&obj)[0].fields, set);
    }

    #[test]
    fn apply_drops_what_it_stopped_applying_and_conflicts() {
        let mut es = Vec::new();
        record(
            &mut es,
            &Op::Apply {
                manager: "a".into(),
                fields: [p("spec.x"), p("spec.y")].into(),
                force: false,
            },
            "",
            FieldSet::new(),
            "v1",
            "t",
        );
        record(
            &mut es,
            &Op::Update("kubectl".into()),
            "",
            [p("spec.z")].into(),
            "v1",
            "t",
        );
        assert_eq!(
            dropped(&es, "a", "", &[p("spec.x")].into()),
            [p("spec.y")].into()
        );
        let live = json!({"spec": {"x": 1, "y": 2, "z": 3}});
        let c = conflicts(
            &es,
            "b",
            &[p("spec.z"), p("spec.x")].into(),
            &live,
            &json!({"spec": {"z": 4, "x": 1}}),
        );
        assert_eq!(c, vec![("kubectl".to_string(), p("spec.z"))]);
    }
}
