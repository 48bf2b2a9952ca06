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
        println!("skipped: {reason}");
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
        println!("skipped: {reason}");
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

/// An algorithm folder with one Python file, registered under `name`.
async fn python_algorithm(
    executor: &LocalExecutor,
    catalog: &MemoryCatalog,
    name: &str,
    code: &str,
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
            max_workers: 1,
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
        println!("skipped: {reason}");
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
    // HKube's wrapper would say only 'missing key': the type, the place and the traceback
    // are kept.
    let error = result["error"].as_str().unwrap();
    assert!(
        error.starts_with("KeyError: 'missing key' (at main.py:2)\nTraceback"),
        "{error}"
    );

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
        println!("skipped: {reason}");
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
        println!("skipped: {reason}");
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
