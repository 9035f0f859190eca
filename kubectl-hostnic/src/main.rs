//! `kubectl-hostnic`: the kubectl plugin's entry point (see the library for the commands).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = kubectl_hostnic::args::Args::parse();
    match kubectl_hostnic::run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
