//! The wrapper sidecar: speaks HKube's websocket protocol to the user's algorithm and streams its
//! inputs and outputs through storage.
//!
//! - [`protocol`]: HKube's worker ⇄ algorithm messages and their encodings (see its PROTOCOL.md).
//! - [`link`]: the task link between the orchestrator and a sidecar.
//! - [`remote`]: the task link over a network (a sidecar in a container dials its orchestrator).
//! - [`sidecar`]: the websocket server an algorithm connects to, driving its tasks.
//! - [`storage`]: HKube's object storage (key layout, 8-byte header, encodings, fs adapter).
//! - [`wasm`]: `env: wasm` modules run by wasmtime (in the orchestrator's process, or in a
//!   sidecar's container).
//! - [`value`]: the one value type (`serde_json::Value`), how binary and the rest of what JSON
//!   lacks are represented in it, and the [`Encoding`](value::Encoding)s it travels in.
//!
//! It must never depend on `orchestrator` (dependencies flow CLI → orchestrator → wrapper).

pub mod link;
pub mod protocol;
pub mod remote;
pub mod sidecar;
pub mod storage;
pub mod value;
pub mod wasm;
