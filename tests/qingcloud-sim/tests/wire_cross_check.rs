//! The cross-check the independent wire exists for: every response the simulator writes from
//! its own reading of the reference is decoded with the client crate's wire types and encoded
//! again; the two JSON documents must be equal. The client tolerates absent fields (it decodes
//! them as defaults), so a field the two sides name differently would otherwise go unseen:
//! here it shows up as a missing key on one side and an extra one on the other.

mod common;

use common::Api;
use qingcloud::wire::{
    CreateNicsResponse, DescribeInstancesResponse, DescribeJobsResponse, DescribeNicsResponse,
    DescribeVxnetsResponse, Empty, Envelope, JobResponse,
};
use qingcloud_sim::{InstanceSpec, JobLatency, Latency, Simulator, VxnetSpec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const VX: &str = "vxnet-pods001";
const NODE: &str = "i-node0001";

/// `raw` through the client's `T` and back.
fn through_client<T: DeserializeOwned + Serialize>(raw: &Value) -> Value {
    let decoded: Envelope<T> = serde_json::from_value(raw.clone()).expect("client decodes it");
    serde_json::to_value(decoded).expect("client encodes it")
}

fn assert_same<T: DeserializeOwned + Serialize>(what: &str, raw: Value) {
    assert_eq!(
        through_client::<T>(&raw),
        raw,
        "{what}: simulator vs client"
    );
}

#[tokio::test]
async fn every_response_reads_the_same_to_the_client() {
    let sim = Simulator::builder()
        .vxnet(VxnetSpec::new(VX, "172.22.0.0/24".parse().unwrap()))
        .vxnet(VxnetSpec::new("vxnet-novpc01", "172.24.0.0/24".parse().unwrap()).outside_vpc())
        .instance(InstanceSpec::new(NODE))
        .job_latency(JobLatency {
            pending: Latency::FixedMs(5),
            working: Latency::FixedMs(5),
        })
        .start()
        .await
        .unwrap();
    let api = Api::new(&sim);

    let created = api
        .ok(
            "CreateNics",
            &[("vxnet", VX), ("count", "3"), ("nic_name", "x")],
        )
        .await;
    assert_same::<CreateNicsResponse>("CreateNics", created.clone());
    let nics: Vec<String> = created["nics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["nic_id"].as_str().unwrap().to_owned())
        .collect();
    let attach = api
        .ok(
            "AttachNics",
            &[
                ("instance", NODE),
                ("nics.1", &nics[0]),
                ("nics.2", &nics[1]),
            ],
        )
        .await;
    assert_same::<JobResponse>("AttachNics", attach.clone());
    let job = attach["job_id"].as_str().unwrap().to_owned();
    assert_eq!(api.wait_job(&job).await, "successful");

    // In use, available and primary NICs; jobs; both kinds of vxnet; an instance with NICs.
    assert_same::<DescribeNicsResponse>("DescribeNics", api.ok("DescribeNics", &[]).await);
    assert_same::<DescribeJobsResponse>("DescribeJobs", api.ok("DescribeJobs", &[]).await);
    for verbose in ["0", "1"] {
        assert_same::<DescribeVxnetsResponse>(
            "DescribeVxnets",
            api.ok("DescribeVxnets", &[("verbose", verbose)]).await,
        );
    }
    assert_same::<DescribeInstancesResponse>(
        "DescribeInstances",
        api.ok("DescribeInstances", &[]).await,
    );
    assert_same::<Empty>(
        "DeleteNics",
        api.ok("DeleteNics", &[("nics.1", &nics[2])]).await,
    );
    let error = api.get("DeleteNics", &[("nics.1", &nics[2])]).await.json();
    assert_eq!(error["ret_code"], 2100);
    assert_same::<Empty>("an error", error);
    sim.shutdown().await;
}
