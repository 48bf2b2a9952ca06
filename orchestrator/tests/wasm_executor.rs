//! The engine with the WASM executor: real modules compiled and run by wasmtime, in the same
//! DAG as Python and JavaScript workers. Modules written in the WebAssembly text format are
//! compiled by wasmtime's own parser, so most cases need no wasm toolchain; the numbers
//! example's Multiply is the module `examples/numbers/multiply-wasm/build.sh` builds.

#![allow(clippy::unwrap_used)] // a test may panic on the unexpected

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator::engine::{Engine, Executor, Handle, MemoryCatalog};
use orchestrator::executor::local::{LocalExecutor, LocalOptions};
use orchestrator::executor::wasm::{route::Routed, WasmAlgorithm, WasmExecutor, WasmOptions};
use orchestrator::project::{self, Runner};
use orchestrator::spec;
use serde_json::{json, Value};

/// Reads the args object from stdin and writes it back on stdout: the result is the args.
const ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Logs a line on stderr, then traps.
const TRAPS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "about to trap\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 14))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    unreachable))"#;

const EXITS_3: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 3))))"#;

const LOOPS: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))"#;

/// Asks for 128 MiB more memory.
const GREEDY: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (drop (memory.grow (i32.const 2048)))))"#;

/// Writes text that is not JSON.
const CHATTY: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 5))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Tries to open a file through descriptor 3, the first preopened directory, and exits with
/// the errno it gets (0 if it could).
const OPENS_A_FILE: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "secret.txt")
  (func (export "_start")
    (call $exit (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 10)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 8)))))"#;

use testkit::wasm::COUNTS;

fn write_module(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.wat"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The stored descriptor: the engine runs an algorithm that has an image (here, as a built
/// one has, the local executor's marker).
fn wasm_descriptor(name: &str) -> Value {
    json!({"name": name, "env": "wasm", "mem": "64Mi", "algorithmImage": format!("hkube-local/{name}")})
}

fn algorithm(name: &str, module: PathBuf) -> WasmAlgorithm {
    WasmAlgorithm {
        name: name.into(),
        module,
        mem: "64Mi".into(),
        mem_mib: 64,
        time_limit: None,
        dirs: Vec::new(),
        env: Vec::new(),
        // cpu 0.1 and 64Mi with HKube's 20 % reserve.
        request: orchestrator::scheduler::Request {
            cpu_millis: 100,
            mem_mib: 77,
            gpu_hundredths: 0,
        },
        min_hot_workers: 0,
        max_workers: 0,
    }
}

/// An engine whose only executor is the WASM executor (on `threads` threads), with the text
/// modules above registered under their names.
async fn wasm_engine(threads: usize, logs: &Path, modules: &Path) -> (Handle, WasmExecutor) {
    let wasm = WasmExecutor::start(WasmOptions {
        cache_dir: None,
        log_dir: logs.to_path_buf(),
        threads,
    })
    .unwrap();
    let catalog = Arc::new(MemoryCatalog::new());
    for (name, text) in [
        ("echo", ECHO),
        ("traps", TRAPS),
        ("exits", EXITS_3),
        ("loops", LOOPS),
        ("greedy", GREEDY),
        ("chatty", CHATTY),
        ("opens", OPENS_A_FILE),
    ] {
        wasm.register(algorithm(name, write_module(modules, name, text)))
            .await
            .unwrap();
        catalog.put_algorithm(spec::parse_algorithm(wasm_descriptor(name)).unwrap());
    }
    let handle = Engine::spawn(Arc::new(wasm.clone()) as Arc<dyn Executor>, catalog);
    (handle, wasm)
}

async fn run(handle: &Handle, pipeline: Value) -> Value {
    let job = handle.exec_raw(pipeline).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), handle.wait(&job))
        .await
        .expect("the job ended within a minute")
        .unwrap()
}

fn one_node(algorithm: &str, input: Value) -> Value {
    json!({"name": "one", "nodes": [{"nodeName": "A", "algorithmName": algorithm, "input": input}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_reads_its_args_on_stdin_and_answers_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, _wasm) = wasm_engine(2, &dir.path().join("logs"), dir.path()).await;
    let pipeline = json!({"name": "args", "nodes": [
        {"nodeName": "A", "algorithmName": "echo", "input": ["#@flowInput.xs", {"k": "v"}]}],
        "flowInput": {"xs": [1, 2]}});
    let result = run(&handle, pipeline).await;
    assert_eq!(result["status"], "completed", "{result}");
    let outputs = result["data"].as_array().unwrap();
    assert_eq!(outputs.len(), 2);
    let args = &outputs[1]["result"];
    assert_eq!(args["input"], json!([2, {"k": "v"}]), "{args}");
    assert_eq!(args["nodeName"], "A");
    assert_eq!(args["algorithmName"], "echo");
    assert_eq!(args["batchIndex"], 2);
    assert!(args["jobId"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(args["taskId"].as_str().is_some_and(|id| !id.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_an_exit_and_bad_output_fail_their_task_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let (handle, _wasm) = wasm_engine(2, &logs, dir.path()).await;

    let result = run(&handle, one_node("traps", json!([]))).await;
    assert_eq!(result["status"], "failed", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("unreachable"), "{error}");
    assert!(error.ends_with("stderr:\nabout to trap"), "{error}");
    // The module's stderr is its task log.
    let job = result["jobId"].as_str().unwrap();
    let logged: Vec<String> = std::fs::read_dir(logs.join(job))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    assert_eq!(logged, ["about to trap\n"]);

    let result = run(&handle, one_node("exits", json!([]))).await;
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(result["error"], "the module exited with code 3");

    let result = run(&handle, one_node("chatty", json!([]))).await;
    let error = result["error"].as_str().unwrap();
    assert!(
        error.starts_with("the module's stdout is not one JSON value"),
        "{error}"
    );
    assert!(error.contains("\"hello\""), "{error}");
}

/// A new module's first tasks run Winch's code; Cranelift's replaces it once compiled (and
/// kept in the cache, so a new executor over it starts with Cranelift's), and tasks answer
/// the same before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_module_runs_at_once_then_on_cranelift_s_code() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let executor = |cache: &Path| {
        WasmExecutor::start(WasmOptions {
            cache_dir: Some(cache.to_path_buf()),
            log_dir: dir.path().join("logs"),
            threads: 1,
        })
        .unwrap()
    };
    let wasm = executor(&cache);
    wasm.register(algorithm("echo", write_module(dir.path(), "echo", ECHO)))
        .await
        .unwrap();
    assert!(
        !wasm.runs_optimized("echo"),
        "Cranelift's compile is not waited for"
    );
    let catalog = Arc::new(MemoryCatalog::new());
    catalog.put_algorithm(spec::parse_algorithm(wasm_descriptor("echo")).unwrap());
    let handle = Engine::spawn(Arc::new(wasm.clone()) as Arc<dyn Executor>, catalog);
    let result = run(&handle, one_node("echo", json!([1]))).await;
    assert_eq!(result["data"][0]["result"]["input"], json!([1]), "{result}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !wasm.runs_optimized("echo") {
        assert!(Instant::now() < deadline, "Cranelift's code never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let result = run(&handle, one_node("echo", json!([2]))).await;
    assert_eq!(result["data"][0]["result"]["input"], json!([2]), "{result}");

    let restarted = executor(&cache);
    restarted
        .register(algorithm("echo", dir.path().join("echo.wat")))
        .await
        .unwrap();
    assert!(
        restarted.runs_optimized("echo"),
        "the cache holds Cranelift's code"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_is_mem() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, _wasm) = wasm_engine(1, &dir.path().join("logs"), dir.path()).await;
    let result = run(&handle, one_node("greedy", json!([]))).await;
    assert_eq!(result["status"], "failed", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.starts_with("the module ran out of memory: it asked for 128 MiB"),
        "{error}"
    );
    assert!(error.contains("beyond its limit mem: 64Mi"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_ends_at_the_node_ttl_and_frees_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    // One thread: the task after the loop runs only if the loop let it go.
    let (handle, wasm) = wasm_engine(1, &dir.path().join("logs"), dir.path()).await;
    let started = Instant::now();
    let pipeline = json!({"name": "loop", "nodes": [
        {"nodeName": "A", "algorithmName": "loops", "input": [], "ttl": 1}]});
    let result = run(&handle, pipeline).await;
    assert_eq!(result["status"], "failed", "{result}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let result = run(&handle, one_node("echo", json!([7]))).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"][0]["result"]["input"], json!([7]));
    // The looping task is no longer held.
    assert!(!wasm.cancel_held(orchestrator::engine::TaskKey {
        job: 1,
        node: 0,
        task: 0,
        attempt: 0
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_limit_stops_a_loop_without_a_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = WasmExecutor::start(WasmOptions {
        cache_dir: None,
        log_dir: dir.path().join("logs"),
        threads: 1,
    })
    .unwrap();
    let mut looping = algorithm("loops", write_module(dir.path(), "loops", LOOPS));
    looping.time_limit = Some(Duration::from_millis(200));
    wasm.register(looping).await.unwrap();
    let catalog = Arc::new(MemoryCatalog::new());
    catalog.put_algorithm(spec::parse_algorithm(wasm_descriptor("loops")).unwrap());
    let handle = Engine::spawn(Arc::new(wasm), catalog);
    let result = run(&handle, one_node("loops", json!([]))).await;
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(
        result["error"],
        "the module exceeded its time limit of 200ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_sees_no_directory_it_was_not_given() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    let (handle, _wasm) = wasm_engine(1, &dir.path().join("logs"), dir.path()).await;
    let result = run(&handle, one_node("opens", json!([]))).await;
    // EBADF (8): descriptor 3 is not open, there is no preopened directory.
    assert_eq!(result["error"], "the module exited with code 8", "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_does_not_compile_is_refused_with_wasmtime_s_message() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = WasmExecutor::start(WasmOptions::default()).unwrap();
    let bad = write_module(
        dir.path(),
        "bad",
        "(module (func (export \"_start\") (i32.add)))",
    );
    let error = wasm
        .register(algorithm("bad", bad.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!(
            "algorithm bad: its module {} does not compile (wasmtime):",
            bad.display()
        )),
        "{error}"
    );
    assert!(error.contains("type mismatch"), "{error}");
    let library = write_module(dir.path(), "library", "(module (func (export \"f\")))");
    let error = wasm
        .register(algorithm("library", library))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("exports no _start function"), "{error}");
    let error = orchestrator::executor::wasm::validate(b"\0asm\x01\0\0\0\x01", None).unwrap_err();
    assert!(!error.is_empty());
}

// ---- placed by the pool: wasm workers take cpu and memory from the scheduler's inventory ----

/// Sleeps 200 ms (WASI's `poll_oneoff` on a relative monotonic-clock timeout), then answers
/// nothing (`null`): a task that holds its worker without using the cpu.
const SLEEPS: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store8 (i32.const 8) (i32.const 0))            ;; tag: clock
    (i32.store (i32.const 16) (i32.const 1))            ;; monotonic
    (i64.store (i32.const 24) (i64.const 200000000))    ;; 200 ms, relative
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

/// The inventory of the pool's node: `cpus` cores and 4 GiB.
fn node(cpus: f64) -> orchestrator::scheduler::Node {
    orchestrator::executor::local::inventory::local_node(
        &orchestrator::executor::local::inventory::Overrides {
            cpus: Some(cpus),
            memory_mib: Some(4096),
            gpus: Some(0),
        },
    )
}

/// An engine as `hkube server` wires it: the wasm executor placed by the local pool (over
/// `inventory`), its workers started by the wasm launcher.
async fn pooled_engine(
    inventory: orchestrator::scheduler::Node,
    logs: &Path,
    algorithms: Vec<WasmAlgorithm>,
) -> (Handle, LocalExecutor) {
    let wasm = WasmExecutor::start(WasmOptions {
        cache_dir: None,
        log_dir: logs.to_path_buf(),
        threads: 1,
    })
    .unwrap();
    let local = LocalExecutor::start(LocalOptions {
        inventory,
        log_dir: logs.to_path_buf(),
        launchers: vec![wasm.launcher()],
        ..LocalOptions::default()
    });
    let wasm = wasm.placed_by(local.pool().clone());
    let catalog = Arc::new(MemoryCatalog::new());
    for algorithm in algorithms {
        catalog.put_algorithm(spec::parse_algorithm(wasm_descriptor(&algorithm.name)).unwrap());
        wasm.register(algorithm).await.unwrap();
    }
    // Cranelift's code in place before the first task: a function-ABI worker's instance then
    // lives as long as the test expects (a tier-up would start a fresh one).
    assert!(tokio::task::block_in_place(
        || wasm.settle(Duration::from_secs(30))
    ));
    let routed = Routed {
        wasm,
        other: Arc::new(local.clone()),
    };
    (Engine::spawn(Arc::new(routed), catalog), local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placed_by_the_pool_a_module_answers_fails_and_stops_as_on_its_own_threads() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let modules: Vec<WasmAlgorithm> = [("echo", ECHO), ("traps", TRAPS), ("loops", LOOPS)]
        .into_iter()
        .map(|(name, text)| algorithm(name, write_module(dir.path(), name, text)))
        .collect();
    let (handle, local) = pooled_engine(node(1.0), &logs, modules).await;

    let pipeline = json!({"name": "args", "nodes": [
        {"nodeName": "A", "algorithmName": "echo", "input": ["#@flowInput.xs"]}],
        "flowInput": {"xs": [1, 2, 3]}});
    let result = run(&handle, pipeline).await;
    assert_eq!(result["status"], "completed", "{result}");
    let inputs: Vec<&Value> = result["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["result"]["input"][0])
        .collect();
    assert_eq!(inputs, [&json!(1), &json!(2), &json!(3)], "{result}");

    let result = run(&handle, one_node("traps", json!([]))).await;
    assert_eq!(result["status"], "failed", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("unreachable"), "{error}");
    assert!(error.contains("stderr:\nabout to trap"), "{error}");
    // The pool writes the module's stderr and the error to the task's log, after the task's
    // end is reported (in either order).
    let job = logs.join(result["jobId"].as_str().unwrap());
    let mut logged = String::new();
    for _ in 0..100 {
        logged = std::fs::read_dir(&job)
            .into_iter()
            .flatten()
            .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default())
            .collect();
        if logged.matches("about to trap").count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(logged.matches("about to trap").count(), 2, "{logged:?}");

    // A loop stopped at its ttl lets its worker go: the next task runs.
    let started = Instant::now();
    let pipeline = json!({"name": "loop", "nodes": [
        {"nodeName": "A", "algorithmName": "loops", "input": [], "ttl": 1}]});
    let result = run(&handle, pipeline).await;
    assert_eq!(result["status"], "failed", "{result}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let result = run(&handle, one_node("echo", json!([7]))).await;
    assert_eq!(result["status"], "completed", "{result}");
    local.shutdown().await;
}

/// hkube's function ABI placed by the pool: a worker's tasks run in the one instance it keeps
/// (a count kept in the module goes on from task to task), and a task stopped at its ttl ends
/// that instance: the next task counts from 1 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placed_by_the_pool_a_function_abi_worker_keeps_its_instance_until_a_task_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let mut counts = algorithm("counts", write_module(dir.path(), "counts", COUNTS));
    // One worker: every task meets the same instance.
    counts.max_workers = 1;
    let (handle, local) = pooled_engine(node(1.0), &logs, vec![counts]).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let result = run(&handle, one_node("counts", json!([1]))).await;
        answers.push(result["data"][0]["result"].clone());
    }
    assert_eq!(answers, [json!(1), json!(2), json!(3)]);
    let pipeline = json!({"name": "batch", "nodes": [
        {"nodeName": "A", "algorithmName": "counts", "input": ["#@flowInput.xs"]}],
        "flowInput": {"xs": [1, 1]}});
    let result = run(&handle, pipeline).await;
    let mut batch: Vec<Value> = result["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["result"].clone())
        .collect();
    batch.sort_by_key(|n| n.as_i64());
    assert_eq!(batch, [json!(4), json!(5)], "{result}");

    let pipeline = json!({"name": "loop", "nodes": [
        {"nodeName": "A", "algorithmName": "counts", "input": [4], "ttl": 1}]});
    let result = run(&handle, pipeline).await;
    assert_eq!(result["status"], "failed", "{result}");
    let result = run(&handle, one_node("counts", json!([1]))).await;
    assert_eq!(result["data"][0]["result"], json!(1), "{result}");
    local.shutdown().await;
}

/// Four tasks that each hold their worker 200 ms: with cpu 1 on a 1-core inventory one worker
/// fits, so they take at least 800 ms; with cpu 0.25 four fit and they overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_workers_take_their_cpu_from_the_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let mut whole = algorithm("sleeps-whole", write_module(dir.path(), "sleeps", SLEEPS));
    whole.request.cpu_millis = 1000;
    let mut quarter = whole.clone();
    quarter.name = "sleeps-quarter".into();
    quarter.request.cpu_millis = 250;
    let (handle, local) = pooled_engine(node(1.0), &logs, vec![whole, quarter]).await;
    let batch = |name: &str| {
        json!({"name": "sleeps", "nodes": [
            {"nodeName": "A", "algorithmName": name, "input": ["#@flowInput.xs"]}],
            "flowInput": {"xs": [1, 2, 3, 4]}})
    };
    let started = Instant::now();
    let result = run(&handle, batch("sleeps-whole")).await;
    let serial = started.elapsed();
    assert_eq!(result["status"], "completed", "{result}");
    assert!(serial >= Duration::from_millis(800), "{serial:?}");

    let started = Instant::now();
    let result = run(&handle, batch("sleeps-quarter")).await;
    let spread = started.elapsed();
    assert_eq!(result["status"], "completed", "{result}");
    assert!(
        spread < Duration::from_millis(700),
        "4 workers of cpu 0.25 fit on 1 core: {spread:?}"
    );
    local.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_request_no_node_holds_is_refused_naming_the_resource() {
    let dir = tempfile::tempdir().unwrap();
    let mut huge = algorithm("huge", write_module(dir.path(), "echo", ECHO));
    huge.request.mem_mib = 1 << 20;
    let (handle, local) = pooled_engine(node(1.0), &dir.path().join("logs"), vec![huge]).await;
    let result = run(&handle, one_node("huge", json!([1]))).await;
    assert_eq!(result["status"], "failed", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("algorithm huge requests"), "{error}");
    assert!(error.contains("mem"), "{error}");
    local.shutdown().await;
}

/// A wasm task the inventory has no room for says why, as any other algorithm's: a looping
/// module holds the only core (cpu 1 of 1), so another algorithm's task waits for cpu, and runs
/// once the loop's job is stopped and its worker's core is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_task_waiting_for_room_says_why_and_runs_once_it_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let mut looping = algorithm("loops", write_module(dir.path(), "loops", LOOPS));
    looping.request.cpu_millis = 1000;
    let mut echo = algorithm("echo", write_module(dir.path(), "echo", ECHO));
    echo.request.cpu_millis = 1000;
    let (handle, local) =
        pooled_engine(node(1.0), &dir.path().join("logs"), vec![looping, echo]).await;
    let first = handle.exec_raw(one_node("loops", json!([]))).await.unwrap();
    // The loop's worker holds the core once its task runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    while handle.status(&first).await.unwrap()["data"]["states"]["active"] != 1 {
        assert!(Instant::now() < deadline, "the loop never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = handle.exec_raw(one_node("echo", json!([5]))).await.unwrap();
    let pending = loop {
        let status = handle.status(&second).await.unwrap();
        if let Some(pending) = status["data"]["pending"]
            .as_array()
            .filter(|p| !p.is_empty())
        {
            break pending[0].clone();
        }
        assert!(Instant::now() < deadline, "no pending reason: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pending["algorithmName"], "echo", "{pending}");
    let reason = pending["reason"].as_str().unwrap();
    assert_eq!(
        reason, "waiting for cpu: requested 1, free 0 of 1",
        "{pending}"
    );
    handle
        .stop(orchestrator::engine::StopRequest {
            job_id: Some(first.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let result = run_to_end(&handle, &second).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"][0]["result"]["input"], json!([5]), "{result}");
    local.shutdown().await;
}

async fn run_to_end(handle: &Handle, job: &str) -> Value {
    tokio::time::timeout(Duration::from_secs(60), handle.wait(job))
        .await
        .expect("the job ended within a minute")
        .unwrap()
}

// ---- mixed pipelines: the numbers example with the wasm Multiply ----

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/numbers")
}

fn available(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Why the mixed pipeline cannot run here, if it cannot.
fn missing_for_numbers() -> Option<String> {
    for program in ["python3", "node"] {
        if !available(program) {
            return Some(format!("{program} is not installed"));
        }
    }
    let module = examples().join("multiply-wasm/multiply.wasm");
    (!module.is_file()).then(|| {
        format!(
            "{} is not built: run examples/numbers/multiply-wasm/build.sh",
            module.display()
        )
    })
}

/// The numbers example's algorithms under one engine: processes and the wasm module.
/// As `hkube server` wires it: the wasm Multiply's workers placed by the same pool as the
/// Python and JavaScript ones.
async fn numbers_engine(dir: &Path) -> (Handle, LocalExecutor) {
    let wasm = WasmExecutor::start(WasmOptions {
        cache_dir: Some(dir.join("wasm-cache")),
        log_dir: dir.join("logs"),
        threads: 0,
    })
    .unwrap();
    let local = LocalExecutor::start(LocalOptions {
        work_dir: dir.join("work"),
        log_dir: dir.join("logs"),
        launchers: vec![wasm.launcher()],
        ..LocalOptions::default()
    });
    let wasm = wasm.placed_by(local.pool().clone());
    let catalog = Arc::new(MemoryCatalog::new());
    for algorithm in project::find_algorithms(&examples()).unwrap() {
        match &algorithm.runner {
            // A module not built is left out, as `hkube server` leaves it (the tests that
            // need it say so).
            Runner::Wasm(module) if !module.module.is_file() => continue,
            Runner::Wasm(module) => wasm.register(module.clone()).await.unwrap(),
            Runner::Local(process) if process.name != "multiply-java" => {
                local.register(process.clone()).await.unwrap()
            }
            Runner::Local(_) => continue,
        }
        catalog.put_algorithm(algorithm.descriptor.clone());
    }
    let routed = Routed {
        wasm,
        other: Arc::new(local.clone()),
    };
    (Engine::spawn(Arc::new(routed), catalog), local)
}

fn numbers_wasm(n: u64, k: u64) -> Value {
    numbers_pipeline("numbers-wasm.yml", n, k)
}

fn numbers_pipeline(file: &str, n: u64, k: u64) -> Value {
    let text = std::fs::read_to_string(examples().join(file)).unwrap();
    let mut pipeline = spec::read_document(&text).unwrap();
    pipeline["flowInput"] = json!({"N": n, "k": k});
    pipeline
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_with_the_wasm_multiply_gives_30() {
    if let Some(reason) = missing_for_numbers() {
        return testkit::skip(None, &reason);
    }
    let dir = tempfile::tempdir().unwrap();
    let (handle, local) = numbers_engine(dir.path()).await;
    let result = run(&handle, numbers_wasm(5, 2)).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"][0]["result"], json!(30), "{result}");
    // Larger: 2 × (1 + 2 + … + 1000).
    let result = run(&handle, numbers_wasm(1000, 2)).await;
    assert_eq!(result["data"][0]["result"], json!(1_001_000), "{result}");
    local.shutdown().await;
}

/// `multiply` over 1, 2, "x", 4 times 10, retried twice, then summed: one item of four is not
/// a number, and the batch's tolerance (50 %) lets the job complete.
fn tolerant(multiply: &str) -> Value {
    json!({"name": "tolerant", "nodes": [
        {"nodeName": "Multiply", "algorithmName": multiply,
         "input": ["#@flowInput.items", 10],
         "retry": {"policy": "Always", "limit": 2}},
        {"nodeName": "Reduce", "algorithmName": "reduce", "input": ["@Multiply"]}],
        "flowInput": {"items": [1, 2, "x", 4]},
        "options": {"batchTolerance": 50}})
}

/// The same pipeline with the Multiply of hkube's function ABI (an instance kept per worker,
/// a call per task), and its failures: a status with a message, retried as the node says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_with_the_function_abi_multiply_gives_30() {
    if let Some(reason) = missing_for_numbers() {
        return testkit::skip(None, &reason);
    }
    let module = examples().join("multiply-wasm-fn/multiply-fn.wasm");
    if !module.is_file() {
        let why = format!(
            "{} is not built: run examples/numbers/multiply-wasm-fn/build.sh",
            module.display()
        );
        return testkit::skip(None, &why);
    }
    let dir = tempfile::tempdir().unwrap();
    let (handle, local) = numbers_engine(dir.path()).await;
    let result = run(&handle, numbers_pipeline("numbers-wasm-fn.yml", 5, 2)).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"][0]["result"], json!(30), "{result}");
    let result = run(&handle, numbers_pipeline("numbers-wasm-fn.yml", 1000, 2)).await;
    assert_eq!(result["data"][0]["result"], json!(1_001_000), "{result}");

    let pipeline = tolerant("multiply-wasm-fn");
    let result = run(&handle, pipeline.clone()).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"][0]["result"], json!(70), "{result}");
    let mut strict = pipeline;
    strict["options"]["batchTolerance"] = json!(10);
    let result = run(&handle, strict).await;
    assert_eq!(result["status"], "failed", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("multiply takes numbers, got \"x\" and 10"),
        "{error}"
    );
    local.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_pipeline_keeps_tolerance_retries_and_wait_any() {
    if let Some(reason) = missing_for_numbers() {
        return testkit::skip(None, &reason);
    }
    let dir = tempfile::tempdir().unwrap();
    let (handle, local) = numbers_engine(dir.path()).await;
    // One item of four is not a number: the wasm Multiply exits 2 for it, retried as the
    // node says, and the batch's tolerance (50 %) lets the job complete.
    let pipeline = tolerant("multiply-wasm");
    let result = run(&handle, pipeline.clone()).await;
    assert_eq!(result["status"], "completed", "{result}");
    let job = result["jobId"].as_str().unwrap().to_string();
    let status = handle.status(&job).await.unwrap();
    assert_eq!(status["data"]["states"]["failed"], 1, "{status}");
    // Below the tolerance the job fails, and says which item failed and why.
    let mut strict = pipeline;
    strict["options"]["batchTolerance"] = json!(10);
    let result = run(&handle, strict).await;
    assert_eq!(result["status"], "failed", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("multiply takes numbers"), "{error}");

    // waitAny: each item of the wasm batch goes on to Python as soon as it is done.
    let pipeline = json!({"name": "any", "nodes": [
        {"nodeName": "W", "algorithmName": "multiply-wasm", "input": ["#@flowInput.xs", 10]},
        {"nodeName": "P", "algorithmName": "multiply", "input": ["*@W", 2]},
        {"nodeName": "Reduce", "algorithmName": "reduce", "input": ["@P"]}],
        "flowInput": {"xs": [1, 2, 3]}});
    let result = run(&handle, pipeline).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"][0]["result"], json!(120), "{result}");
    local.shutdown().await;
}

/// `examples/wasm-c/<source>` compiled by clang for wasm32-wasi into `dir` (with `flags`),
/// or why it cannot be here.
fn clang_module(dir: &Path, source: &str, flags: &[&str]) -> Result<PathBuf, String> {
    let module = dir.join(source.replace(".c", ".wasm"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/wasm-c")
        .join(source);
    let compiled = std::process::Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-s"])
        .args(flags)
        .arg("-o")
        .arg(&module)
        .arg(&source)
        .output();
    match compiled {
        Ok(output) if output.status.success() => Ok(module),
        Ok(output) => {
            let why = String::from_utf8_lossy(&output.stderr).to_string();
            Err(format!("clang cannot build for wasm32-wasi (apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32): {why}"))
        }
        Err(error) => Err(format!("clang is not installed: {error}")),
    }
}

/// A batch of `multiply-c` over 1, 2, 3 times 7 on the executor's own threads, and a task
/// without input: the results, and that task's error.
async fn multiply_in_c(dir: &Path, module: PathBuf) -> (Vec<Value>, String) {
    let wasm = WasmExecutor::start(WasmOptions {
        cache_dir: None,
        log_dir: dir.join("logs"),
        threads: 0,
    })
    .unwrap();
    wasm.register(algorithm("multiply-c", module))
        .await
        .unwrap();
    let catalog = Arc::new(MemoryCatalog::new());
    catalog.put_algorithm(spec::parse_algorithm(wasm_descriptor("multiply-c")).unwrap());
    let handle = Engine::spawn(Arc::new(wasm), catalog);
    let mut batch = one_node("multiply-c", json!(["#@flowInput.xs", 7]));
    batch["flowInput"] = json!({"xs": [1, 2, 3]});
    let result = run(&handle, batch).await;
    assert_eq!(result["status"], "completed", "{result}");
    let products: Vec<Value> = result["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["result"].clone())
        .collect();
    let result = run(&handle, one_node("multiply-c", json!([]))).await;
    assert_eq!(result["status"], "failed", "{result}");
    (products, result["error"].as_str().unwrap().to_string())
}

/// docs/wasm.md's second language: examples/wasm-c/multiply.c compiled by clang for
/// wasm32-wasi, run as a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_written_in_c_multiplies() {
    let dir = tempfile::tempdir().unwrap();
    let module = match clang_module(dir.path(), "multiply.c", &[]) {
        Ok(module) => module,
        Err(why) => return testkit::skip(None, &why),
    };
    let (products, error) = multiply_in_c(dir.path(), module).await;
    assert_eq!(products, [json!(7), json!(14), json!(21)]);
    assert!(
        error.starts_with("the module exited with code 2"),
        "{error}"
    );
}

/// The function ABI's second language: examples/wasm-c/multiply-fn.c, a WASI reactor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_abi_module_written_in_c_multiplies() {
    let dir = tempfile::tempdir().unwrap();
    let module = match clang_module(dir.path(), "multiply-fn.c", &["-mexec-model=reactor"]) {
        Ok(module) => module,
        Err(why) => return testkit::skip(None, &why),
    };
    let (products, error) = multiply_in_c(dir.path(), module).await;
    assert_eq!(products, [json!(7), json!(14), json!(21)]);
    assert_eq!(error, "multiply takes numbers");
}

/// `x-hkube.dirs` opens a folder of the code to the module, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_directory_is_open_to_the_module() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/secret.txt"), "secret").unwrap();
    let module = write_module(dir.path(), "opens", OPENS_A_FILE);
    let descriptor = spec::parse_algorithm(json!({
        "name": "opens", "env": "wasm", "algorithmImage": "hkube-local/opens",
        "x-hkube": {"dirs": ["data"]}}))
    .unwrap();
    let opens = orchestrator::executor::wasm::wasm_algorithm(&descriptor, &module).unwrap();
    let wasm = WasmExecutor::start(WasmOptions {
        cache_dir: None,
        log_dir: dir.path().join("logs"),
        threads: 1,
    })
    .unwrap();
    wasm.register(opens).await.unwrap();
    let catalog = Arc::new(MemoryCatalog::new());
    catalog.put_algorithm(descriptor.clone());
    let handle = Engine::spawn(Arc::new(wasm.clone()), catalog);
    let result = run(&handle, one_node("opens", json!([]))).await;
    // path_open answered 0: data/secret.txt was found through the preopened folder.
    assert_eq!(result["status"], "completed", "{result}");

    // A declared folder that does not exist is refused when the algorithm is registered.
    let missing = spec::parse_algorithm(json!({
        "name": "opens", "env": "wasm", "algorithmImage": "hkube-local/opens",
        "x-hkube": {"dirs": ["nowhere"]}}))
    .unwrap();
    let missing = orchestrator::executor::wasm::wasm_algorithm(&missing, &module).unwrap();
    let error = wasm.register(missing).await.unwrap_err().to_string();
    assert!(error.contains("x-hkube.dirs names"), "{error}");
    assert!(error.contains("nowhere, which is not a folder"), "{error}");
}
