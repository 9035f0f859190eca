//! `hostnic-bench`: prints figures and writes them to a JSON file (default
//! `target/hostnic-bench.json`). Not a pass/fail test: timings vary with the machine.
//!
//! Short CI profile by default; `--full` for the README's figures (500 nodes in (d)).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hostnic_tests::bench::{self, Profile};
use serde_json::{Map, Value};

/// hostnic benchmarks: (a) CNI latency, (a2) concurrent ADDs, (a3) ADD on an empty pool,
/// (b) pool refill, (c) API calls per NIC, (d) scale, (e) idle calls, (f) churn calls.
#[derive(Parser, Debug)]
#[command(name = "hostnic-bench")]
struct Args {
    /// The full profile (300 CNI iterations, burst of 10, 500 nodes in (d) and (e), 10 minutes
    /// idle, 100 restarts over 10 nodes) instead of the CI one.
    #[arg(long)]
    full: bool,
    /// Which benchmarks to run (comma separated: a,a2,a3,b,c,d,e,f).
    #[arg(long, default_value = "a,a2,a3,b,c,d,e,f", value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the figures.
    #[arg(long, default_value = "target/hostnic-bench.json")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    hostnic_tests::interrupt::install();
    let missing = hostnic_tests::scenario::missing_prerequisites();
    if !missing.is_empty() {
        for m in &missing {
            eprintln!("  - {m}");
        }
        return ExitCode::from(2);
    }
    let profile = if args.full {
        Profile::FULL
    } else {
        Profile::CI
    };
    let mut figures = Map::new();
    figures.insert(
        "profile".into(),
        Value::from(if args.full { "full" } else { "ci" }),
    );
    let mut failed = false;
    for which in &args.only {
        let key = match which.as_str() {
            "a" => "a_cni_latency",
            "a2" => "a2_concurrent_adds",
            "a3" => "a3_empty_pool_add",
            "b" => "b_refill",
            "c" => "c_calls_per_nic",
            "d" => "d_scale",
            "e" => "e_idle_calls",
            "f" => "f_churn_calls",
            other => {
                eprintln!("unknown benchmark {other:?} (a, a2, a3, b, c, d, e or f)");
                return ExitCode::from(2);
            }
        };
        eprintln!("running {key}...");
        let result = match key {
            "a_cni_latency" => bench::cni_latency(profile),
            "a2_concurrent_adds" => bench::concurrent_adds(profile),
            "a3_empty_pool_add" => bench::empty_pool_add(),
            "b_refill" => bench::refill(profile),
            "c_calls_per_nic" => bench::calls_per_nic(),
            "d_scale" => bench::scale(profile),
            "e_idle_calls" => bench::idle(profile),
            _ => bench::churn(profile),
        };
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                failed = true;
                eprintln!("{key} FAILED: {e:#}");
                Value::String(format!("failed: {e:#}"))
            }
        };
        println!(
            "{key}: {}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        figures.insert(key.into(), value);
    }
    let text = serde_json::to_string_pretty(&Value::Object(figures)).unwrap_or_default();
    // The directory may not exist yet: with CARGO_TARGET_DIR elsewhere, `target/` is not made.
    let parent = args.out.parent().filter(|p| !p.as_os_str().is_empty());
    let written = parent
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&args.out, text));
    if let Err(e) = written {
        eprintln!("write {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    println!("figures written to {}", args.out.display());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
