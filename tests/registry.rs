//! Builds that push to a registry, against a real one: Debian's `docker-registry` (the CNCF
//! distribution registry) started by the test on a free localhost port, with htpasswd
//! authentication. `hkube server --executor docker --registry 127.0.0.1:PORT/hkube` builds an
//! applied algorithm, names it under the registry and pushes it with the credentials of a
//! Docker config file; wrong credentials fail the build with the registry's refusal and what to
//! check. The image is then removed from the engine, pulled back from the registry, and runs.
//!
//! Needs dockerd, the base image hkube/python:bookworm and /usr/bin/docker-registry (or
//! HKUBE_DOCKER_REGISTRY). Without them the test says so and returns, unless
//! HKUBE_REQUIRE_DOCKER=1 (CI sets it), where their absence fails it.

#![allow(clippy::unwrap_used)]

mod common;
use common::Killed;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The account the test registry accepts: htpasswd's bcrypt line for `hkube` with the password
/// `hkube-registry-test` (made with `htpasswd -nbB`; a fixture, so the test needs no htpasswd).
const HTPASSWD: &str = "hkube:$2y$05$CxFjjwkimc4Nj/PK.dPNSeeWrlxJr/nYE56Ga7wuw77mDJDxnhpNC\n";
const USER: &str = "hkube";
const PASSWORD: &str = "hkube-registry-test";

fn registry_binary() -> PathBuf {
    std::env::var_os("HKUBE_DOCKER_REGISTRY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"))
}

fn ready() -> Result<(), String> {
    let info = Command::new("docker").arg("info").output();
    if !info.is_ok_and(|o| o.status.success()) {
        return Err("no Docker engine answers `docker info`".into());
    }
    let base = Command::new("docker")
        .args(["image", "inspect", "hkube/python:bookworm"])
        .output();
    if !base.is_ok_and(|o| o.status.success()) {
        return Err(
            "the base image hkube/python:bookworm is missing (scripts/base-images.sh)".into(),
        );
    }
    let registry = registry_binary();
    if !registry.is_file() {
        return Err(format!(
            "{} is missing (apt-get install docker-registry)",
            registry.display()
        ));
    }
    Ok(())
}

/// Images the test made, removed at its end.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker")
                .args(["image", "rm", "-f", image])
                .output();
        }
    }
}

/// A port nobody listens on now (the registry binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `docker-registry serve` on 127.0.0.1:PORT over a folder, with htpasswd auth; returns once
/// `/v2/` answers (401: it wants credentials).
fn start_registry(dir: &Path) -> (Killed, String) {
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    std::fs::write(dir.join("htpasswd"), HTPASSWD).unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
         http:\n  addr: {host}\nauth:\n  htpasswd:\n    realm: hkube-test\n    path: {}\n",
        dir.join("data").display(),
        dir.join("htpasswd").display()
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    let child = Command::new(registry_binary())
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let registry = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http_status(&format!("http://{host}/v2/"), None) == 401 {
            return (registry, host);
        }
        assert!(
            Instant::now() < deadline,
            "the registry did not start: {}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_status(url: &str, user: Option<&str>) -> u16 {
    let mut command = Command::new("curl");
    command.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
    if let Some(user) = user {
        command.args(["-u", user]);
    }
    let output = command.arg(url).output().unwrap();
    String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0)
}

/// The registry's JSON at `path`, read with the test account.
fn registry_json(host: &str, path: &str) -> Value {
    let output = Command::new("curl")
        .args(["-sf", "-u", &format!("{USER}:{PASSWORD}")])
        .arg(format!("http://{host}{path}"))
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

/// A Docker config file as `docker login` writes it: the base64 `auth` of user:password.
fn auth_file(path: &Path, host: &str, password: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    let config = json!({"auths": {host: {"auth": auth}}});
    std::fs::write(path, config.to_string()).unwrap();
}

fn apply(endpoint: &str, dir: &Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hkube"))
        .args([
            "algorithm",
            "apply",
            "-f",
            "algorithm.yml",
            "--endpoint",
            endpoint,
        ])
        .current_dir(dir)
        .env_remove("HKUBE_TOKEN")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn get(endpoint: &str, path: &str) -> Value {
    common::http_json("GET", &format!("{endpoint}/api/v1/{path}"), "")
}

/// Runs `multiply` on [6, 7] and returns its result.
fn multiply(endpoint: &str) -> Value {
    let started = common::http_json(
        "POST",
        &format!("{endpoint}/api/v1/exec/algorithm"),
        &json!({"name": "multiply", "input": [6, 7]}).to_string(),
    );
    let job_id = started["jobId"]
        .as_str()
        .unwrap_or_else(|| panic!("{started}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let results = get(endpoint, &format!("exec/results/{job_id}"));
        if results["status"] == "completed" {
            return results["data"][0]["result"].clone();
        }
        assert!(results["status"] != "failed", "{results}");
        assert!(Instant::now() < deadline, "the job did not end: {results}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn built_images_are_pushed_to_the_registry_and_pulled_back() {
    if let Err(reason) = ready() {
        testkit::skip(Some("HKUBE_REQUIRE_DOCKER"), &reason);
        return;
    }
    let root = std::env::temp_dir().join(format!("hkube-registry-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let (_registry, host) = start_registry(&root);
    let credentials = root.join("docker-config.json");
    auth_file(&credentials, &host, "not-the-password");
    let server = common::start_server(|command| {
        command
            .args(["--executor", "docker", "--state-dir"])
            .arg(root.join("state"))
            .args(["--registry", &format!("{host}/hkube")])
            .arg("--registry-auth")
            .arg(&credentials);
    });
    let endpoint = format!("http://{}", server.address);
    let _server = Killed(server.child);
    let mut images = Images(Vec::new());

    let code = root.join("multiply");
    std::fs::create_dir_all(&code).unwrap();
    for file in ["algorithm.yml", "main.py"] {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/numbers/multiply");
        std::fs::copy(from.join(file), code.join(file)).unwrap();
    }
    // A test-unique file: the image's tag (a digest of its inputs) is this run's own.
    std::fs::write(code.join("run.txt"), root.display().to_string()).unwrap();

    // Wrong credentials: the registry refuses the push, and the build fails saying so.
    let (status, output) = apply(&endpoint, &code);
    assert_eq!(status, 1, "{output}");
    let builds = get(&endpoint, "builds/list/multiply");
    let error = builds[0]["error"].as_str().unwrap_or_default().to_string();
    eprintln!("the failed push's message: {error}");
    assert!(error.contains("pushing"), "{builds}");
    assert!(
        error.contains("unauthorized") || error.contains("authentication required"),
        "the registry's refusal is in the message: {error}"
    );
    assert!(
        error.contains(&credentials.display().to_string()) && error.contains("docker login"),
        "the message says what to check: {error}"
    );
    if let Some(tag) = builds[0]["result"]["data"]
        .as_str()
        .and_then(|log| log.lines().find_map(|l| l.strip_prefix("pushing ")))
    {
        images.0.push(tag.split(' ').next().unwrap().to_string());
    }

    // The right ones (read at each push: no restart). Changed code, so a new build.
    auth_file(&credentials, &host, PASSWORD);
    std::fs::write(code.join("run.txt"), format!("{} 2", root.display())).unwrap();
    let (status, output) = apply(&endpoint, &code);
    assert_eq!(status, 0, "{output}");
    let algorithm = get(&endpoint, "store/algorithms/multiply");
    let image = algorithm["algorithmImage"].as_str().unwrap().to_string();
    images.0.push(image.clone());
    let prefix = format!("{host}/hkube/multiply:");
    assert!(image.starts_with(&prefix), "{algorithm}");
    let tag = image.strip_prefix(&prefix).unwrap();
    let builds = get(&endpoint, "builds/list/multiply?sort=desc");
    let log = builds[0]["result"]["data"].as_str().unwrap_or_default();
    eprintln!("the build's log: {log}");
    assert!(
        log.contains(&format!("pushing {image} to {host} as {USER}")) && log.contains("Pushed"),
        "push progress is in the build log: {log}"
    );

    // The registry lists it.
    let catalog = registry_json(&host, "/v2/_catalog");
    assert!(
        catalog["repositories"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("hkube/multiply"))),
        "{catalog}"
    );
    let tags = registry_json(&host, "/v2/hkube/multiply/tags/list");
    assert!(
        tags["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!(tag))),
        "{tags}"
    );

    // Gone from the engine, pulled back from the registry (as a cluster's node would), it runs.
    let removed = Command::new("docker")
        .args(["image", "rm", &image])
        .output()
        .unwrap();
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let docker_config = root.join("pull-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    auth_file(&docker_config.join("config.json"), &host, PASSWORD);
    let pulled = Command::new("docker")
        .arg("--config")
        .arg(&docker_config)
        .args(["pull", &image])
        .output()
        .unwrap();
    assert!(
        pulled.status.success(),
        "docker pull {image}: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    assert_eq!(multiply(&endpoint), json!(42));
    drop(_server);
    drop(images);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_registry_needs_an_image_building_executor_and_a_readable_auth_file() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_hkube"))
            .arg("server")
            .args(args)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
                "/nonexistent/hkube",
            ])
            .env_remove("HKUBE_TOKEN")
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let local = run(&["--registry", "127.0.0.1:5000/hkube"]);
    assert!(
        local.contains("--registry needs --executor docker"),
        "{local}"
    );
    let missing = run(&[
        "--executor",
        "docker",
        "--registry",
        "127.0.0.1:5000/hkube",
        "--registry-auth",
        "/nonexistent/config.json",
    ]);
    assert!(
        missing.contains("/nonexistent/config.json") && missing.contains("cannot read it"),
        "{missing}"
    );
    let namespace = run(&["--executor", "docker", "--registry", "hkube/algorithms"]);
    assert!(namespace.contains("Docker Hub namespace"), "{namespace}");
}
