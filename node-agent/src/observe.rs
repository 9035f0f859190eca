//! What a pod's interface looks like in the kernel, read for CNI CHECK and compared by
//! [`crate::decide::check_problems`].

use std::sync::Arc;

use ipnet::Ipv4Net;

use crate::Result;
use crate::netlink::{self, RouteEntry};
use crate::netns::{Netns, run_in};

/// One interface in a pod netns as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// MAC address.
    pub mac: String,
    /// Administratively up.
    pub up: bool,
    /// MTU.
    pub mtu: u32,
    /// IPv4 addresses.
    pub addresses: Vec<Ipv4Net>,
    /// IPv4 routes of the main table through the interface.
    pub routes: Vec<RouteEntry>,
}

/// Reads interface `ifname` in `pod`, or `None` when there is no such interface.
pub async fn interface(pod: Arc<Netns>, ifname: String) -> Result<Option<Observed>> {
    run_in(vec![pod], move |handles| async move {
        let ph = &handles[0];
        let Some(link) = netlink::link_by_name(ph, &ifname).await? else {
            return Ok(None);
        };
        Ok(Some(Observed {
            addresses: netlink::addresses(ph, link.index).await?,
            routes: netlink::routes(ph, link.index).await?,
            mac: link.mac,
            up: link.up,
            mtu: link.mtu,
        }))
    })
    .await
}
