//! Executors' building blocks that touch the operating system.
//!
//! - [`child`]: one supervised child process (the local executor's workers).
//!
//! The `Executor` trait itself and the in-process executor live in [`crate::engine`]; the local,
//! Docker and Kubernetes executors will live here, one folder each.

pub mod child;
