//! The wasm launcher: a worker pool's workers for `env: wasm` algorithms, placed by the
//! scheduler like any other algorithm's (cpu and memory from the same inventory, priorities,
//! pending reasons, `minHotWorkers`, `maxWorkers`).
//!
//! A worker is a thread of hkube's process, fed through the same task link a sidecar speaks
//! (`Launched`'s two channels, no socket): `Run` windows of tasks queue on the thread, each
//! task runs in a fresh instance of the algorithm's module (`task::run`, as the executor's own
//! threads run it), and the thread answers `Started`, `Log` and `Finished` per task. A `Stop`
//! sets the task's flag, which the epoch tick turns into a trap within 5 ms; `Exit`, or the
//! pool's stop of the worker, ends the thread after its current task, and the tasks it had not
//! started go back to the pool's queue (the pool requeues what a `Gone` worker held).
//!
//! Nothing starts per worker but a thread: the module was compiled at registration, and the
//! worker looks it up by name at each task (a new version registered meanwhile is the one
//! that runs; the pool retires a worker whose module file changed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use wrapper::link::{Assignment, FromSidecar, Outcome, ToSidecar};

use super::{assignment_args_json, task, Shared};
use crate::executor::algorithm::{Language, WorkerAlgorithm};
use crate::executor::child::{Exit, ExternalControls, Supervised};
use crate::executor::launcher::{Error, Launch, Launched, Launcher};

/// Output lines kept per worker for a crash report: a wasm worker has none of its own (a
/// task's stderr is its log), so little.
const LOG_LIMIT: usize = 4 * 1024;

/// Starts wasm workers: threads running the modules a [`super::WasmExecutor`] compiled.
pub struct WasmLauncher {
    shared: Arc<Shared>,
}

impl WasmLauncher {
    pub(super) fn new(shared: Arc<Shared>) -> WasmLauncher {
        WasmLauncher { shared }
    }
}

impl std::fmt::Debug for WasmLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WasmLauncher")
    }
}

impl Launcher for WasmLauncher {
    fn runs(&self, algorithm: &WorkerAlgorithm) -> bool {
        algorithm.language == Language::Wasm && algorithm.container.is_none()
    }

    fn launch(&self, launch: Launch) -> BoxFuture<'static, Result<Launched, Error>> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { start_worker(shared, launch) })
    }
}

/// The stop flags of the tasks a worker holds, by task id: set by the pool's `Stop`, read by
/// the running instance's epoch callback.
type Flags = Arc<Mutex<HashMap<String, Arc<AtomicBool>>>>;

fn start_worker(shared: Arc<Shared>, launch: Launch) -> Result<Launched, Error> {
    let name = launch.algorithm.name.clone();
    let (to_worker, mut from_pool) = mpsc::unbounded_channel::<ToSidecar>();
    let (to_pool, from_worker) = mpsc::unbounded_channel::<FromSidecar>();
    let (supervised, controls) = Supervised::external(LOG_LIMIT);
    let ExternalControls {
        stop: mut stopped,
        exit,
        ..
    } = controls;
    let flags: Flags = Arc::default();
    // Set when the worker is to end: the tasks it has not started are left to the pool.
    let closing = Arc::new(AtomicBool::new(false));
    let (jobs, queued) = std::sync::mpsc::channel::<(Assignment, Arc<AtomicBool>)>();
    // WASI's host functions are async underneath; they run on this runtime.
    let tokio = tokio::runtime::Handle::try_current()
        .map_err(|e| Error::Start(format!("a wasm worker needs a tokio runtime: {e}")))?;
    {
        let (flags, closing) = (Arc::clone(&flags), Arc::clone(&closing));
        std::thread::Builder::new()
            .name(format!("hkube-wasm-w{}", launch.worker))
            .spawn(move || {
                let _entered = tokio.enter();
                let _ = to_pool.send(FromSidecar::Ready);
                for (assignment, stop) in queued {
                    if closing.load(Ordering::Relaxed) {
                        break;
                    }
                    let task_id = assignment.task_id.clone();
                    let outcome = if stop.load(Ordering::Relaxed) {
                        Outcome::Stopped
                    } else {
                        let _ = to_pool.send(FromSidecar::Started {
                            task_id: task_id.clone(),
                        });
                        run_one(&shared, &name, &assignment, &stop, &to_pool)
                    };
                    if let Ok(mut flags) = flags.lock() {
                        flags.remove(&task_id);
                    }
                    let _ = to_pool.send(FromSidecar::Finished { task_id, outcome });
                }
                let _ = to_pool.send(FromSidecar::Gone {
                    reason: "the wasm worker ended".into(),
                });
                let _ = exit.send(Some(Exit::Code(0)));
            })
            .map_err(|e| Error::Start(format!("cannot start a wasm worker's thread: {e}")))?;
    }
    // The link's reader: queues tasks on the thread and sets stop flags while it runs one.
    tokio::spawn(async move {
        loop {
            tokio::select! {
                message = from_pool.recv() => match message {
                    Some(ToSidecar::Run { tasks }) => {
                        let Ok(mut held) = flags.lock() else { break };
                        for assignment in tasks {
                            let stop = Arc::new(AtomicBool::new(false));
                            held.insert(assignment.task_id.clone(), Arc::clone(&stop));
                            if jobs.send((assignment, stop)).is_err() {
                                break;
                            }
                        }
                    }
                    Some(ToSidecar::Stop { task_id, .. }) => {
                        if let Some(stop) = flags.lock().ok().and_then(|f| f.get(&task_id).cloned()) {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    // A module has no code API: no request is ever made, none is answered.
                    Some(ToSidecar::CodeApiReply { .. }) => {}
                    Some(ToSidecar::Exit { .. }) | None => break,
                },
                changed = stopped.changed() => {
                    // Stopped (preempted past its grace, or removed): its running task too.
                    if changed.is_err() || *stopped.borrow() {
                        if let Ok(held) = flags.lock() {
                            for stop in held.values() {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                        break;
                    }
                }
            }
        }
        closing.store(true, Ordering::Relaxed);
        // The thread ends once its current task does.
        drop(jobs);
    });
    Ok(Launched {
        to_sidecar: to_worker,
        from_sidecar: from_worker,
        worker: supervised,
    })
}

/// One task in a fresh instance of the algorithm's module; its stderr goes to the pool as the
/// task's log, before its outcome.
fn run_one(
    shared: &Shared,
    name: &str,
    assignment: &Assignment,
    stop: &Arc<AtomicBool>,
    to_pool: &mpsc::UnboundedSender<FromSidecar>,
) -> Outcome {
    let loaded = shared
        .algorithms
        .read()
        .ok()
        .and_then(|algorithms| algorithms.get(name).cloned());
    let Some(loaded) = loaded else {
        return Outcome::Crashed {
            reason: format!("algorithm {name} is no longer a registered wasm algorithm"),
        };
    };
    let args = assignment_args_json(assignment);
    let ran = task::run(&loaded.algorithm, &loaded.pre, args, stop);
    if !ran.log.is_empty() {
        let _ = to_pool.send(FromSidecar::Log {
            task_id: assignment.task_id.clone(),
            text: String::from_utf8_lossy(&ran.log).into_owned(),
        });
    }
    match ran.result {
        Ok(output) => Outcome::Output { output },
        // Asked to stop (cancelled, preempted): not the module's failure.
        Err(_) if stop.load(Ordering::Relaxed) => Outcome::Stopped,
        Err(error) => Outcome::error(error),
    }
}
