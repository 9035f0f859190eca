//! Pause points for crash tests: with `HOSTNIC_TEST_PAUSE_AT=<point>=<marker file>` in its
//! environment, the agent creates the marker when a request reaches `<point>` and waits there
//! until the marker is removed, so a test can kill it (or send SIGTERM) exactly at that step.
//! Only the first request reaching the point waits: the others pass, so a test can also show
//! that one request stuck midway holds up no other.
//! Unset (always, outside tests), a pause point costs one comparison.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The environment variable naming the pause point and its marker file.
pub const PAUSE_ENV: &str = "HOSTNIC_TEST_PAUSE_AT";

/// The claim is recorded in the node journal and its link has not moved; its HostNic write
/// goes on meanwhile.
pub const CLAIM_RECORDED: &str = "claim-recorded";

/// The claim is recorded in the node journal and its HostNic not written yet; its link moves
/// into the pod meanwhile.
pub const CLAIM_WRITING: &str = "claim-writing";

/// The link is configured in the pod and the journal says so; the plugin has no answer yet.
pub const CLAIM_ATTACHED: &str = "claim-attached";

/// A DEL is queued in the journal and answered; its link has not left the pod yet.
pub const RELEASE_ANSWERED: &str = "release-answered";

fn configured() -> &'static Option<(String, PathBuf)> {
    static AT: OnceLock<Option<(String, PathBuf)>> = OnceLock::new();
    AT.get_or_init(|| {
        let value = std::env::var(PAUSE_ENV).ok()?;
        let (point, marker) = value.split_once('=')?;
        Some((point.to_owned(), PathBuf::from(marker)))
    })
}

/// Waits at `point` while the test wants it to (see the module doc).
pub async fn pause(point: &'static str) {
    let Some((at, marker)) = configured() else {
        return;
    };
    static FIRED: AtomicBool = AtomicBool::new(false);
    if at != point || FIRED.swap(true, Ordering::SeqCst) {
        return;
    }
    tracing::warn!(point, marker = %marker.display(), "paused at a test hook");
    if let Err(error) = std::fs::write(marker, point) {
        tracing::error!(%error, "cannot create the test hook's marker; not pausing");
        return;
    }
    while marker.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(point, "resumed from a test hook");
}
