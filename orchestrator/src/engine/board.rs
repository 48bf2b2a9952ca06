//! The status board: each job's last status document, published by the engine loop, so that a
//! status call is answered at once while the loop is busy (a large job's end, a burst of a
//! million task reports). The loop answers status calls itself whenever it can (in order with
//! everything sent to it before); the board is the fallback when it does not answer soon.
//!
//! Publishing is O(nodes) per job: the document is built from the job's counters, never from
//! its tasks. What the document holds is whatever [`super::Job::status_doc`] puts in it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long an ended job's last document stays on the board: until the journal surely has it
/// (its writer commits within this), after which the store answers.
const KEEP_ENDED: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Published {
    doc: Arc<Value>,
    start_time: u64,
    active_time: Option<u64>,
    ended: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Board {
    jobs: Mutex<HashMap<String, Published>>,
    /// Ended jobs in the order they ended (the loop's own, for pruning).
    ended: Mutex<VecDeque<(Instant, String)>>,
}

impl Board {
    /// Puts `doc` (a status document built at `now`) up for `job_id`.
    pub(crate) fn publish(
        &self,
        job_id: &str,
        doc: Value,
        start_time: u64,
        active_time: Option<u64>,
        ended: bool,
    ) {
        let entry = Published {
            doc: Arc::new(doc),
            start_time,
            active_time,
            ended,
        };
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(job_id.to_string(), entry);
        }
        if ended {
            if let Ok(mut list) = self.ended.lock() {
                list.push_back((Instant::now(), job_id.to_string()));
            }
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
                if jobs.get(&id).is_some_and(|p| p.ended) {
                    jobs.remove(&id);
                }
            }
        }
    }

    /// The job's status document as last published, its times brought up to `now_ms` while it
    /// runs; `None` when the board has none.
    pub(crate) fn status(&self, job_id: &str, now_ms: u64) -> Option<Value> {
        let published = self.jobs.lock().ok()?.get(job_id).cloned()?;
        let mut doc = (*published.doc).clone();
        if !published.ended {
            if let Value::Object(map) = &mut doc {
                map.insert("timestamp".into(), json!(now_ms));
                map.insert(
                    "grossTimeTook".into(),
                    json!(seconds(published.start_time, now_ms)),
                );
                if let Some(active) = published.active_time {
                    map.insert("netTimeTook".into(), json!(seconds(active, now_ms)));
                }
            }
        }
        Some(doc)
    }
}

fn seconds(from_ms: u64, to_ms: u64) -> f64 {
    to_ms.saturating_sub(from_ms) as f64 / 1000.0
}
