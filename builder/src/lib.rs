//! The build service: turns an uploaded archive or a git repository into a runnable algorithm
//! (a container image, or a prepared local environment when no container engine is used).
//!
//! Not implemented yet: this crate is laid down so the workspace has its final shape. The work is
//! tracked by the container-tier issue. It must never depend on `orchestrator` (dependencies flow
//! CLI → orchestrator → builder).
