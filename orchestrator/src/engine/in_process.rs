//! An executor that runs algorithms as Rust functions inside the engine's process: the test
//! algorithms of the reference's conformance cases (§8), and anything a test or benchmark
//! registers. It measures the engine alone: no process, no socket, no storage.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::AbortHandle;

use super::executor::{Executor, SubPipeline, TaskKey, TaskOutcome, TaskSpec};

/// What an algorithm does with a task: answer now, or later (sleeping, calling the code API).
pub enum Run {
    Now(TaskOutcome),
    Later(Pin<Box<dyn Future<Output = TaskOutcome> + Send>>),
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Run::Now(outcome) => f.debug_tuple("Now").field(outcome).finish(),
            Run::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// A task without its attempt: (job, node, task).
type TaskSlot = (u64, u32, u32);

pub type Algorithm = Arc<dyn Fn(&TaskSpec) -> Run + Send + Sync>;

/// Runs registered algorithms in-process. Synchronous ones answer inside `submit` (through the
/// engine's channel, so the engine sees the answer on its next turn); the others run as tokio
/// tasks, which `cancel` aborts.
#[derive(Clone, Default)]
pub struct InProcessExecutor {
    algorithms: Arc<HashMap<String, Algorithm>>,
    running: Arc<Mutex<HashMap<TaskSlot, AbortHandle>>>,
}

impl std::fmt::Debug for InProcessExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessExecutor")
            .field("algorithms", &self.algorithms.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl InProcessExecutor {
    /// The reference's test algorithms (§8) plus a few for retries and the code API.
    pub fn with_test_algorithms() -> Self {
        let mut algorithms: HashMap<String, Algorithm> = HashMap::new();
        let mut add = |name: &str, f: Algorithm| {
            algorithms.insert(name.to_string(), f);
        };
        add(
            "echo",
            Arc::new(|task| ok(Value::Array(task.input.clone()))),
        );
        add("first", Arc::new(|task| ok(arg(task, 0))));
        add(
            "double",
            Arc::new(|task| match number(&arg(task, 0)) {
                Some(n) => ok(json_number(n * 2.0)),
                None => fail("input[0] is not a number"),
            }),
        );
        add(
            "add",
            Arc::new(
                |task| match (number(&arg(task, 0)), number(&arg(task, 1))) {
                    (Some(a), Some(b)) => ok(json_number(a + b)),
                    _ => fail("input[0] and input[1] must be numbers"),
                },
            ),
        );
        add(
            "range",
            Arc::new(|task| match arg(task, 0).as_u64() {
                Some(n) => ok(Value::Array((0..n).map(Value::from).collect())),
                None => fail("input[0] must be a non-negative integer"),
            }),
        );
        add(
            "obj",
            Arc::new(|_| ok(json!({"data": {"x": [1, 2, 3]}, "name": "n"}))),
        );
        add(
            "failgt10",
            Arc::new(|task| {
                let value = arg(task, 0);
                match number(&value) {
                    Some(n) if n > 10.0 => fail("too big"),
                    _ => ok(value),
                }
            }),
        );
        add("fail", Arc::new(|_| fail("boom")));
        add(
            "sleepret",
            Arc::new(|task| {
                let pair = arg(task, 0);
                let millis = pair.get(0).and_then(Value::as_u64).unwrap_or(0);
                let value = pair.get(1).cloned().unwrap_or(Value::Null);
                later(async move {
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                    TaskOutcome::Succeeded(value)
                })
            }),
        );
        add(
            "sleep",
            Arc::new(|task| {
                let seconds = number(&arg(task, 0)).unwrap_or(0.0).max(0.0);
                later(async move {
                    let duration = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX);
                    tokio::time::sleep(duration).await;
                    TaskOutcome::Succeeded(json!("done"))
                })
            }),
        );
        // Crashes on its first attempt, then returns input[0]: exercises OnCrash retries.
        add(
            "crashonce",
            Arc::new(|task| {
                if task.key.attempt <= 1 {
                    Run::Now(TaskOutcome::Crashed("worker exited with code 137".into()))
                } else {
                    ok(arg(task, 0))
                }
            }),
        );
        add(
            "crash",
            Arc::new(|_| Run::Now(TaskOutcome::Crashed("worker exited with code 1".into()))),
        );
        // Code API: runs the stored pipeline input[0] with flowInput input[1]; returns its data.
        add(
            "subpipe",
            Arc::new(|task| {
                let name = arg(task, 0).as_str().unwrap_or_default().to_string();
                let flow_input = Some(arg(task, 1)).filter(|v| !v.is_null());
                let answer = task
                    .reporter
                    .start_sub_pipeline(SubPipeline::Stored { name, flow_input });
                later(async move {
                    match answer.await {
                        Ok(Ok(result)) => match result.get("data") {
                            Some(data) => TaskOutcome::Succeeded(data.clone()),
                            None => TaskOutcome::Failed(format!(
                                "sub-pipeline ended {}",
                                result
                                    .get("status")
                                    .and_then(Value::as_str)
                                    .unwrap_or("badly")
                            )),
                        },
                        Ok(Err(error)) => TaskOutcome::Failed(error.to_string()),
                        Err(_) => TaskOutcome::Failed("the engine has shut down".into()),
                    }
                })
            }),
        );
        // Code API: runs algorithm input[0] on the input input[1..]; returns its output.
        add(
            "callalg",
            Arc::new(|task| {
                let name = arg(task, 0).as_str().unwrap_or_default().to_string();
                let input = task.input.iter().skip(1).cloned().collect();
                let answer = task.reporter.start_algorithm(name, input);
                later(async move {
                    match answer.await {
                        Ok(TaskOutcome::Succeeded(value)) => TaskOutcome::Succeeded(value),
                        Ok(TaskOutcome::Failed(error) | TaskOutcome::Crashed(error)) => {
                            TaskOutcome::Failed(format!("called algorithm failed: {error}"))
                        }
                        Err(_) => TaskOutcome::Failed("the engine has shut down".into()),
                    }
                })
            }),
        );
        InProcessExecutor {
            algorithms: Arc::new(algorithms),
            running: Arc::default(),
        }
    }

    /// Names of the registered algorithms, for registering them in a catalog.
    pub fn algorithm_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.algorithms.keys().cloned().collect();
        names.sort();
        names
    }

    /// Adds (or replaces) an algorithm.
    pub fn register(&mut self, name: &str, algorithm: Algorithm) {
        Arc::make_mut(&mut self.algorithms).insert(name.to_string(), algorithm);
    }
}

impl Executor for InProcessExecutor {
    fn submit(&self, task: TaskSpec) {
        let Some(algorithm) = self.algorithms.get(task.algorithm_name.as_ref()) else {
            task.reporter.finish(TaskOutcome::Crashed(format!(
                "algorithm {} is not registered in the in-process executor",
                task.algorithm_name
            )));
            return;
        };
        task.reporter.started();
        match algorithm(&task) {
            Run::Now(outcome) => task.reporter.finish(outcome),
            Run::Later(work) => {
                let reporter = task.reporter.clone();
                let slot = task.key.slot();
                let running = self.running.clone();
                let handle = tokio::spawn(async move {
                    let outcome = work.await;
                    if let Ok(mut running) = running.lock() {
                        running.remove(&slot);
                    }
                    reporter.finish(outcome);
                });
                if let Ok(mut running) = self.running.lock() {
                    if !handle.is_finished() {
                        running.insert(slot, handle.abort_handle());
                    }
                }
            }
        }
    }

    fn cancel(&self, key: TaskKey) {
        if let Ok(mut running) = self.running.lock() {
            if let Some(handle) = running.remove(&key.slot()) {
                handle.abort();
            }
        }
    }
}

fn ok(value: Value) -> Run {
    Run::Now(TaskOutcome::Succeeded(value))
}

fn fail(message: &str) -> Run {
    Run::Now(TaskOutcome::Failed(message.to_string()))
}

fn later(work: impl Future<Output = TaskOutcome> + Send + 'static) -> Run {
    Run::Later(Box::pin(work))
}

fn arg(task: &TaskSpec, index: usize) -> Value {
    task.input.get(index).cloned().unwrap_or(Value::Null)
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64()
}

/// Integers stay integers (`10`, not `10.0`), as in JavaScript's JSON.
fn json_number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        json!(n)
    }
}
