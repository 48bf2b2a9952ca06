//! The worker tier end to end: the engine, the local executor, sidecars and Python runtimes as
//! real processes. Prints this machine's figures beside the targets of the worker-tier issue
//! and the anchors measured or published for other tools.
//!
//! Ray is measured in the same run, after hkube's measurements and never beside them, when the
//! venv that `bench/ray/setup.sh` makes exists (or `--ray PYTHON` names a python with ray): it
//! runs `bench/ray/workloads.py` with the same N, chain length and size. Without it the table
//! keeps the figures quoted in the issue and says so.
//!
//! `cargo run --release -p hkube-bench --bin workers [-- --items N --chain N --rounds N --bytes N
//! --ray PYTHON]`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hkube_bench::{arg, arg_text};
use orchestrator::engine::{Engine, Handle, MemoryCatalog};
use orchestrator::executor::local::{LocalExecutor, LocalOptions};
use orchestrator::project;
use orchestrator::spec;
use serde_json::{json, Value};
use tokio::net::TcpListener;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A folder with a no-op Python algorithm `noop` (returns its first input).
fn noop_folder() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hkube-bench-noop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp folder");
    std::fs::write(
        dir.join("main.py"),
        "def start(args, api):\n    return args['input'][0]\n",
    )
    .expect("write main.py");
    std::fs::write(
        dir.join("algorithm.yml"),
        "name: noop\nenv: python\ncode:\n  path: .\n  entryPoint: main.py\n",
    )
    .expect("write algorithm.yml");
    // A producer of `input[0]` bytes (written, so its pages exist, as real data's would) that
    // stamps the moment it hands them over, and a consumer that answers how many it got and
    // how long after the stamp it got them: the time of the passing alone.
    for (name, code) in [
        (
            "make",
            "import struct, time\ndef start(args, api):\n    data = bytearray(b'\\x01') * args['input'][0]\n    if len(data) >= 8:\n        data[:8] = struct.pack('d', time.time())\n    return data\n",
        ),
        (
            "size",
            "import struct, time\ndef start(args, api):\n    data = args['input'][0]\n    took = time.time() - struct.unpack('d', bytes(data[:8]))[0] if len(data) >= 8 else 0\n    return [len(data), took]\n",
        ),
    ] {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).expect("a folder");
        std::fs::write(folder.join("main.py"), code).expect("write main.py");
        std::fs::write(
            folder.join("algorithm.yml"),
            format!("name: {name}\nenv: python\ncode:\n  path: .\n  entryPoint: main.py\n"),
        )
        .expect("write algorithm.yml");
    }
    dir
}

async fn engine(folders: &[PathBuf]) -> (Handle, LocalExecutor) {
    let executor = LocalExecutor::start(LocalOptions::default());
    let catalog = Arc::new(MemoryCatalog::new());
    for folder in folders {
        for algorithm in project::find_algorithms(folder).expect("algorithms") {
            catalog.put_algorithm(algorithm.descriptor.clone());
            executor
                .register(algorithm.local.clone())
                .await
                .expect("registered");
        }
    }
    (Engine::spawn(Arc::new(executor.clone()), catalog), executor)
}

async fn run(handle: &Handle, pipeline: Value) -> (Value, Duration) {
    let start = Instant::now();
    let job = handle.exec_raw(pipeline).await.expect("accepted");
    let result = handle.wait(&job).await.expect("ended");
    assert_eq!(result["status"], "completed", "{result}");
    (result, start.elapsed())
}

fn numbers(n: usize) -> Value {
    let text =
        std::fs::read_to_string(repo().join("examples/numbers/numbers.yml")).expect("numbers.yml");
    let mut pipeline = spec::read_document(&text).expect("a pipeline");
    pipeline["flowInput"] = json!({"N": n, "k": 2});
    pipeline
}

fn chain(steps: usize) -> Value {
    let nodes: Vec<Value> = (0..steps)
        .map(|i| {
            let input = if i == 0 {
                json!([1])
            } else {
                json!([format!("@s{}", i - 1)])
            };
            json!({"nodeName": format!("s{i}"), "algorithmName": "noop", "input": input})
        })
        .collect();
    json!({"name": "chain", "nodes": nodes})
}

/// The floor: a Python client of our runtime's websocket code against a bare tokio-tungstenite
/// echo server, one message at a time.
async fn bare_round_trip(rounds: usize) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            if let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await {
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    let script = format!(
        "import sys, time\nsys.path.insert(0, {runtime:?})\nfrom hkube_runtime import ws\n\
         c = ws.connect('127.0.0.1', {port}, '/')\nmsg = '{{\"command\":\"run\",\"data\":{{\"taskId\":\"t\",\"input\":[1,2]}}}}'\n\
         for _ in range(200):\n    c.send_text(msg); c.recv()\n\
         t = time.perf_counter()\nfor _ in range({rounds}):\n    c.send_text(msg); c.recv()\n\
         print(time.perf_counter() - t)\n",
        runtime = repo().join("runtimes/python").display().to_string(),
    );
    let output = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .expect("python3 runs");
    let seconds: f64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN);
    Duration::from_secs_f64(seconds)
}

/// Ray's figures from `bench/ray/workloads.py`: times in seconds, counts as they are.
struct RayFigures {
    version: String,
    init: f64,
    cold_first_task: f64,
    numbers: f64,
    numbers_tasks: f64,
    chain: f64,
    big: f64,
    big_small: f64,
    bytes: f64,
}

/// What became of the Ray comparison: measured, or why not (the table then quotes the issue).
enum Ray {
    Measured(RayFigures),
    NotMeasured(String),
}

/// The python of the venv `bench/ray/setup.sh` makes.
fn default_ray_python() -> PathBuf {
    let venv = std::env::var_os("HKUBE_RAY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/hkube/ray-venv")
        });
    venv.join("bin/python")
}

/// Runs the same work on Ray with `python`, which must have ray installed.
async fn ray(python: &Path, items: usize, steps: usize, big_bytes: usize) -> Ray {
    let child = tokio::process::Command::new(python)
        .arg(repo().join("bench/ray/workloads.py"))
        .args(["--items", &items.to_string()])
        .args(["--chain", &steps.to_string()])
        .args(["--bytes", &big_bytes.to_string()])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(Duration::from_secs(600), child).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => {
            return Ray::NotMeasured(format!("{} did not run: {error}", python.display()))
        }
        Err(_) => return Ray::NotMeasured("workloads.py ran past 600 s".into()),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let figures = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str::<Value>(line).ok());
    let Some(figures) = figures.filter(|_| output.status.success()) else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Ray::NotMeasured(format!(
            "workloads.py failed ({}): {}",
            output.status,
            last.unwrap_or("no output")
        ));
    };
    if let Some(why) = figures["skipped"].as_str() {
        return Ray::NotMeasured(why.to_string());
    }
    let number = |key: &str| figures[key].as_f64().unwrap_or(f64::NAN);
    Ray::Measured(RayFigures {
        version: figures["ray"].as_str().unwrap_or("?").to_string(),
        init: number("init_s"),
        cold_first_task: number("cold_first_task_s"),
        numbers: number("numbers_s"),
        numbers_tasks: number("numbers_tasks"),
        chain: number("chain_s"),
        big: number("big_s"),
        big_small: number("big_small_s"),
        bytes: number("bytes"),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let items = arg("--items", 10_000);
    let steps = arg("--chain", 40);
    let rounds = arg("--rounds", 20_000);
    let big_bytes = arg("--bytes", 256 << 20);
    let ray_python = arg_text("--ray").map_or_else(default_ray_python, PathBuf::from);
    let ray_asked = arg_text("--ray").is_some();
    let noop = noop_folder();
    let numbers_dir = repo().join("examples/numbers");

    // Cold start: a fresh executor, one Python task (spawn, import, connect, run).
    let (handle, executor) = engine(std::slice::from_ref(&noop)).await;
    let (_, cold) = run(&handle, chain(1)).await;
    executor.shutdown().await;

    // numbers with warm workers: a first run starts them, the second is measured.
    let (handle, executor) = engine(&[numbers_dir, noop.clone()]).await;
    run(&handle, numbers(items)).await;
    let (result, warm) = run(&handle, numbers(items)).await;
    let expected = (items * (items + 1)) as u64; // k = 2
    assert_eq!(result["data"][0]["result"], json!(expected));
    let tasks = items + 2;

    // A chain of no-op Python steps, warm.
    run(&handle, chain(steps)).await;
    let (_, chained) = run(&handle, chain(steps)).await;

    // A large result from one step to the next (bytes go through storage by reference).
    let big = |size: usize| {
        json!({"name": "big", "nodes": [
            {"nodeName": "A", "algorithmName": "make", "input": [size]},
            {"nodeName": "B", "algorithmName": "size", "input": ["@A"]},
        ]})
    };
    run(&handle, big(1)).await;
    let (_, small) = run(&handle, big(1)).await;
    // The median of three: one 256 MiB copy is at the mercy of the machine's page cache.
    let mut larges = Vec::new();
    for _ in 0..3 {
        let (result, took) = run(&handle, big(big_bytes)).await;
        assert_eq!(result["data"][0]["result"][0], json!(big_bytes));
        let passing = result["data"][0]["result"][1].as_f64().unwrap_or(f64::NAN);
        larges.push((Duration::from_secs_f64(passing.max(0.0)), took));
    }
    larges.sort();
    let (passing, large) = larges[1];
    executor.shutdown().await;

    let bare = bare_round_trip(rounds).await;
    let _ = std::fs::remove_dir_all(&noop);

    // Ray last, alone: every hkube worker has been shut down above.
    let ray = if ray_asked || ray_python.exists() {
        ray(&ray_python, items, steps, big_bytes).await
    } else {
        Ray::NotMeasured("Ray not installed: run bench/ray/setup.sh".into())
    };

    println!("hkube worker-tier benchmark (local executor, Python runtime, release build)");
    println!(
        "machine: {} cores; python3 {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        String::from_utf8_lossy(
            &std::process::Command::new("python3")
                .arg("--version")
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default()
        )
        .trim()
    );
    match &ray {
        Ray::Measured(r) => println!(
            "ray: {} via {} (local, num_cpus=2, run after hkube's measurements; ray.init {:.2} s)",
            r.version,
            ray_python.display(),
            r.init
        ),
        Ray::NotMeasured(why) => println!("ray: not measured ({why})"),
    }
    println!();
    let (numbers_anchor, chain_anchor, cold_anchor, big_anchor) = match &ray {
        Ray::Measured(r) => {
            let here = format!("Ray {} here, same run:", r.version);
            (
                format!(
                    "{here} {:.0} tasks/s ({:.2} s)",
                    r.numbers_tasks / r.numbers,
                    r.numbers
                ),
                format!("{here} {:.1} ms", r.chain * 1e3),
                format!(
                    "{here} {:.1} ms (after a {:.2} s ray.init)",
                    r.cold_first_task * 1e3,
                    r.init
                ),
                format!(
                    "{here} {:.2} GB/s (2-task job {:.3} s; with 1 byte: {:.3} s)",
                    r.bytes / r.big / 1e9,
                    r.big,
                    r.big_small
                ),
            )
        }
        Ray::NotMeasured(why) => (
            format!("Ray 2.60 here: ~790 tasks/s (12.7 s at N=10,000) (quoted; {why})"),
            format!("Ray here: 120–160 ms (quoted; {why})"),
            "—".to_string(),
            "—".to_string(),
        ),
    };
    println!("| scenario | measured | target | anchor |");
    println!("|---|---|---|---|");
    println!(
        "| numbers N={items} ({tasks} tasks), warm workers | {:.0} tasks/s ({:.3} s) | ≥ 10,000 tasks/s | {numbers_anchor} |",
        tasks as f64 / warm.as_secs_f64(),
        warm.as_secs_f64()
    );
    println!(
        "| chain of {steps} Python no-op steps, warm | {:.1} ms | ≤ 20 ms | {chain_anchor}; Hatchet 1.2 s, Temporal 3.0 s, Airflow 116 s |",
        chained.as_secs_f64() * 1e3
    );
    println!(
        "| first task of a cold Python algorithm | {:.1} ms | ≤ 150 ms | {cold_anchor} |",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "| a {} MiB result passed from one step to the next (bytes, via storage; median of 3) | {:.2} GB/s ({:.3} s from the producer's return to the consumer's start; whole 2-step job {:.3} s; with 1 byte: {:.3} s) | ≥ 1 GB/s | {big_anchor} |",
        big_bytes >> 20,
        big_bytes as f64 / passing.as_secs_f64() / 1e9,
        passing.as_secs_f64(),
        large.as_secs_f64(),
        small.as_secs_f64()
    );
    println!(
        "| bare websocket round trip, Python client ↔ tokio-tungstenite echo | {:.1} µs ({:.0}/s) | the floor | measured for the issue: ~105 µs |",
        bare.as_secs_f64() * 1e6 / rounds as f64,
        rounds as f64 / bare.as_secs_f64()
    );
}
