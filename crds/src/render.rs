//! Renders the CRD YAML files committed under `crds/` from the Rust types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{HostNic, NicPool, formats};

/// A generated CRD manifest and the file name it is committed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdFile {
    /// File name inside `crds/`.
    pub file_name: &'static str,
    /// YAML text, with a header saying how it was made.
    pub yaml: String,
}

const HEADER: &str = "# Generated from the Rust types in crds/src by `cargo run -p hostnic-crds --bin crdgen -- crds`.\n# Do not edit: change the types and regenerate.\n";

/// The HostNic CRD as the API server gets it (only formats it recognises).
pub fn hostnic_crd() -> CustomResourceDefinition {
    formats::recognised(HostNic::crd())
}

/// The NicPool CRD as the API server gets it (only formats it recognises).
pub fn nicpool_crd() -> CustomResourceDefinition {
    formats::recognised(NicPool::crd())
}

/// Every CRD of the project, rendered as YAML.
pub fn crd_files() -> Result<Vec<CrdFile>, serde_saphyr::SerializeError> {
    Ok(vec![
        CrdFile {
            file_name: "hostnic.qingcloud.com_hostnics.yaml",
            yaml: format!("{HEADER}{}", serde_saphyr::to_string(&hostnic_crd())?),
        },
        CrdFile {
            file_name: "hostnic.qingcloud.com_nicpools.yaml",
            yaml: format!("{HEADER}{}", serde_saphyr::to_string(&nicpool_crd())?),
        },
    ])
}
