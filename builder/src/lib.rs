//! The build service: turns an uploaded archive or a git repository into a runnable algorithm
//! (a container image, or a prepared local environment when no container engine is used).
//!
//! What exists so far: `unpack`, the safe unpacking of uploaded code. Images, git sources,
//! templates and local environments are tracked by the container-tier issue. This crate must
//! never depend on `orchestrator` (dependencies flow CLI → orchestrator → builder).

pub mod context;
pub mod docker;
pub mod env;
pub mod git;
pub mod local;
pub mod process;
pub mod registry;
pub mod unpack;
pub mod webhook;

pub use unpack::{unpack, Limits, UnpackError, Unpacked};
