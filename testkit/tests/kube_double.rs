//! The Kubernetes API double against the client the Kubernetes launcher uses (kube-rs): its
//! create, get, list, watch (kube-runtime's watcher: list, then watch from the list's
//! version), delete and deletecollection, errors as `Status`, the scheduler's Unschedulable;
//! then its kubelet on the local Docker engine (a pod of two containers sharing a network
//! namespace, ImagePullBackOff, OOMKilled, deletion, the Drop guard).
//!
//! The kubelet tests need dockerd and the base image `hkube/python:bookworm`
//! (`scripts/base-images.sh`): without them they say so and return, unless
//! HKUBE_REQUIRE_DOCKER=1, where their absence fails them.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use serde_json::{json, Value};
use testkit::kube_double::{KubeDouble, KubeletMode, Options, CONTAINER_LABEL};

const IMAGE: &str = "hkube/python:bookworm";
const WAIT: Duration = Duration::from_secs(30);

async fn client_of(double: &KubeDouble) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(double.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "hkube");
    kube::Client::try_from(config).unwrap()
}

fn pod(name: &str, labels: Value, containers: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"restartPolicy": "Never", "containers": containers}
    }))
    .unwrap()
}

fn sleeper(name: &str) -> Pod {
    pod(
        name,
        json!({"app.kubernetes.io/managed-by": "hkube"}),
        json!([{"name": "main", "image": IMAGE, "command": ["sleep", "300"],
                "resources": {"requests": {"cpu": "100m"}}}]),
    )
}

async fn next_event(
    stream: &mut (impl futures_util::Stream<Item = Result<Event<Pod>, watcher::Error>> + Unpin),
) -> Event<Pod> {
    tokio::time::timeout(WAIT, stream.try_next())
        .await
        .expect("the watch sends the change promptly")
        .unwrap()
        .unwrap()
}

fn name_of(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_creates_lists_watches_and_deletes_through_the_double() {
    let double = KubeDouble::start(Options::default()).unwrap();
    let client = client_of(&double).await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let pods: Api<Pod> = Api::default_namespaced(client.clone());

    pods.create(&PostParams::default(), &sleeper("a"))
        .await
        .unwrap();
    let selector = "app.kubernetes.io/managed-by=hkube";
    let config = watcher::Config::default().labels(selector);
    let mut events = watcher::watcher(pods.clone(), config).boxed();
    // The watcher lists first: the pod that exists, then the end of the initial list.
    assert!(matches!(next_event(&mut events).await, Event::Init));
    match next_event(&mut events).await {
        Event::InitApply(pod) => assert_eq!(name_of(&pod), "a"),
        other => panic!("expected pod a from the list, got {other:?}"),
    }
    assert!(matches!(next_event(&mut events).await, Event::InitDone));

    // Changes after the list arrive once, and only those the selector keeps.
    let mut unlabelled = sleeper("c");
    unlabelled.metadata.labels = None;
    pods.create(&PostParams::default(), &unlabelled)
        .await
        .unwrap();
    let made = pods
        .create(&PostParams::default(), &sleeper("b"))
        .await
        .unwrap();
    assert!(made.metadata.uid.is_some() && made.metadata.resource_version.is_some());
    let scheduled = loop {
        match next_event(&mut events).await {
            Event::Apply(pod) if name_of(&pod) == "b" => {
                if pod.spec.as_ref().unwrap().node_name.is_some() {
                    break pod;
                }
            }
            Event::Apply(pod) => panic!("the selector keeps b only, got {}", name_of(&pod)),
            other => panic!("expected b, got {other:?}"),
        }
    };
    assert_eq!(
        scheduled.spec.unwrap().node_name.as_deref(),
        Some("double-node")
    );
    let status = scheduled.status.unwrap();
    assert_eq!(
        status.phase.as_deref(),
        Some("Pending"),
        "no kubelet: the pod stays Pending"
    );

    // Errors are Kubernetes' Status objects.
    let again = pods
        .create(&PostParams::default(), &sleeper("b"))
        .await
        .unwrap_err();
    match again {
        kube::Error::Api(status) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (409, "AlreadyExists")
            );
            assert_eq!(status.message, "pods \"b\" already exists");
        }
        other => panic!("expected AlreadyExists, got {other}"),
    }
    match pods.get("missing").await.unwrap_err() {
        kube::Error::Api(status) => {
            assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"))
        }
        other => panic!("expected NotFound, got {other}"),
    }

    let listed = pods
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap();
    let mut names: Vec<&str> = listed.items.iter().map(name_of).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "b"]);

    pods.delete("b", &DeleteParams::default()).await.unwrap();
    match next_event(&mut events).await {
        Event::Delete(pod) => assert_eq!(name_of(&pod), "b"),
        other => panic!("expected b's deletion, got {other:?}"),
    }
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(selector),
    )
    .await
    .unwrap();
    match next_event(&mut events).await {
        Event::Delete(pod) => assert_eq!(name_of(&pod), "a"),
        other => panic!("expected a's deletion, got {other:?}"),
    }
    let left: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| name_of(p).to_string())
        .collect();
    assert_eq!(
        left,
        ["c"],
        "deletecollection keeps what its selector does not name"
    );

    // The fake inventory, and a pod no node fits.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let allocatable = node.status.unwrap().allocatable.unwrap();
    assert_eq!(allocatable["nvidia.com/gpu"].0, "1");
    assert_eq!(allocatable["cpu"].0, "4");
    let big = pod(
        "big",
        json!({}),
        json!([{"name": "main", "image": IMAGE, "resources": {"requests": {"cpu": "8"}, "limits": {"nvidia.com/gpu": "2"}}}]),
    );
    pods.create(&PostParams::default(), &big).await.unwrap();
    let condition = pods
        .get("big")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap()
        .remove(0);
    assert_eq!(
        (
            condition.type_.as_str(),
            condition.status.as_str(),
            condition.reason.as_deref()
        ),
        ("PodScheduled", "False", Some("Unschedulable"))
    );
    assert_eq!(
        condition.message.as_deref(),
        Some("0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient nvidia.com/gpu.")
    );

    // Every request was recorded, bodies included.
    let created = double.created_pods();
    assert_eq!(created.len(), 5, "a, c, b, b again, big");
    assert_eq!(created[2]["metadata"]["name"], "b");
    let watches: Vec<_> = double
        .requests()
        .into_iter()
        .filter(|r| r.param("watch") == Some("true"))
        .collect();
    assert!(!watches.is_empty(), "the watcher watched");
    assert_eq!(watches[0].param("labelSelector"), Some(selector));
}

/// True when the Docker tests should run; panics when Docker is required but absent.
async fn docker_or_skip() -> bool {
    let ready = async {
        let docker = bollard::Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
        docker
            .ping()
            .await
            .map_err(|e| format!("no Docker engine answers: {e}"))?;
        docker.inspect_image(IMAGE).await.map_err(|_| {
            format!("the base image {IMAGE} is missing (make it with scripts/base-images.sh)")
        })?;
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

fn kubelet_options() -> Options {
    Options {
        kubelet: KubeletMode::Docker,
        ..Options::default()
    }
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

fn container_state<'a>(pod: &'a Value, container: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|s| s.iter().find(|c| c["name"] == container))
        .map_or(&Value::Null, |c| &c["state"])
}

fn find<'a>(pods: &'a [Value], name: &str) -> Option<&'a Value> {
    pods.iter().find(|p| p["metadata"]["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_runs_a_pods_containers_in_one_network_namespace() {
    if !docker_or_skip().await {
        return;
    }
    let double = KubeDouble::start(kubelet_options()).unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client_of(&double).await);
    // The first container serves on 127.0.0.1:8080; the second reaches it there.
    let server = "import http.server, socketserver\n\
                  socketserver.TCPServer(('127.0.0.1', 8080), http.server.SimpleHTTPRequestHandler).serve_forever()";
    let client = "import time, urllib.request, os\n\
                  for _ in range(100):\n    \
                      try:\n        urllib.request.urlopen('http://127.0.0.1:8080/'); print('reached', os.environ['POD'], os.environ['IP']); break\n    \
                      except OSError: time.sleep(0.1)\n\
                  else: raise SystemExit(3)";
    let pair = pod(
        "pair",
        json!({"app": "pair"}),
        json!([
            {"name": "server", "image": IMAGE, "command": ["python3", "-c", server],
             "resources": {"limits": {"memory": "128Mi", "cpu": "1"}}},
            {"name": "client", "image": IMAGE, "command": ["python3", "-c", client],
             "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                     {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}
        ]),
    );
    pods.create(&PostParams::default(), &pair).await.unwrap();
    let done = double
        .wait_for_pods(WAIT, |pods| {
            let pod = find(pods, "pair")?;
            container_state(pod, "client")["terminated"]
                .is_object()
                .then(|| pod.clone())
        })
        .expect("the client container ends");
    let client_end = &container_state(&done, "client")["terminated"];
    assert_eq!(
        (
            client_end["exitCode"].as_i64(),
            client_end["reason"].as_str()
        ),
        (Some(0), Some("Completed")),
        "{done:#}"
    );
    assert!(
        container_state(&done, "server")["running"].is_object(),
        "{done:#}"
    );
    assert_eq!(phase(&done), "Running");
    assert!(
        done["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty()),
        "{done:#}"
    );
    // The kubelet serves the containers' output; fieldRef env was resolved.
    let params = LogParams {
        container: Some("client".into()),
        ..LogParams::default()
    };
    let ip = done["status"]["podIP"].as_str().unwrap();
    assert_eq!(
        pods.logs("pair", &params).await.unwrap(),
        format!("reached pair {ip}\n")
    );
    let no_container = pods.logs("pair", &LogParams::default()).await.unwrap_err();
    assert!(
        no_container
            .to_string()
            .contains("choose one of: [server client]"),
        "{no_container}"
    );
    // Two containers, labelled for the guard; the memory limit is the server's.
    let containers = double.containers();
    assert_eq!(containers.len(), 2);
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    let server_id = done["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("docker://");
    let inspected = docker
        .inspect_container(
            server_id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    assert_eq!(
        inspected.host_config.unwrap().memory,
        Some(128 * 1024 * 1024)
    );
    assert_eq!(
        inspected.config.unwrap().labels.unwrap()[CONTAINER_LABEL],
        double.id()
    );

    // A delete stops and removes the containers before the pod goes.
    pods.delete(
        "pair",
        &DeleteParams {
            grace_period_seconds: Some(1),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    let marked = pods.get("pair").await.unwrap();
    assert!(
        marked.metadata.deletion_timestamp.is_some(),
        "a running pod is marked first"
    );
    double
        .wait_for_pods(WAIT, |pods| find(pods, "pair").is_none().then_some(()))
        .expect("the pod goes");
    assert!(double.containers().is_empty(), "its containers went first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_not_in_the_engine_is_image_pull_back_off_and_oom_is_oom_killed() {
    if !docker_or_skip().await {
        return;
    }
    let double = KubeDouble::start(kubelet_options()).unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client_of(&double).await);
    let missing = "hkube/no-such-image:never";
    pods.create(
        &PostParams::default(),
        &pod(
            "pull",
            json!({}),
            json!([{"name": "main", "image": missing}]),
        ),
    )
    .await
    .unwrap();
    let hog = "x = bytearray(512 * 1024 * 1024)\nprint(len(x))";
    pods.create(
        &PostParams::default(),
        &pod(
            "hog",
            json!({}),
            json!([{"name": "main", "image": IMAGE, "command": ["python3", "-c", hog],
            "resources": {"limits": {"memory": "64Mi"}}}]),
        ),
    )
    .await
    .unwrap();
    let mut saw_err_image_pull = false;
    let waiting = double
        .wait_for_pods(WAIT, |pods| {
            let state = &container_state(find(pods, "pull")?, "main")["waiting"];
            saw_err_image_pull |= state["reason"] == "ErrImagePull";
            (state["reason"] == "ImagePullBackOff").then(|| state.clone())
        })
        .expect("the pull backs off");
    assert!(saw_err_image_pull, "ErrImagePull comes first");
    assert_eq!(
        waiting["message"],
        format!("Back-off pulling image \"{missing}\"")
    );
    let pulled = pods.get("pull").await.unwrap();
    assert_eq!(pulled.status.unwrap().phase.as_deref(), Some("Pending"));

    let hogged = double
        .wait_for_pods(WAIT, |pods| {
            let pod = find(pods, "hog")?;
            (phase(pod) == "Failed").then(|| pod.clone())
        })
        .expect("the hog fails");
    let end = &container_state(&hogged, "main")["terminated"];
    assert_eq!(end["reason"], "OOMKilled", "{hogged:#}");
    assert_eq!(end["exitCode"], 137);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_double_removes_its_containers() {
    if !docker_or_skip().await {
        return;
    }
    let double = KubeDouble::start(kubelet_options()).unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client_of(&double).await);
    pods.create(&PostParams::default(), &sleeper("left"))
        .await
        .unwrap();
    double
        .wait_for_pods(WAIT, |pods| {
            (phase(find(pods, "left")?) == "Running").then_some(())
        })
        .expect("the pod runs");
    let id = double.id().to_string();
    drop(double);
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{CONTAINER_LABEL}={id}")],
    )]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let left = docker.list_containers(Some(options)).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_leaving_a_watchs_selection_is_deleted_from_it() {
    let double = KubeDouble::start(Options::default()).unwrap();
    let client = client_of(&double).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &sleeper("done"))
        .await
        .unwrap();
    // As the launcher's inventory watches: the pods that still hold their node's resources.
    let live = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let mut events = watcher::watcher(Api::<Pod>::all(client), live).boxed();
    assert!(matches!(next_event(&mut events).await, Event::Init));
    assert!(matches!(next_event(&mut events).await, Event::InitApply(_)));
    assert!(matches!(next_event(&mut events).await, Event::InitDone));
    let finished = kube::api::Patch::Merge(json!({"status": {"phase": "Succeeded"}}));
    pods.patch_status("done", &kube::api::PatchParams::default(), &finished)
        .await
        .unwrap();
    match next_event(&mut events).await {
        Event::Delete(pod) => assert_eq!(name_of(&pod), "done"),
        other => panic!("a pod that left the selection is its deletion, got {other:?}"),
    }
    assert_eq!(phase(&double.pods()[0]), "Succeeded");
}
