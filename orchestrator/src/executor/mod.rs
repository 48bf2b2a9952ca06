//! Executors' building blocks that touch the operating system.
//!
//! - [`child`]: one supervised child process (the local executor's workers).
//! - [`local`]: the local executor, the embedded default; its pools also run the Docker
//!   executor's workers.
//! - [`docker`]: workers as container pairs (algorithm + sidecar) through bollard.
//! - [`limits`]: a worker's memory cap (cgroup or watchdog) and GPU grant, applied at its start.
//!
//! The `Executor` trait itself and the in-process executor live in [`crate::engine`]; the Kubernetes
//! executor will live here too, in a folder of its own.

pub mod child;
pub mod docker;
pub mod limits;
pub mod local;
