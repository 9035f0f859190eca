//! Wakes the link pass as soon as a link appears on or leaves the node, so a hot-plugged NIC
//! gets `LinkReady` within the pass's debounce rather than at the next periodic scan.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use tokio::sync::Notify;
use tracing::warn;

use crate::netns::{self, Netns};

/// Subscribes to the link events of `node_netns` and notifies `wake` on every link added,
/// changed or removed. A failed or ended subscription is logged and retried with backoff; the
/// periodic scan covers the gap. Runs until dropped.
pub async fn watch_loop(node_netns: Arc<Netns>, wake: Arc<Notify>) {
    let mut delay = MIN_RETRY;
    loop {
        let started = Instant::now();
        let on_event = {
            let wake = wake.clone();
            move |message: &NetlinkMessage<RouteNetlinkMessage>| {
                if is_link_change(message) {
                    wake.notify_one();
                }
            }
        };
        let outcome =
            netns::subscribe_in(node_netns.clone(), vec![MulticastGroup::Link], on_event).await;
        let netns = node_netns.path().display();
        match outcome {
            Ok(()) => {
                warn!(%netns, retry_in = ?delay, "link event subscription ended; the periodic link scan covers the gap")
            }
            Err(error) => {
                warn!(%netns, %error, retry_in = ?delay, "could not subscribe to link events; the periodic link scan covers the gap")
            }
        }
        delay = next_retry(delay, started.elapsed());
        tokio::time::sleep(delay).await;
        // Links may have changed while no one listened.
        wake.notify_one();
    }
}

const MIN_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Whether a multicast message says a link was added, changed or removed.
fn is_link_change(message: &NetlinkMessage<RouteNetlinkMessage>) -> bool {
    matches!(
        message.payload,
        NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_)
        )
    )
}

/// The wait before the next subscription: doubling while attempts fail quickly, back to the
/// minimum after a subscription that held for a while.
fn next_retry(previous: Duration, held_for: Duration) -> Duration {
    if held_for >= MAX_RETRY {
        MIN_RETRY
    } else {
        (previous * 2).min(MAX_RETRY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::address::AddressMessage;
    use rtnetlink::packet_route::link::LinkMessage;

    fn message(inner: RouteNetlinkMessage) -> NetlinkMessage<RouteNetlinkMessage> {
        NetlinkMessage::from(inner)
    }

    #[test]
    fn only_link_messages_wake() {
        assert!(is_link_change(&message(RouteNetlinkMessage::NewLink(
            LinkMessage::default()
        ))));
        assert!(is_link_change(&message(RouteNetlinkMessage::DelLink(
            LinkMessage::default()
        ))));
        assert!(!is_link_change(&message(RouteNetlinkMessage::NewAddress(
            AddressMessage::default()
        ))));
    }

    #[test]
    fn retries_back_off_and_reset_after_a_long_subscription() {
        let quick = Duration::from_millis(10);
        assert_eq!(next_retry(MIN_RETRY, quick), MIN_RETRY * 2);
        assert_eq!(next_retry(MAX_RETRY, quick), MAX_RETRY);
        assert_eq!(next_retry(MAX_RETRY, Duration::from_secs(60)), MIN_RETRY);
    }
}
