//! Just enough of the Kubernetes protobuf encoding to accept what kubectl's typed clients send
//! (`kubectl create namespace|configmap|secret|serviceaccount|role|clusterrole|rolebinding|
//! clusterrolebinding` and `kubectl auth can-i` POST protobuf bodies). Other
//! kinds in protobuf get 415; answers are always JSON, which kubectl also accepts.

use base64::Engine;
use serde_json::{Map, Value, json};

/// Prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8] = b"k8s\0";

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The fields of one message, in order.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let val = match key & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 => {
                pos += 8;
                Wire::Other
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let b = buf.get(pos..pos.checked_add(len)?)?;
                pos += len;
                Wire::Bytes(b)
            }
            5 => {
                pos += 4;
                Wire::Other
            }
            _ => return None,
        };
        out.push((key >> 3, val));
    }
    Some(out)
}

fn text(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

/// A map entry message: key = 1, value = 2.
fn entry(b: &[u8]) -> Option<(String, &[u8])> {
    let mut k = String::new();
    let mut v: &[u8] = &[];
    for (n, w) in fields(b)? {
        match (n, w) {
            (1, Wire::Bytes(x)) => k = text(x)?,
            (2, Wire::Bytes(x)) => v = x,
            _ => {}
        }
    }
    Some((k, v))
}

fn insert_entry(obj: &mut Map<String, Value>, key: &str, b: &[u8], binary: bool) -> Option<()> {
    let (k, v) = entry(b)?;
    let val = if binary {
        json!(base64::engine::general_purpose::STANDARD.encode(v))
    } else {
        json!(text(v)?)
    };
    obj.entry(key)
        .or_insert_with(|| json!({}))
        .as_object_mut()?
        .insert(k, val);
    Some(())
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    for (n, w) in fields(b)? {
        // gogo-protobuf writes empty strings too: absent and empty are the same in JSON.
        let Wire::Bytes(x) = w else { continue };
        if x.is_empty() {
            continue;
        }
        match n {
            1 => _ = m.insert("name".into(), json!(text(x)?)),
            2 => _ = m.insert("generateName".into(), json!(text(x)?)),
            3 => _ = m.insert("namespace".into(), json!(text(x)?)),
            11 => insert_entry(&mut m, "labels", x, false)?,
            12 => insert_entry(&mut m, "annotations", x, false)?,
            14 => m
                .entry("finalizers")
                .or_insert_with(|| json!([]))
                .as_array_mut()?
                .push(json!(text(x)?)),
            _ => {}
        }
    }
    Some(Value::Object(m))
}

/// A message of string fields, named by field number.
fn strings(b: &[u8], names: &[(u64, &str)]) -> Option<Value> {
    let mut m = Map::new();
    for (n, w) in fields(b)? {
        let name = names.iter().find(|(f, _)| *f == n).map(|(_, name)| name);
        if let (Some(name), Wire::Bytes(x)) = (name, w)
            && !x.is_empty()
        {
            m.insert(name.to_string(), json!(text(x)?));
        }
    }
    Some(Value::Object(m))
}

/// An RBAC PolicyRule: repeated string fields.
fn policy_rule(b: &[u8]) -> Option<Value> {
    const NAMES: &[(u64, &str)] = &[
        (1, "verbs"),
        (2, "apiGroups"),
        (3, "resources"),
        (4, "resourceNames"),
        (5, "nonResourceURLs"),
    ];
    let mut m = Map::new();
    for (n, w) in fields(b)? {
        if let (Some((_, name)), Wire::Bytes(x)) = (NAMES.iter().find(|(f, _)| *f == n), w) {
            m.entry(name.to_string())
                .or_insert_with(|| json!([]))
                .as_array_mut()?
                .push(json!(text(x)?));
        }
    }
    Some(Value::Object(m))
}

/// (Self)SubjectAccessReviewSpec, as `kubectl auth can-i` sends it.
fn review_spec(b: &[u8]) -> Option<Value> {
    const RESOURCE: &[(u64, &str)] = &[
        (1, "namespace"),
        (2, "verb"),
        (3, "group"),
        (4, "version"),
        (5, "resource"),
        (6, "subresource"),
        (7, "name"),
    ];
    let mut m = Map::new();
    for (n, w) in fields(b)? {
        let Wire::Bytes(x) = w else { continue };
        match n {
            1 => _ = m.insert("resourceAttributes".into(), strings(x, RESOURCE)?),
            2 => {
                _ = m.insert(
                    "nonResourceAttributes".into(),
                    strings(x, &[(1, "path"), (2, "verb")])?,
                )
            }
            3 => _ = m.insert("user".into(), json!(text(x)?)),
            4 => m
                .entry("groups")
                .or_insert_with(|| json!([]))
                .as_array_mut()?
                .push(json!(text(x)?)),
            _ => {}
        }
    }
    Some(Value::Object(m))
}

/// Decodes a protobuf body of a supported kind into its JSON form.
pub fn decode(body: &[u8]) -> Option<Value> {
    let unknown = body.strip_prefix(MAGIC)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, w) in fields(unknown)? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                for (tn, tw) in fields(tm)? {
                    match (tn, tw) {
                        (1, Wire::Bytes(x)) => api_version = text(x)?,
                        (2, Wire::Bytes(x)) => kind = text(x)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    for (n, w) in fields(raw)? {
        match (kind.as_str(), n, w) {
            (_, 1, Wire::Bytes(x)) => _ = obj.insert("metadata".into(), object_meta(x)?),
            ("Namespace", _, _) | ("ServiceAccount", _, _) => {}
            ("ConfigMap", 2, Wire::Bytes(x)) => insert_entry(&mut obj, "data", x, false)?,
            ("ConfigMap", 3, Wire::Bytes(x)) => insert_entry(&mut obj, "binaryData", x, true)?,
            ("ConfigMap", 4, Wire::Varint(v)) | ("Secret", 5, Wire::Varint(v)) => {
                _ = obj.insert("immutable".into(), json!(v != 0))
            }
            ("Secret", 2, Wire::Bytes(x)) => insert_entry(&mut obj, "data", x, true)?,
            ("Secret", 3, Wire::Bytes(x)) => _ = obj.insert("type".into(), json!(text(x)?)),
            ("Secret", 4, Wire::Bytes(x)) => insert_entry(&mut obj, "stringData", x, false)?,
            ("SelfSubjectAccessReview" | "SubjectAccessReview", 2, Wire::Bytes(x)) => {
                _ = obj.insert("spec".into(), review_spec(x)?)
            }
            ("Role" | "ClusterRole", 2, Wire::Bytes(x)) => obj
                .entry("rules")
                .or_insert_with(|| json!([]))
                .as_array_mut()?
                .push(policy_rule(x)?),
            ("RoleBinding" | "ClusterRoleBinding", 2, Wire::Bytes(x)) => {
                let subject = strings(
                    x,
                    &[(1, "kind"), (2, "apiGroup"), (3, "name"), (4, "namespace")],
                )?;
                obj.entry("subjects")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()?
                    .push(subject)
            }
            ("RoleBinding" | "ClusterRoleBinding", 3, Wire::Bytes(x)) => {
                _ = obj.insert(
                    "roleRef".into(),
                    strings(x, &[(1, "apiGroup"), (2, "kind"), (3, "name")])?,
                )
            }
            (
                "ConfigMap"
                | "Secret"
                | "SelfSubjectAccessReview"
                | "SubjectAccessReview"
                | "Role"
                | "ClusterRole"
                | "RoleBinding"
                | "ClusterRoleBinding",
                _,
                _,
            ) => {}
            _ => return None,
        }
    }
    Some(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, b: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, b.len() as u8];
        out.extend_from_slice(b);
        out
    }

    #[test]
    fn decodes_a_configmap() {
        let meta = [
            field(1, b"cm"),
            field(11, &[field(1, b"a"), field(2, b"b")].concat()),
        ]
        .concat();
        let raw = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
        ]
        .concat();
        let body = [
            MAGIC.to_vec(),
            field(1, &[field(1, b"v1"), field(2, b"ConfigMap")].concat()),
            field(2, &raw),
        ]
        .concat();
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"a": "b"}}, "data": {"k": "v"}})
        );
    }
}
