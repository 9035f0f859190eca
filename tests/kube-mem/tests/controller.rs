//! kube-runtime against the server: a Controller with the finalizer helper reconciles a custom
//! resource, writes status with server-side apply, and cleans up on deletion.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

const FINALIZER: &str = "conformance.kube-mem.hostnic.io/cleanup";

struct Ctx {
    api: Api<Widget>,
    cleanups: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<kube::Error>>),
}

async fn reconcile(w: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let api = ctx.api.clone();
    finalizer(&api, FINALIZER, w, |ev| async {
        match ev {
            Finalizer::Apply(w) => {
                let status = json!({
                    "apiVersion": "conformance.kube-mem.hostnic.io/v1",
                    "kind": "Widget",
                    "status": {
                        "observed": w.meta().generation,
                        "replicas": w.spec.replicas,
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                });
                ctx.api
                    .patch_status(
                        &w.name_any(),
                        &PatchParams::apply("widget-controller").force(),
                        &Patch::Apply(status),
                    )
                    .await?;
                Ok(Action::requeue(Duration::from_secs(300)))
            }
            Finalizer::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(_w: Arc<Widget>, _e: &Error, _ctx: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

#[tokio::test]
async fn controller_reconciles_with_finalizer() {
    let env = Env::start().await;
    let api = env.widgets();
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        cleanups: AtomicUsize::new(0),
    });
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    api.create(&PostParams::default(), &widget("ctl", "red"))
        .await
        .unwrap();
    eventually("first reconcile wrote status", || async {
        let w = api.get("ctl").await.unwrap();
        w.finalizers().contains(&FINALIZER.to_string())
            && w.status.and_then(|s| s.observed) == Some(1)
    })
    .await;

    api.patch(
        "ctl",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    eventually("spec change reconciled", || async {
        let s = api.get("ctl").await.unwrap().status.unwrap_or_default();
        s.observed == Some(2) && s.replicas == Some(4)
    })
    .await;

    api.delete("ctl", &DeleteParams::default()).await.unwrap();
    eventually("cleanup ran and the object is gone", || async {
        api.get_opt("ctl").await.unwrap().is_none()
    })
    .await;
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    task.abort();
    env.cleanup().await;
}
