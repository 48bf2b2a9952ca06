//! The front door: `hkube run` as a whole process, and `hkube server` answering `exec raw` on
//! a warm server, including 100 pipelines submitted at once. Prints this machine's figures
//! beside the targets of the front-door issue.
//!
//! The anchor for `hkube run` is Ray's start measured here, after hkube's measurements, when
//! the venv of `bench/ray/setup.sh` exists (or `--ray PYTHON` names a python with ray):
//! `ray.init(num_cpus=2)` and `ray.shutdown()` as a whole python process, `--ray-starts` (3)
//! times. Without it the table says Ray was not measured.
//!
//! Build the CLI first: `cargo build --release`, then
//! `cargo run --release -p hkube-bench --bin front [-- --bursts N --ray-starts N --ray PYTHON]`.

use std::process::Command;
use std::time::{Duration, Instant};

use hkube_bench::server::{hkube, repo, rss_kib, run_job, start_server};
use hkube_bench::{ray, Spread};
use serde_json::{json, Value};

fn numbers(n: u64) -> String {
    let text =
        std::fs::read_to_string(repo().join("examples/numbers/numbers.yml")).expect("numbers.yml");
    let mut pipeline = orchestrator::spec::read_document(&text).expect("a pipeline");
    pipeline["flowInput"] = json!({"N": n, "k": 2});
    pipeline.to_string()
}

/// Submits and waits for the results; returns the elapsed time and the result.
fn exec(address: &str, pipeline: &str) -> (Duration, Value) {
    run_job(
        address,
        "/api/v1/exec/raw",
        pipeline,
        Duration::from_micros(200),
    )
}

fn main() {
    // 1. hkube run, whole process.
    let mut runs = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let output = Command::new(hkube())
            .args(["run", "--quiet", "examples/numbers"])
            .current_dir(repo())
            .output()
            .expect("hkube run");
        runs.push(start.elapsed());
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    runs.sort();
    let run_median = runs[runs.len() / 2];

    // 2. exec raw → results on a warm server.
    let state = std::env::temp_dir().join(format!("hkube-bench-front-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let (mut server, address) = start_server(&state, &["--algorithms", "examples/numbers"]);
    let pipeline = numbers(5);
    for _ in 0..3 {
        exec(&address, &pipeline);
    }
    let mut latencies = Vec::new();
    for _ in 0..30 {
        let (took, result) = exec(&address, &pipeline);
        assert_eq!(result["data"][0]["result"], 30, "{result}");
        latencies.push(took);
    }
    latencies.sort();
    let latency_median = latencies[latencies.len() / 2];

    // 3. 100 pipelines at once.
    let rss_before = rss_kib(server.id());
    let burst_of_100 = || {
        let start = Instant::now();
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let address = address.clone();
                let pipeline = pipeline.clone();
                std::thread::spawn(move || exec(&address, &pipeline).1)
            })
            .collect();
        let results: Vec<Value> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
        let completed = results
            .iter()
            .filter(|r| r["status"] == "completed" && r["data"][0]["result"] == 30)
            .count();
        let took = start.elapsed();
        std::thread::sleep(Duration::from_secs(3));
        (took, completed, rss_kib(server.id()))
    };
    let (burst, completed, rss_after) = burst_of_100();
    // More bursts: memory that stays flat is reused, memory that climbs is held.
    let mut rss_later = Vec::new();
    for _ in 0..hkube_bench::arg("--bursts", 5) {
        rss_later.push(burst_of_100().2 / 1024);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&state);

    // Ray's start, alone: hkube's server is gone.
    let ray_start = match ray::start_times(hkube_bench::arg("--ray-starts", 3).max(1)) {
        Ok((version, times)) => format!(
            "Ray {version} here, same run: `ray.init(num_cpus=2)` + shutdown as a whole python process, {}",
            Spread::of(&times).show(2, "s")
        ),
        Err(why) => format!("Ray's start: {why}"),
    };

    hkube_bench::print_table_head("hkube front-door benchmark (release build, local executor)");
    println!(
        "| `hkube run examples/numbers`, whole process (median of 10) | {:.0} ms (min {:.0} ms) | ≤ 1,000 ms | {ray_start} |",
        run_median.as_secs_f64() * 1e3,
        runs[0].as_secs_f64() * 1e3
    );
    println!(
        "| `exec raw` to results, 3-node pipeline, warm server (median of 30) | {:.1} ms | ≤ 20 ms | — |",
        latency_median.as_secs_f64() * 1e3
    );
    println!(
        "| 100 pipelines submitted at once | {completed}/100 completed in {:.2} s; server RSS {} → {} MiB, after each further burst {:?} MiB | all complete, none lost, memory back near its start | — |",
        burst.as_secs_f64(),
        rss_before / 1024,
        rss_after / 1024,
        rss_later
    );
}
