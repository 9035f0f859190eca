//! The small JSONPath subset printer columns, selectable fields and scale paths use:
//! `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.type=="Ready")].status`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.path=="value")]`
    Filter(Vec<String>, String),
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(Vec<Seg>);

impl JsonPath {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().trim_start_matches('{').trim_end_matches('}');
        let mut segs = Vec::new();
        let mut rest = s.strip_prefix('$').unwrap_or(s);
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end > 0 {
                    segs.push(Seg::Field(r[..end].to_string()));
                }
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']')?;
                let inner = &r[..end];
                rest = &r[end + 1..];
                if inner == "*" {
                    segs.push(Seg::All);
                } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
                {
                    let (path, val) = f.split_once("==")?;
                    let val = val.trim().trim_matches('"').trim_matches('\'').to_string();
                    segs.push(Seg::Filter(
                        path.trim().split('.').map(String::from).collect(),
                        val,
                    ));
                } else if let Ok(i) = inner.parse() {
                    segs.push(Seg::Index(i));
                } else {
                    segs.push(Seg::Field(
                        inner.trim_matches('\'').trim_matches('"').to_string(),
                    ));
                }
            } else {
                return None;
            }
        }
        Some(JsonPath(segs))
    }

    /// Every value the path reaches, in document order.
    pub fn find<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut cur = vec![root];
        for seg in &self.0 {
            let mut next = Vec::new();
            for v in cur {
                match seg {
                    Seg::Field(f) => next.extend(v.get(f)),
                    Seg::Index(i) => next.extend(v.get(*i)),
                    Seg::All => match v {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(o) => next.extend(o.values()),
                        _ => {}
                    },
                    Seg::Filter(path, want) => {
                        for item in v.as_array().into_iter().flatten() {
                            let got = path.iter().try_fold(item, |x, p| x.get(p));
                            let hit = match got {
                                Some(Value::String(s)) => s == want,
                                Some(other) => {
                                    *other
                                        == serde_json::from_str::<Value>(want)
                                            .unwrap_or(Value::Null)
                                }
                                None => false,
                            };
                            if hit {
                                next.push(item);
                            }
                        }
                    }
                }
            }
            cur = next;
        }
        cur
    }

    /// The field names along a plain `.a.b.c` path (for writing scale replicas).
    pub fn plain_fields(&self) -> Option<Vec<&str>> {
        self.0
            .iter()
            .map(|s| {
                if let Seg::Field(f) = s {
                    Some(f.as_str())
                } else {
                    None
                }
            })
            .collect()
    }
}

/// Sets `value` at a plain field path, creating objects on the way.
pub fn set_path(root: &mut Value, fields: &[&str], value: Value) {
    let mut cur = root;
    for (i, f) in fields.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        let Value::Object(map) = cur else { return };
        if i + 1 == fields.len() {
            map.insert(f.to_string(), value);
            return;
        }
        cur = map
            .entry(f.to_string())
            .or_insert(Value::Object(Default::default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_and_fields() {
        let o = json!({"status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}, "spec": {"v": ["a", "b"]}});
        let p = JsonPath::parse(r#".status.conditions[?(@.type=="Ready")].status"#).unwrap();
        assert_eq!(p.find(&o), vec![&json!("True")]);
        assert_eq!(
            JsonPath::parse(".spec.v").unwrap().find(&o),
            vec![&json!(["a", "b"])]
        );
        assert_eq!(
            JsonPath::parse(".spec.v[1]").unwrap().find(&o),
            vec![&json!("b")]
        );
        assert_eq!(JsonPath::parse(".spec.v[*]").unwrap().find(&o).len(), 2);
        assert!(
            JsonPath::parse(".spec.missing")
                .unwrap()
                .find(&o)
                .is_empty()
        );
    }

    #[test]
    fn set_creates_parents() {
        let mut o = json!({});
        set_path(&mut o, &["spec", "size"], json!(5));
        assert_eq!(o, json!({"spec": {"size": 5}}));
    }
}
