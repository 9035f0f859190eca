//! Typed rtnetlink verbs on one netns's handle: links found by MAC, addresses, routes.
//!
//! Links are identified by MAC (the QingCloud nic_id), never by name: names change as NICs move
//! between the node and pods.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::{Error, Result};

/// Main routing table id.
const RT_TABLE_MAIN: u8 = 254;

/// Dumps interrupted by concurrent changes are retried this many times.
const DUMP_ATTEMPTS: usize = 3;

/// What the agent needs to know about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index in its netns.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MAC address, lowercase `aa:bb:..`.
    pub mac: String,
    /// Whether the link is enslaved (a bridge port, say).
    pub has_master: bool,
    /// `ifalias`: the agent stores the host name here while the link is in a pod.
    pub alias: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
}

/// A route of the main table through one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination.
    pub dst: Ipv4Net,
    /// Next hop, if any.
    pub gw: Option<Ipv4Addr>,
}

fn nl(context: &'static str) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |source| Error::Netlink { context, source }
}

/// Whether a netlink error carries this errno.
pub fn is_errno(err: &rtnetlink::Error, errno: nix::errno::Errno) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(m) if -m.raw_code() == errno as i32 || m.raw_code() == errno as i32)
}

fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn to_link(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: String::new(),
        has_master: false,
        alias: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) => link.mac = format_mac(a),
            LinkAttribute::Controller(_) => link.has_master = true,
            LinkAttribute::IfAlias(a) if !a.is_empty() => link.alias = Some(a.clone()),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            _ => {}
        }
    }
    link
}

/// Every link of the netns.
pub async fn links(h: &Handle) -> Result<Vec<Link>> {
    let mut last = None;
    for _ in 0..DUMP_ATTEMPTS {
        match h.link().get().execute().try_collect::<Vec<_>>().await {
            Ok(msgs) => return Ok(msgs.iter().map(to_link).collect()),
            Err(e) => last = Some(e),
        }
    }
    Err(nl("dump links")(
        last.unwrap_or(rtnetlink::Error::RequestFailed),
    ))
}

/// The link with this MAC (case-insensitive), preferring one without a master (a bridge port
/// can share the MAC).
pub async fn link_by_mac(h: &Handle, mac: &str) -> Result<Option<Link>> {
    Ok(pick_by_mac(&links(h).await?, mac))
}

/// The link of `links` with this MAC (case-insensitive), preferring one without a master.
pub fn pick_by_mac(links: &[Link], mac: &str) -> Option<Link> {
    let mut found: Vec<&Link> = links
        .iter()
        .filter(|l| l.mac.eq_ignore_ascii_case(mac))
        .collect();
    found.sort_by_key(|l| l.has_master);
    found.first().map(|l| (*l).clone())
}

/// The link with this name.
pub async fn link_by_name(h: &Handle, name: &str) -> Result<Option<Link>> {
    Ok(links(h).await?.into_iter().find(|l| l.name == name))
}

/// Moves a link into the netns of `fd` under `name`, in one request: the name never shows up
/// in the destination under a temporary value, so udev has nothing to race with.
pub async fn move_to(h: &Handle, index: u32, fd: i32, name: &str) -> Result<()> {
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .setns_by_fd(fd)
                .name(name)
                .build(),
        )
        .execute()
        .await
        .map_err(nl("move link to another netns"))
}

/// Moves a link into the netns of `fd` as `name` with `mtu` (if given) and `alias` in its
/// ifalias, in one request. The kernel renames during the move only when the link's current
/// name is taken in the destination; otherwise it moves the link first and renames it after,
/// so an EEXIST can leave the link moved under its old name (see `attach::put_back`).
pub async fn move_into(
    h: &Handle,
    index: u32,
    fd: i32,
    name: &str,
    mtu: Option<u32>,
    alias: &str,
) -> Result<()> {
    let mut msg = LinkUnspec::new_with_index(index)
        .setns_by_fd(fd)
        .name(name)
        .alias(alias);
    if let Some(mtu) = mtu {
        msg = msg.mtu(mtu);
    }
    h.link()
        .set(msg.build())
        .execute()
        .await
        .map_err(nl("move link to another netns"))
}

/// Sets the link's MTU and ifalias back (an empty alias clears it).
pub async fn restore(h: &Handle, index: u32, mtu: u32, alias: &str) -> Result<()> {
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .mtu(mtu)
                .alias(alias)
                .build(),
        )
        .execute()
        .await
        .map_err(nl("restore link mtu and alias"))
}

/// Sets the link down and stores `alias` in its ifalias (empty clears it).
pub async fn set_down_with_alias(h: &Handle, index: u32, alias: &str) -> Result<()> {
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .down()
                .alias(alias)
                .build(),
        )
        .execute()
        .await
        .map_err(nl("set link down and alias"))
}

/// Sets the link down.
pub async fn set_down(h: &Handle, index: u32) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).down().build())
        .execute()
        .await
        .map_err(nl("set link down"))
}

/// Sets the link up.
pub async fn set_up(h: &Handle, index: u32) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl("set link up"))
}

/// Sets the MTU.
pub async fn set_mtu(h: &Handle, index: u32, mtu: u32) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
        .execute()
        .await
        .map_err(nl("set link mtu"))
}

async fn address_messages(h: &Handle, index: u32) -> Result<Vec<AddressMessage>> {
    let mut last = None;
    for _ in 0..DUMP_ATTEMPTS {
        match h
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect::<Vec<_>>()
            .await
        {
            Ok(msgs) => {
                return Ok(msgs
                    .into_iter()
                    .filter(|m| m.header.index == index && m.header.family == AddressFamily::Inet)
                    .collect());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(nl("dump addresses")(
        last.unwrap_or(rtnetlink::Error::RequestFailed),
    ))
}

/// IPv4 addresses of every link, by interface index, in one dump.
pub async fn addresses_by_link(h: &Handle) -> Result<std::collections::HashMap<u32, Vec<Ipv4Net>>> {
    let mut last = None;
    for _ in 0..DUMP_ATTEMPTS {
        match h.address().get().execute().try_collect::<Vec<_>>().await {
            Ok(msgs) => {
                let mut by_link: std::collections::HashMap<u32, Vec<Ipv4Net>> = Default::default();
                for m in msgs
                    .iter()
                    .filter(|m| m.header.family == AddressFamily::Inet)
                {
                    if let Some(net) = ipv4_of(m) {
                        by_link.entry(m.header.index).or_default().push(net);
                    }
                }
                return Ok(by_link);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(nl("dump addresses")(
        last.unwrap_or(rtnetlink::Error::RequestFailed),
    ))
}

fn ipv4_of(m: &AddressMessage) -> Option<Ipv4Net> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => {
            Ipv4Net::new(*ip, m.header.prefix_len).ok()
        }
        _ => None,
    })
}

/// IPv4 addresses on the link.
pub async fn addresses(h: &Handle, index: u32) -> Result<Vec<Ipv4Net>> {
    Ok(address_messages(h, index)
        .await?
        .iter()
        .filter_map(ipv4_of)
        .collect())
}

/// Adds an IPv4 address (its prefix route comes with it).
pub async fn add_address(h: &Handle, index: u32, addr: Ipv4Net) -> Result<()> {
    h.address()
        .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
        .replace()
        .execute()
        .await
        .map_err(nl("add address"))
}

/// Removes every IPv4 address of the link.
pub async fn flush_addresses(h: &Handle, index: u32) -> Result<()> {
    for msg in address_messages(h, index).await? {
        match h.address().del(msg).execute().await {
            Ok(()) => {}
            Err(e) if is_errno(&e, nix::errno::Errno::EADDRNOTAVAIL) => {}
            Err(e) => return Err(nl("delete address")(e)),
        }
    }
    Ok(())
}

/// Adds a route through the link; `gw` `None` makes it a direct (link-scope) route.
pub async fn add_route(h: &Handle, index: u32, dst: Ipv4Net, gw: Option<Ipv4Addr>) -> Result<()> {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.network(), dst.prefix_len())
        .output_interface(index);
    if let Some(gw) = gw {
        builder = builder.gateway(gw);
    } else {
        builder = builder.scope(rtnetlink::packet_route::route::RouteScope::Link);
    }
    h.route()
        .add(builder.build())
        .replace()
        .execute()
        .await
        .map_err(nl("add route"))
}

/// IPv4 routes of the main table that go out through the link.
pub async fn routes(h: &Handle, index: u32) -> Result<Vec<RouteEntry>> {
    let mut last = None;
    for _ in 0..DUMP_ATTEMPTS {
        let req = RouteMessageBuilder::<Ipv4Addr>::new().build();
        match h.route().get(req).execute().try_collect::<Vec<_>>().await {
            Ok(msgs) => return Ok(msgs.iter().filter_map(|m| to_route(m, index)).collect()),
            Err(e) => last = Some(e),
        }
    }
    Err(nl("dump routes")(
        last.unwrap_or(rtnetlink::Error::RequestFailed),
    ))
}

fn to_route(m: &RouteMessage, index: u32) -> Option<RouteEntry> {
    if m.header.table != RT_TABLE_MAIN || m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut oif = None;
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gw = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
            _ => {}
        }
    }
    if oif != Some(index) {
        return None;
    }
    Some(RouteEntry {
        dst: Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?,
        gw,
    })
}

/// Renames a link (it must be down).
pub async fn rename(h: &Handle, index: u32, name: &str) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).name(name).build())
        .execute()
        .await
        .map_err(nl("rename link"))
}
