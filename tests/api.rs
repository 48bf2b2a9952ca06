//! `hkube server`, whole system: the real binary on its own port and state folder, driven over
//! HTTP like a client would, with the numbers example's algorithms as real processes.

#![allow(clippy::unwrap_used)] // a test may panic on the unexpected

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{dechunk, python_missing};

/// A running `hkube server`, stopped (SIGTERM) when dropped.
struct Server {
    child: Child,
    address: String,
    state_dir: PathBuf,
    log: Arc<Mutex<String>>,
    /// Leave the state folder when dropped (a later server reuses it).
    keep_state: bool,
}

fn fresh_dir() -> PathBuf {
    common::scratch_dir("hkube-api-test")
}

impl Server {
    /// Starts the server on a free port (`--listen 127.0.0.1:0`); waits for its address.
    fn start(extra: &[&str]) -> Server {
        Server::start_in(fresh_dir(), extra)
    }

    /// Starts a server over an existing state folder.
    fn start_in(state_dir: PathBuf, extra: &[&str]) -> Server {
        let common::Started {
            child,
            address,
            log,
        } = common::start_server(|command| {
            command
                .arg("--state-dir")
                .arg(&state_dir)
                .args(extra)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
        });
        Server {
            child,
            address,
            state_dir,
            log,
            keep_state: false,
        }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    fn numbers(extra: &[&str]) -> Server {
        let mut args = vec!["--algorithms", "examples/numbers"];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// One HTTP/1.1 request; returns the status and the body as JSON (or as a string).
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let body = body.unwrap_or("");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        stream
            .write_all(format!("{head}\r\n{body}").as_bytes())
            .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP response");
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, value)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None, None)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, Some(&body.to_string()), None)
    }

    fn job(&self, path: &str, body: &Value) -> String {
        let (status, answer) = self.post(path, body);
        assert_eq!(status, 200, "{answer}");
        answer["jobId"].as_str().unwrap().to_string()
    }

    /// Polls the status until the job ends, then fetches the results.
    fn results(&self, job: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let (_, status) = self.get(&format!("/api/v1/exec/status/{job}"));
            if ["completed", "failed", "stopped"].contains(&status["status"].as_str().unwrap_or(""))
            {
                let (code, result) = self.get(&format!("/api/v1/exec/results/{job}"));
                assert_eq!(code, 200, "{result}");
                return result;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("job {job} did not end; log:\n{}", self.log.lock().unwrap());
    }

    /// Sends SIGTERM and returns the exit code.
    fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not stop on SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
        if !self.keep_state {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}

fn numbers_pipeline() -> Value {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/numbers/numbers.yml"),
    )
    .unwrap();
    orchestrator::spec::read_document(&text).unwrap()
}

#[test]
fn numbers_raw_and_stored_with_overrides() {
    let server = Server::numbers(&[]);
    let job = server.job("/api/v1/exec/raw", &numbers_pipeline());
    let result = server.results(&job);
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(
        result["data"],
        json!([{"nodeName": "Reduce", "algorithmName": "reduce", "result": 30}])
    );
    assert_eq!(result["storageModule"], "@hkube/fs-adapter");

    let (status, stored) = server.post("/api/v1/store/pipelines", &numbers_pipeline());
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["options"]["batchTolerance"], 80);
    let job = server.job(
        "/api/v1/exec/stored",
        &json!({"name": "numbers", "flowInput": {"N": 500, "k": 200}}),
    );
    let result = server.results(&job);
    assert_eq!(result["data"][0]["result"], 25_050_000, "{result}");

    // An algorithm stored through the API has no code here: its job fails and says why.
    let (status, body) = server.post(
        "/api/v1/store/algorithms",
        &json!({"name": "remote", "algorithmImage": "repo/remote:1"}),
    );
    assert_eq!(status, 201, "{body}");
    let job = server.job("/api/v1/exec/algorithm", &json!({"name": "remote"}));
    let result = server.results(&job);
    assert_eq!(result["status"], "failed");
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("algorithm remote has no local code"),
        "{result}"
    );
}

#[test]
fn the_conformance_tables_http_errors() {
    let server = Server::numbers(&[]);
    let check = |(status, body): (u16, Value), code: u16, message: &str| {
        assert_eq!(status, code, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["message"], message);
    };
    // CC-37.
    let cycle = json!({"name": "c", "nodes": [
        {"nodeName": "A", "algorithmName": "range", "input": ["@B"]},
        {"nodeName": "B", "algorithmName": "range", "input": ["@A"]}]});
    check(
        server.post("/api/v1/exec/raw", &cycle),
        400,
        "cyclic nodes are not allowed on batch pipeline",
    );
    // CC-53.
    check(
        server.post("/api/v1/exec/stored", &json!({"name": "not_found"})),
        404,
        "pipeline not_found Not Found",
    );
    // CC-32.
    check(
        server.get("/api/v1/exec/results/nosuchjob"),
        404,
        "status nosuchjob Not Found",
    );
    let mut big = numbers_pipeline();
    big["flowInput"] = json!({"N": 2_000_000, "k": 1});
    let job = server.job("/api/v1/exec/raw", &big);
    // Two million items keep the job busy for longer than this question takes.
    check(
        server.get(&format!("/api/v1/exec/results/{job}")),
        400,
        "unable to get results for pipeline numbers because its in active status",
    );
    // CC-31.
    let (status, body) = server.post("/api/v1/exec/stop", &json!({"jobId": job}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"stoppedJobIds": [job]}));
    check(
        server.post("/api/v1/exec/stop", &json!({"jobId": job})),
        404,
        &format!("No jobs found matching criteria (jobId: {job}, statuses: active,pending,paused)"),
    );
    assert_eq!(server.results(&job)["reason"], "stopped due to request");
    // Bad JSON, unknown route (JSON, reference Q17), wrong method.
    let (status, body) = server.request("POST", "/api/v1/exec/raw", Some("{\"name\":"), None);
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );
    check(
        server.get("/api/v1/nothing/here"),
        404,
        "Cannot GET /api/v1/nothing/here",
    );
    check(server.get("/api/v1/exec/raw"), 405, "Method Not Allowed");
}

#[test]
fn auth_on_and_off() {
    let server = Server::start(&["--token", "t0ken"]);
    assert_eq!(server.get("/api"), (401, json!({"error": "Unauthorized"})));
    assert_eq!(server.request("GET", "/api", None, Some("wrong")).0, 401);
    assert_eq!(
        server.request("GET", "/api", None, Some("t0ken")),
        (200, json!(["v1"]))
    );
    let open = Server::start(&[]);
    assert_eq!(open.get("/api"), (200, json!(["v1"])));
}

#[test]
fn sigterm_ends_the_server_with_exit_0() {
    let mut server = Server::numbers(&[]);
    let _job = server.job("/api/v1/exec/raw", &numbers_pipeline());
    assert_eq!(
        server.terminate(),
        Some(0),
        "{}",
        server.log.lock().unwrap()
    );
}

#[test]
fn refusals_at_start() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_hkube"))
            .args(args)
            .env_remove("HKUBE_TOKEN")
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["server", "--listen", "0.0.0.0:0"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without a token"),
        "{stderr}"
    );
    let (code, stderr) = run(&["server", "--executor", "kubernetes"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--executor kubernetes needs --link-address HOST:PORT"),
        "{stderr}"
    );
    let (code, stdout_help) = {
        let output = Command::new(env!("CARGO_BIN_EXE_hkube"))
            .args(["server", "--help"])
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    assert_eq!(code, Some(0));
    for option in [
        "--listen",
        "--state-dir",
        "--executor",
        "--algorithms",
        "--token",
    ] {
        assert!(stdout_help.contains(option), "--help lacks {option}");
    }
}

/// The server is killed (SIGKILL) in the middle of a job; started again over the same state
/// folder, it resumes the job: finished tasks do not run again, and the result is the same.
#[test]
fn a_killed_server_resumes_its_job() {
    let tools = ["python3"].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !tools {
        testkit::skip(None, "python3 is not installed");
        return;
    }
    // An algorithm that notes each run in a file and takes a moment.
    let algorithms = fresh_dir();
    let runs = algorithms.join("runs.txt");
    std::fs::create_dir_all(algorithms.join("slow")).unwrap();
    std::fs::write(
        algorithms.join("slow/main.py"),
        format!(
            "import time\ndef start(args, api):\n    x = args['input'][0]\n    with open({runs:?}, 'a') as f:\n        f.write(str(x) + '\\n')\n    time.sleep(0.3)\n    return x * 10\n",
            runs = runs.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        algorithms.join("slow/algorithm.yml"),
        "name: slow\nenv: python\nmaxWorkers: 1\ncode:\n  path: .\n  entryPoint: main.py\n",
    )
    .unwrap();
    let folder = algorithms.display().to_string();
    let mut first = Server::start(&["--algorithms", &folder]);
    first.keep_state = true;
    // A job that ends before the kill: the restarted server still answers for it.
    let ended = first.job(
        "/api/v1/exec/raw",
        &json!({"name": "before", "nodes": [{"nodeName": "A", "algorithmName": "slow", "input": [5]}]}),
    );
    let ended_result = first.results(&ended);
    assert_eq!(ended_result["data"][0]["result"], 50);
    std::fs::remove_file(&runs).unwrap();
    let pipeline = json!({"name": "resume", "nodes": [
        {"nodeName": "A", "algorithmName": "slow", "input": ["#[1...8]"]},
    ]});
    let job = first.job("/api/v1/exec/raw", &pipeline);
    // Wait until three items have succeeded, then kill the server outright.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, status) = first.get(&format!("/api/v1/exec/status/{job}"));
        if status["data"]["states"]["succeed"].as_u64().unwrap_or(0) >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The journal's writer commits within milliseconds of a task's end.
    std::thread::sleep(Duration::from_millis(200));
    first.kill();
    let ran_before: Vec<String> = std::fs::read_to_string(&runs)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();

    let second = Server::start_in(first.state_dir.clone(), &["--algorithms", &folder]);
    assert_eq!(second.results(&ended)["data"], ended_result["data"]);
    let (code, status) = second.get(&format!("/api/v1/exec/status/{ended}"));
    assert_eq!((code, status["status"].as_str()), (200, Some("completed")));
    let result = second.results(&job);
    assert_eq!(result["status"], "completed", "{result}");
    let outputs: Vec<i64> = result["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["result"].as_i64().unwrap())
        .collect();
    assert_eq!(outputs, [10, 20, 30, 40, 50, 60, 70, 80]);
    let ran: Vec<String> = std::fs::read_to_string(&runs)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    // Items that had finished before the kill did not run again; at most the one in flight did.
    let finished_before = ran_before.len().saturating_sub(1);
    for item in &ran_before[..finished_before] {
        assert_eq!(
            ran.iter().filter(|r| *r == item).count(),
            1,
            "item {item} ran again: {ran:?}"
        );
    }
    for item in 1..=8 {
        assert!(
            ran.contains(&item.to_string()),
            "item {item} never ran: {ran:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&algorithms);
}

#[test]
fn versions_rollback_and_job_queries_survive_a_restart() {
    let mut server = Server::numbers(&[]);
    let apply = |image: &str, force: bool| {
        let body = json!({
            "payload": json!({"name": "img-alg", "algorithmImage": image}).to_string(),
            "options": json!({"forceUpdate": force}).to_string(),
        });
        let (status, answer) = server.post("/api/v1/store/algorithms/apply", &body);
        assert_eq!(status, 200, "{answer}");
        answer
    };
    let first = apply("repo/img:1", false);
    assert_eq!(first["messagesCode"], json!([1024, 1023]));
    let second = apply("repo/img:2", true);
    assert_eq!(second["messagesCode"], json!([1024, 1023]));
    let (status, versions) = server.get("/api/v1/versions/algorithms/img-alg");
    assert_eq!(status, 200, "{versions}");
    let semvers: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["semver"].as_str().unwrap())
        .collect();
    assert_eq!(semvers, ["1.0.1", "1.0.0"]);
    let (_, current) = server.get("/api/v1/store/algorithms/img-alg");
    assert_eq!(current["algorithmImage"], "repo/img:2");

    // Roll back to the first version.
    let (status, applied) = server.post(
        "/api/v1/versions/algorithms/apply",
        &json!({"name": "img-alg", "version": first["algorithm"]["version"]}),
    );
    assert_eq!(status, 201, "{applied}");
    let (_, current) = server.get("/api/v1/store/algorithms/img-alg");
    assert_eq!(current["algorithmImage"], "repo/img:1");
    assert_eq!(current["version"], first["algorithm"]["version"]);

    let job = server.job("/api/v1/exec/raw", &numbers_pipeline());
    assert_eq!(server.results(&job)["status"], "completed");
    let check_queries = |server: &Server| {
        let (status, search) = server.get("/api/v1/exec/search?pipelineName=numbers");
        assert_eq!(status, 200, "{search}");
        assert_eq!(search["hits"][0]["jobId"], job.as_str(), "{search}");
        assert_eq!(search["hits"][0]["status"]["status"], "completed");
        let (status, results) = server.get("/api/v1/pipelines/results?name=numbers");
        assert_eq!(status, 200, "{results}");
        assert_eq!(results[0]["jobId"], job.as_str());
        assert_eq!(results[0]["data"][0]["result"], 30);
    };
    check_queries(&server);

    // After a restart the store still answers: versions and the ended job.
    server.keep_state = true;
    let state_dir = server.state_dir.clone();
    assert_eq!(server.terminate(), Some(0));
    drop(server);
    let server = Server::start_in(state_dir, &["--algorithms", "examples/numbers"]);
    check_queries(&server);
    let (_, versions) = server.get("/api/v1/versions/algorithms/img-alg");
    assert_eq!(versions.as_array().unwrap().len(), 2);
}

impl Server {
    /// `hkube algorithm apply -f algorithm.yml` in `dir`: the folder's code is uploaded and
    /// built by the server (for the local executor: kept with its environment).
    fn apply_code(&self, dir: &std::path::Path) {
        let output = Command::new(env!("CARGO_BIN_EXE_hkube"))
            .args(["algorithm", "apply", "-f", "algorithm.yml", "--endpoint"])
            .arg(format!("http://{}", self.address))
            .current_dir(dir)
            .env("HOME", dir)
            .env_remove("HKUBE_TOKEN")
            .env_remove("HKUBE_ENDPOINT")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "apply in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Tasks of `jobs` that have succeeded: all of an ended job's, the succeeded ones of others.
    fn succeeded_tasks(&self, jobs: &[(String, usize)]) -> usize {
        jobs.iter()
            .map(|(job, tasks)| {
                let (_, status) = self.get(&format!("/api/v1/exec/status/{job}"));
                match status["status"].as_str() {
                    Some("completed") => *tasks,
                    _ => status["data"]["states"]["succeed"].as_u64().unwrap_or(0) as usize,
                }
            })
            .sum()
    }
}

/// Jobs of an algorithm applied as an upload (its code built by the server) are resumed after a
/// SIGKILL: the restarted server registers the built code before the engine resumes a job, so
/// no job fails for want of code, and no batch item is left out (with HKube's batch tolerance a
/// failed item would let its job complete with a `null` result). 40 one-task jobs and 4 jobs
/// of a 20-item batch, killed when 40 % of their tasks have succeeded.
#[test]
fn a_killed_server_resumes_the_jobs_of_uploaded_code() {
    if python_missing() {
        return;
    }
    let code = fresh_dir();
    std::fs::write(
        code.join("main.py"),
        "import time\ndef start(args, api):\n    time.sleep(0.05)\n    return args['input'][0] * 10\n",
    )
    .unwrap();
    std::fs::write(
        code.join("algorithm.yml"),
        "name: tally\nenv: python\nmaxWorkers: 4\ncode:\n  path: .\n  entryPoint: main.py\n",
    )
    .unwrap();
    let mut first = Server::start(&[]);
    first.keep_state = true;
    first.apply_code(&code);
    // (job, tasks, the input of a one-task job or None for a batch of 1..=20)
    let mut jobs = Vec::new();
    for i in 0..44_i64 {
        let (input, tasks, one) = if i % 11 == 0 {
            (json!(["#[1...20]"]), 20, None)
        } else {
            (json!([i]), 1, Some(i))
        };
        let job = first.job(
            "/api/v1/exec/raw",
            &json!({"name": "tally", "nodes": [{"nodeName": "A", "algorithmName": "tally", "input": input}]}),
        );
        jobs.push((job, tasks, one));
    }
    let counted: Vec<(String, usize)> = jobs.iter().map(|(j, t, _)| (j.clone(), *t)).collect();
    let total: usize = counted.iter().map(|(_, t)| t).sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.succeeded_tasks(&counted) * 10 < total * 4 {
        assert!(
            Instant::now() < deadline,
            "no progress; log:\n{}",
            first.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill();

    let second = Server::start_in(first.state_dir.clone(), &[]);
    for (job, _, one) in &jobs {
        let result = second.results(job);
        if result["status"] != "completed" {
            let log = second.log.lock().unwrap().clone();
            panic!("job {job} did not complete: {result}\nlog:\n{log}");
        }
        let outputs: Vec<Value> = result["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["result"].clone())
            .collect();
        let expected: Vec<Value> = match one {
            Some(i) => vec![json!(i * 10)],
            None => (1..=20).map(|i| json!(i * 10)).collect(),
        };
        assert_eq!(outputs, expected, "job {job}: {result}");
    }
}

/// Every job route answers for an ended job, which the server no longer holds in memory, and
/// still after a restart: status, results, pipelines, tree (with the job its end triggered),
/// auditTrail, flowInput, search, the job lists, pipelines/results and /status, rerun, and a
/// run from one of its nodes (caching).
#[test]
fn every_job_route_answers_for_ended_jobs_also_after_a_restart() {
    let mut server = Server::numbers(&[]);
    let (status, answer) = server.post("/api/v1/store/pipelines", &numbers_pipeline());
    assert_eq!(status, 201, "{answer}");
    let after = json!({"name": "after", "triggers": {"pipelines": ["numbers"]},
        "nodes": [{"nodeName": "R", "algorithmName": "range", "input": [2]}]});
    let (status, answer) = server.post("/api/v1/store/pipelines", &after);
    assert_eq!(status, 201, "{answer}");
    let job = server.job("/api/v1/exec/stored", &json!({"name": "numbers"}));
    assert_eq!(server.results(&job)["data"][0]["result"], 30);
    // The triggered job starts as the parent ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    let child = loop {
        let (_, tree) = server.get(&format!("/api/v1/exec/tree/{job}"));
        if let Some(child) = tree["children"][0]["jobId"].as_str() {
            break child.to_string();
        }
        assert!(Instant::now() < deadline, "no triggered job: {tree}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(server.results(&child)["data"][0]["result"], json!([1, 2]));

    let check_routes = |server: &Server| {
        let get = |path: String| {
            let (status, body) = server.get(&path);
            assert_eq!(status, 200, "{path}: {body}");
            body
        };
        let status = get(format!("/api/v1/exec/status/{job}"));
        assert_eq!(status["status"], "completed");
        assert_eq!(
            status["data"]["progress"], 100.0,
            "the last status: {status}"
        );
        let results = get(format!("/api/v1/exec/results/{job}"));
        assert_eq!(results["data"][0]["result"], 30);
        let pipeline = get(format!("/api/v1/exec/pipelines/{job}"));
        assert_eq!(pipeline["jobId"], job.as_str());
        assert_eq!(pipeline["name"], "numbers");
        assert_eq!(pipeline["nodes"].as_array().unwrap().len(), 3);
        assert_eq!(pipeline["flowInput"], json!({"N": 5, "k": 2}));
        let tree = get(format!("/api/v1/exec/tree/{job}"));
        assert_eq!(tree["jobId"], job.as_str());
        assert_eq!(tree["name"], "numbers");
        assert_eq!(tree["children"][0]["jobId"], child.as_str(), "{tree}");
        assert_eq!(tree["children"][0]["name"], "after");
        let trail = get(format!("/api/v1/exec/auditTrail/{job}"));
        assert_eq!(trail["0"]["action"], "run");
        let flow_input = get(format!("/api/v1/exec/flowInput/{job}"));
        assert_eq!(flow_input, json!({"N": 5, "k": 2}));
        // (By the job's id: a rerun of it is newer.)
        let search = get(format!("/api/v1/exec/search?pipelineName={job}"));
        assert_eq!(search["hits"][0]["jobId"], job.as_str(), "{search}");
        let listed = get("/api/v1/exec/jobs?status=completed&raw=true".into());
        assert!(listed.as_array().unwrap().contains(&json!(job)), "{listed}");
        let has_job = |list: &Value| {
            list.as_array()
                .unwrap()
                .iter()
                .any(|e| e["jobId"] == job.as_str())
        };
        let results = get("/api/v1/pipelines/results?name=numbers&limit=10".into());
        assert!(has_job(&results), "{results}");
        let statuses = get("/api/v1/pipelines/status?name=numbers&limit=10".into());
        assert!(has_job(&statuses), "{statuses}");
        let rerun = server.job("/api/v1/exec/rerun", &json!({"jobId": job}));
        assert_eq!(server.results(&rerun)["data"][0]["result"], 30);
        let (code, refused) = server.post("/api/v1/exec/pause", &json!({"jobId": job}));
        assert_eq!(code, 400, "{refused}");
        assert_eq!(
            refused["error"]["message"],
            "unable to pause pipeline numbers because its in completed status"
        );
        // Reduce again, from Multiply's recorded outputs.
        let from_node = server.job(
            "/api/v1/exec/caching",
            &json!({"jobId": job, "nodeName": "Reduce"}),
        );
        let result = server.results(&from_node);
        assert_eq!(result["data"][0]["result"], 30, "{result}");
    };
    check_routes(&server);

    server.keep_state = true;
    let state_dir = server.state_dir.clone();
    assert_eq!(server.terminate(), Some(0));
    drop(server);
    let server = Server::start_in(state_dir, &["--algorithms", "examples/numbers"]);
    check_routes(&server);
}

/// Size of the database and its write-ahead log.
fn database_size(state_dir: &std::path::Path) -> u64 {
    ["hkube.db", "hkube.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(state_dir.join(name)).ok())
        .map(|m| m.len())
        .sum()
}

/// `--job-retention`: an ended job is deleted after it, with its stored objects and its task
/// logs, and the database file gives the space back.
#[test]
fn ended_jobs_are_deleted_after_the_retention_and_the_database_shrinks() {
    let server = Server::numbers(&["--job-retention", "4s"]);
    let big = "x".repeat(4 << 20);
    let mut pipeline = numbers_pipeline();
    pipeline["flowInput"]["padding"] = json!(big);
    let job = server.job("/api/v1/exec/raw", &pipeline);
    assert_eq!(server.results(&job)["data"][0]["result"], 30);
    let grown = database_size(&server.state_dir);
    assert!(grown > 4 << 20, "the database holds the flowInput: {grown}");
    // What a job leaves beside its rows (the numbers' algorithms print nothing and return
    // small results): an object its results point at, and a task's log.
    let objects = server.state_dir.join("storage/local-hkube").join(&job);
    std::fs::create_dir_all(&objects).unwrap();
    std::fs::write(objects.join("kept-result"), "x").unwrap();
    let logs = server.state_dir.join("logs").join(&job);
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("task.log"), "printed\n").unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = server.get(&format!("/api/v1/exec/status/{job}"));
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the job is still kept");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = server.get(&format!("/api/v1/exec/results/{job}"));
    assert_eq!(status, 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    while objects.exists() || logs.exists() {
        assert!(
            Instant::now() < deadline,
            "the job's objects or logs are left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let shrunk = database_size(&server.state_dir);
    assert!(
        shrunk < 1 << 20,
        "the database gave the space back: {grown} → {shrunk} bytes"
    );
}

/// Sends `head` (a request without its body) and reads the answer: status and JSON body.
fn send_head(address: &str, head: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = Vec::new();
    // The server answers and closes without waiting for a body it will not read.
    stream
        .read_to_end(&mut response)
        .expect("an answer before the body is sent");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[test]
fn the_front_door_refuses_oversized_and_cross_site_requests() {
    let server = Server::numbers(&["--allowed-host", "hkube.test"]);
    // 600 MB announced, nothing sent: the answer comes from the headers alone.
    let (status, body) = send_head(
        &server.address,
        &format!(
            "POST /api/v1/exec/raw HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 600000000\r\n\r\n",
            server.address
        ),
    );
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], 413, "{body}");
    // A name the server was not told about (DNS rebinding), and one it was.
    let port = server.address.rsplit(':').next().unwrap();
    let get = |host: &str| {
        send_head(
            &server.address,
            &format!("GET /api/v1/exec/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"),
        )
    };
    assert_eq!(get("rebind.example").0, 403);
    assert_eq!(get("hkube.test").0, 200);
    assert_eq!(get("localhost").0, 200);
    // hkubectl's paths: a trailing slash, and storage/info for `config`.
    let job = server.job("/api/v1/exec/raw/", &numbers_pipeline());
    assert_eq!(server.results(&job)["status"], "completed");
    let (status, info) = server.get("/api/v1/storage/info/");
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["type"], "fs", "{info}");
}

/// A binary module whose `_start` adds with nothing on the stack: wasmtime refuses it.
const MODULE_THAT_DOES_NOT_COMPILE: &[u8] = &[
    0, b'a', b's', b'm', 1, 0, 0, 0, // magic, version
    1, 4, 1, 0x60, 0, 0, // types: () -> ()
    3, 2, 1, 0, // functions: one of type 0
    7, 10, 1, 6, b'_', b's', b't', b'a', b'r', b't', 0, 0, // export _start
    10, 5, 1, 3, 0, 0x6a, 0x0b, // code: i32.add, end
];

/// `hkube algorithm apply -f algorithm.yml` in `dir`, its exit status and stderr.
fn apply_in(server: &Server, dir: &std::path::Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hkube"))
        .args(["algorithm", "apply", "-f", "algorithm.yml", "--endpoint"])
        .arg(format!("http://{}", server.address))
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("HKUBE_TOKEN")
        .env_remove("HKUBE_ENDPOINT")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// A project folder's wasm algorithm (`hkube server --algorithms examples/numbers`) runs in the
/// server's process: numbers-wasm gives 30. (Registering the stored algorithms after the
/// folders' once made the WASM executor forget it, and its tasks waited for ever.)
#[test]
fn a_folders_wasm_algorithm_runs_in_the_servers_process() {
    let module = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/numbers/multiply-wasm/multiply.wasm");
    if !module.is_file() {
        return testkit::skip(
            None,
            "examples/numbers/multiply-wasm/multiply.wasm is not built: run examples/numbers/multiply-wasm/build.sh",
        );
    }
    let server = Server::numbers(&[]);
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/numbers/numbers-wasm.yml"),
    )
    .unwrap();
    let pipeline: Value = serde_yaml_ng::from_str(&text).unwrap();
    let job = server.job("/api/v1/exec/raw", &pipeline);
    let result = server.results(&job);
    assert_eq!(result["data"][0]["result"], 30, "{result}");
}

/// WebAssembly uploads: a bare `.wasm` and a folder holding one are built and run in the
/// server's process; a module that does not compile is refused at the apply with wasmtime's
/// message.
#[test]
fn wasm_uploads_are_checked_at_apply_and_run() {
    let module = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/numbers/multiply-wasm/multiply.wasm");
    if !module.is_file() {
        return testkit::skip(
            None,
            "examples/numbers/multiply-wasm/multiply.wasm is not built: run examples/numbers/multiply-wasm/build.sh",
        );
    }
    let server = Server::start(&[]);

    let bare = fresh_dir();
    std::fs::copy(&module, bare.join("multiply.wasm")).unwrap();
    std::fs::write(
        bare.join("algorithm.yml"),
        "name: bare-multiply\nmem: 32Mi\ncode:\n  path: multiply.wasm\n",
    )
    .unwrap();
    let (ok, stderr) = apply_in(&server, &bare);
    assert!(ok, "{stderr}");

    let folder = fresh_dir();
    std::fs::copy(&module, folder.join("multiply.wasm")).unwrap();
    std::fs::write(
        folder.join("algorithm.yml"),
        "name: folder-multiply\nenv: wasm\ncode:\n  path: .\n  entryPoint: multiply.wasm\n",
    )
    .unwrap();
    let (ok, stderr) = apply_in(&server, &folder);
    assert!(ok, "{stderr}");

    for name in ["bare-multiply", "folder-multiply"] {
        let (status, stored) = server.get(&format!("/api/v1/store/algorithms/{name}"));
        assert_eq!(status, 200, "{stored}");
        assert_eq!(stored["env"], "wasm", "{stored}");
        let job = server.job(
            "/api/v1/exec/raw",
            &json!({"name": "w", "nodes": [
                {"nodeName": "A", "algorithmName": name, "input": ["#@flowInput.xs", 5]}],
                "flowInput": {"xs": [1, 2, 3]}}),
        );
        let result = server.results(&job);
        let products: Vec<Value> = result["data"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {result}"))
            .iter()
            .map(|item| item["result"].clone())
            .collect();
        assert_eq!(
            products,
            [json!(5), json!(10), json!(15)],
            "{name}: {result}"
        );
    }

    let bad = fresh_dir();
    std::fs::write(bad.join("bad.wasm"), MODULE_THAT_DOES_NOT_COMPILE).unwrap();
    std::fs::write(
        bad.join("algorithm.yml"),
        "name: bad-module\ncode:\n  path: bad.wasm\n",
    )
    .unwrap();
    let (ok, stderr) = apply_in(&server, &bad);
    assert!(!ok);
    assert!(
        stderr.contains("the uploaded WebAssembly module does not compile (wasmtime):"),
        "{stderr}"
    );
    assert!(stderr.contains("type mismatch"), "{stderr}");
    let (status, _) = server.get("/api/v1/store/algorithms/bad-module");
    assert_eq!(status, 404, "a refused module is not stored");
    // A bare module with another env is refused too.
    std::fs::write(
        bad.join("algorithm.yml"),
        "name: bad-env\nenv: python\ncode:\n  path: bad.wasm\n",
    )
    .unwrap();
    let (ok, stderr) = apply_in(&server, &bad);
    assert!(!ok);
    assert!(
        stderr.contains("is a WebAssembly module but env is python"),
        "{stderr}"
    );
}

/// A module of hkube's function ABI (a library exporting hkube_alloc and hkube_start, its
/// instance kept by its worker) uploaded bare, checked at the apply and run; a module that
/// exports both ABIs' entries is refused at the apply, saying what to change.
#[test]
fn a_function_abi_upload_is_checked_at_apply_and_runs() {
    let module = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/numbers/multiply-wasm-fn/multiply-fn.wasm");
    if !module.is_file() {
        return testkit::skip(
            None,
            "examples/numbers/multiply-wasm-fn/multiply-fn.wasm is not built: run examples/numbers/multiply-wasm-fn/build.sh",
        );
    }
    let server = Server::start(&[]);
    let bare = fresh_dir();
    std::fs::copy(&module, bare.join("multiply-fn.wasm")).unwrap();
    std::fs::write(
        bare.join("algorithm.yml"),
        "name: fn-multiply\nmem: 32Mi\ncode:\n  path: multiply-fn.wasm\n",
    )
    .unwrap();
    let (ok, stderr) = apply_in(&server, &bare);
    assert!(ok, "{stderr}");
    let job = server.job(
        "/api/v1/exec/raw",
        &json!({"name": "w", "nodes": [
            {"nodeName": "A", "algorithmName": "fn-multiply", "input": ["#@flowInput.xs", 5]}],
            "flowInput": {"xs": [1, 2, 3, "x"]}, "options": {"batchTolerance": 50}}),
    );
    let result = server.results(&job);
    let products: Vec<Value> = result["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{result}"))
        .iter()
        .map(|item| item["result"].clone())
        .collect();
    assert_eq!(&products[..3], [json!(5), json!(10), json!(15)], "{result}");
    let (_, status) = server.get(&format!("/api/v1/exec/status/{job}"));
    assert_eq!(status["data"]["states"]["failed"], 1, "{status}");

    let both = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "_start"))
          (func (export "hkube_alloc") (param i32) (result i32) (i32.const 0))
          (func (export "hkube_start") (param i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let bad = fresh_dir();
    std::fs::write(bad.join("both.wasm"), both).unwrap();
    std::fs::write(
        bad.join("algorithm.yml"),
        "name: both-abis\ncode:\n  path: both.wasm\n",
    )
    .unwrap();
    let (ok, stderr) = apply_in(&server, &bad);
    assert!(!ok);
    assert!(
        stderr.contains(
            "the uploaded WebAssembly module cannot run in hkube: it exports both _start (a WASI \
             command) and hkube_start (hkube's function ABI)"
        ),
        "{stderr}"
    );
    let (status, _) = server.get("/api/v1/store/algorithms/both-abis");
    assert_eq!(status, 404, "a refused module is not stored");
}
