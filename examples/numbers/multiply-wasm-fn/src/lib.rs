//! Multiply: one batch item times k, with hkube's function ABI. Its worker keeps one instance
//! of this module and calls `hkube_start` once per task: no instantiation per task, and what
//! the module keeps in its globals stays from one task to the next (as a warm Python
//! worker's process does). The args object (`{"input": [item, k], ...}`) arrives in a buffer
//! the module gave from `hkube_alloc`; the result goes to `hkube.output` as JSON; stderr and
//! stdout are the task's log. A non-zero status fails the task with the text given to
//! `hkube.output`; a panic (a trap) fails it with the panic's message, and its worker's next
//! task gets a fresh instance.

use serde_json::{json, Value};

#[link(wasm_import_module = "hkube")]
extern "C" {
    /// Gives hkube the task's result (or, with a non-zero status, its error): `len` bytes at
    /// `ptr`, copied before it returns.
    fn output(ptr: *const u8, len: usize);
}

/// A buffer of `len` bytes for the task's args; `hkube_start` takes it back.
#[no_mangle]
pub extern "C" fn hkube_alloc(len: usize) -> *mut u8 {
    Box::into_raw(vec![0u8; len].into_boxed_slice()).cast()
}

/// Runs one task on the args at `ptr..ptr + len` (a buffer from `hkube_alloc`): 0 when it
/// gave its result to `hkube.output`, 1 when it gave an error.
///
/// # Safety
/// hkube calls it with a buffer `hkube_alloc(len)` returned, filled with the args.
#[no_mangle]
pub unsafe extern "C" fn hkube_start(ptr: *mut u8, len: usize) -> i32 {
    // SAFETY: the buffer is the one hkube_alloc(len) made, given back once.
    let args = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) };
    let (status, text) = match run(&args) {
        Ok(result) => (0, result.to_string()),
        Err(error) => (1, error),
    };
    // SAFETY: the text lives until output returns, and hkube copies it.
    unsafe { output(text.as_ptr(), text.len()) };
    status
}

fn run(args: &[u8]) -> Result<Value, String> {
    let args: Value =
        serde_json::from_slice(args).map_err(|e| format!("the args are not JSON: {e}"))?;
    match args["input"].as_array().map(Vec::as_slice) {
        Some([item, k]) => multiply(item, k),
        _ => Err(format!("multiply takes [item, k], got {}", args["input"])),
    }
}

/// Integers stay integers (as Python's `item * k`); anything else is multiplied as floats.
fn multiply(item: &Value, k: &Value) -> Result<Value, String> {
    match (item.as_i64(), k.as_i64()) {
        (Some(a), Some(b)) => Ok(match a.checked_mul(b) {
            Some(product) => json!(product),
            None => json!(a as f64 * b as f64),
        }),
        _ => match (item.as_f64(), k.as_f64()) {
            (Some(a), Some(b)) => Ok(json!(a * b)),
            _ => Err(format!("multiply takes numbers, got {item} and {k}")),
        },
    }
}
