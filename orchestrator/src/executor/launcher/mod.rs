//! The seam between a worker pool and a backend: a [`Launcher`] starts a worker for an
//! algorithm with what the scheduler granted it, and hands back the worker's task link and a
//! [`Supervised`] handle to stop and watch it. That is all a launcher does: which workers
//! start, stop or take which task is the scheduler's (`crate::scheduler`), applied by the pool
//! (`crate::executor::pool`).
//!
//! - [`process::ProcessLauncher`]: a local process behind an in-process sidecar.
//! - [`container::ContainerLauncher`]: a container pair through Docker.
//! - `executor::wasm::launcher::WasmLauncher`: a thread of hkube's process running an
//!   `env: wasm` module, fed through the same task link (kept with the wasm executor, whose
//!   compiled modules it runs; given to the pool through `LocalOptions::launchers`).
//!
//! - [`crate::executor::kubernetes::PodLauncher`]: a pod per worker in a cluster.
//!
//! The trait names no process, container or pod.

pub mod container;
pub mod process;
mod pyenv;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use wrapper::link::{FromSidecar, ToSidecar};
use wrapper::sidecar::SidecarOptions;

use crate::executor::algorithm::WorkerAlgorithm;
use crate::executor::child::Supervised;
use crate::executor::limits::Limits;
use crate::scheduler::Placement;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start a worker: {0}")]
    Start(String),
    #[error("cannot write hkube's language runtimes: {0}")]
    Runtimes(String),
}

/// Why no launcher of a pool runs `algorithm` (the pool's tasks of it fail with this).
pub fn none_runs(algorithm: &WorkerAlgorithm) -> String {
    match &algorithm.container {
        Some(spec) => format!(
            "algorithm {} runs in image {}, and this server has no container engine: start it with --executor docker or kubernetes",
            algorithm.name, spec.image
        ),
        None => format!(
            "algorithm {} has local code, and this server runs only images",
            algorithm.name
        ),
    }
}

/// One worker to start: the scheduler's decision for it.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The pool's id for the worker.
    pub worker: u64,
    pub algorithm: WorkerAlgorithm,
    /// What the worker may use: cpu, memory and its GPU devices (`grant.gpu.devices()`).
    pub grant: Placement,
    /// The node the scheduler placed it on, by name (a cluster's node; the local machine's
    /// name otherwise). The pod launcher prefers it; the others run on this machine.
    pub node: Option<String>,
    /// How the grant is enforced: the memory cap and the visible GPU devices.
    pub limits: Limits,
    pub sidecar: SidecarOptions,
}

/// A started worker: its task link (the sidecar's two ends) and its supervision.
#[derive(Debug)]
pub struct Launched {
    pub to_sidecar: mpsc::UnboundedSender<ToSidecar>,
    pub from_sidecar: mpsc::UnboundedReceiver<FromSidecar>,
    /// Stops the worker (a grace, then a kill), reports its exit, keeps its last output lines.
    pub worker: Supervised,
}

/// Starts workers of one backend.
pub trait Launcher: Send + Sync + std::fmt::Debug + 'static {
    /// Whether this launcher runs `algorithm`'s workers (the pool asks its launchers in order).
    fn runs(&self, algorithm: &WorkerAlgorithm) -> bool;

    /// Starts one worker; resolves once its sidecar's link is up (or the start failed). Stopping
    /// it is the returned [`Supervised`]'s job.
    fn launch(&self, launch: Launch) -> BoxFuture<'static, Result<Launched, Error>>;

    /// Whether [`Launcher::launch`]'s future is ready when first polled and cheap to poll (a
    /// thread of this process, no container, no process): the pool then takes the worker in
    /// the same turn, instead of a task of its own and a message back.
    fn launches_at_once(&self) -> bool {
        false
    }
}
