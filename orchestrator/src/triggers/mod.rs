//! Triggers that start jobs on their own: the cron schedules of stored pipelines
//! (`triggers.cron`, reference §1.5). Pipeline triggers (`triggers.pipelines`) are the
//! engine's, as they follow a job's end.
//!
//! [`cron`] is the pure schedule logic; [`CronService`] is the one timer task that reads the
//! stored pipelines, sleeps until the next match and starts the due jobs through the engine's
//! [`Handle`]. It re-reads the store when told to ([`CronHandle::reload`]: the API does after
//! every write to stored pipelines), so enabling, disabling or changing a pattern takes effect
//! at once; a restart reads them again, as they live in the store.

pub mod cron;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;

use crate::engine::{now_ms, ExecRequest, Handle};
use crate::store::Store;

/// The key under which a stored pipeline with an enabled cron shows its next fire time (ms
/// since the epoch) in `GET /store/pipelines`; dropped when a pipeline is stored.
pub const NEXT_RUN_KEY: &str = "cronNextRun";

/// The longest the timer sleeps at once, so a change of the wall clock (a suspended machine,
/// a clock set back) is noticed within this time.
const LONGEST_SLEEP: Duration = Duration::from_secs(60);

/// A cheap handle on the cron service.
#[derive(Debug, Clone)]
pub struct CronHandle {
    wake: Arc<Notify>,
}

impl CronHandle {
    /// The stored pipelines changed: read them again.
    pub fn reload(&self) {
        // A permit is kept when the service is busy starting jobs, so no change is missed.
        self.wake.notify_one();
    }
}

/// The cron timer task.
pub struct CronService {
    store: Arc<dyn Store>,
    engine: Handle,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for CronService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronService").finish_non_exhaustive()
    }
}

impl CronService {
    /// Starts the service on the current tokio runtime.
    pub fn spawn(store: Arc<dyn Store>, engine: Handle) -> CronHandle {
        let wake = Arc::new(Notify::new());
        let service = CronService {
            store,
            engine,
            wake: wake.clone(),
        };
        tokio::spawn(service.run());
        CronHandle { wake }
    }

    /// The enabled crons of the stored pipelines, as (name, pattern).
    async fn enabled(&self) -> Vec<(String, String)> {
        let store = self.store.clone();
        let pipelines = match tokio::task::spawn_blocking(move || store.pipelines()).await {
            Ok(Ok(pipelines)) => pipelines,
            Ok(Err(error)) => {
                eprintln!("hkube: cron: the stored pipelines could not be read: {error}");
                return Vec::new();
            }
            Err(_) => return Vec::new(),
        };
        pipelines
            .into_iter()
            .filter_map(|p| {
                let cron = p.triggers?.cron?;
                cron.enabled.then_some((p.name, cron.pattern))
            })
            .collect()
    }

    async fn run(self) {
        let mut table = cron::Table::default();
        loop {
            let crons = self.enabled().await;
            for (name, error) in table.reload(crons, now_ms()) {
                eprintln!("hkube: pipeline {name}: its cron trigger is not scheduled: {error}");
            }
            loop {
                let now = now_ms();
                for name in table.take_due(now) {
                    let request = ExecRequest::Cron(json!({ "name": name }));
                    match self.engine.exec(request).await {
                        Ok(job_id) => {
                            eprintln!("hkube: cron of pipeline {name} started job {job_id}")
                        }
                        // The engine has stopped: so does the server.
                        Err(crate::engine::Error::Closed) => return,
                        Err(error) => {
                            eprintln!(
                                "hkube: cron of pipeline {name} could not start a job: {error}"
                            )
                        }
                    }
                }
                let wait = table
                    .next_due()
                    .map_or(LONGEST_SLEEP, |due| {
                        Duration::from_millis(due.saturating_sub(now_ms()))
                    })
                    .min(LONGEST_SLEEP);
                tokio::select! {
                    _ = self.wake.notified() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
