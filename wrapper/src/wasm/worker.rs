//! A wasm worker: the tasks of one task link run one after another on a thread of their own
//! (one of [`super::threads`], which the next worker reuses),
//! each in a fresh store of the algorithm's module or a call into the instance it keeps
//! ([`super::runner::Runner`]).
//!
//! Two places start one: the orchestrator's wasm launcher (a worker is a thread of hkube's
//! process, fed through the link's channels) and `hkube-wrapper` in a container on the Docker
//! executor ([`serve`], the link a websocket to the orchestrator). Either way `Run` windows
//! queue on the thread, which answers `Started`, `Log` (the module's stderr) and `Finished`
//! per task; a `Stop` sets the task's flag, which the engine's epoch tick turns into a trap
//! within a tick; `Exit`, a closed link or the owner's stop end the thread after its current
//! task, and the tasks it had not started are left to the orchestrator (a `Gone` worker's
//! tasks are queued again).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::module::Runtime;
use super::runner::Runner;
use super::threads::Threads;
use super::{args, Sandbox};
use crate::link::{Assignment, FromSidecar, Outcome, ToSidecar};
use crate::sidecar::Link;

pub use super::runner::Prepared;

/// The module a worker's next task runs with: looked up at each task, so that a version
/// registered meanwhile is the one that runs. `Err` fails the task with the reason.
pub type Lookup = Box<dyn Fn() -> Result<Arc<Prepared>, String> + Send>;

/// The stop flags of the tasks a worker holds, by task id: set by a `Stop`, read by the
/// running instance's epoch callback.
type Flags = Arc<Mutex<HashMap<String, Arc<AtomicBool>>>>;

/// Starts a worker on `link`: `Ready` at once, then tasks until `Exit`, the link's end, or
/// `stopped` resolving (its running task is stopped too). `ended` runs on the worker's thread
/// once it has sent `Gone`. Call it inside a tokio runtime: WASI's host calls run on it.
pub fn start(
    link: Link,
    lookup: Lookup,
    stopped: BoxFuture<'static, ()>,
    threads: &Threads,
    ended: Box<dyn FnOnce() + Send>,
) -> Result<(), String> {
    let Link {
        mut from_orchestrator,
        to_orchestrator,
    } = link;
    let flags: Flags = Arc::default();
    // Set when the worker is to end: the tasks it has not started are left to the pool.
    let closing = Arc::new(AtomicBool::new(false));
    let (jobs, queued) = std::sync::mpsc::channel::<(Arc<Assignment>, Arc<AtomicBool>)>();
    // WASI's host functions are async underneath; they run on this runtime.
    let tokio = tokio::runtime::Handle::try_current()
        .map_err(|e| format!("a wasm worker needs a tokio runtime: {e}"))?;
    {
        let (flags, closing) = (Arc::clone(&flags), Arc::clone(&closing));
        threads.run(Box::new(move || {
            let _entered = tokio.enter();
            let _ = to_orchestrator.send(FromSidecar::Ready);
            let mut runner = Runner::default();
            for (assignment, stop) in queued {
                if closing.load(Ordering::Relaxed) {
                    break;
                }
                let task_id = assignment.task_id.clone();
                let outcome = if stop.load(Ordering::Relaxed) {
                    Outcome::Stopped
                } else {
                    let _ = to_orchestrator.send(FromSidecar::Started {
                        task_id: task_id.clone(),
                    });
                    run_one(&mut runner, &lookup, &assignment, &stop, &to_orchestrator)
                };
                if let Ok(mut flags) = flags.lock() {
                    flags.remove(&task_id);
                }
                let _ = to_orchestrator.send(FromSidecar::Finished { task_id, outcome });
            }
            let _ = to_orchestrator.send(FromSidecar::Gone {
                reason: "the wasm worker ended".into(),
            });
            ended();
        }))?;
    }
    // The link's reader: queues tasks on the thread and sets stop flags while it runs one.
    tokio::spawn(async move {
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                message = from_orchestrator.recv() => match message {
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
                () = &mut stopped => {
                    // Stopped (preempted past its grace, or removed): its running task too.
                    if let Ok(held) = flags.lock() {
                        for stop in held.values() {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    break;
                }
            }
        }
        closing.store(true, Ordering::Relaxed);
        // The thread ends once its current task does.
        drop(jobs);
    });
    Ok(())
}

/// One task in a fresh instance of the module; its stderr goes to the orchestrator as the
/// task's log, before its outcome.
fn run_one(
    runner: &mut Runner,
    lookup: &Lookup,
    assignment: &Assignment,
    stop: &Arc<AtomicBool>,
    to_orchestrator: &mpsc::UnboundedSender<FromSidecar>,
) -> Outcome {
    let prepared = match lookup() {
        Ok(prepared) => prepared,
        Err(reason) => return Outcome::Crashed { reason },
    };
    let args = args::of_assignment(assignment);
    let ran = runner.run(&prepared, args, stop);
    if !ran.log.is_empty() {
        let _ = to_orchestrator.send(FromSidecar::Log {
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

/// The variable that makes `hkube-wrapper` a wasm worker: a [`ContainerModule`] as JSON.
pub const MODULE_VAR: &str = "HKUBE_WASM";

/// What a sidecar container on the Docker executor runs: the module in its image, and the
/// sandbox of each task (the algorithm's `mem`, time limit, folders and variables).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerModule {
    /// The `.wasm` file in the container (`/hkube/algorithm/<entryPoint>`).
    pub module: PathBuf,
    pub sandbox: Sandbox,
}

/// The sidecar as a wasm worker: compiles the module once, then serves the link until it
/// ends. Returns why it ended. A module that does not load ends the worker with `Gone`
/// carrying wasmtime's message.
pub async fn serve(link: Link, spec: ContainerModule) -> String {
    let ContainerModule { module, sandbox } = spec;
    let to_orchestrator = link.to_orchestrator.clone();
    let shown = module.display().to_string();
    let compiling = std::time::Instant::now();
    let loaded = tokio::task::spawn_blocking(move || {
        let bytes =
            std::fs::read(&module).map_err(|e| format!("cannot read {}: {e}", module.display()))?;
        // No cache: a container's file system is fresh; the worker compiles once (Winch's code
        // at once, Cranelift's behind it) and keeps it.
        let runtime = Runtime::new(None)?;
        let tiered = runtime
            .prepare_tiered(&bytes)
            .map_err(|e| format!("the module {} {e}", module.display()))?;
        Ok::<_, String>((runtime, tiered))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|loaded| loaded);
    let (runtime, tiered) = match loaded {
        Ok(loaded) => loaded,
        Err(reason) => {
            let _ = to_orchestrator.send(FromSidecar::Gone {
                reason: reason.clone(),
            });
            return reason;
        }
    };
    // The container's log says what it runs (`docker logs`).
    eprintln!(
        "hkube-wrapper: running the wasm module {shown} (compiled in {} ms)",
        compiling.elapsed().as_millis()
    );
    let current = Arc::new(std::sync::RwLock::new(Arc::new(Prepared {
        sandbox: sandbox.clone(),
        pre: tiered.ready,
    })));
    if let Some(optimized) = tiered.optimized {
        // Cranelift's code replaces Winch's for the tasks that start once it is ready.
        let current = Arc::clone(&current);
        let _ = std::thread::Builder::new()
            .name("hkube-wasm-tier-up".into())
            .spawn(move || {
                if let (Ok(Ok(pre)), Ok(mut current)) = (optimized.join(), current.write()) {
                    *current = Arc::new(Prepared { sandbox, pre });
                    eprintln!(
                        "hkube-wrapper: the module's optimised code (Cranelift) is ready after {} ms: the next tasks run it",
                        compiling.elapsed().as_millis()
                    );
                }
            });
    }
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let lookup: Lookup = Box::new(move || {
        current
            .read()
            .map(|prepared| Arc::clone(&prepared))
            .map_err(|_| "the worker's module is unavailable".to_string())
    });
    let started = start(
        link,
        lookup,
        Box::pin(std::future::pending()),
        // The container's one worker: its own thread, nothing kept for another.
        &Threads::new("hkube-wasm-worker", 0),
        Box::new(move || {
            let _ = done.send(());
        }),
    );
    if let Err(reason) = started {
        let _ = to_orchestrator.send(FromSidecar::Gone {
            reason: reason.clone(),
        });
        return reason;
    }
    let _ = ended.await;
    // The engine (and its epoch thread) lives as long as the worker ran tasks.
    drop(runtime);
    "the wasm worker ended".into()
}
