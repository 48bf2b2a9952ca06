//! Resources enforced on the local executor, end to end with real Python workers: a memory
//! hog over its limit fails its task with the limit named (by cgroup, and by the watchdog),
//! and GPU workers see exactly the devices they were granted.

#![allow(clippy::unwrap_used)] // a test may panic on the unexpected

use std::sync::Arc;
use std::time::Duration;

use orchestrator::engine::{Engine, MemoryCatalog};
use orchestrator::executor::limits::{Enforcement, LimitOptions, MemoryGuard};
use orchestrator::executor::local::inventory::{local_node, Overrides};
use orchestrator::executor::local::{Language, LocalAlgorithm, LocalExecutor, LocalOptions};
use orchestrator::scheduler::{Node, Request};
use orchestrator::spec;
use serde_json::{json, Value};

fn python_missing() -> Option<String> {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then(|| "python3 is not installed".to_string())
}

/// Registers a Python algorithm from its descriptor (its request comes from `cpu`, `mem`,
/// `gpu` as HKube computes it) and its code.
async fn algorithm(
    executor: &LocalExecutor,
    catalog: &MemoryCatalog,
    descriptor: Value,
    code: &str,
) -> tempfile::TempDir {
    hot_algorithm(executor, catalog, descriptor, code, 0).await
}

async fn hot_algorithm(
    executor: &LocalExecutor,
    catalog: &MemoryCatalog,
    descriptor: Value,
    code: &str,
    min_hot_workers: usize,
) -> tempfile::TempDir {
    let descriptor = spec::parse_algorithm(descriptor).unwrap();
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("main.py"), code).unwrap();
    executor
        .register(LocalAlgorithm {
            name: descriptor.name.clone(),
            language: Language::Python,
            code_dir: folder.path().to_path_buf(),
            entry_point: "main.py".into(),
            min_hot_workers,
            max_workers: 0,
            request: Request::for_algorithm(&descriptor).unwrap(),
            classpath: None,
            container: None,
            prepared: None,
            command: None,
            env: Vec::new(),
        })
        .await
        .unwrap();
    catalog.put_algorithm(descriptor);
    folder
}

async fn run(executor: &LocalExecutor, catalog: Arc<MemoryCatalog>, pipeline: Value) -> Value {
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    let job = handle.exec_raw(pipeline).await.unwrap();
    tokio::time::timeout(Duration::from_secs(120), handle.wait(&job))
        .await
        .expect("the job ends within 2 minutes")
        .unwrap()
}

/// Allocates 10 MiB chunks (written, so they are resident) until something stops it; each
/// start leaves a line in `starts` beside the code.
const HOG: &str = "\
import os, time
def start(args, api):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'starts'), 'a') as f:
        f.write('start\\n')
    chunks = []
    for _ in range(300):
        chunks.append(b'\\x01' * (10 << 20))
        time.sleep(0.01)
    return len(chunks)
";

/// `mem: 64Mi` is a request of 77Mi (64 + HKube's 20 % reserved, rounded up) and a limit of
/// twice that: the hog goes over 154Mi, its worker is killed, and the task fails naming the
/// limit. HKube's default retry policy (OnCrash, 3 attempts) runs it three times; `Never`
/// fails it at once. Before, a `mem: 256Mi` algorithm allocated 4 GB and completed.
async fn a_memory_hog_fails_with_its_limit_named(enforcement: Enforcement) {
    let executor = LocalExecutor::start(LocalOptions {
        limits: LimitOptions {
            enforcement,
            ..LimitOptions::default()
        },
        ..LocalOptions::default()
    });
    let catalog = Arc::new(MemoryCatalog::new());
    let folder = algorithm(
        &executor,
        &catalog,
        json!({"name": "hog", "algorithmImage": "local", "mem": "64Mi"}),
        HOG,
    )
    .await;
    let starts = || {
        std::fs::read_to_string(folder.path().join("starts"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let result = run(
        &executor,
        catalog.clone(),
        json!({"name": "hog", "nodes": [{"nodeName": "A", "algorithmName": "hog", "input": []}]}),
    )
    .await;
    assert_eq!(result["status"], "failed", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.starts_with("node A is in CrashLoopBackOff, attempts: 3/3, last error: the algorithm's process exceeded its memory limit of 154Mi (OOM)"),
        "{enforcement:?}: {error}"
    );
    assert_eq!(starts(), 3, "retried by HKube's default policy");

    let result = run(
        &executor,
        catalog,
        json!({"name": "hog", "nodes": [{"nodeName": "A", "algorithmName": "hog", "input": [],
            "retry": {"policy": "Never", "limit": 3}}]}),
    )
    .await;
    let error = result["error"].as_str().unwrap();
    assert!(
        error.starts_with("the algorithm's process exceeded its memory limit of 154Mi (OOM)"),
        "{enforcement:?}: {error}"
    );
    assert_eq!(starts(), 4, "policy Never: no retry");
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_fails_with_its_limit_named_by_cgroup() {
    if let Some(reason) = python_missing() {
        testkit::skip(None, &reason);
        return;
    }
    if let MemoryGuard::Unavailable(why) = MemoryGuard::choose(Enforcement::Cgroup) {
        testkit::skip(None, &format!("no usable memory cgroup: {why}"));
        return;
    }
    a_memory_hog_fails_with_its_limit_named(Enforcement::Cgroup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_fails_with_its_limit_named_by_the_watchdog() {
    if let Some(reason) = python_missing() {
        testkit::skip(None, &reason);
        return;
    }
    a_memory_hog_fails_with_its_limit_named(Enforcement::Watchdog).await;
}

/// This machine's GPUs when it has some (`nvidia-smi`), else two declared ones.
fn gpu_inventory() -> Node {
    let machine = local_node(&Overrides::default());
    if !machine.gpus.is_empty() {
        return machine;
    }
    local_node(&Overrides {
        cpus: Some(2.0),
        memory_mib: Some(8192),
        gpus: Some(2),
    })
}

/// Each item reports the devices its worker sees and when it ran.
const REPORTS_DEVICES: &str = "\
import os, time
def start(args, api):
    began = time.time()
    time.sleep(1.5)
    return [os.environ.get('CUDA_VISIBLE_DEVICES'), os.getpid(), began, time.time()]
";

/// (devices, pid, start, end) of each item of a batch of `items` (0: one more than the
/// inventory's GPUs) of an algorithm asking `gpu`.
async fn gpu_batch(gpu: f64, items: usize) -> (Node, Vec<(String, u64, f64, f64)>) {
    gpu_batch_with_hot(gpu, items, 0).await
}

async fn gpu_batch_with_hot(
    gpu: f64,
    items: usize,
    min_hot_workers: usize,
) -> (Node, Vec<(String, u64, f64, f64)>) {
    let inventory = gpu_inventory();
    let items = if items == 0 {
        inventory.gpus.len() + 1
    } else {
        items
    };
    let executor = LocalExecutor::start(LocalOptions {
        inventory: inventory.clone(),
        ..LocalOptions::default()
    });
    let catalog = Arc::new(MemoryCatalog::new());
    let _code = hot_algorithm(
        &executor,
        &catalog,
        json!({"name": "cuda", "algorithmImage": "local", "gpu": gpu}),
        REPORTS_DEVICES,
        min_hot_workers,
    )
    .await;
    let result = run(
        &executor,
        catalog,
        json!({"name": "gpus", "nodes": [
            {"nodeName": "A", "algorithmName": "cuda", "input": [format!("#[1...{items}]")]}
        ]}),
    )
    .await;
    assert_eq!(result["status"], "completed", "{result}");
    executor.shutdown().await;
    let runs = result["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let r = &item["result"];
            (
                r[0].as_str().unwrap_or("unset").to_string(),
                r[1].as_u64().unwrap(),
                r[2].as_f64().unwrap(),
                r[3].as_f64().unwrap(),
            )
        })
        .collect();
    (inventory, runs)
}

fn overlapping(a: &(String, u64, f64, f64), b: &(String, u64, f64, f64)) -> bool {
    a.2 < b.3 && b.2 < a.3
}

/// With 2 GPUs (declared, or the machine's own where `nvidia-smi` lists some), `gpu: 1`
/// workers each see one device of their own: as many run at once as there are devices, each
/// on a different one, and the item beyond them waits for a device instead of sharing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_workers_see_exactly_their_own_devices() {
    if let Some(reason) = python_missing() {
        testkit::skip(None, &reason);
        return;
    }
    let (inventory, runs) = gpu_batch(1.0, 0).await;
    let devices: Vec<String> = inventory.gpus.iter().map(|g| g.index.to_string()).collect();
    assert_eq!(runs.len(), devices.len() + 1);
    for run in &runs {
        assert!(
            devices.contains(&run.0),
            "{run:?} sees one device of {devices:?}"
        );
    }
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            if overlapping(a, b) {
                assert_ne!(a.0, b.0, "two workers at once on one whole GPU: {runs:?}");
            }
        }
    }
    // The most items in progress at any item's start: one per device, never more.
    let most = runs
        .iter()
        .map(|(_, _, at, _)| runs.iter().filter(|(_, _, s, e)| s <= at && at < e).count())
        .max()
        .unwrap_or(0);
    assert_eq!(
        most,
        devices.len(),
        "one worker per GPU at a time: {runs:?}"
    );
}

/// Shares of a GPU pack onto one device: two `gpu: 0.5` workers run at once on the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_shares_use_one_device_together() {
    if let Some(reason) = python_missing() {
        testkit::skip(None, &reason);
        return;
    }
    let (_, runs) = gpu_batch(0.5, 2).await;
    assert_eq!(runs.len(), 2);
    assert!(overlapping(&runs[0], &runs[1]), "{runs:?}");
    assert_ne!(runs[0].1, runs[1].1, "two workers: {runs:?}");
    assert_eq!(runs[0].0, runs[1].0, "one device shared: {runs:?}");
}

/// `minHotWorkers` beyond the free GPUs start no worker that would share a whole one: with 2
/// GPUs and 4 hot workers of `gpu: 1` asked for, 2 run, each on a device of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_workers_never_share_a_whole_gpu() {
    if let Some(reason) = python_missing() {
        testkit::skip(None, &reason);
        return;
    }
    let (inventory, runs) = gpu_batch_with_hot(1.0, 4, 4).await;
    let mut seen: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    for run in &runs {
        let device = seen.entry(run.1).or_insert_with(|| run.0.clone());
        assert_eq!(*device, run.0, "a worker kept its device: {runs:?}");
    }
    assert!(
        seen.len() <= inventory.gpus.len(),
        "at most one worker per GPU: {runs:?}"
    );
    let mut devices: Vec<&String> = seen.values().collect();
    devices.sort();
    devices.dedup();
    assert_eq!(
        devices.len(),
        seen.len(),
        "each worker its own device: {runs:?}"
    );
}
