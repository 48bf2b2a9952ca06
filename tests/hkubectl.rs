//! hkubectl's commands, whole system: the real `hkube server` on its own port and state
//! folder, and the real `hkube` binary's `algorithm`, `pipeline` and `exec` commands talking
//! to it, each run in a fresh folder with its own HOME (so no stray .hkuberc is read).

#![allow(clippy::unwrap_used)] // a test may panic on the unexpected

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

/// A fresh folder, removed when dropped.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fresh_dir() -> Scratch {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hkube-hkubectl-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// A running `hkube server` with the numbers example's algorithms, stopped when dropped.
struct Server {
    child: Child,
    endpoint: String,
    /// Removed after the server has stopped (fields drop after `Drop::drop`).
    _state_dir: Scratch,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let state_dir = fresh_dir();
        let common::Started {
            child,
            address,
            log,
        } = common::start_server(|command| {
            command
                .arg("--state-dir")
                .arg(&*state_dir)
                .args(["--algorithms", &repo("examples/numbers")])
                .args(extra);
        });
        Server {
            child,
            endpoint: format!("http://{address}"),
            _state_dir: state_dir,
            log,
        }
    }

    /// `hkube <args> --endpoint <this server>` in a fresh folder.
    fn hkube(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend(["--endpoint", &self.endpoint]);
        hkube(&all, &fresh_dir(), &[])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("server log:\n{}", self.log.lock().unwrap());
        }
    }
}

/// What one `hkube` command did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:#?}");
        &self.stdout
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("{e}: {self:#?}"))
    }

    fn failed(&self) -> &str {
        assert_eq!(self.code, Some(1), "{self:#?}");
        &self.stderr
    }
}

/// Runs `hkube` in `dir` with HOME there too, no HKUBE_* from the caller, plus `env`.
fn hkube(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hkube"));
    command
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("HKUBE_TOKEN")
        .env_remove("HKUBE_ENDPOINT")
        .env_remove("HKUBE_PATH_PREFIX")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("hkube starts");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The numbers example runs Python and Node.js processes.
fn missing_tools() -> Option<&'static str> {
    for program in ["python3", "node"] {
        let found = Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(program);
        }
    }
    None
}

#[test]
fn the_numbers_example_through_exec() {
    if let Some(missing) = missing_tools() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    let server = Server::start(&[]);
    let numbers = repo("examples/numbers/numbers.yml");

    let stored = server.hkube(&["pipeline", "store", "-f", &numbers]);
    assert_eq!(stored.ok(), "stored pipeline numbers (3 nodes)\n");

    let dir = fresh_dir();
    let overrides = dir.join("overrides.json");
    std::fs::write(&overrides, r#"{"flowInput":{"N":500,"k":200}}"#).unwrap();
    let result = server
        .hkube(&[
            "exec",
            "stored",
            "numbers",
            "-f",
            overrides.to_str().unwrap(),
        ])
        .json();
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"][0]["result"], 25_050_000, "{result}");

    // YAML overrides work the same.
    let yaml = dir.join("overrides.yml");
    std::fs::write(&yaml, "flowInput:\n  N: 10\n  k: 1\n").unwrap();
    let result = server
        .hkube(&["exec", "stored", "numbers", "-f", yaml.to_str().unwrap()])
        .json();
    assert_eq!(result["data"][0]["result"], 55, "{result}");

    let raw = server.hkube(&["exec", "raw", "-f", &numbers]);
    let result = raw.json();
    assert_eq!(
        result["data"],
        json!([{"nodeName": "Reduce", "algorithmName": "reduce", "result": 30}])
    );
    // People get the document pretty-printed; --json gives the server's one line.
    assert!(raw.stdout.lines().count() > 5, "{raw:#?}");
    let compact = server.hkube(&["exec", "raw", "-f", &numbers, "--json"]);
    assert_eq!(compact.ok().lines().count(), 1, "{compact:#?}");
    assert_eq!(compact.json()["data"][0]["result"], 30);

    // --noWait prints the job id; status and result ask about it later.
    let started = server.hkube(&["exec", "raw", "-f", &numbers, "--noWait"]);
    let job = started.ok().trim().to_string();
    assert_eq!(job.len(), 12, "{started:#?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = server.hkube(&["exec", "--json", "status", &job]).json();
        assert_eq!(status["jobId"], job.as_str());
        if status["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let table = server.hkube(&["exec", "status", &job]);
    let lines: Vec<&str> = table.ok().lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["JOB", "STATUS", "PROGRESS", "DETAILS"]
    );
    assert!(
        lines[1].starts_with(&format!("{job}  completed  100%")),
        "{table:#?}"
    );
    let result = server.hkube(&["exec", "result", &job, "-j"]).json();
    assert_eq!(result["data"][0]["result"], 30);
    assert_eq!(result["jobId"], job.as_str());

    // The job is over: stopping it is the server's 404, on stderr.
    let stop = server.hkube(&["exec", "stop", &job, "--reason", "done"]);
    assert!(
        stop.failed().contains(&format!(
            "hkube: No jobs found matching criteria (jobId: {job}"
        )),
        "{stop:#?}"
    );

    // An algorithm alone: --input items are JSON.
    let result = server
        .hkube(&["exec", "algorithm", "range", "--input", "4"])
        .json();
    assert_eq!(result["data"][0]["result"], json!([1, 2, 3, 4]), "{result}");
}

#[test]
fn algorithms_and_pipelines_in_the_store() {
    let server = Server::start(&[]);

    let list = server.hkube(&["algorithm", "list"]);
    let rows: Vec<Vec<&str>> = list
        .ok()
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "ENV", "IMAGE", "CPU", "MEM"]);
    for (name, env) in [
        ("multiply", "python"),
        ("range", "python"),
        ("reduce", "nodejs"),
    ] {
        assert!(
            rows.iter().any(|r| r[0] == name && r[1] == env),
            "{name} in {list:#?}"
        );
    }
    let names: Vec<String> = server
        .hkube(&["algorithm", "list", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"range".to_string()), "{names:?}");

    let range = server.hkube(&["algorithm", "get", "range"]).json();
    assert_eq!(range["name"], "range");
    assert_eq!(range["env"], "python");

    // An image algorithm: apply from hkubectl's YAML with a flag overriding the file.
    let dir = fresh_dir();
    let yaml = dir.join("alg.yml");
    std::fs::write(
        &yaml,
        "name: remote\nimage: repo/remote:1\nresources: {cpu: 0.5, mem: 512Mi}\nminHotWorkers: 0\n",
    )
    .unwrap();
    let applied = server.hkube(&[
        "algorithm",
        "apply",
        "-f",
        yaml.to_str().unwrap(),
        "--cpu",
        "2",
    ]);
    assert_eq!(
        applied.ok(),
        "a new version of algorithm remote has been created\nthe algorithm remote has been successfully pushed to hkube\n"
    );
    let remote = server
        .hkube(&["algorithm", "get", "remote", "--json"])
        .json();
    assert_eq!(remote["algorithmImage"], "repo/remote:1");
    assert_eq!(remote["cpu"], 2.0);
    assert_eq!(remote["mem"], "512Mi");
    // Applying a changed definition again replaces it only with --setCurrent.
    let again = server.hkube(&[
        "algorithm",
        "apply",
        "remote",
        "--image",
        "repo/remote:2",
        "--setCurrent",
        "--json",
    ]);
    assert_eq!(again.json()["algorithm"]["algorithmImage"], "repo/remote:2");
    let remote = server.hkube(&["algorithm", "get", "remote", "-j"]).json();
    assert_eq!(remote["algorithmImage"], "repo/remote:2");

    // Code is packed, sent and built: a local-executor server keeps it (no container engine)
    // and runs the new version.
    let code = server.hkube(&[
        "algorithm",
        "apply",
        "-f",
        &repo("examples/numbers/range/algorithm.yml"),
    ]);
    code.ok();
    assert!(
        code.stderr.contains("hkube: built hkube-local/range:"),
        "{code:#?}"
    );
    let range = server
        .hkube(&["algorithm", "get", "range", "--json"])
        .json();
    assert!(
        range["algorithmImage"]
            .as_str()
            .unwrap()
            .starts_with("hkube-local/range:"),
        "{range}"
    );

    let deleted = server.hkube(&["algorithm", "delete", "remote"]);
    assert!(
        deleted
            .ok()
            .contains("algorithm remote successfully deleted"),
        "{deleted:#?}"
    );
    let gone = server.hkube(&["algorithm", "get", "remote"]);
    assert_eq!(gone.failed(), "hkube: algorithm remote Not Found\n");

    // Pipelines: store (YAML), list, get, delete.
    let stored = server.hkube(&[
        "pipeline",
        "store",
        "-f",
        &repo("examples/numbers/numbers.yml"),
        "--json",
    ]);
    assert_eq!(stored.json()["name"], "numbers");
    let list = server.hkube(&["pipeline", "list"]);
    assert_eq!(
        list.ok(),
        "NAME     NODES\nnumbers  Range,Multiply,Reduce\n"
    );
    let pipelines = server.hkube(&["pipeline", "list", "--json"]).json();
    assert_eq!(pipelines[0]["name"], "numbers");
    let numbers = server.hkube(&["pipeline", "get", "numbers"]).json();
    assert_eq!(numbers["nodes"][1]["input"][0], "#@Range");
    assert_eq!(numbers["flowInput"], json!({"N": 5, "k": 2}));
    let deleted = server.hkube(&["pipeline", "delete", "numbers"]);
    assert_eq!(
        deleted.ok(),
        "pipeline numbers successfully deleted from store\n"
    );
    assert_eq!(
        server.hkube(&["pipeline", "list", "--json"]).json(),
        json!([])
    );
}

#[test]
fn errors_say_what_the_server_said() {
    let server = Server::start(&[]);
    let unknown = server.hkube(&["exec", "stored", "x"]);
    assert_eq!(unknown.failed(), "hkube: pipeline x Not Found\n");
    assert_eq!(unknown.stdout, "");

    let invalid = server.hkube(&["exec", "algorithm", "nosuch", "--noWait"]);
    assert_eq!(invalid.failed(), "hkube: algorithm nosuch Not Found\n");

    // Nothing listens on port 1.
    let dir = fresh_dir();
    let down = hkube(
        &["pipeline", "list", "--endpoint", "http://127.0.0.1:1"],
        &dir,
        &[],
    );
    let stderr = down.failed();
    assert!(
        stderr.contains("cannot reach the HKube API at http://127.0.0.1:1/api/v1"),
        "{down:#?}"
    );
    assert!(stderr.contains("`hkube server`"), "{down:#?}");
}

#[test]
fn hkuberc_in_the_working_folder_names_the_endpoint() {
    let server = Server::start(&[]);
    let dir = fresh_dir();
    let work = dir.join("project");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join(".hkuberc"),
        json!({"endpoint": server.endpoint, "rejectUnauthorized": false}).to_string(),
    )
    .unwrap();
    let list = hkube(&["algorithm", "list", "--json"], &work, &[]);
    assert!(list.json().as_array().unwrap().len() >= 3, "{list:#?}");

    // hkubectl's cluster prefix in .hkuberc is honoured: this server does not serve it.
    std::fs::write(
        work.join(".hkuberc"),
        json!({"endpoint": server.endpoint, "pathPrefix": "/hkube/api-server/"}).to_string(),
    )
    .unwrap();
    let prefixed = hkube(&["algorithm", "list"], &work, &[]);
    assert_eq!(
        prefixed.failed(),
        "hkube: Cannot GET /hkube/api-server/api/v1/store/algorithms\n"
    );
    // A flag beats the file.
    let flag = hkube(
        &["algorithm", "list", "-j", "--path-prefix", "/api/v1"],
        &work,
        &[],
    );
    assert!(flag.json().is_array(), "{flag:#?}");

    // The environment beats the file too.
    std::fs::write(
        work.join(".hkuberc"),
        r#"{"endpoint":"http://127.0.0.1:1"}"#,
    )
    .unwrap();
    let env = hkube(
        &["algorithm", "list", "-j"],
        &work,
        &[("HKUBE_ENDPOINT", &server.endpoint)],
    );
    assert!(env.json().is_array(), "{env:#?}");
}

#[test]
fn a_token_server_wants_the_token() {
    let server = Server::start(&["--token", "s3cret"]);
    let without = server.hkube(&["pipeline", "list"]);
    let stderr = without.failed();
    assert!(stderr.starts_with("hkube: Unauthorized\n"), "{without:#?}");
    assert!(
        stderr.contains("give --token or set HKUBE_TOKEN"),
        "{without:#?}"
    );

    let wrong = server.hkube(&["pipeline", "list", "--token", "nope"]);
    assert!(wrong.failed().contains("refused the token"), "{wrong:#?}");

    let with = server.hkube(&["pipeline", "list", "--token", "s3cret"]);
    assert_eq!(with.ok(), "NAME  NODES\n");

    let dir = fresh_dir();
    let from_env = hkube(
        &["pipeline", "list", "--json", "--endpoint", &server.endpoint],
        &dir,
        &[("HKUBE_TOKEN", "s3cret")],
    );
    assert_eq!(from_env.json(), json!([]));
}

/// `hkube server` without a container engine builds uploaded code too: the code is kept with a
/// prepared environment (here Range needs `six` from PyPI), the numbers pipeline runs on it,
/// and a restarted server runs it again.
#[test]
fn uploaded_code_runs_on_the_local_executor_and_after_a_restart() {
    let state = fresh_dir();
    let code = fresh_dir();
    for name in ["range", "multiply", "reduce"] {
        let from = PathBuf::from(repo(&format!("examples/numbers/{name}")));
        std::fs::create_dir_all(code.join(name)).unwrap();
        for file in ["algorithm.yml", "main.py", "index.js"] {
            if from.join(file).is_file() {
                std::fs::copy(from.join(file), code.join(name).join(file)).unwrap();
            }
        }
    }
    std::fs::write(code.join("range/requirements.txt"), "six==1.16.0\n").unwrap();
    let main = std::fs::read_to_string(code.join("range/main.py")).unwrap();
    std::fs::write(code.join("range/main.py"), format!("import six\n{main}")).unwrap();
    let start = || {
        let started = common::start_server(|command| {
            command.arg("--state-dir").arg(&*state);
        });
        Server {
            child: started.child,
            endpoint: format!("http://{}", started.address),
            _state_dir: fresh_dir(),
            log: started.log,
        }
    };
    let numbers = repo("examples/numbers/numbers.yml");
    {
        let server = start();
        for name in ["range", "multiply", "reduce"] {
            let mut args = vec!["algorithm", "apply", "-f", "algorithm.yml"];
            let endpoint = server.endpoint.clone();
            args.extend(["--endpoint", &endpoint]);
            let applied = hkube(&args, &code.join(name), &[]);
            applied.ok();
            assert!(
                applied.stderr.contains("hkube: built hkube-local/"),
                "{applied:#?}"
            );
        }
        let result = server
            .hkube(&["exec", "raw", "-f", &numbers, "--json"])
            .json();
        assert_eq!(result["data"][0]["result"], 30, "{result}");
    }
    // Started again over the same state: the built algorithms are registered again and run.
    let server = start();
    let result = server
        .hkube(&["exec", "raw", "-f", &numbers, "--json"])
        .json();
    assert_eq!(result["data"][0]["result"], 30, "{result}");
    let builds = server
        .hkube(&["algorithm", "get", "range", "--json"])
        .json();
    assert!(builds["algorithmImage"]
        .as_str()
        .unwrap()
        .starts_with("hkube-local/range:"));
}

/// Whether a process whose command line matches `pattern` runs now. pgrep exits 1 when none
/// matches; any other failure (pgrep missing, a bad pattern) fails the test rather than
/// passing for "none".
fn process_runs(pattern: &str) -> bool {
    let output = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .expect("pgrep runs (procps is installed)");
    match output.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("pgrep -f {pattern}: {output:?}"),
    }
}

/// No process matching `pattern` is left within 5 s (the build's installer group was ended).
fn no_process_runs(pattern: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_runs(pattern) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Watches for a process matching `pattern` until `done` is set; true when one was seen.
fn watch_for_process(pattern: String, done: Arc<AtomicBool>) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            if process_runs(&pattern) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    })
}

/// A build that hangs fails at the server's timeout with HKube's missing error (reference
/// case 14), and a running build can be stopped; either way its processes are ended.
#[test]
fn a_hanging_build_times_out_and_a_running_one_stops() {
    let server = Server::start(&["--build-timeout", "2"]);
    let code = fresh_dir();
    let from = PathBuf::from(repo("examples/numbers/range"));
    std::fs::copy(from.join("main.py"), code.join("main.py")).unwrap();
    let pid = std::process::id();
    let write_descriptor = |seconds: u32| {
        std::fs::write(
            code.join("algorithm.yml"),
            format!(
                "name: slow\nenv: python\ncode:\n  path: .\n  entryPoint: main.py\ndependencyInstallCmd: sleep {seconds}.{pid}\n"
            ),
        )
        .unwrap();
    };
    write_descriptor(40);
    let apply = |extra: &[&str]| {
        let mut args = vec!["algorithm", "apply", "-f", "algorithm.yml"];
        args.extend(extra);
        args.extend(["--endpoint", &server.endpoint]);
        hkube(&args, &code, &[])
    };
    // The installer must really start, or "it no longer runs" below would prove nothing.
    let applied = Arc::new(AtomicBool::new(false));
    let watcher = watch_for_process(format!("sleep 40.{pid}"), applied.clone());
    let timed_out = apply(&[]);
    applied.store(true, Ordering::Relaxed);
    assert!(
        watcher.join().unwrap(),
        "the install command never ran: {timed_out:#?}"
    );
    let stderr = timed_out.failed();
    assert!(
        stderr.contains("failed: build timed out after 2 s"),
        "{timed_out:#?}"
    );
    assert!(
        no_process_runs(&format!("sleep 40.{pid}")),
        "the timed-out installer still runs"
    );

    // A new install command rebuilds; this build is stopped while it runs.
    write_descriptor(41);
    let started = apply(&["--noWait", "--json"]).json();
    let build_id = started["buildId"].as_str().unwrap().to_string();
    let status_url = format!("{}/api/v1/builds/status/{build_id}", server.endpoint);
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::http_json("GET", &status_url, "")["status"] != "active" {
        assert!(Instant::now() < deadline, "the build never became active");
        std::thread::sleep(Duration::from_millis(50));
    }
    while !process_runs(&format!("sleep 41.{pid}")) {
        assert!(Instant::now() < deadline, "the install command never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop_url = format!("{}/api/v1/builds/stop", server.endpoint);
    let body = json!({ "buildId": build_id }).to_string();
    assert_eq!(
        common::http_json("POST", &stop_url, &body),
        json!({"message": "OK"})
    );
    assert_eq!(
        common::http_json("GET", &status_url, "")["status"],
        "stopped"
    );
    let again = common::http_json("POST", &stop_url, &body);
    assert_eq!(
        again["error"]["message"], "unable to stop build because its in stopped status",
        "{again}"
    );
    assert!(
        no_process_runs(&format!("sleep 41.{pid}")),
        "the stopped installer still runs"
    );
}

/// HKube's rule for builds that complete while jobs use the algorithm (reference case 18):
/// the version is made but not applied, the algorithm carries error 901, and applying the
/// version by hand (force, as jobs still run) makes it current.
#[test]
fn a_build_completed_during_a_job_waits_to_be_applied() {
    let server = Server::start(&[]);
    let code = fresh_dir();
    std::fs::write(
        code.join("algorithm.yml"),
        "name: sleeper\nenv: python\ncode:\n  path: .\n  entryPoint: main.py\n",
    )
    .unwrap();
    let version = |text: &str| {
        std::fs::write(
            code.join("main.py"),
            format!("import time\ndef start(args, api):\n    time.sleep(args['input'][0])\n    return '{text}'\n"),
        )
        .unwrap();
        let mut args = vec!["algorithm", "apply", "-f", "algorithm.yml"];
        args.extend(["--endpoint", &server.endpoint]);
        hkube(&args, &code, &[]).ok().to_string()
    };
    version("v1");
    let first = server
        .hkube(&["algorithm", "get", "sleeper", "--json"])
        .json();
    let api = format!("{}/api/v1", server.endpoint);
    let job = common::http_json(
        "POST",
        &format!("{api}/exec/algorithm"),
        &json!({"name": "sleeper", "input": [60]}).to_string(),
    );
    let job_id = job["jobId"].as_str().unwrap().to_string();

    version("v2");
    let held = server
        .hkube(&["algorithm", "get", "sleeper", "--json"])
        .json();
    assert_eq!(held["algorithmImage"], first["algorithmImage"], "{held}");
    assert_eq!(held["errors"], json!([901]), "{held}");
    let versions = common::http_json("GET", &format!("{api}/versions/algorithms/sleeper"), "");
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
    let newest = versions[0]["version"].as_str().unwrap().to_string();
    assert_ne!(
        versions[0]["algorithm"]["algorithmImage"],
        first["algorithmImage"]
    );

    let refused = common::http_json(
        "POST",
        &format!("{api}/versions/algorithms/apply"),
        &json!({"name": "sleeper", "version": newest}).to_string(),
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("running pipeline which depends on \"sleeper\""),
        "{refused}"
    );
    common::http_json(
        "POST",
        &format!("{api}/versions/algorithms/apply"),
        &json!({"name": "sleeper", "version": newest, "force": true}).to_string(),
    );
    let applied = server
        .hkube(&["algorithm", "get", "sleeper", "--json"])
        .json();
    assert_eq!(
        applied["algorithmImage"],
        versions[0]["algorithm"]["algorithmImage"]
    );
    assert!(applied.get("errors").is_none(), "{applied}");
    common::http_json(
        "POST",
        &format!("{api}/exec/stop"),
        &json!({"jobId": job_id}).to_string(),
    );
}

/// The server's secrets never reach user code: with HKUBE_TOKEN and S3 credentials in the
/// server's environment, an algorithm's `dependencyInstallCmd` and the algorithm itself see
/// neither (both run with a cleared environment plus an allow-list).
#[test]
fn secrets_in_the_server_environment_do_not_reach_user_code() {
    if let Some(missing) = missing_tools() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    let state = fresh_dir();
    let started = common::start_server(|command| {
        command
            .arg("--state-dir")
            .arg(&*state)
            .env("HKUBE_TOKEN", "token-for-secrets-test")
            .env("AWS_ACCESS_KEY_ID", "key-for-secrets-test")
            .env("AWS_SECRET_ACCESS_KEY", "secret-for-secrets-test");
    });
    let server = Server {
        child: started.child,
        endpoint: format!("http://{}", started.address),
        _state_dir: fresh_dir(),
        log: started.log,
    };
    let code = fresh_dir();
    let seen = code.join("install-env.txt");
    std::fs::write(
        code.join("algorithm.yml"),
        format!(
            "name: secrets\nenv: python\ncode:\n  path: .\n  entryPoint: main.py\ndependencyInstallCmd: env > {}\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::write(
        code.join("main.py"),
        "import os\n\ndef start(args):\n    return sorted(k for k in os.environ if k == 'HKUBE_TOKEN' or k.startswith('AWS_') or 'secrets-test' in os.environ[k])\n",
    )
    .unwrap();
    let token = [("HKUBE_TOKEN", "token-for-secrets-test")];
    let applied = hkube(
        &[
            "algorithm",
            "apply",
            "-f",
            "algorithm.yml",
            "--endpoint",
            &server.endpoint,
        ],
        &code,
        &token,
    );
    applied.ok();
    let install_env = std::fs::read_to_string(&seen).unwrap();
    assert!(install_env.contains("PATH="), "{install_env}");
    for secret in ["HKUBE_TOKEN", "AWS_", "secrets-test"] {
        assert!(
            !install_env.contains(secret),
            "the install command saw {secret}:\n{install_env}"
        );
    }

    let pipeline = code.join("pipeline.json");
    std::fs::write(
        &pipeline,
        r#"{"name":"secrets","nodes":[{"nodeName":"a","algorithmName":"secrets","input":[]}]}"#,
    )
    .unwrap();
    let result = hkube(
        &[
            "exec",
            "raw",
            "-f",
            pipeline.to_str().unwrap(),
            "--json",
            "--endpoint",
            &server.endpoint,
        ],
        &code,
        &token,
    )
    .json();
    assert_eq!(result["data"][0]["result"], json!([]), "{result}");
}

/// A failed task's cause reaches the job's status over the API: the exception's type, its
/// message and the user's file and line, then the traceback (HKube's wrapper would give only
/// `'missing-key'`).
#[test]
fn a_python_exception_shows_its_type_and_place_in_the_job_status() {
    if let Some(missing) = missing_tools() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    let server = Server::start(&[]);
    let code = fresh_dir();
    std::fs::write(
        code.join("algorithm.yml"),
        "name: lookup\nenv: python\ncode:\n  path: .\n  entryPoint: main.py\n",
    )
    .unwrap();
    std::fs::write(
        code.join("main.py"),
        "def start(args):\n    raise KeyError('missing-key')\n",
    )
    .unwrap();
    let applied = hkube(
        &[
            "algorithm",
            "apply",
            "-f",
            "algorithm.yml",
            "--endpoint",
            &server.endpoint,
        ],
        &code,
        &[],
    );
    applied.ok();
    let pipeline = json!({"name": "lookup", "nodes": [{"nodeName": "A", "algorithmName": "lookup", "input": []}]});
    let started = common::http_json(
        "POST",
        &format!("{}/api/v1/exec/raw", server.endpoint),
        &pipeline.to_string(),
    );
    let job = started["jobId"].as_str().unwrap().to_string();
    let url = format!("{}/api/v1/exec/status/{job}", server.endpoint);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = common::http_json("GET", &url, "");
        if status["status"] == "failed" {
            break status;
        }
        assert!(Instant::now() < deadline, "the job never failed: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("KeyError: 'missing-key' (at main.py:2)\nTraceback"),
        "{status}"
    );
}

/// `hkube exec get JOB | head -c0`: the reader is gone before hkube writes; hkube ends
/// quietly, with no "Broken pipe".
#[test]
fn a_closed_stdout_ends_exec_get_quietly() {
    if let Some(missing) = missing_tools() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    let server = Server::start(&[]);
    let numbers = repo("examples/numbers/numbers.yml");
    let started = server.hkube(&["exec", "raw", "-f", &numbers, "--noWait"]);
    let job = started.ok().trim().to_string();
    let dir = fresh_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hkube"))
        .args(["exec", "get", &job, "--endpoint", &server.endpoint])
        .current_dir(&*dir)
        .env("HOME", &*dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    assert_eq!(output.status.code(), Some(0));
}

/// An https endpoint (openssl's test server with a certificate for 127.0.0.1): reached when
/// the certificate is trusted (SSL_CERT_FILE) or `.hkuberc` says `rejectUnauthorized: false`,
/// refused with a hint otherwise.
#[test]
fn https_endpoints_are_reached_and_their_certificates_checked() {
    let has_openssl = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_openssl {
        testkit::skip(
            None,
            "openssl (to make a certificate and serve TLS) is not installed",
        );
        return;
    }
    let dir = fresh_dir();
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        // A server's own certificate, not a CA's (rustls refuses a CA's as a server's).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(&*dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // `-www` answers every GET with a page describing the TLS session.
    let server = Command::new("openssl")
        .args([
            "s_server", "-www", "-quiet", "-cert", "cert.pem", "-key", "key.pem",
        ])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .current_dir(&*dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Stop(Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Stop(server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let endpoint = format!("https://127.0.0.1:{port}");
    let list = ["pipeline", "list", "--json", "--endpoint", &endpoint];
    let cert = dir.join("cert.pem");
    let trusted = hkube(&list, &dir, &[("SSL_CERT_FILE", cert.to_str().unwrap())]);
    assert!(trusted.ok().contains("TLSv1.3"), "{trusted:#?}");

    // Not trusted: an empty bundle of roots.
    let empty = dir.join("none.pem");
    std::fs::write(&empty, "").unwrap();
    let refused = hkube(&list, &dir, &[("SSL_CERT_FILE", empty.to_str().unwrap())]);
    let stderr = refused.failed();
    assert!(stderr.contains("certificate"), "{refused:#?}");
    assert!(stderr.contains("SSL_CERT_FILE"), "{refused:#?}");

    std::fs::write(dir.join(".hkuberc"), r#"{"rejectUnauthorized": false}"#).unwrap();
    let accepted = hkube(&list, &dir, &[("SSL_CERT_FILE", empty.to_str().unwrap())]);
    assert!(accepted.ok().contains("TLSv1.3"), "{accepted:#?}");
}
