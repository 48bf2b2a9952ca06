//! The container tier end to end, on a real Docker engine: code applied with `hkube algorithm
//! apply` is built into images by `hkube server --executor docker`, the numbers pipeline (with
//! Multiply in Python, and in Java) runs in container pairs and gives 30; an unchanged apply
//! builds nothing; a broken requirement fails its build with pip's words; a signed GitHub push
//! to a git host rebuilds from the pushed commit and the next run uses it.
//!
//! Needs dockerd and the base images of `scripts/base-images.sh`. Without them the test says
//! so and returns, unless HKUBE_REQUIRE_DOCKER=1 (CI sets it), where their absence fails it.

#![allow(clippy::unwrap_used)]

mod common;
use common::{copy_tree, hkube_at as hkube, Killed};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// True when the test should run; panics when Docker is required but absent.
fn docker_or_skip() -> bool {
    common::docker_or_skip(&[
        "hkube/python:bookworm",
        "hkube/nodejs:bookworm",
        "hkube/java:bookworm",
    ])
}

fn post(endpoint: &str, path: &str, headers: &[String], body: &str) -> (u16, Value) {
    let mut command = Command::new("curl");
    command.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command
        .args(["--data-binary", body, &format!("{endpoint}/api/v1/{path}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Runs one algorithm and returns its result.
fn run_algorithm(endpoint: &str, name: &str, input: Value) -> Value {
    run_until(endpoint, name, input, "completed")["data"][0]["result"].clone()
}

/// Runs one algorithm that must fail; returns the results document.
fn run_failing(endpoint: &str, name: &str, input: Value) -> Value {
    run_until(endpoint, name, input, "failed")
}

/// Runs one algorithm until its job ends with `status` (the other end fails the test); returns
/// the results document.
fn run_until(endpoint: &str, name: &str, input: Value, status: &str) -> Value {
    let body = serde_json::json!({"name": name, "input": input}).to_string();
    let (code, started) = post(
        endpoint,
        "exec/algorithm",
        &["content-type: application/json".into()],
        &body,
    );
    assert_eq!(code, 200, "{started}");
    let job_id = started["jobId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let results = get(endpoint, &format!("exec/results/{job_id}"));
        if results["status"] == status {
            return results;
        }
        assert!(
            results["status"] != "completed" && results["status"] != "failed",
            "{name} ended otherwise than {status}: {results}"
        );
        assert!(Instant::now() < deadline, "the job did not end: {results}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// HMAC-SHA256 (RFC 2104), as GitHub signs a webhook body.
fn hmac_sha256(key: &[u8], message: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn wait_for_builds(endpoint: &str, name: &str, count: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let builds = get(endpoint, &format!("builds/list/{name}?sort=asc"));
        let list = builds.as_array().cloned().unwrap_or_default();
        if list.len() >= count {
            let last = &list[count - 1];
            if last["status"] == "completed" {
                return last.clone();
            }
            assert!(last["status"] != "failed", "{last}");
        }
        assert!(
            Instant::now() < deadline,
            "no completed build {count} of {name}: {builds}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn get(endpoint: &str, path: &str) -> Value {
    let output = Command::new("curl")
        .args(["-sf", &format!("{endpoint}/api/v1/{path}")])
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

/// A copy of an example algorithm folder, with extra files.
fn algorithm_folder(root: &Path, example: &str, extra: &[(&str, &str)]) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/numbers")
        .join(example);
    let to = root.join(example);
    std::fs::create_dir_all(&to).unwrap();
    copy_tree(&from, &to);
    for (name, text) in extra {
        std::fs::write(to.join(name), text).unwrap();
    }
    to
}

/// `hkube exec raw -f FILE --json`: waits and returns the results document.
fn exec_pipeline(endpoint: &str, dir: &Path, file: &str) -> Value {
    common::exec_numbers(endpoint, dir, file, &String::new)
}

/// A test folder, removed at the end (containers write root-owned files in its storage).
struct Root(PathBuf);

impl Root {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn uploaded_code_builds_into_images_and_runs_in_containers() {
    if !docker_or_skip() {
        return;
    }
    let root = Root(common::scratch_dir("hkube-docker-test"));
    let state = root.path().join("state");
    let server = common::start_server(|command| {
        command
            .args(["--executor", "docker", "--state-dir"])
            .arg(&state);
    });
    let endpoint = format!("http://{}", server.address);
    let mut child = Killed(server.child);
    let code = root.path().join("code");
    // Range with one requirement (the acceptance case), Multiply in Python, Reduce in Node.js.
    let range = algorithm_folder(&code, "range", &[("requirements.txt", "six==1.16.0\n")]);
    let multiply = algorithm_folder(&code, "multiply", &[]);
    let reduce = algorithm_folder(&code, "reduce", &[]);
    let multiply_java = algorithm_folder(&code, "multiply-java", &[]);
    for folder in [&range, &multiply, &reduce, &multiply_java] {
        let (status, _, stderr) = hkube(
            &endpoint,
            folder,
            &["algorithm", "apply", "-f", "algorithm.yml"],
        );
        assert_eq!(status, 0, "apply in {}: {stderr}", folder.display());
        assert!(
            stderr.contains("hkube: built hkube/algorithms/"),
            "{stderr}"
        );
    }
    let range_doc = get(&endpoint, "store/algorithms/range");
    assert!(
        range_doc["algorithmImage"]
            .as_str()
            .unwrap()
            .starts_with("hkube/algorithms/range:"),
        "{range_doc}"
    );
    let builds = get(&endpoint, "builds/list/range");
    assert_eq!(builds[0]["status"], "completed", "{builds}");
    // The requirement is installed in the image (the layer may come from the engine's cache).
    let image = range_doc["algorithmImage"].as_str().unwrap();
    let imported = Command::new("docker")
        .args([
            "run",
            "--rm",
            image,
            "python3",
            "-c",
            "import six; print(six.__version__)",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&imported.stdout).trim(), "1.16.0");

    // The numbers pipeline on the Docker executor, and its variant with Multiply in Java.
    let results = exec_pipeline(&endpoint, root.path(), "numbers.yml");
    assert_eq!(results["data"][0]["result"], 30, "{results}");
    let results = exec_pipeline(&endpoint, root.path(), "numbers-java.yml");
    assert_eq!(results["data"][0]["result"], 30, "{results}");

    // Unchanged code: no build at all.
    let (status, stdout, stderr) = hkube(
        &endpoint,
        &range,
        &["algorithm", "apply", "-f", "algorithm.yml"],
    );
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stdout.contains("there was no trigger for build"),
        "{stdout}"
    );

    // A requirement that does not exist: the build fails and says why in one line.
    std::fs::write(
        range.join("requirements.txt"),
        "hkube-no-such-package-xyz==1.0\n",
    )
    .unwrap();
    let (status, _, stderr) = hkube(
        &endpoint,
        &range,
        &["algorithm", "apply", "-f", "algorithm.yml"],
    );
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("failed:"), "{stderr}");
    assert!(
        stderr.contains("hkube-no-such-package-xyz"),
        "the failure names the package: {stderr}"
    );
    // The algorithm keeps its working image.
    assert_eq!(
        get(&endpoint, "store/algorithms/range")["algorithmImage"],
        range_doc["algorithmImage"]
    );

    // The workers' containers exist while the server runs (found by the state folder they
    // mount, not by a label the test would have to derive the way the server does)...
    let ours = containers_mounting(&state);
    assert!(
        !ours.is_empty(),
        "the jobs above ran in containers that mount {}",
        state.display()
    );
    let status = Command::new("kill")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "SIGTERM reached the server");
    let _ = child.0.wait();
    // ...and the server removed them on the way out.
    let left: Vec<&String> = ours.iter().filter(|id| container_exists(id)).collect();
    assert!(
        left.is_empty(),
        "containers left after the server stopped: {left:?}"
    );
}

/// The containers (running or not) carrying an `io.hkube.instance` label whose binds mount a
/// path under `state`.
fn containers_mounting(state: &Path) -> Vec<String> {
    let canonical = std::fs::canonicalize(state).unwrap().display().to_string();
    let listed = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            "label=io.hkube.instance",
        ])
        .output()
        .unwrap();
    assert!(listed.status.success(), "docker ps: {listed:?}");
    let mut ours = Vec::new();
    for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
        let inspected = Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{range .HostConfig.Binds}}{{.}}\n{{end}}",
                id,
            ])
            .output()
            .unwrap();
        // A container removed between the two calls is not ours to count.
        if inspected.status.success()
            && String::from_utf8_lossy(&inspected.stdout)
                .lines()
                .any(|bind| bind.starts_with(&canonical))
        {
            ours.push(id.to_string());
        }
    }
    ours
}

fn container_exists(id: &str) -> bool {
    let listed = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter", &format!("id={id}")])
        .output()
        .unwrap();
    assert!(listed.status.success(), "docker ps: {listed:?}");
    !String::from_utf8_lossy(&listed.stdout).trim().is_empty()
}

#[test]
fn a_signed_github_push_rebuilds_from_the_pushed_commit() {
    if !docker_or_skip() {
        return;
    }
    let root = Root(common::scratch_dir("hkube-git-test"));
    let state = root.path().join("state");
    // A bare repository with Range's code, as a git host would hold it.
    let bare = root.path().join("range.git");
    let work = root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(
        root.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "master",
            bare.to_str().unwrap(),
        ],
    );
    git(&work, &["init", "-q", "-b", "master"]);
    std::fs::write(
        work.join("main.py"),
        "def start(args, api):\n    return list(range(1, args['input'][0] + 1))\n",
    )
    .unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "master"]);
    // Served over http as a git host would (git's "dumb" protocol: static files).
    git(&bare, &["update-server-info"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _host = Killed(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/range.git");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the git host did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let secret = "webhook-secret-1";
    let server = common::start_server(|command| {
        command
            .args([
                "--executor",
                "docker",
                "--webhook-secret",
                secret,
                "--state-dir",
            ])
            .arg(&state);
    });
    let endpoint = format!("http://{}", server.address);
    let _child = Killed(server.child);
    std::fs::write(
        work.join("algorithm.yml"),
        format!("name: range-git\nenv: python\nentryPoint: main.py\ngitRepository:\n  url: {url}\n  branchName: master\n"),
    )
    .unwrap();
    let (status, _, stderr) = hkube(
        &endpoint,
        &work,
        &["algorithm", "apply", "-f", "algorithm.yml"],
    );
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(
        run_algorithm(&endpoint, "range-git", serde_json::json!([3])),
        serde_json::json!([1, 2, 3])
    );

    // New code is pushed; GitHub announces it.
    std::fs::write(
        work.join("main.py"),
        "def start(args, api):\n    return [10 * i for i in range(1, args['input'][0] + 1)]\n",
    )
    .unwrap();
    git(&work, &["commit", "-q", "-am", "times ten"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "master"]);
    git(&bare, &["update-server-info"]);
    let head = git(&work, &["rev-parse", "HEAD"]);
    let payload = serde_json::json!({
        "ref": "refs/heads/master",
        "before": "0000000000000000000000000000000000000001",
        "after": head,
        "deleted": false,
        "repository": {"html_url": url, "clone_url": url},
        "head_commit": {"id": head, "message": "times ten", "timestamp": "2026-11-29T10:00:00Z"},
        "commits": [{"id": head, "message": "times ten", "timestamp": "2026-11-29T10:00:00Z"}],
    })
    .to_string();
    let headers = |signature: &str| {
        vec![
            "content-type: application/json".to_string(),
            "x-github-event: push".to_string(),
            format!("x-hub-signature-256: sha256={signature}"),
        ]
    };
    let (status, body) = post(
        &endpoint,
        "builds/webhook/github",
        &headers(&"0".repeat(64)),
        &payload,
    );
    assert_eq!(status, 401, "a wrong signature is refused: {body}");
    let signature = hmac_sha256(secret.as_bytes(), payload.as_bytes());
    let (status, body) = post(
        &endpoint,
        "builds/webhook/github",
        &headers(&signature),
        &payload,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["builds"][0]["algorithmName"], "range-git", "{body}");
    let build = wait_for_builds(&endpoint, "range-git", 2);
    assert_eq!(
        build["gitRepository"]["commit"]["id"],
        head.as_str(),
        "{build}"
    );
    // The next run uses the pushed code.
    assert_eq!(
        run_algorithm(&endpoint, "range-git", serde_json::json!([3])),
        serde_json::json!([10, 20, 30])
    );
}

/// Removes an algorithm's images when the test ends, also half-way.
struct RemovedImages(String);

impl Drop for RemovedImages {
    fn drop(&mut self) {
        let label = format!("label=io.hkube.algorithm={}", self.0);
        if let Ok(listed) = Command::new("docker")
            .args(["images", "-q", "--filter", &label])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rmi", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

/// The images of old versions go (issue 17, item 9: 30 images and 1.07 GB after one round of
/// tests): after four builds of one algorithm, the current version's image and the one
/// before it are left. A build whose base image is missing fails naming the image and the
/// script that makes it, not with the registry's DNS error.
#[test]
fn old_images_are_removed_and_a_missing_base_image_is_named() {
    if !docker_or_skip() {
        return;
    }
    let root = Root(common::scratch_dir("hkube-docker-prune"));
    // A name of its own: images are found by the algorithm's label. They go at the end, once
    // the server (declared after, so dropped before) has removed its containers.
    let name = format!("prune-{}", std::process::id());
    let _images = RemovedImages(name.clone());
    let state = root.path().join("state");
    let server = common::start_server(|command| {
        command
            .args(["--executor", "docker", "--state-dir"])
            .arg(&state);
    });
    let endpoint = format!("http://{}", server.address);
    let _child = Killed(server.child);
    let folder = root.path().join("code");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("algorithm.yml"),
        format!("name: {name}\nenv: python\ncode:\n  path: .\n  entryPoint: main.py\n"),
    )
    .unwrap();
    let images = || {
        let listed = Command::new("docker")
            .args([
                "images",
                "-q",
                "--no-trunc",
                "--filter",
                &format!("label=io.hkube.algorithm={name}"),
            ])
            .output()
            .unwrap();
        let mut ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let image_of = |tag: &str| {
        let inspected = Command::new("docker")
            .args(["image", "inspect", "-f", "{{.Id}}", tag])
            .output()
            .unwrap();
        inspected.status.success().then(|| {
            String::from_utf8_lossy(&inspected.stdout)
                .trim()
                .to_string()
        })
    };
    let mut tags = Vec::new();
    for version in 1..=4 {
        std::fs::write(
            folder.join("main.py"),
            format!("def start(args, hkubeapi):\n    return {version}\n"),
        )
        .unwrap();
        let (status, _, stderr) = hkube(
            &endpoint,
            &folder,
            &["algorithm", "apply", "-f", "algorithm.yml"],
        );
        assert_eq!(status, 0, "apply {version}: {stderr}");
        let image = get(&endpoint, &format!("store/algorithms/{name}"))["algorithmImage"]
            .as_str()
            .unwrap()
            .to_string();
        tags.push(image);
    }
    assert_eq!(
        tags.iter().collect::<std::collections::HashSet<_>>().len(),
        4,
        "{tags:?}"
    );
    // The current (4th) and the previous (3rd) versions keep their images; the others went.
    let mut kept: Vec<String> = [&tags[3], &tags[2]]
        .iter()
        .map(|tag| image_of(tag).unwrap_or_else(|| panic!("{tag} was removed")))
        .collect();
    kept.sort();
    assert_eq!(
        images(),
        kept,
        "the images of {name} after four builds; the server said:\n{}",
        server.log.lock().unwrap()
    );
    assert_eq!(image_of(&tags[0]), None, "{} is still there", tags[0]);
    assert_eq!(image_of(&tags[1]), None, "{} is still there", tags[1]);
    // The current version still runs.
    assert_eq!(run_algorithm(&endpoint, &name, serde_json::json!([])), 4);

    // A base image the engine does not have and cannot pull.
    std::fs::write(
        folder.join("algorithm.yml"),
        format!(
            "name: {name}\nenv: python\nbaseImage: hkube/no-such-base:none\ncode:\n  path: .\n  entryPoint: main.py\n"
        ),
    )
    .unwrap();
    let (status, stdout, stderr) = hkube(
        &endpoint,
        &folder,
        &["algorithm", "apply", "-f", "algorithm.yml"],
    );
    assert_eq!(status, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("the base image hkube/no-such-base:none is not in the Docker engine"),
        "{stderr}"
    );
    assert!(
        stderr.contains("scripts/base-images.sh --only python"),
        "{stderr}"
    );
}

/// The server is killed (SIGKILL) while jobs of an algorithm built into an image run in
/// containers; started again over the same state folder it registers the image before the
/// engine resumes the jobs, so every job completes and every batch item runs (none fails for
/// want of the algorithm, none ends `null` inside the batch tolerance).
#[test]
fn a_killed_docker_server_resumes_the_jobs_of_built_images() {
    if !docker_or_skip() {
        return;
    }
    let root = Root(common::scratch_dir("hkube-docker-resume"));
    let state = root.path().join("state");
    let start = || {
        let server = common::start_server(|command| {
            command
                .args(["--executor", "docker", "--state-dir"])
                .arg(&state);
        });
        (format!("http://{}", server.address), Killed(server.child))
    };
    let (endpoint, first) = start();
    let code = root.path().join("tally");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(
        code.join("main.py"),
        "import time\ndef start(args, api):\n    time.sleep(0.2)\n    return args['input'][0] * 10\n",
    )
    .unwrap();
    std::fs::write(
        code.join("algorithm.yml"),
        "name: tally\nenv: python\nmaxWorkers: 2\ncode:\n  path: .\n  entryPoint: main.py\n",
    )
    .unwrap();
    let (status, _, stderr) = hkube(
        &endpoint,
        &code,
        &["algorithm", "apply", "-f", "algorithm.yml"],
    );
    assert_eq!(status, 0, "{stderr}");
    // 8 one-task jobs and 2 jobs of a 10-item batch: 28 tasks. (job, tasks, one-task input)
    let mut jobs = Vec::new();
    for i in 0..10_i64 {
        let (input, tasks, one) = if i % 5 == 0 {
            (serde_json::json!(["#[1...10]"]), 10, None)
        } else {
            (serde_json::json!([i]), 1, Some(i))
        };
        let body = serde_json::json!({"name": "tally",
            "nodes": [{"nodeName": "A", "algorithmName": "tally", "input": input}]});
        let (status, started) = post(
            &endpoint,
            "exec/raw",
            &["content-type: application/json".into()],
            &body.to_string(),
        );
        assert_eq!(status, 200, "{started}");
        jobs.push((started["jobId"].as_str().unwrap().to_string(), tasks, one));
    }
    let total: usize = jobs.iter().map(|(_, tasks, _)| tasks).sum();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let succeeded: usize = jobs
            .iter()
            .map(|(job, tasks, _)| {
                let status = get(&endpoint, &format!("exec/status/{job}"));
                match status["status"].as_str() {
                    Some("completed") => *tasks,
                    _ => status["data"]["states"]["succeed"].as_u64().unwrap_or(0) as usize,
                }
            })
            .sum();
        if succeeded * 10 >= total * 4 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-KILL", &first.0.id().to_string()])
        .status();
    drop(first);

    let (endpoint, _second) = start();
    for (job, _, one) in &jobs {
        let deadline = Instant::now() + Duration::from_secs(300);
        let result = loop {
            let result = get(&endpoint, &format!("exec/results/{job}"));
            if ["completed", "failed", "stopped"].contains(&result["status"].as_str().unwrap_or(""))
            {
                break result;
            }
            assert!(Instant::now() < deadline, "job {job} did not end");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(result["status"], "completed", "job {job}: {result}");
        let outputs: Vec<Value> = result["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["result"].clone())
            .collect();
        let expected: Vec<Value> = match one {
            Some(i) => vec![serde_json::json!(i * 10)],
            None => (1..=10).map(|i| serde_json::json!(i * 10)).collect(),
        };
        assert_eq!(outputs, expected, "job {job}: {result}");
    }
}

/// A container over its memory limit is killed by the engine (`State.OOMKilled`), and its
/// task fails naming the limit as on the local executor: `mem: 64Mi` is a request of 77Mi
/// (HKube's 20 % reserved memory) and a limit of 154Mi. With `retry: Never` on the node the
/// first kill is the job's error.
#[test]
fn a_container_over_its_memory_limit_fails_with_the_limit_named() {
    if !docker_or_skip() {
        return;
    }
    let root = Root(common::scratch_dir("hkube-docker-oom-test"));
    let state = root.path().join("state");
    let server = common::start_server(|command| {
        command
            .args(["--executor", "docker", "--state-dir"])
            .arg(&state);
    });
    let endpoint = format!("http://{}", server.address);
    let _child = Killed(server.child);
    let hog = root.path().join("hog");
    std::fs::create_dir_all(&hog).unwrap();
    std::fs::write(
        hog.join("algorithm.yml"),
        "name: hog\nenv: python\ncode: {path: ., entryPoint: main.py}\nresources: {cpu: 0.5, mem: 64Mi}\n",
    )
    .unwrap();
    std::fs::write(
        hog.join("main.py"),
        "import time\ndef start(args, api):\n    chunks = []\n    for _ in range(300):\n        chunks.append(b'\\x01' * (10 << 20))\n        time.sleep(0.01)\n    return len(chunks)\n",
    )
    .unwrap();
    let (status, _, stderr) = hkube(
        &endpoint,
        &hog,
        &["algorithm", "apply", "-f", "algorithm.yml"],
    );
    assert_eq!(status, 0, "{stderr}");
    let pipeline = serde_json::json!({"name": "hog", "nodes": [{"nodeName": "A",
        "algorithmName": "hog", "input": [], "retry": {"policy": "Never", "limit": 3}}]});
    let (status, started) = post(
        &endpoint,
        "exec/raw",
        &["content-type: application/json".into()],
        &pipeline.to_string(),
    );
    assert_eq!(status, 200, "{started}");
    let job_id = started["jobId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let results = loop {
        let results = get(&endpoint, &format!("exec/results/{job_id}"));
        if results["status"] == "failed" || results["status"] == "completed" {
            break results;
        }
        assert!(Instant::now() < deadline, "the job did not end: {results}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(results["status"], "failed", "{results}");
    let error = results["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("the algorithm's process exceeded its memory limit of 154Mi (OOM)"),
        "{results}"
    );
}

/// A module that traps at once.
const TRAPS: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") unreachable))"#;

/// A module that asks for 128 MiB more linear memory (2048 pages of 64 KiB) and traps when it
/// gets none: its `mem: 64Mi` refuses the growth.
const GREEDY: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start")
    (if (i32.lt_s (memory.grow (i32.const 2048)) (i32.const 0)) (then unreachable))))"#;

/// A folder to apply: `algorithm.yml` and the module `file` holding `module`'s bytes.
fn module_folder(root: &Path, name: &str, file: &str, module: &[u8]) -> PathBuf {
    let folder = root.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(file), module).unwrap();
    std::fs::write(
        folder.join("algorithm.yml"),
        format!("name: {name}\nenv: wasm\nmem: 64Mi\ncpu: 0.5\ncode:\n  path: .\n  entryPoint: {file}\n"),
    )
    .unwrap();
    folder
}

/// The server's label on its containers (`hkube server`'s instance label: the state folder's
/// digest), so that only this test's containers are looked at.
fn instance_of(state: &Path) -> String {
    use sha2::{Digest, Sha256};
    let canonical = std::fs::canonicalize(state).unwrap().display().to_string();
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..12]
        .to_string()
}

/// `docker ps -a` of this server's containers of `algorithm`: (id, image, name).
fn containers_of(state: &Path, algorithm: &str) -> Vec<(String, String, String)> {
    let listed = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Image}} {{.Names}}",
        ])
        .args([
            "--filter",
            &format!("label=io.hkube.instance={}", instance_of(state)),
        ])
        .args(["--filter", &format!("label=io.hkube.algorithm={algorithm}")])
        .output()
        .unwrap();
    assert!(listed.status.success(), "docker ps: {listed:?}");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace().map(str::to_string);
            Some((parts.next()?, parts.next()?, parts.next()?))
        })
        .collect()
}

/// The container `id` (`name` in messages) ran the example's module: its log says so.
fn assert_ran_the_module(id: &str, name: &str) {
    let logs = Command::new("docker").args(["logs", id]).output().unwrap();
    let logs = String::from_utf8_lossy(&logs.stderr);
    assert!(
        logs.contains("hkube-wrapper: running the wasm module /hkube/algorithm/multiply.wasm"),
        "{name}: {logs}"
    );
}

/// Waits (up to a minute) for container `id`'s log to hold `text`.
fn wait_for_log(id: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = Command::new("docker").args(["logs", id]).output().unwrap();
        let logs = String::from_utf8_lossy(&logs.stderr).to_string();
        if logs.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id}'s log never said {text:?}: {logs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No module ran in the server `pid`'s own wasm workers (threads named hkube-wasm-w<N>).
fn assert_no_wasm_worker_threads(pid: u32) {
    let threads = thread_names(pid);
    assert!(
        !threads.iter().any(|name| name.starts_with("hkube-wasm-w")),
        "the module ran in the server's process: {threads:?}"
    );
}

/// The names of the server process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// `env: wasm` on the Docker executor (docs/wasm.md): the wasm Multiply, applied with its
/// module, is built into an image FROM hkube/debian holding the module and the sidecar; the
/// numbers pipeline gives 30 with Multiply's tasks run by the sidecar in that image's container
/// (the container, its `HKUBE_WASM`, its log naming the module; no wasm worker thread in the
/// server). A trapping module fails its task with the trap; a module past its `mem` fails
/// naming the limit. The containers go when the server stops.
#[test]
fn wasm_modules_run_in_the_sidecars_container() {
    let Some(module) = common::wasm_numbers_or_skip() else {
        return;
    };
    let _images: Vec<RemovedImages> = ["multiply-wasm", "wasm-traps", "wasm-greedy", "wasm-counts"]
        .iter()
        .map(|name| RemovedImages(name.to_string()))
        .collect();
    let root = Root(common::scratch_dir("hkube-docker-wasm-test"));
    let state = root.path().join("state");
    let server = common::start_server(|command| {
        command
            .args(["--executor", "docker", "--state-dir"])
            .arg(&state);
    });
    let endpoint = format!("http://{}", server.address);
    let mut child = Killed(server.child);
    let code = root.path().join("code");
    let range = algorithm_folder(&code, "range", &[]);
    let reduce = algorithm_folder(&code, "reduce", &[]);
    let multiply = code.join("multiply-wasm");
    std::fs::create_dir_all(&multiply).unwrap();
    std::fs::copy(&module, multiply.join("multiply.wasm")).unwrap();
    std::fs::copy(
        module.with_file_name("algorithm.yml"),
        multiply.join("algorithm.yml"),
    )
    .unwrap();
    let traps = module_folder(
        &code,
        "wasm-traps",
        "traps.wasm",
        &wat::parse_str(TRAPS).unwrap(),
    );
    let greedy = module_folder(
        &code,
        "wasm-greedy",
        "greedy.wasm",
        &wat::parse_str(GREEDY).unwrap(),
    );
    let counts = module_folder(
        &code,
        "wasm-counts",
        "counts.wasm",
        &wat::parse_str(testkit::wasm::COUNTS).unwrap(),
    );
    // One worker: both of its tasks below meet the instance it keeps.
    let mut described = std::fs::read_to_string(counts.join("algorithm.yml")).unwrap();
    described.push_str("maxWorkers: 1\n");
    std::fs::write(counts.join("algorithm.yml"), described).unwrap();
    for folder in [&range, &reduce, &multiply, &traps, &greedy, &counts] {
        let (status, _, stderr) = hkube(
            &endpoint,
            folder,
            &["algorithm", "apply", "-f", "algorithm.yml"],
        );
        assert_eq!(status, 0, "apply in {}: {stderr}", folder.display());
        assert!(
            stderr.contains("hkube: built hkube/algorithms/"),
            "{stderr}"
        );
    }
    let stored = get(&endpoint, "store/algorithms/multiply-wasm");
    let image = stored["algorithmImage"].as_str().unwrap().to_string();
    assert!(
        image.starts_with("hkube/algorithms/multiply-wasm:"),
        "{stored}"
    );
    assert_eq!(stored["env"], "wasm", "{stored}");

    let results = exec_pipeline(&endpoint, root.path(), "numbers-wasm.yml");
    assert_eq!(results["data"][0]["result"], 30, "{results}");

    // Multiply's workers were containers of its image running the sidecar, which ran the
    // module (its log says so); the workers stay up after the job until their idle timeout.
    let workers = containers_of(&state, "multiply-wasm");
    assert!(!workers.is_empty(), "no container ran multiply-wasm");
    for (id, from, name) in &workers {
        assert_eq!(from, &image, "{name}");
        assert!(name.ends_with("-wasm"), "one container per worker: {name}");
        let inspected = Command::new("docker")
            .args(["inspect", "--format", "{{json .Config}}", id])
            .output()
            .unwrap();
        let config: Value = serde_json::from_slice(&inspected.stdout).unwrap();
        assert_eq!(config["Entrypoint"][0], "/hkube/hkube-wrapper", "{config}");
        let described = config["Env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .find_map(|var| var.strip_prefix("HKUBE_WASM="))
            .unwrap_or_else(|| panic!("no HKUBE_WASM in {config}"));
        let described: Value = serde_json::from_str(described).unwrap();
        assert_eq!(described["module"], "/hkube/algorithm/multiply.wasm");
        assert_eq!(described["sandbox"]["mem"], "64Mi");
        assert_ran_the_module(id, name);
    }
    // And not the server's own wasm workers.
    assert_no_wasm_worker_threads(child.0.id());

    // A trap fails the task with the trap's message; a module past its mem names the limit.
    let trapped = run_failing(&endpoint, "wasm-traps", serde_json::json!([]));
    let text = trapped.to_string();
    assert!(text.contains("the module failed"), "{trapped}");
    assert!(text.contains("unreachable"), "{trapped}");
    let greedy = run_failing(&endpoint, "wasm-greedy", serde_json::json!([]));
    let text = greedy.to_string();
    assert!(
        text.contains("the module ran out of memory: it asked for 128 MiB (it had 0 MiB), beyond its limit mem: 64Mi"),
        "{greedy}"
    );
    assert!(!containers_of(&state, "wasm-traps").is_empty());

    // hkube's function ABI in the sidecar's container: the worker keeps the module's instance
    // from one task to the next. Its first task runs Winch's code; once Cranelift's replaces
    // it (the container's log says when), the next task starts a fresh instance, kept after.
    let first = run_until(
        &endpoint,
        "wasm-counts",
        serde_json::json!([1]),
        "completed",
    );
    assert_eq!(first["data"][0]["result"], 1, "{first}");
    let container = containers_of(&state, "wasm-counts").remove(0).0;
    wait_for_log(
        &container,
        "hkube-wrapper: the module's optimised code (Cranelift) is ready after",
    );
    let answers: Vec<Value> = (0..2)
        .map(|_| {
            run_until(
                &endpoint,
                "wasm-counts",
                serde_json::json!([1]),
                "completed",
            )["data"][0]["result"]
                .clone()
        })
        .collect();
    assert_eq!(answers, [serde_json::json!(1), serde_json::json!(2)]);
    assert_eq!(containers_of(&state, "wasm-counts").len(), 1);

    // The server removes its containers on the way out.
    let ours: Vec<String> = ["multiply-wasm", "wasm-traps", "wasm-greedy", "wasm-counts"]
        .iter()
        .flat_map(|algorithm| containers_of(&state, algorithm))
        .map(|(id, _, _)| id)
        .collect();
    let status = Command::new("kill")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "SIGTERM reached the server");
    let _ = child.0.wait();
    let left: Vec<&String> = ours.iter().filter(|id| container_exists(id)).collect();
    assert!(
        left.is_empty(),
        "containers left after the server stopped: {left:?}"
    );
}

/// A project folder's wasm algorithm on the Docker executor (`hkube server --executor docker
/// --algorithms DIR`) runs as an applied one does: the server builds its image at start
/// (templates/wasm: the module and the sidecar, not the folder's sources or build output),
/// stores it as the algorithm's image, and the numbers pipeline gives 30 with Multiply's tasks
/// run by the sidecar in containers of that image, none by the server's own wasm threads.
#[test]
fn a_folders_wasm_algorithm_runs_in_containers_of_its_built_image() {
    let Some(module) = common::wasm_numbers_or_skip() else {
        return;
    };
    // Its own name: the applied multiply-wasm of the test above has images of its own.
    let _images = RemovedImages("folder-multiply".into());
    let root = Root(common::scratch_dir("hkube-docker-wasm-folder-test"));
    let project = root.path().join("project");
    algorithm_folder(&project, "range", &[]);
    algorithm_folder(&project, "reduce", &[]);
    let multiply = project.join("folder-multiply");
    std::fs::create_dir_all(multiply.join("target/release")).unwrap();
    std::fs::write(multiply.join("target/release/junk"), b"build output").unwrap();
    std::fs::write(multiply.join("main.rs"), b"fn main() {}").unwrap();
    std::fs::copy(&module, multiply.join("multiply.wasm")).unwrap();
    std::fs::write(
        multiply.join("algorithm.yml"),
        "name: folder-multiply\nenv: wasm\nmem: 64Mi\ncpu: 1\ncode:\n  path: .\n  entryPoint: multiply.wasm\n",
    )
    .unwrap();
    let pipeline = root.path().join("numbers-folder.yml");
    std::fs::write(
        &pipeline,
        r##"{"name": "numbers-folder", "nodes": [
            {"nodeName": "Range", "algorithmName": "range", "input": ["@flowInput.N"]},
            {"nodeName": "Multiply", "algorithmName": "folder-multiply", "input": ["#@Range", "@flowInput.k"]},
            {"nodeName": "Reduce", "algorithmName": "reduce", "input": ["@Multiply"]}],
            "flowInput": {"N": 5, "k": 2}}"##,
    )
    .unwrap();
    let state = root.path().join("state");
    let server = common::start_server(|command| {
        command
            .args(["--executor", "docker", "--state-dir"])
            .arg(&state)
            .arg("--algorithms")
            .arg(&project);
    });
    let endpoint = format!("http://{}", server.address);
    let child = Killed(server.child);

    let stored = get(&endpoint, "store/algorithms/folder-multiply");
    let image = stored["algorithmImage"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        image.starts_with("hkube/algorithms/folder-multiply:"),
        "{stored}"
    );
    assert_eq!(stored["env"], "wasm", "{stored}");
    // The image holds the module, not the folder's sources or build output.
    let listed = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/ls",
            &image,
            "/hkube/algorithm",
        ])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        "multiply.wasm"
    );

    let (status, stdout, stderr) = hkube(
        &endpoint,
        root.path(),
        &["exec", "raw", "-f", pipeline.to_str().unwrap(), "--json"],
    );
    assert_eq!(status, 0, "{stdout}{stderr}");
    let results: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(results["data"][0]["result"], 30, "{results}");

    let workers = containers_of(&state, "folder-multiply");
    assert!(!workers.is_empty(), "no container ran folder-multiply");
    for (id, from, name) in &workers {
        assert_eq!(from, &image, "{name}");
        assert!(name.ends_with("-wasm"), "one container per worker: {name}");
        assert_ran_the_module(id, name);
    }
    assert_no_wasm_worker_threads(child.0.id());
}
