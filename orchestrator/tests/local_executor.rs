//! The engine with the local executor: real runtimes as real processes behind real sidecars.
//! Skips (with a printed reason) a case whose interpreter is missing.

#![allow(clippy::unwrap_used)] // a test may panic on the unexpected

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use orchestrator::engine::{Engine, Handle, MemoryCatalog};
use orchestrator::executor::local::{Language, LocalAlgorithm, LocalExecutor, LocalOptions};
use orchestrator::project;
use orchestrator::spec;
use serde_json::{json, Value};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/numbers")
}

fn available(program: &str, flag: &str) -> bool {
    std::process::Command::new(program)
        .arg(flag)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn missing_tools(need_java: bool) -> Option<String> {
    for (program, flag) in [("python3", "--version"), ("node", "--version")] {
        if !available(program, flag) {
            return Some(format!("{program} is not installed"));
        }
    }
    if need_java && !available("javac", "-version") {
        return Some("javac is not installed".into());
    }
    None
}

/// An engine with the local executor and the numbers example's algorithms.
async fn numbers_engine() -> (Handle, LocalExecutor) {
    let executor = LocalExecutor::start(LocalOptions {
        work_dir: std::env::temp_dir().join(format!("hkube-test-{}", std::process::id())),
        ..LocalOptions::default()
    });
    let catalog = Arc::new(MemoryCatalog::new());
    for algorithm in project::find_algorithms(&examples()).unwrap() {
        catalog.put_algorithm(algorithm.descriptor.clone());
        executor.register(algorithm.local.clone()).await.unwrap();
    }
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    (handle, executor)
}

fn pipeline(file: &str, n: u64, k: u64) -> Value {
    let text = std::fs::read_to_string(examples().join(file)).unwrap();
    let mut value = spec::read_document(&text).unwrap();
    value["flowInput"] = json!({"N": n, "k": k});
    value
}

async fn run(handle: &Handle, pipeline: Value) -> Value {
    let job = handle.exec_raw(pipeline).await.unwrap();
    tokio::time::timeout(Duration::from_secs(120), handle.wait(&job))
        .await
        .expect("the job ends within 2 minutes")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_with_python_and_javascript() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let (handle, executor) = numbers_engine().await;
    let result = run(&handle, pipeline("numbers.yml", 5, 2)).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(
        result["data"],
        json!([{"nodeName": "Reduce", "algorithmName": "reduce", "result": 30}])
    );
    let result = run(&handle, pipeline("numbers.yml", 500, 200)).await;
    assert_eq!(result["data"][0]["result"], 25_050_000, "{result}");
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_with_the_java_multiply() {
    if let Some(reason) = missing_tools(true) {
        testkit::skip(None, &reason);
        return;
    }
    let (handle, executor) = numbers_engine().await;
    let result = run(&handle, pipeline("numbers-java.yml", 5, 2)).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"][0]["result"], 30);
    let result = run(&handle, pipeline("numbers-java.yml", 500, 200)).await;
    assert_eq!(result["data"][0]["result"], 25_050_000, "{result}");
    executor.shutdown().await;
}

/// An algorithm folder with one Python file, registered under `name` (one worker at most).
async fn python_algorithm(
    executor: &LocalExecutor,
    catalog: &MemoryCatalog,
    name: &str,
    code: &str,
) -> tempfile::TempDir {
    python_algorithm_with(executor, catalog, name, code, 1).await
}

/// As [`python_algorithm`], with `max_workers` (0: as many as the machine holds) and HKube's
/// default resources (cpu 0.1, 256Mi + 20 %).
async fn python_algorithm_with(
    executor: &LocalExecutor,
    catalog: &MemoryCatalog,
    name: &str,
    code: &str,
    max_workers: usize,
) -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("main.py"), code).unwrap();
    executor
        .register(LocalAlgorithm {
            name: name.into(),
            language: Language::Python,
            code_dir: folder.path().to_path_buf(),
            entry_point: "main.py".into(),
            min_hot_workers: 0,
            max_workers,
            request: orchestrator::scheduler::Request::new(0.1, 307.0, 0.0).unwrap(),
            classpath: None,
            container: None,
            prepared: None,
        })
        .await
        .unwrap();
    catalog.put_algorithm(
        spec::parse_algorithm(json!({"name": name, "algorithmImage": "local"})).unwrap(),
    );
    folder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_crashes_say_what_happened() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let executor = LocalExecutor::start(LocalOptions::default());
    let catalog = Arc::new(MemoryCatalog::new());
    let _fails = python_algorithm(
        &executor,
        &catalog,
        "fails",
        "def start(args, api):\n    raise KeyError('missing key')\n",
    )
    .await;
    let _dies = python_algorithm(
        &executor,
        &catalog,
        "dies",
        "import os, sys\ndef start(args, api):\n    print('about to die', flush=True)\n    os._exit(7)\n",
    )
    .await;
    let _broken = python_algorithm(
        &executor,
        &catalog,
        "broken",
        "def start(args, api)\n    return 1\n",
    )
    .await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);

    let result = run(
        &handle,
        json!({"name": "e1", "nodes": [{"nodeName": "A", "algorithmName": "fails", "input": []}]}),
    )
    .await;
    assert_eq!(result["status"], "failed");
    assert_eq!(result["error"], "'missing key'");

    let pipeline = json!({"name": "e2", "nodes": [{"nodeName": "A", "algorithmName": "dies", "input": [],
                          "retry": {"policy": "OnCrash", "limit": 2}}]});
    let result = run(&handle, pipeline).await;
    assert_eq!(result["status"], "failed");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.starts_with("node A is in CrashLoopBackOff, attempts: 2/2"),
        "{error}"
    );
    assert!(error.contains("exited with code 7"), "{error}");
    assert!(error.contains("about to die"), "{error}");

    let result = run(
        &handle,
        json!({"name": "e3", "nodes": [{"nodeName": "A", "algorithmName": "broken", "input": []}]}),
    )
    .await;
    assert_eq!(result["status"], "failed");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("cannot load the algorithm's entry point 'main.py'"),
        "{error}"
    );
    assert!(
        error.contains("SyntaxError") || error.contains("expected ':'"),
        "{error}"
    );
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_travel_through_storage() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let storage = tempfile::tempdir().unwrap();
    let executor = LocalExecutor::start(LocalOptions {
        storage_dir: storage.path().to_path_buf(),
        ..LocalOptions::default()
    });
    let catalog = Arc::new(MemoryCatalog::new());
    let _make = python_algorithm(
        &executor,
        &catalog,
        "make",
        "def start(args, api):\n    return b'x' * args['input'][0]\n",
    )
    .await;
    let _size = python_algorithm(
        &executor,
        &catalog,
        "size",
        "def start(args, api):\n    data = args['input'][0]\n    assert isinstance(data, bytes), type(data)\n    return len(data)\n",
    )
    .await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    let pipeline = json!({"name": "big", "nodes": [
        {"nodeName": "A", "algorithmName": "make", "input": [3_000_000], "includeInResults": true},
        {"nodeName": "B", "algorithmName": "size", "input": ["@A"]},
    ]});
    let result = run(&handle, pipeline).await;
    assert_eq!(result["status"], "completed", "{result}");
    let a = &result["data"][0];
    assert_eq!(a["nodeName"], "A");
    assert!(a.get("result").is_none(), "{a}");
    assert_eq!(a["info"]["isBigData"], true);
    assert_eq!(a["info"]["size"], 3_000_000);
    assert_eq!(
        a["info"]["message"],
        "data too large (3.0 MB), use the stream api"
    );
    let path = a["info"]["path"].as_str().unwrap();
    assert_eq!(
        std::fs::metadata(storage.path().join(path)).unwrap().len(),
        3_000_008,
        "header + payload"
    );
    assert_eq!(result["data"][1]["result"], 3_000_000);

    // Without includeInResults, A's object is only a passing value: it goes when the job ends.
    let pipeline = json!({"name": "big", "nodes": [
        {"nodeName": "A", "algorithmName": "make", "input": [1_000]},
        {"nodeName": "B", "algorithmName": "size", "input": ["@A"]},
    ]});
    let job = handle.exec_raw(pipeline).await.unwrap();
    let result = handle.wait(&job).await.unwrap();
    assert_eq!(result["data"][0]["result"], 1_000);
    let folder = storage.path().join("local-hkube").join(&job);
    for _ in 0..100 {
        if !folder.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!folder.exists(), "the job's stored objects are collected");
    // The first job's result still points at its object.
    assert!(storage.path().join(path).exists());
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_task_prints_is_its_log() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let logs = tempfile::tempdir().unwrap();
    let executor = LocalExecutor::start(LocalOptions {
        log_dir: logs.path().to_path_buf(),
        ..LocalOptions::default()
    });
    let catalog = Arc::new(MemoryCatalog::new());
    let code = "import sys\ndef start(args, api):\n    print('item', args['input'][0])\n    print('warning', file=sys.stderr)\n    return 1\n";
    let _talk = python_algorithm(&executor, &catalog, "talk", code).await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    let pipeline = json!({"name": "logs", "nodes": [{"nodeName": "A", "algorithmName": "talk", "input": ["#[7...8]"]}]});
    let job = handle.exec_raw(pipeline).await.unwrap();
    let result = handle.wait(&job).await.unwrap();
    assert_eq!(result["status"], "completed");
    // Log files are written just after each task's outcome.
    let folder = logs.path().join(&job);
    let expected = vec![
        "item 7\nwarning\n".to_string(),
        "item 8\nwarning\n".to_string(),
    ];
    let mut texts = Vec::new();
    // Log files are written just after each task's outcome, by a task of their own.
    for _ in 0..500 {
        texts = std::fs::read_dir(&folder)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        texts.sort();
        if texts == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(texts, expected);
    executor.shutdown().await;
}

/// Runs a batch of six one-second tasks that each return their process id and when they
/// ran; the distinct process ids, and the most tasks that ran at one moment.
async fn sleeping_batch(options: LocalOptions, max_workers: usize) -> (usize, usize) {
    let executor = LocalExecutor::start(options);
    let catalog = Arc::new(MemoryCatalog::new());
    let code = "import os, time\ndef start(args, api):\n    began = time.time()\n    time.sleep(1)\n    return [os.getpid(), began, time.time()]\n";
    let _sleeper = python_algorithm_with(&executor, &catalog, "sleeper", code, max_workers).await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    let pipeline = json!({"name": "spread", "nodes": [
        {"nodeName": "A", "algorithmName": "sleeper", "input": ["#[1...6]"]}
    ]});
    let result = run(&handle, pipeline).await;
    assert_eq!(result["status"], "completed", "{result}");
    let runs: Vec<(u64, f64, f64)> = result["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let r = &item["result"];
            (
                r[0].as_u64().unwrap(),
                r[1].as_f64().unwrap(),
                r[2].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(runs.len(), 6);
    let mut pids: Vec<u64> = runs.iter().map(|r| r.0).collect();
    pids.sort_unstable();
    pids.dedup();
    // The most runs in progress at any run's start.
    let overlap = runs
        .iter()
        .map(|(_, at, _)| runs.iter().filter(|(_, s, e)| s <= at && at < e).count())
        .max()
        .unwrap_or(0);
    executor.shutdown().await;
    (pids.len(), overlap)
}

fn inventory(cpus: f64) -> orchestrator::scheduler::Node {
    orchestrator::executor::local::inventory::local_node(
        &orchestrator::executor::local::inventory::Overrides {
            cpus: Some(cpus),
            memory_mib: Some(8192),
            gpus: Some(0),
        },
    )
}

/// HKube's promise: batch items run as parallel instances. Six 1 s tasks with default
/// resources (cpu 0.1) on a 2-core inventory each get a worker of their own, and run at the
/// same time (serially, before, they took 6 s on one process). How fast is the benchmark's
/// business (bench --bin parallel); this asserts the behaviour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_long_tasks_spreads_over_workers() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let options = LocalOptions {
        inventory: inventory(2.0),
        ..LocalOptions::default()
    };
    let (workers, overlap) = sleeping_batch(options, 0).await;
    // Six workers start at once; one that is up and done before the last is ready may take
    // the sixth item, so a loaded machine can show five. One process (the old pool) fails.
    assert!(workers >= 4, "the items ran on {workers} process(es)");
    assert!(
        overlap >= 2,
        "the items ran side by side (at most {overlap} at once)"
    );
}

/// The machine's room bounds the workers: an inventory of 0.2 cores holds two workers of 0.1,
/// and `maxWorkers` bounds them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_bounded_by_the_inventory_and_max_workers() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let options = LocalOptions {
        inventory: inventory(0.2),
        ..LocalOptions::default()
    };
    let (workers, overlap) = sleeping_batch(options, 0).await;
    assert_eq!(workers, 2, "two workers fit 0.2 cores");
    assert!(overlap <= 2, "{overlap} ran at once");
    let options = LocalOptions {
        inventory: inventory(2.0),
        ..LocalOptions::default()
    };
    let (workers, overlap) = sleeping_batch(options, 3).await;
    assert_eq!(workers, 3, "maxWorkers 3");
    assert!(overlap <= 3, "{overlap} ran at once");
}

/// A request the machine could never hold fails at once and names the resource (the seed's
/// `gpu: 1` ran on a machine without GPUs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_machine_cannot_hold_is_refused_with_the_resource_named() {
    let executor = LocalExecutor::start(LocalOptions {
        inventory: inventory(2.0),
        ..LocalOptions::default()
    });
    let catalog = Arc::new(MemoryCatalog::new());
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(
        folder.path().join("main.py"),
        "def start(args, api):\n    return 1\n",
    )
    .unwrap();
    executor
        .register(LocalAlgorithm {
            name: "range".into(),
            language: Language::Python,
            code_dir: folder.path().to_path_buf(),
            entry_point: "main.py".into(),
            min_hot_workers: 0,
            max_workers: 0,
            request: orchestrator::scheduler::Request::new(0.1, 307.0, 1.0).unwrap(),
            classpath: None,
            container: None,
            prepared: None,
        })
        .await
        .unwrap();
    catalog.put_algorithm(
        spec::parse_algorithm(json!({"name": "range", "algorithmImage": "local", "gpu": 1}))
            .unwrap(),
    );
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    let result = run(
        &handle,
        json!({"name": "gpu", "nodes": [{"nodeName": "A", "algorithmName": "range", "input": []}]}),
    )
    .await;
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(
        result["error"],
        "algorithm range requests 1 gpu; the largest node has 0 (declare GPUs with --gpus)"
    );
    executor.shutdown().await;
}
