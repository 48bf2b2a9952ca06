//! The worker tier end to end: the engine, the local executor, sidecars and Python runtimes as
//! real processes. Prints this machine's figures beside the targets of the worker-tier issue
//! and the anchors measured or published for other tools.
//!
//! Ray is measured in the same run, after hkube's measurements and never beside them, when the
//! venv that `bench/ray/setup.sh` makes exists (or `--ray PYTHON` names a python with ray): it
//! runs `bench/ray/workloads.py` with the same N, chain length, size and repeats, and the same
//! task bodies for the large result (`bench/python/bench_tasks.py`). Without it the table says
//! that Ray was not measured, and why.
//!
//! The large result is timed over the same intervals on both sides, `--repeat` times each
//! (median, min and max shown): from the producer's return to the consumer having read every
//! byte, and the whole 2-task job.
//!
//! `cargo run --release -p hkube-bench --bin workers [-- --items N --chain N --rounds N --bytes N
//! --repeat N --chain-runs N --ray PYTHON]` (the chain: the median of `--chain-runs`, 21)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hkube_bench::{arg, ray, Spread};
use orchestrator::engine::{Engine, Handle, MemoryCatalog};
use orchestrator::executor::local::{LocalExecutor, LocalOptions};
use orchestrator::project;
use orchestrator::spec;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The task bodies both sides run (hkube's algorithms here, Ray's remote functions).
const BENCH_TASKS: &str = include_str!("../../python/bench_tasks.py");

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
    // A producer of `input[0]` bytes stamped with the moment it hands them over, and a consumer
    // that reads every byte: the task bodies of bench/python/bench_tasks.py, which Ray runs too.
    for (name, function) in [("make", "make"), ("consume", "consume")] {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).expect("a folder");
        std::fs::write(folder.join("bench_tasks.py"), BENCH_TASKS).expect("write bench_tasks.py");
        std::fs::write(
            folder.join("main.py"),
            format!("import bench_tasks\ndef start(args, api):\n    return bench_tasks.{function}(args['input'][0])\n"),
        )
        .expect("write main.py");
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
            // The process tier only: the wasm tier has its own benchmark (bin/wasm.rs).
            let Some(local) = algorithm.local() else {
                continue;
            };
            catalog.put_algorithm(algorithm.descriptor.clone());
            executor.register(local.clone()).await.expect("registered");
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
    big: Big,
}

impl RayFigures {
    fn from(figures: &Value) -> RayFigures {
        let number = |key: &str| figures[key].as_f64().unwrap_or(f64::NAN);
        let runs = |key: &str| -> Vec<[f64; 3]> {
            figures[key]
                .as_array()
                .map(|runs| {
                    runs.iter()
                        .map(|run| {
                            let at = |i: usize| run[i].as_f64().unwrap_or(f64::NAN);
                            [at(0), at(1), at(2)]
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        RayFigures {
            version: figures["ray"].as_str().unwrap_or("?").to_string(),
            init: number("init_s"),
            cold_first_task: number("cold_first_task_s"),
            numbers: number("numbers_s"),
            numbers_tasks: number("numbers_tasks"),
            chain: number("chain_s"),
            big: Big::of(&runs("big"), &runs("big_small")),
        }
    }
}

/// The large-result scenario, measured the same way on both sides: `[whole 2-task job, from
/// the producer's stamp to the consumer's end of reading every byte, the read alone]` per run,
/// in seconds, for the large size and for 1 byte.
struct Big {
    whole: Spread,
    passing: Spread,
    reading: Spread,
    small_whole: Spread,
}

impl Big {
    fn of(large: &[[f64; 3]], small: &[[f64; 3]]) -> Big {
        let column = |runs: &[[f64; 3]], i: usize| -> Spread {
            let values: Vec<f64> = runs.iter().map(|run| run[i]).collect();
            if values.is_empty() {
                Spread::of(&[f64::NAN])
            } else {
                Spread::of(&values)
            }
        };
        Big {
            whole: column(large, 0),
            passing: column(large, 1),
            reading: column(large, 2),
            small_whole: column(small, 0),
        }
    }

    /// The passing as a rate, then its times.
    fn passing_row(&self, bytes: usize) -> String {
        format!(
            "{}: {}, of which the consumer's read {}",
            self.passing.map(|s| bytes as f64 / s / 1e9).show(2, "GB/s"),
            self.passing.brief(3, "s"),
            self.reading.brief(3, "s"),
        )
    }

    fn whole_row(&self) -> String {
        format!(
            "{}; with 1 byte: {}",
            self.whole.show(3, "s"),
            self.small_whole.brief(3, "s")
        )
    }
}

/// The CRC-32 that `bench_tasks.consume` answers for `bench_tasks.make(size)`'s bytes: computed
/// here, independently of Python, so a consumer that skipped bytes cannot pass.
fn expected_crc(size: usize) -> u32 {
    let ones = vec![1u8; 1 << 20];
    let mut left = if size < 8 { size } else { size - 8 };
    let mut hasher = crc32fast::Hasher::new();
    while left > 0 {
        let piece = left.min(ones.len());
        hasher.update(&ones[..piece]);
        left -= piece;
    }
    hasher.finalize()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let items = arg("--items", 10_000);
    let steps = arg("--chain", 40);
    let rounds = arg("--rounds", 20_000);
    let big_bytes = arg("--bytes", 256 << 20);
    let repeat = arg("--repeat", 5).max(1);
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
    // One run is one sample of a few ms, and the scheduling of 2 cores moves it by a ms or
    // more: the median of `--chain-runs` runs is the figure.
    run(&handle, chain(steps)).await;
    let mut chain_ms = Vec::new();
    for _ in 0..arg("--chain-runs", 21).max(1) {
        let (_, took) = run(&handle, chain(steps)).await;
        chain_ms.push(took.as_secs_f64() * 1e3);
    }
    let chained = Spread::of(&chain_ms);

    // A large result from one step to the next (bytes go through storage by reference), read
    // whole by the consumer; as Ray does it in workloads.py: one warm-up with 1 byte, then
    // `repeat` runs with 1 byte and `repeat` with the large size.
    let big = |size: usize| {
        json!({"name": "big", "nodes": [
            {"nodeName": "A", "algorithmName": "make", "input": [size]},
            {"nodeName": "B", "algorithmName": "consume", "input": ["@A"]},
        ]})
    };
    let crcs = [(1, expected_crc(1)), (big_bytes, expected_crc(big_bytes))];
    let big_run = |size: usize| {
        let handle = handle.clone();
        let crc = crcs.iter().find(|(s, _)| *s == size).map(|(_, c)| *c);
        async move {
            let (result, took) = run(&handle, big(size)).await;
            let answer = &result["data"][0]["result"];
            assert_eq!(answer[0], json!(size), "{result}");
            assert_eq!(
                answer[2].as_u64(),
                crc.map(u64::from),
                "the consumer read other bytes than were made: {result}"
            );
            let at = |i: usize| answer[i].as_f64().unwrap_or(f64::NAN);
            [took.as_secs_f64(), at(1), at(3)]
        }
    };
    big_run(1).await;
    let mut smalls = Vec::new();
    for _ in 0..repeat {
        smalls.push(big_run(1).await);
    }
    let mut larges = Vec::new();
    for _ in 0..repeat {
        larges.push(big_run(big_bytes).await);
    }
    let large = Big::of(&larges, &smalls);
    executor.shutdown().await;

    let bare = bare_round_trip(rounds).await;
    let _ = std::fs::remove_dir_all(&noop);

    // Ray last, alone: every hkube worker has been shut down above.
    let ray_args: Vec<String> = [
        "--scenario",
        "workers",
        "--items",
        &items.to_string(),
        "--chain",
        &steps.to_string(),
        "--bytes",
        &big_bytes.to_string(),
        "--repeat",
        &repeat.to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let ray =
        tokio::task::spawn_blocking(move || ray::workloads(&ray_args, Duration::from_secs(600)))
            .await
            .expect("the Ray run's thread")
            .map(|figures| RayFigures::from(&figures));

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
        Ok(r) => println!(
            "ray: {} (local, num_cpus=2, run after hkube's measurements; ray.init {:.2} s)",
            r.version, r.init
        ),
        Err(why) => println!("ray: {why}"),
    }
    println!();
    let (numbers_anchor, chain_anchor, cold_anchor, passing_anchor, whole_anchor) = match &ray {
        Ok(r) => {
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
                format!("{here} {}", r.big.passing_row(big_bytes)),
                format!("{here} {}", r.big.whole_row()),
            )
        }
        Err(why) => (
            format!("Ray: {why}"),
            format!("Ray: {why}"),
            format!("Ray: {why}"),
            format!("Ray: {why}"),
            format!("Ray: {why}"),
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
        "| chain of {steps} Python no-op steps, warm | {} | ≤ 5 ms | {chain_anchor}; Hatchet 1.2 s, Temporal 3.0 s, Airflow 116 s (published) |",
        chained.show(1, "ms")
    );
    println!(
        "| first task of a cold Python algorithm | {:.1} ms | ≤ 150 ms | {cold_anchor} |",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "| a {} MiB result passed from one step to the next: from the producer's return (a stamp in its first bytes) to the consumer having read every byte (CRC-32, checked) | {} | ≥ 1 GB/s | {passing_anchor} |",
        big_bytes >> 20,
        large.passing_row(big_bytes),
    );
    println!(
        "| the same {} MiB, the whole 2-task job: submit → result, making the bytes and reading them included | {} | — | {whole_anchor} |",
        big_bytes >> 20,
        large.whole_row(),
    );
    println!(
        "| bare websocket round trip, Python client ↔ tokio-tungstenite echo | {:.1} µs ({:.0}/s) | the floor | measured for the issue: ~105 µs |",
        bare.as_secs_f64() * 1e6 / rounds as f64,
        rounds as f64 / bare.as_secs_f64()
    );
}
