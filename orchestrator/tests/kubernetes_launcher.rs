//! The Kubernetes launcher against testkit's double of the API server (no cluster can run on
//! hkube's build machines): the requests it makes (orphans deleted by label at start, one pod
//! per worker with its manifest, the pod deleted when its worker fails or stops), the
//! inventory its reflectors keep, and Kubernetes' reasons in a failed start (Unschedulable;
//! with the double's kubelet on Docker, an image that cannot be pulled).
//!
//! The kubelet test needs dockerd: without it the test says so and returns, unless
//! HKUBE_REQUIRE_DOCKER=1, where its absence fails it.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use orchestrator::executor::algorithm::WorkerAlgorithm;
use orchestrator::executor::docker::container_algorithm;
use orchestrator::executor::kubernetes::{self, KubeOptions, PodTemplate, StorageVolume};
use orchestrator::executor::launcher::{Launch, Launcher};
use orchestrator::executor::limits::Limits;
use orchestrator::scheduler::{Gpu, Node, Placement};
use orchestrator::spec::parse_algorithm;
use serde_json::{json, Value};
use testkit::kube_double::{KubeDouble, KubeletMode, Options};
use wrapper::sidecar::SidecarOptions;

const INSTANCE: &str = "testinstance";
const SELECTOR: &str = "app.kubernetes.io/managed-by=hkube,hkube.io/instance=testinstance";

async fn client_of(double: &KubeDouble) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(double.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn options(pending_timeout: Duration) -> KubeOptions {
    let storage = std::env::temp_dir().join("hkube-kubernetes-launcher-test");
    KubeOptions {
        namespace: None,
        template: PodTemplate {
            instance: INSTANCE.into(),
            cluster: "local".into(),
            // Nobody dials it in these tests: the pods never get that far.
            link_url: "ws://127.0.0.1:9/link".into(),
            storage_env: Vec::new(),
            storage_dir: storage.display().to_string(),
            storage_volume: StorageVolume::Empty,
            stop_grace_seconds: 1,
            memory_ratio: 2,
            image_pull_secrets: Vec::new(),
        },
        link_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        pending_timeout,
        log_limit: 4096,
    }
}

fn algorithm(descriptor: Value) -> WorkerAlgorithm {
    container_algorithm(&parse_algorithm(descriptor).unwrap()).unwrap()
}

fn launch(algorithm: WorkerAlgorithm) -> Launch {
    Launch {
        worker: 1,
        algorithm,
        grant: Placement::default(),
        node: Some("double-node".into()),
        limits: Limits::default(),
        sidecar: SidecarOptions {
            connect_timeout: Duration::from_secs(20),
            ..SidecarOptions::default()
        },
    }
}

fn pod(name: &str, labels: Value, cpu: &str, memory: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "img",
            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}
    }))
    .unwrap()
}

/// Waits (on the watch, not by asking the double) until `check` holds for the inventory.
async fn inventory_becomes(nodes: &mut tokio::sync::watch::Receiver<Vec<Node>>, expected: &[Node]) {
    let waited = tokio::time::timeout(
        Duration::from_secs(10),
        nodes.wait_for(|nodes| nodes == expected),
    )
    .await
    .is_ok();
    assert!(
        waited,
        "the inventory is {:?}, expected {expected:?}",
        *nodes.borrow()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_inventory_manifest_and_an_unschedulable_pod() {
    let double = KubeDouble::start(Options::default()).unwrap();
    let client = client_of(&double).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    // A crashed run's worker, and someone else's pod that holds a core and 1 GiB.
    let leftover = pod(
        "leftover",
        json!({"app.kubernetes.io/managed-by": "hkube", "hkube.io/instance": INSTANCE}),
        "100m",
        "64Mi",
    );
    pods.create(&PostParams::default(), &leftover)
        .await
        .unwrap();
    let other = pod("other", json!({"app": "db"}), "1", "1Gi");
    pods.create(&PostParams::default(), &other).await.unwrap();

    let cluster = kubernetes::connect_with(client.clone(), options(Duration::from_secs(1)))
        .await
        .unwrap();
    let deletes = double.requests_matching("DELETE", "/api/v1/namespaces/hkube/pods");
    assert_eq!(
        deletes.first().and_then(|d| d.param("labelSelector")),
        Some(SELECTOR),
        "orphans are deleted by this instance's label: {deletes:?}"
    );
    let names: Vec<String> = double
        .pods()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["other".to_string()], "the leftover is gone");

    // The double's node (4 cores, 8 GiB, a GPU) minus the other pod's request.
    let mut nodes = cluster.nodes.clone();
    let node = |cpu_millis, mem_mib| Node {
        name: "double-node".into(),
        cpu_millis,
        mem_mib,
        gpus: vec![Gpu {
            index: 0,
            mem_mib: 0,
        }],
    };
    inventory_becomes(&mut nodes, &[node(3000, 7168)]).await;

    // Two GPUs on a one-GPU node: Kubernetes' scheduler says so, and the start fails with
    // its words once the pending timeout passed.
    let greedy = algorithm(json!({"name": "greedy", "algorithmImage": "img:1",
        "cpu": 0.5, "mem": "512Mi", "gpu": 2}));
    let started = tokio::time::timeout(
        Duration::from_secs(20),
        cluster.launcher.launch(launch(greedy)),
    )
    .await
    .expect("the launch gives up after the pending timeout");
    let error = started.err().unwrap().to_string();
    assert!(
        error.contains("was not placed by Kubernetes within 1 s (Unschedulable: "),
        "{error}"
    );

    // What was asked: one pod of two containers, the algorithm's resources, owner labels.
    let created: Vec<Value> = double
        .created_pods()
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["hkube.io/algorithm"] == "greedy")
        .collect();
    assert_eq!(created.len(), 1, "one pod per worker");
    let spec = &created[0]["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(
        spec["containers"][0]["command"],
        json!(["/hkube/hkube-wrapper"])
    );
    assert_eq!(
        spec["containers"][1]["resources"]["limits"],
        json!({"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "2"})
    );
    assert_eq!(created[0]["metadata"]["labels"]["hkube.io/worker"], "1");
    // The failed worker's pod is deleted, and the server's own pods never count in the
    // inventory (the pool counts them).
    assert_eq!(double.pods().len(), 1, "{:?}", double.pods());
    inventory_becomes(&mut nodes, &[node(3000, 7168)]).await;

    // A pod of ours left at shutdown is deleted, and the call returns once the watch saw it go.
    let late = pod(
        "late",
        json!({"app.kubernetes.io/managed-by": "hkube", "hkube.io/instance": INSTANCE}),
        "100m",
        "64Mi",
    );
    pods.create(&PostParams::default(), &late).await.unwrap();
    cluster.launcher.remove_leftovers().await.unwrap();
    let left: Vec<Value> = double
        .pods()
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["hkube.io/instance"] == INSTANCE)
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Every call made is one docs/kubernetes.md lists for RBAC (resource, scope, verb).
    let allowed = [
        ("pods", "namespace", "create"),
        ("pods", "namespace", "delete"),
        ("pods", "namespace", "deletecollection"),
        ("pods", "namespace", "list"),
        ("pods", "namespace", "watch"),
        ("pods/log", "namespace", "get"),
        ("pods", "cluster", "list"),
        ("pods", "cluster", "watch"),
        ("nodes", "cluster", "list"),
        ("nodes", "cluster", "watch"),
    ];
    let ours = |r: &testkit::kube_double::Recorded| {
        // The test's own calls: its pods' creation by name.
        !(r.method == "POST"
            && r.body.as_ref().is_some_and(|b| {
                ["leftover", "other", "late"]
                    .contains(&b["metadata"]["name"].as_str().unwrap_or(""))
            }))
    };
    for request in double.requests().iter().filter(|r| ours(r)) {
        let path = request.path.trim_start_matches("/api/v1/");
        let (scope, rest) = match path.strip_prefix("namespaces/hkube/") {
            Some(rest) => ("namespace", rest),
            None => ("cluster", path),
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let resource = match parts.as_slice() {
            [kind, _, sub] => format!("{kind}/{sub}"),
            [kind, ..] => kind.to_string(),
            [] => String::new(),
        };
        let verb = match (request.method.as_str(), parts.len()) {
            ("GET", 1) if request.param("watch") == Some("true") => "watch",
            ("GET", 1) => "list",
            ("GET", _) => "get",
            ("POST", _) => "create",
            ("DELETE", 1) => "deletecollection",
            ("DELETE", _) => "delete",
            _ => "other",
        };
        assert!(
            allowed.contains(&(resource.as_str(), scope, verb)),
            "{resource} {scope} {verb} is not in docs/kubernetes.md's RBAC table: {request:?}"
        );
    }
}

async fn docker_or_skip() -> bool {
    let ready = async {
        let docker = bollard::Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
        docker
            .ping()
            .await
            .map_err(|e| format!("no Docker engine answers: {e}"))?;
        Ok::<(), String>(())
    };
    match ready.await {
        Ok(()) => true,
        Err(reason) => {
            testkit::skip(Some("HKUBE_REQUIRE_DOCKER"), &reason);
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_fails_the_start_with_kubernetes_reason() {
    if !docker_or_skip().await {
        return;
    }
    let double = KubeDouble::start(Options {
        kubelet: KubeletMode::Docker,
        ..Options::default()
    })
    .unwrap();
    let client = client_of(&double).await;
    let cluster = kubernetes::connect_with(client, options(Duration::from_secs(60)))
        .await
        .unwrap();
    let missing = algorithm(json!({"name": "missing", "cpu": 0.1, "mem": "64Mi",
        "algorithmImage": "hkube-test/no-such-image:never"}));
    let started = tokio::time::timeout(
        Duration::from_secs(30),
        cluster.launcher.launch(launch(missing)),
    )
    .await
    .expect("a pull failure ends the start at once");
    let error = started.err().unwrap().to_string();
    assert!(
        error.contains("could not run on Kubernetes: container")
            && (error.contains("ErrImagePull") || error.contains("ImagePullBackOff")),
        "{error}"
    );
    assert!(error.contains("hkube-test/no-such-image:never"), "{error}");
    // Its pod is deleted.
    let ours = |pods: Vec<Value>| {
        pods.into_iter()
            .filter(|p| p["metadata"]["labels"]["hkube.io/instance"] == INSTANCE)
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ours(double.pods()) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ours(double.pods()), 0);
}

/// The pool on a cluster: a request no node holds waits for one (its reason shown), fails
/// after the pending timeout, and starts a pod on a node that joins meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_no_node_holds_waits_for_one_then_fails() {
    use orchestrator::engine::{Engine, MemoryCatalog};
    use orchestrator::executor::local::{LocalExecutor, LocalOptions};
    use orchestrator::executor::pool::ClusterFeed;
    use std::sync::Arc;

    let double = KubeDouble::start(Options::default()).unwrap();
    let client = client_of(&double).await;
    let cluster = kubernetes::connect_with(client, options(Duration::from_secs(2)))
        .await
        .unwrap();
    // The pool's nodes come from this channel here (the cluster's reflectors feed it in the
    // server), so a node can join.
    let one_gpu = Node {
        name: "small".into(),
        cpu_millis: 4000,
        mem_mib: 8192,
        gpus: vec![Gpu {
            index: 0,
            mem_mib: 0,
        }],
    };
    let (nodes, feed) = tokio::sync::watch::channel(vec![one_gpu.clone()]);
    let executor = LocalExecutor::start(LocalOptions {
        kubernetes: Some(cluster.launcher.clone()),
        nodes: Some(ClusterFeed {
            nodes: feed,
            pending_timeout: Duration::from_millis(1500),
        }),
        work_dir: std::env::temp_dir().join(format!("hkube-k8s-test-{}", std::process::id())),
        ..LocalOptions::default()
    });
    let catalog = Arc::new(MemoryCatalog::new());
    let descriptor = parse_algorithm(json!({"name": "two-gpus", "algorithmImage": "img:1",
        "cpu": 0.5, "mem": "256Mi", "gpu": 2}))
    .unwrap();
    executor
        .pool()
        .register(container_algorithm(&descriptor).unwrap());
    catalog.put_algorithm(descriptor);
    let handle = Engine::spawn(Arc::new(executor.clone()), catalog);
    let pipeline = json!({"name": "p", "nodes": [{"nodeName": "A", "algorithmName": "two-gpus", "input": [1]}]});

    // No node joins: the task fails after the pending timeout, saying what it waited for.
    let job = handle.exec_raw(pipeline.clone()).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), handle.wait(&job))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result["status"], "failed", "{result}");
    let error = result["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("gpu")
            && error.contains("no such node joined within 1 s (--pending-timeout)"),
        "{error}"
    );
    assert!(
        double.created_pods().is_empty(),
        "no pod for a request no node holds"
    );

    // A node with two GPUs joins while the next task waits: its worker's pod is created,
    // preferring that node.
    let job = handle.exec_raw(pipeline).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let big = Node {
        name: "big".into(),
        gpus: (0..2).map(|index| Gpu { index, mem_mib: 0 }).collect(),
        ..one_gpu.clone()
    };
    nodes.send(vec![one_gpu, big]).unwrap();
    let created = tokio::task::block_in_place(|| {
        double.wait_for_pods(Duration::from_secs(10), |pods| {
            (!pods.is_empty()).then(|| pods.to_vec())
        })
    });
    let created = created.expect("a pod once a node can hold the request");
    let preferred = &created[0]["spec"]["affinity"]["nodeAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"][0]["preference"]["matchFields"][0];
    assert_eq!(preferred["values"], json!(["big"]), "{:#}", created[0]);
    drop(job);
    executor.shutdown().await;
}

/// From a launch to its pod stored by the API double (the budget: 50 ms from a task
/// queued to its pod created). The figure is printed; the bound here is loose, for a loaded
/// debug build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_creates_its_pod_promptly() {
    let double = std::sync::Arc::new(KubeDouble::start(Options::default()).unwrap());
    let client = client_of(&double).await;
    let cluster = kubernetes::connect_with(client, options(Duration::from_secs(30)))
        .await
        .unwrap();
    let mut figures = Vec::new();
    for round in 0..5 {
        let name = format!("timed{round}");
        let watcher = double.clone();
        let label = name.clone();
        let created = std::thread::spawn(move || {
            watcher.wait_for_pods(Duration::from_secs(10), |pods| {
                pods.iter()
                    .any(|p| p["metadata"]["labels"]["hkube.io/algorithm"] == label.as_str())
                    .then(std::time::Instant::now)
            })
        });
        let started = std::time::Instant::now();
        let launcher = cluster.launcher.clone();
        let algorithm = algorithm(json!({"name": name, "algorithmImage": "img:1", "cpu": 0.1}));
        // The pod stays Pending (no kubelet): the launch waits on, and is dropped below.
        let launching = tokio::spawn(async move { launcher.launch(launch(algorithm)).await });
        let at = tokio::task::block_in_place(|| created.join().unwrap()).expect("a pod");
        figures.push(at.duration_since(started));
        launching.abort();
    }
    eprintln!("launch to pod created (debug build, API double): {figures:?}");
    figures.sort();
    let median = figures[figures.len() / 2];
    assert!(median < Duration::from_millis(250), "{figures:?}");
}
