//! QingCloud IaaS API client: signing, typed NIC calls, retries and rate limiting.
