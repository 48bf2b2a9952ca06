//! The container tier end to end, on a real Docker engine: code applied with `hkube algorithm
//! apply` is built into images by `hkube server --executor docker`, the numbers pipeline runs
//! in container pairs and gives 30; an unchanged apply builds nothing; a broken requirement
//! fails its build with pip's words.
//!
//! Needs dockerd and the base images of `scripts/base-images.sh`. Without them the test says
//! so and returns, unless HKUBE_REQUIRE_DOCKER=1 (CI sets it), where their absence fails it.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

fn docker_ready() -> Result<(), String> {
    let info = Command::new("docker").arg("info").output();
    if !info.is_ok_and(|o| o.status.success()) {
        return Err("no Docker engine answers `docker info`".into());
    }
    for image in ["hkube/python:bookworm", "hkube/nodejs:bookworm"] {
        let found = Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!(
                "the base image {image} is missing (make it with scripts/base-images.sh)"
            ));
        }
    }
    Ok(())
}

/// True when the test should run; panics when Docker is required but absent.
fn docker_or_skip() -> bool {
    match docker_ready() {
        Ok(()) => true,
        Err(reason) if std::env::var("HKUBE_REQUIRE_DOCKER").as_deref() == Ok("1") => {
            panic!("HKUBE_REQUIRE_DOCKER=1 but {reason}")
        }
        Err(reason) => {
            eprintln!("skipping the Docker test: {reason}");
            false
        }
    }
}

fn hkube(endpoint: &str, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hkube"))
        .args(args)
        .args(["--endpoint", endpoint])
        .current_dir(dir)
        .env_remove("HKUBE_TOKEN")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
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
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
    for (name, text) in extra {
        std::fs::write(to.join(name), text).unwrap();
    }
    to
}

/// The server, killed if the test fails half-way.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let root_dir = std::env::temp_dir().join(format!("hkube-docker-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root_dir);
    std::fs::create_dir_all(&root_dir).unwrap();
    let root = Root(root_dir);
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
    for folder in [&range, &multiply, &reduce] {
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

    // The numbers pipeline on the Docker executor.
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/numbers/numbers.yml");
    let (status, stdout, stderr) = hkube(
        &endpoint,
        root.path(),
        &["exec", "raw", "-f", pipeline.to_str().unwrap()],
    );
    assert_eq!(status, 0, "{stdout}{stderr}");
    let job_id = stdout
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| w.len() == 12)
        .unwrap_or_else(|| panic!("no job id in {stdout}"))
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let results = loop {
        let results = get(&endpoint, &format!("exec/results/{job_id}"));
        if results["status"] == "completed" || results["status"] == "failed" {
            break results;
        }
        assert!(Instant::now() < deadline, "the job did not end: {results}");
        std::thread::sleep(Duration::from_millis(200));
    };
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

    let _ = Command::new("kill").arg(child.0.id().to_string()).status();
    let _ = child.0.wait();
    // The server removed its containers on the way out (they carry its state folder's label).
    let canonical = std::fs::canonicalize(&state).unwrap();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(canonical.display().to_string().as_bytes());
    let instance: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let left = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.hkube.instance={instance}"),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty());
}
