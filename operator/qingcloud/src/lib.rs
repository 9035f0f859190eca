//! QingCloud IaaS API client: signing, typed NIC calls, retries and rate limiting.
//!
//! [`signer`] and [`wire`] are pure and shared with the simulator (`qingcloud-sim`), so both
//! sides of the protocol use one implementation of the signature and one set of wire types.

pub mod signer;
pub mod wire;
