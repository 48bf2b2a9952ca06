//! A double of the Kubernetes API server, for tests: **no cluster can run on hkube's build
//! machines**, so the Kubernetes launcher is tested against this instead.
//!
//! It serves what kube-rs needs (`/version`, discovery, core/v1 pods, nodes, services,
//! configmaps, secrets, events: create, get, list with selectors and paging, watch from a
//! resourceVersion with bookmarks, replace, merge/JSON patch, delete, deletecollection),
//! answers errors with Kubernetes' `Status` objects, records every request so a test can
//! assert the manifests it was sent, and schedules pods on a fake node inventory. With
//! [`KubeletMode::Docker`] it also plays the kubelet: each scheduled pod's containers run on
//! the local Docker engine (see [`kubelet`]).
//!
//! ```no_run
//! use testkit::kube_double::{KubeDouble, Options};
//! let double = KubeDouble::start(Options::default()).unwrap();
//! // KUBECONFIG=double.kubeconfig() for the code under test; then:
//! let created = double.requests_matching("POST", "/api/v1/namespaces/hkube/pods");
//! ```
//!
//! It runs on its own thread and runtime, so sync and async tests use it alike; dropping it
//! stops the server and removes every container its kubelet started.

mod api;
pub mod kubelet;
mod quantity;
mod schedule;
mod selector;
mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

pub use kubelet::KubeletMode;
pub use schedule::FakeNode;
use store::{Key, Refused, Store};

/// The label every container the double's kubelet starts carries; its value is the double's
/// id ([`KubeDouble::id`]).
pub const CONTAINER_LABEL: &str = "io.hkube.kube-double";

/// How a double starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// The namespace the kubeconfig names (the launcher's default namespace).
    pub namespace: String,
    /// The fake node inventory.
    pub nodes: Vec<FakeNode>,
    /// Whether pods run (on Docker) or only sit in the store, Pending.
    pub kubelet: KubeletMode,
    /// How long a pod shows `ErrImagePull` before `ImagePullBackOff`.
    pub image_pull_backoff: Duration,
}

impl Default for Options {
    /// One node `double-node`, 4 cores, 8 GiB, one `nvidia.com/gpu`; namespace `hkube`;
    /// no kubelet.
    fn default() -> Options {
        Options {
            namespace: "hkube".to_string(),
            nodes: vec![FakeNode::new("double-node", "4", "8Gi").with_gpu(1)],
            kubelet: KubeletMode::Off,
            image_pull_backoff: Duration::from_millis(500),
        }
    }
}

/// One request the double received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The query's pairs, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The body as JSON (a string when it was not JSON); `None` when empty.
    pub body: Option<Value>,
}

impl Recorded {
    /// A query parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes double cannot listen on 127.0.0.1: {0}")]
    Listen(std::io::Error),
    #[error("the Kubernetes double cannot start its runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the Kubernetes double's kubelet cannot reach Docker: {0}")]
    Docker(String),
    #[error("the Kubernetes double cannot write its kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the server, the scheduler and the kubelet share.
pub(crate) struct Cluster {
    store: Store,
    nodes: Vec<FakeNode>,
    requests: Mutex<Vec<Recorded>>,
    kubelet: Option<kubelet::Kubelet>,
    /// One pod is placed at a time, so two never take the same room.
    scheduling: Mutex<()>,
    address: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    fn record(&self, request: Recorded) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request);
    }

    /// Stores a new object; a pod gets its defaults and is scheduled (and run).
    fn create(
        self: &Arc<Self>,
        resource: &str,
        namespace: &str,
        object: Value,
    ) -> Result<Value, (Refused, String)> {
        if resource != "pods" {
            return self.store.create(resource, namespace, object, |_| {});
        }
        let created = self.store.create(resource, namespace, object, |pod| {
            let spec = &mut pod["spec"];
            if spec["restartPolicy"].is_null() {
                spec["restartPolicy"] = json!("Always");
            }
            if spec["terminationGracePeriodSeconds"].is_null() {
                spec["terminationGracePeriodSeconds"] = json!(30);
            }
            pod["status"] = json!({"phase": "Pending", "qosClass": "Burstable"});
        })?;
        let key = Key {
            resource: "pods".into(),
            namespace: namespace.to_string(),
            name: created["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        };
        self.schedule(&key);
        Ok(self.store.get(&key).unwrap_or(created))
    }

    /// Places a pending pod on a node (PodScheduled=True, then the kubelet runs it), or
    /// marks it unschedulable with the scheduler's reason.
    fn schedule(self: &Arc<Self>, key: &Key) {
        let _one_at_a_time = self.scheduling.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pod) = self.store.get(key) else {
            return;
        };
        if pod["spec"]["nodeName"].is_string() || pod["metadata"]["deletionTimestamp"].is_string() {
            return;
        }
        let (pods, _) = self.store.list("pods", None);
        let placed: Vec<Value> = pods.into_iter().filter(schedule::holds_resources).collect();
        let now = store::timestamp();
        match schedule::place(&pod, &self.nodes, &placed) {
            Ok(node) => {
                self.store.update(key, |pod| {
                    pod["spec"]["nodeName"] = json!(node);
                    pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True",
                        "lastProbeTime": null, "lastTransitionTime": now}]);
                    pod["status"]["hostIP"] = json!("127.0.0.1");
                    true
                });
                if let Some(kubelet) = &self.kubelet {
                    kubelet.run(self.clone(), key.clone());
                }
            }
            Err(message) => {
                self.store.update(key, |pod| {
                    let condition = json!([{"type": "PodScheduled", "status": "False",
                        "reason": "Unschedulable", "message": message,
                        "lastProbeTime": null, "lastTransitionTime": now}]);
                    if pod["status"]["conditions"] == condition {
                        return false;
                    }
                    pod["status"]["conditions"] = condition;
                    true
                });
            }
        }
    }

    /// Room was freed: the unschedulable pods try again, oldest first.
    fn schedule_pending(self: &Arc<Self>) {
        let (pods, _) = self.store.list("pods", None);
        for pod in pods.iter().filter(|p| p["spec"]["nodeName"].is_null()) {
            let key = Key {
                resource: "pods".into(),
                namespace: pod["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                name: pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
            };
            self.schedule(&key);
        }
    }

    /// Deletes an object. A pod the kubelet runs is marked (deletionTimestamp) and goes
    /// once its containers are gone; any other goes at once.
    fn delete(self: &Arc<Self>, key: &Key, grace: Option<i64>) -> Option<Value> {
        if key.resource == "pods" {
            if let Some(kubelet) = &self.kubelet {
                if let Some(marked) = kubelet.terminate(self, key, grace) {
                    return Some(marked);
                }
            }
        }
        let removed = self.store.remove(key);
        if key.resource == "pods" && removed.is_some() {
            self.schedule_pending();
        }
        removed
    }
}

/// A running double; dropping it stops the server and removes its containers.
#[derive(Debug)]
pub struct KubeDouble {
    cluster: Arc<Cluster>,
    url: String,
    id: String,
    namespace: String,
    kubeconfig: PathBuf,
    runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeDouble {
    /// Starts the server on 127.0.0.1 (a free port) and writes its kubeconfig. The server
    /// runs on a thread of its own (so a test's own runtime, if any, is never blocked on).
    pub fn start(options: Options) -> Result<KubeDouble, Error> {
        let id = store::uid()[..13].replace('-', "");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel();
        let thread = {
            let (id, options) = (id.clone(), options.clone());
            std::thread::Builder::new()
                .name("kube-double".into())
                .spawn(move || serve(id, options, ready, stopped))
                .map_err(Error::Runtime)?
        };
        let (cluster, runtime) = match started.recv() {
            Ok(Ok(started)) => started,
            Ok(Err(error)) => {
                let _ = thread.join();
                return Err(error);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::Runtime(std::io::Error::other(
                    "the server's thread ended",
                )));
            }
        };
        let url = format!("http://{}", cluster.address);
        let kubeconfig = std::env::temp_dir().join(format!("kube-double-{id}.yaml"));
        let double = KubeDouble {
            cluster,
            url,
            id,
            namespace: options.namespace,
            kubeconfig,
            runtime,
            stop: Some(stop),
            thread: Some(thread),
        };
        double.write_kubeconfig(&double.kubeconfig)?;
        Ok(double)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This double's id: the value of [`CONTAINER_LABEL`] on its containers.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The kubeconfig file the double wrote (server, no auth, its namespace): the value for
    /// `KUBECONFIG`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Writes the same kubeconfig elsewhere.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, kubeconfig_text(&self.url, &self.namespace)).map_err(|source| {
            Error::Kubeconfig {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.cluster
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The requests with this method on this path (e.g. `"POST"`,
    /// `"/api/v1/namespaces/hkube/pods"`: the pods created there).
    pub fn requests_matching(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    /// The bodies of the pods created (POSTed) in any namespace, in order.
    pub fn created_pods(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.method == "POST"
                    && r.path.starts_with("/api/v1/namespaces/")
                    && r.path.ends_with("/pods")
            })
            .filter_map(|r| r.body)
            .collect()
    }

    /// The pods stored now (every namespace).
    pub fn pods(&self) -> Vec<Value> {
        self.cluster.store.list("pods", None).0
    }

    /// The objects of a resource stored now (`"pods"`, `"services"`, …; every namespace).
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        self.cluster.store.list(resource, None).0
    }

    /// Waits (without polling: woken by each change) until `check` finds what it looks for
    /// among the pods, or `timeout` passes.
    pub fn wait_for_pods<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[Value]) -> Option<T>,
    ) -> Option<T> {
        self.cluster.store.wait_for(timeout, |objects| {
            let pods: Vec<Value> = objects
                .iter()
                .filter(|(key, _)| key.resource == "pods")
                .map(|(_, pod)| pod.clone())
                .collect();
            check(&pods)
        })
    }

    /// This machine's address as the kubelet's containers reach it (the default bridge's
    /// gateway): where a server under test listens for its pods. `None` without a kubelet.
    pub fn host_address(&self) -> Option<std::net::IpAddr> {
        self.cluster.kubelet.as_ref().and_then(|k| k.host_address)
    }

    /// The ids of the Docker containers its kubelet started that still exist (running or
    /// not); empty without a kubelet.
    pub fn containers(&self) -> Vec<String> {
        let Some(kubelet) = &self.cluster.kubelet else {
            return Vec::new();
        };
        let kubelet = kubelet.clone();
        let (sender, receiver) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = sender.send(kubelet.containers().await);
        });
        receiver.recv().unwrap_or_default()
    }
}

impl Drop for KubeDouble {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

type Started = Result<(Arc<Cluster>, tokio::runtime::Handle), Error>;

/// The server's thread: its runtime, the listener, the kubelet; says it started (or why
/// not), serves until told to stop, then removes the kubelet's containers.
fn serve(
    id: String,
    options: Options,
    ready: std::sync::mpsc::Sender<Started>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kube-double")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(Error::Runtime(error)));
            return;
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(error) => {
                let _ = ready.send(Err(Error::Listen(error)));
                return;
            }
        };
        let address = match listener.local_addr() {
            Ok(address) => address,
            Err(error) => {
                let _ = ready.send(Err(Error::Listen(error)));
                return;
            }
        };
        let kubelet = match options.kubelet {
            KubeletMode::Off => None,
            KubeletMode::Docker => {
                match kubelet::Kubelet::connect(&id, options.image_pull_backoff).await {
                    Ok(kubelet) => Some(kubelet),
                    Err(error) => {
                        let _ = ready.send(Err(Error::Docker(error)));
                        return;
                    }
                }
            }
        };
        let cluster = Arc::new(Cluster {
            store: Store::default(),
            nodes: options.nodes.clone(),
            requests: Mutex::new(Vec::new()),
            kubelet,
            scheduling: Mutex::new(()),
            address: address.to_string(),
        });
        for node in &options.nodes {
            let _ = cluster.store.create("nodes", "", node.object(), |_| {});
        }
        let app = axum::Router::new()
            .fallback(api::handle)
            .with_state(cluster.clone());
        if ready
            .send(Ok((cluster.clone(), tokio::runtime::Handle::current())))
            .is_err()
        {
            return;
        }
        let closing = cluster.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.await;
            // Open watches end so the graceful shutdown does not wait on them.
            closing.store.close_watches();
        });
        let _ = server.await;
        if let Some(kubelet) = &cluster.kubelet {
            kubelet.remove_all().await;
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
}

/// A kubeconfig for `url`: one cluster, one context with `namespace`, a user without
/// credentials (the double checks none).
fn kubeconfig_text(url: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kube-double
  cluster:
    server: {url}
users:
- name: kube-double
  user: {{}}
contexts:
- name: kube-double
  context:
    cluster: kube-double
    user: kube-double
    namespace: {namespace}
current-context: kube-double
"
    )
}
