//! Triggers and notifications of `hkube server`, whole system: cron triggers of stored
//! pipelines firing on the real clock (also after a restart), and webhooks POSTed to a real
//! local HTTP receiver, one that answers and ones that fail.

#![allow(clippy::unwrap_used)] // a test may panic on the unexpected

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{dechunk, python_missing};

/// A running `hkube server` over a state folder, stopped (SIGTERM) when dropped.
struct Server {
    started: common::Started,
    state_dir: PathBuf,
}

fn fresh_dir() -> PathBuf {
    common::scratch_dir("hkube-triggers-test")
}

impl Server {
    /// With the numbers example's algorithms.
    fn start_in(state_dir: PathBuf) -> Server {
        Server::start_with(state_dir, &[])
    }

    fn start_with(state_dir: PathBuf, extra: &[&str]) -> Server {
        let started = common::start_server(|command| {
            command
                .arg("--state-dir")
                .arg(&state_dir)
                .args(["--algorithms", "examples/numbers"])
                .args(extra)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
        });
        Server { started, state_dir }
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut stream = TcpStream::connect(&self.started.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.started.address,
            body.len()
        );
        stream
            .write_all(format!("{head}{body}").as_bytes())
            .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
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

    fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None)
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request("POST", path, Some(&body))
    }

    fn log(&self) -> String {
        self.started.log.lock().unwrap().clone()
    }

    /// Polls `path` until it answers 200 and `accept` takes the answer.
    fn wait_for(&self, path: &str, within: Duration, accept: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, answer) = self.get(path);
            if status == 200 && accept(&answer) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not answer as expected within {within:?}: {status} {answer}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.started.child.id().to_string()])
            .status();
        let _ = self.started.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.started.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// A stored pipeline of one Python node (Range of 3), with a cron trigger.
fn cron_pipeline(name: &str, pattern: &str, enabled: bool) -> Value {
    json!({
        "name": name,
        "nodes": [{"nodeName": "Range", "algorithmName": "range", "input": [3]}],
        "triggers": {"cron": {"pattern": pattern, "enabled": enabled}},
    })
}

fn cron_jobs(server: &Server, name: &str) -> Vec<String> {
    let (status, statuses) = server.get(&format!("/api/v1/cron/status?name={name}&limit=1000"));
    if status != 200 {
        return Vec::new();
    }
    statuses
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["jobId"].as_str().unwrap().to_string())
        .collect()
}

/// The acceptance case: a stored pipeline with `* * * * *` starts a job within 70 s, typed as
/// HKube types a cron job, with its results under /cron/results; the stored pipeline shows
/// its next fire time.
#[test]
fn a_stored_pipeline_with_an_every_minute_cron_starts_a_job() {
    if python_missing() {
        return;
    }
    let server = Server::start_in(fresh_dir());
    let (status, stored) = server.post(
        "/api/v1/store/pipelines",
        cron_pipeline("tick", "* * * * *", true),
    );
    assert_eq!(status, 201, "{stored}");
    let (_, shown) = server.get("/api/v1/store/pipelines/tick");
    let next = shown["cronNextRun"]
        .as_u64()
        .expect("the next fire time is shown");
    let now = orchestrator::engine::now_ms();
    assert!(next > now && next <= now + 60_000, "next {next}, now {now}");
    let (_, list) = server.get("/api/v1/cron/list");
    assert_eq!(list[0]["name"], "tick", "{list}");
    assert_eq!(
        list[0]["cron"],
        json!({"pattern": "* * * * *", "enabled": true})
    );
    assert_eq!(list[0]["nextRun"], json!(next));

    let results = server.wait_for(
        "/api/v1/cron/results?name=tick",
        Duration::from_secs(70),
        |results| results[0]["status"] == "completed",
    );
    assert_eq!(
        results[0]["data"][0]["result"],
        json!([1, 2, 3]),
        "{results}"
    );
    let job = results[0]["jobId"].as_str().unwrap();
    let (_, pipeline) = server.get(&format!("/api/v1/exec/pipelines/{job}"));
    assert_eq!(pipeline["types"], json!(["stored", "internal", "cron"]));
}

/// Enabling, disabling and changing a pattern take effect at once; an enabled cron survives
/// a restart; HKube's cron routes answer with HKube's bodies and errors. Patterns with
/// seconds keep it short.
#[test]
fn cron_start_stop_and_restart() {
    if python_missing() {
        return;
    }
    let state_dir = fresh_dir();
    let mut server = Server::start_in(state_dir.clone());
    let (status, _) = server.post(
        "/api/v1/store/pipelines",
        cron_pipeline("often", "0 0 1 1 *", false),
    );
    assert_eq!(status, 201);
    // Errors, as HKube words them.
    assert_eq!(
        server.post("/api/v1/cron/start", json!({"name": "nope"})),
        (
            404,
            json!({"error": {"code": 404, "message": "pipeline nope Not Found"}})
        )
    );
    let (status, refused) = server.post(
        "/api/v1/cron/start",
        json!({"name": "often", "pattern": "every second"}),
    );
    assert_eq!(status, 400);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("data.pattern should match format \"cron\""),
        "{refused}"
    );
    let (status, none) = server.get("/api/v1/cron/results?name=often");
    assert_eq!(status, 404);
    assert_eq!(none["error"]["message"], "cron results often Not Found");
    let (status, none) = server.get("/api/v1/cron/status?name=often");
    assert_eq!(status, 404);
    assert_eq!(none["error"]["message"], "cron status often Not Found");

    // Disabled: no job. Started with a pattern of every 2 seconds: jobs come.
    std::thread::sleep(Duration::from_secs(1));
    assert!(cron_jobs(&server, "often").is_empty());
    let (status, ok) = server.post(
        "/api/v1/cron/start",
        json!({"name": "often", "pattern": "*/2 * * * * *"}),
    );
    assert_eq!((status, ok), (200, json!({"message": "OK"})));
    let (_, stored) = server.get("/api/v1/store/pipelines/often");
    assert_eq!(
        stored["triggers"]["cron"],
        json!({"pattern": "*/2 * * * * *", "enabled": true})
    );
    server.wait_for(
        "/api/v1/cron/status?name=often&limit=100",
        Duration::from_secs(20),
        |s| s.as_array().unwrap().len() >= 2,
    );

    // Stopped: no more jobs (one may have been starting as it stopped).
    let (status, ok) = server.post("/api/v1/cron/stop", json!({"name": "often"}));
    assert_eq!((status, ok), (200, json!({"message": "OK"})));
    let (_, list) = server.get("/api/v1/cron/list");
    assert_eq!(list[0]["cron"]["enabled"], false, "{list}");
    assert!(list[0].get("nextRun").is_none(), "{list}");
    std::thread::sleep(Duration::from_millis(500));
    let after_stop = cron_jobs(&server, "often").len();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(cron_jobs(&server, "often").len(), after_stop);

    // A changed pattern through the store (PUT), enabled: the next job follows it; and the
    // shown next fire time is not stored back.
    let mut changed = cron_pipeline("often", "*/3 * * * * *", true);
    changed["cronNextRun"] = json!(1);
    let (status, answer) = server.request("PUT", "/api/v1/store/pipelines/often", Some(&changed));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("cronNextRun").is_none(), "{answer}");
    server.wait_for(
        "/api/v1/cron/status?name=often&limit=100",
        Duration::from_secs(20),
        |s| s.as_array().unwrap().len() > after_stop,
    );

    // After a restart the enabled cron fires again, from the store.
    server.terminate();
    let server = Server::start_in(state_dir.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .log()
        .contains("hkube: cron of pipeline often started job")
    {
        assert!(
            Instant::now() < deadline,
            "no cron job after the restart:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The on-demand route HKube's trigger service calls: the same kind of job.
    let (status, started) = server.post("/internal/v1/exec/stored/cron", json!({"name": "often"}));
    assert_eq!(status, 200, "{started}");
    let job = started["jobId"].as_str().unwrap();
    let (_, pipeline) = server.get(&format!("/api/v1/exec/pipelines/{job}"));
    assert_eq!(pipeline["types"], json!(["stored", "internal", "cron"]));
}

/// A local HTTP receiver: records each request's path and JSON body, answers `status`.
struct Receiver {
    address: String,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let kept = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let kept = kept.clone();
                std::thread::spawn(move || serve(stream, status, &kept));
            }
        });
        Receiver { address, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn bodies(&self, path: &str) -> Vec<Value> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| body.clone())
            .collect()
    }
}

/// Reads HTTP/1.1 requests on one connection (keep-alive) and answers each.
fn serve(stream: TcpStream, status: u16, requests: &Mutex<Vec<(String, Value)>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        requests.lock().unwrap().push((path, body));
        let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A free port nothing listens on.
fn refusing_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}/nobody")
}

/// The acceptance case: a local receiver gets the progress webhooks of a run (its status
/// changes, ending with `completed`) and the result webhook (jobId, status, timestamps,
/// data); the deliveries are recorded and shown by HKube's routes.
#[test]
fn a_local_receiver_gets_the_progress_and_result_webhooks() {
    if python_missing() {
        return;
    }
    let receiver = Receiver::start(200);
    let server = Server::start_in(fresh_dir());
    let mut pipeline = cron_pipeline("hooked", "0 0 1 1 *", false);
    pipeline["webhooks"] = json!({
        "progress": receiver.url("/progress"),
        "result": receiver.url("/result"),
    });
    let (status, started) = server.post("/api/v1/exec/raw", pipeline);
    assert_eq!(status, 200, "{started}");
    let job = started["jobId"].as_str().unwrap().to_string();
    let record = server.wait_for(
        &format!("/api/v1/webhooks/results/{job}"),
        Duration::from_secs(60),
        |_| true,
    );
    assert_eq!(record["responseStatus"], "succeed", "{record}");
    assert_eq!(record["pipelineStatus"], "completed");
    assert_eq!(record["httpResponse"]["statusCode"], 200);
    assert_eq!(record["url"], receiver.url("/result"));

    let results = receiver.bodies("/result");
    assert_eq!(results.len(), 1, "{results:?}");
    let result = &results[0];
    assert_eq!(result["jobId"], job.as_str());
    assert_eq!(result["status"], "completed");
    assert_eq!(result["data"][0]["result"], json!([1, 2, 3]), "{result}");
    assert!(result["timestamp"].as_u64().unwrap() >= result["startTime"].as_u64().unwrap());
    assert!(result["timeTook"].is_number(), "{result}");
    assert_eq!(
        result,
        &server.get(&format!("/api/v1/exec/results/{job}")).1
    );

    // Progress: each status change at the default verbosity (info), the last one final.
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver
        .bodies("/progress")
        .last()
        .map(|p| p["status"].clone())
        != Some(json!("completed"))
    {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            receiver.bodies("/progress")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let progress = receiver.bodies("/progress");
    assert!(progress
        .iter()
        .all(|p| p["jobId"] == job.as_str() && p["level"] == "info"));
    assert_eq!(
        progress.last().unwrap()["data"]["progress"].as_f64(),
        Some(100.0),
        "{progress:?}"
    );
    let statuses: Vec<&str> = progress
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert!(statuses.contains(&"active"), "{statuses:?}");
    let (_, list) = server.get(&format!("/api/v1/webhooks/list/{job}"));
    assert_eq!(list["jobId"], job.as_str());
    assert_eq!(list["result"]["responseStatus"], "succeed");
    assert_eq!(list["progress"]["pipelineStatus"], "completed", "{list}");
    let (status, _) = server.get(&format!("/api/v1/webhooks/status/{job}"));
    assert_eq!(status, 200);
    let (status, missing) = server.get("/api/v1/webhooks/list/nosuchjob");
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["message"], "webhook nosuchjob Not Found");
}

/// Receivers that refuse connections or answer 500: the job completes as quickly as without
/// webhooks, and each delivery is retried, then recorded as failed with what went wrong.
#[test]
fn a_failing_receiver_never_fails_or_holds_the_job() {
    if python_missing() {
        return;
    }
    let failing = Receiver::start(500);
    let server = Server::start_in(fresh_dir());
    let mut pipeline = cron_pipeline("unheard", "0 0 1 1 *", false);
    pipeline["webhooks"] = json!({"progress": refusing_url(), "result": failing.url("/result")});
    let (status, started) = server.post("/api/v1/exec/raw", pipeline);
    assert_eq!(status, 200, "{started}");
    let job = started["jobId"].as_str().unwrap().to_string();
    let begun = Instant::now();
    let results = server.wait_for(
        &format!("/api/v1/exec/results/{job}"),
        Duration::from_secs(60),
        |r| r["status"] == "completed",
    );
    assert_eq!(results["data"][0]["result"], json!([1, 2, 3]));
    // The retries (2 s, then 4 s) come after the job's end, not before it.
    let ended_in = begun.elapsed();
    let record = server.wait_for(
        &format!("/api/v1/webhooks/results/{job}"),
        Duration::from_secs(30),
        |_| true,
    );
    assert!(
        begun.elapsed() >= ended_in + Duration::from_secs(5),
        "the result record came after its retries"
    );
    assert_eq!(record["responseStatus"], "failed", "{record}");
    assert_eq!(record["httpResponse"]["statusCode"], 500);
    assert_eq!(record["attempts"], 3);
    assert_eq!(failing.bodies("/result").len(), 3, "three tries");
    // A job's progress deliveries go one after the other: each of them retries for 6 s.
    let list = server.wait_for(
        &format!("/api/v1/webhooks/list/{job}"),
        Duration::from_secs(60),
        |list| {
            list["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["type"] == "progress" && d["pipelineStatus"] == "completed")
        },
    );
    let deliveries = list["deliveries"].as_array().unwrap();
    let progress: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["type"] == "progress")
        .collect();
    for delivery in progress {
        assert_eq!(delivery["responseStatus"], "failed", "{delivery}");
        assert_eq!(
            delivery["httpResponse"]["statusCode"], "ECONNREFUSED",
            "{delivery}"
        );
        assert_eq!(delivery["attempts"], 3);
    }
}

/// The acceptance case of hkube's result cache: a pipeline run twice with `cache: true` runs
/// its algorithm once (the second job's task is reported cached); another input runs it again;
/// `DELETE /cache` empties the cache. The algorithm counts its runs in a file.
#[test]
fn a_cached_node_runs_its_algorithm_once_per_input() {
    if python_missing() {
        return;
    }
    let folder = fresh_dir();
    let code = folder.join("counted");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(
        code.join("algorithm.yml"),
        "name: counted\nenv: python\ncode:\n  path: .\n  entryPoint: main.py\n",
    )
    .unwrap();
    std::fs::write(
        code.join("main.py"),
        "def start(args, api):\n    marker, n = args['input']\n    with open(marker, 'a') as f:\n        f.write('ran\\n')\n    return n * 2\n",
    )
    .unwrap();
    let marker = folder.join("runs.txt");
    let runs = || {
        std::fs::read_to_string(&marker)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    };
    let server = Server::start_with(fresh_dir(), &["--algorithms", folder.to_str().unwrap()]);
    let run = |n: u64| -> (Value, Value) {
        let pipeline = json!({"name": "cached", "nodes": [{
            "nodeName": "A", "algorithmName": "counted", "cache": true,
            "input": [marker.to_str().unwrap(), n],
        }]});
        let (status, started) = server.post("/api/v1/exec/raw", pipeline);
        assert_eq!(status, 200, "{started}");
        let job = started["jobId"].as_str().unwrap().to_string();
        let result = server.wait_for(
            &format!("/api/v1/exec/results/{job}"),
            Duration::from_secs(60),
            |r| r["status"] == "completed",
        );
        (result, server.get(&format!("/api/v1/exec/status/{job}")).1)
    };
    let (first, status) = run(3);
    assert_eq!(first["data"][0]["result"], 6, "{first}");
    assert!(status["data"].get("cached").is_none(), "{status}");
    assert_eq!(runs(), 1);
    // The output is kept as the task reports; give it a moment before asking again.
    std::thread::sleep(Duration::from_millis(300));
    let (second, status) = run(3);
    assert_eq!(second["data"], first["data"]);
    assert_eq!(status["data"]["cached"], 1, "{status}");
    assert_eq!(runs(), 1, "the second run took its result from the cache");
    let (other, _) = run(4);
    assert_eq!(other["data"][0]["result"], 8);
    assert_eq!(runs(), 2, "another input runs again");

    std::thread::sleep(Duration::from_millis(300));
    let (status, cleared) = server.request("DELETE", "/api/v1/cache", None);
    assert_eq!(
        (status, cleared),
        (200, json!({"message": "OK", "deleted": 2}))
    );
    run(3);
    assert_eq!(runs(), 3, "an emptied cache runs it again");
    let _ = std::fs::remove_dir_all(&folder);
}

/// `hkube run` calls a pipeline's webhooks as the server does, and delivers the result's
/// before it exits.
#[test]
fn hkube_run_calls_the_webhooks_before_it_exits() {
    if python_missing() {
        return;
    }
    let receiver = Receiver::start(200);
    let dir = fresh_dir();
    let mut pipeline = cron_pipeline("hooked-run", "0 0 1 1 *", false);
    pipeline["webhooks"] = json!({
        "progress": receiver.url("/progress"),
        "result": receiver.url("/result"),
    });
    let file = dir.join("pipeline.json");
    std::fs::write(&file, pipeline.to_string()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_hkube"))
        .arg("run")
        .arg(&file)
        .args(["--quiet", "--algorithms", "examples/numbers", "--state-dir"])
        .arg(dir.join("state"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let results = receiver.bodies("/result");
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["jobId"], printed["jobId"]);
    assert_eq!(results[0]["data"][0]["result"], json!([1, 2, 3]));
    assert!(receiver
        .bodies("/progress")
        .iter()
        .any(|p| p["status"] == "completed"));
    let _ = std::fs::remove_dir_all(&dir);
}
