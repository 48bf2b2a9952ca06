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
    // The process algorithms: the wasm Multiply has its own tests (tests/wasm_executor.rs).
    for algorithm in project::find_algorithms(&examples()).unwrap() {
        let Some(local) = algorithm.local() else {
            continue;
        };
        executor.register(local.clone()).await.unwrap();
        catalog.put_algorithm(algorithm.descriptor.clone());
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
            command: None,
            env: Vec::new(),
        })
        .await
        .unwrap();
    catalog.put_algorithm(
        spec::parse_algorithm(json!({"name": name, "algorithmImage": "local"})).unwrap(),
    );
    folder
}

/// Which sockets the worker process holds, by the kernel's tables: its fds' socket inodes
/// looked up in `/proc/net/{tcp,tcp6,unix}`.
const SOCKET_KINDS_PY: &str = r#"
import os

def inodes(table, column):
    try:
        with open(table) as f:
            next(f)
            return {line.split()[column] for line in f}
    except OSError:
        return set()

def start(args):
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[len("socket:["):-1])
    tcp = inodes("/proc/net/tcp", 9) | inodes("/proc/net/tcp6", 9)
    unix = inodes("/proc/net/unix", 6)
    return {"tcp": len(mine & tcp), "unix": len(mine & unix)}
"#;

/// hkube's runtimes reach their sidecar over a Unix socket on the local executor (no TCP/IP
/// stack per message): the worker holds one Unix socket and no TCP one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_talks_to_its_sidecar_over_a_unix_socket() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let executor = LocalExecutor::start(LocalOptions::default());
    let catalog = Arc::new(MemoryCatalog::new());
    let _folder = python_algorithm(&executor, &catalog, "sockets", SOCKET_KINDS_PY).await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    let (result, _) = timed_batch(&handle, "sockets", json!([0])).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(
        result["data"][0]["result"],
        json!({"tcp": 0, "unix": 1}),
        "{result}"
    );
    executor.shutdown().await;
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

// ----- stops: the next job never waits behind a stopped one ------------------------------------

/// Registers a one-file algorithm of `language` under `name` (at most one worker, so that a
/// stopped worker would hold the next task back if the pool let it).
async fn one_file_algorithm(
    executor: &LocalExecutor,
    catalog: &MemoryCatalog,
    name: &str,
    language: Language,
    code: &str,
) -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    let entry_point = match language {
        Language::Nodejs => "index.js",
        _ => "main.py",
    };
    std::fs::write(folder.path().join(entry_point), code).unwrap();
    executor
        .register(LocalAlgorithm {
            name: name.into(),
            language,
            code_dir: folder.path().to_path_buf(),
            entry_point: entry_point.into(),
            min_hot_workers: 0,
            max_workers: 1,
            request: orchestrator::scheduler::Request::new(0.1, 307.0, 0.0).unwrap(),
            classpath: None,
            container: None,
            prepared: None,
            command: None,
            env: Vec::new(),
        })
        .await
        .unwrap();
    catalog.put_algorithm(
        spec::parse_algorithm(json!({"name": name, "algorithmImage": "local"})).unwrap(),
    );
    folder
}

/// Waits until `job` has at least `count` succeeded tasks.
async fn wait_for_succeeded(handle: &Handle, job: &str, count: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = handle.status(job).await.unwrap();
        if status["data"]["states"]["succeed"].as_u64().unwrap_or(0) >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} tasks did not succeed within 60 s: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(handle: &Handle, job: &str) {
    handle
        .stop(orchestrator::engine::StopRequest {
            job_id: Some(job.to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Runs a one-node batch job of `algorithm` over `items` and returns its result and how long
/// it took from submission.
async fn timed_batch(handle: &Handle, algorithm: &str, items: Value) -> (Value, Duration) {
    let began = std::time::Instant::now();
    let job = handle
        .exec_raw(json!({"name": "next", "flowInput": {"items": items},
            "nodes": [{"nodeName": "A", "algorithmName": algorithm, "input": ["#@flowInput.items"]}]}))
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(60), handle.wait(&job))
        .await
        .expect("the job after the stop ends within 60 s")
        .unwrap();
    (result, began.elapsed())
}

/// Waits until the algorithm in `folder` has begun `count` tasks (it appends a line to
/// `started` in its working directory as each begins).
async fn wait_for_started(folder: &Path, count: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(folder.join("started"))
        .unwrap_or_default()
        .lines()
        .count()
        < count
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{count} tasks did not begin within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 15.1: a batch of 1 s tasks stopped mid-way, then a job of the same algorithm: it
/// completes at once, with the right results, on hkube's runtime in the fast path (`runBatch`).
async fn a_stopped_batch_does_not_hold_back_the_next_job(language: Language, code: &str) {
    let executor = LocalExecutor::start(LocalOptions::default());
    let catalog = Arc::new(MemoryCatalog::new());
    let folder = one_file_algorithm(&executor, &catalog, "sleeper", language, code).await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);

    let job = handle
        .exec_raw(json!({"name": "stopped", "flowInput": {"items": [1, 1, 1, 1, 1, 1]},
            "nodes": [{"nodeName": "A", "algorithmName": "sleeper", "input": ["#@flowInput.items"]}]}))
        .await
        .unwrap();
    // Two tasks done, the third half done, three to go: stop there.
    wait_for_started(folder.path(), 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(&handle, &job).await;
    assert_eq!(handle.wait(&job).await.unwrap()["status"], "stopped");

    let (result, took) = timed_batch(&handle, "sleeper", json!([0, 0.01, 0.02])).await;
    assert_eq!(result["status"], "completed", "{result}");
    let outputs: Vec<&Value> = result["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["result"])
        .collect();
    assert_eq!(outputs, [&json!(0), &json!(0.01), &json!(0.02)], "{result}");
    assert!(took < Duration::from_secs(5), "the next job took {took:?}");
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_python_batch_does_not_hold_back_the_next_job() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let code = "import time\ndef start(args, api):\n    with open('started', 'a') as f:\n        f.write('x\\n')\n    time.sleep(args['input'][0])\n    return args['input'][0]\n";
    a_stopped_batch_does_not_hold_back_the_next_job(Language::Python, code).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_javascript_batch_does_not_hold_back_the_next_job() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let code = "const fs = require('fs');\nmodule.exports.start = async (args) => {\n  fs.appendFileSync('started', 'x\\n');\n  await new Promise((r) => setTimeout(r, args.input[0] * 1000));\n  return args.input[0];\n};\n";
    a_stopped_batch_does_not_hold_back_the_next_job(Language::Nodejs, code).await;
}

/// Two jobs of one algorithm share a worker's batch; stopping one stops the whole batch (`stop`
/// names no task), and the other job's tasks come back and still complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_job_does_not_lose_the_tasks_of_another_in_the_same_batch() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let code = "import time\ndef start(args, api):\n    with open('started', 'a') as f:\n        f.write('x\\n')\n    time.sleep(args['input'][0])\n    return args['input'][0]\n";
    let executor = LocalExecutor::start(LocalOptions::default());
    let catalog = Arc::new(MemoryCatalog::new());
    let folder = one_file_algorithm(&executor, &catalog, "shared", Language::Python, code).await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    // Both jobs are queued before the one worker connects, so one runBatch carries them all.
    let doomed = handle
        .exec_raw(json!({"name": "doomed", "flowInput": {"items": [0.5, 0.5, 0.5]},
            "nodes": [{"nodeName": "A", "algorithmName": "shared", "input": ["#@flowInput.items"]}]}))
        .await
        .unwrap();
    let kept = handle
        .exec_raw(json!({"name": "kept", "flowInput": {"items": [0.1, 0.2, 0.3]},
            "nodes": [{"nodeName": "A", "algorithmName": "shared", "input": ["#@flowInput.items"]}]}))
        .await
        .unwrap();
    wait_for_started(folder.path(), 1).await;
    stop(&handle, &doomed).await;
    let result = tokio::time::timeout(Duration::from_secs(60), handle.wait(&kept))
        .await
        .expect("the other job ends within 60 s")
        .unwrap();
    assert_eq!(result["status"], "completed", "{result}");
    let outputs: Vec<&Value> = result["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["result"])
        .collect();
    assert_eq!(outputs, [&json!(0.1), &json!(0.2), &json!(0.3)], "{result}");
    executor.shutdown().await;
}

fn process_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Issue 15.1: an algorithm stuck in a busy loop is stopped: its process is gone within the
/// stop timeout plus the SIGTERM grace, and the next job gets a new worker at once.
async fn a_looping_algorithm_is_gone_after_a_stop(language: Language, code: &str) {
    let options = LocalOptions::default();
    let stop_timeout = options.sidecar.stop_timeout;
    let executor = LocalExecutor::start(options);
    let catalog = Arc::new(MemoryCatalog::new());
    let folder = one_file_algorithm(&executor, &catalog, "spinner", language, code).await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    let pid_file = folder.path().join("pid");

    let job = handle
        .exec_raw(json!({"name": "loops", "flowInput": {"items": ["spin"]},
            "nodes": [{"nodeName": "A", "algorithmName": "spinner", "input": ["#@flowInput.items"]}]}))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let pid: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "the loop never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stopped_at = std::time::Instant::now();
    stop(&handle, &job).await;

    // The next job does not wait for the stuck worker: a replacement runs it.
    let (result, took) = timed_batch(&handle, "spinner", json!(["ok"])).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"][0]["result"], "ok", "{result}");
    assert!(took < Duration::from_secs(5), "the next job took {took:?}");

    // SIGTERM when the stop times out; the child supervisor's grace before SIGKILL is 3 s.
    let bound = stop_timeout + Duration::from_secs(3) + Duration::from_secs(1);
    while process_alive(pid) {
        assert!(
            stopped_at.elapsed() < bound,
            "the looping process {pid} still runs {:?} after the stop",
            stopped_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_python_algorithm_is_gone_after_a_stop() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let code = "import os\ndef start(args, api):\n    if args['input'][0] == 'spin':\n        with open('pid', 'w') as f:\n            f.write(str(os.getpid()))\n        while True:\n            pass\n    return 'ok'\n";
    a_looping_algorithm_is_gone_after_a_stop(Language::Python, code).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_javascript_algorithm_is_gone_after_a_stop() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let code = "const fs = require('fs');\nmodule.exports.start = (args) => {\n  if (args.input[0] === 'spin') {\n    fs.writeFileSync('pid', String(process.pid));\n    for (;;) {}\n  }\n  return 'ok';\n};\n";
    a_looping_algorithm_is_gone_after_a_stop(Language::Nodejs, code).await;
}

// ----- bringing one's own wrapper: HKube's official Python wrapper via x-hkube.command --------

/// The interpreter of the venv that `scripts/setup-official-python-wrapper.sh` makes, if the
/// official wrapper is installed there.
fn official_python() -> Option<PathBuf> {
    let venv = match std::env::var_os("HKUBE_COMPAT_VENV") {
        Some(venv) => PathBuf::from(venv),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/hkube/py38-official-wrapper"),
    };
    let python = venv.join("bin/python");
    let imports = std::process::Command::new(&python)
        .args(["-c", "import hkube_python_wrapper"])
        .output();
    imports.is_ok_and(|o| o.status.success()).then_some(python)
}

/// A folder laid out as HKube's builder lays out an image (app.py beside the algorithm's
/// package), with an algorithm.yml that runs it through `x-hkube.command`.
fn official_wrapper_project(python: &Path, name: &str, main_py: &str) -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    let package = folder.path().join("algorithm_unique_folder");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(package.join("__init__.py"), "").unwrap();
    std::fs::write(package.join("main.py"), main_py).unwrap();
    std::fs::write(
        folder.path().join("app.py"),
        "from hkube_python_wrapper import Algorunner\n\nif __name__ == '__main__':\n    Algorunner.Run()\n",
    )
    .unwrap();
    let yml = format!(
        "name: {name}\nenv: python\nentryPoint: main.py\nmaxWorkers: 1\nalgorithmEnv:\n  ALGORITHM_PATH: algorithm_unique_folder\nx-hkube:\n  command: [{}, -u, app.py]\n",
        serde_json::to_string(&python.display().to_string()).unwrap()
    );
    std::fs::write(folder.path().join("algorithm.yml"), yml).unwrap();
    folder
}

async fn register_project(executor: &LocalExecutor, catalog: &MemoryCatalog, folder: &Path) {
    let algorithm = project::read_algorithm(&folder.join("algorithm.yml")).unwrap();
    let local = algorithm.local().unwrap().clone();
    assert!(local.command.is_some());
    catalog.put_algorithm(algorithm.descriptor.clone());
    executor.register(local).await.unwrap();
}

const OFFICIAL_MAIN_PY: &str = "import time\n\ndef start(args, hkubeApi):\n    x = args['input'][0]\n    if isinstance(x, (int, float)):\n        with open('started', 'a') as f:\n            f.write('x\\n')\n        time.sleep(x)\n        return x\n    return {'input': x, 'task': args['taskId']}\n";

/// Issue 17.5: HKube's official Python wrapper, unmodified, runs an algorithm's tasks on the
/// local executor through the algorithm's own command; storage v3 and BSON on the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_wrapper_runs_through_the_algorithms_own_command() {
    let Some(python) = official_python() else {
        testkit::skip(
            None,
            "the official wrapper is not installed (run scripts/setup-official-python-wrapper.sh)",
        );
        return;
    };
    let executor = LocalExecutor::start(LocalOptions::default());
    let catalog = Arc::new(MemoryCatalog::new());
    let folder = official_wrapper_project(&python, "official", OFFICIAL_MAIN_PY);
    register_project(&executor, &catalog, folder.path()).await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);

    let (result, _) = timed_batch(&handle, "official", json!([{"k": [1, 2]}, "two"])).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(
        result["data"][0]["result"]["input"],
        json!({"k": [1, 2]}),
        "{result}"
    );
    assert_eq!(result["data"][1]["result"]["input"], "two", "{result}");
    executor.shutdown().await;
}

/// Issue 15.1 through HKube's exchange (`initialize` … `done`): a batch of the official wrapper
/// stopped mid-way, then a job of the same algorithm completes promptly (the stopped wrapper is
/// replaced: `done` names no task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_batch_of_the_official_wrapper_does_not_hold_back_the_next_job() {
    let Some(python) = official_python() else {
        testkit::skip(
            None,
            "the official wrapper is not installed (run scripts/setup-official-python-wrapper.sh)",
        );
        return;
    };
    let executor = LocalExecutor::start(LocalOptions::default());
    let catalog = Arc::new(MemoryCatalog::new());
    let folder = official_wrapper_project(&python, "official-sleeper", OFFICIAL_MAIN_PY);
    register_project(&executor, &catalog, folder.path()).await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);

    let job = handle
        .exec_raw(json!({"name": "stopped", "flowInput": {"items": [1, 1, 1, 1, 1, 1]},
            "nodes": [{"nodeName": "A", "algorithmName": "official-sleeper", "input": ["#@flowInput.items"]}]}))
        .await
        .unwrap();
    wait_for_succeeded(&handle, &job, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(&handle, &job).await;

    let (result, took) = timed_batch(&handle, "official-sleeper", json!([0, 0.01, 0.02])).await;
    assert_eq!(result["status"], "completed", "{result}");
    let outputs: Vec<&Value> = result["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["result"])
        .collect();
    assert_eq!(outputs, [&json!(0), &json!(0.01), &json!(0.02)], "{result}");
    assert!(took < Duration::from_secs(5), "the next job took {took:?}");
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
    let (pids, overlap, runs) = spread(&result);
    assert_eq!(runs.len(), 6);
    executor.shutdown().await;
    (pids, overlap)
}

/// A batch's items as `[pid, began, ended]` results: the distinct process ids, the most runs
/// in progress at any run's start, and the runs.
fn spread(result: &Value) -> (usize, usize, Vec<(u64, f64, f64)>) {
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
    let mut pids: Vec<u64> = runs.iter().map(|r| r.0).collect();
    pids.sort_unstable();
    pids.dedup();
    let overlap = runs
        .iter()
        .map(|(_, at, _)| runs.iter().filter(|(_, s, e)| s <= at && at < e).count())
        .max()
        .unwrap_or(0);
    (pids.len(), overlap, runs)
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
/// resources (cpu 0.1) on a 2-core inventory spread over workers and run at the same time
/// (serially, before, they took 6 s on one process). How fast is the benchmark's
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
    // One worker starts; once its first item has run longer than that start took, more start
    // (how many depends on the measured start: on a quiet machine five or six, on one loaded
    // by parallel test suites as few as two). One process (the old pool) fails.
    assert!(workers >= 2, "the items ran on {workers} process(es)");
    assert!(
        overlap >= 2,
        "the items ran side by side (at most {overlap} at once)"
    );
}

/// Long tasks after a burst of instant ones: the instant ones taught the pool to send windows
/// of many tasks, and a worker holding one long task looked like a worker with room. The long
/// tasks then went behind each other on the one warm worker (16 one-second tasks took 4.5 s
/// in `bench --bin parallel`); they must start workers of their own instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_tasks_after_instant_ones_still_spread_over_workers() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let executor = LocalExecutor::start(LocalOptions {
        inventory: inventory(2.0),
        ..LocalOptions::default()
    });
    let catalog = Arc::new(MemoryCatalog::new());
    let code = "import os, time\ndef start(args, api):\n    began = time.time()\n    time.sleep(args['input'][0])\n    return [os.getpid(), began, time.time()]\n";
    let _napper = python_algorithm_with(&executor, &catalog, "napper", code, 0).await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    let batch = |seconds: f64, items: usize| {
        json!({"name": "naps", "flowInput": {"items": vec![seconds; items]}, "nodes": [
            {"nodeName": "A", "algorithmName": "napper", "input": ["#@flowInput.items"]}
        ]})
    };
    let warm = run(&handle, batch(0.0, 64)).await;
    assert_eq!(warm["status"], "completed", "{warm}");
    let result = run(&handle, batch(1.0, 6)).await;
    assert_eq!(result["status"], "completed", "{result}");
    executor.shutdown().await;
    let (pids, overlap, runs) = spread(&result);
    // As in `a_batch_of_long_tasks_spreads_over_workers`: at least two, however loaded the
    // machine; stacked behind each other they all ran on the one warm worker.
    assert!(pids >= 2, "the items ran on {pids} process(es): {runs:?}");
    assert!(overlap >= 2, "at most {overlap} ran at once: {runs:?}");
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
            command: None,
            env: Vec::new(),
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

/// Room freed by one algorithm's idle workers goes to another's waiting task: a batch fills
/// the machine (0.2 cores hold two workers of 0.1), then the node after it needs a worker of
/// another algorithm. Before, it waited forever (the idle workers left after their timeout and
/// nobody looked at the other queue again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_workers_of_one_algorithm_make_room_for_another() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let executor = LocalExecutor::start(LocalOptions {
        inventory: inventory(0.2),
        idle_timeout: Duration::from_secs(600),
        ..LocalOptions::default()
    });
    let catalog = Arc::new(MemoryCatalog::new());
    let _double = python_algorithm_with(
        &executor,
        &catalog,
        "double",
        "def start(args, api):\n    return args['input'][0] * 2\n",
        0,
    )
    .await;
    let _total = python_algorithm_with(
        &executor,
        &catalog,
        "total",
        "def start(args, api):\n    return sum(args['input'][0])\n",
        0,
    )
    .await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    let pipeline = json!({"name": "room", "nodes": [
        {"nodeName": "A", "algorithmName": "double", "input": ["#[1...4]"]},
        {"nodeName": "B", "algorithmName": "total", "input": ["@A"]}
    ]});
    let job = handle.exec_raw(pipeline).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), handle.wait(&job))
        .await
        .expect("B got a worker once A's idle workers made room")
        .unwrap();
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"][0]["result"], 20);
    executor.shutdown().await;
}

/// Waits until `job`'s status shows a pending reason for a node, and returns it.
async fn wait_for_pending_reason(handle: &Handle, job: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = handle.status(job).await.unwrap();
        if let Some(pending) = status["data"]["pending"]
            .as_array()
            .filter(|p| !p.is_empty())
        {
            return pending[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pending reason within 60 s: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A task the scheduler cannot place says why in the job's status, per node: the machine
/// (0.1 cores) holds one worker of 0.1, busy with a job of the same priority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waiting_for_room_says_why_in_the_status() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let executor = LocalExecutor::start(LocalOptions {
        inventory: inventory(0.1),
        ..LocalOptions::default()
    });
    let catalog = Arc::new(MemoryCatalog::new());
    let busy = python_algorithm_with(
        &executor,
        &catalog,
        "busy",
        "import time\ndef start(args, api):\n    open('started', 'a').write('x\\n')\n    time.sleep(30)\n    return 1\n",
        0,
    )
    .await;
    let _other = python_algorithm_with(
        &executor,
        &catalog,
        "other",
        "def start(args, api):\n    return 2\n",
        0,
    )
    .await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    let first = handle
        .exec_raw(json!({"name": "first", "nodes": [
            {"nodeName": "A", "algorithmName": "busy", "input": [1]}]}))
        .await
        .unwrap();
    wait_for_started(busy.path(), 1).await;
    let second = handle
        .exec_raw(json!({"name": "second", "nodes": [
            {"nodeName": "B", "algorithmName": "other", "input": [1]}]}))
        .await
        .unwrap();
    let pending = wait_for_pending_reason(&handle, &second).await;
    assert_eq!(pending["nodeName"], "B", "{pending}");
    assert_eq!(pending["algorithmName"], "other", "{pending}");
    let reason = pending["reason"].as_str().unwrap();
    assert!(
        reason.contains("cpu") && reason.contains("requested 0.1"),
        "the reason names the resource: {reason}"
    );
    // Once the first job is stopped, the second runs and the reason is gone.
    stop(&handle, &first).await;
    let result = tokio::time::timeout(Duration::from_secs(60), handle.wait(&second))
        .await
        .expect("the second job runs once the room is free")
        .unwrap();
    assert_eq!(result["status"], "completed", "{result}");
    let status = handle.status(&second).await.unwrap();
    assert!(status["data"].get("pending").is_none(), "{status}");
    executor.shutdown().await;
}

/// Preemption: the machine holds one worker; a priority-1 job's task stops the priority-3
/// task's worker (a stop, a grace, a kill), runs, and the preempted task goes back to the
/// queue and runs again: not failed, although its node's retry policy is `Never`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_more_urgent_task_preempts_a_worker_and_the_preempted_task_runs_again() {
    if let Some(reason) = missing_tools(false) {
        testkit::skip(None, &reason);
        return;
    }
    let executor = LocalExecutor::start(LocalOptions {
        inventory: inventory(0.1),
        preempt_grace: Duration::from_secs(1),
        ..LocalOptions::default()
    });
    let catalog = Arc::new(MemoryCatalog::new());
    // Its first run sleeps long; a run after it finds the mark and answers at once.
    let slow = python_algorithm_with(
        &executor,
        &catalog,
        "slow",
        "import os, time\ndef start(args, api):\n    open('started', 'a').write('x\\n')\n    if os.path.exists('ran'):\n        return 'again'\n    open('ran', 'w').write('1')\n    time.sleep(60)\n    return 'first'\n",
        0,
    )
    .await;
    let _urgent = python_algorithm_with(
        &executor,
        &catalog,
        "urgent",
        "def start(args, api):\n    return 'urgent'\n",
        0,
    )
    .await;
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    let low = handle
        .exec_raw(json!({"name": "low", "priority": 3, "nodes": [
            {"nodeName": "A", "algorithmName": "slow", "input": [1],
             "retry": {"policy": "Never", "limit": 1}}]}))
        .await
        .unwrap();
    wait_for_started(slow.path(), 1).await;
    let began = std::time::Instant::now();
    let high = handle
        .exec_raw(json!({"name": "high", "priority": 1, "nodes": [
            {"nodeName": "B", "algorithmName": "urgent", "input": [1]}]}))
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), handle.wait(&high))
        .await
        .expect("the urgent job runs after preempting the slow worker")
        .unwrap();
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"][0]["result"], "urgent");
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "it did not wait for the slow task's 60 s: {:?}",
        began.elapsed()
    );
    let result = tokio::time::timeout(Duration::from_secs(60), handle.wait(&low))
        .await
        .expect("the preempted task runs again")
        .unwrap();
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"][0]["result"], "again", "{result}");
    executor.shutdown().await;
}
