//! The Kubernetes executor's workers: one bare pod per worker (`hkube server --executor
//! kubernetes`, docs/kubernetes.md "How workers run").
//!
//! - [`manifest`]: the pod (pure): the sidecar (`hkube-wrapper` from the algorithm's image)
//!   beside the algorithm, resources, the descriptor's Kubernetes fields, owner labels.
//! - [`status`]: what a pod's status means for its worker (pure): Kubernetes' reasons
//!   (`ErrImagePull`, `Unschedulable`, `OOMKilled`, evictions ...) become the worker's end.
//! - [`inventory`]: the nodes' allocatable resources minus what other pods request, kept
//!   current by reflectors, for the scheduler.
//! - [`PodLauncher`]: the pool's third [`Launcher`]: creates the pod, waits for its sidecar's
//!   link, and turns the pod's watched status into the worker's [`Supervised`] end; a stop
//!   deletes the pod.
//!
//! Why bare pods, not Jobs: the pool and the scheduler own retries, placement and how long a
//! worker lives. A Job controller would add its own retries and backoff (`backoffLimit`), and
//! replace a pod the pool stopped on purpose; a pod with `restartPolicy: Never` does exactly
//! what the pool asks, nothing more.
//!
//! Watching, never polling: one watcher on this server's pods (its instance label) feeds every
//! worker's supervisor through a channel per pod; nothing asks the API server for a pod's
//! state in a loop.

pub mod inventory;
pub mod manifest;
pub mod status;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

pub use manifest::{PodTemplate, StorageVolume};

use crate::executor::child::{Exit, ExternalControls, Log, Supervised};
use crate::executor::docker::LinkServer;
use crate::executor::launcher::{self, Launch, Launched, Launcher};
use crate::scheduler::Node;
use status::Verdict;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach Kubernetes (in-cluster config or KUBECONFIG): {0}")]
    Connect(String),
    #[error("cannot open the sidecars' link port on {address}: {source}")]
    Link {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("Kubernetes refused {what}: {reason}")]
    Api { what: String, reason: String },
    #[error("the cluster's nodes were not listed within {0} s: is the API server reachable, and may this server list and watch nodes and pods?")]
    Inventory(u64),
}

/// How the server runs its workers on Kubernetes.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Where the workers' pods go; `None`: the client's (the server's own namespace in a
    /// cluster, the kubeconfig context's otherwise).
    pub namespace: Option<String>,
    /// What every pod shares (its `link_url` is what the sidecars dial).
    pub template: PodTemplate,
    /// Where the link server listens (the pods reach it through `template.link_url`).
    pub link_listen: SocketAddr,
    /// A pod no node takes (Unschedulable) is given up after this long; so is a request no
    /// node of the inventory could hold (the pool's pending timeout).
    pub pending_timeout: Duration,
    /// Output bytes kept per worker, for crash reports.
    pub log_limit: usize,
}

/// A connected cluster: the launcher, and the inventory the pool schedules on.
#[derive(Debug)]
pub struct Cluster {
    pub launcher: PodLauncher,
    pub nodes: watch::Receiver<Vec<Node>>,
}

/// Connects with kube's defaults (in-cluster, else `KUBECONFIG` / `~/.kube/config`), deletes
/// this instance's leftover pods, starts the pod watch and the inventory, and returns once the
/// nodes were listed (at most 30 s).
pub async fn connect(options: KubeOptions) -> Result<Cluster, Error> {
    let client = Client::try_default()
        .await
        .map_err(|e| Error::Connect(e.to_string()))?;
    connect_with(client, options).await
}

/// [`connect`] with a client of the caller's.
pub async fn connect_with(client: Client, options: KubeOptions) -> Result<Cluster, Error> {
    let launcher = PodLauncher::start(client.clone(), options).await?;
    let (sender, nodes) = watch::channel(Vec::new());
    let (ready, listed) = oneshot::channel::<()>();
    tokio::spawn(inventory::watch_inventory(
        client,
        launcher.inner.template.instance.clone(),
        sender,
        ready,
    ));
    const LIST_WAIT: u64 = 30;
    match tokio::time::timeout(Duration::from_secs(LIST_WAIT), listed).await {
        Ok(Ok(())) => Ok(Cluster { launcher, nodes }),
        _ => Err(Error::Inventory(LIST_WAIT)),
    }
}

/// What the pod watch last said of one pod.
#[derive(Debug, Clone)]
enum Seen {
    NotYet,
    Pod(Arc<Pod>),
    Deleted,
}

/// Starts workers as pods; cheap to clone.
#[derive(Debug, Clone)]
pub struct PodLauncher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pods: Api<Pod>,
    namespace: String,
    link: LinkServer,
    template: PodTemplate,
    pending_timeout: Duration,
    log_limit: usize,
    /// The supervisor of each pod this server created, by pod name.
    seen: Mutex<HashMap<String, watch::Sender<Seen>>>,
    /// This server's pods, as the watch sees them.
    store: Store<Pod>,
    /// How many of them there are, after each event (`None` until first listed).
    left: watch::Sender<Option<usize>>,
}

impl PodLauncher {
    /// Opens the link port, deletes the pods a previous run of this instance left (a crash),
    /// and starts the watch on this instance's pods.
    pub async fn start(client: Client, options: KubeOptions) -> Result<PodLauncher, Error> {
        let namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        let address = options.link_listen;
        let link = LinkServer::bind(address)
            .await
            .map_err(|source| Error::Link { address, source })?;
        let (store, writer) = reflector::store::<Pod>();
        let inner = Arc::new(Inner {
            pods,
            namespace,
            link,
            template: options.template,
            pending_timeout: options.pending_timeout,
            log_limit: options.log_limit,
            seen: Mutex::new(HashMap::new()),
            store,
            left: watch::channel(None).0,
        });
        let launcher = PodLauncher { inner };
        launcher.delete_pods(0).await?;
        tokio::spawn(watch_pods(Arc::downgrade(&launcher.inner), writer));
        Ok(launcher)
    }

    /// The namespace the pods go to.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Deletes every pod of this instance (at shutdown, and at start: a crashed run's) and, at
    /// shutdown, waits until the watch sees none left (at most the grace and 30 s more).
    pub async fn remove_leftovers(&self) -> Result<(), Error> {
        let grace = self.inner.template.stop_grace_seconds.max(0) as u32;
        self.delete_pods(grace).await?;
        let wait = Duration::from_secs(u64::from(grace) + 30);
        let mut left = self.inner.left.subscribe();
        let _ = tokio::time::timeout(wait, left.wait_for(|left| *left == Some(0))).await;
        Ok(())
    }

    async fn delete_pods(&self, grace: u32) -> Result<(), Error> {
        let selector = manifest::instance_selector(&self.inner.template.instance);
        self.inner
            .pods
            .delete_collection(
                &DeleteParams::default().grace_period(grace),
                &ListParams::default().labels(&selector),
            )
            .await
            .map(drop)
            .map_err(|e| Error::Api {
                what: format!(
                    "deleting the pods labelled {selector} in namespace {}",
                    self.inner.namespace
                ),
                reason: api_text(&e),
            })
    }
}

impl Launcher for PodLauncher {
    fn runs(&self, algorithm: &crate::executor::algorithm::WorkerAlgorithm) -> bool {
        algorithm.container.is_some()
    }

    fn launch(&self, launch: Launch) -> BoxFuture<'static, Result<Launched, launcher::Error>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let token = worker_token();
            let algorithm = &launch.algorithm;
            let name = manifest::pod_name(&algorithm.name, &token);
            let pod = manifest::worker_pod(
                &inner.template,
                &manifest::WorkerPod {
                    name: &name,
                    worker: launch.worker,
                    token: &token,
                    algorithm,
                    node: launch.node.as_deref(),
                },
            )
            .map_err(|e| launcher::Error::Start(e.to_string()))?;
            // The algorithm container's own memory limit: what an OOM kill names.
            let memory_limit = algorithm.container.as_ref().and_then(|spec| {
                let ratio = inner.template.memory_ratio;
                (ratio > 0 && spec.pod.mem_mib > 0.0)
                    .then(|| (spec.pod.mem_mib * 1024.0 * 1024.0).ceil() as u64 * ratio)
            });
            let (seen_tx, seen_rx) = watch::channel(Seen::NotYet);
            if let Ok(mut seen) = inner.seen.lock() {
                seen.insert(name.clone(), seen_tx);
            }
            let linked = inner.link.expect(&token);
            if let Err(error) = inner.pods.create(&PostParams::default(), &pod).await {
                inner.link.forget(&token);
                inner.forget(&name);
                return Err(launcher::Error::Start(format!(
                    "Kubernetes refused pod {name} in namespace {}: {}",
                    inner.namespace,
                    api_text(&error)
                )));
            }
            let (supervised, controls) = Supervised::external(inner.log_limit);
            let exit = supervised.exit_watch();
            tokio::pin!(exit);
            tokio::spawn(supervise(
                inner.clone(),
                name.clone(),
                seen_rx,
                controls,
                memory_limit,
            ));
            // Pulling an image may take minutes; a pod waiting for a node is the supervisor's
            // to give up on (the pending timeout).
            let start_timeout = inner.pending_timeout + launch.sidecar.connect_timeout;
            tokio::select! {
                ends = linked => match ends {
                    Ok(ends) => Ok(Launched {
                        to_sidecar: ends.to_sidecar,
                        from_sidecar: ends.from_sidecar,
                        worker: supervised,
                    }),
                    Err(_) => Err(launcher::Error::Start("the sidecar's link was dropped".into())),
                },
                ended = &mut exit => {
                    inner.link.forget(&token);
                    Err(launcher::Error::Start(format!("pod {name} {ended}")))
                }
                () = tokio::time::sleep(start_timeout) => {
                    inner.link.forget(&token);
                    supervised.stop();
                    Err(launcher::Error::Start(format!(
                        "the sidecar of pod {name} did not connect to {} within {} s",
                        inner.template.link_url,
                        start_timeout.as_secs()
                    )))
                }
            }
        })
    }
}

impl Inner {
    fn forget(&self, name: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(name);
        }
    }

    /// Passes what the watch saw of `name` to its supervisor, if it has one.
    fn tell(&self, name: &str, what: Seen) {
        if let Ok(seen) = self.seen.lock() {
            if let Some(sender) = seen.get(name) {
                let _ = sender.send(what);
            }
        }
    }
}

/// The one watch on this instance's pods: each event goes to its pod's supervisor, and into
/// the store (what is left at shutdown). A relist that misses a pod seen before means it was
/// deleted meanwhile.
async fn watch_pods(inner: std::sync::Weak<Inner>, writer: reflector::store::Writer<Pod>) {
    let (pods, selector) = match inner.upgrade() {
        Some(inner) => (
            inner.pods.clone(),
            manifest::instance_selector(&inner.template.instance),
        ),
        None => return,
    };
    let mut events = std::pin::pin!(watcher(pods, watcher::Config::default().labels(&selector))
        .default_backoff()
        .reflect(writer));
    // The names a relist sent (a set: a thousand workers relist in one pass).
    let mut listed: std::collections::HashSet<String> = std::collections::HashSet::new();
    while let Some(event) = events.next().await {
        let Some(inner) = inner.upgrade() else { return };
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!("watching the worker pods: {error}");
                continue;
            }
        };
        if !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_)) {
            inner.left.send_replace(Some(inner.store.len()));
        }
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let name = pod.metadata.name.clone().unwrap_or_default();
                listed.insert(name.clone());
                inner.tell(&name, Seen::Pod(Arc::new(pod)));
            }
            watcher::Event::Delete(pod) => {
                inner.tell(
                    &pod.metadata.name.clone().unwrap_or_default(),
                    Seen::Deleted,
                );
            }
            watcher::Event::Init => listed.clear(),
            watcher::Event::InitDone => {
                let Ok(seen) = inner.seen.lock() else {
                    continue;
                };
                for (name, sender) in seen.iter() {
                    let was_seen = matches!(*sender.borrow(), Seen::Pod(_));
                    if was_seen && !listed.contains(name) {
                        let _ = sender.send(Seen::Deleted);
                    }
                }
            }
        }
    }
}

/// Follows the pod's state until it ends or a stop is asked; deletes the pod (with the stop's
/// grace, or at once when it ended by itself); reports the end once the pod is gone.
async fn supervise(
    inner: Arc<Inner>,
    name: String,
    mut seen: watch::Receiver<Seen>,
    mut controls: ExternalControls,
    memory_limit: Option<u64>,
) {
    let mut unschedulable_since: Option<Instant> = None;
    let mut logs: Option<tokio::task::JoinHandle<()>> = None;
    let mut stopped = false;
    let exit = loop {
        let state = seen.borrow_and_update().clone();
        let mut deadline = None;
        match state {
            Seen::NotYet => {}
            Seen::Deleted => {
                break Exit::External {
                    reason: format!("lost its pod {name}: it was deleted outside hkube"),
                }
            }
            Seen::Pod(pod) => match status::verdict(&pod, memory_limit) {
                Verdict::Ended(exit) => break exit,
                Verdict::Unschedulable(message) => {
                    let since = *unschedulable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= inner.pending_timeout {
                        break Exit::External {
                            reason: format!(
                                "was not placed by Kubernetes within {} s ({message})",
                                inner.pending_timeout.as_secs()
                            ),
                        };
                    }
                    deadline = Some(since + inner.pending_timeout);
                }
                Verdict::Running => {
                    unschedulable_since = None;
                    if logs.is_none() {
                        logs = Some(tokio::spawn(follow_logs(
                            inner.pods.clone(),
                            name.clone(),
                            controls.log.clone(),
                        )));
                    }
                }
                Verdict::Starting => unschedulable_since = None,
            },
        }
        let wake = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = seen.changed() => if changed.is_err() {
                break Exit::External { reason: "lost its pod's watch".into() };
            },
            () = stop_requested(&mut controls.stop) => {
                stopped = true;
                break Exit::Stopped { killed: false };
            }
            () = wake => {}
        }
    };
    // Stopped: the algorithm has the pool's grace to end. Ended by itself: nothing is left to
    // save, and the pod's resources go back at once.
    let grace = if stopped {
        inner.template.stop_grace_seconds.max(0) as u32
    } else {
        0
    };
    let deleted = inner
        .pods
        .delete(&name, &DeleteParams::default().grace_period(grace))
        .await;
    if deleted.is_ok() || stopped {
        // Reported once the pod is gone (the pool then counts its room as free).
        let gone = async {
            while !matches!(*seen.borrow_and_update(), Seen::Deleted) {
                if seen.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(u64::from(grace) + 30), gone).await;
    }
    inner.forget(&name);
    if let Some(logs) = logs {
        // The log stream ends with the container; give it a moment to deliver the last lines.
        let _ = tokio::time::timeout(Duration::from_millis(500), logs).await;
    }
    let _ = controls.exit.send(Some(exit));
}

/// The algorithm container's output, line by line, into the worker's log (crash reports, and
/// the task's log through its sink).
async fn follow_logs(pods: Api<Pod>, name: String, log: Arc<Mutex<Log>>) {
    let params = LogParams {
        container: Some(manifest::ALGORITHM_CONTAINER.into()),
        follow: true,
        ..LogParams::default()
    };
    let Ok(stream) = pods.log_stream(&name, &params).await else {
        return;
    };
    let mut lines = std::pin::pin!(stream.lines());
    while let Some(Ok(line)) = lines.next().await {
        if let Ok(mut log) = log.lock() {
            log.push(line);
        }
    }
}

async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            // Nobody can ask any more: never resolves, the pod's own end decides.
            std::future::pending::<()>().await;
        }
    }
}

/// The API server's message without kube's wrapping.
fn api_text(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.reason),
        other => other.to_string(),
    }
}

/// 32 hex digits from the OS's randomness: the worker's name on the link and its credential.
fn worker_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..16)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}
