//! The wire protocol between the sidecar (the websocket server, HKube's "worker") and the
//! language wrapper that runs user code (the client): HKube's `hkube-python-wrapper`,
//! `@hkube/nodejs-wrapper`, the Java wrapper, and our own runtimes.
//!
//! Only the types in [`messages`] cross the algorithm socket. [`codec`] turns them into websocket
//! frames for the encoding the wrapper asked for in its query string (JSON text, BSON or msgpack
//! binary) and back; [`session`] says which message is valid in which state, so the sidecar can
//! reject out-of-order ones. `PROTOCOL.md`, next to this file, describes the wire format for
//! people writing a wrapper.
//!
//! This module is pure: it never touches a socket, a clock, storage or a process, and it never
//! panics on bytes from the socket; every failure is an [`Error`] that says what was wrong.

pub mod codec;
pub mod messages;
pub mod session;

pub use codec::{
    decode_envelope, decode_from_algorithm, decode_to_algorithm, encode, Encoding, Frame,
    Negotiated, StorageMode,
};
pub use messages::{Envelope, FromAlgorithm, ToAlgorithm};
pub use session::{Session, State};

/// Version of this module's wire protocol: HKube's worker ⇄ wrapper protocol as of HKube 2.x
/// (which carries no version on the wire) plus version 1 of the hkube fast-path extension, which a
/// wrapper requests with `fast=1` in its query string. Bump it when a wire shape changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a frame could not be decoded or encoded, or why a message is not valid now.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The frame kind does not match the negotiated encoding (binary under JSON, text under BSON
    /// or msgpack).
    #[error("{encoding} peer sent a {got} frame; {encoding} messages are {expected} frames")]
    WrongFrameKind {
        encoding: Encoding,
        got: &'static str,
        expected: &'static str,
    },

    /// The frame's bytes are not valid in the negotiated encoding.
    #[error("{encoding} frame does not decode: {reason}")]
    Malformed { encoding: Encoding, reason: String },

    /// The frame decoded, but the envelope is not an object (or, under BSON, the document has no
    /// `data` object).
    #[error("{encoding} frame holds {found} where the envelope object was expected")]
    NotAnObject { encoding: Encoding, found: String },

    /// The envelope has no string `command`.
    #[error("{encoding} envelope has no string `command` field")]
    MissingCommand { encoding: Encoding },

    /// A known command whose payload does not have the documented shape. `data` is the payload as
    /// received, so the caller can still correlate a reply (e.g. read `execId`).
    #[error("invalid `{command}` payload: {reason}")]
    InvalidPayload {
        command: String,
        reason: String,
        data: Box<serde_json::Value>,
    },

    /// A message could not be encoded (e.g. a malformed tagged binary value).
    #[error("cannot encode message as {encoding}: {reason}")]
    Encode { encoding: Encoding, reason: String },

    /// The algorithm sent a message that is not valid in the session's current state.
    #[error("algorithm sent `{command}` while the session is {state}; expected {expected}")]
    UnexpectedMessage {
        command: String,
        state: State,
        expected: &'static str,
    },

    /// The worker tried to send a message that is not valid in the session's current state.
    #[error("cannot send `{command}` while the session is {state}")]
    CannotSend { command: String, state: State },
}
