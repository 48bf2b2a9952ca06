//! hkube's control plane.
//!
//! - [`spec`]: descriptors, their defaults and validation (pure).
//! - [`dag`]: the graph from node references, batch expansion, input resolution (pure).
//! - [`engine`]: the job driver, an event loop that sends tasks through an [`engine::Executor`].
//! - [`executor`]: executors that run real processes (the local executor).
//! - [`project`]: a pipeline folder with its algorithms, as `hkube run` reads it.

pub mod dag;
pub mod engine;
pub mod executor;
pub mod project;
pub mod spec;
pub mod store;
