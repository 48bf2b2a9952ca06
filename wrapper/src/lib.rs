//! The wrapper sidecar: speaks HKube's websocket protocol to the user's algorithm and streams its
//! inputs and outputs through storage.
//!
//! Not implemented yet: this crate is laid down so the workspace has its final shape. The work is
//! tracked by the worker-tier issue. It must never depend on `orchestrator` (dependencies flow
//! CLI → orchestrator → wrapper).
