//! Pure decisions on HostNics and NicPools: which NIC a claim takes, which pool a pod uses,
//! what the pod's interface must look like, how HostNic status changes. No I/O here.

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use hostnic_agent_api::{Attachment, AttachmentKey, CheckRequest, ClaimRequest, Route};
use hostnic_crds::{HostNic, HostNicPhase, HostNicStatus, NicPool, NicRole, PodRef};
use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::attach::{AttachSpec, NodeAction};
use crate::netlink::RouteEntry;
use crate::observe::Observed;
use crate::{Error, Result};

pub use hostnic_crds::{LINK_IN_POD, LINK_MISSING, LINK_PRESENT, LINK_READY};

/// Sets the `LinkReady` condition, keeping its transition time when the status stays.
fn set_link_ready(nic: &mut HostNic, ready: bool, reason: &str, message: String, now: Time) {
    let generation = nic.metadata.generation;
    let st = nic.status.get_or_insert_with(Default::default);
    let want = if ready { "True" } else { "False" };
    let transition = match st.conditions.iter().find(|c| c.type_ == LINK_READY) {
        Some(c) if c.status == want => c.last_transition_time.clone(),
        _ => now,
    };
    st.conditions.retain(|c| c.type_ != LINK_READY);
    st.conditions.push(Condition {
        type_: LINK_READY.into(),
        status: want.into(),
        reason: reason.into(),
        message,
        last_transition_time: transition,
        observed_generation: generation,
    });
}

fn status(nic: &HostNic) -> Option<&HostNicStatus> {
    nic.status.as_ref()
}

fn phase(nic: &HostNic) -> HostNicPhase {
    status(nic).map(|s| s.phase).unwrap_or_default()
}

/// The NIC's MAC, lowercase, once the operator knows it.
pub fn mac(nic: &HostNic) -> Option<String> {
    status(nic)
        .and_then(|s| s.nic_id.as_deref())
        .map(str::to_ascii_lowercase)
}

/// Annotation kubelet puts on a static pod's mirror in the API: the static pod's own UID (which
/// kubelet passes to the runtime as `K8S_POD_UID`), while the mirror gets a UID of its own.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Whether `pod`, as the API shows it, is the pod whose UID a claim recorded (from the API or
/// from the runtime's `K8S_POD_UID`, which for a static pod is the one in its mirror's annotation).
pub fn is_same_pod(pod: &k8s_openapi::api::core::v1::Pod, uid: &str) -> bool {
    pod.metadata.uid.as_deref() == Some(uid)
        || pod.annotations().get(MIRROR_ANNOTATION).map(String::as_str) == Some(uid)
}

/// Whether `nic` is bound to this attachment.
pub fn is_bound_to(nic: &HostNic, key: &AttachmentKey) -> bool {
    phase(nic) == HostNicPhase::Bound
        && status(nic)
            .and_then(|s| s.pod.as_ref())
            .is_some_and(|p| p.container_id == key.container_id && p.interface == key.ifname)
}

/// The HostNic bound to this attachment, if any.
pub fn find_bound<'a>(nics: &'a [Arc<HostNic>], key: &AttachmentKey) -> Option<&'a Arc<HostNic>> {
    nics.iter().find(|n| is_bound_to(n, key))
}

/// Every HostNic bound to a pod, with its attachment key.
pub fn bound(nics: &[Arc<HostNic>]) -> Vec<(AttachmentKey, Arc<HostNic>)> {
    nics.iter()
        .filter(|n| phase(n) == HostNicPhase::Bound)
        .filter_map(|n| {
            let pod = status(n)?.pod.as_ref()?;
            Some((
                AttachmentKey {
                    container_id: pod.container_id.clone(),
                    ifname: pod.interface.clone(),
                },
                n.clone(),
            ))
        })
        .collect()
}

/// Whether the NIC can be handed to a pod now: Available, a pod NIC, its link seen on the node.
pub fn is_free(nic: &HostNic) -> bool {
    nic.spec.role == NicRole::Pod
        && phase(nic) == HostNicPhase::Available
        && mac(nic).is_some()
        && status(nic).is_some_and(|s| s.host_interface.is_some())
}

/// Free NICs of `pool`, skipping `exclude` (lost races), in a stable order.
pub fn free_candidates(
    nics: &[Arc<HostNic>],
    pool: &str,
    exclude: &HashSet<String>,
) -> Vec<Arc<HostNic>> {
    let mut free: Vec<_> = nics
        .iter()
        .filter(|n| n.spec.pool == pool && is_free(n) && !exclude.contains(&n.name_any()))
        .cloned()
        .collect();
    free.sort_by_key(|n| n.name_any());
    free
}

/// Whether `nic` is a pod NIC on its way to being free: being created or attached, resting
/// after a release (the operator returns it after quarantine), or Available without its link.
fn is_coming(nic: &HostNic) -> bool {
    nic.spec.role == NicRole::Pod
        && !is_free(nic)
        && (phase(nic).is_incoming()
            || phase(nic) == HostNicPhase::Released
            || phase(nic) == HostNicPhase::Available)
}

/// Whether a NIC of `pool` is on its way on this node: an ADD finding the pool empty then
/// waits for it instead of answering "try again later". On its way: a pod NIC being created
/// or attached or resting after a release, or one the operator owes: the pool serves this node
/// (it has NICs here), its size is above zero and it is not Degraded, so the refill of the NIC
/// just taken is due even before its HostNic appears (an ADD right after another emptied it).
pub fn nic_coming(nics: &[Arc<HostNic>], pools: &[Arc<NicPool>], pool: &str) -> bool {
    let mut mine = nics
        .iter()
        .filter(|n| n.spec.pool == pool && n.spec.role == NicRole::Pod)
        .peekable();
    let serves_this_node = mine.peek().is_some();
    if mine.any(|n| is_coming(n)) {
        return true;
    }
    let owed = pools
        .iter()
        .find(|p| p.name_any() == pool)
        .is_some_and(|p| p.spec.size > 0 && !is_degraded(p));
    serves_this_node && owed
}

/// The pool's `Degraded` condition is True: the operator says it cannot converge (vxnet full,
/// VM full, quota), so no refill is coming.
fn is_degraded(pool: &NicPool) -> bool {
    pool.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True")
    })
}

/// Free NICs and NICs on their way (being created or attached, or resting after a release).
pub fn counts(nics: &[Arc<HostNic>]) -> (u32, u32) {
    let pod_nics = nics.iter().filter(|n| n.spec.role == NicRole::Pod);
    let (mut free, mut incoming) = (0, 0);
    for n in pod_nics {
        if is_free(n) {
            free += 1;
        } else if is_coming(n) {
            incoming += 1;
        }
    }
    (free, incoming)
}

/// The pool a pod's NIC comes from: the pod's `hostnic.qingcloud.com/pool` annotation, else the
/// conflist's `pool`, else the pool annotated as default, else the only pool with NICs on this
/// node. A pool named by the annotation or the conflist must exist: a misspelt name is a
/// config error to fix, not a shortage to wait out.
pub fn choose_pool(
    annotation: Option<&str>,
    configured: Option<&str>,
    pools: &[Arc<NicPool>],
    nics: &[Arc<HostNic>],
) -> std::result::Result<String, String> {
    let named = [
        (
            annotation,
            format!("pod annotation {}", hostnic_crds::POD_POOL_ANNOTATION),
        ),
        (configured, "the CNI config's \"pool\"".to_owned()),
    ];
    if let Some((p, source)) = named
        .into_iter()
        .find_map(|(p, source)| Some((p.filter(|p| !p.is_empty())?, source)))
    {
        if pools.iter().any(|pool| pool.name_any() == p) {
            return Ok(p.to_owned());
        }
        return Err(format!(
            "NicPool {p:?} (from {source}) does not exist; create it or fix the name"
        ));
    }
    let defaults: Vec<_> = pools
        .iter()
        .filter(|p| {
            p.annotations()
                .get(hostnic_crds::DEFAULT_POOL_ANNOTATION)
                .is_some_and(|v| v == "true")
        })
        .map(|p| p.name_any())
        .collect();
    match defaults.as_slice() {
        [one] => return Ok(one.clone()),
        [] => {}
        many => return Err(format!("several NicPools are marked default: {many:?}")),
    }
    let on_node: BTreeSet<_> = nics
        .iter()
        .filter(|n| n.spec.role == NicRole::Pod)
        .map(|n| n.spec.pool.clone())
        .collect();
    let mut it = on_node.into_iter();
    match (it.next(), it.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err("no NicPool has NICs on this node and none is marked default".into()),
        (Some(_), Some(_)) => Err(format!(
            "several pools have NICs on this node and none is marked default \
             (annotate the pod with {} or a pool with {}=\"true\")",
            hostnic_crds::POD_POOL_ANNOTATION,
            hostnic_crds::DEFAULT_POOL_ANNOTATION
        )),
    }
}

/// Bound attachments of `network` that the runtime no longer lists: what its CNI GC releases.
/// Claims recorded without a network (made before the name was recorded) are never
/// candidates: nothing proves which network made them, and a wrong guess would take a live
/// NIC from a pod of another network. Start-up recovery and the sweep (netns or pod gone)
/// still release those when they are really stale.
pub fn gc_candidates(
    nics: &[Arc<HostNic>],
    network: &str,
    valid: &HashSet<AttachmentKey>,
) -> Vec<(AttachmentKey, Arc<HostNic>)> {
    bound(nics)
        .into_iter()
        .filter(|(key, nic)| {
            let made_here = status(nic)
                .and_then(|s| s.pod.as_ref())
                .and_then(|p| p.network.as_deref())
                == Some(network);
            made_here && !valid.contains(key)
        })
        .collect()
}

/// The pod address the claim recorded: the NIC's IP with its vxnet's prefix length.
fn recorded_address(nic: &HostNic) -> Result<Ipv4Net> {
    let st = status(nic).ok_or_else(|| incomplete(nic, "no status"))?;
    let ip: Ipv4Addr = st
        .private_ip
        .as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| incomplete(nic, "no valid privateIp"))?;
    let cidr: Ipv4Net = st
        .vxnet_cidr
        .as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| incomplete(nic, "no valid vxnetCidr"))?;
    Ipv4Net::new(ip, cidr.prefix_len()).map_err(|_| incomplete(nic, "bad prefix"))
}

/// What CNI CHECK finds wrong with a bound NIC, comparing three things: what the claim
/// recorded on the HostNic (MAC, address, netns), what the runtime's cached result and the
/// conflist expect (`req.expected`), and the interface in the kernel (`observed`). Only what
/// the attachment itself set up is required: routes a later chained plugin added are fine,
/// and today's NicPool routes are not consulted (an edit applies to new pods only).
pub fn check_problems(
    nic: &HostNic,
    req: &CheckRequest,
    observed: Option<&Observed>,
) -> Result<Vec<String>> {
    let ifname = &req.key.ifname;
    let mac = mac(nic).ok_or_else(|| incomplete(nic, "no nicId"))?;
    let address = recorded_address(nic)?;
    let mut problems = Vec::new();
    if let Some(pod) = status(nic).and_then(|s| s.pod.as_ref())
        && pod.netns != req.netns
    {
        problems.push(format!(
            "the claim recorded netns {}, CHECK names {}",
            pod.netns, req.netns
        ));
    }
    if let Some(e) = &req.expected {
        if !e.mac.is_empty() && !e.mac.eq_ignore_ascii_case(&mac) {
            problems.push(format!(
                "prevResult gives {ifname} MAC {}, the claim recorded {mac}",
                e.mac
            ));
        }
        if e.address.parse::<Ipv4Net>().ok() != Some(address) {
            problems.push(format!(
                "prevResult gives {ifname} address {}, the claim recorded {address}",
                e.address
            ));
        }
    }
    let Some(o) = observed else {
        problems.push(format!("no interface {ifname} in the pod netns"));
        return Ok(problems);
    };
    if !o.mac.eq_ignore_ascii_case(&mac) {
        problems.push(format!(
            "interface {ifname} has MAC {}, expected {mac}",
            o.mac
        ));
    }
    if !o.up {
        problems.push(format!("interface {ifname} is down"));
    }
    if !o.addresses.contains(&address) {
        problems.push(format!("address {address} missing on {ifname}"));
    }
    let Some(e) = &req.expected else {
        return Ok(problems);
    };
    if let Some(mtu) = e.mtu
        && o.mtu != mtu
    {
        problems.push(format!(
            "interface {ifname} has MTU {}, expected {mtu}",
            o.mtu
        ));
    }
    for r in &e.routes {
        let Ok(dst) = r.dst.parse::<Ipv4Net>().map(|d| d.trunc()) else {
            problems.push(format!("expected route {} is not an IPv4 CIDR", r.dst));
            continue;
        };
        let present = match r.gw.as_deref() {
            None | Some("0.0.0.0") => o.routes.iter().any(|have| have.dst == dst),
            Some(g) => match g.parse::<Ipv4Addr>() {
                Ok(gw) => o.routes.contains(&RouteEntry { dst, gw: Some(gw) }),
                Err(_) => false,
            },
        };
        if !present {
            let via = r.gw.as_deref().unwrap_or("any next hop");
            problems.push(format!("route {dst} via {via} missing on {ifname}"));
        }
    }
    Ok(problems)
}

/// The answer to a CHECK that found nothing wrong: the claim's record and the interface as
/// it is.
pub fn checked_attachment(nic: &HostNic, req: &CheckRequest, o: &Observed) -> Result<Attachment> {
    let st = status(nic).ok_or_else(|| incomplete(nic, "no status"))?;
    Ok(Attachment {
        hostnic: nic.name_any(),
        interface: req.key.ifname.clone(),
        mac: mac(nic).ok_or_else(|| incomplete(nic, "no nicId"))?,
        sandbox: req.netns.clone(),
        mtu: o.mtu,
        address: recorded_address(nic)?.to_string(),
        gateway: st.vxnet_gateway.clone().unwrap_or_default(),
        routes: o
            .routes
            .iter()
            .map(|r| Route {
                dst: r.dst.to_string(),
                gw: r.gw.map(|g| g.to_string()),
            })
            .collect(),
    })
}

/// The node's own address in the subnet of the pod address `pod` (the lowest, when it has
/// several), among the node's `addresses`: where routes with gateway `0.0.0.0` go.
pub fn node_address(
    pod: Ipv4Net,
    addresses: impl IntoIterator<Item = Ipv4Net>,
) -> Option<Ipv4Addr> {
    let subnet = pod.trunc();
    addresses
        .into_iter()
        .map(|a| a.addr())
        .filter(|a| subnet.contains(a) && *a != pod.addr())
        .min()
}

fn incomplete(nic: &HostNic, what: &str) -> Error {
    Error::IncompleteHostNic {
        name: nic.name_any(),
        what: what.into(),
    }
}

/// What the NIC must look like in the pod: its address with the vxnet prefix, the default route
/// via the vxnet gateway, then the pool's and the request's routes, a missing gateway replaced
/// by the vxnet gateway; those with `0.0.0.0` go via the node, resolved when the NIC moves.
pub fn attach_spec(
    nic: &HostNic,
    pools: &[Arc<NicPool>],
    ifname: &str,
    mtu: Option<u32>,
    extra_routes: &[Route],
) -> Result<AttachSpec> {
    let st = status(nic).ok_or_else(|| incomplete(nic, "no status"))?;
    let mac = mac(nic).ok_or_else(|| incomplete(nic, "no nicId"))?;
    let address = recorded_address(nic)?;
    let gateway: Ipv4Addr = st
        .vxnet_gateway
        .as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| incomplete(nic, "no valid vxnetGateway"))?;

    let pool_routes = pools
        .iter()
        .find(|p| p.name_any() == nic.spec.pool)
        .map(|p| {
            p.spec
                .routes
                .iter()
                .map(|r| Route {
                    dst: r.destination.clone(),
                    gw: Some(r.gateway.clone()),
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut routes: Vec<RouteEntry> = Vec::new();
    let mut via_node: Vec<Ipv4Net> = Vec::new();
    for r in pool_routes.iter().chain(extra_routes) {
        let dst: Ipv4Net = r.dst.parse().map_err(|_| {
            Error::InvalidRequest(format!("route destination {:?} is not an IPv4 CIDR", r.dst))
        })?;
        let gw = match r.gw.as_deref() {
            None | Some("") => gateway,
            Some("0.0.0.0") => {
                let dst = dst.trunc();
                if dst.prefix_len() != 0 && !via_node.contains(&dst) {
                    via_node.push(dst);
                }
                continue;
            }
            Some(g) => g.parse().map_err(|_| {
                Error::InvalidRequest(format!("route gateway {g:?} is not an IPv4 address"))
            })?,
        };
        let entry = RouteEntry {
            dst: dst.trunc(),
            gw: Some(gw),
        };
        if entry.dst.prefix_len() != 0 && !routes.contains(&entry) {
            routes.push(entry);
        }
    }
    Ok(AttachSpec {
        mac,
        ifname: ifname.to_owned(),
        mtu,
        address,
        gateway,
        routes,
        via_node,
    })
}

/// The answer to a claim.
pub fn attachment(nic: &HostNic, spec: &AttachSpec, sandbox: &str, mtu: u32) -> Attachment {
    Attachment {
        hostnic: nic.name_any(),
        interface: spec.ifname.clone(),
        mac: spec.mac.clone(),
        sandbox: sandbox.to_owned(),
        mtu,
        address: spec.address.to_string(),
        gateway: spec.gateway.to_string(),
        routes: spec
            .all_routes()
            .iter()
            .map(|r| Route {
                dst: r.dst.to_string(),
                gw: r.gw.map(|g| g.to_string()),
            })
            .collect(),
    }
}

/// Checks what a claim request names before anything is touched.
pub fn validate_claim(req: &ClaimRequest) -> Result<()> {
    validate_key(&req.key)?;
    validate_netns(&req.netns)?;
    if req.pod.namespace.is_empty() || req.pod.name.is_empty() {
        return Err(Error::InvalidRequest(
            "pod namespace and name are required".into(),
        ));
    }
    if let Some(mtu) = req.mtu
        && !(68..=65535).contains(&mtu)
    {
        return Err(Error::InvalidRequest(format!(
            "mtu {mtu} out of range 68..65535"
        )));
    }
    Ok(())
}

/// Checks a container id and interface name.
pub fn validate_key(key: &AttachmentKey) -> Result<()> {
    if key.container_id.is_empty() {
        return Err(Error::InvalidRequest("container_id is empty".into()));
    }
    let n = &key.ifname;
    // The kernel's dev_valid_name: 1..15 bytes, not . or .., no '/', ':' or whitespace.
    if n.is_empty()
        || n.len() > 15
        || n == "."
        || n == ".."
        || n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(Error::InvalidRequest(format!(
            "invalid interface name {n:?}"
        )));
    }
    Ok(())
}

/// Checks a netns path is absolute.
pub fn validate_netns(netns: &str) -> Result<()> {
    if !netns.starts_with('/') {
        return Err(Error::InvalidRequest(format!(
            "netns {netns:?} is not an absolute path"
        )));
    }
    Ok(())
}

/// The status after a claim: Bound to the pod, `LinkReady=False` (InPod): the link leaves the
/// node, so a later `LinkReady=True` proves it came back.
pub fn bind(nic: &HostNic, pod: PodRef) -> HostNic {
    let mut next = nic.clone();
    let message = format!("link is in pod {}/{}", pod.namespace, pod.name);
    let st = next.status.get_or_insert_with(Default::default);
    st.phase = HostNicPhase::Bound;
    st.pod = Some(pod);
    st.released_at = None;
    set_link_ready(
        &mut next,
        false,
        LINK_IN_POD,
        message,
        Time(jiff::Timestamp::now()),
    );
    next
}

/// The status after a release: Released now, the pod kept for the record. A release is only
/// written with the link on the node (`host_interface`), and says so with `LinkReady=True`:
/// the operator's proof that the NIC left the pod before it recycles or deletes it.
pub fn release(nic: &HostNic, now: jiff::Timestamp, host_interface: Option<String>) -> HostNic {
    let mut next = nic.clone();
    let st = next.status.get_or_insert_with(Default::default);
    st.phase = HostNicPhase::Released;
    st.released_at = Some(Time(now));
    if let Some(name) = host_interface {
        st.host_interface = Some(name.clone());
        set_link_ready(
            &mut next,
            true,
            LINK_PRESENT,
            format!("link {name} is on the node"),
            Time(now),
        );
    }
    next
}

/// The status reporting whether the link is on the node, or `None` if nothing changes.
pub fn report_link(nic: &HostNic, link: Option<&str>, now: jiff::Timestamp) -> Option<HostNic> {
    let st = status(nic).cloned().unwrap_or_default();
    let (want_status, reason, message) = match link {
        Some(name) => ("True", LINK_PRESENT, format!("link {name} is on the node")),
        None => (
            "False",
            LINK_MISSING,
            "no link with the NIC's MAC on the node".to_owned(),
        ),
    };
    let current = st.conditions.iter().find(|c| c.type_ == LINK_READY);
    let same_condition = current
        .is_some_and(|c| c.status == want_status && c.reason == reason && c.message == message);
    let same_iface =
        st.host_interface.as_deref() == link || (link.is_none() && st.host_interface.is_none());
    if same_condition && same_iface {
        return None;
    }
    let mut next = nic.clone();
    let st = next.status.get_or_insert_with(Default::default);
    st.host_interface = link.map(str::to_owned);
    let transition = match current {
        Some(c) if c.status == want_status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    st.conditions.retain(|c| c.type_ != LINK_READY);
    st.conditions.push(Condition {
        type_: LINK_READY.into(),
        status: want_status.into(),
        reason: reason.into(),
        message,
        last_transition_time: transition,
        observed_generation: nic.metadata.generation,
    });
    Some(next)
}

/// What the agent does to a NIC's link on the node, or `None` when the link is not expected
/// there (bound to a pod, or not attached yet).
pub fn node_action(nic: &HostNic) -> Option<NodeAction> {
    mac(nic)?;
    let ph = phase(nic);
    if nic.spec.role == NicRole::Gateway {
        if ph.is_outgoing() {
            return Some(NodeAction::Look);
        }
        let st = status(nic)?;
        let ip: Option<Ipv4Addr> = st.private_ip.as_deref().and_then(|s| s.parse().ok());
        let cidr: Option<Ipv4Net> = st.vxnet_cidr.as_deref().and_then(|s| s.parse().ok());
        return Some(match (ip, cidr) {
            (Some(ip), Some(cidr)) => {
                Ipv4Net::new(ip, cidr.prefix_len()).map_or(NodeAction::Look, NodeAction::Gateway)
            }
            _ => NodeAction::Look,
        });
    }
    match ph {
        HostNicPhase::Bound | HostNicPhase::Pending | HostNicPhase::Creating => None,
        HostNicPhase::Attaching
        | HostNicPhase::Available
        | HostNicPhase::Released
        | HostNicPhase::Failed => Some(NodeAction::Rest),
        HostNicPhase::Detaching | HostNicPhase::Deleting => Some(NodeAction::Look),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnic_crds::{HostNicSpec, NicPoolSpec};

    fn nic(name: &str, pool: &str, phase: HostNicPhase) -> Arc<HostNic> {
        let mut n = HostNic::new(
            name,
            HostNicSpec {
                pool: pool.into(),
                node: "n1".into(),
                vxnet: "vxnet-a".into(),
                role: NicRole::Pod,
            },
        );
        n.status = Some(HostNicStatus {
            phase,
            nic_id: Some("52:54:AA:00:00:01".into()),
            private_ip: Some("10.0.0.5".into()),
            vxnet_cidr: Some("10.0.0.0/24".into()),
            vxnet_gateway: Some("10.0.0.1".into()),
            host_interface: Some("eth9".into()),
            ..Default::default()
        });
        Arc::new(n)
    }

    fn pool(name: &str, default: bool) -> Arc<NicPool> {
        let mut p = NicPool::new(
            name,
            NicPoolSpec {
                vxnets: vec!["vxnet-a".into()],
                node_selector: Default::default(),
                size: 3,
                max_per_node: 10,
                routes: vec![hostnic_crds::Route {
                    destination: "10.96.0.0/12".into(),
                    gateway: "0.0.0.0".into(),
                }],
                reclaim_policy: Default::default(),
                quarantine_seconds: 0,
            },
        );
        if default {
            p.metadata.annotations = Some(
                [(
                    hostnic_crds::DEFAULT_POOL_ANNOTATION.to_owned(),
                    "true".to_owned(),
                )]
                .into(),
            );
        }
        Arc::new(p)
    }

    #[test]
    fn free_candidates_skip_bound_other_pools_missing_links_and_exclusions() {
        let mut no_link = (*nic("d", "p", HostNicPhase::Available)).clone();
        no_link.status.as_mut().unwrap().host_interface = None;
        let nics = vec![
            nic("c", "p", HostNicPhase::Available),
            nic("a", "p", HostNicPhase::Available),
            nic("b", "p", HostNicPhase::Bound),
            nic("e", "q", HostNicPhase::Available),
            Arc::new(no_link),
            nic("f", "p", HostNicPhase::Released),
        ];
        let names = |v: Vec<Arc<HostNic>>| v.iter().map(|n| n.name_any()).collect::<Vec<_>>();
        assert_eq!(
            names(free_candidates(&nics, "p", &HashSet::new())),
            ["a", "c"]
        );
        let exclude = HashSet::from(["a".to_owned()]);
        assert_eq!(names(free_candidates(&nics, "p", &exclude)), ["c"]);
        assert_eq!(counts(&nics), (3, 2));
        // Only a NIC of the pool on its way makes an ADD wait: not a bound one, not another
        // pool's.
        assert!(nic_coming(&nics, &[], "p"));
        let only_taken = vec![
            nic("b", "p", HostNicPhase::Bound),
            nic("e", "q", HostNicPhase::Attaching),
        ];
        assert!(!nic_coming(&only_taken, &[], "p"));
        assert!(nic_coming(&only_taken, &[], "q"));
        assert!(nic_coming(
            &[nic("c", "p", HostNicPhase::Creating)],
            &[],
            "p"
        ));
        // The operator owes this node the refill of the NIC just taken: a pool of size 3
        // serving it, not Degraded. Not a pool of size 0, a Degraded one, or one without NICs
        // here (it may not select this node).
        let p = pool("p", false);
        assert!(nic_coming(&only_taken, std::slice::from_ref(&p), "p"));
        let mut empty = (*p).clone();
        empty.spec.size = 0;
        assert!(!nic_coming(&only_taken, &[Arc::new(empty)], "p"));
        let mut degraded = (*p).clone();
        degraded.status = Some(hostnic_crds::NicPoolStatus {
            conditions: vec![Condition {
                type_: "Degraded".into(),
                status: "True".into(),
                reason: "VxnetExhausted".into(),
                message: String::new(),
                last_transition_time: Time(Default::default()),
                observed_generation: None,
            }],
            ..Default::default()
        });
        assert!(!nic_coming(&only_taken, &[Arc::new(degraded)], "p"));
        assert!(!nic_coming(&[], std::slice::from_ref(&p), "p"));
    }

    #[test]
    fn a_static_pod_is_its_mirror_and_another_uid_is_another_pod() {
        let pod = |uid: &str, mirror: Option<&str>| {
            let mut p = k8s_openapi::api::core::v1::Pod::default();
            p.metadata.uid = Some(uid.into());
            p.metadata.annotations =
                mirror.map(|m| [(MIRROR_ANNOTATION.to_owned(), m.to_owned())].into());
            p
        };
        assert!(is_same_pod(&pod("u1", None), "u1"));
        assert!(!is_same_pod(&pod("u2", None), "u1"));
        // kubelet passes the static pod's UID; the API shows its mirror under another.
        assert!(is_same_pod(
            &pod("mirror-uid", Some("static-uid")),
            "static-uid"
        ));
        assert!(!is_same_pod(
            &pod("mirror-uid", Some("other")),
            "static-uid"
        ));
    }

    #[test]
    fn pool_choice_follows_annotation_config_default_then_only_pool() {
        let nics = vec![nic("a", "p", HostNicPhase::Available)];
        let pools = vec![pool("p", false), pool("q", true), pool("x", false)];
        // The pod's annotation beats the conflist's pool.
        assert_eq!(
            choose_pool(Some("x"), Some("p"), &pools, &nics).unwrap(),
            "x"
        );
        assert_eq!(choose_pool(None, Some("p"), &pools, &nics).unwrap(), "p");
        assert_eq!(
            choose_pool(Some(""), Some("p"), &pools, &nics).unwrap(),
            "p"
        );
        assert_eq!(choose_pool(None, None, &pools, &nics).unwrap(), "q");
        let plain = vec![pool("p", false)];
        assert_eq!(choose_pool(None, None, &plain, &nics).unwrap(), "p");
        let two = vec![
            nic("a", "p", HostNicPhase::Available),
            nic("b", "r", HostNicPhase::Available),
        ];
        assert!(choose_pool(None, None, &plain, &two).is_err());
        assert!(choose_pool(None, None, &[], &[]).is_err());
    }

    #[test]
    fn a_named_pool_that_does_not_exist_is_an_error_naming_it() {
        let nics = vec![nic("a", "p", HostNicPhase::Available)];
        let pools = vec![pool("p", true)];
        let why = choose_pool(Some("fats"), None, &pools, &nics).unwrap_err();
        assert!(
            why.contains("\"fats\"") && why.contains("annotation"),
            "{why}"
        );
        let why = choose_pool(None, Some("pool-b"), &pools, &nics).unwrap_err();
        assert!(
            why.contains("\"pool-b\"") && why.contains("CNI config"),
            "{why}"
        );
        // As the agent answers it: a config error (CNI 7), not "try again later".
        let err = Error::NoPool {
            pod: "ns/p".into(),
            why,
        };
        assert_eq!(err.kind(), hostnic_agent_api::ErrorKind::InvalidRequest);
    }

    fn bound_to(name: &str, container: &str, network: Option<&str>) -> Arc<HostNic> {
        let n = nic(name, "p", HostNicPhase::Available);
        Arc::new(bind(
            &n,
            PodRef {
                namespace: "ns".into(),
                name: container.into(),
                uid: None,
                container_id: container.into(),
                netns: format!("/run/netns/{container}"),
                interface: "eth0".into(),
                network: network.map(str::to_owned),
            },
        ))
    }

    #[test]
    fn gc_collects_only_stale_attachments_of_its_own_network() {
        let nics = vec![
            bound_to("a", "c1", Some("hostnic")),
            bound_to("b", "c2", Some("hostnic")),
            bound_to("c", "c3", Some("hostnic-fast")),
            bound_to("d", "c4", None),
            nic("e", "p", HostNicPhase::Available),
        ];
        let valid = HashSet::from([AttachmentKey {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }]);
        let names = |v: Vec<(AttachmentKey, Arc<HostNic>)>| {
            v.into_iter().map(|(_, n)| n.name_any()).collect::<Vec<_>>()
        };
        assert_eq!(names(gc_candidates(&nics, "hostnic", &valid)), ["b"]);
        // The other network's GC does not know c1/c2 and must not take them; an empty list
        // still leaves claims without a network alone.
        assert_eq!(
            names(gc_candidates(&nics, "hostnic-fast", &HashSet::new())),
            ["c"]
        );
        assert!(gc_candidates(&nics, "other", &HashSet::new()).is_empty());
    }

    fn observed_ok() -> Observed {
        Observed {
            mac: "52:54:aa:00:00:01".into(),
            up: true,
            mtu: 1450,
            addresses: vec!["10.0.0.5/24".parse().unwrap()],
            routes: vec![
                RouteEntry {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gw: Some("10.0.0.1".parse().unwrap()),
                },
                RouteEntry {
                    dst: "10.96.0.0/12".parse().unwrap(),
                    gw: Some("10.0.0.254".parse().unwrap()),
                },
                // Added by a later chained plugin.
                RouteEntry {
                    dst: "10.244.0.0/16".parse().unwrap(),
                    gw: Some("10.0.0.9".parse().unwrap()),
                },
            ],
        }
    }

    fn check_req(expected: Option<hostnic_agent_api::Expected>) -> CheckRequest {
        CheckRequest {
            key: AttachmentKey {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            netns: "/run/netns/c1".into(),
            expected,
        }
    }

    fn expected() -> hostnic_agent_api::Expected {
        hostnic_agent_api::Expected {
            mac: "52:54:aa:00:00:01".into(),
            address: "10.0.0.5/24".into(),
            mtu: Some(1450),
            routes: vec![
                Route {
                    dst: "0.0.0.0/0".into(),
                    gw: Some("10.0.0.1".into()),
                },
                Route {
                    dst: "10.96.0.0/12".into(),
                    gw: Some("0.0.0.0".into()),
                },
            ],
        }
    }

    #[test]
    fn check_compares_record_cached_result_and_kernel() {
        let n = bound_to("a", "c1", Some("hostnic"));
        let ok = observed_ok();
        assert_eq!(
            check_problems(&n, &check_req(Some(expected())), Some(&ok)).unwrap(),
            Vec::<String>::new()
        );
        // An older plugin sends no expectation: the record alone is checked.
        assert!(
            check_problems(&n, &check_req(None), Some(&ok))
                .unwrap()
                .is_empty()
        );
        let att = checked_attachment(&n, &check_req(None), &ok).unwrap();
        assert_eq!((att.address.as_str(), att.mtu), ("10.0.0.5/24", 1450));

        let problems = |e: hostnic_agent_api::Expected, o: &Observed| {
            check_problems(&n, &check_req(Some(e)), Some(o))
                .unwrap()
                .join("; ")
        };
        let mut e = expected();
        e.address = "10.0.0.6/24".into();
        assert!(problems(e, &ok).contains("10.0.0.6/24"));
        let mut e = expected();
        e.mtu = Some(9000);
        assert!(problems(e, &ok).contains("MTU 1450, expected 9000"));
        let mut e = expected();
        e.routes.push(Route {
            dst: "10.200.0.0/16".into(),
            gw: Some("10.0.0.1".into()),
        });
        assert!(problems(e, &ok).contains("route 10.200.0.0/16 via 10.0.0.1 missing"));
        let mut gone = ok.clone();
        gone.routes.remove(1);
        assert!(problems(expected(), &gone).contains("10.96.0.0/12"));
        let mut down = ok.clone();
        down.up = false;
        down.addresses.clear();
        let p = problems(expected(), &down);
        assert!(
            p.contains("down") && p.contains("address 10.0.0.5/24 missing"),
            "{p}"
        );
        let p = check_problems(&n, &check_req(Some(expected())), None).unwrap();
        assert_eq!(p, ["no interface eth0 in the pod netns"]);
    }

    #[test]
    fn attach_spec_routes_via_the_node_or_the_vxnet_gateway_with_the_vxnet_prefix() {
        let n = nic("a", "p", HostNicPhase::Available);
        let extra = vec![
            Route {
                dst: "192.168.0.0/16".into(),
                gw: None,
            },
            Route {
                dst: "10.96.0.0/12".into(),
                gw: Some("0.0.0.0".into()),
            },
        ];
        let spec = attach_spec(&n, &[pool("p", false)], "eth0", Some(1450), &extra).unwrap();
        assert_eq!(spec.mac, "52:54:aa:00:00:01");
        assert_eq!(spec.address.to_string(), "10.0.0.5/24");
        let vxnet_gw = RouteEntry {
            dst: "192.168.0.0/16".parse().unwrap(),
            gw: Some("10.0.0.1".parse().unwrap()),
        };
        assert_eq!(spec.routes, vec![vxnet_gw.clone()]);
        // The pool's and the request's route via the node, once.
        assert_eq!(spec.via_node, vec!["10.96.0.0/12".parse().unwrap()]);
        let spec = spec.via("10.0.0.254".parse().unwrap());
        assert!(spec.via_node.is_empty());
        assert_eq!(
            spec.routes,
            vec![
                vxnet_gw,
                RouteEntry {
                    dst: "10.96.0.0/12".parse().unwrap(),
                    gw: Some("10.0.0.254".parse().unwrap())
                },
            ]
        );
        let att = attachment(&n, &spec, "/run/netns/x", 1450);
        assert_eq!(att.routes[0].dst, "0.0.0.0/0");
        assert_eq!(att.routes.len(), 3);
    }

    #[test]
    fn the_node_address_is_the_nodes_own_in_the_pods_subnet() {
        let pod: Ipv4Net = "10.0.0.5/24".parse().unwrap();
        let addrs =
            |list: &[&str]| -> Vec<Ipv4Net> { list.iter().map(|a| a.parse().unwrap()).collect() };
        assert_eq!(
            node_address(
                pod,
                addrs(&["192.168.1.2/24", "10.0.0.9/24", "10.0.0.7/24"])
            ),
            Some("10.0.0.7".parse().unwrap()),
            "the lowest of the node's addresses in the subnet"
        );
        // Other subnets, and the pod's own address (a link on its way), are not the node's.
        assert_eq!(
            node_address(pod, addrs(&["10.0.1.2/24", "10.0.0.5/24"])),
            None
        );
    }

    #[test]
    fn interface_names_are_checked_like_the_kernel_does() {
        for bad in ["", "a/b", "a:b", "has space", "sixteen_chars_xx", ".", ".."] {
            let key = AttachmentKey {
                container_id: "c".into(),
                ifname: bad.into(),
            };
            assert!(validate_key(&key).is_err(), "{bad:?}");
        }
        let ok = AttachmentKey {
            container_id: "c".into(),
            ifname: "eth0".into(),
        };
        validate_key(&ok).unwrap();
        assert!(validate_netns("relative/path").is_err());
    }

    #[test]
    fn link_report_changes_only_when_needed() {
        let n = nic("a", "p", HostNicPhase::Available);
        let now = jiff::Timestamp::now();
        let ready = report_link(&n, Some("eth9"), now).unwrap();
        assert!(report_link(&ready, Some("eth9"), now).is_none());
        let missing = report_link(&ready, None, now).unwrap();
        let st = missing.status.unwrap();
        assert_eq!(st.host_interface, None);
        assert_eq!(st.conditions[0].reason, LINK_MISSING);
    }

    #[test]
    fn free_nics_rest_bound_nics_are_left_alone_gateways_get_their_address() {
        assert_eq!(
            node_action(&nic("a", "p", HostNicPhase::Available)),
            Some(NodeAction::Rest)
        );
        assert_eq!(node_action(&nic("a", "p", HostNicPhase::Bound)), None);
        assert_eq!(
            node_action(&nic("a", "p", HostNicPhase::Detaching)),
            Some(NodeAction::Look)
        );
        let mut gw = (*nic("g", "p", HostNicPhase::Available)).clone();
        gw.spec.role = NicRole::Gateway;
        assert_eq!(
            node_action(&gw),
            Some(NodeAction::Gateway("10.0.0.5/24".parse().unwrap()))
        );
    }

    #[test]
    fn link_ready_is_false_while_bound_and_true_again_only_on_a_release_with_the_link_home() {
        let ready = |n: &HostNic| {
            n.status
                .as_ref()
                .unwrap()
                .conditions
                .iter()
                .find(|c| c.type_ == LINK_READY)
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        let now = jiff::Timestamp::now();
        let free = report_link(&nic("a", "p", HostNicPhase::Available), Some("eth9"), now).unwrap();
        let b = bind(&free, PodRef::default());
        assert_eq!(ready(&b), Some(("False".into(), LINK_IN_POD.into())));
        let r = release(&b, now, Some("eth9".into()));
        assert_eq!(ready(&r), Some(("True".into(), LINK_PRESENT.into())));
        assert_eq!(
            r.status.as_ref().unwrap().host_interface.as_deref(),
            Some("eth9")
        );
        // The link pass then has nothing to change.
        assert!(report_link(&r, Some("eth9"), now).is_none());
    }

    #[test]
    fn bind_and_release_set_phase_pod_and_time() {
        let n = nic("a", "p", HostNicPhase::Available);
        let pod = PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: None,
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            interface: "eth0".into(),
            network: Some("hostnic".into()),
        };
        let b = bind(&n, pod.clone());
        let key = AttachmentKey {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        assert!(is_bound_to(&b, &key));
        let r = release(&b, jiff::Timestamp::now(), None);
        assert!(!is_bound_to(&r, &key));
        assert_eq!(r.status.as_ref().unwrap().pod, Some(pod));
        assert!(r.status.unwrap().released_at.is_some());
    }
}
