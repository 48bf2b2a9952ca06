//! The wasm launcher: a worker pool's workers for `env: wasm` algorithms, placed by the
//! scheduler like any other algorithm's (cpu and memory from the same inventory, priorities,
//! pending reasons, `minHotWorkers`, `maxWorkers`).
//!
//! A worker is a thread of hkube's process running `wrapper::wasm::worker`, the loop a Docker
//! executor's wasm container runs too, fed through the same task link a sidecar speaks
//! (`Launched`'s two channels, no socket): `Run` windows of tasks queue on the thread, each
//! task runs in a fresh instance of the algorithm's module (a WASI command), or as a call into the
//! instance the thread keeps (hkube's function ABI): `wrapper::wasm::runner`, as the executor's
//! own threads run it; and the thread answers `Started`, `Log` and `Finished` per task. A `Stop`
//! sets the task's flag, which the epoch tick turns into a trap within 5 ms; `Exit`, or the
//! pool's stop of the worker, ends the thread after its current task, and the tasks it had not
//! started go back to the pool's queue (the pool requeues what a `Gone` worker held).
//!
//! Nothing starts per worker but a thread, and not even that when one is parked: a worker's
//! thread waits for the next worker once its own ends (`wrapper::wasm::threads`, one per core,
//! one parked from the executor's start). The module was compiled at registration, and the
//! worker looks it up by name at each task (a new version registered meanwhile is the one
//! that runs; the pool retires a worker whose module file changed).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use wrapper::link::{FromSidecar, ToSidecar};
use wrapper::sidecar::Link;
use wrapper::wasm::worker;

use super::Shared;
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

    fn launches_at_once(&self) -> bool {
        // The worker's thread (a parked one, else a new one) is given its work when the
        // future is first polled; nothing is awaited.
        true
    }
}

/// A worker thread (`wrapper::wasm::worker`, as a container's sidecar runs one) on a link of
/// channels; the pool's stop of the worker stops it and its running task.
fn start_worker(shared: Arc<Shared>, launch: Launch) -> Result<Launched, Error> {
    let name = launch.algorithm.name.clone();
    let shared_threads = shared.threads.clone();
    let (to_worker, from_pool) = mpsc::unbounded_channel::<ToSidecar>();
    let (to_pool, from_worker) = mpsc::unbounded_channel::<FromSidecar>();
    let (supervised, controls) = Supervised::external(LOG_LIMIT);
    let ExternalControls {
        stop: mut stopped,
        exit,
        ..
    } = controls;
    let lookup: worker::Lookup = Box::new(move || {
        shared
            .algorithms
            .read()
            .ok()
            .and_then(|algorithms| algorithms.get(&name).cloned())
            .ok_or_else(|| format!("algorithm {name} is no longer a registered wasm algorithm"))
    });
    let stopped = Box::pin(async move {
        while stopped.changed().await.is_ok() {
            if *stopped.borrow() {
                return;
            }
        }
    });
    worker::start(
        Link {
            from_orchestrator: from_pool,
            to_orchestrator: to_pool,
        },
        lookup,
        stopped,
        &shared_threads,
        Box::new(move || {
            let _ = exit.send(Some(Exit::Code(0)));
        }),
    )
    .map_err(Error::Start)?;
    Ok(Launched {
        to_sidecar: to_worker,
        from_sidecar: from_worker,
        worker: supervised,
    })
}
