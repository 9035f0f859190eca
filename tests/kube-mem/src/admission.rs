//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1): the stored policies and their
//! bindings, evaluated with CEL on every write a user makes, as the real API server does since
//! 1.30, so a policy shipped in the manifests is tested against the requests the components send.
//!
//! Supported: `matchConstraints.resourceRules` (groups, versions, operations, resources with
//! subresources and `*`), `matchConditions`, `validations` (`message`, `messageExpression`,
//! `reason`), `failurePolicy`, and the binding's `validationActions` (`Deny`, `Warn`, `Audit`).
//! What kube-mem cannot evaluate (params, variables, selectors; `authorizer` fails as an
//! unknown variable) refuses the request instead of passing silently.

use serde_json::{Value, json};

use crate::auth::Identity;
use crate::status::{ApiError, ApiResult};
use crate::store::{Store, Target};

const GROUP: &str = "admissionregistration.k8s.io";

/// The operation of a write, as admission sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// One write to admit: who, what, and the object before and after.
pub struct Request<'a> {
    pub operation: Operation,
    pub user: &'a Identity,
    pub target: &'a Target,
    pub name: &'a str,
    pub object: Option<&'a Value>,
    pub old_object: Option<&'a Value>,
}

/// Runs every bound policy that matches `req`. Returns the warnings of `Warn` bindings, or the
/// denial of the first `Deny` binding whose validation fails.
pub fn admit(store: &Store, req: &Request<'_>) -> ApiResult<Vec<String>> {
    let policies = store.objects_of(GROUP, "validatingadmissionpolicies");
    let mut warnings = Vec::new();
    for binding in store.objects_of(GROUP, "validatingadmissionpolicybindings") {
        let policy_name = str_at(binding, "/spec/policyName");
        // The real server ignores a binding whose policy does not exist (yet).
        let Some(policy) = policies
            .iter()
            .find(|p| str_at(p, "/metadata/name") == policy_name)
        else {
            continue;
        };
        if !matches_rules(policy, req) {
            continue;
        }
        let binding_name = str_at(binding, "/metadata/name");
        if let Some(failure) = evaluate(policy, binding, req)? {
            let text = format!(
                "ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}' denied request: {}",
                failure.message
            );
            let actions = strings_at(binding, "/spec/validationActions");
            if actions.iter().any(|a| a == "Deny") {
                let subject = format!(
                    "{} \"{}\"",
                    qualified(req.target),
                    if req.name.is_empty() { "" } else { req.name }
                );
                return Err(ApiError::denied(
                    failure.reason,
                    format!("{subject} is forbidden: {text}"),
                ));
            }
            if actions.iter().any(|a| a == "Warn") {
                warnings.push(format!(
                    "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {}",
                    failure.message
                ));
            }
        }
    }
    Ok(warnings)
}

/// Why a policy refused a request.
struct Failure {
    reason: &'static str,
    message: String,
}

fn qualified(t: &Target) -> String {
    if t.def.group.is_empty() {
        t.def.plural.clone()
    } else {
        format!("{}.{}", t.def.plural, t.def.group)
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn strings_at(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

fn listed(list: &[String], value: &str) -> bool {
    list.iter().any(|x| x == "*" || x == value)
}

/// `matchConstraints.resourceRules`: group, version, operation and resource (with
/// subresource, `pods/status`, `*/status`, `*` matching only main resources, as the real server).
fn matches_rules(policy: &Value, req: &Request<'_>) -> bool {
    let t = req.target;
    let resource = match &t.subresource {
        Some(sub) => format!("{}/{sub}", t.def.plural),
        None => t.def.plural.clone(),
    };
    let rules = policy
        .pointer("/spec/matchConstraints/resourceRules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    rules.into_iter().any(|rule| {
        let resources = strings_at(rule, "/resources");
        let resource_ok = resources
            .iter()
            .any(|r| match (r.split_once('/'), &t.subresource) {
                (None, None) => r == "*" || *r == t.def.plural,
                (Some((main, sub)), Some(s)) => {
                    (main == "*" || main == t.def.plural) && (sub == "*" || sub == s)
                }
                _ => *r == resource,
            });
        listed(&strings_at(rule, "/apiGroups"), &t.def.group)
            && listed(&strings_at(rule, "/apiVersions"), &t.version)
            && listed(&strings_at(rule, "/operations"), req.operation.as_str())
            && resource_ok
    })
}

/// The CEL variables of a request: `object`, `oldObject` and `request`.
fn context(req: &Request<'_>) -> ApiResult<cel::Context<'static, 'static>> {
    let t = req.target;
    let request = json!({
        "operation": req.operation.as_str(),
        "name": req.name,
        "namespace": t.namespace.clone().unwrap_or_default(),
        "resource": {"group": t.def.group, "version": t.version, "resource": t.def.plural},
        "subResource": t.subresource.clone().unwrap_or_default(),
        "kind": {"group": t.def.group, "version": t.version, "kind": t.def.kind},
        "userInfo": {
            "username": req.user.user,
            "groups": req.user.groups,
            "extra": req.user.extra,
        },
    });
    let mut ctx = cel::Context::default();
    for (name, value) in [
        ("object", req.object.cloned().unwrap_or(Value::Null)),
        ("oldObject", req.old_object.cloned().unwrap_or(Value::Null)),
        ("request", request),
    ] {
        let v = cel::to_value(value)
            .map_err(|e| ApiError::internal(format!("admission: convert {name}: {e}")))?;
        ctx.add_variable_from_value(name, v);
    }
    Ok(ctx)
}

fn eval(ctx: &cel::Context<'_, '_>, expression: &str) -> Result<cel::Value, String> {
    let program = cel::Program::compile(expression).map_err(|e| format!("compilation: {e}"))?;
    program.execute(ctx).map_err(|e| e.to_string())
}

fn eval_bool(ctx: &cel::Context<'_, '_>, expression: &str) -> Result<bool, String> {
    match eval(ctx, expression)? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!("expected a bool, got {other:?}")),
    }
}

/// Evaluates one bound policy: `None` when it admits the request.
fn evaluate(policy: &Value, binding: &Value, req: &Request<'_>) -> ApiResult<Option<Failure>> {
    let name = str_at(policy, "/metadata/name");
    let unsupported = |what: &str| {
        ApiError::internal(format!(
            "ValidatingAdmissionPolicy '{name}': kube-mem does not evaluate {what}"
        ))
    };
    for field in ["/spec/paramKind", "/spec/variables"] {
        if policy.pointer(field).is_some() {
            return Err(unsupported(field));
        }
    }
    for selector in [
        "/spec/matchConstraints/namespaceSelector",
        "/spec/matchConstraints/objectSelector",
        "/spec/matchResources",
    ] {
        let set = |v: &Value| v.pointer(selector).is_some_and(|s| s != &json!({}));
        if set(policy) || set(binding) {
            return Err(unsupported(selector));
        }
    }
    // failurePolicy Fail (the default): an expression that cannot be evaluated denies.
    let fail_closed = str_at(policy, "/spec/failurePolicy") != "Ignore";
    let on_error = |expression: &str, e: String| {
        fail_closed.then(|| Failure {
            reason: "Forbidden",
            message: format!("expression '{expression}' resulted in error: {e}"),
        })
    };
    let ctx = context(req)?;
    for cond in array_at(policy, "/spec/matchConditions") {
        let expression = str_at(cond, "/expression");
        match eval_bool(&ctx, expression) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Ok(on_error(expression, e)),
        }
    }
    for validation in array_at(policy, "/spec/validations") {
        let expression = str_at(validation, "/expression");
        match eval_bool(&ctx, expression) {
            Ok(true) => {}
            Ok(false) => {
                let message = match str_at(validation, "/messageExpression") {
                    "" => match str_at(validation, "/message") {
                        "" => format!("failed expression: {expression}"),
                        m => m.to_string(),
                    },
                    me => match eval(&ctx, me) {
                        Ok(cel::Value::String(s)) => s.to_string(),
                        _ => format!("failed expression: {expression}"),
                    },
                };
                return Ok(Some(Failure {
                    reason: reason(str_at(validation, "/reason")),
                    message,
                }));
            }
            Err(e) => return Ok(on_error(expression, e)),
        }
    }
    Ok(None)
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The reasons a validation may name; anything else (or none) is `Forbidden`.
fn reason(r: &str) -> &'static str {
    match r {
        "Invalid" => "Invalid",
        "Unauthorized" => "Unauthorized",
        "RequestEntityTooLarge" => "RequestEntityTooLarge",
        _ => "Forbidden",
    }
}
