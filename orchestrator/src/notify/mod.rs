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
    use std::sync::Arc;

    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;
    use crate::engine::{Engine, EngineOptions, InProcessExecutor, MemoryCatalog};

    /// Runs a pipeline on an engine with notifications; returns what it handed over, in order.
    async fn notifications(pipeline: serde_json::Value) -> Vec<Notification> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let executor = InProcessExecutor::with_test_algorithms();
        let catalog = MemoryCatalog::new();
        for name in ["echo", "fail"] {
            let algorithm = json!({"name": name, "algorithmImage": format!("hkube/{name}")});
            catalog.put_algorithm(crate::spec::parse_algorithm(algorithm).unwrap());
        }
        let engine = Engine::new(
            EngineOptions::default(),
            Arc::new(executor),
            Arc::new(catalog),
        )
        .with_notifications(tx);
        let handle = engine.handle();
        tokio::spawn(engine.run());
        let job = handle.exec_raw(pipeline).await.unwrap();
        handle.wait(&job).await.unwrap();
        handle.shutdown().await;
        let mut seen = Vec::new();
        while let Some(n) = rx.recv().await {
            seen.push(n);
        }
        seen
    }

    fn pipeline(algorithm: &str, verbosity: Option<&str>) -> serde_json::Value {
        let mut pipeline = json!({
            "name": "p",
            "flowInput": {"x": [1, 2, 3]},
            "nodes": [{"nodeName": "A", "algorithmName": algorithm, "input": ["#@flowInput.x"]}],
            "webhooks": {"progress": "http://127.0.0.1:9/p", "result": "http://127.0.0.1:9/r"},
        });
        if let Some(level) = verbosity {
            pipeline["options"] = json!({"progressVerbosityLevel": level});
        }
        pipeline
    }

    fn statuses(seen: &[Notification]) -> Vec<(&'static str, String)> {
        seen.iter()
            .map(|n| {
                (
                    n.kind.as_str(),
                    n.body["status"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn the_engine_notifies_status_changes_then_the_result() {
        let seen = notifications(pipeline("echo", None)).await;
        let expected = [
            ("progress", "pending"),
            ("progress", "active"),
            ("progress", "completed"),
            ("result", "completed"),
        ];
        let expected: Vec<(&str, String)> =
            expected.iter().map(|(k, s)| (*k, s.to_string())).collect();
        assert_eq!(statuses(&seen), expected);
        assert_eq!(seen[3].url, "http://127.0.0.1:9/r");
        assert_eq!(seen[3].body["data"][0]["result"], json!([1]));
    }

    #[tokio::test]
    async fn debug_verbosity_adds_each_progress_change_and_a_failure_is_sent() {
        let seen = notifications(pipeline("echo", Some("debug"))).await;
        let progress = seen.iter().filter(|n| n.kind == Kind::Progress).count();
        assert!(
            progress > 3,
            "task progress at debug: {:?}",
            statuses(&seen)
        );
        let seen = notifications(pipeline("fail", None)).await;
        let last_progress = seen
            .iter()
            .rev()
            .find(|n| n.kind == Kind::Progress)
            .unwrap();
        assert_eq!(last_progress.body["status"], "failed");
        assert_eq!(last_progress.body["level"], "error");
        let seen = notifications(pipeline("echo", Some("error"))).await;
        assert_eq!(
            statuses(&seen),
            [("result", "completed".to_string())],
            "nothing below error"
        );
    }

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
