//! Structured JSON logs on stderr, filtered by `RUST_LOG` or the `--log` flag.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (once; later calls are ignored, as tests call it repeatedly).
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
