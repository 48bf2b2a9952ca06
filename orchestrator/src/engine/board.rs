//! The status board: each job's last status document, published by the engine loop, so that a
//! status call is answered at once while the loop is busy (a large job's end, a burst of a
//! million task reports). The loop answers status calls itself whenever it can (in order with
//! everything sent to it before); the board is the fallback when it does not answer soon.
//!
//! Publishing is cheap: a running job is put up as a [`StatusView`] (its counters and names,
//! never its tasks), and the document is built by the reader; publishing after every burst of
//! messages costs a one-task step of a chain next to nothing. An ended job's document is put
//! up as it was written to the journal.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::job::StatusView;

/// How long an ended job's last document stays on the board: until the journal surely has it
/// (its writer commits within this), after which the store answers.
const KEEP_ENDED: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
enum Published {
    Running(Arc<StatusView>),
    Ended(Arc<Value>),
}

impl Published {
    fn ended(&self) -> bool {
        matches!(self, Published::Ended(_))
    }
}

#[derive(Debug, Default)]
pub(crate) struct Board {
    jobs: Mutex<HashMap<String, Published>>,
    /// Ended jobs in the order they ended (the loop's own, for pruning).
    ended: Mutex<VecDeque<(Instant, String)>>,
}

impl Board {
    /// Puts a running job's status up (or an ended one's, whose document the loop has not
    /// written yet).
    pub(crate) fn publish(&self, job_id: &str, view: StatusView) {
        if view.is_final() {
            // Its end already put its final document up (with what only the loop adds).
            let known = self
                .jobs
                .lock()
                .ok()
                .and_then(|jobs| jobs.get(job_id).map(Published::ended));
            if known != Some(true) {
                self.publish_ended(job_id, view.doc(0));
            }
            return;
        }
        if let Ok(mut jobs) = self.jobs.lock() {
            match jobs.get_mut(job_id) {
                Some(entry) => *entry = Published::Running(Arc::new(view)),
                None => {
                    jobs.insert(job_id.to_string(), Published::Running(Arc::new(view)));
                }
            }
        }
    }

    /// Puts an ended job's final document up, as the journal got it.
    pub(crate) fn publish_ended(&self, job_id: &str, doc: Value) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(job_id.to_string(), Published::Ended(Arc::new(doc)));
        }
        if let Ok(mut list) = self.ended.lock() {
            list.push_back((Instant::now(), job_id.to_string()));
        }
    }

    /// Forgets ended jobs published more than [`KEEP_ENDED`] ago.
    pub(crate) fn prune(&self) {
        let Ok(mut list) = self.ended.lock() else {
            return;
        };
        let mut gone = Vec::new();
        while let Some((at, _)) = list.front() {
            if at.elapsed() < KEEP_ENDED {
                break;
            }
            if let Some((_, id)) = list.pop_front() {
                gone.push(id);
            }
        }
        drop(list);
        if gone.is_empty() {
            return;
        }
        if let Ok(mut jobs) = self.jobs.lock() {
            for id in gone {
                if jobs.get(&id).is_some_and(Published::ended) {
                    jobs.remove(&id);
                }
            }
        }
    }

    /// The job's status document as last published, its times brought up to `now_ms` while it
    /// runs; `None` when the board has none.
    pub(crate) fn status(&self, job_id: &str, now_ms: u64) -> Option<Value> {
        let published = self.jobs.lock().ok()?.get(job_id).cloned()?;
        Some(match published {
            Published::Running(view) => view.doc(now_ms),
            Published::Ended(doc) => (*doc).clone(),
        })
    }
}
