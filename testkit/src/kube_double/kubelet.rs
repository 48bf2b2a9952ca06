//! The double's kubelet: runs each scheduled pod's containers on the local Docker engine, as
//! the Docker executor runs its pairs, and writes the pod's status as a real kubelet does.
//!
//! - The pod's first container owns the network namespace (there is no pause container: no
//!   image can be pulled here); the others join it (`container:<first>`), so they reach each
//!   other on 127.0.0.1. The pod IP is the first container's bridge address.
//! - `hostPath` volumes are binds, `emptyDir` a scratch folder per pod; `limits.memory` is the
//!   container's memory limit (no swap beyond it), `limits.cpu` its CPU quota.
//!   `nvidia.com/gpu` counts against the fake node only: there is no GPU to hand out.
//! - An image the engine does not have is `ErrImagePull`, then `ImagePullBackOff` (nothing
//!   can be pulled here); an OOM kill is `OOMKilled`; exits follow `restartPolicy`
//!   (`CrashLoopBackOff` between restarts), then the phase is Succeeded or Failed.
//! - A delete stops the containers (SIGTERM, SIGKILL after the grace period), removes them,
//!   and only then removes the pod (the DELETED event).
//!
//! What it cannot honour (probes, lifecycle hooks, init containers, `envFrom`, security
//! contexts, volumes other than hostPath and emptyDir) is refused: the pod shows
//! `CreateContainerConfigError` saying so, never silently runs without it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::store::{timestamp, Key};
use super::{quantity, Cluster, CONTAINER_LABEL};

/// Whether the double runs pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeletMode {
    /// Pods are scheduled and stay Pending: the double records and serves only.
    Off,
    /// Pods run on the local Docker engine.
    Docker,
}

#[derive(Clone)]
pub(crate) struct Kubelet {
    docker: Docker,
    id: String,
    image_pull_backoff: Duration,
    /// The pods it runs, each with the channel its delete arrives on (the grace period).
    pods: Arc<Mutex<HashMap<Key, watch::Sender<Option<i64>>>>>,
    scratch: PathBuf,
    /// The default bridge's gateway: this machine as the containers reach it.
    pub host_address: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Kubelet {
    pub async fn connect(id: &str, image_pull_backoff: Duration) -> Result<Kubelet, String> {
        let docker = Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
        docker.ping().await.map_err(|e| e.to_string())?;
        let host_address = bridge_gateway(&docker).await;
        Ok(Kubelet {
            host_address,
            docker,
            id: id.to_string(),
            image_pull_backoff,
            pods: Arc::default(),
            scratch: std::env::temp_dir().join(format!("kube-double-{id}")),
        })
    }

    /// Starts running a scheduled pod.
    pub fn run(&self, cluster: Arc<Cluster>, key: Key) {
        let (sender, receiver) = watch::channel(None);
        self.pods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), sender);
        tokio::spawn(run_pod(self.clone(), cluster, key, receiver));
    }

    /// A delete of a pod it runs: marks the pod and tells its runner; `None` when it does
    /// not run that pod.
    pub fn terminate(&self, cluster: &Cluster, key: &Key, grace: Option<i64>) -> Option<Value> {
        let pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let sender = pods.get(key)?;
        let marked = cluster.store.update(key, |pod| {
            if pod["metadata"]["deletionTimestamp"].is_string() {
                return false;
            }
            let grace = grace
                .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            pod["metadata"]["deletionTimestamp"] = json!(timestamp());
            pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            true
        })?;
        let grace = marked["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30);
        let _ = sender.send(Some(grace));
        Some(marked)
    }

    /// A container's output (stdout and stderr, as the kubelet's log), followed or not.
    pub fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<String>,
    ) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> + Send + 'static
    {
        let mut options = bollard::query_parameters::LogsOptionsBuilder::new()
            .follow(follow)
            .stdout(true)
            .stderr(true);
        if let Some(tail) = &tail {
            options = options.tail(tail);
        }
        self.docker.logs(id, Some(options.build())).map(|chunk| {
            chunk
                .map(|output| output.into_bytes())
                .map_err(std::io::Error::other)
        })
    }

    /// The containers it started that still exist.
    pub async fn containers(&self) -> Vec<String> {
        let label = format!("{CONTAINER_LABEL}={}", self.id);
        let filters = HashMap::from([("label".to_string(), vec![label])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    }

    /// Removes every container it started, and its scratch folders (the double stops).
    pub async fn remove_all(&self) {
        for id in self.containers().await {
            remove(&self.docker, &id).await;
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    let _ = docker.remove_container(id, Some(options)).await;
}

/// Resolves when the pod is deleted, with its grace period.
async fn deleted(receiver: &mut watch::Receiver<Option<i64>>) -> i64 {
    loop {
        if let Some(grace) = *receiver.borrow_and_update() {
            return grace;
        }
        if receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A pod from scheduling to removal.
async fn run_pod(
    kubelet: Kubelet,
    cluster: Arc<Cluster>,
    key: Key,
    mut delete: watch::Receiver<Option<i64>>,
) {
    let started: Arc<Mutex<Vec<String>>> = Arc::default();
    let grace = tokio::select! {
        () = lifecycle(&kubelet, &cluster, &key, started.clone()) => deleted(&mut delete).await,
        grace = deleted(&mut delete) => grace,
    };
    let ids = started.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let stops = ids.iter().map(|id| {
        let docker = kubelet.docker.clone();
        async move {
            let t = i32::try_from(grace).unwrap_or(30);
            let options = StopContainerOptionsBuilder::new().t(t).build();
            let _ = docker.stop_container(id, Some(options)).await;
            remove(&docker, id).await;
        }
    });
    futures_util::future::join_all(stops).await;
    if let Some(pod) = cluster.store.get(&key) {
        if let Some(uid) = pod["metadata"]["uid"].as_str() {
            let _ = std::fs::remove_dir_all(kubelet.scratch.join(uid));
        }
    }
    kubelet
        .pods
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key);
    cluster.store.remove(&key);
    cluster.schedule_pending();
}

/// Writes one container's status (and lets `pod` change the rest of the status).
fn set_container(
    cluster: &Cluster,
    key: &Key,
    index: usize,
    change: impl FnOnce(&mut Value),
    pod_change: impl FnOnce(&mut Value),
) {
    cluster.store.update(key, |pod| {
        if let Some(status) = pod["status"]["containerStatuses"].get_mut(index) {
            change(status);
        }
        pod_change(&mut pod["status"]);
        true
    });
}

fn conditions(ready: bool, reason: Option<&str>) -> Value {
    let now = timestamp();
    let state = if ready { "True" } else { "False" };
    let mut ready_condition =
        json!({"type": "Ready", "status": state, "lastProbeTime": null, "lastTransitionTime": now});
    let mut containers_ready = json!({"type": "ContainersReady", "status": state, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(reason) = reason {
        ready_condition["reason"] = json!(reason);
        containers_ready["reason"] = json!(reason);
    }
    json!([
        {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
        ready_condition,
        containers_ready,
        {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}
    ])
}

fn waiting(reason: &str, message: &str) -> Value {
    json!({"waiting": {"reason": reason, "message": message}})
}

/// Every container waiting for the same reason; the pod stays Pending.
fn all_waiting(cluster: &Cluster, key: &Key, states: Vec<Value>) {
    cluster.store.update(key, |pod| {
        for (status, state) in pod["status"]["containerStatuses"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .zip(states)
        {
            status["state"] = state;
        }
        pod["status"]["conditions"] = conditions(false, Some("ContainersNotReady"));
        true
    });
}

async fn lifecycle(
    kubelet: &Kubelet,
    cluster: &Arc<Cluster>,
    key: &Key,
    started: Arc<Mutex<Vec<String>>>,
) {
    let Some(pod) = cluster.store.get(key) else {
        return;
    };
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false,
                   "restartCount": 0, "started": false,
                   "state": waiting("ContainerCreating", ""), "lastState": {}})
        })
        .collect();
    cluster.store.update(key, |pod| {
        pod["status"]["containerStatuses"] = json!(statuses);
        pod["status"]["conditions"] = conditions(false, Some("ContainersNotReady"));
        pod["status"]["startTime"] = json!(timestamp());
        true
    });

    if let Err(message) = refusals(&pod) {
        let states = containers
            .iter()
            .map(|_| waiting("CreateContainerConfigError", &message))
            .collect();
        all_waiting(cluster, key, states);
        return;
    }

    // Images: nothing can be pulled here, so an image the engine lacks is a pull failure.
    let mut missing = Vec::new();
    for container in &containers {
        let image = container["image"].as_str().unwrap_or("").to_string();
        if kubelet.docker.inspect_image(&image).await.is_err() {
            missing.push(image);
        }
    }
    if !missing.is_empty() {
        let pull_message = |image: &str| {
            format!(
                "Failed to pull image \"{image}\": rpc error: code = Unknown desc = Error response from daemon: pull access denied for {image}, repository does not exist or may require 'docker login'"
            )
        };
        let states = |backoff: bool| -> Vec<Value> {
            containers
                .iter()
                .map(|c| {
                    let image = c["image"].as_str().unwrap_or("");
                    if !missing.iter().any(|m| m == image) {
                        waiting("PodInitializing", "")
                    } else if backoff {
                        waiting(
                            "ImagePullBackOff",
                            &format!("Back-off pulling image \"{image}\""),
                        )
                    } else {
                        waiting("ErrImagePull", &pull_message(image))
                    }
                })
                .collect()
        };
        all_waiting(cluster, key, states(false));
        tokio::time::sleep(kubelet.image_pull_backoff).await;
        all_waiting(cluster, key, states(true));
        return;
    }

    // Every container's settings are checked before any starts. The first container's own
    // IP is the pod's, unknown until it starts: it cannot name status.podIP.
    for (index, container) in containers.iter().enumerate() {
        let ip = (index > 0).then_some("0.0.0.0");
        if let Err(message) = container_body(kubelet, cluster, &pod, container, ip) {
            let states = containers
                .iter()
                .map(|_| waiting("CreateContainerConfigError", &message))
                .collect();
            all_waiting(cluster, key, states);
            return;
        }
    }

    // Create and start, the first owning the network namespace.
    let pod_name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or("pod")
        .to_string();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let host_network = pod["spec"]["hostNetwork"].as_bool() == Some(true);
    let mut ids: Vec<String> = Vec::new();
    let mut pod_ip: Option<String> = None;
    for (index, container) in containers.iter().enumerate() {
        let name = container["name"].as_str().unwrap_or("c");
        let Ok(mut body) = container_body(kubelet, cluster, &pod, container, pod_ip.as_deref())
        else {
            return;
        };
        let host_config = body.host_config.get_or_insert_with(HostConfig::default);
        host_config.network_mode = Some(match ids.first() {
            _ if host_network => "host".to_string(),
            Some(first) => format!("container:{first}"),
            None => "bridge".to_string(),
        });
        if ids.is_empty() && !host_network {
            body.hostname = Some(pod_name.chars().take(63).collect());
        }
        let docker_name = format!("k8s_{name}_{pod_name}_{}_{uid}_0", key.namespace);
        let options = CreateContainerOptionsBuilder::new()
            .name(&docker_name)
            .build();
        let created = kubelet.docker.create_container(Some(options), body).await;
        let id = match created {
            Ok(created) => created.id,
            Err(error) => {
                let message = engine_text(&error);
                set_container(
                    cluster,
                    key,
                    index,
                    |s| s["state"] = waiting("CreateContainerError", &message),
                    |_| {},
                );
                return;
            }
        };
        started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.clone());
        if let Err(error) = kubelet
            .docker
            .start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            let message = engine_text(&error);
            let now = timestamp();
            set_container(
                cluster,
                key,
                index,
                |s| {
                    s["containerID"] = json!(format!("docker://{id}"));
                    s["state"] = json!({"terminated": {"exitCode": 128, "reason": "StartError",
                        "message": message, "startedAt": null, "finishedAt": now,
                        "containerID": format!("docker://{id}")}});
                },
                |status| {
                    status["phase"] = json!("Failed");
                    status["conditions"] = conditions(false, Some("PodFailed"));
                },
            );
            return;
        }
        if ids.is_empty() {
            pod_ip = if host_network {
                Some("127.0.0.1".to_string())
            } else {
                bridge_ip(&kubelet.docker, &id).await
            };
        }
        ids.push(id);
    }

    let now = timestamp();
    cluster.store.update(key, |pod| {
        for (status, id) in pod["status"]["containerStatuses"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .zip(&ids)
        {
            status["containerID"] = json!(format!("docker://{id}"));
            status["state"] = json!({"running": {"startedAt": now}});
            status["ready"] = json!(true);
            status["started"] = json!(true);
        }
        pod["status"]["phase"] = json!("Running");
        pod["status"]["conditions"] = conditions(true, None);
        if let Some(ip) = &pod_ip {
            pod["status"]["podIP"] = json!(ip);
            pod["status"]["podIPs"] = json!([{"ip": ip}]);
        }
        true
    });
    supervise(kubelet, cluster, key, &pod, &ids).await;
}

/// Waits on the running containers: each exit is written as the kubelet would, restarts
/// follow the restart policy, and the phase is set once every container is done.
async fn supervise(
    kubelet: &Kubelet,
    cluster: &Arc<Cluster>,
    key: &Key,
    pod: &Value,
    ids: &[String],
) {
    let policy = pod["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or("Always")
        .to_string();
    let names: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or("").to_string())
        .collect();
    let wait = |index: usize| {
        let docker = kubelet.docker.clone();
        let id = ids[index].clone();
        async move {
            let mut stream =
                docker.wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>);
            let _ = stream.next().await;
            index
        }
    };
    let mut running: FuturesUnordered<_> = (0..ids.len())
        .map(|i| {
            Box::pin(wait(i)) as std::pin::Pin<Box<dyn std::future::Future<Output = usize> + Send>>
        })
        .collect();
    let mut exit_codes: Vec<Option<i64>> = vec![None; ids.len()];
    let mut restarts = vec![0u32; ids.len()];
    while let Some(index) = running.next().await {
        let id = &ids[index];
        let inspected = kubelet
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .ok()
            .and_then(|c| c.state);
        let code = inspected.as_ref().and_then(|s| s.exit_code).unwrap_or(-1);
        let oom = inspected
            .as_ref()
            .and_then(|s| s.oom_killed)
            .unwrap_or(false);
        let reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let terminated = json!({"terminated": {
            "exitCode": code, "reason": reason,
            "startedAt": inspected.as_ref().and_then(|s| s.started_at.clone()),
            "finishedAt": inspected.as_ref().and_then(|s| s.finished_at.clone()),
            "containerID": format!("docker://{id}")
        }});
        let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
        if !restart {
            exit_codes[index] = Some(code);
            let done = exit_codes.iter().all(Option::is_some);
            let failed = exit_codes.iter().any(|c| c.is_some_and(|c| c != 0));
            set_container(
                cluster,
                key,
                index,
                |s| {
                    s["state"] = terminated;
                    s["ready"] = json!(false);
                    s["started"] = json!(false);
                },
                |status| {
                    if done {
                        status["phase"] = json!(if failed { "Failed" } else { "Succeeded" });
                        status["conditions"] = conditions(false, Some("PodCompleted"));
                    } else {
                        status["conditions"] = conditions(false, Some("ContainersNotReady"));
                    }
                },
            );
            continue;
        }
        // A restart after a back-off that doubles, as the kubelet's (shorter: tests wait).
        restarts[index] += 1;
        let backoff = Duration::from_millis((500u64 << restarts[index].min(5)).min(10_000));
        let message = format!(
            "back-off {}s restarting failed container={} pod={}_{}({})",
            backoff.as_secs().max(1),
            names[index],
            key.name,
            key.namespace,
            pod["metadata"]["uid"].as_str().unwrap_or("")
        );
        let count = restarts[index];
        set_container(
            cluster,
            key,
            index,
            |s| {
                s["lastState"] = terminated;
                s["state"] = waiting("CrashLoopBackOff", &message);
                s["ready"] = json!(false);
                s["restartCount"] = json!(count);
            },
            |status| status["conditions"] = conditions(false, Some("ContainersNotReady")),
        );
        tokio::time::sleep(backoff).await;
        if kubelet
            .docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .is_ok()
        {
            let now = timestamp();
            set_container(
                cluster,
                key,
                index,
                |s| {
                    s["state"] = json!({"running": {"startedAt": now}});
                    s["ready"] = json!(true);
                },
                |_| {},
            );
            running.push(Box::pin(wait(index)));
        }
    }
}

/// What the double's kubelet cannot honour, named.
fn refusals(pod: &Value) -> Result<(), String> {
    let spec = &pod["spec"];
    if spec["initContainers"]
        .as_array()
        .is_some_and(|c| !c.is_empty())
    {
        return Err("the Kubernetes double's kubelet does not run init containers".into());
    }
    if spec["securityContext"]
        .as_object()
        .is_some_and(|c| !c.is_empty())
    {
        return Err("the Kubernetes double's kubelet does not apply a pod securityContext".into());
    }
    for container in spec["containers"].as_array().into_iter().flatten() {
        for field in [
            "envFrom",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "lifecycle",
            "securityContext",
        ] {
            if !container[field].is_null() {
                return Err(format!(
                    "container {}: the Kubernetes double's kubelet does not implement {field}",
                    container["name"]
                ));
            }
        }
    }
    Ok(())
}

/// A container's Docker settings from its pod spec.
fn container_body(
    kubelet: &Kubelet,
    cluster: &Cluster,
    pod: &Value,
    container: &Value,
    pod_ip: Option<&str>,
) -> Result<ContainerCreateBody, String> {
    let name = container["name"].as_str().unwrap_or("");
    let strings = |value: &Value| -> Option<Vec<String>> {
        value.as_array().map(|items| {
            items
                .iter()
                .map(|i| i.as_str().unwrap_or("").to_string())
                .collect()
        })
    };
    let command = strings(&container["command"]);
    let args = strings(&container["args"]);
    // Kubernetes' command replaces the image's entrypoint and drops its CMD; args replace CMD.
    let cmd = match (&command, args) {
        (_, Some(args)) => Some(args),
        (Some(_), None) => Some(Vec::new()),
        (None, None) => None,
    };
    let env = env_of(cluster, pod, container, pod_ip)?;
    let binds = binds_of(kubelet, pod, container)?;
    let limits = &container["resources"]["limits"];
    let memory = quantity::of(&limits["memory"]).map(|bytes| bytes as i64);
    let nano_cpus = quantity::of(&limits["cpu"]).map(|cores| (cores * 1e9) as i64);
    let labels = HashMap::from([
        (CONTAINER_LABEL.to_string(), kubelet.id.clone()),
        (
            "io.kubernetes.pod.name".to_string(),
            pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
        ),
        (
            "io.kubernetes.pod.namespace".to_string(),
            pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ),
        (
            "io.kubernetes.pod.uid".to_string(),
            pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
        ),
        ("io.kubernetes.container.name".to_string(), name.to_string()),
    ]);
    Ok(ContainerCreateBody {
        image: container["image"].as_str().map(str::to_string),
        entrypoint: command,
        cmd,
        env: Some(env),
        working_dir: container["workingDir"].as_str().map(str::to_string),
        labels: Some(labels),
        host_config: Some(HostConfig {
            binds: Some(binds),
            memory,
            memory_swap: memory,
            nano_cpus,
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    })
}

fn env_of(
    cluster: &Cluster,
    pod: &Value,
    container: &Value,
    pod_ip: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut env = Vec::new();
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().unwrap_or("");
        if let Some(value) = variable.get("value") {
            env.push(format!("{name}={}", value.as_str().unwrap_or("")));
            continue;
        }
        let from = &variable["valueFrom"];
        let value = if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            field_value(pod, path, pod_ip).ok_or_else(|| {
                format!("env {name}: the Kubernetes double cannot resolve fieldRef {path}")
            })?
        } else if let Some(reference) = from.get("configMapKeyRef") {
            let map = cluster.store.get(&Key {
                resource: "configmaps".into(),
                namespace: pod["metadata"]["namespace"].as_str().unwrap_or("").into(),
                name: reference["name"].as_str().unwrap_or("").into(),
            });
            match map
                .as_ref()
                .and_then(|m| m["data"][reference["key"].as_str().unwrap_or("")].as_str())
            {
                Some(value) => value.to_string(),
                None if reference["optional"] == json!(true) => continue,
                None => {
                    return Err(format!(
                        "configmap {} or its key {} not found",
                        reference["name"], reference["key"]
                    ))
                }
            }
        } else if let Some(reference) = from.get("secretKeyRef") {
            use base64::Engine;
            let secret = cluster.store.get(&Key {
                resource: "secrets".into(),
                namespace: pod["metadata"]["namespace"].as_str().unwrap_or("").into(),
                name: reference["name"].as_str().unwrap_or("").into(),
            });
            let key = reference["key"].as_str().unwrap_or("");
            // `data` is base64 as the API stores it; `stringData` as a client wrote it.
            let value = secret.as_ref().and_then(|s| {
                s["data"][key]
                    .as_str()
                    .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                    .or_else(|| s["stringData"][key].as_str().map(str::to_string))
            });
            match value {
                Some(value) => value,
                None if reference["optional"] == json!(true) => continue,
                None => {
                    return Err(format!(
                        "secret {} or its key {} not found",
                        reference["name"], reference["key"]
                    ))
                }
            }
        } else if variable.get("valueFrom").is_some() {
            return Err(format!(
                "env {name}: the Kubernetes double resolves fieldRef, configMapKeyRef and secretKeyRef only"
            ));
        } else {
            String::new()
        };
        env.push(format!("{name}={value}"));
    }
    Ok(env)
}

fn field_value(pod: &Value, path: &str, pod_ip: Option<&str>) -> Option<String> {
    let text = |v: &Value| v.as_str().map(str::to_string);
    match path {
        "metadata.name" => text(&pod["metadata"]["name"]),
        "metadata.namespace" => text(&pod["metadata"]["namespace"]),
        "metadata.uid" => text(&pod["metadata"]["uid"]),
        "spec.nodeName" => text(&pod["spec"]["nodeName"]),
        "spec.serviceAccountName" => {
            Some(text(&pod["spec"]["serviceAccountName"]).unwrap_or_else(|| "default".into()))
        }
        "status.hostIP" => Some("127.0.0.1".into()),
        "status.podIP" => pod_ip.map(str::to_string),
        other => {
            let (map, key) = other
                .strip_prefix("metadata.labels['")
                .map(|rest| ("labels", rest))
                .or_else(|| {
                    other
                        .strip_prefix("metadata.annotations['")
                        .map(|rest| ("annotations", rest))
                })?;
            let key = key.strip_suffix("']")?;
            Some(text(&pod["metadata"][map][key]).unwrap_or_default())
        }
    }
}

fn binds_of(kubelet: &Kubelet, pod: &Value, container: &Value) -> Result<Vec<String>, String> {
    let mut sources: HashMap<String, String> = HashMap::new();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or("").to_string();
        let source = if let Some(path) = volume["hostPath"]["path"].as_str() {
            path.to_string()
        } else if volume.get("emptyDir").is_some() {
            let dir = kubelet
                .scratch
                .join(pod["metadata"]["uid"].as_str().unwrap_or("pod"))
                .join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("emptyDir {name}: {e}"))?;
            dir.display().to_string()
        } else {
            return Err(format!(
                "volume {name}: the Kubernetes double mounts hostPath and emptyDir volumes only"
            ));
        };
        sources.insert(name, source);
    }
    let mut binds = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = mount["name"].as_str().unwrap_or("");
        let source = sources
            .get(name)
            .ok_or_else(|| format!("volumeMount {name}: the pod has no volume of that name"))?;
        let source = match mount["subPath"].as_str() {
            Some(sub) if !sub.is_empty() => format!("{source}/{sub}"),
            _ => source.clone(),
        };
        let target = mount["mountPath"].as_str().unwrap_or("");
        let read_only = if mount["readOnly"] == json!(true) {
            ":ro"
        } else {
            ""
        };
        binds.push(format!("{source}:{target}{read_only}"));
    }
    Ok(binds)
}

/// A container's address on the default bridge.
async fn bridge_ip(docker: &Docker, id: &str) -> Option<String> {
    docker
        .inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .ok()
        .and_then(|c| c.network_settings)
        .and_then(|n| n.networks)
        .and_then(|networks| networks.get("bridge").and_then(|b| b.ip_address.clone()))
        .filter(|ip| !ip.is_empty())
}

/// The default bridge network's gateway (or its subnet's first address, where the engine
/// lists only the subnet).
async fn bridge_gateway(docker: &Docker) -> Option<std::net::IpAddr> {
    let network = docker
        .inspect_network(
            "bridge",
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .ok()?;
    let configs = network
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default();
    let ipv4 = |text: &str| text.parse::<std::net::Ipv4Addr>().ok();
    configs
        .iter()
        .find_map(|config| config.gateway.as_deref().and_then(ipv4))
        .or_else(|| {
            configs.iter().find_map(|config| {
                let (network, _) = config.subnet.as_deref()?.split_once('/')?;
                Some(std::net::Ipv4Addr::from(u32::from(ipv4(network)?) + 1))
            })
        })
        .map(std::net::IpAddr::V4)
}

fn engine_text(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}
