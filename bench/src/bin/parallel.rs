//! Do workers run side by side? Batches of tasks that take real time, end to end on a release
//! `hkube server` (local executor, Python runtime, each algorithm with default resources), and
//! the same work on Ray in the same run. Prints the figures beside the scheduler issue's
//! targets; it judges nothing: the table shows what was measured.
//!
//! - A batch of `--sleep-items` (16) tasks that each sleep `--sleep-seconds` (1 s): submit → all
//!   results, and how many worker processes ran them (distinct pids).
//! - A CPU-bound task: a pure-Python loop calibrated first, in a python3 of its own, to take
//!   `--spin-seconds` (0.5 s) on one core. One such task alone, then a batch of `--spin-items`
//!   (8) of them; the speedup is items × the one task's time ÷ the batch's time (medians), so
//!   a batch run serially on one worker shows about 1×.
//!
//! Every figure is the median of `--repeat` (3) runs (the one CPU-bound task's, the speedup's
//! denominator, of `--single-repeat` (5) runs) after a warm-up batch of zero-length tasks
//! (so workers exist, as in a warm server), min and max shown. Ray runs after hkube's server is
//! gone, with `ray.init(num_cpus=2)` and the same task bodies (`bench/python/bench_tasks.py`),
//! the same calibrated loop, the same sizes and repeats: the sleeping batch once with Ray's
//! default resources (1 CPU a task) and once with HKube's default request (0.1 CPU a task).
//!
//! Build the CLI first: `cargo build --release`, then
//! `cargo run --release -p hkube-bench --bin parallel [-- --repeat N --single-repeat N
//! --sleep-items N --sleep-seconds S --spin-items N --spin-seconds S --ray PYTHON]`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hkube_bench::server::{run_job, start_server};
use hkube_bench::{arg, arg_f64, ray, Spread};
use serde_json::{json, Value};

/// The task bodies both sides run.
const BENCH_TASKS: &str = include_str!("../../python/bench_tasks.py");

/// A folder with the Python algorithms `nap` and `spin` (default resources), each a one-line
/// call into bench_tasks.
fn algorithms(root: &Path) -> PathBuf {
    let dir = root.join("algorithms");
    for name in ["nap", "spin"] {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).expect("a folder");
        std::fs::write(folder.join("bench_tasks.py"), BENCH_TASKS).expect("write bench_tasks.py");
        std::fs::write(
            folder.join("main.py"),
            format!(
                "import bench_tasks\ndef start(args, api):\n    return bench_tasks.{name}(args['input'][0])\n"
            ),
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

/// The rounds of `bench_tasks.spin` that take `seconds` on one core, and what they took: in a
/// python3 of its own, before anything of the benchmark's runs.
fn calibrate(algorithms: &Path, seconds: f64) -> (u64, f64) {
    let script = format!(
        "import json, sys\nsys.path.insert(0, {:?})\nimport bench_tasks\nprint(json.dumps(bench_tasks.calibrate({seconds})))\n",
        algorithms.join("spin").display().to_string()
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "calibrating the CPU-bound loop failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).expect("calibrate's JSON");
    (
        answer[0].as_u64().expect("calibrate's rounds"),
        answer[1].as_f64().expect("calibrate's time"),
    )
}

/// One run of a batch: submit → all results, and how many distinct processes ran its items.
struct BatchRun {
    seconds: f64,
    processes: usize,
}

/// Runs `algorithm` over `inputs` as one batch node (`#@flowInput.items`) and waits for every
/// item's result.
fn batch(address: &str, algorithm: &str, inputs: &[Value]) -> BatchRun {
    let pipeline = json!({
        "name": format!("{algorithm}-batch"),
        "nodes": [{"nodeName": algorithm, "algorithmName": algorithm, "input": ["#@flowInput.items"]}],
        "flowInput": {"items": inputs},
    });
    // Polled every 5 ms: late by at most that, and light enough (a request per poll) not to
    // take a core from the CPU-bound tasks it waits for.
    let (took, results) = run_job(
        address,
        "/api/v1/exec/raw",
        &pipeline.to_string(),
        Duration::from_millis(5),
    );
    let entries = results["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        entries.len(),
        inputs.len(),
        "one result per batch item: {results}"
    );
    let processes: HashSet<u64> = entries
        .iter()
        .map(|entry| {
            entry["result"][0]
                .as_u64()
                .unwrap_or_else(|| panic!("an item's result is [pid, seconds]: {entry}"))
        })
        .collect();
    BatchRun {
        seconds: took.as_secs_f64(),
        processes: processes.len(),
    }
}

/// `repeat` runs of one batch: the times, and the process counts seen ("1" or "1–2").
fn repeated(runs: &[BatchRun]) -> (Spread, String) {
    let times: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    let low = runs.iter().map(|r| r.processes).min().unwrap_or(0);
    let high = runs.iter().map(|r| r.processes).max().unwrap_or(0);
    let processes = match (low, high) {
        (1, 1) => "on 1 worker process".to_string(),
        (low, high) if low == high => format!("on {low} worker processes"),
        (low, high) => format!("on {low}–{high} worker processes"),
    };
    (Spread::of(&times), processes)
}

/// Ray's `[seconds, processes]` runs under `key` in workloads.py's figures.
fn ray_runs(figures: &Value, key: &str) -> (Spread, String) {
    let runs: Vec<BatchRun> = figures[key]
        .as_array()
        .map(|runs| {
            runs.iter()
                .map(|run| BatchRun {
                    seconds: run[0].as_f64().unwrap_or(f64::NAN),
                    processes: run[1].as_u64().unwrap_or(0) as usize,
                })
                .collect()
        })
        .unwrap_or_default();
    if runs.is_empty() {
        return (Spread::of(&[f64::NAN]), "on ? worker processes".into());
    }
    repeated(&runs)
}

fn main() {
    let repeat = arg("--repeat", 3).max(1);
    let sleep_items = arg("--sleep-items", 16);
    let sleep_seconds = arg_f64("--sleep-seconds", 1.0);
    let spin_items = arg("--spin-items", 8);
    let spin_seconds = arg_f64("--spin-seconds", 0.5);
    // The speedup's denominator: short runs, so more of them, for a steadier median.
    let single_repeat = arg("--single-repeat", 5).max(repeat);

    let root = std::env::temp_dir().join(format!("hkube-bench-parallel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let algorithms = algorithms(&root);
    let (rounds, alone) = calibrate(&algorithms, spin_seconds);

    let state = root.join("state");
    let folder = algorithms.display().to_string();
    let (mut server, address) = start_server(&state, &["--algorithms", &folder]);
    let naps = |seconds: f64| vec![json!(seconds); sleep_items];
    let spins = |n: u64, items: usize| vec![json!(n); items];

    batch(&address, "nap", &naps(0.0));
    let sleeping: Vec<BatchRun> = (0..repeat)
        .map(|_| batch(&address, "nap", &naps(sleep_seconds)))
        .collect();
    batch(&address, "spin", &spins(0, spin_items));
    let one: Vec<BatchRun> = (0..single_repeat)
        .map(|_| batch(&address, "spin", &spins(rounds, 1)))
        .collect();
    let many: Vec<BatchRun> = (0..repeat)
        .map(|_| batch(&address, "spin", &spins(rounds, spin_items)))
        .collect();
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&root);

    // Ray last, alone: hkube's server and its workers are gone.
    let ray_args: Vec<String> = vec![
        "--scenario".to_string(),
        "parallel".into(),
        "--spin".into(),
        rounds.to_string(),
        "--spin-items".into(),
        spin_items.to_string(),
        "--sleep-items".into(),
        sleep_items.to_string(),
        "--sleep-seconds".into(),
        sleep_seconds.to_string(),
        "--repeat".into(),
        repeat.to_string(),
        "--single-repeat".into(),
        single_repeat.to_string(),
    ];
    let ray = ray::workloads(&ray_args, Duration::from_secs(600));

    let (sleep, sleep_processes) = repeated(&sleeping);
    let (single, _) = repeated(&one);
    let (batched, batch_processes) = repeated(&many);
    let speedup =
        |single: &Spread, batched: &Spread| spin_items as f64 * single.median / batched.median;

    hkube_bench::print_table_head(
        "hkube parallel-workers benchmark (release build, hkube server, local executor, Python runtime)",
    );
    let anchors = match &ray {
        Ok(figures) => {
            let here = format!(
                "Ray {} here, same run, ray.init(num_cpus=2):",
                figures["ray"].as_str().unwrap_or("?")
            );
            let (default, default_processes) = ray_runs(figures, "sleep_default");
            let (tenth, tenth_processes) = ray_runs(figures, "sleep_cpu01");
            let (single, _) = ray_runs(figures, "spin_one");
            let (batched, processes) = ray_runs(figures, "spin_batch");
            [
                format!(
                    "{here} default resources (1 CPU a task) {} {default_processes}; 0.1 CPU a task (HKube's default) {} {tenth_processes}",
                    default.show(2, "s"),
                    tenth.show(2, "s"),
                ),
                format!("{here} {}", single.show(3, "s")),
                format!(
                    "{here} {} {processes}",
                    batched.show(2, "s")
                ),
                format!("{here} {:.2}×", speedup(&single, &batched)),
            ]
        }
        Err(why) => std::array::from_fn(|_| format!("Ray: {why}")),
    };
    println!(
        "| {sleep_items} tasks that each sleep {sleep_seconds} s, default resources (cpu 0.1), submit → all results | {} {sleep_processes} | ≤ 1.6 s (16 × 1 s) | {} |",
        sleep.show(2, "s"),
        anchors[0]
    );
    println!(
        "| one CPU-bound task: a pure-Python loop of {rounds} rounds ({alone:.3} s alone on one core, measured first), submit → result | {} | — | {} |",
        single.show(3, "s"),
        anchors[1]
    );
    println!(
        "| {spin_items} such tasks as one batch, submit → all results | {} {batch_processes} | — | {} |",
        batched.show(2, "s"),
        anchors[2]
    );
    println!(
        "| speedup: {spin_items} × one task ÷ the batch (medians) | {:.2}× | ≥ 1.6× (8 tasks of 0.5 s, 2 cores) | {} |",
        speedup(&single, &batched),
        anchors[3]
    );
}
