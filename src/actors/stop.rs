//! [`StopHandle`]: stop a run from code, the way SIGTERM stops it.
//!
//! ```no_run
//! # async fn demo(cfg: rlsd::config::RunConfig) -> rlsd::Result<()> {
//! use rlsd::actors::{Runtime, StopHandle};
//! let stop = StopHandle::new();
//! let in_callback = stop.clone();
//! let report = Runtime::builder(cfg)
//!     .stop_handle(stop)
//!     .on_step(move |s| {
//!         if s.accuracy > 0.9 {
//!             in_callback.stop("accuracy above 0.9");
//!         }
//!     })
//!     .run()
//!     .await?;
//! assert!(!report.failed); // a requested stop is a clean end
//! # Ok(()) }
//! ```

use tokio::sync::watch;

/// Asks a running [`super::Runtime`] to stop cleanly: finish the step being
/// trained, drop the ones planned after it, write a final checkpoint of the
/// last committed step, and return a report that is not `failed`, exactly
/// as the first SIGTERM does (`RuntimeBuilder::handle_ctrl_c`). Cheap to
/// clone; any clone stops the run, from any thread, before or during it.
/// Only the first request counts (unlike a second signal, a second `stop`
/// never exits the process).
#[derive(Debug, Clone)]
pub struct StopHandle {
    /// The first stop request's reason; `None` until then.
    reason: watch::Sender<Option<String>>,
}

impl Default for StopHandle {
    fn default() -> Self {
        StopHandle::new()
    }
}

impl StopHandle {
    /// A handle no one has used yet.
    pub fn new() -> StopHandle {
        StopHandle {
            reason: watch::Sender::new(None),
        }
    }

    /// Ask the run to stop; `reason` becomes the report's
    /// (`stopped: <reason>`). Later calls are ignored.
    pub fn stop(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.reason.send_if_modified(|r| {
            if r.is_some() {
                return false;
            }
            *r = Some(reason);
            true
        });
    }

    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.reason.borrow().is_some()
    }

    /// The first stop request's reason, if there was one.
    pub fn reason(&self) -> Option<String> {
        self.reason.borrow().clone()
    }

    /// Wait until a stop is asked for (at once if it already was); returns its reason.
    pub async fn stopped(&self) -> String {
        let mut rx = self.reason.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone(),
            // The sender lives in `self`, so the channel cannot close.
            Err(_) => None,
        };
        match reason {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_wins_and_waiting_after_it_returns_at_once() {
        let h = StopHandle::new();
        assert!(!h.is_stopped());
        let clone = h.clone();
        clone.stop("first");
        h.stop("second");
        assert!(h.is_stopped());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(h.stopped()), "first");
    }

    #[test]
    fn a_waiter_wakes_when_another_thread_stops() {
        let h = StopHandle::new();
        let other = h.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            other.stop("from a thread");
        });
        assert_eq!(rt.block_on(h.stopped()), "from a thread");
        t.join().unwrap();
    }
}
