//! API-convention conformance: the same tests run against kube-mem or, with
//! `HOSTNIC_TEST_KUBECONFIG` set, against a real cluster.

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::ApiResource;
use kube::{Resource, ResourceExt};
use serde_json::json;

async fn next_event<K>(
    s: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> WatchEvent<K> {
    tokio::time::timeout(Duration::from_secs(20), s.next())
        .await
        .expect("watch event in time")
        .expect("stream open")
        .expect("event ok")
}

/// The next non-bookmark event.
async fn next_change<K>(
    s: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> WatchEvent<K> {
    loop {
        match next_event(s).await {
            WatchEvent::Bookmark(_) => continue,
            e => return e,
        }
    }
}

#[tokio::test]
async fn create_get_update_conflicts_and_not_found() {
    let env = Env::start().await;
    let api = env.widgets();
    let created = api
        .create(&PostParams::default(), &widget("w1", "red"))
        .await
        .unwrap();
    assert!(
        created.uid().is_some()
            && created.resource_version().is_some()
            && created.meta().creation_timestamp.is_some()
    );
    assert_eq!(created.meta().generation, Some(1));

    let dup = api_err(
        api.create(&PostParams::default(), &widget("w1", "red"))
            .await,
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));

    let mut a = created.clone();
    a.spec.color = "green".into();
    let updated = api.replace("w1", &PostParams::default(), &a).await.unwrap();
    assert_ne!(updated.resource_version(), created.resource_version());
    assert_eq!(updated.meta().generation, Some(2));

    let mut stale = created.clone();
    stale.spec.color = "blue".into();
    let conflict = api_err(api.replace("w1", &PostParams::default(), &stale).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains("the object has been modified"),
        "{}",
        conflict.message
    );

    let mut no_rv = updated.clone();
    no_rv.metadata.resource_version = None;
    let e = api_err(api.replace("w1", &PostParams::default(), &no_rv).await);
    assert_eq!(
        e.code, 422,
        "custom resources need a resourceVersion on update: {e:?}"
    );

    // A merge patch carrying a stale resourceVersion is a precondition too.
    let e = api_err(
        api.patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": created.resource_version()}})),
        )
        .await,
    );
    assert_eq!(e.code, 409);

    let missing = api_err(api.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        missing.details.as_ref().map(|d| d.name.as_str()),
        Some("nope")
    );

    let mut g = widget("", "red");
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let generated = api.create(&PostParams::default(), &g).await.unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() > 4);
    env.cleanup().await;
}

#[tokio::test]
async fn validation_names_the_field() {
    let env = Env::start().await;
    let api = env.widgets();
    let mut w = widget("big", "red");
    w.spec.replicas = Some(70);
    let e = api_err(api.create(&PostParams::default(), &w).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(e.message.contains("spec.replicas: Invalid value: 70: spec.replicas in body should be less than or equal to 63"), "{}", e.message);
    let causes = e
        .details
        .as_ref()
        .map(|d| d.causes.clone())
        .unwrap_or_default();
    assert!(
        causes.iter().any(|c| c.field == "spec.replicas"),
        "{causes:?}"
    );

    let e = api_err(
        api.create(&PostParams::default(), &widget("pink", "pink"))
            .await,
    );
    assert!(
        e.message
            .contains("spec.color: Unsupported value: \"pink\""),
        "{}",
        e.message
    );

    let mut w = widget("pat", "red");
    w.spec.label = Some("ABC".into());
    w.spec.tags = Some(vec!["a".into(), "b".into(), "c".into(), "d".into()]);
    let e = api_err(api.create(&PostParams::default(), &w).await);
    assert!(
        e.message
            .contains("spec.label in body should match '^[a-z]+$'"),
        "{}",
        e.message
    );
    assert!(
        e.message
            .contains("spec.tags: Too many: 4: must have at most 3 items"),
        "{}",
        e.message
    );

    let raw: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &env.ns, &widget_resource());
    let nocolor: DynamicObject = serde_json::from_value(json!({"apiVersion": "conformance.kube-mem.hostnic.io/v1", "kind": "Widget", "metadata": {"name": "nocolor"}, "spec": {}})).unwrap();
    let e = api_err(raw.create(&PostParams::default(), &nocolor).await);
    assert!(
        e.message.contains("spec.color: Required value"),
        "{}",
        e.message
    );

    let mut labelled = widget("lab", "red");
    labelled.metadata.labels = Some([("k".to_string(), "bad value".to_string())].into());
    let e = api_err(api.create(&PostParams::default(), &labelled).await);
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("metadata.labels: Invalid value: \"bad value\""),
        "{}",
        e.message
    );

    let e = api_err(
        api.create(&PostParams::default(), &widget("Bad_Name", "red"))
            .await,
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("metadata.name: Invalid value: \"Bad_Name\""),
        "{}",
        e.message
    );
    env.cleanup().await;
}

fn widget_resource() -> ApiResource {
    ApiResource::erase::<Widget>(&())
}

#[tokio::test]
async fn defaults_and_pruning() {
    let env = Env::start().await;
    let raw: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &env.ns, &widget_resource());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "conformance.kube-mem.hostnic.io/v1", "kind": "Widget", "metadata": {"name": "d"},
        "spec": {"color": "red", "bogus": 1, "labels": {"a": "b"}, "extra": {"free": {"form": true}}},
        "topLevelJunk": "x",
    }))
    .unwrap();
    let created = raw.create(&PostParams::default(), &obj).await.unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec["replicas"], json!(1), "default applied: {spec}");
    assert!(spec.get("bogus").is_none(), "unknown field pruned: {spec}");
    assert!(created.data.get("topLevelJunk").is_none());
    assert_eq!(spec["labels"]["a"], "b");
    assert_eq!(
        spec["extra"]["free"]["form"],
        json!(true),
        "preserve-unknown-fields kept"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let env = Env::start().await;
    let api = env.widgets();
    let mut w = widget("s", "red");
    w.status = Some(WidgetStatus {
        observed: Some(9),
        ..Default::default()
    });
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(
        created.status.as_ref().and_then(|s| s.observed),
        None,
        "status is dropped on create"
    );

    let mut with_status = created.clone();
    with_status.status = Some(WidgetStatus {
        observed: Some(5),
        ..Default::default()
    });
    let replaced = api
        .replace("s", &PostParams::default(), &with_status)
        .await
        .unwrap();
    assert_eq!(
        replaced.status.as_ref().and_then(|s| s.observed),
        None,
        "main resource ignores status"
    );
    assert_eq!(replaced.meta().generation, Some(1));

    let patched = api
        .patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"color": "blue"}, "status": {"observed": 1, "replicas": 2}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.color, "red", "status writes ignore spec");
    assert_eq!(patched.status.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(
        patched.meta().generation,
        Some(1),
        "status changes do not bump generation"
    );

    let labelled = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.meta().generation,
        Some(1),
        "metadata changes do not bump generation"
    );
    let spec_changed = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": "green"}})),
        )
        .await
        .unwrap();
    assert_eq!(spec_changed.meta().generation, Some(2));

    // Server-side apply of status under a field manager, as kube-rs controllers do it.
    let applied = api
        .patch_status(
            "s",
            &PatchParams::apply("kube-mem-test").force(),
            &Patch::Apply(json!({"apiVersion": "conformance.kube-mem.hostnic.io/v1", "kind": "Widget", "status": {"observed": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.status.as_ref().and_then(|s| s.observed), Some(2));
    assert_eq!(
        applied.status.as_ref().and_then(|s| s.replicas),
        Some(2),
        "apply keeps fields it does not name"
    );

    // A no-op write does not change the resourceVersion.
    let again = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": "green"}})),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version(), applied.resource_version());
    env.cleanup().await;
}

#[tokio::test]
async fn scale_subresource() {
    let env = Env::start().await;
    let api = env.widgets();
    api.create(&PostParams::default(), &widget("sc", "red"))
        .await
        .unwrap();
    api.patch_status(
        "sc",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": 1}})),
    )
    .await
    .unwrap();
    let scale = api.get_scale("sc").await.unwrap();
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(1));
    assert_eq!(scale.status.as_ref().map(|s| s.replicas), Some(1));
    let scaled = api
        .patch_scale(
            "sc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.as_ref().and_then(|s| s.replicas), Some(5));
    let w = api.get("sc").await.unwrap();
    assert_eq!(w.spec.replicas, Some(5));
    assert_eq!(w.meta().generation, Some(2));
    let e = api_err(
        api.patch_scale(
            "sc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 70}})),
        )
        .await,
    );
    assert_eq!(e.code, 422);
    env.cleanup().await;
}

#[tokio::test]
async fn finalizers_and_deletion_timestamp() {
    let env = Env::start().await;
    let api = env.widgets();
    let mut w = widget("f", "red");
    w.metadata.finalizers = Some(vec!["conformance.kube-mem.hostnic.io/hold".into()]);
    api.create(&PostParams::default(), &w).await.unwrap();
    let deleted = api.delete("f", &DeleteParams::default()).await.unwrap();
    let pending = deleted
        .left()
        .expect("object still there while a finalizer holds it");
    assert!(pending.meta().deletion_timestamp.is_some());
    let still = api.get("f").await.unwrap();
    assert!(still.meta().deletion_timestamp.is_some());
    // kube's finalizer helper removes its finalizer with a JSON patch test+remove.
    let wrong = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "someone-else"}, {"op": "remove", "path": "/metadata/finalizers/0"}]);
    let e = api_err(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(wrong).unwrap()),
        )
        .await,
    );
    assert_eq!(e.code, 422);
    let right = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "conformance.kube-mem.hostnic.io/hold"}, {"op": "remove", "path": "/metadata/finalizers/0"}]);
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(right).unwrap()),
    )
    .await
    .unwrap();
    eventually("finalized object gone", || async {
        api.get_opt("f").await.unwrap().is_none()
    })
    .await;
    env.cleanup().await;
}

#[tokio::test]
async fn owner_references_cascade() {
    let env = Env::start().await;
    let api = env.widgets();
    let cms: Api<ConfigMap> = env.api();
    let mk_child = |name: &str, owner: &Widget| -> ConfigMap {
        let oref = owner.controller_owner_ref(&()).unwrap();
        serde_json::from_value(
            json!({"metadata": {"name": name, "ownerReferences": [oref]}, "data": {"k": "v"}}),
        )
        .unwrap()
    };
    let parent = api
        .create(&PostParams::default(), &widget("parent", "red"))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &mk_child("child", &parent))
        .await
        .unwrap();
    api.delete("parent", &DeleteParams::background())
        .await
        .unwrap();
    eventually("dependent deleted", || async {
        cms.get_opt("child").await.unwrap().is_none()
    })
    .await;

    let keeper = api
        .create(&PostParams::default(), &widget("keeper", "red"))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &mk_child("orphan", &keeper))
        .await
        .unwrap();
    api.delete("keeper", &DeleteParams::orphan()).await.unwrap();
    eventually("owner gone", || async {
        api.get_opt("keeper").await.unwrap().is_none()
    })
    .await;
    eventually("owner reference removed", || async {
        cms.get("orphan")
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    })
    .await;
    env.cleanup().await;
}

#[tokio::test]
async fn label_and_field_selectors_and_paging() {
    let env = Env::start().await;
    let api = env.widgets();
    for (name, color, tier) in [
        ("a", "red", Some("fe")),
        ("b", "green", Some("be")),
        ("c", "red", None),
    ] {
        let mut w = widget(name, color);
        if let Some(t) = tier {
            w.metadata.labels = Some([("tier".to_string(), t.to_string())].into());
        }
        api.create(&PostParams::default(), &w).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<Widget>| {
        l.items.iter().map(|w| w.name_any()).collect::<Vec<_>>()
    };
    for (sel, want) in [
        ("tier=fe", vec!["a"]),
        ("tier==be", vec!["b"]),
        ("tier!=fe", vec!["b", "c"]),
        ("tier in (fe,be)", vec!["a", "b"]),
        ("tier notin (fe)", vec!["b", "c"]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec!["c"]),
    ] {
        assert_eq!(
            names(api.list(&ListParams::default().labels(sel)).await.unwrap()),
            want,
            "{sel}"
        );
    }
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        vec!["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("spec.color=red"))
                .await
                .unwrap()
        ),
        vec!["a", "c"],
        "CRD selectableFields"
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("spec.color!=red"))
                .await
                .unwrap()
        ),
        vec!["b"]
    );
    let e = api_err(
        api.list(&ListParams::default().fields("spec.label=x"))
            .await,
    );
    assert_eq!(e.code, 400);

    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = api.list(&lp).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(names(page.clone()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    assert_eq!(seen, vec!["a", "b", "c"]);

    // deletecollection honours the selector.
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("tier"),
    )
    .await
    .unwrap();
    eventually("selected widgets deleted", || async {
        names(api.list(&ListParams::default()).await.unwrap()) == vec!["c"]
    })
    .await;
    env.cleanup().await;
}

#[tokio::test]
async fn watch_resume_selectors_and_gone() {
    let env = Env::start().await;
    let api = env.widgets();
    let created = api
        .create(&PostParams::default(), &widget("w", "red"))
        .await
        .unwrap();
    let rv0 = created.resource_version().unwrap();
    for color in ["green", "blue"] {
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": color}})),
        )
        .await
        .unwrap();
    }
    let mut s = api
        .watch(&WatchParams::default(), &rv0)
        .await
        .unwrap()
        .boxed();
    for want in ["green", "blue"] {
        match next_change(&mut s).await {
            WatchEvent::Modified(w) => assert_eq!(w.spec.color, want),
            other => panic!("expected MODIFIED, got {other:?}"),
        }
    }

    // A watch with a label selector sees an object leave and re-enter the selection.
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut sel = api
        .watch(&WatchParams::default().labels("app=x"), &rv)
        .await
        .unwrap()
        .boxed();
    let mut w = widget("sel", "red");
    w.metadata.labels = Some([("app".to_string(), "x".to_string())].into());
    api.create(&PostParams::default(), &w).await.unwrap();
    assert!(matches!(next_change(&mut sel).await, WatchEvent::Added(_)));
    api.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "y"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(
        next_change(&mut sel).await,
        WatchEvent::Deleted(_)
    ));
    api.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(next_change(&mut sel).await, WatchEvent::Added(_)));
    api.delete("sel", &DeleteParams::default()).await.unwrap();
    assert!(matches!(
        next_change(&mut sel).await,
        WatchEvent::Deleted(_)
    ));

    // Too old a version: an ERROR event with code 410 (kube-runtime's watcher then relists).
    env.compact();
    let old = if env.local() { rv0 } else { "1".to_string() };
    let mut gone = api
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut gone).await {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    // timeoutSeconds ends the stream.
    let mut short = api
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = short.next().await {
            ev.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "watch with timeoutSeconds=1 ended");
    env.cleanup().await;
}

#[tokio::test]
async fn watch_bookmarks_and_initial_events() {
    let env = Env::start().await;
    if !env.local() {
        // Bookmark cadence and WatchList are server tunables; checked on kube-mem only.
        println!("skipped: kube-mem specific cadence");
        return env.cleanup().await;
    }
    let api = env.widgets();
    api.create(&PostParams::default(), &widget("b", "red"))
        .await
        .unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut s = api
        .watch(
            &WatchParams {
                bookmarks: true,
                ..Default::default()
            },
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    match next_event(&mut s).await {
        WatchEvent::Bookmark(b) => assert!(
            b.metadata.resource_version.parse::<u64>().unwrap() >= rv.parse::<u64>().unwrap()
        ),
        other => panic!("expected BOOKMARK, got {other:?}"),
    }
    let wp = WatchParams {
        send_initial_events: true,
        bookmarks: true,
        ..Default::default()
    };
    let mut s = api.watch(&wp, "").await.unwrap().boxed();
    assert!(matches!(next_event(&mut s).await, WatchEvent::Added(w) if w.name_any() == "b"));
    match next_event(&mut s).await {
        WatchEvent::Bookmark(b) => assert_eq!(
            b.metadata
                .annotations
                .get("k8s.io/initial-events-end")
                .map(String::as_str),
            Some("true")
        ),
        other => panic!("expected the initial-events-end BOOKMARK, got {other:?}"),
    }
    // kube-runtime's watcher in streaming-list mode works too.
    let cfg = kube::runtime::watcher::Config::default().streaming_lists();
    let mut events = kube::runtime::watcher(api.clone(), cfg).boxed();
    let synced = tokio::time::timeout(Duration::from_secs(20), async {
        let mut applied = Vec::new();
        loop {
            match events
                .try_next()
                .await
                .unwrap()
                .expect("watcher stream open")
            {
                kube::runtime::watcher::Event::InitApply(w) => applied.push(w.name_any()),
                kube::runtime::watcher::Event::InitDone => return applied,
                _ => {}
            }
        }
    })
    .await
    .expect("streaming list finished");
    assert_eq!(synced, vec!["b"]);
    env.cleanup().await;
}

#[tokio::test]
async fn leases_and_events() {
    let env = Env::start().await;
    let leases: Api<Lease> = env.api();
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).unwrap();
    let l = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut mine = l.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &mine)
        .await
        .unwrap();
    let mut theirs = l.clone();
    theirs.spec.as_mut().unwrap().holder_identity = Some("c".into());
    assert_eq!(
        api_err(
            leases
                .replace("leader", &PostParams::default(), &theirs)
                .await
        )
        .code,
        409
    );

    // Leases may be created by PUT (their registry strategy allows create-on-update).
    let fresh: Lease = serde_json::from_value(
        json!({"metadata": {"name": "fresh"}, "spec": {"holderIdentity": "z"}}),
    )
    .unwrap();
    leases
        .replace("fresh", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert!(leases.get_opt("fresh").await.unwrap().is_some());

    // A kube-runtime Recorder publishes events.k8s.io/v1 Events; core v1 sees the same ones.
    let w = env
        .widgets()
        .create(&PostParams::default(), &widget("ev", "red"))
        .await
        .unwrap();
    let reporter = kube::runtime::events::Reporter {
        controller: "kube-mem-test".into(),
        instance: None,
    };
    let recorder = kube::runtime::events::Recorder::new(env.client.clone(), reporter);
    let ev = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Tested".into(),
        note: Some("hello".into()),
        action: "Test".into(),
        secondary: None,
    };
    recorder.publish(&ev, &w.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &w.object_ref(&())).await.unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = env.api();
    let found = core
        .list(&ListParams::default().fields(&format!(
            "involvedObject.name={},involvedObject.kind=Widget",
            w.name_any()
        )))
        .await
        .unwrap();
    assert_eq!(
        found.items.len(),
        1,
        "one event (a series), seen through core v1"
    );
    assert_eq!(found.items[0].message.as_deref(), Some("hello"));
    let v1: Api<k8s_openapi::api::events::v1::Event> = env.api();
    let found = v1
        .list(&ListParams::default().fields(&format!("regarding.name={}", w.name_any())))
        .await
        .unwrap();
    assert_eq!(found.items[0].series.as_ref().map(|s| s.count), Some(2));
    env.cleanup().await;
}

#[tokio::test]
async fn namespace_deletion_removes_content() {
    let env = Env::start().await;
    let cms: Api<ConfigMap> = env.api();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    nss.delete(&env.ns, &DeleteParams::default()).await.unwrap();
    eventually("namespace gone", || async {
        nss.get_opt(&env.ns).await.unwrap().is_none()
    })
    .await;
    assert!(cms.get_opt("c").await.unwrap().is_none());
    let e = api_err(cms.create(&PostParams::default(), &cm).await);
    assert_eq!(e.code, 404, "creating in a missing namespace: {e:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn metadata_only_views() {
    let env = Env::start().await;
    let api = env.widgets();
    let mut w = widget("m", "red");
    w.metadata.labels = Some([("k".to_string(), "v".to_string())].into());
    api.create(&PostParams::default(), &w).await.unwrap();
    let meta = api.get_metadata("m").await.unwrap();
    assert_eq!(
        meta.metadata
            .labels
            .unwrap_or_default()
            .get("k")
            .map(String::as_str),
        Some("v")
    );
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let mut events = kube::runtime::watcher(
        Api::<kube::core::PartialObjectMeta<Widget>>::namespaced(env.client.clone(), &env.ns),
        kube::runtime::watcher::Config::default(),
    )
    .boxed();
    let synced = tokio::time::timeout(Duration::from_secs(20), async {
        let mut applied = Vec::new();
        loop {
            match events
                .try_next()
                .await
                .unwrap()
                .expect("watcher stream open")
            {
                kube::runtime::watcher::Event::InitApply(m) => applied.push(m.name_any()),
                kube::runtime::watcher::Event::InitDone => return applied,
                _ => {}
            }
        }
    })
    .await
    .expect("metadata watcher synced");
    assert_eq!(synced, vec!["m"]);
    api.patch(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"k": "w"}}})),
    )
    .await
    .unwrap();
    let changed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let kube::runtime::watcher::Event::Apply(m) =
                events.try_next().await.unwrap().expect("open")
            {
                return m.metadata.labels.unwrap_or_default().get("k").cloned();
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(changed.as_deref(), Some("w"));
    env.cleanup().await;
}

#[tokio::test]
async fn server_side_apply_ownership() {
    let env = Env::start().await;
    let api = env.widgets();
    let apply = |color: &str, extra: serde_json::Value| {
        let mut spec = json!({"color": color});
        if let Some(m) = extra.as_object() {
            for (k, v) in m {
                spec[k] = v.clone();
            }
        }
        Patch::Apply(
            json!({"apiVersion": "conformance.kube-mem.hostnic.io/v1", "kind": "Widget", "metadata": {"name": "ssa"}, "spec": spec}),
        )
    };
    let created = api
        .patch(
            "ssa",
            &PatchParams::apply("a"),
            &apply("red", json!({"label": "x"})),
        )
        .await
        .unwrap();
    assert_eq!(created.spec.label.as_deref(), Some("x"));
    assert!(
        created
            .metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some("a") && m.operation.as_deref() == Some("Apply"))
    );

    let dropped = api
        .patch("ssa", &PatchParams::apply("a"), &apply("red", json!({})))
        .await
        .unwrap();
    assert_eq!(
        dropped.spec.label, None,
        "a field its only applier stops applying is removed"
    );

    let pp = PatchParams {
        field_manager: Some("b".into()),
        ..Default::default()
    };
    api.patch("ssa", &pp, &Patch::Merge(json!({"spec": {"replicas": 3}})))
        .await
        .unwrap();

    let e = api_err(
        api.patch(
            "ssa",
            &PatchParams::apply("c"),
            &apply("red", json!({"replicas": 5})),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("conflict with \"b\""), "{}", e.message);
    let forced = api
        .patch(
            "ssa",
            &PatchParams::apply("c").force(),
            &apply("red", json!({"replicas": 5})),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.replicas, Some(5));
    assert_eq!(forced.spec.color, "red");
    env.cleanup().await;
}
