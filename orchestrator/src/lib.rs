//! hkube's control plane.
//!
//! - [`spec`]: descriptors, their defaults and validation (pure).
//! - [`dag`]: the graph from node references, batch expansion, input resolution (pure).
//! - [`engine`]: the job driver, an event loop that sends tasks through an [`engine::Executor`].
//! - [`executor`]: executors that run real processes (the local executor).
//! - [`scheduler`]: which workers start, stop and take which task, by priority and resources (pure).
//! - [`project`]: a pipeline folder with its algorithms, as `hkube run` reads it.
//! - [`store`]: stored algorithms and pipelines, written through the API.
//! - [`api`]: the HKube-compatible REST API (`/api/v1`), an axum router over the engine.

pub mod api;
pub mod build;
pub mod cache;
pub mod dag;
pub mod engine;
pub mod executor;
pub mod notify;
pub mod project;
pub mod scheduler;
pub mod spec;
pub mod store;
pub mod telemetry;
pub mod triggers;
