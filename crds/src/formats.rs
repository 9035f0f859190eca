//! Schema formats the API server recognises: schemars names Rust's integer widths (`uint32`,
//! `uint8`, ...), which the apiserver does not know and warns about on every CRD apply.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    JSONSchemaPropsOrStringArray,
};

/// Formats kept as they are: the OpenAPI numeric formats and the string formats schemars and
/// k8s-openapi emit for our types, all of which the apiserver recognises.
const KEPT: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
];

/// What a schema's `format` becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapped {
    /// Recognised: unchanged.
    Keep,
    /// A Rust integer width: the smallest OpenAPI integer format holding it, and whether it is
    /// unsigned (then `minimum: 0` says what the dropped `u` said).
    Integer {
        format: &'static str,
        unsigned: bool,
    },
    /// Unknown to the apiserver and without an equivalent: dropped (the type still applies).
    Drop,
}

fn map(format: &str) -> Mapped {
    match format {
        f if KEPT.contains(&f) => Mapped::Keep,
        "int8" | "int16" => Mapped::Integer {
            format: "int32",
            unsigned: false,
        },
        "uint8" | "uint16" => Mapped::Integer {
            format: "int32",
            unsigned: true,
        },
        // A u32 does not fit an int32; a u64 above i64::MAX does not fit any Kubernetes integer,
        // so int64 is the closest either way.
        "uint32" | "uint64" | "uint" => Mapped::Integer {
            format: "int64",
            unsigned: true,
        },
        "int" => Mapped::Integer {
            format: "int64",
            unsigned: false,
        },
        _ => Mapped::Drop,
    }
}

/// `crd` with every schema format of every version made one the apiserver recognises.
pub fn recognised(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|v| v.open_api_v3_schema.as_mut())
        {
            fix(schema);
        }
    }
    crd
}

fn fix(s: &mut JSONSchemaProps) {
    if let Some(format) = s.format.take() {
        s.format = match map(&format) {
            Mapped::Keep => Some(format),
            Mapped::Integer { format, unsigned } => {
                if unsigned {
                    s.minimum = Some(s.minimum.map_or(0.0, |m| m.max(0.0)));
                }
                Some(format.to_string())
            }
            Mapped::Drop => None,
        };
    }
    let maps = [
        &mut s.properties,
        &mut s.pattern_properties,
        &mut s.definitions,
    ];
    for map in maps.into_iter().flatten() {
        map.values_mut().for_each(fix);
    }
    for list in [&mut s.all_of, &mut s.any_of, &mut s.one_of]
        .into_iter()
        .flatten()
    {
        list.iter_mut().for_each(fix);
    }
    if let Some(not) = &mut s.not {
        fix(not);
    }
    match &mut s.items {
        Some(JSONSchemaPropsOrArray::Schema(one)) => fix(one),
        Some(JSONSchemaPropsOrArray::Schemas(many)) => many.iter_mut().for_each(fix),
        None => {}
    }
    for nested in [&mut s.additional_properties, &mut s.additional_items] {
        if let Some(JSONSchemaPropsOrBool::Schema(one)) = nested {
            fix(one);
        }
    }
    for dep in s.dependencies.iter_mut().flat_map(|d| d.values_mut()) {
        if let JSONSchemaPropsOrStringArray::Schema(one) = dep {
            fix(one);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_widths_become_openapi_formats_and_unsigned_keeps_its_floor() {
        let mut s = JSONSchemaProps {
            type_: Some("object".into()),
            properties: Some(
                [
                    ("a", "uint32", None),
                    ("b", "uint8", Some(1.0)),
                    ("c", "int16", None),
                    ("d", "date-time", None),
                    ("e", "uuid-ish", None),
                ]
                .into_iter()
                .map(|(name, format, minimum)| {
                    let prop = JSONSchemaProps {
                        format: Some(format.into()),
                        minimum,
                        ..Default::default()
                    };
                    (name.to_string(), prop)
                })
                .collect(),
            ),
            items: Some(JSONSchemaPropsOrArray::Schema(Box::new(JSONSchemaProps {
                format: Some("uint64".into()),
                ..Default::default()
            }))),
            ..Default::default()
        };
        fix(&mut s);
        let props = s.properties.as_ref().map(|p| {
            p.iter()
                .map(|(k, v)| (k.as_str(), v.format.as_deref(), v.minimum))
                .collect::<Vec<_>>()
        });
        assert_eq!(
            props,
            Some(vec![
                ("a", Some("int64"), Some(0.0)),
                ("b", Some("int32"), Some(1.0)),
                ("c", Some("int32"), None),
                ("d", Some("date-time"), None),
                ("e", None, None),
            ])
        );
        let Some(JSONSchemaPropsOrArray::Schema(item)) = &s.items else {
            panic!("items kept")
        };
        assert_eq!(
            (item.format.as_deref(), item.minimum),
            (Some("int64"), Some(0.0))
        );
    }
}
