//! The container tier: image builds (first, code-only change, unchanged) and the Docker
//! executor's workers (cold start to the first result, warm per-task cost), on this machine's
//! Docker engine. Prints the figures beside the container-tier issue's targets and anchors.
//!
//! Needs dockerd, the base images (`sudo scripts/base-images.sh`) and a release build:
//! `cargo build --release`, then `cargo run --release -p hkube-bench --bin containers`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use hkube_bench::server::{hkube, repo, request, run_job, start_server};
use serde_json::{json, Value};

/// `hkube algorithm apply -f algorithm.yml --noWait` in `folder`; the server's answer.
fn apply(address: &str, folder: &Path) -> Value {
    let output = Command::new(hkube())
        .args([
            "algorithm",
            "apply",
            "-f",
            "algorithm.yml",
            "--noWait",
            "--json",
        ])
        .args(["--endpoint", &format!("http://{address}")])
        .current_dir(folder)
        .output()
        .expect("hkube algorithm apply");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the apply's JSON")
}

/// Waits for a build to complete, polling every 20 ms.
fn wait_build(address: &str, build_id: &str) -> Value {
    loop {
        let record = request(
            address,
            "GET",
            &format!("/api/v1/builds/status/{build_id}"),
            "",
        );
        match record["status"].as_str() {
            Some("completed") => return record,
            Some("failed") | Some("stopped") => panic!("build {build_id}: {}", record["error"]),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Applies and waits for the image: the wall time from the apply to the completed build.
fn timed_build(address: &str, folder: &Path) -> (Duration, Value) {
    let start = Instant::now();
    let answer = apply(address, folder);
    let record = match answer["buildId"].as_str() {
        Some(id) => wait_build(address, id),
        None => answer,
    };
    (start.elapsed(), record)
}

/// Runs `name` once as a one-node job; the wall time to its result.
fn run_once(address: &str, name: &str, input: Value) -> (Duration, Value) {
    let body = json!({"name": name, "input": input}).to_string();
    let (took, results) = run_job(
        address,
        "/api/v1/exec/algorithm",
        &body,
        Duration::from_micros(500),
    );
    (took, results["data"][0]["result"].clone())
}

fn nonce() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// A copy of an example algorithm in `root`.
fn example(root: &Path, name: &str) -> PathBuf {
    let from = repo().join("examples/numbers").join(name);
    let to = root.join(name);
    std::fs::create_dir_all(&to).expect("folder");
    for entry in std::fs::read_dir(&from).expect("example").flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
    to
}

fn main() {
    let root = std::env::temp_dir().join(format!("hkube-bench-containers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench folder");
    let state = root.join("state");
    let (mut server, address) = start_server(&state, &["--executor", "docker"]);

    // 1. Builds of Range with one requirement. A fresh comment in requirements.txt makes its
    //    dependency layer new: pip really downloads and installs (the base image is present).
    let range = example(&root, "range");
    std::fs::write(
        range.join("requirements.txt"),
        format!("# bench {}\nsix==1.16.0\n", nonce()),
    )
    .expect("requirements");
    let (first, record) = timed_build(&address, &range);
    assert!(record["result"]["data"]
        .as_str()
        .unwrap_or_default()
        .contains("Successfully installed six"));
    let mut code_only = Vec::new();
    for _ in 0..3 {
        let main = range.join("main.py");
        let text = std::fs::read_to_string(&main).expect("main.py");
        std::fs::write(&main, format!("{text}\n# change {}\n", nonce())).expect("main.py");
        code_only.push(timed_build(&address, &range).0);
    }
    let mut unchanged = Vec::new();
    for _ in 0..5 {
        let (took, answer) = timed_build(&address, &range);
        assert!(
            answer["buildId"].is_null(),
            "an unchanged apply built: {answer}"
        );
        unchanged.push(took);
    }

    // Multiply and Reduce too, for the numbers pipeline of step 3.
    for name in ["multiply", "reduce"] {
        timed_build(&address, &example(&root, name));
    }

    // 2. Cold start: a server start removes the previous run's workers, so the first job after
    //    a start creates the container pair.
    let mut address = address;
    let mut cold = Vec::new();
    for round in 0..3 {
        if round > 0 {
            let _ = Command::new("kill")
                .args(["-TERM", &server.id().to_string()])
                .status();
            let _ = server.wait();
            (server, address) = start_server(&state, &["--executor", "docker"]);
        }
        let (took, result) = run_once(&address, "range", json!([3]));
        assert_eq!(result, json!([1, 2, 3]));
        cold.push(took);
    }

    // 3. Warm: one-node jobs one after another on the running container (job overhead
    //    included), and the numbers pipeline with N=1,000 for the cost of one task.
    let mut warm = Vec::new();
    for _ in 0..50 {
        warm.push(run_once(&address, "range", json!([3])).0);
    }
    let pipeline = |n: u64| {
        let text = std::fs::read_to_string(repo().join("examples/numbers/numbers.yml"))
            .expect("numbers.yml");
        let mut doc = orchestrator::spec::read_document(&text).expect("a pipeline");
        doc["flowInput"] = json!({"N": n, "k": 2});
        doc.to_string()
    };
    let n = 1000u64;
    let batch = pipeline(n);
    run_pipeline(&address, &batch);
    let mut per_task = Vec::new();
    for _ in 0..3 {
        let (took, result) = run_pipeline(&address, &batch);
        assert_eq!(result, json!(n * (n + 1)));
        per_task.push(took / (n as u32 + 2));
    }
    // The containers that ran it, while they are still up.
    let storage = state.join("storage");
    let workers: Vec<String> = ["range", "multiply", "reduce"]
        .iter()
        .map(|name| format!("{name} {}", workers_of(&storage, name)))
        .collect();
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&root);
    report(
        first,
        code_only,
        unchanged,
        cold,
        warm,
        per_task,
        &workers.join(", "),
    );
}

/// How many workers of `algorithm` this server has running now: its algorithm containers
/// (sidecars left out), found by the algorithm's label and by the server's storage folder,
/// which every worker of this server mounts and no other server's does.
fn workers_of(storage: &Path, algorithm: &str) -> usize {
    let output = Command::new("docker")
        .args(["ps", "--format", "{{.Names}}"])
        .args(["--filter", &format!("label=io.hkube.algorithm={algorithm}")])
        .args(["--filter", &format!("volume={}", storage.display())])
        .output()
        .expect("docker ps runs");
    assert!(
        output.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let count = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|name| !name.trim().is_empty() && !name.ends_with("-sidecar"))
        .count();
    // The numbers pipeline just ran on them: none found means the filter is wrong, not that
    // no worker ran.
    assert!(
        count > 0,
        "docker ps found no {algorithm} worker of this server"
    );
    count
}

/// Submits a pipeline and waits for its result.
fn run_pipeline(address: &str, pipeline: &str) -> (Duration, Value) {
    let (took, results) = run_job(
        address,
        "/api/v1/exec/raw",
        pipeline,
        Duration::from_millis(1),
    );
    (took, results["data"][0]["result"].clone())
}

fn report(
    first: Duration,
    code_only: Vec<Duration>,
    unchanged: Vec<Duration>,
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    per_task: Vec<Duration>,
    workers: &str,
) {
    let cold_median = median(cold.clone());
    let warm_median = median(warm);

    hkube_bench::print_table_head(
        "hkube container-tier benchmark (release build, Docker executor, this machine's dockerd)",
    );
    println!(
        "| first build of a Python algorithm with one requirement, base image present (apply → image) | {:.1} s | ≤ 60 s | a hello-world Python function on Kyma: ~5 min |",
        first.as_secs_f64()
    );
    println!(
        "| rebuild after a code-only change (median of {}) | {:.2} s | ≤ 5 s | a no-op Cloud Native Buildpacks rebuild: ~30 s |",
        code_only.len(),
        median(code_only).as_secs_f64()
    );
    println!(
        "| unchanged inputs: apply answered, no build (median of {}) | {:.0} ms | ≤ 500 ms | |",
        unchanged.len(),
        ms(median(unchanged))
    );
    println!(
        "| container cold start to the first task's result (median of {}: {}) | {:.0} ms | ≤ 1,500 ms | |",
        cold.len(),
        cold.iter()
            .map(|c| format!("{:.0}", ms(*c)))
            .collect::<Vec<_>>()
            .join(", "),
        ms(cold_median)
    );
    println!(
        "| warm container: a one-node job to its result (median of 50, job overhead included) | {:.1} ms | per-task overhead ≤ 3 ms | |",
        ms(warm_median)
    );
    println!(
        "| warm containers: numbers with N=1,000 (1,002 tasks; worker containers running after it, counted with docker ps: {workers}), time per task (median of 3) | {:.2} ms | ≤ 3 ms | |",
        ms(median(per_task))
    );
}
