//! Executors that run real workers, and their building blocks.
//!
//! - [`pool`]: the one worker pool, driven by the scheduler's rounds (queue, workers, links,
//!   crash reports); it starts workers through a [`launcher::Launcher`].
//! - [`launcher`]: one per backend: [`launcher::process`] (local processes),
//!   [`launcher::container`] (Docker container pairs), [`kubernetes::PodLauncher`] (pods).
//! - [`algorithm`]: what a pool runs (an algorithm's code or image, resources, pool bounds).
//! - [`child`]: one supervised child process (the process launcher's workers).
//! - [`local`]: the local executor, the embedded default: a pool with the process launcher (and
//!   the container launcher with `--executor docker`), and the local preparation steps.
//! - [`kubernetes`]: a bare pod per worker (manifest, status, the cluster's inventory).
//! - [`docker`]: container pairs (algorithm + sidecar) through bollard, and image deployment.
//! - `code_api`: the relay of an algorithm's code-API requests to the engine.
//! - [`limits`]: a worker's memory cap (cgroup or watchdog) and GPU grant, applied at its start.
//! - [`wasm`]: `env: wasm` algorithms, WebAssembly modules run in process by wasmtime, and
//!   the routing executor that puts them beside the others.
//!
//! The `Executor` trait itself and the in-process executor live in [`crate::engine`].

pub mod algorithm;
pub mod child;
mod code_api;
pub mod docker;
pub mod kubernetes;
pub mod launcher;
pub mod limits;
pub mod local;
pub mod pool;
pub mod wasm;
