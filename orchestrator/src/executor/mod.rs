//! Executors' building blocks that touch the operating system.
//!
//! - [`child`]: one supervised child process (the local executor's workers).
//! - [`local`]: the local executor, the embedded default; its pools also run the Docker
//!   executor's workers.
//! - [`docker`]: workers as container pairs (algorithm + sidecar) through bollard.
//! - [`wasm`]: `env: wasm` algorithms, WebAssembly modules run in process by wasmtime, and
//!   the routing executor that puts them beside the others.
//!
//! The `Executor` trait itself and the in-process executor live in [`crate::engine`]; the Kubernetes
//! executor will live here too, in a folder of its own.

pub mod child;
pub mod docker;
pub mod local;
pub mod wasm;
