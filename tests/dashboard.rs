//! The dashboard and observability, whole system: `hkube server` with real Python workers;
//! task logs while a task runs (the route, `hkube exec logs --follow`), per-task timing,
//! `/metrics` scraped after a run, the JSON log, and the web UI loaded in headless Chromium.

#![allow(clippy::unwrap_used)] // a test may panic on the unexpected

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::python_missing;

struct Server {
    child: Child,
    address: String,
    log: Arc<Mutex<String>>,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fresh_dir() -> PathBuf {
    common::scratch_dir("hkube-dashboard")
}

/// Python algorithms: `talker` prints, waits for the file `<dir>/go` (10 s at most), prints
/// again; `say` prints and doubles; `blob` returns 200 kB of bytes (a stored object); `fail`
/// prints, then raises.
fn algorithms(dir: &Path) -> PathBuf {
    let root = dir.join("algorithms");
    let go = dir.join("go");
    let write = |name: &str, code: String| {
        std::fs::create_dir_all(root.join(name)).unwrap();
        std::fs::write(root.join(name).join("main.py"), code).unwrap();
        std::fs::write(
            root.join(name).join("algorithm.yml"),
            format!("name: {name}\nenv: python\ncode:\n  path: .\n  entryPoint: main.py\n"),
        )
        .unwrap();
    };
    write(
        "talker",
        format!(
            "import os, time\ndef start(args, api):\n    x = args['input'][0]\n    print('hello', x, flush=True)\n    for _ in range(200):\n        if os.path.exists({go:?}):\n            break\n        time.sleep(0.05)\n    print('bye', x)\n    return x\n",
            go = go.display().to_string()
        ),
    );
    write(
        "say",
        "def start(args, api):\n    print('said', args['input'][0])\n    return args['input'][0] * 2\n".into(),
    );
    write(
        "blob",
        "def start(args, api):\n    return b'x' * 200000\n".into(),
    );
    write(
        "fail",
        "def start(args, api):\n    print('before', flush=True)\n    raise ValueError('boom')\n"
            .into(),
    );
    root
}

fn start(extra: &[&str]) -> Server {
    let dir = fresh_dir();
    let algorithms = algorithms(&dir);
    let state = dir.join("state");
    let common::Started {
        child,
        address,
        log,
    } = common::start_server(|command| {
        command
            .arg("--state-dir")
            .arg(&state)
            .arg("--algorithms")
            .arg(&algorithms)
            .args(extra);
    });
    Server {
        child,
        address,
        log,
        dir,
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A GET's body as text (curl).
    fn text(&self, path: &str) -> String {
        let output = Command::new("curl")
            .args(["-s", "--max-time", "60"])
            .arg(self.url(path))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn json(&self, path: &str) -> Value {
        serde_json::from_str(&self.text(path)).unwrap_or(Value::Null)
    }

    fn run(&self, pipeline: Value) -> String {
        let answer =
            common::http_json("POST", &self.url("/api/v1/exec/raw"), &pipeline.to_string());
        answer["jobId"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_string()
    }

    fn status(&self, job: &str) -> String {
        self.json(&format!("/api/v1/exec/status/{job}"))["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn wait_end(&self, job: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let status = self.status(job);
            if ["completed", "failed", "stopped"].contains(&status.as_str()) {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("job {job} did not end; log:\n{}", self.log.lock().unwrap());
    }

    /// Waits until `path`'s text contains `wanted`; returns it.
    fn wait_for_text(&self, path: &str, wanted: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.text(path);
            if text.contains(wanted) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never showed {wanted:?}: {text}\nlog:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn hkube(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hkube"));
        command
            .args(args)
            .args(["--endpoint", &self.url("")])
            .env_remove("HKUBE_TOKEN");
        command
    }
}

fn talkers() -> Value {
    json!({"name": "talk", "nodes": [{"nodeName": "A", "algorithmName": "talker", "input": ["#[1,2]"]}]})
}

/// A task's prints are served while it runs, followed until the job ends, and kept after;
/// the tasks are named with their four moments.
#[test]
fn task_logs_while_the_task_runs_and_after() {
    if python_missing() {
        return;
    }
    let server = start(&[]);
    let job = server.run(talkers());
    let logs = format!("/api/v1/exec/logs/{job}");
    let live = server.wait_for_text(&logs, "hello 2");
    // Still running: the lines came as they were printed, not at the task's end.
    assert_eq!(server.status(&job), "active", "{live}");
    assert!(!live.contains("bye"), "{live}");
    let tasks = server.json(&format!("/api/v1/exec/tasks/{job}"));
    let ids: Vec<String> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{tasks}");
    assert!(live.contains(&format!("[A {}] hello 1", ids[0])), "{live}");
    assert_eq!(tasks["tasks"][0]["status"], "active", "{tasks}");

    // `hkube exec logs --follow` prints what comes until the job ends, then exits.
    let follower = server
        .hkube(&["exec", "logs", &job, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(server.dir.join("go"), "").unwrap();
    let followed = follower.wait_with_output().unwrap();
    let followed_text = String::from_utf8_lossy(&followed.stdout);
    assert!(followed.status.success(), "{followed:?}");
    for id in &ids {
        assert!(
            followed_text.contains(&format!("[A {id}] hello")),
            "{followed_text}"
        );
        assert!(
            followed_text.contains(&format!("[A {id}] bye")),
            "{followed_text}"
        );
    }
    assert_eq!(server.wait_end(&job), "completed");

    // After the end: the route, the CLI for one node and one task, the files.
    let one = server
        .hkube(&["exec", "logs", &job, "--node", "A", "--task", &ids[1]])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&one.stdout),
        format!("[A {0}] hello 2\n[A {0}] bye 2\n", ids[1])
    );
    let none = server
        .hkube(&["exec", "logs", &job, "--node", "B"])
        .output()
        .unwrap();
    assert!(none.status.success() && none.stdout.is_empty(), "{none:?}");
    let file = server
        .dir
        .join("state/logs")
        .join(&job)
        .join(format!("{}.log", ids[0]));
    assert_eq!(std::fs::read_to_string(file).unwrap(), "hello 1\nbye 1\n");

    // Each task's four moments, in order, and the node's sums in the status.
    let tasks = server.json(&format!("/api/v1/exec/tasks/{job}"));
    for task in tasks["tasks"].as_array().unwrap() {
        let at = |field: &str| {
            task[field]
                .as_u64()
                .unwrap_or_else(|| panic!("{field}: {task}"))
        };
        assert!(
            at("queued") <= at("placed")
                && at("placed") <= at("started")
                && at("started") <= at("done"),
            "{task}"
        );
        assert_eq!(task["status"], "succeeded");
    }
    let status = server.json(&format!("/api/v1/exec/status/{job}"));
    assert_eq!(status["nodeTimes"][0]["nodeName"], "A", "{status}");
    assert_eq!(status["nodeTimes"][0]["states"], json!({"succeeded": 2}));
    assert_eq!(status["nodeTimes"][0]["running"]["count"], 2);
    let missing = server
        .hkube(&["exec", "logs", "nosuchjob"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("jobId nosuchjob Not Found"),
        "{missing:?}"
    );
}

/// A failed task's log: what it printed, once (read from the pipe and captured by the runtime),
/// then its error.
#[test]
fn a_failed_tasks_log_ends_with_its_error() {
    if python_missing() {
        return;
    }
    let server = start(&[]);
    let job = server.run(json!({"name": "failing", "nodes": [{"nodeName": "F", "algorithmName": "fail", "input": [1]}]}));
    assert_eq!(server.wait_end(&job), "failed");
    let text = server.wait_for_text(&format!("/api/v1/exec/logs/{job}"), "boom");
    assert_eq!(text.matches("] before").count(), 1, "{text}");
    let before = text.find("] before").unwrap();
    assert!(text[before..].contains("ValueError"), "{text}");
    assert!(text.lines().all(|line| line.starts_with("[F ")), "{text}");
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

/// `/metrics` after real runs: jobs, tasks, queues, workers, durations, a build, storage
/// bytes; and the server's log as JSON lines with timestamps.
#[test]
fn metrics_after_a_run_and_a_json_log() {
    if python_missing() {
        return;
    }
    let server = start(&["--log-format", "json"]);
    let job = server.run(json!({"name": "sayings", "nodes": [
        {"nodeName": "A", "algorithmName": "say", "input": ["#[1,2,3]"]},
        {"nodeName": "B", "algorithmName": "say", "input": ["#@A"]},
    ]}));
    assert_eq!(server.wait_end(&job), "completed");
    let blob = server.run(
        json!({"name": "blob", "nodes": [{"nodeName": "A", "algorithmName": "blob", "input": []}]}),
    );
    assert_eq!(server.wait_end(&blob), "completed");
    // The big result is read through the storage: its bytes count.
    let zip = server.text(&format!("/api/v1/storage/download/pipeline/result/{blob}"));
    assert!(!zip.is_empty());
    // A local build: code uploaded with `hkube algorithm apply`.
    let code = server.dir.join("built");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(
        code.join("main.py"),
        "def start(args, api):\n    return 1\n",
    )
    .unwrap();
    std::fs::write(
        code.join("algorithm.yml"),
        "name: built\nenv: python\ncode:\n  path: .\n  entryPoint: main.py\n",
    )
    .unwrap();
    let applied = server
        .hkube(&["algorithm", "apply", "-f", "algorithm.yml"])
        .current_dir(&code)
        .output()
        .unwrap();
    assert!(applied.status.success(), "{applied:?}");
    let text = server.wait_for_text("/metrics", "hkube_build_duration_seconds_count");

    assert_eq!(metric(&text, "hkube_jobs_total{status=\"completed\"}"), 2.0);
    assert_eq!(
        metric(
            &text,
            "hkube_tasks_ended_total{algorithm=\"say\",state=\"succeeded\"}"
        ),
        6.0
    );
    assert_eq!(metric(&text, "hkube_tasks{state=\"succeeded\"}"), 7.0);
    assert_eq!(metric(&text, "hkube_tasks{state=\"active\"}"), 0.0);
    assert_eq!(
        metric(
            &text,
            "hkube_task_duration_seconds_count{algorithm=\"say\"}"
        ),
        6.0
    );
    assert_eq!(metric(&text, "hkube_queue_depth{algorithm=\"say\"}"), 0.0);
    let say_workers: f64 = ["starting", "idle", "busy", "exiting"]
        .iter()
        .map(|state| {
            metric(
                &text,
                &format!("hkube_workers{{algorithm=\"say\",state=\"{state}\"}}"),
            )
        })
        .sum();
    assert!(say_workers >= 1.0, "{text}");
    assert_eq!(
        metric(
            &text,
            "hkube_build_duration_seconds_count{status=\"completed\"}"
        ),
        1.0,
        "{text}"
    );
    assert!(metric(&text, "hkube_storage_bytes_total{direction=\"read\"}") >= 200_000.0);

    // The log: one JSON object per line (the first line is the address tools read).
    let log = server.log.lock().unwrap().clone();
    let events: Vec<Value> = log
        .lines()
        .skip(1)
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let ended = events
        .iter()
        .find(|e| e["message"] == "job ended" && e["job_id"] == job.as_str())
        .unwrap_or_else(|| panic!("no job end in:\n{log}"));
    assert_eq!(ended["level"], "INFO");
    assert_eq!(ended["status"], "completed");
    assert!(
        ended["timestamp"].as_str().unwrap().ends_with('Z'),
        "{ended}"
    );
}

/// The text log has a timestamp on every line but the address line.
#[test]
fn the_text_log_is_timestamped() {
    let server = start(&[]);
    let wanted = "listening";
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = server.log.lock().unwrap().clone();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains(wanted) && !l.starts_with("hkube:"))
        {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // 2026-12-06T10:23:05.123456Z  INFO hkube::server: listening address=…
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert!(
        stamp.len() >= 20 && stamp.ends_with('Z') && stamp.contains('T'),
        "{line}"
    );
    assert!(rest.trim_start().starts_with("INFO"), "{line}");
    assert!(
        line.contains(&format!("address={}", server.address)),
        "{line}"
    );
}

// ---- the web UI in a real browser ----------------------------------------------------------

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|program| {
            Command::new(program)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Headless Chromium: the DOM once it holds `ready` (the page's script fetched what it shows),
/// and a screenshot under /tmp/dash-shots/. On a loaded machine the first fetches can outlast
/// the virtual-time budget, so the page is loaded again (up to 5 times) before giving up.
fn browse(browser: &str, url: &str, shot: &str, ready: &str) -> String {
    let mut page = String::new();
    for _ in 0..5 {
        page = browse_once(browser, url, shot);
        if page.contains(ready) {
            break;
        }
    }
    page
}

fn browse_once(browser: &str, url: &str, shot: &str) -> String {
    let profile = fresh_dir();
    let common = |command: &mut Command| {
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(["--virtual-time-budget=4000", "--window-size=1200,1000"])
            .stderr(Stdio::null());
    };
    let mut dump = Command::new(browser);
    common(&mut dump);
    let output = dump.arg("--dump-dom").arg(url).output().unwrap();
    let _ = std::fs::create_dir_all("/tmp/dash-shots");
    let mut screenshot = Command::new(browser);
    common(&mut screenshot);
    let _ = screenshot
        .arg(format!("--screenshot=/tmp/dash-shots/{shot}.png"))
        .arg(url)
        .output();
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Loads `/` and a job's page in headless Chromium and reads the DOM the script built: the
/// job's row and link, the graph's nodes and their states, live logs, the results.
#[test]
fn the_ui_in_a_real_browser() {
    if python_missing() {
        return;
    }
    let Some(browser) = chromium() else {
        testkit::skip(
            Some("HKUBE_REQUIRE_CHROMIUM"),
            "chromium is not installed (apt-get install chromium)",
        );
        return;
    };
    let server = start(&[]);
    let done = server.run(json!({"name": "sayings", "nodes": [
        {"nodeName": "A", "algorithmName": "say", "input": ["#[1,2,3]"]},
        {"nodeName": "B", "algorithmName": "say", "input": ["#@A"]},
    ]}));
    assert_eq!(server.wait_end(&done), "completed");

    let page = browse(
        browser,
        &server.url(&format!("/jobs/{done}")),
        "job-completed",
        "data-ended=",
    );
    assert!(page.contains(&format!("id=\"job-id\">{done}<")), "{page}");
    assert!(page.contains("data-ended=\"completed\""), "{page}");
    for node in ["A", "B"] {
        assert!(
            page.contains(&format!(
                "class=\"node\" data-node=\"{node}\" data-state=\"succeed\""
            )),
            "node {node}: {page}"
        );
        assert!(
            page.contains(&format!("<tr data-node=\"{node}\" data-state=\"succeed\">")),
            "{page}"
        );
    }
    assert!(page.contains("3/3 succeed"), "{page}");
    assert!(page.contains("] said 1"), "the logs: {page}");
    assert!(page.contains("\"result\": \"1111\""), "the results: {page}");

    // (`#[1,2,3]` gives the strings "1", "2", "3": `say` doubles them into "11", then "1111".)
    // A running job: its node is active and its first lines are there already.
    let running = server.run(talkers());
    server.wait_for_text(&format!("/api/v1/exec/logs/{running}"), "hello 2");
    let page = browse(
        browser,
        &server.url(&format!("/jobs/{running}")),
        "job-running",
        // Its log lines arrive after its status: the page is ready once they show.
        "] hello 1",
    );
    assert!(
        page.contains("class=\"node\" data-node=\"A\" data-state=\"active\""),
        "{page}"
    );
    assert!(page.contains("] hello 1"), "{page}");
    assert!(page.contains("data-status=\"active\""), "{page}");

    // The jobs page: a row per job, linking to the job's page.
    let page = browse(browser, &server.url("/"), "jobs", "<tr data-job=");
    for job in [&done, &running] {
        assert!(page.contains(&format!("<tr data-job=\"{job}\">")), "{page}");
        assert!(page.contains(&format!("href=\"/jobs/{job}\"")), "{page}");
    }
    assert!(page.contains("data-algorithm=\"talker\""), "{page}");
    std::fs::write(server.dir.join("go"), "").unwrap();
    assert_eq!(server.wait_end(&running), "completed");
}

/// With --token the page asks for the token, and with it shows the job.
#[test]
fn the_ui_asks_for_the_token() {
    if python_missing() {
        return;
    }
    let Some(browser) = chromium() else {
        testkit::skip(
            Some("HKUBE_REQUIRE_CHROMIUM"),
            "chromium is not installed (apt-get install chromium)",
        );
        return;
    };
    let server = start(&["--token", "t0ken"]);
    let page = browse(browser, &server.url("/"), "token", "<form id=\"login\">");
    // The form is shown (no `hidden`) and nothing was listed.
    assert!(page.contains("<form id=\"login\">"), "{page}");
    assert!(!page.contains("<tr data-job="), "{page}");
}
