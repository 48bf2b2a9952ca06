//! `hkube server --executor kubernetes` end to end, against the Kubernetes API double of
//! `testkit::kube_double` (no cluster can run on hkube's build machines): the double serves
//! the API kube-rs speaks, records the manifests, and plays the kubelet on the local Docker
//! engine, so the launcher's own pods really run. Code applied through the API is built into
//! images (on the same engine), the numbers pipeline gives 30; the acceptance algorithm
//! (cpu 0.5, mem 512Mi, gpu 1) gets the pod HKube's rules give; an image nothing can pull
//! fails its task with Kubernetes' reason; a stopped server leaves no pod and no container.
//!
//! Needs dockerd and the base images of `scripts/base-images.sh`. Without them the test says
//! so and returns, unless HKUBE_REQUIRE_DOCKER=1 (CI sets it), where their absence fails it.

#![allow(clippy::unwrap_used)]

mod common;
use common::{copy_tree, hkube_at as hkube, Killed};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::kube_double::{KubeDouble, KubeletMode, Options};

/// True when the test should run; panics when Docker is required but absent.
fn docker_or_skip() -> bool {
    common::docker_or_skip(&["hkube/python:bookworm", "hkube/nodejs:bookworm"])
}

fn request(method: &str, endpoint: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut command = Command::new("curl");
    command.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
    if let Some(body) = body {
        command.args(["-H", "content-type: application/json", "--data-binary"]);
        command.arg(body.to_string());
    }
    let output = command
        .arg(format!("{endpoint}/api/v1/{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Runs one algorithm; the results document once the job ends, completed or failed.
fn run_algorithm(endpoint: &str, name: &str, input: Value) -> Value {
    let body = json!({"name": name, "input": input});
    let (status, started) = request("POST", endpoint, "exec/algorithm", Some(&body));
    assert_eq!(status, 200, "{started}");
    let job_id = started["jobId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, results) = request("GET", endpoint, &format!("exec/results/{job_id}"), None);
        if results["status"] == "completed" || results["status"] == "failed" {
            return results;
        }
        assert!(Instant::now() < deadline, "the job did not end: {results}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A copy of an example algorithm folder.
fn algorithm_folder(root: &Path, example: &str) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/numbers")
        .join(example);
    let to = root.join(example);
    copy_tree(&from, &to);
    to
}

/// A test folder, removed at the end (containers write root-owned files in its storage).
struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Kubernetes quantity in its base unit, for comparing `500m` with `0.5`.
fn quantity(value: &Value) -> f64 {
    let text = value.as_str().unwrap_or_default();
    let units = [
        ("m", 1e-3),
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
    ];
    for (suffix, factor) in units {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().unwrap() * factor;
        }
    }
    text.parse()
        .unwrap_or_else(|_| panic!("not a quantity: {value}"))
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {pod:#}"))
}

/// Runs `examples/numbers/<file>` through `hkube exec raw` and checks its result is 30
/// (`log`: the server's output so far, shown on failure).
fn numbers_gives_30(endpoint: &str, dir: &Path, file: &str, log: &dyn Fn() -> String) {
    let results = common::exec_numbers(endpoint, dir, file, log);
    assert_eq!(results["data"][0]["result"], 30, "{results}\n{}", log());
}

/// `hkube server --executor kubernetes` against `double` (ARGS added), its sidecars dialling
/// it where containers reach this machine.
fn server_on(double: &KubeDouble, state: &Path, args: &[&str]) -> common::Started {
    let host = double.host_address().expect("the bridge network's gateway");
    let port = std::net::TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let link = format!("{host}:{port}");
    let kubeconfig = double.kubeconfig().to_path_buf();
    let started = std::panic::catch_unwind(|| {
        common::start_server(|command| {
            command
                .args(["--executor", "kubernetes", "--namespace", "hkube"])
                .args(["--link-address", &link, "--link-listen", &link])
                .arg("--state-dir")
                .arg(state)
                .args(args)
                .env("KUBECONFIG", &kubeconfig);
        })
    });
    match started {
        Ok(server) => server,
        Err(_) => panic!(
            "the server did not start; the API double heard {:#?}",
            double.requests()
        ),
    }
}

#[test]
fn pipelines_run_in_pods_through_the_kubernetes_double() {
    if !docker_or_skip() {
        return;
    }
    let double = KubeDouble::start(Options {
        kubelet: KubeletMode::Docker,
        ..Options::default()
    })
    .unwrap();
    let root_dir = std::env::temp_dir().join(format!("hkube-k8s-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root_dir);
    std::fs::create_dir_all(&root_dir).unwrap();
    let root = Root(root_dir);
    let state = root.0.join("state");
    let server = server_on(&double, &state, &[]);
    let endpoint = format!("http://{}", server.address);
    let log = server.log.clone();
    let mut child = Killed(server.child);
    let show_log = || log.lock().unwrap().clone();

    // Code applied through the API builds into images on the local engine.
    let code = root.0.join("code");
    for name in ["range", "multiply", "reduce"] {
        let folder = algorithm_folder(&code, name);
        let (status, _, stderr) = hkube(
            &endpoint,
            &folder,
            &["algorithm", "apply", "-f", "algorithm.yml"],
        );
        assert_eq!(status, 0, "apply {name}: {stderr}\n{}", show_log());
    }

    // numbers: each worker a pod of two containers, run by the double's kubelet.
    numbers_gives_30(&endpoint, &root.0, "numbers.yml", &show_log);
    let created = double.created_pods();
    assert!(
        created.len() >= 3,
        "a pod per algorithm at least: {created:#?}"
    );
    for pod in &created {
        let names: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{pod:#}");
        assert_eq!(
            pod["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "hkube"
        );
    }

    // The acceptance algorithm: cpu 0.5, mem 512Mi, gpu 1 (the double's node has one GPU,
    // counted, not handed out), on range's image.
    let (_, range) = request("GET", &endpoint, "store/algorithms/range", None);
    let image = range["algorithmImage"].as_str().unwrap().to_string();
    let descriptor = json!({"name": "gpu-range", "algorithmImage": image, "cpu": 0.5,
                            "mem": "512Mi", "gpu": 1, "entryPoint": "main.py"});
    let (status, stored) = request("POST", &endpoint, "store/algorithms", Some(&descriptor));
    assert!(status < 300, "{status} {stored}");
    let results = run_algorithm(&endpoint, "gpu-range", json!([3]));
    assert_eq!(results["status"], "completed", "{results}\n{}", show_log());
    let pod = double
        .created_pods()
        .into_iter()
        .find(|p| p["metadata"]["labels"]["hkube.io/algorithm"] == "gpu-range")
        .expect("a pod for gpu-range");
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "{pod:#}");
    let sidecar = containers
        .iter()
        .find(|c| c["image"] == image.as_str() && c["command"] == json!(["/hkube/hkube-wrapper"]))
        .unwrap_or_else(|| panic!("a sidecar running hkube-wrapper from the image: {pod:#}"));
    let algorithm = containers
        .iter()
        .find(|c| c["name"] != sidecar["name"])
        .unwrap();
    assert_eq!(algorithm["image"], image.as_str());
    let resources = &algorithm["resources"];
    assert_eq!(quantity(&resources["requests"]["cpu"]), 0.5, "{resources}");
    assert_eq!(
        quantity(&resources["requests"]["memory"]),
        512.0 * 1048576.0,
        "{resources}"
    );
    assert_eq!(quantity(&resources["limits"]["cpu"]), 1.0, "{resources}");
    assert_eq!(
        quantity(&resources["limits"]["memory"]),
        1073741824.0,
        "{resources}"
    );
    assert_eq!(
        quantity(&resources["limits"]["nvidia.com/gpu"]),
        1.0,
        "{resources}"
    );
    assert_eq!(
        container(&pod, algorithm["name"].as_str().unwrap())["image"],
        image.as_str()
    );

    // An image nothing can pull: the task fails with Kubernetes' reason.
    let ghost = json!({"name": "ghost", "algorithmImage": "hkube/no-such-image:1", "entryPoint": "main.py"});
    let (status, stored) = request("POST", &endpoint, "store/algorithms", Some(&ghost));
    assert!(status < 300, "{status} {stored}");
    let results = run_algorithm(&endpoint, "ghost", json!([1]));
    assert_eq!(results["status"], "failed", "{results}");
    let said = results.to_string();
    assert!(
        said.contains("ErrImagePull") || said.contains("ImagePullBackOff"),
        "the failure names Kubernetes' reason: {said}"
    );

    // The server stops: its pods are deleted, and the kubelet removed their containers.
    let instance = pod["metadata"]["labels"]["hkube.io/instance"].clone();
    child.stop();
    let gone = double.wait_for_pods(Duration::from_secs(30), |pods| {
        (!pods
            .iter()
            .any(|p| p["metadata"]["labels"]["hkube.io/instance"] == instance))
        .then_some(())
    });
    assert!(
        gone.is_some(),
        "pods left after the server stopped: {:#?}\n{}",
        double.pods(),
        show_log()
    );
    assert_eq!(double.containers(), Vec::<String>::new(), "containers left");
}

/// Removes an algorithm's images when the test ends, also half-way.
struct RemovedImages(&'static str);

impl Drop for RemovedImages {
    fn drop(&mut self) {
        let label = format!("label=io.hkube.algorithm={}", self.0);
        let listed = Command::new("docker")
            .args(["images", "-q", "--filter", &label])
            .output();
        if let Ok(listed) = listed {
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

/// `env: wasm` on Kubernetes (docs/wasm.md): the wasm Multiply, applied with its module, is
/// built into its image (templates/wasm) and numbers-wasm gives 30 with Multiply's workers
/// pods of one container, `algorunner`, running the sidecar that runs the module
/// (`HKUBE_WASM`), run for real by the double's kubelet. A project folder's module
/// (`--algorithms`) is built into an image at the server's start and runs the same way.
#[test]
fn wasm_modules_run_in_one_container_pods_through_the_kubernetes_double() {
    let Some(module) = common::wasm_numbers_or_skip() else {
        return;
    };
    let _images = [
        RemovedImages("multiply-wasm"),
        RemovedImages("folder-multiply"),
    ];
    let double = KubeDouble::start(Options {
        kubelet: KubeletMode::Docker,
        ..Options::default()
    })
    .unwrap();
    let root = Root(common::scratch_dir("hkube-k8s-wasm-test"));
    let folder = root.0.join("project/folder-multiply");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(&module, folder.join("multiply.wasm")).unwrap();
    std::fs::write(
        folder.join("algorithm.yml"),
        "name: folder-multiply\nenv: wasm\nmem: 64Mi\ncpu: 0.5\ncode:\n  path: .\n  entryPoint: multiply.wasm\n",
    )
    .unwrap();
    let state = root.0.join("state");
    let project = root.0.join("project");
    let server = server_on(
        &double,
        &state,
        &["--algorithms", project.to_str().unwrap()],
    );
    let endpoint = format!("http://{}", server.address);
    let log = server.log.clone();
    let mut child = Killed(server.child);
    let show_log = || log.lock().unwrap().clone();

    let code = root.0.join("code");
    for name in ["range", "multiply-wasm", "reduce"] {
        let folder = algorithm_folder(&code, name);
        if name == "multiply-wasm" {
            std::fs::copy(&module, folder.join("multiply.wasm")).unwrap();
            // Its sources and cargo output are not the algorithm's code.
            for extra in ["src", "target", "Cargo.toml", "Cargo.lock", "build.sh"] {
                let path = folder.join(extra);
                let _ = std::fs::remove_dir_all(&path);
                let _ = std::fs::remove_file(&path);
            }
        }
        let (status, _, stderr) = hkube(
            &endpoint,
            &folder,
            &["algorithm", "apply", "-f", "algorithm.yml"],
        );
        assert_eq!(status, 0, "apply {name}: {stderr}\n{}", show_log());
    }
    let (_, stored) = request("GET", &endpoint, "store/algorithms/multiply-wasm", None);
    let image = stored["algorithmImage"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        image.starts_with("hkube/algorithms/multiply-wasm:"),
        "{stored}"
    );

    numbers_gives_30(&endpoint, &root.0, "numbers-wasm.yml", &show_log);
    let one_container_pod = |algorithm: &str, image: &str| {
        let pods: Vec<Value> = double
            .created_pods()
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["hkube.io/algorithm"] == algorithm)
            .collect();
        assert!(!pods.is_empty(), "no pod ran {algorithm}\n{}", show_log());
        for pod in &pods {
            let containers = pod["spec"]["containers"].as_array().unwrap();
            assert_eq!(containers.len(), 1, "one container: {pod:#}");
            let runner = container(pod, "algorunner");
            assert_eq!(runner["image"], image, "{pod:#}");
            assert_eq!(
                runner["command"],
                json!(["/hkube/hkube-wrapper"]),
                "{pod:#}"
            );
            let described = runner["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|var| var["name"] == "HKUBE_WASM")
                .and_then(|var| var["value"].as_str())
                .unwrap_or_else(|| panic!("no HKUBE_WASM in {pod:#}"));
            let described: Value = serde_json::from_str(described).unwrap();
            assert_eq!(described["module"], "/hkube/algorithm/multiply.wasm");
            assert_eq!(described["sandbox"]["mem"], "64Mi");
            let resources = &runner["resources"];
            assert_eq!(
                quantity(&resources["requests"]["memory"]),
                64.0 * 1048576.0,
                "{resources}"
            );
        }
    };
    one_container_pod("multiply-wasm", &image);

    // The folder's module: its image was built at the start, and a job runs in its pods.
    let (_, stored) = request("GET", &endpoint, "store/algorithms/folder-multiply", None);
    let folder_image = stored["algorithmImage"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        folder_image.starts_with("hkube/algorithms/folder-multiply:"),
        "{stored}"
    );
    let results = run_algorithm(&endpoint, "folder-multiply", json!([21, 2]));
    assert_eq!(results["status"], "completed", "{results}\n{}", show_log());
    assert_eq!(results["data"][0]["result"], 42, "{results}");
    one_container_pod("folder-multiply", &folder_image);

    child.stop();
    let gone = double.wait_for_pods(Duration::from_secs(30), |pods| {
        pods.is_empty().then_some(())
    });
    assert!(gone.is_some(), "pods left: {:#?}", double.pods());
}
