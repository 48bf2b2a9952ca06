//! WebAssembly test modules, in the text format (wasmtime reads it; `wat::parse_str` makes a
//! binary of it for an upload), shared by the WASM executor's tests and the Docker
//! executor's.

/// hkube's function ABI: counts the tasks its instance ran and answers the count (one digit,
/// so up to 9); a task whose first input begins with the digit 4 loops instead, until it is
/// stopped. The args object begins `{"input":[`, so that digit is at `ptr + 10`.
pub const COUNTS: &str = r#"(module
  (import "hkube" "output" (func $output (param i32 i32)))
  (memory (export "memory") 1)
  (global $n (mut i32) (i32.const 0))
  (func (export "hkube_alloc") (param $len i32) (result i32) (i32.const 1024))
  (func (export "hkube_start") (param $ptr i32) (param $len i32) (result i32)
    (if (i32.eq (i32.load8_u (i32.add (local.get $ptr) (i32.const 10))) (i32.const 52))
      (then (loop $forever (br $forever))))
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (i32.store8 (i32.const 0) (i32.add (i32.const 48) (global.get $n)))
    (call $output (i32.const 0) (i32.const 1))
    (i32.const 0)))"#;
