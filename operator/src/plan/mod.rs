//! Pure decisions: given what was observed (Kubernetes objects, cloud facts, the time), what a
//! pool should do on each node and which lifecycle step a HostNic takes next. No I/O here, so
//! every branch is unit-tested.

pub mod conditions;
pub mod nic;
pub mod pool;
pub mod status;
