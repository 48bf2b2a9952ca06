//! One task in one fresh instance: the WASI command ABI.
//!
//! The module's `_start` runs with the task's args object as JSON on stdin and its result is
//! the JSON it writes on stdout; what it writes on stderr is the task's log. A trap, a
//! non-zero exit, a stop, the time limit or the memory limit ends the instance, never the
//! thread or the server: each task has a store of its own, dropped when it ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use wasmtime::{Extern, InstancePre, Memory, ModuleExport, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::stdio::{Input, Output};

use super::Sandbox as WasmAlgorithm;

/// The most a module may write on stdout (its result) and on stderr (its log).
const MAX_STDOUT: usize = 256 << 20;
const MAX_STDERR: usize = 4 << 20;
/// Lines of the log that go into a failed task's error.
const ERROR_LOG_LINES: usize = 10;

/// What a store holds: the module's WASI context, its stdio (served by `stdio`) and its
/// memory limit.
pub struct State {
    pub wasi: WasiP1Ctx,
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
    /// The instance's exported `memory`, which WASI calls address: found once per task rather
    /// than by name in every `fd_read` and `fd_write` (a twentieth of a no-op task's time).
    pub memory: Option<Memory>,
    limits: Limits,
}

/// A module ready to instantiate, with its exports `_start` and `memory` located once, so a
/// task finds them by index rather than by name.
pub struct Ready {
    pub pre: InstancePre<State>,
    start: ModuleExport,
    memory: Option<ModuleExport>,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wasm::Ready")
    }
}

impl Ready {
    /// `start`: the module's `_start` (`Module::get_export_index`).
    pub fn new(pre: InstancePre<State>, start: ModuleExport) -> Ready {
        let memory = pre.module().get_export_index("memory");
        Ready { pre, start, memory }
    }
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

/// Runs one task: `args` is the JSON object the module reads on stdin (moved, not copied);
/// `stop` set from another thread ends the run at the next epoch tick.
pub fn run(algorithm: &WasmAlgorithm, ready: &Ready, args: Vec<u8>, stop: &Arc<AtomicBool>) -> Ran {
    let (result, stdout, log) = instantiate_and_start(algorithm, ready, args, stop);
    let result = match result {
        Ok(()) => parse_result(&stdout),
        Err(error) => Err(with_log(error, &log)),
    };
    Ran { result, log }
}

/// Runs `_start` in a fresh instance: how it ended, then what it wrote on stdout and stderr.
fn instantiate_and_start(
    algorithm: &WasmAlgorithm,
    ready: &Ready,
    args: Vec<u8>,
    stop: &Arc<AtomicBool>,
) -> (Result<(), String>, Vec<u8>, Vec<u8>) {
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(&[algorithm.name.as_str()]).envs(&algorithm.env);
    for dir in &algorithm.dirs {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        if let Err(e) = wasi.preopened_dir(&dir.host, &dir.guest, perms) {
            let error = format!("cannot open {} for the module: {e:#}", dir.host.display());
            return (Err(error), Vec::new(), Vec::new());
        }
    }
    let state = State {
        wasi: wasi.build_p1(),
        stdin: Input::new(args),
        stdout: Output::new("stdout", MAX_STDOUT),
        stderr: Output::new("stderr", MAX_STDERR),
        memory: None,
        limits: Limits {
            max_bytes: usize::try_from(algorithm.mem_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            mem: algorithm.mem.clone(),
        },
    };
    let mut store = Store::new(ready.pre.module().engine(), state);
    let result = start(algorithm, ready, stop, &mut store);
    let state = store.data_mut();
    let stdout = std::mem::take(&mut state.stdout.bytes);
    let stderr = std::mem::take(&mut state.stderr.bytes);
    (result, stdout, stderr)
}

fn start(
    algorithm: &WasmAlgorithm,
    ready: &Ready,
    stop: &Arc<AtomicBool>,
    store: &mut Store<State>,
) -> Result<(), String> {
    store.limiter(|state| &mut state.limits);
    let deadline = algorithm
        .time_limit
        .map(|limit| (Instant::now() + limit, limit));
    let flag = Arc::clone(stop);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if flag.load(Ordering::Relaxed) {
            return Err(wasmtime::Error::new(Stop::Cancelled));
        }
        match deadline {
            Some((at, limit)) if Instant::now() >= at => {
                Err(wasmtime::Error::new(Stop::TimeLimit(limit)))
            }
            _ => Ok(UpdateDeadline::Continue(1)),
        }
    });
    let instance = ready.pre.instantiate(&mut *store).map_err(describe)?;
    if let Some(export) = &ready.memory {
        if let Some(Extern::Memory(memory)) = instance.get_module_export(&mut *store, export) {
            store.data_mut().memory = Some(memory);
        }
    }
    let start = match instance.get_module_export(&mut *store, &ready.start) {
        Some(Extern::Func(start)) => start.typed::<(), ()>(&*store).map_err(describe)?,
        _ => return Err("the module's _start is not a function".into()),
    };
    match start.call(&mut *store, ()) {
        Ok(()) => Ok(()),
        Err(error) => match error.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => Ok(()),
            Some(I32Exit(code)) => Err(format!("the module exited with code {code}")),
            None => Err(describe(error)),
        },
    }
}

/// A trap or a stop as the task's error: hkube's reason first, else wasmtime's trap message
/// with the module's backtrace.
fn describe(error: wasmtime::Error) -> String {
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
fn with_log(error: String, log: &[u8]) -> String {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return error;
    }
    let tail = &lines[lines.len().saturating_sub(ERROR_LOG_LINES)..];
    format!("{error}\nstderr:\n{}", tail.join("\n"))
}

/// The module's stdout as its result: JSON, or `null` when it wrote nothing.
fn parse_result(stdout: &[u8]) -> Result<Value, String> {
    let text = stdout.trim_ascii();
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(text).map_err(|e| {
        let shown = String::from_utf8_lossy(&text[..text.len().min(200)]).to_string();
        format!(
            "the module's stdout is not one JSON value ({e}): it began {shown:?}; write the result as JSON on stdout and logs on stderr"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_is_the_result() {
        assert_eq!(parse_result(b" 6\n"), Ok(serde_json::json!(6)));
        assert_eq!(parse_result(b""), Ok(Value::Null));
        let error = parse_result(b"result: 6").unwrap_err();
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
