//! `env: wasm` modules: the runner both the orchestrator (in process) and a sidecar in a
//! container (the Docker executor) run WebAssembly algorithms with.
//!
//! - [`module`]: the wasmtime engine, its on-disk compile cache, the WASI linker and the
//!   `InstancePre` a module is prepared into once.
//! - [`cache`]: what the on-disk cache keeps (partial files of killed writes and code unused
//!   for long are removed when a runtime opens it).
//! - [`abi`]: which ABI a module speaks (a WASI command, or hkube's function ABI), found once.
//! - [`task`]: one task in one fresh store (the WASI command ABI: args on stdin, result on
//!   stdout, log on stderr; a trap or a non-zero exit is the task's error).
//! - [`function`]: the function ABI: an instance kept across a worker's tasks, a call each.
//! - [`runner`]: what a thread that runs tasks holds (the module, a function ABI's instance).
//! - [`args`]: the args object a module reads on stdin.
//! - [`threads`]: the threads workers run on, parked for the next worker when one ends.
//! - [`worker`]: a worker over the task link, one task after another: the orchestrator's
//!   in-process wasm workers, and `hkube-wrapper` in a container ([`worker::serve`]).

pub mod abi;
pub mod args;
pub mod cache;
pub mod function;
pub mod module;
pub mod runner;
pub mod stdio;
pub mod task;
pub mod threads;
pub mod worker;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A directory an algorithm declares: open to its module at `guest`, read-only unless
/// `writable`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

/// What a task's store is given: the module's name (its `argv[0]`), its limits, its folders
/// and its environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    pub name: String,
    /// `mem` as written (for messages) and in MiB: the most linear memory an instance may have.
    pub mem: String,
    pub mem_mib: u64,
    /// Longest a task may run; `None`: until it is stopped.
    pub time_limit: Option<Duration>,
    pub dirs: Vec<Preopen>,
    /// Environment variables the module sees (`algorithmEnv`'s plain values).
    pub env: Vec<(String, String)>,
}
