//! Pure decisions on HostNics and NicPools: which NIC a claim takes, which pool a pod uses,
//! what the pod's interface must look like, how HostNic status changes. No I/O here.

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use hostnic_agent_api::{Attachment, AttachmentKey, ClaimRequest, Route};
use hostnic_crds::{HostNic, HostNicPhase, HostNicStatus, NicPool, NicRole, PodRef};
use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::attach::{AttachSpec, NodeAction};
use crate::netlink::RouteEntry;
use crate::{Error, Result};

/// Condition type the agent owns on HostNics: the NIC's link is (or is not) on the node.
pub const LINK_READY: &str = "LinkReady";

/// Reason of `LinkReady=False`.
pub const LINK_MISSING: &str = "LinkMissing";

/// Reason of `LinkReady=False` while the link is in its pod (set by the claim).
pub const LINK_IN_POD: &str = "InPod";

/// Reason of `LinkReady=True`: the link is on the node.
pub const LINK_PRESENT: &str = "LinkPresent";

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

/// Free NICs and NICs on their way (being created or attached, or resting after a release).
pub fn counts(nics: &[Arc<HostNic>]) -> (u32, u32) {
    let pod_nics = nics.iter().filter(|n| n.spec.role == NicRole::Pod);
    let (mut free, mut incoming) = (0, 0);
    for n in pod_nics {
        if is_free(n) {
            free += 1;
        } else if phase(n).is_incoming()
            || phase(n) == HostNicPhase::Released
            || phase(n) == HostNicPhase::Available
        {
            incoming += 1;
        }
    }
    (free, incoming)
}

/// The pool a pod's NIC comes from: the request's, else the pod's annotation, else the pool
/// annotated as default, else the only pool with NICs on this node.
pub fn choose_pool(
    requested: Option<&str>,
    annotation: Option<&str>,
    pools: &[Arc<NicPool>],
    nics: &[Arc<HostNic>],
) -> std::result::Result<String, String> {
    if let Some(p) = requested.or(annotation).filter(|p| !p.is_empty()) {
        return Ok(p.to_owned());
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

/// The node's address in `vxnet`, from the NicPools' status (the nic's own pool first).
fn node_gateway(pools: &[Arc<NicPool>], own: &str, node: &str, vxnet: &str) -> Option<Ipv4Addr> {
    let mut ordered: Vec<_> = pools.iter().filter(|p| p.name_any() == own).collect();
    ordered.extend(pools.iter().filter(|p| p.name_any() != own));
    ordered
        .into_iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.node_status.iter())
        .filter(|ns| ns.node == node)
        .flat_map(|ns| ns.gateways.iter())
        .find(|g| g.vxnet == vxnet)
        .and_then(|g| g.ip.parse().ok())
}

fn incomplete(nic: &HostNic, what: &str) -> Error {
    Error::IncompleteHostNic {
        name: nic.name_any(),
        what: what.into(),
    }
}

/// What the NIC must look like in the pod: its address with the vxnet prefix, the default route
/// via the vxnet gateway, then the pool's and the request's routes with `0.0.0.0` replaced by
/// the node's address in the vxnet and a missing gateway by the vxnet gateway.
pub fn attach_spec(
    nic: &HostNic,
    pools: &[Arc<NicPool>],
    node: &str,
    ifname: &str,
    mtu: Option<u32>,
    extra_routes: &[Route],
) -> Result<AttachSpec> {
    let st = status(nic).ok_or_else(|| incomplete(nic, "no status"))?;
    let mac = mac(nic).ok_or_else(|| incomplete(nic, "no nicId"))?;
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
    let gateway: Ipv4Addr = st
        .vxnet_gateway
        .as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| incomplete(nic, "no valid vxnetGateway"))?;
    let address = Ipv4Net::new(ip, cidr.prefix_len()).map_err(|_| incomplete(nic, "bad prefix"))?;

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
    for r in pool_routes.iter().chain(extra_routes) {
        let dst: Ipv4Net = r.dst.parse().map_err(|_| {
            Error::InvalidRequest(format!("route destination {:?} is not an IPv4 CIDR", r.dst))
        })?;
        let gw = match r.gw.as_deref() {
            None | Some("") => gateway,
            Some("0.0.0.0") => node_gateway(pools, &nic.spec.pool, node, &nic.spec.vxnet)
                .ok_or_else(|| {
                    incomplete(
                        nic,
                        &format!(
                            "no node gateway address for {} on {node} yet",
                            nic.spec.vxnet
                        ),
                    )
                })?,
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
    use hostnic_crds::{HostNicSpec, NicPoolSpec, NodeGateway, NodePoolStatus};

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
        p.status = Some(hostnic_crds::NicPoolStatus {
            node_status: vec![NodePoolStatus {
                node: "n1".into(),
                gateways: vec![NodeGateway {
                    vxnet: "vxnet-a".into(),
                    ip: "10.0.0.254".into(),
                    nic_id: "52:54:aa:00:00:ff".into(),
                    hostnic: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
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
    }

    #[test]
    fn pool_choice_follows_request_annotation_default_then_only_pool() {
        let nics = vec![nic("a", "p", HostNicPhase::Available)];
        let pools = vec![pool("p", false), pool("q", true)];
        assert_eq!(
            choose_pool(Some("x"), Some("y"), &pools, &nics).unwrap(),
            "x"
        );
        assert_eq!(choose_pool(None, Some("y"), &pools, &nics).unwrap(), "y");
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
    fn attach_spec_substitutes_the_node_gateway_and_the_vxnet_prefix() {
        let n = nic("a", "p", HostNicPhase::Available);
        let extra = vec![Route {
            dst: "192.168.0.0/16".into(),
            gw: None,
        }];
        let spec = attach_spec(&n, &[pool("p", false)], "n1", "eth0", Some(1450), &extra).unwrap();
        assert_eq!(spec.mac, "52:54:aa:00:00:01");
        assert_eq!(spec.address.to_string(), "10.0.0.5/24");
        assert_eq!(
            spec.routes,
            vec![
                RouteEntry {
                    dst: "10.96.0.0/12".parse().unwrap(),
                    gw: Some("10.0.0.254".parse().unwrap())
                },
                RouteEntry {
                    dst: "192.168.0.0/16".parse().unwrap(),
                    gw: Some("10.0.0.1".parse().unwrap())
                },
            ]
        );
        let att = attachment(&n, &spec, "/run/netns/x", 1450);
        assert_eq!(att.routes[0].dst, "0.0.0.0/0");
        assert_eq!(att.routes.len(), 3);
        // Another node has no gateway address published yet.
        assert!(matches!(
            attach_spec(&n, &[pool("p", false)], "n2", "eth0", None, &[]),
            Err(Error::IncompleteHostNic { .. })
        ));
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
