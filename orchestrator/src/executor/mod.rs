//! Executors' building blocks that touch the operating system.
//!
//! - [`child`]: one supervised child process (the local executor's workers).
//! - [`local`]: the local executor, the embedded default.
//!
//! The `Executor` trait itself and the in-process executor live in [`crate::engine`]; the Docker
//! and Kubernetes executors will live here too, one folder each.

pub mod child;
pub mod local;
