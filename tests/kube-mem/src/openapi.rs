//! A minimal OpenAPI v3 document per group version: enough for kubectl to see that the server
//! validates fields itself (the `fieldValidation` parameter on PATCH), to pick merge patch for
//! custom resources, and to `kubectl explain` custom resources from their CRD schemas.
//! `/openapi/v2` is deliberately absent (kubectl then falls back to its built-in types).

use serde_json::{Value, json};

use crate::resources::{Registry, ResourceDef};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `com.qingcloud.hostnic.v1alpha1.NicPool`-style component names, as the real server uses.
fn schema_name(d: &ResourceDef, version: &str) -> String {
    let group = if d.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else {
        d.group.split('.').rev().collect::<Vec<_>>().join(".")
    };
    format!("{group}.{version}.{}", d.kind)
}

fn hash(s: &str) -> String {
    // FNV-1a: stable across runs, changes whenever the document does (kubectl caches by it).
    let h = s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    format!("{h:016X}")
}

pub fn root(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let doc = group_version(reg, &g, &v).unwrap_or_default();
            let p = gv_path(&g, &v);
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&doc.to_string()))}));
        }
    }
    json!({"paths": paths})
}

/// The document of `group/version`, or `None` if nothing is served there.
pub fn group_version(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs: Vec<_> = reg
        .all()
        .filter(|d| d.group == group && d.version(version).is_some())
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into(),
        json!({"description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.", "type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    );
    for d in defs {
        let gvk = json!({"group": d.group, "version": version, "kind": d.kind});
        let name = schema_name(d, version);
        let body_ref = json!({"schema": {"$ref": format!("#/components/schemas/{name}")}});
        let mut schema = d
            .version(version)
            .and_then(|v| v.schema.clone())
            .unwrap_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            props.insert("metadata".into(), json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard object's metadata."}));
        }
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(name, schema);
        let field_validation = json!({"name": "fieldValidation", "in": "query", "description": "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.", "schema": {"type": "string", "uniqueItems": true}});
        let ok = json!({"200": {"description": "OK", "content": {"application/json": body_ref}}});
        let op = |action: &str| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "parameters": [field_validation], "responses": ok});
        let mut patch = op("patch");
        let mut content = serde_json::Map::new();
        for ct in [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ] {
            content.insert(ct.into(), json!({"schema": {"type": "object"}}));
        }
        patch["requestBody"] = json!({"content": content, "required": true});
        let base = format!(
            "/{}/{}{}",
            gv_path(&d.group, version),
            if d.namespaced {
                "namespaces/{namespace}/"
            } else {
                ""
            },
            d.plural
        );
        paths.insert(base.clone(), json!({"get": op("list"), "post": op("post")}));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"get": op("get"), "put": op("put"), "patch": patch, "delete": op("delete")}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
