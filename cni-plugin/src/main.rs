//! `hostnic`: the CNI plugin kubelet's runtime executes. Dispatches on CNI_COMMAND (in
//! [`hostnic_cni::verbs`]); the result or the error JSON goes to stdout, logs elsewhere.

use std::io::{self, Read, Write};
use std::process::ExitCode;

use hostnic_cni::error::{CniError, Code};
use hostnic_cni::log::{Level, Logger};
use hostnic_cni::verbs::Invocation;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = io::stdin().read_to_end(&mut stdin);
    let env = |key: &str| std::env::var(key).ok();
    let invocation = Invocation {
        env: &env,
        stdin: &stdin,
    };
    let mut log = Logger::stderr();
    let outcome = match read {
        Ok(_) => invocation.run(&mut io::stdout().lock(), &mut log),
        Err(e) => Err(CniError::new(
            Code::Io,
            format!("cannot read the network config from stdin: {e}"),
        )),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log.log(Level::Error, &err.msg, &[("code", &err.code.number())]);
            let mut stdout = io::stdout().lock();
            let _ = writeln!(stdout, "{}", err.to_json(&invocation.error_version()));
            let _ = stdout.flush();
            ExitCode::FAILURE
        }
    }
}
