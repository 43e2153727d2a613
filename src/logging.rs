//! Logging setup: `tracing-subscriber` with an env filter read from
//! `RLSD_LOG`, then `RUST_LOG`, defaulting to `info`.
//!
//! Colours only on a terminal: piped or redirected stderr (and `NO_COLOR`)
//! gets plain text with no escape codes. While `rlsd train` shows a progress
//! bar ([`set_progress_bar`]), log lines are printed above the bar.

use indicatif::ProgressBar;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use tracing_subscriber::EnvFilter;

/// The progress bar log lines must not draw through, if one is up.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Install the global subscriber. Safe to call twice (the second is a no-op).
pub fn init() {
    let filter = std::env::var("RLSD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(|| LogWriter)
        .with_ansi(use_colour(std::io::stderr().is_terminal()))
        .with_target(false)
        .try_init();
}

/// Whether to colour output going to a stream: only a terminal, and never
/// with `NO_COLOR` set (https://no-color.org).
pub fn use_colour(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Route log lines around `bar` (or, with `None`, straight to stderr again).
pub fn set_progress_bar(bar: Option<ProgressBar>) {
    if let Ok(mut slot) = BAR.lock() {
        *slot = bar;
    }
}

/// stderr, suspending the progress bar while a line is written.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
