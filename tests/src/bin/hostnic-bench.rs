//! `hostnic-bench`: prints figures and writes them to a JSON file (default
//! `target/hostnic-bench.json`). Not a pass/fail test: timings vary with the machine.
//!
//! Short CI profile by default; `--full` for the README's figures (500 nodes in (d)).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hostnic_tests::bench::{self, Profile};
use serde_json::{Map, Value};

/// hostnic benchmarks: (a) CNI latency, (b) pool refill, (c) API calls per NIC, (d) scale.
#[derive(Parser, Debug)]
#[command(name = "hostnic-bench")]
struct Args {
    /// The full profile (300 CNI iterations, burst of 10, 500 nodes) instead of the CI one.
    #[arg(long)]
    full: bool,
    /// Which benchmarks to run (comma separated: a,b,c,d).
    #[arg(long, default_value = "a,b,c,d", value_delimiter = ',')]
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
            "b" => "b_refill",
            "c" => "c_calls_per_nic",
            "d" => "d_scale",
            other => {
                eprintln!("unknown benchmark {other:?} (a, b, c or d)");
                return ExitCode::from(2);
            }
        };
        eprintln!("running {key}...");
        let result = match key {
            "a_cni_latency" => bench::cni_latency(profile),
            "b_refill" => bench::refill(profile),
            "c_calls_per_nic" => bench::calls_per_nic(),
            _ => bench::scale(profile),
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
    if let Err(e) = std::fs::write(&args.out, text) {
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
