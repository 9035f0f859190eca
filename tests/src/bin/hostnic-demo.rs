//! `hostnic-demo`: the whole system on this machine in one command (the README's first one).
//! Simulated QingCloud, in-memory Kubernetes API, real kernel, real CNI runtime (libcni).

use std::process::ExitCode;

use hostnic_tests::scenario::{self, Printer};

fn main() -> ExitCode {
    hostnic_tests::interrupt::install();
    println!("hostnic local demo: simulated QingCloud + in-memory Kubernetes API + real netns");
    let missing = scenario::missing_prerequisites();
    if !missing.is_empty() {
        eprintln!("cannot run the demo:");
        for m in &missing {
            eprintln!("  - {m}");
        }
        return ExitCode::from(2);
    }
    match scenario::run(&mut Printer::default()) {
        Ok(()) => {
            println!("\ndemo OK: every step worked and nothing was left behind");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
