//! `hostnic-agent` binary (work in progress: the library holds the kernel side).

fn main() {}
