//! Patch bodies by content type: JSON merge patch, JSON patch (RFC 6902, with `test`),
//! strategic merge patch (built-ins only, approximated) and server-side apply (approximated
//! as a merge of the applied configuration into the live object).

use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

/// The patch flavours the server accepts, from the request's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// Parses a request body as JSON, or YAML for apply patches.
pub fn parse_body(body: &[u8], yaml_ok: bool) -> ApiResult<Value> {
    if body.starts_with(crate::protobuf::MAGIC) {
        return crate::protobuf::decode(body).ok_or_else(|| {
            ApiError::unsupported_media_type("application/vnd.kubernetes.protobuf")
        });
    }
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(e) if yaml_ok => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request(format!("invalid body: {e}")))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "error decoding request body: {e}"
        ))),
    }
}

/// Applies `patch` to `target` and returns the patched document.
pub fn apply_patch(kind: PatchType, target: &Value, patch: &Value) -> ApiResult<Value> {
    let mut doc = target.clone();
    match kind {
        PatchType::Merge => json_patch::merge(&mut doc, patch),
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
                ApiError::bad_request(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
            // Kubernetes treats `test` of a missing path against null as a match;
            // kube-runtime's finalizer helper relies on it to add the first finalizer.
            let ops: Vec<json_patch::PatchOperation> = ops
                .0
                .into_iter()
                .filter(|op| {
                    !matches!(op, json_patch::PatchOperation::Test(t)
                        if t.value.is_null() && doc.pointer(t.path.as_str()).is_none())
                })
                .collect();
            json_patch::patch(&mut doc, &ops)
                .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        }
        PatchType::Strategic => strategic_merge(&mut doc, patch),
        PatchType::Apply => apply_merge(&mut doc, patch),
    }
    Ok(doc)
}

/// The strategic-merge directives kubectl sends that a plain merge would store as fields.
fn is_directive(k: &str) -> bool {
    k.starts_with("$setElementOrder/")
        || k.starts_with("$deleteFromPrimitiveList/")
        || k == "$retainKeys"
        || k == "$patch"
}

/// Strategic merge patch, approximated: a merge patch where lists of objects merge by their
/// merge key (from `$setElementOrder`, or a known key every item has); other lists replace.
fn strategic_merge(doc: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = patch.clone();
        strip_directives(&mut clean);
        *doc = clean;
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Value::Object(d) = doc else { return };
    for (k, v) in p {
        if is_directive(k) {
            continue;
        }
        match v {
            Value::Null => {
                d.remove(k);
            }
            Value::Object(_) => strategic_merge(d.entry(k.clone()).or_insert(Value::Null), v),
            Value::Array(items) => {
                let order = p
                    .get(&format!("$setElementOrder/{k}"))
                    .and_then(Value::as_array);
                let key = merge_key(items, order);
                match (d.get_mut(k), key) {
                    (Some(Value::Array(live)), Some(key)) => merge_list(live, items, key, order),
                    _ => {
                        let mut fresh = v.clone();
                        strip_directives(&mut fresh);
                        d.insert(k.clone(), fresh);
                    }
                }
            }
            _ => {
                d.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Merge keys of the built-in lists kubectl patches by key (containers, env, volumes: `name`;
/// ports: `containerPort`; volumeMounts: `mountPath`; ...).
const MERGE_KEYS: &[&str] = &[
    "name",
    "containerPort",
    "port",
    "mountPath",
    "devicePath",
    "ip",
    "type",
    "topologyKey",
];

/// The merge key of a list: the one field of `$setElementOrder` entries, or the first known
/// key every patch item has. `None` means the list is replaced.
fn merge_key<'a>(items: &'a [Value], order: Option<&'a Vec<Value>>) -> Option<&'a str> {
    if let Some(k) = order
        .and_then(|o| o.first())
        .and_then(Value::as_object)
        .filter(|o| o.len() == 1)
        .and_then(|o| o.keys().next())
    {
        return Some(k.as_str());
    }
    let objects = !items.is_empty() && items.iter().all(Value::is_object);
    MERGE_KEYS
        .iter()
        .copied()
        .find(|k| objects && items.iter().all(|i| i.get(*k).is_some()))
}

/// Merges `items` into `live` by `key`: matching items merge, `$patch: delete` removes, new
/// ones are appended; `$setElementOrder` then orders the items it names.
fn merge_list(live: &mut Vec<Value>, items: &[Value], key: &str, order: Option<&Vec<Value>>) {
    for item in items {
        let deleting = item.get("$patch").and_then(Value::as_str) == Some("delete");
        let pos = live
            .iter()
            .position(|l| l.get(key).is_some() && l.get(key) == item.get(key));
        match (pos, deleting) {
            (Some(i), true) => {
                live.remove(i);
            }
            (Some(i), false) => strategic_merge(&mut live[i], item),
            (None, false) => {
                let mut fresh = item.clone();
                strip_directives(&mut fresh);
                live.push(fresh);
            }
            (None, true) => {}
        }
    }
    if let Some(order) = order {
        let rank = |v: &Value| {
            order
                .iter()
                .position(|o| o.get(key).is_some() && o.get(key) == v.get(key))
                .unwrap_or(usize::MAX)
        };
        live.sort_by_key(rank);
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !is_directive(k));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Server-side apply, approximated: the applied configuration is merged into the live object
/// (fields it names win, fields it omits are kept; lists are replaced).
fn apply_merge(doc: &mut Value, applied: &Value) {
    match (doc, applied) {
        (Value::Object(d), Value::Object(a)) => {
            for (k, v) in a {
                match d.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        apply_merge(existing, v)
                    }
                    _ => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (d, a) => *d = a.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_test_op_guards_remove() {
        let obj = json!({"metadata": {"finalizers": ["a", "b"]}});
        let ok = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "a"}, {"op": "remove", "path": "/metadata/finalizers/0"}]);
        assert_eq!(
            apply_patch(PatchType::Json, &obj, &ok).unwrap(),
            json!({"metadata": {"finalizers": ["b"]}})
        );
        let bad = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "b"}, {"op": "remove", "path": "/metadata/finalizers/0"}]);
        assert!(apply_patch(PatchType::Json, &obj, &bad).is_err());
    }

    #[test]
    fn strategic_merges_named_lists() {
        let live = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "b", "image": "z"}]}});
        let out = apply_patch(PatchType::Strategic, &live, &patch).unwrap();
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "z"}]}})
        );
    }

    #[test]
    fn strategic_merges_by_other_keys_and_orders() {
        let live =
            json!({"ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81}]});
        let patch = json!({
            "$setElementOrder/ports": [{"containerPort": 443}, {"containerPort": 80}],
            "ports": [{"containerPort": 443}, {"containerPort": 81, "$patch": "delete"}],
        });
        let out = apply_patch(PatchType::Strategic, &live, &patch).unwrap();
        assert_eq!(
            out,
            json!({"ports": [{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}]})
        );
        let prim = apply_patch(
            PatchType::Strategic,
            &json!({"args": ["a"]}),
            &json!({"args": ["b"]}),
        )
        .unwrap();
        assert_eq!(prim, json!({"args": ["b"]}));
    }

    #[test]
    fn apply_keeps_unnamed_fields() {
        let live = json!({"spec": {"a": 1, "b": 2}});
        let out = apply_patch(PatchType::Apply, &live, &json!({"spec": {"b": 3}})).unwrap();
        assert_eq!(out, json!({"spec": {"a": 1, "b": 3}}));
    }
}
