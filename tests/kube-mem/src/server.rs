//! The HTTP layer: routes requests to discovery, OpenAPI, the store and watches; authenticates,
//! authorizes and audits each request; streams watch events as chunked JSON lines.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::audit::AuditLog;
use crate::auth::{Attributes, Auth, Identity, authorize, forbidden_message};
use crate::discovery;
use crate::openapi;
use crate::patch::{PatchType, parse_body};
use crate::realism::{Live, delay_lines};
use crate::status::{ApiError, ApiResult};
use crate::store::{
    DeleteOpts, FieldValidation, ListOpts, Store, Target, WatchFilter, WatchStart, WriteOpts,
};
use crate::table::{IncludeObject, View, partial, table};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    pub store: Mutex<Store>,
    pub auth: Option<Auth>,
    pub audit: AuditLog,
    pub shutdown: CancellationToken,
    pub bookmark_interval: Duration,
    pub server_address: String,
    pub live: Live,
}

impl Shared {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// What API Priority and Fairness answers when a request's priority level is full.
fn too_many_requests() -> Response<Body> {
    let mut r = error_response(&ApiError::too_many_requests());
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// A parsed resource URL.
#[derive(Debug)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_resource_path(path: &str) -> Option<ResourcePath> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, ..] if !(rest.len() == 3 && matches!(*r, "status" | "finalize")) => {
            (Some(ns.to_string()), &rest[2..])
        }
        _ => (None, rest),
    };
    if rest.is_empty() || rest.len() > 3 || rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    Some(ResourcePath {
        group,
        version,
        namespace,
        plural: rest[0].to_string(),
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn query_map(req: &Request<Incoming>) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> &str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn rbac_verb(method: &Method, has_name: bool, watch: bool) -> &'static str {
    match (method.as_str(), has_name) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

/// `X` of a `fieldSelector` containing `metadata.name=X` (or `==`).
fn pinned_name(q: &HashMap<String, String>) -> Option<String> {
    q.get("fieldSelector")?.split(',').find_map(|term| {
        let v = term.trim().strip_prefix("metadata.name")?;
        let v = v.strip_prefix("==").or_else(|| v.strip_prefix('='))?;
        Some(v.trim().to_string()).filter(|v| !v.is_empty())
    })
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

/// Serves one request (never fails: errors become Status responses).
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let q = query_map(&req);
    let identity = match &shared.auth {
        None => Identity::admin(),
        Some(auth) => {
            let token = header_str(&req, header::AUTHORIZATION)
                .strip_prefix("Bearer ")
                .unwrap_or_default()
                .trim();
            match auth.identify(token) {
                Some(id) => id.clone(),
                None => {
                    let anon = Identity {
                        user: "system:anonymous".into(),
                        groups: vec!["system:unauthenticated".into()],
                        ..Default::default()
                    };
                    let a = Attributes {
                        verb: method.as_str().to_lowercase(),
                        path: path.clone(),
                        ..Default::default()
                    };
                    shared.audit.record(&anon, &a, false, 401);
                    return Ok(error_response(&ApiError::unauthorized()));
                }
            }
        }
    };
    let identity = match impersonated(&req) {
        None => identity,
        Some(who) if identity.is_admin() => who,
        Some(who) => {
            let a = Attributes {
                verb: "impersonate".into(),
                api_group: String::new(),
                resource: "users".into(),
                name: who.user.clone(),
                ..Default::default()
            };
            shared.audit.record(&identity, &a, false, 403);
            let msg = format!(
                "users \"{}\" is forbidden: User \"{}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
                who.user, identity.user
            );
            return Ok(error_response(&ApiError::forbidden(msg)));
        }
    };
    let rp = parse_resource_path(&path);
    let watch = truthy(&q, "watch");
    let attrs = match &rp {
        Some(rp) => Attributes {
            verb: rbac_verb(&method, rp.name.is_some(), watch).into(),
            api_group: rp.group.clone(),
            resource: rp.plural.clone(),
            subresource: rp.subresource.clone().unwrap_or_default(),
            namespace: rp.namespace.clone().unwrap_or_default(),
            // Like the real request-info resolver, a list/watch pinned to one name by a
            // field selector is authorized as that name (RBAC resourceNames apply).
            name: rp
                .name
                .clone()
                .or_else(|| pinned_name(&q))
                .unwrap_or_default(),
            path: String::new(),
        },
        None => Attributes {
            verb: method.as_str().to_lowercase(),
            path: path.clone(),
            ..Default::default()
        },
    };
    let allowed = authorize(&shared.store(), &identity, &attrs);
    if !allowed {
        shared.audit.record(&identity, &attrs, false, 403);
        let mut e = ApiError::forbidden(forbidden_message(&identity, &attrs));
        if attrs.is_resource() {
            e.details =
                Some(json!({"name": attrs.name, "group": attrs.api_group, "kind": attrs.resource}));
        }
        return Ok(error_response(&e));
    }
    if rp.is_some() {
        let is_write = is_write(&method);
        if shared.live.throttle.take(is_write) {
            shared.audit.record(&identity, &attrs, true, 429);
            return Ok(too_many_requests());
        }
        let latency = shared.live.get().write_latency;
        if is_write && !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
    let resp = match rp {
        Some(rp) => resource_request(&shared, &identity, req, rp, q).await,
        None => non_resource(&shared, &method, &path),
    };
    let resp = resp.unwrap_or_else(|e| error_response(&e));
    debug!(%method, %path, code = resp.status().as_u16(), user = %identity.user, "request");
    shared
        .audit
        .record(&identity, &attrs, true, resp.status().as_u16());
    Ok(resp)
}

fn non_resource(shared: &Shared, method: &Method, path: &str) -> ApiResult<Response<Body>> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {path}"
        )));
    }
    let store = shared.store();
    let reg = &store.registry;
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let doc = match segs.as_slice() {
        ["version"] => Some(discovery::version()),
        ["healthz"] | ["livez"] | ["readyz"] => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"ok")).boxed_unsync());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return Ok(r);
        }
        ["api"] => Some(discovery::api_versions(&shared.server_address)),
        ["apis"] => Some(discovery::group_list(reg)),
        ["api", v] => discovery::resource_list(reg, "", v),
        ["apis", g] => discovery::group(reg, g),
        ["apis", g, v] => discovery::resource_list(reg, g, v),
        ["openapi", "v3"] => Some(openapi::root(reg)),
        ["openapi", "v3", "api", v] => openapi::group_version(reg, "", v),
        ["openapi", "v3", "apis", g, v] => openapi::group_version(reg, g, v),
        ["kube-mem", "audit"] => {
            Some(serde_json::to_value(shared.audit.snapshot()).unwrap_or_default())
        }
        _ => None,
    };
    doc.map(|d| json_response(200, &d))
        .ok_or_else(|| ApiError::path_not_found(path))
}

async fn read_body(req: Request<Incoming>) -> ApiResult<Bytes> {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading body: {e}")))
}

fn list_opts(q: &HashMap<String, String>) -> ListOpts {
    ListOpts {
        labels: q.get("labelSelector").cloned(),
        fields: q.get("fieldSelector").cloned(),
        limit: q.get("limit").and_then(|l| l.parse().ok()),
        continue_token: q.get("continue").cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q.get("resourceVersionMatch").cloned(),
    }
}

async fn resource_request(
    shared: &Arc<Shared>,
    identity: &Identity,
    req: Request<Incoming>,
    rp: ResourcePath,
    q: HashMap<String, String>,
) -> ApiResult<Response<Body>> {
    let def = {
        let store = shared.store();
        store
            .registry
            .lookup(&rp.group, &rp.version, &rp.plural)
            .cloned()
    };
    let def = def.ok_or_else(|| ApiError::path_not_found(req.uri().path()))?;
    if (!def.namespaced && rp.namespace.is_some())
        || (def.namespaced && rp.namespace.is_none() && rp.name.is_some())
    {
        return Err(ApiError::path_not_found(req.uri().path()));
    }
    if let Some(sub) = rp.subresource.as_deref() {
        let v = def.version(&rp.version);
        let known = match sub {
            "status" => v.is_some_and(|v| v.status_subresource),
            "scale" => v.is_some_and(|v| v.scale.is_some()),
            _ => false,
        };
        if !known {
            return Err(ApiError::path_not_found(req.uri().path()));
        }
    }
    let t = Target {
        def,
        version: rp.version,
        namespace: rp.namespace,
        name: rp.name,
        subresource: rp.subresource,
    };
    if t.def.is_review() {
        return review(shared, identity, &t, req).await;
    }
    let accept = header_str(&req, header::ACCEPT).to_string();
    let include = IncludeObject::parse(q.get("includeObject").map(String::as_str));
    let view = match View::from_accept(&accept, include) {
        _ if t.subresource.is_some() => View::Object,
        v => v,
    };
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    let method = req.method().clone();
    // Without fieldManager, writes are attributed like the real server does: to the
    // User-Agent's product name. Apply requires an explicit one.
    let explicit_manager = q.get("fieldManager").cloned();
    let user_agent = header_str(&req, header::USER_AGENT)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let write = WriteOpts {
        field_manager: explicit_manager
            .clone()
            .or(Some(user_agent).filter(|u| !u.is_empty())),
        force: truthy(&q, "force"),
        dry_run,
        field_validation: FieldValidation::parse(q.get("fieldValidation").map(String::as_str)),
        user: Some(identity.clone()),
    };
    match (method, t.name.is_some()) {
        (Method::GET, false) if truthy(&q, "watch") => start_watch(shared, t, &q, view),
        (Method::GET, false) => {
            let store = shared.store();
            let list = store.list(&t, &list_opts(&q))?;
            if view == View::Metadata {
                let items: Vec<Value> = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(partial)
                    .collect();
                let meta = list["metadata"].clone();
                let kind = "PartialObjectMetadataList";
                let out = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items});
                return Ok(json_response(200, &out));
            }
            if let View::Table(include) = view {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let mut tbl = table(
                    columns(&t),
                    &items,
                    list["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default(),
                    include,
                );
                if let Some(c) = list["metadata"].get("continue") {
                    tbl["metadata"]["continue"] = c.clone();
                }
                return Ok(json_response(200, &tbl));
            }
            Ok(json_response(200, &list))
        }
        (Method::GET, true) => {
            let obj = shared.store().get(&t)?;
            if view == View::Metadata {
                return Ok(json_response(200, &partial(&obj)));
            }
            if let View::Table(include) = view {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                return Ok(json_response(
                    200,
                    &table(columns(&t), &[obj], &rv, include),
                ));
            }
            Ok(json_response(200, &obj))
        }
        (Method::POST, false) => {
            let body = parse_body(&read_body(req).await?, false)?;
            let (obj, warnings) = writing(shared, |s| s.create(&t, body, &write));
            Ok(warn(json_response(201, &obj?), warnings))
        }
        (Method::PUT, true) => {
            let body = parse_body(&read_body(req).await?, false)?;
            let (obj, warnings) = writing(shared, |s| s.update(&t, body, &write));
            Ok(warn(json_response(200, &obj?), warnings))
        }
        (Method::PATCH, true) => {
            let kind = PatchType::from_content_type(header_str(&req, header::CONTENT_TYPE))?;
            let body = parse_body(&read_body(req).await?, kind == PatchType::Apply)?;
            let opts = match kind {
                PatchType::Apply => WriteOpts {
                    field_manager: explicit_manager,
                    ..write
                },
                _ => write,
            };
            let (result, warnings) = writing(shared, |s| s.patch(&t, kind, body, &opts));
            let (obj, created) = result?;
            Ok(warn(
                json_response(if created { 201 } else { 200 }, &obj),
                warnings,
            ))
        }
        (Method::DELETE, named) => {
            let raw = read_body(req).await?;
            let body = if raw.is_empty() {
                json!({})
            } else {
                parse_body(&raw, false)?
            };
            let opts = DeleteOpts {
                user: Some(identity.clone()),
                propagation: q.get("propagationPolicy").cloned().or_else(|| {
                    body.get("propagationPolicy")
                        .and_then(Value::as_str)
                        .map(String::from)
                }),
                uid: body
                    .pointer("/preconditions/uid")
                    .and_then(Value::as_str)
                    .map(String::from),
                resource_version: body
                    .pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                    .map(String::from),
                dry_run: dry_run
                    || body
                        .get("dryRun")
                        .and_then(Value::as_array)
                        .is_some_and(|d| d.iter().any(|x| x == "All")),
            };
            let mut store = shared.store();
            let obj = if named {
                store.delete(&t, &opts)?
            } else {
                store.delete_collection(&t, &list_opts(&q), &opts)?
            };
            Ok(json_response(200, &obj))
        }
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "{m} is not supported here"
        ))),
    }
}

/// `Impersonate-User` / `Impersonate-Group` headers (`kubectl --as`), if present.
fn impersonated(req: &Request<Incoming>) -> Option<Identity> {
    let user = req.headers().get("impersonate-user")?.to_str().ok()?;
    let mut id = match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, name)) => Identity::service_account(ns, name),
        None => Identity::user(user),
    };
    for g in req.headers().get_all("impersonate-group") {
        if let Ok(g) = g.to_str() {
            id.groups.push(g.to_string());
        }
    }
    Some(id)
}

/// Answers a (Self)SubjectAccessReview from the stored RBAC objects (`kubectl auth can-i`).
async fn review(
    shared: &Arc<Shared>,
    identity: &Identity,
    t: &Target,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    if req.method() != Method::POST || t.name.is_some() {
        return Err(ApiError::method_not_allowed(
            "access reviews only support create",
        ));
    }
    let mut body = parse_body(&read_body(req).await?, false)?;
    let spec = body.get("spec").cloned().unwrap_or_default();
    let s = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let who = if t.def.plural == "selfsubjectaccessreviews" {
        identity.clone()
    } else {
        let groups = spec
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        Identity {
            user: s(&spec, "user"),
            groups: groups
                .filter_map(|g| g.as_str().map(String::from))
                .collect(),
            ..Default::default()
        }
    };
    let attrs = match (
        spec.get("resourceAttributes"),
        spec.get("nonResourceAttributes"),
    ) {
        (Some(r), _) => Attributes {
            verb: s(r, "verb"),
            api_group: s(r, "group"),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            namespace: s(r, "namespace"),
            name: s(r, "name"),
            path: String::new(),
        },
        (None, Some(n)) => Attributes {
            verb: s(n, "verb"),
            path: s(n, "path"),
            ..Default::default()
        },
        (None, None) => {
            return Err(ApiError::bad_request(
                "spec.resourceAttributes or spec.nonResourceAttributes is required",
            ));
        }
    };
    let allowed = authorize(&shared.store(), &who, &attrs);
    body["status"] = json!({"allowed": allowed});
    Ok(json_response(201, &body))
}

/// Runs a write on the store and collects the warnings it produced.
fn writing<T>(
    shared: &Shared,
    f: impl FnOnce(&mut Store) -> ApiResult<T>,
) -> (ApiResult<T>, Vec<String>) {
    let mut store = shared.store();
    // Start clean: the store's own writes (at start-up, cascades) warn nobody.
    store.take_warnings();
    let result = f(&mut store);
    (result, store.take_warnings())
}

/// Adds `Warning: 299 - "..."` headers, which kubectl prints.
fn warn(mut r: Response<Body>, warnings: Vec<String>) -> Response<Body> {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

fn columns(t: &Target) -> &[crate::resources::Column] {
    t.def
        .version(&t.version)
        .map(|v| v.columns.as_slice())
        .unwrap_or_default()
}

fn event_line(ty: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": ty, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Everything a watch task needs.
struct WatchTask {
    shared: Arc<Shared>,
    t: Target,
    filter: WatchFilter,
    view: View,
    bookmarks: bool,
    initial_end_bookmark: bool,
    timeout: Duration,
}

impl WatchTask {
    fn render(&self, obj: &Value) -> Value {
        match self.view {
            View::Metadata => partial(obj),
            View::Table(include) => {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                table(columns(&self.t), std::slice::from_ref(obj), &rv, include)
            }
            View::Object => obj.clone(),
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": self.t.def.kind, "apiVersion": self.t.def.api_version(&self.t.version), "metadata": meta})
    }

    async fn run(self, start: WatchStart, tx: mpsc::Sender<Bytes>) {
        let WatchStart {
            initial,
            rv,
            mut rx,
        } = start;
        let mut last_rv = rv;
        for (ty, obj) in &initial {
            if tx.send(event_line(ty, &self.render(obj))).await.is_err() {
                return;
            }
        }
        if self.initial_end_bookmark
            && tx
                .send(event_line("BOOKMARK", &self.bookmark(rv, true)))
                .await
                .is_err()
        {
            return;
        }
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(self.shared.bookmark_interval);
        tick.tick().await;
        loop {
            let line = tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                _ = &mut deadline => return,
                // The client went away: stop now rather than at the next event.
                _ = tx.closed() => return,
                _ = tick.tick(), if self.bookmarks => event_line("BOOKMARK", &self.bookmark(last_rv, false)),
                ev = rx.recv() => match ev {
                    Ok(ev) if ev.rv <= last_rv => continue,
                    Ok(ev) => {
                        last_rv = ev.rv;
                        let Some(ty) = self.filter.translate(&ev) else { continue };
                        let obj = Store::render(&self.t, &ev.object);
                        event_line(ty, &self.render(&obj))
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let e = ApiError::gone("too old resource version: the watch fell behind");
                        let _ = tx.send(event_line("ERROR", &e.to_status())).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    }
}

fn start_watch(
    shared: &Arc<Shared>,
    t: Target,
    q: &HashMap<String, String>,
    view: View,
) -> ApiResult<Response<Body>> {
    let opts = list_opts(q);
    let send_initial = truthy(q, "sendInitialEvents");
    let bookmarks = truthy(q, "allowWatchBookmarks");
    let (filter, start) = {
        let store = shared.store();
        let filter = store.filter(&t, &opts)?;
        let start = store.watch(&t, &filter, opts.resource_version.as_deref(), send_initial);
        (filter, start)
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    match start {
        Ok(start) => {
            let task = WatchTask {
                shared: shared.clone(),
                t,
                filter,
                view,
                bookmarks,
                initial_end_bookmark: send_initial && bookmarks,
                timeout,
            };
            tokio::spawn(task.run(start, tx));
        }
        // The real server answers an expired watch with 200 and an ERROR event, which makes
        // clients (kube-runtime's watcher) relist instead of retrying the same version.
        Err(e) => {
            let _ = tx.try_send(event_line("ERROR", &e.to_status()));
        }
    }
    let delay = shared.live.get().watch_delay;
    if !delay.is_zero() {
        let (delayed_tx, delayed_rx) = mpsc::channel::<Bytes>(256);
        tokio::spawn(delay_lines(rx, delayed_tx, delay));
        rx = delayed_rx;
    }
    let stream = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    });
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_paths() {
        let p = parse_resource_path("/api/v1/namespaces/default/pods/p1/status").unwrap();
        assert_eq!(
            (
                p.namespace.as_deref(),
                p.plural.as_str(),
                p.name.as_deref(),
                p.subresource.as_deref()
            ),
            (Some("default"), "pods", Some("p1"), Some("status"))
        );
        let p = parse_resource_path("/api/v1/namespaces/default").unwrap();
        assert_eq!(
            (p.namespace, p.plural.as_str(), p.name.as_deref()),
            (None, "namespaces", Some("default"))
        );
        let p = parse_resource_path("/api/v1/namespaces/x/status").unwrap();
        assert_eq!(
            (p.plural.as_str(), p.subresource.as_deref()),
            ("namespaces", Some("status"))
        );
        let p =
            parse_resource_path("/apis/hostnic.qingcloud.com/v1alpha1/nicpools/a/scale").unwrap();
        assert_eq!(
            (
                p.group.as_str(),
                p.plural.as_str(),
                p.subresource.as_deref()
            ),
            ("hostnic.qingcloud.com", "nicpools", Some("scale"))
        );
        assert!(parse_resource_path("/apis/g/v").is_none());
    }
}
