//! An in-process cloud for tests: NICs, instances, vxnets and jobs with a fixed latency, call
//! counts per action, and injectable failures. It lets reconcile logic be tested without a
//! network; the simulator (through the real client) covers the wire protocol.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;
use tokio::sync::Notify;

use super::{
    CloudApi, CloudError, CloudResult, CreatedNic, Instance, InstanceNic, Job, JobState, Nic,
    NicQuery, NicState, Priority, Vxnet,
};

#[derive(Debug, Default)]
struct State {
    nics: BTreeMap<String, Nic>,
    instances: BTreeMap<String, Instance>,
    vxnets: BTreeMap<String, (Vxnet, u32)>,
    jobs: BTreeMap<String, FakeJob>,
    calls: BTreeMap<&'static str, u64>,
    faults: HashMap<&'static str, VecDeque<i64>>,
    seq: u64,
    fail_jobs: u32,
    /// Most NICs per AttachNics/DetachNics (more: 1100), as the realistic simulator.
    batch_limit: Option<usize>,
}

#[derive(Debug)]
struct FakeJob {
    job: Job,
    done_at: Timestamp,
    /// What to do on completion: attach to an instance (Some) or detach (None).
    attach_to: Option<String>,
    fail: bool,
}

/// The fake cloud.
#[derive(Debug)]
pub struct FakeCloud {
    state: Mutex<State>,
    job_latency: Duration,
}

impl FakeCloud {
    /// A cloud whose jobs take `job_latency`.
    pub fn new(job_latency: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            job_latency,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a vxnet with `capacity` addresses in 10.<n>.0.0/24.
    pub fn add_vxnet(&self, id: &str, capacity: u32) {
        let mut s = self.lock();
        let n = s.vxnets.len() + 1;
        s.vxnets.insert(
            id.to_string(),
            (
                Vxnet {
                    id: id.to_string(),
                    available_ips: capacity,
                    cidr: Some(format!("10.{n}.0.0/16")),
                    gateway: Some(format!("10.{n}.0.1")),
                },
                0,
            ),
        );
    }

    /// Adds a running instance with a primary NIC in `vxnet`.
    pub fn add_instance(&self, id: &str, vxnet: &str) {
        let mut s = self.lock();
        s.seq += 1;
        let mac = mac(s.seq);
        let ip = format!("10.250.0.{}", s.seq % 250);
        s.instances.insert(
            id.to_string(),
            Instance {
                id: id.to_string(),
                running: true,
                nics: vec![InstanceNic {
                    nic_id: mac,
                    vxnet: vxnet.to_string(),
                    private_ip: Some(ip),
                    primary: true,
                }],
            },
        );
    }

    /// Makes the next calls of `action` fail with these ret_codes, in order.
    pub fn inject(&self, action: &'static str, codes: &[i64]) {
        self.lock().faults.entry(action).or_default().extend(codes);
    }

    /// Refuses Attach/DetachNics of more than `limit` NICs with 1100.
    pub fn limit_batches(&self, limit: usize) {
        self.lock().batch_limit = Some(limit);
    }

    /// Refuses a job call naming more NICs than the batch limit.
    fn check_size(&self, action: &'static str, nics: &[String]) -> CloudResult<()> {
        match self.lock().batch_limit {
            Some(l) if nics.len() > l => Err(CloudError::from_code(
                action,
                1100,
                format!("InvalidParameter, nics: at most {l} NICs per request"),
            )),
            _ => Ok(()),
        }
    }

    /// Makes the next attach job fail.
    pub fn fail_next_job(&self) {
        self.lock().fail_jobs += 1;
    }

    /// Calls per action so far.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.lock().calls.clone()
    }

    /// Every NIC in the cloud.
    pub fn nics(&self) -> Vec<Nic> {
        self.advance();
        self.lock().nics.values().cloned().collect()
    }

    fn enter(&self, action: &'static str) -> CloudResult<()> {
        self.advance();
        let mut s = self.lock();
        *s.calls.entry(action).or_default() += 1;
        if let Some(code) = s.faults.get_mut(action).and_then(VecDeque::pop_front) {
            return Err(CloudError::from_code(action, code, "injected"));
        }
        Ok(())
    }

    /// Completes due jobs.
    fn advance(&self) {
        let now = Timestamp::now();
        let mut s = self.lock();
        let due: Vec<String> = s
            .jobs
            .iter()
            .filter(|(_, j)| j.job.state == JobState::Running && j.done_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(job) = s.jobs.get_mut(&id) else {
                continue;
            };
            if job.fail {
                job.job.state = JobState::Failed;
                continue;
            }
            job.job.state = JobState::Succeeded;
            let (nics, attach_to) = (job.job.nics.clone(), job.attach_to.clone());
            for nic_id in nics {
                let Some(nic) = s.nics.get_mut(&nic_id) else {
                    continue;
                };
                let vxnet = nic.vxnet.clone();
                let ip = nic.private_ip.clone();
                let previous = nic.instance.take();
                match &attach_to {
                    Some(i) => {
                        nic.state = NicState::InUse;
                        nic.instance = Some(i.clone());
                        if let Some(inst) = s.instances.get_mut(i) {
                            inst.nics.push(InstanceNic {
                                nic_id: nic_id.clone(),
                                vxnet,
                                private_ip: ip,
                                primary: false,
                            });
                        }
                    }
                    None => {
                        nic.state = NicState::Available;
                        if let Some(inst) = previous.and_then(|p| s.instances.get_mut(&p)) {
                            inst.nics.retain(|n| n.nic_id != nic_id);
                        }
                    }
                }
            }
        }
    }

    fn start_job(
        &self,
        s: &mut State,
        action: &str,
        nics: Vec<String>,
        attach_to: Option<String>,
    ) -> String {
        s.seq += 1;
        let id = format!("j-{:08x}", s.seq);
        let fail = attach_to.is_some() && s.fail_jobs > 0;
        if fail {
            s.fail_jobs -= 1;
        }
        s.jobs.insert(
            id.clone(),
            FakeJob {
                job: Job {
                    id: id.clone(),
                    action: action.to_string(),
                    state: JobState::Running,
                    nics,
                    created: Some(Timestamp::now()),
                },
                done_at: Timestamp::now() + self.job_latency,
                attach_to,
                fail,
            },
        );
        id
    }
}

fn mac(n: u64) -> String {
    let b = n.to_be_bytes();
    format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", b[4], b[5], b[6], b[7])
}

impl CloudApi for FakeCloud {
    fn lost_answers(&self) -> Option<Arc<Notify>> {
        None
    }

    fn describe_nics(&self, query: NicQuery, _: Priority) -> BoxFuture<'_, CloudResult<Vec<Nic>>> {
        Box::pin(async move {
            self.enter("DescribeNics")?;
            let s = self.lock();
            Ok(s.nics
                .values()
                .filter(|n| match &query {
                    NicQuery::Ids(ids) => ids.contains(&n.id),
                    NicQuery::Name(name) => &n.name == name,
                    NicQuery::Vxnets(ids) => ids.contains(&n.vxnet),
                    NicQuery::All => true,
                })
                .cloned()
                .collect())
        })
    }

    fn create_nics(
        &self,
        vxnet: String,
        name: String,
        count: u32,
        _: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<CreatedNic>>> {
        Box::pin(async move {
            self.enter("CreateNics")?;
            let mut s = self.lock();
            let Some((v, _)) = s.vxnets.get(&vxnet) else {
                return Err(CloudError::from_code("CreateNics", 2100, "no such vxnet"));
            };
            // All or nothing, as the API: a count the vxnet cannot hold creates none.
            if v.available_ips < count {
                return Err(CloudError::from_code("CreateNics", 5200, "vxnet exhausted"));
            }
            let mut created = Vec::new();
            for _ in 0..count {
                s.seq += 1;
                let seq = s.seq;
                let Some((v, used)) = s.vxnets.get_mut(&vxnet) else {
                    break;
                };
                v.available_ips -= 1;
                *used += 1;
                let prefix = v.cidr.clone().unwrap_or_default();
                let base = prefix.split('.').take(2).collect::<Vec<_>>().join(".");
                let ip = format!("{base}.{}.{}", (*used / 250) + 1, (*used % 250) + 2);
                let id = mac(seq);
                s.nics.insert(
                    id.clone(),
                    Nic {
                        id: id.clone(),
                        name: name.clone(),
                        state: NicState::Available,
                        instance: None,
                        vxnet: vxnet.clone(),
                        private_ip: Some(ip.clone()),
                        created: Some(Timestamp::now()),
                    },
                );
                created.push(CreatedNic {
                    id,
                    private_ip: Some(ip),
                });
            }
            Ok(created)
        })
    }

    fn attach_nics(
        &self,
        instance: String,
        nics: Vec<String>,
        _: Priority,
    ) -> BoxFuture<'_, CloudResult<String>> {
        Box::pin(async move {
            self.enter("AttachNics")?;
            self.check_size("AttachNics", &nics)?;
            let mut s = self.lock();
            let Some(inst) = s.instances.get(&instance) else {
                return Err(CloudError::from_code(
                    "AttachNics",
                    2100,
                    format!("resource [{instance}] not found"),
                ));
            };
            if inst.nics.len() + nics.len() > 64 {
                return Err(CloudError::from_code(
                    "AttachNics",
                    1400,
                    format!("instance [{instance}] is full"),
                ));
            }
            let busy: Vec<&String> = s
                .jobs
                .values()
                .filter(|j| j.job.state == JobState::Running)
                .flat_map(|j| j.job.nics.iter())
                .collect();
            for n in &nics {
                match s.nics.get(n) {
                    None => {
                        return Err(CloudError::from_code(
                            "AttachNics",
                            2100,
                            format!("resource [{n}] not found"),
                        ));
                    }
                    Some(nic) if nic.state != NicState::Available || busy.contains(&n) => {
                        return Err(CloudError::from_code(
                            "AttachNics",
                            1400,
                            format!("nic [{n}] is not available"),
                        ));
                    }
                    Some(_) => {}
                }
            }
            Ok(self.start_job(&mut s, "AttachNics", nics, Some(instance)))
        })
    }

    fn detach_nics(&self, nics: Vec<String>, _: Priority) -> BoxFuture<'_, CloudResult<String>> {
        Box::pin(async move {
            self.enter("DetachNics")?;
            self.check_size("DetachNics", &nics)?;
            let mut s = self.lock();
            for n in &nics {
                match s.nics.get(n) {
                    None => {
                        return Err(CloudError::from_code(
                            "DetachNics",
                            2100,
                            format!("resource [{n}] not found"),
                        ));
                    }
                    Some(nic) if nic.state != NicState::InUse => {
                        return Err(CloudError::from_code(
                            "DetachNics",
                            1400,
                            format!("nic [{n}] is not in use"),
                        ));
                    }
                    Some(_) => {}
                }
            }
            Ok(self.start_job(&mut s, "DetachNics", nics, None))
        })
    }

    fn delete_nics(&self, nics: Vec<String>, _: Priority) -> BoxFuture<'_, CloudResult<()>> {
        Box::pin(async move {
            self.enter("DeleteNics")?;
            let mut s = self.lock();
            for n in &nics {
                match s.nics.get(n) {
                    None => {
                        return Err(CloudError::from_code(
                            "DeleteNics",
                            2100,
                            format!("resource [{n}] not found"),
                        ));
                    }
                    Some(nic) if nic.state != NicState::Available => {
                        return Err(CloudError::from_code(
                            "DeleteNics",
                            1400,
                            format!("nic [{n}] is in use"),
                        ));
                    }
                    Some(_) => {}
                }
            }
            for n in &nics {
                if let Some(nic) = s.nics.remove(n)
                    && let Some((v, _)) = s.vxnets.get_mut(&nic.vxnet)
                {
                    v.available_ips += 1;
                }
            }
            Ok(())
        })
    }

    fn rename_nic(&self, nic: String, name: String, _: Priority) -> BoxFuture<'_, CloudResult<()>> {
        Box::pin(async move {
            self.enter("ModifyNicAttributes")?;
            let mut s = self.lock();
            match s.nics.get_mut(&nic) {
                Some(n) => {
                    n.name = name;
                    Ok(())
                }
                None => Err(CloudError::from_code(
                    "ModifyNicAttributes",
                    2100,
                    "no such nic",
                )),
            }
        })
    }

    fn describe_jobs(&self, ids: Vec<String>, _: Priority) -> BoxFuture<'_, CloudResult<Vec<Job>>> {
        Box::pin(async move {
            self.enter("DescribeJobs")?;
            let s = self.lock();
            Ok(ids
                .iter()
                .filter_map(|id| s.jobs.get(id).map(|j| j.job.clone()))
                .collect())
        })
    }

    fn running_jobs(&self, _: Priority) -> BoxFuture<'_, CloudResult<Vec<Job>>> {
        Box::pin(async move {
            self.enter("DescribeJobs")?;
            let s = self.lock();
            Ok(s.jobs
                .values()
                .filter(|j| j.job.state == JobState::Running)
                .map(|j| j.job.clone())
                .collect())
        })
    }

    fn describe_vxnets(
        &self,
        ids: Vec<String>,
        _: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Vxnet>>> {
        Box::pin(async move {
            self.enter("DescribeVxnets")?;
            let s = self.lock();
            Ok(ids
                .iter()
                .filter_map(|id| s.vxnets.get(id).map(|(v, _)| v.clone()))
                .collect())
        })
    }

    fn describe_instances(
        &self,
        ids: Vec<String>,
        _: Priority,
    ) -> BoxFuture<'_, CloudResult<Vec<Instance>>> {
        Box::pin(async move {
            self.enter("DescribeInstances")?;
            let s = self.lock();
            Ok(ids
                .iter()
                .filter_map(|id| s.instances.get(id).cloned())
                .collect())
        })
    }
}
