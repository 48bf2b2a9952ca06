//! The WASM tier end to end: the numbers pipeline with the wasm Multiply (Python Range, wasm
//! Multiply, JavaScript Reduce) under one engine, and the first task of a module, compiled
//! and from the module cache. Prints this machine's figures beside the WASM issue's targets.
//!
//! Ray runs the same numbers work (`bench/ray/workloads.py`: one task makes the list, one task
//! per item multiplies, one sums) in the same run, after hkube's measurements, when its venv
//! exists (`bench/ray/setup.sh`); both sides time a warm second run of the whole job.
//!
//! The numbers job runs twice per round: with the Multiply of the WASI command ABI (a fresh
//! instance per task) and with the Multiply of hkube's function ABI (an instance kept per
//! worker, a call per task), taking turns so both see the same minutes of the machine.
//!
//! Needs `examples/numbers/multiply-wasm/build.sh` and `examples/numbers/multiply-wasm-fn/build.sh`
//! first (the modules), python3 and node.
//!
//! `cargo run --release -p hkube-bench --bin wasm [-- --items N --ray-items N --repeat N --pooled 0|1]`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hkube_bench::{arg, print_table_head, ray, Spread};
use orchestrator::engine::{Engine, Handle, MemoryCatalog};
use orchestrator::executor::local::{LocalExecutor, LocalOptions};
use orchestrator::executor::wasm::{route::Routed, WasmExecutor, WasmOptions};
use orchestrator::project::{self, Runner};
use orchestrator::spec;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hkube-bench-wasm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}

fn wasm_executor(cache: &Path) -> WasmExecutor {
    WasmExecutor::start(WasmOptions {
        cache_dir: Some(cache.to_path_buf()),
        log_dir: cache.join("logs"),
        threads: 0,
    })
    .expect("the wasm executor")
}

/// The wasm executor and the local pool. `pooled`: as `hkube server` and `hkube run` wire
/// them, the wasm workers placed by the pool (threads the wasm launcher starts, holding cpu and
/// memory of its inventory); else the executor's own threads, one per core, outside the pool
/// (`--pooled 0`, to compare).
fn wasm_and_pool(cache: &Path, pooled: bool) -> (WasmExecutor, LocalExecutor) {
    let wasm = wasm_executor(cache);
    if !pooled {
        return (wasm, LocalExecutor::start(LocalOptions::default()));
    }
    let local = LocalExecutor::start(LocalOptions {
        launchers: vec![wasm.launcher()],
        ..LocalOptions::default()
    });
    (wasm.placed_by(local.pool().clone()), local)
}

/// The numbers example's range, multiply-wasm and reduce under one engine.
async fn numbers_engine(cache: &Path, pooled: bool) -> (Handle, LocalExecutor) {
    let (wasm, local) = wasm_and_pool(cache, pooled);
    let catalog = Arc::new(MemoryCatalog::new());
    for algorithm in project::find_algorithms(&repo().join("examples/numbers")).expect("found") {
        match &algorithm.runner {
            Runner::Wasm(module) => wasm.register(module.clone()).await.expect("compiled"),
            Runner::Local(process) if ["range", "reduce"].contains(&process.name.as_str()) => {
                local.register(process.clone()).await.expect("registered")
            }
            Runner::Local(_) => continue,
        }
        catalog.put_algorithm(algorithm.descriptor.clone());
    }
    // Warm: the tasks run Cranelift's code, not Winch's of the first moments.
    assert!(
        tokio::task::block_in_place(|| wasm.settle(Duration::from_secs(30))),
        "Cranelift's compile did not end"
    );
    let routed = Routed {
        wasm,
        other: Arc::new(local.clone()),
    };
    (Engine::spawn(Arc::new(routed), catalog), local)
}

async fn run(handle: &Handle, pipeline: Value) -> (Value, Duration) {
    let start = Instant::now();
    let job = handle.exec_raw(pipeline).await.expect("accepted");
    let result = handle.wait(&job).await.expect("ended");
    let took = start.elapsed();
    assert_eq!(result["status"], "completed", "{result}");
    (result, took)
}

/// The numbers pipeline of `file` (`numbers-wasm.yml`: the WASI command Multiply;
/// `numbers-wasm-fn.yml`: the function-ABI one).
fn numbers_wasm(file: &str, n: usize) -> Value {
    let file = repo().join("examples/numbers").join(file);
    let text = std::fs::read_to_string(file).expect("numbers-wasm.yml");
    let mut pipeline = spec::read_document(&text).expect("a pipeline");
    pipeline["flowInput"] = json!({"N": n, "k": 2});
    pipeline
}

/// The first task of the module on a new executor over `cache`: (register, register + the
/// one-task job) in seconds. With an empty cache the register compiles (Winch's code, then
/// Cranelift's behind it, waited for after the timing).
async fn first_task(module: &Path, cache: &Path, pooled: bool) -> (f64, f64) {
    // Placed by a pool, as the server runs it, the first task starts the algorithm's worker.
    let (wasm, local) = wasm_and_pool(cache, pooled);
    let catalog = Arc::new(MemoryCatalog::new());
    let descriptor = spec::parse_algorithm(
        json!({"name": "multiply-wasm", "env": "wasm", "mem": "64Mi",
            // A runnable stored algorithm has code: a built one carries the local marker.
            "algorithmImage": "hkube-local/multiply-wasm"}),
    )
    .expect("a descriptor");
    let algorithm = orchestrator::executor::wasm::wasm_algorithm(&descriptor, module)
        .expect("a wasm algorithm");
    catalog.put_algorithm(descriptor);
    let handle = Engine::spawn(Arc::new(wasm.clone()), catalog);
    let pipeline = json!({"name": "first", "nodes": [
        {"nodeName": "Multiply", "algorithmName": "multiply-wasm", "input": [3, 5]}]});
    let start = Instant::now();
    wasm.register(algorithm).await.expect("compiled");
    let registered = start.elapsed().as_secs_f64();
    let (result, _) = run(&handle, pipeline).await;
    let whole = start.elapsed().as_secs_f64();
    assert_eq!(result["data"][0]["result"], json!(15), "{result}");
    // A new module's first task ran Winch's code; Cranelift's reaches the cache behind it, as
    // before a later start over the same cache (not timed).
    assert!(
        tokio::task::block_in_place(|| wasm.settle(Duration::from_secs(30))),
        "Cranelift's compile did not end"
    );
    local.shutdown().await;
    (registered, whole)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let items = arg("--items", 200_000);
    let ray_items = arg("--ray-items", items);
    let repeat = arg("--repeat", 5).max(1);
    let pooled = arg("--pooled", 1) != 0;
    let module = repo().join("examples/numbers/multiply-wasm/multiply.wasm");
    for (built, by) in [
        (&module, "examples/numbers/multiply-wasm/build.sh"),
        (
            &repo().join("examples/numbers/multiply-wasm-fn/multiply-fn.wasm"),
            "examples/numbers/multiply-wasm-fn/build.sh",
        ),
    ] {
        assert!(built.is_file(), "{} is missing: run {by}", built.display());
    }

    // numbers: a first run starts the Python and JavaScript workers; the next ones are timed,
    // the two Multiply modules taking turns so that both see the same minutes of the machine.
    let cache = scratch("numbers");
    let (handle, local) = numbers_engine(&cache, pooled).await;
    let pipelines = ["numbers-wasm.yml", "numbers-wasm-fn.yml"];
    for file in pipelines {
        run(&handle, numbers_wasm(file, items)).await;
    }
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..repeat {
        for (file, rates) in pipelines.iter().zip(rates.iter_mut()) {
            let (result, took) = run(&handle, numbers_wasm(file, items)).await;
            let expected = (items as u64) * (items as u64 + 1); // 2 × (1 + … + N)
            assert_eq!(result["data"][0]["result"], json!(expected), "{result}");
            rates.push((items + 2) as f64 / took.as_secs_f64());
        }
    }
    local.shutdown().await;
    let numbers = Spread::of(&rates[0]);
    let numbers_fn = Spread::of(&rates[1]);

    // The first task of a new module version: an empty cache, so registering compiles.
    let (mut compiled, mut compiled_whole) = (Vec::new(), Vec::new());
    let (mut cached, mut cached_whole) = (Vec::new(), Vec::new());
    for round in 0..repeat {
        let cache = scratch(&format!("first-{round}"));
        let (register, whole) = first_task(&module, &cache, pooled).await;
        compiled.push(register * 1e3);
        compiled_whole.push(whole * 1e3);
        // The same module on a new executor: the cache has its compiled code.
        let (register, whole) = first_task(&module, &cache, pooled).await;
        cached.push(register * 1e3);
        cached_whole.push(whole * 1e3);
        let _ = std::fs::remove_dir_all(&cache);
    }
    let _ = std::fs::remove_dir_all(&cache);

    let ray_args: Vec<String> = [
        "--scenario",
        "workers",
        "--items",
        &ray_items.to_string(),
        "--chain",
        "2",
        "--bytes",
        "1",
        "--repeat",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ray_numbers = match ray::workloads(&ray_args, Duration::from_secs(1800)) {
        Ok(figures) => {
            let seconds = figures["numbers_s"].as_f64().unwrap_or(f64::NAN);
            let tasks = figures["numbers_tasks"].as_f64().unwrap_or(f64::NAN);
            format!(
                "Ray {} here, same run: {:.0} tasks/s (N={ray_items})",
                figures["ray"].as_str().unwrap_or("?"),
                tasks / seconds
            )
        }
        Err(why) => format!("Ray: {why}"),
    };

    print_table_head("hkube WASM tier");
    let module_size = std::fs::metadata(&module).map_or(0, |m| m.len());
    println!(
        "| numbers N={items}, wasm Multiply as a WASI command (Python Range, JS Reduce), warm, whole job | {} | ≥ 100,000 tasks/s | {ray_numbers} |",
        numbers.show(0, "tasks/s")
    );
    println!(
        "| numbers N={items}, wasm Multiply of the function ABI (an instance per worker, a call per task), same job | {} | ≥ 100,000 tasks/s | |",
        numbers_fn.show(0, "tasks/s")
    );
    println!(
        "| first task of a new module version ({} KB), compile included | {} (compile {}) | ≤ 50 ms | |",
        module_size / 1024,
        Spread::of(&compiled_whole).show(1, "ms"),
        Spread::of(&compiled).brief(1, "ms"),
    );
    println!(
        "| first task of a cached module, loaded from the module cache included | {} (load {}) | ≤ 1 ms | |",
        Spread::of(&cached_whole).show(2, "ms"),
        Spread::of(&cached).brief(2, "ms"),
    );
}
