//! A task's stdin, stdout and stderr, served by hkube itself rather than through WASI's
//! streams.
//!
//! Every WASI command reads its args on stdin and writes its result on stdout, so these are
//! the calls every task makes. wasmtime-wasi serves each of them by entering a tokio runtime
//! and blocking on a future, with a tracing span around it: measured at about a tenth of the
//! CPU of a no-op task (docs/wasm.md). Here `fd_read` on fd 0 and `fd_write` on fds 1 and 2
//! copy straight between the module's memory and the task's buffers; every other descriptor
//! (the preopened directories' files) still goes to wasmtime-wasi.
//!
//! The copying is pure ([`read`], [`write`]) and checks every guest pointer: a module that
//! passes a bad one gets `EFAULT`, as from WASI.

use wasmtime::{Caller, Extern, Linker};
use wasmtime_wasi::p1::wasi_snapshot_preview1 as wasi;

use super::task::State;

/// WASI preview 1 errno values used here.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;

const STDIN: i32 = 0;
const STDOUT: i32 = 1;
const STDERR: i32 = 2;

/// What a task reads on stdin: its args, then end of file.
#[derive(Debug, Default)]
pub struct Input {
    bytes: Vec<u8>,
    at: usize,
}

impl Input {
    pub fn new(bytes: Vec<u8>) -> Input {
        Input { bytes, at: 0 }
    }
}

/// What a task writes on stdout or stderr, up to `limit` bytes.
#[derive(Debug)]
pub struct Output {
    pub bytes: Vec<u8>,
    limit: usize,
    name: &'static str,
}

impl Output {
    pub fn new(name: &'static str, limit: usize) -> Output {
        Output {
            bytes: Vec::new(),
            limit,
            name,
        }
    }

    /// `bytes` appended, or all refused past the limit.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), TooMuch> {
        if self.bytes.len() + bytes.len() > self.limit {
            return Err(TooMuch {
                name: self.name,
                limit: self.limit,
            });
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }
}

/// Writing past an output's limit ends the task with this, rather than a failed write the
/// module may ignore and a result cut short.
#[derive(Debug, thiserror::Error)]
#[error("wrote more than {} MiB on {name}; write large results to storage instead", limit >> 20)]
pub struct TooMuch {
    name: &'static str,
    limit: usize,
}

/// The `(address, length)` pairs of a WASI iovec array at `iovs`, checked against `memory`.
fn iovecs(memory: &[u8], iovs: i32, count: i32) -> Option<Vec<(usize, usize)>> {
    let start = iovs as u32 as usize;
    let count = count as u32 as usize;
    let table = memory.get(start..start.checked_add(count.checked_mul(8)?)?)?;
    table
        .chunks_exact(8)
        .map(|pair| {
            let at = u32::from_le_bytes(pair[..4].try_into().ok()?) as usize;
            let len = u32::from_le_bytes(pair[4..].try_into().ok()?) as usize;
            memory.get(at..at.checked_add(len)?)?;
            Some((at, len))
        })
        .collect()
}

/// Stores `value` at `at` in little-endian, as WASI's result pointers are written.
fn store_u32(memory: &mut [u8], at: i32, value: u32) -> bool {
    let at = at as u32 as usize;
    match at.checked_add(4).and_then(|end| memory.get_mut(at..end)) {
        Some(slot) => {
            slot.copy_from_slice(&value.to_le_bytes());
            true
        }
        None => false,
    }
}

/// `fd_read` of stdin: fills the iovecs in order from what is left of the input, and stores
/// how many bytes it gave at `nread` (0 at the end). Returns the errno.
pub fn read(memory: &mut [u8], input: &mut Input, iovs: i32, count: i32, nread: i32) -> i32 {
    let Some(buffers) = iovecs(memory, iovs, count) else {
        return ERRNO_FAULT;
    };
    let mut given = 0usize;
    for (at, len) in buffers {
        let left = &input.bytes[input.at..];
        let n = len.min(left.len());
        memory[at..at + n].copy_from_slice(&left[..n]);
        input.at += n;
        given += n;
        if input.at == input.bytes.len() {
            break;
        }
    }
    if !store_u32(memory, nread, given as u32) {
        return ERRNO_FAULT;
    }
    ERRNO_SUCCESS
}

/// `fd_write` to stdout or stderr: appends the iovecs in order and stores how many bytes it
/// took at `nwritten`. Returns the errno, or [`TooMuch`] past the output's limit.
pub fn write(
    memory: &mut [u8],
    output: &mut Output,
    iovs: i32,
    count: i32,
    nwritten: i32,
) -> Result<i32, TooMuch> {
    let Some(buffers) = iovecs(memory, iovs, count) else {
        return Ok(ERRNO_FAULT);
    };
    let total: usize = buffers.iter().map(|(_, len)| len).sum();
    if output.bytes.len() + total > output.limit {
        return Err(TooMuch {
            name: output.name,
            limit: output.limit,
        });
    }
    for (at, len) in buffers {
        output.bytes.extend_from_slice(&memory[at..at + len]);
    }
    if !store_u32(memory, nwritten, total as u32) {
        return Ok(ERRNO_FAULT);
    }
    Ok(ERRNO_SUCCESS)
}

/// Defines `fd_read` and `fd_write` over wasmtime-wasi's: stdio here, the rest passed on.
pub fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "fd_read",
        |mut caller: Caller<'_, State>, fd: i32, iovs: i32, count: i32, nread: i32| {
            let memory = exported_memory(&mut caller)?;
            let (memory, state) = memory.data_and_store_mut(&mut caller);
            if fd == STDIN {
                return Ok(read(memory, &mut state.stdin, iovs, count, nread));
            }
            let mut memory = wiggle::GuestMemory::Unshared(memory);
            wasmtime_wasi::runtime::in_tokio(wasi::fd_read(
                &mut state.wasi,
                &mut memory,
                fd,
                iovs,
                count,
                nread,
            ))
        },
    )?;
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "fd_write",
        |mut caller: Caller<'_, State>, fd: i32, iovs: i32, count: i32, nwritten: i32| {
            let memory = exported_memory(&mut caller)?;
            let (memory, state) = memory.data_and_store_mut(&mut caller);
            let output = match fd {
                // The function ABI's result goes through hkube.output: its stdout is log.
                STDOUT if state.stdout_is_log => &mut state.stderr,
                STDOUT => &mut state.stdout,
                STDERR => &mut state.stderr,
                _ => {
                    let mut memory = wiggle::GuestMemory::Unshared(memory);
                    return wasmtime_wasi::runtime::in_tokio(wasi::fd_write(
                        &mut state.wasi,
                        &mut memory,
                        fd,
                        iovs,
                        count,
                        nwritten,
                    ));
                }
            };
            write(memory, output, iovs, count, nwritten).map_err(wasmtime::Error::new)
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The module's memory, which WASI calls address (a WASI command exports it as `memory`):
/// the task found it once after instantiation (`task::State::memory`). A call made during
/// instantiation (by a module's start function) comes before that, and looks it up by name.
fn exported_memory(caller: &mut Caller<'_, State>) -> wasmtime::Result<wasmtime::Memory> {
    if let Some(memory) = caller.data().memory {
        return Ok(memory);
    }
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(wasmtime::Error::msg(
            "the module exports no memory named \"memory\", which WASI calls need",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory with an iovec table at 0 naming the given (address, length) buffers.
    fn memory_with(buffers: &[(u32, u32)]) -> Vec<u8> {
        let mut memory = vec![0u8; 256];
        for (i, (at, len)) in buffers.iter().enumerate() {
            memory[i * 8..i * 8 + 4].copy_from_slice(&at.to_le_bytes());
            memory[i * 8 + 4..i * 8 + 8].copy_from_slice(&len.to_le_bytes());
        }
        memory
    }

    fn u32_at(memory: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(memory[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn stdin_fills_the_buffers_in_order_then_reads_as_the_end() {
        let mut input = Input::new(b"{\"input\":[1,2]}".to_vec());
        let mut memory = memory_with(&[(100, 4), (120, 64)]);
        assert_eq!(read(&mut memory, &mut input, 0, 2, 200), ERRNO_SUCCESS);
        assert_eq!(u32_at(&memory, 200), 15);
        assert_eq!(&memory[100..104], b"{\"in");
        assert_eq!(&memory[120..131], b"put\":[1,2]}");
        assert_eq!(read(&mut memory, &mut input, 0, 2, 200), ERRNO_SUCCESS);
        assert_eq!(u32_at(&memory, 200), 0, "the end of stdin");
    }

    #[test]
    fn stdout_takes_every_buffer_up_to_its_limit() {
        let mut memory = memory_with(&[(100, 3), (120, 2)]);
        memory[100..103].copy_from_slice(b"4 2");
        memory[120..122].copy_from_slice(b"\n!");
        let mut output = Output::new("stdout", 8);
        assert_eq!(write(&mut memory, &mut output, 0, 2, 200).unwrap(), 0);
        assert_eq!(output.bytes, b"4 2\n!");
        assert_eq!(u32_at(&memory, 200), 5);
        let error = write(&mut memory, &mut output, 0, 2, 200).unwrap_err();
        assert!(error.to_string().starts_with("wrote more than "), "{error}");
        assert!(error.to_string().contains(" on stdout;"), "{error}");
        assert_eq!(
            output.bytes, b"4 2\n!",
            "nothing of a refused write is kept"
        );
    }

    #[test]
    fn a_pointer_outside_the_memory_is_a_fault_not_a_panic() {
        let mut input = Input::new(b"x".to_vec());
        let mut output = Output::new("stdout", 1 << 20);
        // The iovec table itself outside the memory.
        let mut memory = memory_with(&[]);
        assert_eq!(read(&mut memory, &mut input, 250, 2, 200), ERRNO_FAULT);
        assert_eq!(read(&mut memory, &mut input, -8, 1, 200), ERRNO_FAULT);
        // A buffer running past the end.
        let mut memory = memory_with(&[(250, 10)]);
        assert_eq!(read(&mut memory, &mut input, 0, 1, 200), ERRNO_FAULT);
        assert_eq!(
            write(&mut memory, &mut output, 0, 1, 200).unwrap(),
            ERRNO_FAULT
        );
        // The result pointer outside.
        let mut memory = memory_with(&[(100, 1)]);
        assert_eq!(read(&mut memory, &mut input, 0, 1, 254), ERRNO_FAULT);
        assert_eq!(
            write(&mut memory, &mut output, 0, 1, 1000).unwrap(),
            ERRNO_FAULT
        );
    }
}
