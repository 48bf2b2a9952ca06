//! Notifications of jobs to the outside: a pipeline's `webhooks.progress` and
//! `webhooks.result` (reference §1.4, §3.10).
//!
//! The engine decides what to send ([`Notification`], in its loop, without waiting) and
//! [`webhooks`] delivers it: HTTP POSTs with retries, a record of each delivery. A receiver
//! that fails or hangs never holds up or fails a job.

pub mod webhooks;

pub use webhooks::{WebhookOptions, Webhooks};

use serde_json::Value;

use crate::spec::Level;

/// Which webhook of a pipeline a notification is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Progress,
    Result,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Progress => "progress",
            Kind::Result => "result",
        }
    }
}

/// One POST the engine asks for: `body` to `url`, about job `job_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub kind: Kind,
    pub job_id: String,
    pub url: String,
    pub body: Value,
}

fn rank(level: Level) -> u8 {
    match level {
        Level::Trace => 0,
        Level::Debug => 1,
        Level::Info => 2,
        Level::Warn => 3,
        Level::Error => 4,
        Level::Critical => 5,
    }
}

/// Whether a progress event of level `event` goes to a pipeline whose
/// `options.progressVerbosityLevel` is `verbosity`: events at that level and above, as HKube
/// documents it. HKube's code sends the levels at and *below* it (reference Q2), so its
/// default `info` drops a pipeline's failure; hkube does not reproduce that
/// (docs/semantics.md).
pub fn progress_wanted(event: Level, verbosity: Level) -> bool {
    rank(event) >= rank(verbosity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_keeps_the_level_and_above() {
        use Level::*;
        let cases = [
            (Debug, Info, false),
            (Info, Info, true),
            (Error, Info, true),
            (Debug, Trace, true),
            (Info, Error, false),
            (Critical, Critical, true),
        ];
        for (event, verbosity, wanted) in cases {
            assert_eq!(
                progress_wanted(event, verbosity),
                wanted,
                "{event:?} at {verbosity:?}"
            );
        }
    }
}
