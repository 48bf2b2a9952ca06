//! The seam between tiers: one executor for the engine that sends the tasks of registered
//! wasm algorithms to the WASM executor and every other task to the process executor (whose
//! pools also start the Docker executor's containers). A DAG mixing both runs under one
//! engine, with the same batch, waitAny, tolerance and retry semantics: the engine decides
//! those, the executors only run tasks.

use std::sync::Arc;

use super::WasmExecutor;
use crate::engine::{Executor, TaskKey, TaskSpec};

#[derive(Clone)]
pub struct Routed {
    pub wasm: WasmExecutor,
    pub other: Arc<dyn Executor>,
}

impl std::fmt::Debug for Routed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Routed")
    }
}

impl Executor for Routed {
    fn submit(&self, task: TaskSpec) {
        if self.wasm.runs(&task.algorithm_name) {
            self.wasm.submit(task);
        } else {
            self.other.submit(task);
        }
    }

    fn cancel(&self, key: TaskKey) {
        if !self.wasm.cancel_held(key) {
            self.other.cancel(key);
        }
    }

    fn job_ended(&self, job_id: &str, keep: &[String]) {
        // Wasm tasks store nothing but their logs, which the job retention deletes.
        self.other.job_ended(job_id, keep);
    }
}
