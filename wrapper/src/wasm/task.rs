//! One task in one fresh instance: the WASI command ABI, and what both ABIs share (a
//! store's state, its limits, how a run ends).
//!
//! The module's `_start` runs with the task's args object as JSON on stdin and its result is
//! the JSON it writes on stdout; what it writes on stderr is the task's log. A trap, a
//! non-zero exit, a stop, the time limit or the memory limit ends the instance, never the
//! thread or the server: each task has a store of its own, dropped when it ends. The
//! function ABI's live instances are in [`super::function`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmtime::{Extern, Memory, ResourceLimiter, Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::abi::{Abi, Ready};
use super::stdio::{Input, Output};

use super::Sandbox as WasmAlgorithm;

/// The most a module may write on stdout (its result) and on stderr (its log).
pub(super) const MAX_STDOUT: usize = 256 << 20;
const MAX_STDERR: usize = 4 << 20;
/// Lines of the log that go into a failed task's error.
const ERROR_LOG_LINES: usize = 10;

/// What a store holds: the module's WASI context, its stdio (served by `stdio`), the
/// function ABI's output, its memory limit and what stops its current task.
pub struct State {
    pub wasi: WasiP1Ctx,
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
    /// What the function ABI's `hkube.output` was given: the task's result, or its error.
    pub output: Output,
    /// The function ABI's stdout is log, as stderr is (its result goes through `output`).
    pub stdout_is_log: bool,
    /// The instance's exported `memory`, which WASI calls address: found once per instance
    /// rather than by name in every `fd_read` and `fd_write` (a twentieth of a no-op task's
    /// time).
    pub memory: Option<Memory>,
    limits: Limits,
    /// The running task's stop flag and deadline, read at each epoch tick.
    stop: Arc<AtomicBool>,
    deadline: Option<(Instant, Duration)>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wasm::State")
    }
}

/// The memory limit from `mem`. A module that asks for more traps with a message saying so,
/// rather than seeing its allocation fail and aborting with a bare `unreachable`.
struct Limits {
    max_bytes: usize,
    mem: String,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            return Err(wasmtime::Error::new(Stop::Memory {
                current,
                desired,
                mem: self.mem.clone(),
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Why hkube ended an instance.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("stopped")]
    Cancelled,
    #[error("exceeded its time limit of {0:?}")]
    TimeLimit(std::time::Duration),
    #[error(
        "ran out of memory: it asked for {} MiB (it had {} MiB), beyond its limit mem: {mem}; raise mem in the algorithm",
        desired >> 20,
        current >> 20
    )]
    Memory {
        current: usize,
        desired: usize,
        mem: String,
    },
}

/// How a run ended, with what the module wrote on stderr.
#[derive(Debug)]
pub struct Ran {
    pub result: Result<Value, String>,
    pub log: Vec<u8>,
}

/// Runs one task in a fresh instance (the command ABI): `args` is the JSON object the module
/// reads on stdin (moved, not copied); `stop` set from another thread ends the run at the
/// next epoch tick.
pub fn run(algorithm: &WasmAlgorithm, ready: &Ready, args: Vec<u8>, stop: &Arc<AtomicBool>) -> Ran {
    let mut store = match new_store(algorithm, ready, args, false) {
        Ok(store) => store,
        Err(error) => {
            return Ran {
                result: Err(error),
                log: Vec::new(),
            }
        }
    };
    arm(&mut store, stop, algorithm.time_limit);
    let result = start(ready, &mut store);
    let state = store.data_mut();
    let log = std::mem::take(&mut state.stderr.bytes);
    let result = match result {
        Ok(()) => parse_result(&state.stdout.bytes, "stdout"),
        Err(error) => Err(with_log(error, &log)),
    };
    Ran { result, log }
}

/// A store for one instance of `ready`'s module: its WASI context (the algorithm's folders
/// and variables), `stdin` to read, and its memory limit. Stopped at an epoch tick once its
/// task's flag is set or its deadline passed ([`arm`]).
pub(super) fn new_store(
    algorithm: &WasmAlgorithm,
    ready: &Ready,
    stdin: Vec<u8>,
    stdout_is_log: bool,
) -> Result<Store<State>, String> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(&[algorithm.name.as_str()]).envs(&algorithm.env);
    for dir in &algorithm.dirs {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        wasi.preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|e| format!("cannot open {} for the module: {e:#}", dir.host.display()))?;
    }
    let state = State {
        wasi: wasi.build_p1(),
        stdin: Input::new(stdin),
        stdout: Output::new("stdout", MAX_STDOUT),
        stderr: Output::new("stderr", MAX_STDERR),
        output: Output::new("hkube.output", MAX_STDOUT),
        stdout_is_log,
        memory: None,
        limits: Limits {
            max_bytes: usize::try_from(algorithm.mem_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            mem: algorithm.mem.clone(),
        },
        stop: Arc::default(),
        deadline: None,
    };
    let mut store = Store::new(ready.pre.module().engine(), state);
    store.limiter(|state| &mut state.limits);
    store.epoch_deadline_callback(epoch_tick);
    Ok(store)
}

/// Makes `stop` and `time_limit` (from now) the store's next task's.
pub(super) fn arm(store: &mut Store<State>, stop: &Arc<AtomicBool>, time_limit: Option<Duration>) {
    let state = store.data_mut();
    state.stop = Arc::clone(stop);
    state.deadline = time_limit.map(|limit| (Instant::now() + limit, limit));
    store.set_epoch_deadline(1);
}

/// At each epoch tick while a task runs: a trap if it was stopped or ran past its deadline.
fn epoch_tick(store: StoreContextMut<'_, State>) -> wasmtime::Result<UpdateDeadline> {
    let state = store.data();
    if state.stop.load(Ordering::Relaxed) {
        return Err(wasmtime::Error::new(Stop::Cancelled));
    }
    match state.deadline {
        Some((at, limit)) if Instant::now() >= at => {
            Err(wasmtime::Error::new(Stop::TimeLimit(limit)))
        }
        _ => Ok(UpdateDeadline::Continue(1)),
    }
}

/// Instantiates the module in `store`, keeping its `memory` for WASI's calls.
pub(super) fn instantiate(
    ready: &Ready,
    store: &mut Store<State>,
) -> Result<wasmtime::Instance, String> {
    let instance = ready.pre.instantiate(&mut *store).map_err(describe)?;
    if let Some(export) = &ready.memory {
        if let Some(Extern::Memory(memory)) = instance.get_module_export(&mut *store, export) {
            store.data_mut().memory = Some(memory);
        }
    }
    Ok(instance)
}

/// `_start` in a fresh instance.
fn start(ready: &Ready, store: &mut Store<State>) -> Result<(), String> {
    let Abi::Command { start } = &ready.abi else {
        return Err("the module is not a WASI command (it has no _start)".into());
    };
    let instance = instantiate(ready, store)?;
    let start = match instance.get_module_export(&mut *store, start) {
        Some(Extern::Func(start)) => start.typed::<(), ()>(&*store).map_err(describe)?,
        _ => return Err("the module's _start is not a function".into()),
    };
    exited(start.call(&mut *store, ())).map(|_| ())
}

/// A call's end as a task's: WASI's `proc_exit(0)` is a success, another code a failure.
pub(super) fn exited<T>(called: wasmtime::Result<T>) -> Result<Option<T>, String> {
    match called {
        Ok(value) => Ok(Some(value)),
        Err(error) => match error.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => Ok(None),
            Some(I32Exit(code)) => Err(format!("the module exited with code {code}")),
            None => Err(describe(error)),
        },
    }
}

/// A trap or a stop as the task's error: hkube's reason first, else wasmtime's trap message
/// with the module's backtrace.
pub(super) fn describe(error: wasmtime::Error) -> String {
    if let Some(stop) = error.downcast_ref::<Stop>() {
        return format!("the module {stop}");
    }
    if let Some(too_much) = error.downcast_ref::<super::stdio::TooMuch>() {
        return format!("the module {too_much}");
    }
    format!("the module failed: {error:?}")
}

/// The failure, with the last lines the module wrote on stderr (a Rust panic's message is
/// there, before the trap it causes).
pub(super) fn with_log(error: String, log: &[u8]) -> String {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return error;
    }
    let tail = &lines[lines.len().saturating_sub(ERROR_LOG_LINES)..];
    format!("{error}\nstderr:\n{}", tail.join("\n"))
}

/// The module's stdout (the command ABI) or `hkube.output` (the function ABI) as its result:
/// JSON, or `null` when it wrote nothing.
pub(super) fn parse_result(bytes: &[u8], channel: &str) -> Result<Value, String> {
    let text = bytes.trim_ascii();
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(text).map_err(|e| {
        let shown = String::from_utf8_lossy(&text[..text.len().min(200)]).to_string();
        let how = if channel == "stdout" {
            "write the result as JSON on stdout and logs on stderr"
        } else {
            "give hkube.output the result as JSON, and write logs on stderr"
        };
        format!("the module's {channel} is not one JSON value ({e}): it began {shown:?}; {how}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_is_the_result() {
        assert_eq!(parse_result(b" 6\n", "stdout"), Ok(serde_json::json!(6)));
        assert_eq!(parse_result(b"", "stdout"), Ok(Value::Null));
        let error = parse_result(b"result: 6", "stdout").unwrap_err();
        assert!(error.contains("is not one JSON value"), "{error}");
        assert!(error.contains("\"result: 6\""), "{error}");
    }

    #[test]
    fn a_failure_carries_the_last_lines_of_stderr() {
        let log: String = (1..=12).map(|i| format!("line {i}\n")).collect();
        let text = with_log("the module failed".into(), log.as_bytes());
        assert!(
            text.starts_with("the module failed\nstderr:\nline 3\n"),
            "{text}"
        );
        assert!(text.ends_with("line 12"), "{text}");
        assert_eq!(with_log("x".into(), b"\n"), "x");
    }
}
