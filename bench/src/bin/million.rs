//! One job with a batch of 1,000,000 no-op Python items on `hkube server` (release), through
//! the REST API: the time from submission to the job's end, the server's peak RSS, and the
//! latency of every `exec/status` call made while the job runs (one after another, 10 ms
//! apart), then the time to fetch the results document. Prints the figures beside the targets
//! of the scheduler issue.
//!
//! The server's RSS is the server process alone (its workers are other processes): VmHWM, the
//! kernel's own high-water mark, read at the end, with VmRSS sampled every 100 ms for a trace.
//!
//! Build the CLI first: `cargo build --release`, then
//! `cargo run --release -p hkube-bench --bin million [-- --items N --collector 1]`
//! (`--collector 1`: a Python node after the batch counts its outputs, so the results
//! document is one number rather than one entry per item).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hkube_bench::arg;
use hkube_bench::server::{request, rss_kib, start_server};
use serde_json::{json, Value};

/// A folder with two Python algorithms: `noop` (returns its first input) and `count` (the
/// length of its first input).
fn algorithms() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hkube-bench-million-{}", std::process::id()));
    for (name, body) in [
        ("noop", "return args['input'][0]"),
        ("count", "return len(args['input'][0])"),
    ] {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).expect("a temp folder");
        std::fs::write(
            folder.join("main.py"),
            format!("def start(args, api):\n    {body}\n"),
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

fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let items = arg("--items", 1_000_000);
    let collector = arg("--collector", 0) == 1;
    let dir = algorithms();
    let state =
        std::env::temp_dir().join(format!("hkube-bench-million-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let folder = dir.to_string_lossy().to_string();
    let (mut server, address) = start_server(&state, &["--algorithms", &folder]);
    let pid = server.id();
    let idle_kib = rss_kib(pid);

    let mut nodes = vec![json!({"nodeName": "item", "algorithmName": "noop",
                                "input": ["#@flowInput.items"]})];
    if collector {
        nodes.push(json!({"nodeName": "count", "algorithmName": "count", "input": ["@item"]}));
    }
    let pipeline = json!({
        "name": "million",
        "nodes": nodes,
        "flowInput": {"items": (0..items as u64).collect::<Vec<u64>>()},
    })
    .to_string();

    // RSS trace, every 100 ms until the end.
    let done = Arc::new(AtomicBool::new(false));
    let trace = Arc::new(Mutex::new(Vec::<(f64, u64)>::new()));
    let start = Instant::now();
    let sampler = {
        let (done, trace) = (done.clone(), trace.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let at = start.elapsed().as_secs_f64();
                if let Ok(mut t) = trace.lock() {
                    t.push((at, rss_kib(pid)));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let submitted = request(&address, "POST", "/api/v1/exec/raw", &pipeline);
    let submit_took = start.elapsed();
    let job = submitted["jobId"]
        .as_str()
        .unwrap_or_else(|| panic!("the job was not accepted: {submitted}"))
        .to_string();

    // Status calls, one after another, until the job ends.
    let mut latencies = Vec::new();
    let mut slowest = (Duration::ZERO, 0.0);
    let mut last = Value::Null;
    let status_path = format!("/api/v1/exec/status/{job}");
    let ended = loop {
        let asked = Instant::now();
        let status = request(&address, "GET", &status_path, "");
        let took = asked.elapsed();
        if took > slowest.0 {
            slowest = (took, start.elapsed().as_secs_f64());
        }
        latencies.push(took);
        match status["status"].as_str() {
            Some("completed") => break start.elapsed(),
            Some("failed") | Some("stopped") => panic!("job {job} ended: {status}"),
            Some(_) => last = status,
            None => panic!("no status for {job}: {status}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let peak_during = peak_kib(pid);

    let asked = Instant::now();
    let results = request(&address, "GET", &format!("/api/v1/exec/results/{job}"), "");
    let results_took = asked.elapsed();
    let entries = results["data"].as_array().map_or(0, Vec::len);
    if collector {
        assert_eq!(
            results["data"][0]["result"],
            json!(items),
            "{}",
            results["data"]
        );
    } else {
        assert_eq!(entries, items, "one result entry per item");
        assert_eq!(results["data"][items - 1]["result"], json!(items - 1));
    }
    let peak_after = peak_kib(pid);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&dir);

    latencies.sort();
    println!("hkube: one job with a batch of {items} no-op Python items (hkube server, release)");
    println!(
        "machine: {} cores; load before: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "results: {}",
        if collector {
            "one collector node counts the items"
        } else {
            "the batch is the sink: one result entry per item"
        }
    );
    println!();
    println!("| scenario | measured | target |");
    println!("|---|---|---|");
    println!(
        "| end to end: submit → completed (the submit call alone: {:.2} s) | {:.2} s ({:.0} tasks/s) | ≤ 30 s |",
        submit_took.as_secs_f64(),
        ended.as_secs_f64(),
        items as f64 / ended.as_secs_f64()
    );
    println!(
        "| server peak RSS until the end (idle before: {} MB) | {} MB | ≤ 600 MB |",
        idle_kib / 1024,
        peak_during / 1024
    );
    println!(
        "| `exec/status` while it runs ({} calls) | slowest {:.1} ms (at {:.1} s), p99 {:.1} ms, median {:.2} ms | ≤ 50 ms each |",
        latencies.len(),
        slowest.0.as_secs_f64() * 1e3,
        slowest.1,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
    );
    println!(
        "| `exec/results` once it ended ({} entries) | {:.2} s; peak RSS after it {} MB | — |",
        entries,
        results_took.as_secs_f64(),
        peak_after / 1024
    );
    println!();
    println!("last status while running: {}", last["data"]["details"]);
    let trace = trace.lock().map(|t| t.clone()).unwrap_or_default();
    let line: Vec<String> = trace
        .iter()
        .step_by(10)
        .map(|(at, kib)| format!("{at:.0}s:{}MB", kib / 1024))
        .collect();
    println!("server RSS every second: {}", line.join(" "));
}
