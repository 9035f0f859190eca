//! End-to-end tests, the local demo and benchmarks of hostnic.
