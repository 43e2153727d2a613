//! Logging setup: `tracing-subscriber` with an env filter read from
//! `RLSD_LOG`, then `RUST_LOG`, defaulting to `info`.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Safe to call twice (the second is a no-op).
pub fn init() {
    let filter = std::env::var("RLSD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
