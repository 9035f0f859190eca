//! The object store and its semantics: resourceVersions, uids, optimistic concurrency,
//! generation, status/scale subresources, finalizers and cascading deletion, and the bounded
//! event history watches resume from. No I/O: the HTTP layer calls into it under a lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::admission::{self, Operation};
use crate::auth::Identity;
use crate::events;
use crate::formats;
use crate::jsonpath::{JsonPath, set_path};
use crate::managed::{self, Op};
use crate::patch::{PatchType, apply_patch};
use crate::resources::{Registry, ResKey, ResourceDef, VersionDef, from_crd};
use crate::schema;
use crate::selector::{FieldSelector, LabelSelector, extra_fields};
use crate::status::{ApiError, ApiResult, Cause, Subject};
use crate::typed;

/// What a watch event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as kept in the history and broadcast to watches.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub rv: u64,
    pub res: ResKey,
    pub kind: EventType,
    pub object: Value,
    /// The object before a modification (so selector watches can turn it into ADDED/DELETED).
    pub old: Option<Value>,
}

/// The resource (and optional namespace, name, subresource) a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub def: Arc<ResourceDef>,
    pub version: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    fn subject<'a>(&'a self, name: &'a str) -> Subject<'a> {
        Subject {
            group: &self.def.group,
            plural: &self.def.plural,
            kind: &self.def.kind,
            name,
        }
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    fn ver(&self) -> ApiResult<&VersionDef> {
        self.def
            .version(&self.version)
            .ok_or_else(|| ApiError::path_not_found(&self.def.plural))
    }

    fn obj_key(&self, name: &str) -> (String, String) {
        (
            if self.def.namespaced {
                self.namespace.clone().unwrap_or_default()
            } else {
                String::new()
            },
            name.to_string(),
        )
    }
}

/// Query options of list and watch requests.
#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    pub labels: Option<String>,
    pub fields: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// Options of a delete: propagation policy and preconditions.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// Who deletes, for admission (`None`: the server itself, e.g. garbage collection).
    pub user: Option<Identity>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

/// `fieldValidation`: what a write does with fields the schema does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in `Warning` headers (the server's default).
    #[default]
    Warn,
    /// Reject the write (kubectl's default).
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Ignore") => FieldValidation::Ignore,
            Some("Strict") => FieldValidation::Strict,
            _ => FieldValidation::Warn,
        }
    }
}

/// Options of a write (create, update, patch).
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    pub field_validation: FieldValidation,
    /// `fieldManager` (or the default the server derived from the User-Agent).
    pub field_manager: Option<String>,
    /// `force` of an apply: take conflicting fields from other managers.
    pub force: bool,
    pub dry_run: bool,
    /// Who writes, for admission (`None`: the server itself, e.g. at start-up).
    pub user: Option<Identity>,
}

impl WriteOpts {
    fn manager(&self) -> String {
        self.field_manager
            .clone()
            .unwrap_or_else(|| "unknown".into())
    }
}

/// The matching part of a watch: resource, namespace and selectors.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    pub res: ResKey,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl WatchFilter {
    pub fn matches(&self, obj: &Value) -> bool {
        let ns_ok = self
            .namespace
            .as_deref()
            .is_none_or(|ns| meta_str(obj, "namespace") == ns);
        ns_ok && self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event type this watch sees for `ev`, if any: a modification that makes an object
    /// (stop) match the selector is an ADDED (DELETED) for this watch, as on the real server.
    pub fn translate(&self, ev: &StoredEvent) -> Option<&'static str> {
        if ev.res != self.res {
            return None;
        }
        let now = self.matches(&ev.object);
        match ev.kind {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => now.then_some("DELETED"),
            EventType::Modified => match (ev.old.as_ref().is_some_and(|o| self.matches(o)), now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
        }
    }
}

/// Where a watch starts.
#[derive(Debug)]
pub struct WatchStart {
    /// Events to send first (synthetic ADDED for the current state, or history replay).
    pub initial: Vec<(&'static str, Value)>,
    /// The resourceVersion the initial events bring the watcher up to.
    pub rv: u64,
    pub rx: broadcast::Receiver<Arc<StoredEvent>>,
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let map = obj.as_object_mut().expect("made an object above");
    let m = map.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    m.as_object_mut().expect("made an object above")
}

/// The current time as the API prints timestamps (RFC 3339, seconds, UTC).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid() -> String {
    let b: u128 =
        (rand::random::<u128>() & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Whether objects of this resource carry `metadata.generation`.
fn has_generation(def: &ResourceDef, version: &str) -> bool {
    def.custom || def.has_status(version)
}

/// The object without metadata (and status, when that is a subresource): what generation tracks.
fn spec_part(obj: &Value, drop_status: bool) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if drop_status {
            m.remove("status");
        }
    }
    o
}

fn without_rv(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        // Only the timestamps: a write that changes ownership is not a no-op.
        for e in m
            .get_mut("managedFields")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(e) = e.as_object_mut() {
                e.remove("time");
            }
        }
    }
    o
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Main,
    Status,
}

/// The whole in-memory state of the server.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    pub registry: Registry,
    objects: HashMap<ResKey, BTreeMap<(String, String), Value>>,
    history: VecDeque<Arc<StoredEvent>>,
    history_limit: usize,
    /// Events with a resourceVersion at or below this are no longer in the history.
    compacted: u64,
    tx: broadcast::Sender<Arc<StoredEvent>>,
    /// Warnings of the current request (unknown fields dropped), for its response headers.
    warnings: Vec<String>,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(history_limit.max(1024));
        let mut s = Store {
            rv: 0,
            registry: Registry::default(),
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit,
            compacted: 0,
            tx,
            warnings: Vec::new(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let def = s
                .registry
                .find("", "namespaces")
                .cloned()
                .expect("namespaces is built in");
            let t = Target {
                def,
                version: "v1".into(),
                namespace: None,
                name: None,
                subresource: None,
            };
            // The built-in namespaces cannot fail validation.
            let _ = s.create(&t, json!({"metadata": {"name": ns}}), &WriteOpts::default());
        }
        s
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Forgets the event history (as etcd compaction does): watches from older versions get 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Field selectors the resource supports.
    pub fn selectable_fields(t: &Target) -> Vec<String> {
        let mut f = vec![
            "metadata.name".to_string(),
            "metadata.namespace".to_string(),
        ];
        f.extend(
            extra_fields(&t.def.group, &t.def.plural)
                .iter()
                .map(|s| s.to_string()),
        );
        if let Some(v) = t.def.version(&t.version) {
            f.extend(v.selectable_fields.iter().cloned());
        }
        f
    }

    /// The object as served at the requested version (apiVersion/kind set, defaults applied).
    pub fn render(t: &Target, obj: &Value) -> Value {
        let mut o = obj.clone();
        if let Some(m) = o.as_object_mut() {
            m.insert("apiVersion".into(), json!(t.def.api_version(&t.version)));
            m.insert("kind".into(), json!(t.def.kind));
        }
        if let Some(s) = t.def.version(&t.version).and_then(|v| v.schema.as_ref()) {
            schema::apply_defaults(&mut o, s);
        }
        if t.def.is_events_v1() {
            events::to_events_v1(o)
        } else {
            o
        }
    }

    fn bucket(&self, key: &ResKey) -> Option<&BTreeMap<(String, String), Value>> {
        self.objects.get(key)
    }

    fn lookup(&self, t: &Target, name: &str) -> ApiResult<&Value> {
        self.bucket(&t.def.key())
            .and_then(|b| b.get(&t.obj_key(name)))
            .ok_or_else(|| ApiError::not_found(t.subject(name)))
    }

    /// Stores `obj` with a fresh resourceVersion and broadcasts the change.
    fn write(
        &mut self,
        res: &ResKey,
        kind: EventType,
        mut obj: Value,
        old: Option<Value>,
    ) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let key = (
            meta_str(&obj, "namespace").to_string(),
            meta_str(&obj, "name").to_string(),
        );
        let bucket = self.objects.entry(res.clone()).or_default();
        if kind == EventType::Deleted {
            bucket.remove(&key);
        } else {
            bucket.insert(key, obj.clone());
        }
        let ev = Arc::new(StoredEvent {
            rv: self.rv,
            res: res.clone(),
            kind,
            object: obj.clone(),
            old,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(ev);
        if res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions" {
            self.sync_crd(&obj, kind == EventType::Deleted);
        }
        obj
    }

    fn sync_crd(&mut self, crd: &Value, deleted: bool) {
        let name = meta_str(crd, "name").to_string();
        if deleted {
            if let Some(def) = self.registry.crds_def(&name) {
                let key = def.key();
                let gone: Vec<Value> = self
                    .objects
                    .get(&key)
                    .map(|b| b.values().cloned().collect())
                    .unwrap_or_default();
                for o in gone {
                    self.write(&key, EventType::Deleted, o, None);
                }
            }
            self.registry.set_crd(&name, None);
        } else {
            self.registry.set_crd(&name, from_crd(crd));
        }
    }

    pub fn get(&self, t: &Target) -> ApiResult<Value> {
        let obj = self.lookup(t, t.name())?;
        match t.subresource.as_deref() {
            None | Some("status") => Ok(Self::render(t, obj)),
            Some("scale") => scale_view(t, &Self::render(t, obj)),
            Some(other) => Err(ApiError::path_not_found(other)),
        }
    }

    pub fn filter(&self, t: &Target, opts: &ListOpts) -> ApiResult<WatchFilter> {
        let labels = LabelSelector::parse(opts.labels.as_deref().unwrap_or_default())?;
        let mut fields = FieldSelector::parse(
            opts.fields.as_deref().unwrap_or_default(),
            &Self::selectable_fields(t),
        )?;
        if t.def.is_events_v1() {
            fields = fields.map_fields(events::core_field);
        }
        Ok(WatchFilter {
            res: t.def.key(),
            namespace: t.namespace.clone().filter(|_| t.def.namespaced),
            labels,
            fields,
        })
    }

    pub fn list(&self, t: &Target, opts: &ListOpts) -> ApiResult<Value> {
        let filter = self.filter(t, opts)?;
        if opts.resource_version_match.as_deref() == Some("Exact") {
            let want = opts.resource_version.as_deref().unwrap_or_default();
            if want != self.rv.to_string() {
                return Err(ApiError::gone(format!(
                    "too old resource version: {want} ({})",
                    self.rv
                )));
            }
        }
        let (list_rv, start_after) = match opts.continue_token.as_deref().filter(|c| !c.is_empty())
        {
            Some(c) => decode_continue(c)?,
            None => (self.rv, None),
        };
        let mut items: Vec<(&(String, String), &Value)> = self
            .bucket(&t.def.key())
            .into_iter()
            .flatten()
            .filter(|(k, _)| start_after.as_ref().is_none_or(|s| *k > s))
            .filter(|(_, o)| filter.matches(o))
            .collect();
        let mut meta = json!({"resourceVersion": list_rv.to_string()});
        if let Some(limit) = opts.limit.filter(|l| *l > 0 && items.len() > *l) {
            let remaining = items.len() - limit;
            items.truncate(limit);
            if let Some((last, _)) = items.last() {
                meta["continue"] = json!(encode_continue(list_rv, last));
                meta["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(json!({
            "kind": format!("{}List", t.def.kind),
            "apiVersion": t.def.api_version(&t.version),
            "metadata": meta,
            "items": items.into_iter().map(|(_, o)| Self::render(t, o)).collect::<Vec<_>>(),
        }))
    }

    /// Objects a list/watch with these options currently sees (for tables and initial events).
    pub fn current(&self, t: &Target, filter: &WatchFilter) -> Vec<Value> {
        self.bucket(&t.def.key())
            .into_iter()
            .flatten()
            .map(|(_, o)| o)
            .filter(|o| filter.matches(o))
            .map(|o| Self::render(t, o))
            .collect()
    }

    /// Starts a watch: `rv` None or "0" sends the current state as ADDED first; a later
    /// version replays the history after it, or fails with 410 Gone if that was compacted.
    pub fn watch(
        &self,
        t: &Target,
        filter: &WatchFilter,
        rv: Option<&str>,
        send_initial: bool,
    ) -> ApiResult<WatchStart> {
        let rx = self.tx.subscribe();
        let from = match rv.filter(|r| !r.is_empty() && *r != "0") {
            Some(r) => Some(
                r.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resource version: {r}")))?,
            ),
            None => None,
        };
        let mut initial = Vec::new();
        match from {
            Some(from) if !send_initial => {
                if from < self.compacted {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {from} ({})",
                        self.compacted + 1
                    )));
                }
                for ev in self.history.iter().filter(|e| e.rv > from) {
                    if let Some(ty) = filter.translate(ev) {
                        initial.push((ty, Self::render(t, &ev.object)));
                    }
                }
            }
            _ => initial.extend(self.current(t, filter).into_iter().map(|o| ("ADDED", o))),
        }
        Ok(WatchStart {
            initial,
            rv: self.rv,
            rx,
        })
    }

    pub fn create(&mut self, t: &Target, body: Value, w: &WriteOpts) -> ApiResult<Value> {
        self.create_as(t, body, w, Op::Update(w.manager()))
    }

    fn create_as(
        &mut self,
        t: &Target,
        mut body: Value,
        w: &WriteOpts,
        op: Op,
    ) -> ApiResult<Value> {
        let dry_run = w.dry_run;
        if t.subresource.is_some() {
            return Err(ApiError::method_not_allowed(
                "create is not supported on subresources",
            ));
        }
        check_type(t, &body)?;
        if !t.def.custom {
            let unknown = typed::prune_unknown(&t.def.group, &t.def.kind, &mut body);
            self.unknown_fields(t, &unknown, w)?;
        }
        if t.def.is_events_v1() {
            body = events::to_core(body);
        }
        let ver = t.ver()?.clone();
        let meta = meta_mut(&mut body);
        if t.def.namespaced {
            let ns = t.namespace.clone().unwrap_or_default();
            match meta.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        let name = match meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_string(),
            None => match meta
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                Some(g) => format!("{g}{}", random_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        t.subject(""),
                        vec![Cause::new(
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value: name or generateName is required",
                        )],
                    ));
                }
            },
        };
        meta.insert("name".into(), json!(name));
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        if has_generation(&t.def, &t.version) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        let mut causes: Vec<Cause> = schema::validate_name(&name, t.def.plural == "namespaces")
            .into_iter()
            .collect();
        causes.extend(schema::validate_labels(&body));
        if let Some(m) = body
            .as_object_mut()
            .filter(|_| t.def.custom && ver.status_subresource)
        {
            m.remove("status");
        }
        self.prepare_builtin(t, &mut body, &mut causes);
        if t.def.is_crd() {
            self.warnings.extend(formats::warnings(&body, None));
        }
        if let Some(s) = &ver.schema {
            let mut unknown = Vec::new();
            causes.extend(schema::process(&mut body, s, &mut unknown));
            self.unknown_fields(t, &unknown, w)?;
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(t.subject(&name), causes));
        }
        if t.def.namespaced {
            let ns = t.namespace.clone().unwrap_or_default();
            let ns_obj = self
                .objects
                .get(&ResKey {
                    group: String::new(),
                    plural: "namespaces".into(),
                })
                .and_then(|b| b.get(&(String::new(), ns.clone())));
            match ns_obj {
                None => {
                    return Err(ApiError::not_found(Subject {
                        group: "",
                        plural: "namespaces",
                        kind: "Namespace",
                        name: &ns,
                    }));
                }
                Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        t.subject(&name).qualified_resource()
                    )));
                }
                Some(_) => {}
            }
        }
        if self.lookup(t, &name).is_ok() {
            return Err(ApiError::already_exists(t.subject(&name)));
        }
        if let Some(m) = body.as_object_mut() {
            m.insert(
                "apiVersion".into(),
                json!(t.def.api_version(t.def.preferred_version())),
            );
            m.insert("kind".into(), json!(t.def.kind));
        }
        let mut entries = Vec::new();
        let fields = managed::leaves(&body, false, ver.status_subresource);
        let av = t.def.api_version(&t.version);
        managed::record(&mut entries, &op, "", fields, &av, &now());
        managed::store(&mut body, entries);
        self.admit(
            w.user.as_ref(),
            Operation::Create,
            t,
            &name,
            Some(&body),
            None,
        )?;
        if dry_run {
            return Ok(Self::render(t, &body));
        }
        let stored = self.write(&t.def.key(), EventType::Added, body, None);
        Ok(Self::render(t, &stored))
    }

    /// Kind-specific defaults and checks of built-in objects.
    fn prepare_builtin(&self, t: &Target, body: &mut Value, causes: &mut Vec<Cause>) {
        match (t.def.group.as_str(), t.def.plural.as_str()) {
            ("", "namespaces") => {
                // The real server labels every namespace with its own name.
                let name = json!(meta_str(body, "name"));
                let labels = meta_mut(body).entry("labels").or_insert_with(|| json!({}));
                if let Some(l) = labels.as_object_mut() {
                    l.insert("kubernetes.io/metadata.name".into(), name);
                }
                body["spec"] = json!({"finalizers": ["kubernetes"]});
                body["status"] = json!({"phase": "Active"});
            }
            ("", "pods") if body.pointer("/status/phase").is_none() => {
                // A new pod is Pending until a kubelet says otherwise.
                if !body.get("status").is_some_and(Value::is_object) {
                    body["status"] = json!({});
                }
                body["status"]["phase"] = json!("Pending");
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let name = meta_str(body, "name").to_string();
                match from_crd(body) {
                    None => causes.push(Cause::new("FieldValueRequired", "spec", "Required value: group, names.plural, names.kind and versions are required")),
                    Some(d) if name != format!("{}.{}", d.plural, d.group) => causes.push(Cause::new(
                        "FieldValueInvalid",
                        "metadata.name",
                        format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
                    )),
                    Some(d) => {
                        let names = body.pointer("/spec/names").cloned().unwrap_or_default();
                        let stored: Vec<&str> = d.versions.iter().filter(|v| v.storage).map(|v| v.name.as_str()).collect();
                        let ts = now();
                        body["status"] = json!({
                            "acceptedNames": names,
                            "storedVersions": stored,
                            "conditions": [
                                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": ts},
                                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": ts},
                            ],
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// Applies `fieldValidation` to the fields pruning dropped.
    fn unknown_fields(&mut self, t: &Target, unknown: &[String], w: &WriteOpts) -> ApiResult<()> {
        let msgs = unknown.iter().map(|f| format!("unknown field \"{f}\""));
        match w.field_validation {
            FieldValidation::Ignore => Ok(()),
            FieldValidation::Warn => {
                self.warnings.extend(msgs);
                Ok(())
            }
            FieldValidation::Strict if unknown.is_empty() => Ok(()),
            FieldValidation::Strict => {
                let kind = &t.def.kind;
                Err(ApiError::bad_request(format!(
                    "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
                    t.version,
                    msgs.collect::<Vec<_>>().join(", ")
                )))
            }
        }
    }

    /// Warnings of the writes since the last call (`Warning` headers of the response).
    /// Admission of a user's write: the stored ValidatingAdmissionPolicies decide.
    fn admit(
        &mut self,
        user: Option<&Identity>,
        operation: Operation,
        target: &Target,
        name: &str,
        object: Option<&Value>,
        old_object: Option<&Value>,
    ) -> ApiResult<()> {
        let Some(user) = user else {
            return Ok(());
        };
        let req = admission::Request {
            operation,
            user,
            target,
            name,
            object,
            old_object,
        };
        let warnings = admission::admit(self, &req)?;
        self.warnings.extend(warnings);
        Ok(())
    }

    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// PUT: replaces the object (or its status, or its scale).
    pub fn update(&mut self, t: &Target, body: Value, w: &WriteOpts) -> ApiResult<Value> {
        let name = t.name().to_string();
        let old = match self.lookup(t, &name) {
            Ok(o) => o.clone(),
            Err(_) if t.subresource.is_none() && allows_create_on_update(&t.def) => {
                let mut body = body;
                meta_mut(&mut body).insert("name".into(), json!(name));
                return self.create(t, body, w);
            }
            Err(e) => return Err(e),
        };
        match t.subresource.as_deref() {
            Some("scale") => return self.write_scale(t, old, body, w),
            Some("status") | None => {}
            Some(other) => return Err(ApiError::path_not_found(other)),
        }
        check_type(t, &body)?;
        let body_name = meta_str(&body, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_rv = meta_str(&body, "resourceVersion").to_string();
        if body_rv.is_empty() && t.def.custom {
            return Err(ApiError::invalid(
                t.subject(&name),
                vec![Cause::new(
                    "FieldValueInvalid",
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                )],
            ));
        }
        if !body_rv.is_empty() && body_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(t.subject(&name)));
        }
        let part = if t.subresource.is_some() {
            Part::Status
        } else {
            Part::Main
        };
        self.commit(t, old, body, part, w, Op::Update(w.manager()))
    }

    pub fn patch(
        &mut self,
        t: &Target,
        kind: PatchType,
        patch: Value,
        w: &WriteOpts,
    ) -> ApiResult<(Value, bool)> {
        let name = t.name().to_string();
        if kind == PatchType::Apply && w.field_manager.as_deref().unwrap_or_default().is_empty() {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requires a non-empty fieldManager parameter",
            ));
        }
        if kind == PatchType::Strategic && t.def.custom {
            return Err(ApiError::unsupported_media_type(
                "application/strategic-merge-patch+json",
            ));
        }
        let old = match self.lookup(t, &name) {
            Ok(o) => o.clone(),
            Err(e) if kind == PatchType::Apply && t.subresource.is_none() => {
                let body = patch;
                if meta_str(&body, "name") != name {
                    return Err(e);
                }
                let status_sub = t.def.has_status(&t.version);
                let fields = managed::leaves(&body, false, status_sub);
                let op = Op::Apply {
                    manager: w.manager(),
                    fields,
                    force: w.force,
                };
                return Ok((self.create_as(t, body, w, op)?, true));
            }
            Err(e) => return Err(e),
        };
        let old_rv = meta_str(&old, "resourceVersion").to_string();
        let part = match t.subresource.as_deref() {
            None => Part::Main,
            Some("status") => Part::Status,
            Some("scale") => {
                let view = scale_view(t, &Self::render(t, &old))?;
                let patched = apply_patch(kind, &view, &patch)?;
                return Ok((self.write_scale(t, old, patched, w)?, false));
            }
            Some(other) => return Err(ApiError::path_not_found(other)),
        };
        let mut patched = apply_patch(kind, &Self::render(t, &old), &patch)?;
        let new_rv = meta_str(&patched, "resourceVersion");
        if !new_rv.is_empty() && new_rv != old_rv {
            return Err(ApiError::conflict(t.subject(&name)));
        }
        let op = if kind == PatchType::Apply {
            let status_part = part == Part::Status;
            let sub = if status_part { "status" } else { "" };
            let applied = managed::leaves(&patch, status_part, t.def.has_status(&t.version));
            let entries = managed::entries(&old);
            let manager = w.manager();
            if !w.force {
                let live = Self::render(t, &old);
                let conflicts = managed::conflicts(&entries, &manager, &applied, &live, &patch);
                if !conflicts.is_empty() {
                    return Err(ApiError::apply_conflicts(&conflicts));
                }
            }
            for path in managed::dropped(&entries, &manager, sub, &applied) {
                managed::remove_at(&mut patched, &path);
            }
            Op::Apply {
                manager,
                fields: applied,
                force: w.force,
            }
        } else {
            Op::Update(w.manager())
        };
        Ok((self.commit(t, old, patched, part, w, op)?, false))
    }

    fn write_scale(
        &mut self,
        t: &Target,
        old: Value,
        scale: Value,
        w: &WriteOpts,
    ) -> ApiResult<Value> {
        let sd = t
            .ver()?
            .scale
            .clone()
            .ok_or_else(|| ApiError::path_not_found("scale"))?;
        let name = t.name().to_string();
        let rv = meta_str(&scale, "resourceVersion");
        if !rv.is_empty() && rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(t.subject(&name)));
        }
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                ApiError::invalid(
                    Subject {
                        group: "autoscaling",
                        plural: "scales",
                        kind: "Scale",
                        name: &name,
                    },
                    vec![Cause::new(
                        "FieldValueRequired",
                        "spec.replicas",
                        "Required value",
                    )],
                )
            })?;
        let mut new = old.clone();
        let path = JsonPath::parse(&sd.spec_replicas_path).and_then(|p| {
            p.plain_fields()
                .map(|f| f.into_iter().map(String::from).collect::<Vec<_>>())
        });
        let fields = path.ok_or_else(|| ApiError::internal("unsupported specReplicasPath"))?;
        set_path(
            &mut new,
            &fields.iter().map(String::as_str).collect::<Vec<_>>(),
            json!(replicas),
        );
        let obj = self.commit(t, old, new, Part::Main, w, Op::Update(w.manager()))?;
        scale_view(t, &obj)
    }

    /// Finishes a write: keeps system metadata, applies the subresource split, validates,
    /// bumps generation on spec changes, skips no-ops, and completes pending deletions.
    fn commit(
        &mut self,
        t: &Target,
        old: Value,
        mut new: Value,
        part: Part,
        w: &WriteOpts,
        op: Op,
    ) -> ApiResult<Value> {
        let dry_run = w.dry_run;
        let name = t.name().to_string();
        let ver = t.ver()?.clone();
        if !t.def.custom {
            let unknown = typed::prune_unknown(&t.def.group, &t.def.kind, &mut new);
            self.unknown_fields(t, &unknown, w)?;
        }
        if t.def.is_events_v1() {
            new = events::to_core(new);
        }
        let old_meta = old.get("metadata").cloned().unwrap_or_default();
        if part == Part::Status {
            let status = new.get("status").cloned();
            new = old.clone();
            match status {
                Some(s) if !s.is_null() => new["status"] = s,
                _ => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        } else if let Some(m) = new.as_object_mut().filter(|_| ver.status_subresource) {
            match old.get("status") {
                Some(s) => m.insert("status".into(), s.clone()),
                None => m.remove("status"),
            };
        }
        let meta = meta_mut(&mut new);
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old_meta.get(k) {
                Some(v) => meta.insert(k.into(), v.clone()),
                None => meta.remove(k),
            };
        }
        meta.remove("resourceVersion");
        if let Some(m) = new.as_object_mut() {
            m.insert(
                "apiVersion".into(),
                json!(t.def.api_version(t.def.preferred_version())),
            );
            m.insert("kind".into(), json!(t.def.kind));
        }
        let mut causes = schema::validate_labels(&new);
        if t.def.is_crd() && part == Part::Main {
            self.prepare_builtin(t, &mut new, &mut causes);
            self.warnings.extend(formats::warnings(&new, Some(&old)));
        }
        if let Some(s) = &ver.schema {
            let mut unknown = Vec::new();
            causes.extend(schema::process(&mut new, s, &mut unknown));
            self.unknown_fields(t, &unknown, w)?;
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(t.subject(&name), causes));
        }
        self.admit(
            w.user.as_ref(),
            Operation::Update,
            t,
            &name,
            Some(&new),
            Some(&old),
        )?;
        if has_generation(&t.def, &t.version)
            && spec_part(&old, ver.status_subresource) != spec_part(&new, ver.status_subresource)
        {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        let status_part = part == Part::Status;
        let mut entries = managed::entries(&old);
        let changed = managed::leaves(&new, status_part, ver.status_subresource)
            .into_iter()
            .filter(|p| managed::value_at(&old, p) != managed::value_at(&new, p))
            .collect();
        let sub = if status_part { "status" } else { "" };
        let av = t.def.api_version(&t.version);
        managed::record(&mut entries, &op, sub, changed, &av, &now());
        managed::store(&mut new, entries);
        if without_rv(&new) == without_rv(&old) {
            return Ok(Self::render(t, &old));
        }
        if dry_run {
            return Ok(Self::render(t, &new));
        }
        let key = t.def.key();
        if old.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&new).is_empty() {
            let gone = self.write(&key, EventType::Deleted, new, Some(old));
            self.after_removal(&gone);
            return Ok(Self::render(t, &gone));
        }
        let stored = self.write(&key, EventType::Modified, new, Some(old));
        Ok(Self::render(t, &stored))
    }

    pub fn delete(&mut self, t: &Target, opts: &DeleteOpts) -> ApiResult<Value> {
        let name = t.name().to_string();
        let obj = self.lookup(t, &name)?.clone();
        if opts
            .uid
            .as_deref()
            .is_some_and(|u| u != meta_str(&obj, "uid"))
        {
            return Err(ApiError::precondition(
                t.subject(&name),
                "the UID in the precondition does not match the UID in record",
            ));
        }
        if opts
            .resource_version
            .as_deref()
            .is_some_and(|r| r != meta_str(&obj, "resourceVersion"))
        {
            return Err(ApiError::precondition(
                t.subject(&name),
                "the ResourceVersion in the precondition does not match the ResourceVersion in record",
            ));
        }
        self.admit(
            opts.user.as_ref(),
            Operation::Delete,
            t,
            &name,
            None,
            Some(&obj),
        )?;
        if opts.dry_run {
            return Ok(Self::render(t, &obj));
        }
        let uid = meta_str(&obj, "uid").to_string();
        match opts.propagation.as_deref() {
            Some("Orphan") => self.orphan_dependents(&uid),
            Some("Foreground") => self.delete_dependents(&uid),
            _ => {}
        }
        let key = t.def.key();
        if t.def.group.is_empty() && t.def.plural == "namespaces" {
            return Ok(Self::render(t, &self.delete_namespace(obj)));
        }
        if !finalizers(&obj).is_empty() {
            if obj.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(Self::render(t, &obj));
            }
            let mut new = obj.clone();
            let meta = meta_mut(&mut new);
            meta.insert("deletionTimestamp".into(), json!(now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if has_generation(&t.def, &t.version) {
                let g = obj
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                meta.insert("generation".into(), json!(g + 1));
            }
            let stored = self.write(&key, EventType::Modified, new, Some(obj));
            return Ok(Self::render(t, &stored));
        }
        let gone = self.write(&key, EventType::Deleted, obj, None);
        self.after_removal(&gone);
        Ok(Self::render(t, &gone))
    }

    pub fn delete_collection(
        &mut self,
        t: &Target,
        list: &ListOpts,
        opts: &DeleteOpts,
    ) -> ApiResult<Value> {
        let filter = self.filter(t, list)?;
        let names: Vec<String> = self
            .current(t, &filter)
            .iter()
            .map(|o| meta_str(o, "name").to_string())
            .collect();
        let mut items = Vec::new();
        for n in names {
            let mut one = t.clone();
            one.name = Some(n);
            items.push(self.delete(&one, opts)?);
        }
        Ok(
            json!({"kind": format!("{}List", t.def.kind), "apiVersion": t.def.api_version(&t.version), "metadata": {"resourceVersion": self.rv.to_string()}, "items": items}),
        )
    }

    /// Namespace deletion: mark Terminating, delete its content, remove it once empty.
    fn delete_namespace(&mut self, ns_obj: Value) -> Value {
        let ns = meta_str(&ns_obj, "name").to_string();
        let key = ResKey {
            group: String::new(),
            plural: "namespaces".into(),
        };
        let mut marked = ns_obj.clone();
        if marked.pointer("/metadata/deletionTimestamp").is_none() {
            meta_mut(&mut marked).insert("deletionTimestamp".into(), json!(now()));
            marked["status"] = json!({"phase": "Terminating"});
            marked = self.write(&key, EventType::Modified, marked, Some(ns_obj));
        }
        let content: Vec<(Arc<ResourceDef>, String)> = self
            .registry
            .all()
            .filter(|d| d.namespaced)
            .flat_map(|d| {
                self.objects
                    .get(&d.key())
                    .into_iter()
                    .flat_map(|b| b.keys())
                    .filter(|(n, _)| *n == ns)
                    .map(|(_, name)| (d.clone(), name.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (def, name) in content {
            let version = def.preferred_version().to_string();
            let t = Target {
                def,
                version,
                namespace: Some(ns.clone()),
                name: Some(name),
                subresource: None,
            };
            // Already-deleted dependents (cascades) are fine to miss.
            let _ = self.delete(&t, &DeleteOpts::default());
        }
        self.finish_namespace(&ns).unwrap_or(marked)
    }

    /// Removes a terminating namespace once nothing is left in it.
    fn finish_namespace(&mut self, ns: &str) -> Option<Value> {
        let key = ResKey {
            group: String::new(),
            plural: "namespaces".into(),
        };
        let obj = self
            .objects
            .get(&key)?
            .get(&(String::new(), ns.to_string()))?
            .clone();
        obj.pointer("/metadata/deletionTimestamp")?;
        let empty = self
            .objects
            .iter()
            .all(|(_, b)| b.keys().all(|(n, _)| n != ns));
        empty.then(|| self.write(&key, EventType::Deleted, obj, None))
    }

    /// After an object is really gone: cascade to dependents and finish its namespace.
    fn after_removal(&mut self, gone: &Value) {
        let uid = meta_str(gone, "uid").to_string();
        self.delete_dependents(&uid);
        let ns = meta_str(gone, "namespace").to_string();
        if !ns.is_empty() {
            self.finish_namespace(&ns);
        }
    }

    fn all_uids(&self) -> std::collections::HashSet<String> {
        self.objects
            .values()
            .flat_map(|b| b.values())
            .map(|o| meta_str(o, "uid").to_string())
            .collect()
    }

    /// Objects owned by `uid`, as (resource, namespace, name).
    fn dependents(&self, uid: &str) -> Vec<(ResKey, String, String)> {
        let mut out = Vec::new();
        for (res, b) in &self.objects {
            for ((ns, name), o) in b {
                let owned = o
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                    });
                if owned {
                    out.push((res.clone(), ns.clone(), name.clone()));
                }
            }
        }
        out
    }

    /// Background garbage collection: dependents whose owners are all gone are deleted.
    fn delete_dependents(&mut self, uid: &str) {
        for (res, ns, name) in self.dependents(uid) {
            let live = self.all_uids();
            let Some(obj) = self
                .objects
                .get(&res)
                .and_then(|b| b.get(&(ns.clone(), name.clone())))
            else {
                continue;
            };
            let owners_left = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter().any(|r| {
                        r.get("uid")
                            .and_then(Value::as_str)
                            .is_some_and(|u| u != uid && live.contains(u))
                    })
                });
            if owners_left {
                continue;
            }
            let Some(def) = self.registry.find(&res.group, &res.plural).cloned() else {
                continue;
            };
            let version = def.preferred_version().to_string();
            let t = Target {
                def,
                version,
                namespace: Some(ns),
                name: Some(name),
                subresource: None,
            };
            // A dependent may already be gone through another owner's cascade.
            let _ = self.delete(&t, &DeleteOpts::default());
        }
    }

    /// Orphan propagation: dependents lose their owner reference instead of being deleted.
    fn orphan_dependents(&mut self, uid: &str) {
        for (res, ns, name) in self.dependents(uid) {
            let Some(old) = self
                .objects
                .get(&res)
                .and_then(|b| b.get(&(ns.clone(), name.clone())))
                .cloned()
            else {
                continue;
            };
            let mut new = old.clone();
            if let Some(refs) = new
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
            }
            self.write(&res, EventType::Modified, new, Some(old));
        }
    }

    /// Every stored object of a resource (any namespace), for RBAC evaluation.
    pub fn objects_of(&self, group: &str, plural: &str) -> Vec<&Value> {
        self.objects
            .get(&ResKey {
                group: group.into(),
                plural: plural.into(),
            })
            .into_iter()
            .flat_map(|b| b.values())
            .collect()
    }
}

impl Registry {
    fn crds_def(&self, crd_name: &str) -> Option<Arc<ResourceDef>> {
        self.all()
            .find(|d| d.custom && format!("{}.{}", d.plural, d.group) == crd_name)
            .cloned()
    }
}

/// Kinds whose PUT creates a missing object, as their real registry strategies allow.
fn allows_create_on_update(def: &ResourceDef) -> bool {
    matches!(
        (def.group.as_str(), def.plural.as_str()),
        ("coordination.k8s.io", "leases")
            | ("", "events")
            | ("events.k8s.io", "events")
            | ("", "services")
            | ("rbac.authorization.k8s.io", _)
    )
}

fn check_type(t: &Target, body: &Value) -> ApiResult<()> {
    let want = t.def.api_version(&t.version);
    let main = t.subresource.is_none();
    if let Some(av) = body
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|a| main && !a.is_empty() && *a != want)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want})"
        )));
    }
    if let Some(k) = body
        .get("kind")
        .and_then(Value::as_str)
        .filter(|k| main && !k.is_empty() && *k != t.def.kind)
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            t.def.kind
        )));
    }
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be an object",
        ));
    }
    Ok(())
}

/// The autoscaling/v1 `Scale` view of an object with a scale subresource.
fn scale_view(t: &Target, obj: &Value) -> ApiResult<Value> {
    let sd = t
        .ver()?
        .scale
        .clone()
        .ok_or_else(|| ApiError::path_not_found("scale"))?;
    let int_at = |p: &str| {
        JsonPath::parse(p)
            .and_then(|p| p.find(obj).first().and_then(|v| v.as_i64()))
            .unwrap_or(0)
    };
    let mut meta = json!({
        "name": meta_str(obj, "name"),
        "uid": meta_str(obj, "uid"),
        "resourceVersion": meta_str(obj, "resourceVersion"),
        "creationTimestamp": meta_str(obj, "creationTimestamp"),
    });
    if t.def.namespaced {
        meta["namespace"] = json!(meta_str(obj, "namespace"));
    }
    let mut status = json!({"replicas": int_at(&sd.status_replicas_path)});
    if let Some(sel) = sd
        .label_selector_path
        .as_deref()
        .and_then(JsonPath::parse)
        .and_then(|p| {
            p.find(obj)
                .first()
                .and_then(|v| v.as_str().map(String::from))
        })
    {
        status["selector"] = json!(sel);
    }
    Ok(
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta, "spec": {"replicas": int_at(&sd.spec_replicas_path)}, "status": status}),
    )
}

fn encode_continue(rv: u64, last: &(String, String)) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": rv, "ns": last.0, "name": last.1}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(u64, Option<(String, String)>)> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let ns = v
        .get("ns")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .to_string();
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .to_string();
    Ok((rv, Some((ns, name))))
}
