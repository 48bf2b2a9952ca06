//! The function ABI: one live instance per worker, a call per task.
//!
//! The instance is made at the worker's first task (its `_initialize` run once, when it has
//! one) and kept for the next ones, as a warm Python worker keeps its process: what a task
//! leaves in the module's globals, the next task of that worker sees. A task is
//! - `hkube_alloc(len)`: the module returns a buffer of `len` bytes, which hkube fills with
//!   the args object as JSON (the same object the command ABI reads on stdin);
//! - `hkube_start(ptr, len)`: the module runs the task (the buffer is now its own to free)
//!   and gives its result as JSON to the import `hkube.output(ptr, len)`; it returns 0, or
//!   another status to fail the task with what it gave `hkube.output` as the error.
//!
//! stdout and stderr are the task's log. A trap, `proc_exit`, a stop, the time limit or the
//! memory limit fails the task and ends the instance: the worker's next task gets a fresh
//! one. So does a new version of the module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wasmtime::{Caller, Extern, Linker, Memory, Store, TypedFunc};

use super::abi::{Abi, HOST_MODULE, OUTPUT};
use super::runner::Prepared;
use super::task::{self, Ran, State};

/// A live instance of a function-ABI module, for one worker's tasks.
pub struct Live {
    /// What it is an instance of: a worker whose lookup returns another (a new version)
    /// makes a new instance.
    pub prepared: Arc<Prepared>,
    store: Store<State>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    start: TypedFunc<(i32, i32), i32>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wasm::function::Live")
    }
}

/// Whether an instance may run its worker's next task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Keep,
    /// It trapped, exited, or was stopped: its state is not to be trusted.
    Drop,
}

impl Live {
    /// A new instance of `prepared`'s module, initialised (`_initialize`, under the
    /// algorithm's limits and `stop`). `Err` is the first task's error, with what the module
    /// wrote on stderr meanwhile.
    pub fn new(prepared: Arc<Prepared>, stop: &Arc<AtomicBool>) -> Result<Live, Ran> {
        let failed = |error: String, log: Vec<u8>| Ran {
            result: Err(task::with_log(error, &log)),
            log,
        };
        let ready = &prepared.pre;
        let Abi::Function {
            alloc,
            start,
            initialize,
        } = &ready.abi
        else {
            return Err(failed(
                "the module does not export hkube's function ABI".into(),
                Vec::new(),
            ));
        };
        let mut store = task::new_store(&prepared.sandbox, ready, Vec::new(), true)
            .map_err(|error| failed(error, Vec::new()))?;
        task::arm(&mut store, stop, prepared.sandbox.time_limit);
        let made = (|| {
            let instance = task::instantiate(ready, &mut store)?;
            let func = |store: &mut Store<State>, export| match instance
                .get_module_export(&mut *store, export)
            {
                Some(Extern::Func(func)) => Ok(func),
                _ => Err("an export of the function ABI is not a function".to_string()),
            };
            let alloc = func(&mut store, alloc)?
                .typed::<i32, i32>(&store)
                .map_err(task::describe)?;
            let start = func(&mut store, start)?
                .typed::<(i32, i32), i32>(&store)
                .map_err(task::describe)?;
            if let Some(initialize) = initialize {
                let initialize = func(&mut store, initialize)?
                    .typed::<(), ()>(&store)
                    .map_err(task::describe)?;
                if task::exited(initialize.call(&mut store, ()))?.is_none() {
                    return Err("the module exited in _initialize".into());
                }
            }
            let memory = store
                .data()
                .memory
                .ok_or_else(|| "the module exports no memory named \"memory\"".to_string())?;
            Ok((alloc, start, memory))
        })();
        match made {
            Ok((alloc, start, memory)) => Ok(Live {
                prepared,
                store,
                memory,
                alloc,
                start,
            }),
            Err(error) => {
                let log = std::mem::take(&mut store.data_mut().stderr.bytes);
                Err(failed(error, log))
            }
        }
    }

    /// One task: its args (JSON) in, its result out; and whether the instance may run the
    /// next one.
    pub fn run(&mut self, args: &[u8], stop: &Arc<AtomicBool>) -> (Ran, After) {
        task::arm(&mut self.store, stop, self.prepared.sandbox.time_limit);
        let called = self.call(args);
        let state = self.store.data_mut();
        let log = std::mem::take(&mut state.stderr.bytes);
        let output = std::mem::take(&mut state.output.bytes);
        let (result, after) = match called {
            Ok(Some(0)) => (task::parse_result(&output, "hkube.output"), After::Keep),
            Ok(Some(status)) => {
                let message = String::from_utf8_lossy(output.trim_ascii()).into_owned();
                let error = if message.is_empty() {
                    format!("the module's hkube_start returned {status}")
                } else {
                    message
                };
                (Err(task::with_log(error, &log)), After::Keep)
            }
            // `proc_exit(0)`: what it gave as output is its result; the instance is done.
            Ok(None) => (task::parse_result(&output, "hkube.output"), After::Drop),
            Err(error) if stop.load(Ordering::Relaxed) => (Err(error), After::Drop),
            Err(error) => (Err(task::with_log(error, &log)), After::Drop),
        };
        (Ran { result, log }, after)
    }

    /// `hkube_alloc`, the args copied into the buffer, `hkube_start`: its status, `None` for
    /// a `proc_exit(0)`.
    fn call(&mut self, args: &[u8]) -> Result<Option<i32>, String> {
        let len = i32::try_from(args.len())
            .map_err(|_| format!("the task's args are {} bytes, beyond 2 GiB", args.len()))?;
        let Some(at) = task::exited(self.alloc.call(&mut self.store, len))? else {
            return Ok(None);
        };
        self.memory
            .write(&mut self.store, at as u32 as usize, args)
            .map_err(|_| {
                format!(
                    "the module's hkube_alloc({len}) returned {at}, and {len} bytes from there \
                     are outside its memory"
                )
            })?;
        task::exited(self.start.call(&mut self.store, (at, len)))
    }
}

/// Defines `hkube.output(ptr, len)`: the bytes at `ptr..ptr + len` of the module's memory
/// appended to its task's output. A range outside the memory traps, saying so.
pub fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        OUTPUT,
        |mut caller: Caller<'_, State>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let Some(memory) = caller.data().memory else {
                return Err(wasmtime::Error::msg(
                    "hkube.output was called before the module's memory was known",
                ));
            };
            let (memory, state) = memory.data_and_store_mut(&mut caller);
            let (at, len) = (ptr as u32 as usize, len as u32 as usize);
            let Some(bytes) = at.checked_add(len).and_then(|end| memory.get(at..end)) else {
                return Err(wasmtime::Error::msg(format!(
                    "hkube.output({ptr}, {len}): that range is outside the module's memory"
                )));
            };
            state.output.append(bytes).map_err(wasmtime::Error::new)
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::super::module::Runtime;
    use super::super::runner::Runner;
    use super::super::Sandbox;
    use super::*;

    /// A function-ABI module that counts its tasks. The args object begins `{"input":[`, so
    /// the byte at `ptr + 10` is the first input's first digit, which picks what the task
    /// does: 1 answers the count, 2 traps, 3 fails with status 7 and a message, 4 loops,
    /// 5 writes on stdout then answers, 6 asks for 128 MiB, 7 answers how many times
    /// `_initialize` ran in this instance.
    const COUNTER: &str = r#"(module
      (import "hkube" "output" (func $output (param i32 i32)))
      (import "wasi_snapshot_preview1" "fd_write"
        (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (global $n (mut i32) (i32.const 0))
      (global $inits (mut i32) (i32.const 0))
      (data (i32.const 100) "bad input")
      (data (i32.const 120) "hello\n")
      (func (export "_initialize") (global.set $inits (i32.add (global.get $inits) (i32.const 1))))
      (func (export "hkube_alloc") (param $len i32) (result i32) (i32.const 1024))
      (func $digit (param $d i32)
        (i32.store8 (i32.const 0) (i32.add (i32.const 48) (local.get $d)))
        (call $output (i32.const 0) (i32.const 1)))
      (func (export "hkube_start") (param $ptr i32) (param $len i32) (result i32)
        (local $what i32)
        (global.set $n (i32.add (global.get $n) (i32.const 1)))
        (local.set $what (i32.sub (i32.load8_u (i32.add (local.get $ptr) (i32.const 10))) (i32.const 48)))
        (if (i32.eq (local.get $what) (i32.const 2)) (then unreachable))
        (if (i32.eq (local.get $what) (i32.const 3)) (then
          (call $output (i32.const 100) (i32.const 9))
          (return (i32.const 7))))
        (if (i32.eq (local.get $what) (i32.const 4)) (then (loop $forever (br $forever))))
        (if (i32.eq (local.get $what) (i32.const 5)) (then
          (i32.store (i32.const 16) (i32.const 120))
          (i32.store (i32.const 20) (i32.const 6))
          (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))
        (if (i32.eq (local.get $what) (i32.const 6)) (then (drop (memory.grow (i32.const 2048)))))
        (if (i32.eq (local.get $what) (i32.const 7)) (then
          (call $digit (global.get $inits))
          (return (i32.const 0))))
        (call $digit (global.get $n))
        (i32.const 0)))"#;

    fn prepared(runtime: &Runtime, time_limit: Option<Duration>) -> Arc<Prepared> {
        let sandbox = Sandbox {
            name: "counter".into(),
            mem: "64Mi".into(),
            mem_mib: 64,
            time_limit,
            dirs: Vec::new(),
            env: Vec::new(),
        };
        let pre = runtime.prepare(COUNTER.as_bytes()).unwrap();
        assert!(matches!(pre.abi, Abi::Function { .. }), "{:?}", pre.abi);
        Arc::new(Prepared { sandbox, pre })
    }

    fn task(runner: &mut Runner, prepared: &Arc<Prepared>, what: u8) -> Ran {
        let args = format!(r#"{{"input":[{what}],"jobId":"j"}}"#).into_bytes();
        runner.run(prepared, args, &Arc::default())
    }

    fn answer(ran: Ran) -> serde_json::Value {
        ran.result.unwrap()
    }

    #[test]
    fn a_worker_s_tasks_share_one_instance_initialised_once() {
        let runtime = Runtime::new(None).unwrap();
        let prepared = prepared(&runtime, None);
        let mut runner = Runner::default();
        assert_eq!(answer(task(&mut runner, &prepared, 1)), json!(1));
        assert_eq!(answer(task(&mut runner, &prepared, 1)), json!(2));
        assert_eq!(answer(task(&mut runner, &prepared, 1)), json!(3));
        assert_eq!(answer(task(&mut runner, &prepared, 7)), json!(1));
        // Another worker has its own instance.
        assert_eq!(answer(task(&mut Runner::default(), &prepared, 1)), json!(1));
        // A new version of the module is a new instance.
        let next = self::prepared(&runtime, None);
        assert_eq!(answer(task(&mut runner, &next, 1)), json!(1));
    }

    #[test]
    fn a_trap_fails_its_task_and_the_next_task_gets_a_fresh_instance() {
        let runtime = Runtime::new(None).unwrap();
        let prepared = prepared(&runtime, None);
        let mut runner = Runner::default();
        assert_eq!(answer(task(&mut runner, &prepared, 1)), json!(1));
        let error = task(&mut runner, &prepared, 2).result.unwrap_err();
        assert!(error.contains("unreachable"), "{error}");
        assert_eq!(answer(task(&mut runner, &prepared, 1)), json!(1));
    }

    #[test]
    fn a_status_other_than_0_fails_the_task_with_its_output_and_keeps_the_instance() {
        let runtime = Runtime::new(None).unwrap();
        let prepared = prepared(&runtime, None);
        let mut runner = Runner::default();
        assert_eq!(answer(task(&mut runner, &prepared, 1)), json!(1));
        assert_eq!(
            task(&mut runner, &prepared, 3).result.unwrap_err(),
            "bad input"
        );
        assert_eq!(answer(task(&mut runner, &prepared, 1)), json!(3));
    }

    #[test]
    fn stdout_is_the_task_s_log_and_the_result_is_what_output_was_given() {
        let runtime = Runtime::new(None).unwrap();
        let prepared = prepared(&runtime, None);
        let ran = task(&mut Runner::default(), &prepared, 5);
        assert_eq!(ran.log, b"hello\n");
        assert_eq!(ran.result.unwrap(), json!(1));
    }

    #[test]
    fn the_time_limit_a_stop_and_the_memory_limit_end_the_instance() {
        let runtime = Runtime::new(None).unwrap();
        let limited = prepared(&runtime, Some(Duration::from_millis(50)));
        let mut runner = Runner::default();
        assert_eq!(answer(task(&mut runner, &limited, 1)), json!(1));
        let error = task(&mut runner, &limited, 4).result.unwrap_err();
        assert!(error.contains("exceeded its time limit of 50ms"), "{error}");
        assert_eq!(answer(task(&mut runner, &limited, 1)), json!(1));

        let unlimited = prepared(&runtime, None);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            flag.store(true, Ordering::Relaxed);
        });
        let args = br#"{"input":[4]}"#.to_vec();
        let error = runner.run(&unlimited, args, &stop).result.unwrap_err();
        stopper.join().unwrap();
        assert_eq!(error, "the module stopped");
        assert_eq!(answer(task(&mut runner, &unlimited, 1)), json!(1));

        let error = task(&mut runner, &unlimited, 6).result.unwrap_err();
        assert!(error.contains("ran out of memory"), "{error}");
        assert_eq!(answer(task(&mut runner, &unlimited, 1)), json!(1));
    }
}
