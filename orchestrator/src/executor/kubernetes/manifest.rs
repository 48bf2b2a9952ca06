//! A worker's pod, as a pure function of the algorithm, the worker and the server's settings:
//! [`worker_pod`]. No client, no clock: the snapshot tests (`testdata/`) pin the manifests.
//!
//! The pod holds two containers, as HKube's worker pod does and as the Docker executor's pair:
//! - `worker`: the sidecar, `/hkube/hkube-wrapper` from the algorithm's own image; it dials the
//!   server's link endpoint and listens on 127.0.0.1:3000 inside the pod;
//! - `algorunner`: the algorithm's image, which connects to the sidecar over the pod's shared
//!   network namespace.
//!
//! Resources: the algorithm container requests its `cpu` and `mem`, the sidecar the reserved
//! memory (HKube's data cache, which the sidecar holds): the pod's request is `mem` +
//! reserved, the figure the scheduler places workers by. Limits are HKube's rule: cpu twice the
//! request, memory the configured multiple of it (2, HKube's default; 0: none), GPUs as
//! `nvidia.com/gpu`, whole devices only (Kubernetes cannot share one).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, EnvVarSource, HostPathVolumeSource, LocalObjectReference,
    NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PersistentVolumeClaimVolumeSource, Pod, PodSpec, PreferredSchedulingTerm, ResourceRequirements,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::executor::algorithm::WorkerAlgorithm;

/// Labels every worker pod carries: who manages it, which server, which algorithm and worker.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const INSTANCE: &str = "hkube.io/instance";
pub const ALGORITHM: &str = "hkube.io/algorithm";
pub const WORKER: &str = "hkube.io/worker";

/// The containers' names (HKube's).
pub const SIDECAR_CONTAINER: &str = "worker";
pub const ALGORITHM_CONTAINER: &str = "algorunner";

/// The port the sidecar listens on inside the pod (HKube's `WORKER_SOCKET_PORT`).
pub const SIDECAR_PORT: u16 = 3000;

/// The extended resource NVIDIA's device plugin advertises.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("algorithm {algorithm} has no image: a pod runs images only")]
    NoImage { algorithm: String },
    #[error(
        "algorithm {algorithm} requests gpu {gpu}: Kubernetes gives whole GPUs ({GPU_RESOURCE}); request 1, 2, ..."
    )]
    FractionalGpu { algorithm: String, gpu: f64 },
    #[error(
        "algorithm {algorithm} sets {fields}, which hkube's pods do not carry out: remove it to run on Kubernetes"
    )]
    Unsupported { algorithm: String, fields: String },
    #[error("algorithm {algorithm}: {field} is not what Kubernetes takes: {reason}")]
    Field {
        algorithm: String,
        field: String,
        reason: String,
    },
}

/// Where the job storage folder of the pods comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageVolume {
    /// A PersistentVolumeClaim every worker mounts (ReadWriteMany for several nodes).
    Claim(String),
    /// The folder on the pod's node (one-node clusters, the test double).
    HostPath,
    /// A folder of the pod's own: the storage is elsewhere (S3) and this is only the
    /// runtimes' spool.
    Empty,
}

/// What every worker pod of a server shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTemplate {
    /// This server's label value: its pods, and the orphans of its previous runs.
    pub instance: String,
    /// The storage key prefix (`<cluster>-hkube/...`), as the server's.
    pub cluster: String,
    /// The URL the sidecar dials (`ws://HOST:PORT/link`), from `--link-address`.
    pub link_url: String,
    /// HKube's storage variables for both containers (`DEFAULT_STORAGE`, S3's settings ...).
    pub storage_env: Vec<(String, String)>,
    /// The storage folder's path, the same in both containers as on the server.
    pub storage_dir: String,
    pub storage_volume: StorageVolume,
    /// Seconds between the stop's SIGTERM and SIGKILL (the pool's stop grace).
    pub stop_grace_seconds: i64,
    /// The memory limit is this multiple of the request; 0: no memory limit.
    pub memory_ratio: u64,
    /// Secrets to pull images with, for every pod (`--image-pull-secret`).
    pub image_pull_secrets: Vec<String>,
}

/// One worker's pod.
#[derive(Debug, Clone, Copy)]
pub struct WorkerPod<'a> {
    pub name: &'a str,
    /// The pool's id of the worker (a label).
    pub worker: u64,
    /// Its secret on the link: the sidecar names it when it dials in.
    pub token: &'a str,
    pub algorithm: &'a WorkerAlgorithm,
    /// The node the scheduler placed it on: preferred, not required (Kubernetes' own filters,
    /// taints and the algorithm's nodeSelector, have the last word).
    pub node: Option<&'a str>,
}

/// The labels that find a server's pods (`app.kubernetes.io/managed-by=hkube,hkube.io/instance=…`).
pub fn instance_selector(instance: &str) -> String {
    format!("{MANAGED_BY}=hkube,{INSTANCE}={instance}")
}

/// A pod name for `algorithm`'s worker: `hkube-<algorithm>-<10 hex of its token>`, within
/// Kubernetes' 63 characters for a label-safe name.
pub fn pod_name(algorithm: &str, token: &str) -> String {
    let algorithm: String = algorithm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let suffix: String = token.chars().take(10).collect();
    format!("hkube-{}-{suffix}", algorithm.trim_matches('-'))
}

/// An `env: wasm` worker's one container: the sidecar from the module's image, running the
/// module itself (`HKUBE_WASM`, as on the Docker executor), within the algorithm's cpu and
/// memory. It is named as an algorithm container is, so its end, its OOM kill and its log read
/// as the algorithm's. A module has no storage folder and no port.
fn wasm_worker(
    template: &PodTemplate,
    worker: &WorkerPod<'_>,
    (image, cpu, mem_mib): (&str, f64, f64),
    module: &wrapper::wasm::worker::ContainerModule,
) -> Result<(Vec<Container>, Vec<Volume>), Error> {
    let algorithm = worker.algorithm;
    let described = serde_json::to_string(module).map_err(|e| Error::Field {
        algorithm: algorithm.name.clone(),
        field: "entryPoint".into(),
        reason: format!("cannot describe the module for its pod: {e}"),
    })?;
    let env = plain(&[
        (
            "HKUBE_ORCHESTRATOR_URL".to_string(),
            template.link_url.clone(),
        ),
        ("HKUBE_WORKER_NAME".to_string(), worker.token.to_string()),
        (wrapper::wasm::worker::MODULE_VAR.to_string(), described),
    ]);
    let limits = algorithm_resources(mem_mib, cpu, template.memory_ratio);
    let container = Container {
        name: ALGORITHM_CONTAINER.into(),
        image: Some(image.to_string()),
        command: Some(vec!["/hkube/hkube-wrapper".into()]),
        args: Some(Vec::new()),
        env: Some(env),
        resources: Some(resources(limits)),
        ..Container::default()
    };
    Ok((vec![container], Vec::new()))
}

/// The worker's pod (pure).
pub fn worker_pod(template: &PodTemplate, worker: &WorkerPod<'_>) -> Result<Pod, Error> {
    let algorithm = worker.algorithm;
    let name = &algorithm.name;
    let Some(spec) = &algorithm.container else {
        return Err(Error::NoImage {
            algorithm: name.clone(),
        });
    };
    let settings = &spec.pod;
    if !settings.unsupported.is_empty() {
        return Err(Error::Unsupported {
            algorithm: name.clone(),
            fields: settings.unsupported.join(", "),
        });
    }
    let field = |field: &str, reason: String| Error::Field {
        algorithm: name.clone(),
        field: field.to_string(),
        reason,
    };
    // The user's labels and annotations first: hkube's own labels replace theirs.
    let mut labels = string_map(&settings.labels);
    let annotations = string_map(&settings.annotations);
    labels.extend([
        (MANAGED_BY.to_string(), "hkube".to_string()),
        (INSTANCE.to_string(), template.instance.clone()),
        (ALGORITHM.to_string(), label_value(name)),
        (WORKER.to_string(), worker.worker.to_string()),
    ]);

    let (containers, volumes) = match &spec.wasm {
        Some(module) => wasm_worker(
            template,
            worker,
            (&spec.image, spec.cpu, settings.mem_mib),
            module,
        )?,
        None => {
            // Both containers: the storage settings and folder.
            let mut storage_env = vec![
                ("DEFAULT_STORAGE".to_string(), "fs".to_string()),
                (
                    "BASE_FS_ADAPTER_DIRECTORY".to_string(),
                    template.storage_dir.clone(),
                ),
                ("CLUSTER_NAME".to_string(), template.cluster.clone()),
                ("STORAGE_ENCODING".to_string(), "msgpack".to_string()),
            ];
            for (key, value) in &template.storage_env {
                storage_env.retain(|(k, _)| k != key);
                storage_env.push((key.clone(), value.clone()));
            }
            let storage_mount = VolumeMount {
                name: "hkube-storage".into(),
                mount_path: template.storage_dir.clone(),
                ..VolumeMount::default()
            };
            let storage_volume = Volume {
                name: "hkube-storage".into(),
                persistent_volume_claim: match &template.storage_volume {
                    StorageVolume::Claim(claim) => Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.clone(),
                        read_only: None,
                    }),
                    _ => None,
                },
                host_path: (template.storage_volume == StorageVolume::HostPath).then(|| {
                    HostPathVolumeSource {
                        path: template.storage_dir.clone(),
                        type_: Some("DirectoryOrCreate".into()),
                    }
                }),
                empty_dir: (template.storage_volume == StorageVolume::Empty).then(Default::default),
                ..Volume::default()
            };

            // The sidecar: the algorithm's image with hkube-wrapper as its command; workerEnv first,
            // so hkube's own variables win.
            let mut sidecar_env =
                env_from("workerEnv", &settings.worker_env).map_err(|r| field("workerEnv", r))?;
            sidecar_env.extend(plain(&storage_env));
            sidecar_env.extend(plain(&[
                (
                    "HKUBE_ORCHESTRATOR_URL".to_string(),
                    template.link_url.clone(),
                ),
                ("HKUBE_WORKER_NAME".to_string(), worker.token.to_string()),
                (
                    "HKUBE_WRAPPER_LISTEN".to_string(),
                    format!("127.0.0.1:{SIDECAR_PORT}"),
                ),
            ]));
            let reserved = memory_resources(settings.reserved_mib, template.memory_ratio);
            let sidecar = Container {
                name: SIDECAR_CONTAINER.into(),
                image: Some(spec.image.clone()),
                command: Some(vec!["/hkube/hkube-wrapper".into()]),
                args: Some(Vec::new()),
                env: Some(sidecar_env),
                volume_mounts: Some(vec![storage_mount.clone()]),
                resources: Some(resources(reserved)),
                ..Container::default()
            };

            // The algorithm: hkube's variables after algorithmEnv's, as the Docker executor orders
            // them.
            let mut env = plain(&storage_env);
            env.extend(plain(&[
                ("WORKER_SOCKET_HOST".to_string(), "127.0.0.1".to_string()),
                ("WORKER_SOCKET_PORT".to_string(), SIDECAR_PORT.to_string()),
                (
                    "ALGORITHM_ENTRY_POINT".to_string(),
                    algorithm.entry_point.clone(),
                ),
                ("ALGORITHM_NAME".to_string(), name.clone()),
                ("HKUBE_FAST_PATH".to_string(), "1".to_string()),
            ]));
            env.extend(
                env_from("algorithmEnv", &settings.algorithm_env)
                    .map_err(|r| field("algorithmEnv", r))?,
            );
            let mut algorithm_resources =
                algorithm_resources(settings.mem_mib, spec.cpu, template.memory_ratio);
            if spec.gpu > 0.0 {
                if spec.gpu.fract() != 0.0 {
                    return Err(Error::FractionalGpu {
                        algorithm: name.clone(),
                        gpu: spec.gpu,
                    });
                }
                // The GPU is never multiplied: its limit is its request (Kubernetes requires both equal).
                let gpus = format!("{}", spec.gpu as u64);
                algorithm_resources.push((GPU_RESOURCE, gpus.clone(), Some(gpus)));
            }
            let mut mounts = vec![storage_mount];
            mounts.extend(
                typed::<Vec<VolumeMount>>(&settings.volume_mounts)
                    .map_err(|r| field("volumeMounts", r))?,
            );
            let algorunner = Container {
                name: ALGORITHM_CONTAINER.into(),
                image: Some(spec.image.clone()),
                env: Some(env),
                volume_mounts: Some(mounts),
                resources: Some(resources(algorithm_resources)),
                ..Container::default()
            };

            let mut volumes = vec![storage_volume];
            volumes
                .extend(typed::<Vec<Volume>>(&settings.volumes).map_err(|r| field("volumes", r))?);
            (vec![sidecar, algorunner], volumes)
        }
    };
    let mut pull_secrets: Vec<LocalObjectReference> = template
        .image_pull_secrets
        .iter()
        .map(|name| LocalObjectReference { name: name.clone() })
        .collect();
    pull_secrets.extend(
        typed::<Vec<LocalObjectReference>>(&settings.image_pull_secrets)
            .map_err(|r| field("imagePullSecrets", r))?,
    );
    let tolerations =
        typed::<Vec<Toleration>>(&settings.tolerations).map_err(|r| field("tolerations", r))?;
    let affinity =
        affinity(&settings.node_selector, worker.node).map_err(|r| field("nodeSelector", r))?;

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(worker.name.to_string()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers,
            // A worker that ends is replaced by the pool, never restarted by the kubelet.
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(template.stop_grace_seconds),
            // The worker never calls the Kubernetes API, and its environment carries no
            // service variables.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            affinity,
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..PodSpec::default()
        }),
        status: None,
    })
}

/// A label value of at most 63 characters from a name (algorithm names are already DNS-like).
fn label_value(name: &str) -> String {
    let value: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    value
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Labels and annotations as written (plain values as text).
fn string_map(map: &serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (key.clone(), text)
        })
        .collect()
}

fn plain(pairs: &[(String, String)]) -> Vec<EnvVar> {
    pairs
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            value_from: None,
        })
        .collect()
}

/// HKube's env objects: a plain value (string, number, boolean) or `{<source kind>: {...}}`
/// (`secretKeyRef`, `configMapKeyRef`, `fieldRef`, `resourceFieldRef`), which is Kubernetes'
/// `valueFrom`.
fn env_from(what: &str, env: &serde_json::Map<String, Value>) -> Result<Vec<EnvVar>, String> {
    env.iter()
        .map(|(name, value)| {
            let (value, value_from) = match value {
                Value::String(text) => (Some(text.clone()), None),
                Value::Number(_) | Value::Bool(_) => (Some(value.to_string()), None),
                Value::Object(_) => {
                    let source: EnvVarSource = serde_json::from_value(value.clone())
                        .map_err(|e| format!("{what}.{name}: {e}"))?;
                    (None, Some(source))
                }
                other => {
                    return Err(format!(
                        "{what}.{name}: {other} is neither a value nor a source such as {{\"secretKeyRef\": {{\"name\": \"s\", \"key\": \"k\"}}}}"
                    ))
                }
            };
            Ok(EnvVar {
                name: name.clone(),
                value,
                value_from,
            })
        })
        .collect()
}

/// A descriptor field read into Kubernetes' type; absent: empty.
fn typed<T: serde::de::DeserializeOwned + Default>(value: &Option<Value>) -> Result<T, String> {
    match value {
        None | Some(Value::Null) => Ok(T::default()),
        Some(value) => serde_json::from_value(value.clone()).map_err(|e| e.to_string()),
    }
}

/// `nodeSelector` as required node affinity (a value, or a list meaning any of them, as HKube
/// reads it), and the scheduler's node as a preference.
fn affinity(
    selector: &serde_json::Map<String, Value>,
    node: Option<&str>,
) -> Result<Option<Affinity>, String> {
    let mut required = Vec::new();
    for (key, value) in selector {
        let values = match value {
            Value::String(text) => vec![text.clone()],
            Value::Number(_) | Value::Bool(_) => vec![value.to_string()],
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text.clone()),
                    other => Err(format!("{key}: {other} is not a label value")),
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(format!(
                    "{key}: {other} is not a label value or a list of them"
                ))
            }
        };
        required.push(NodeSelectorRequirement {
            key: key.clone(),
            operator: "In".into(),
            values: Some(values),
        });
    }
    if required.is_empty() && node.is_none() {
        return Ok(None);
    }
    Ok(Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: (!required.is_empty()).then(
                || NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(required),
                        match_fields: None,
                    }],
                },
            ),
            preferred_during_scheduling_ignored_during_execution: node.map(|node| {
                vec![PreferredSchedulingTerm {
                    weight: 100,
                    preference: NodeSelectorTerm {
                        match_expressions: None,
                        match_fields: Some(vec![NodeSelectorRequirement {
                            key: "metadata.name".into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                    },
                }]
            }),
        }),
        ..Affinity::default()
    }))
}

type Resource = (&'static str, String, Option<String>);

/// An algorithm's memory and cpu: requests as asked, limits `ratio` times the memory and
/// twice the cpu.
fn algorithm_resources(mem_mib: f64, cpu: f64, ratio: u64) -> Vec<Resource> {
    let mut resources = memory_resources(mem_mib, ratio);
    if cpu > 0.0 {
        resources.push(("cpu", cpu_quantity(cpu), Some(cpu_quantity(cpu * 2.0))));
    }
    resources
}

/// A memory request of `mib` and its limit, `ratio` times it (none when 0); nothing for 0 MiB.
fn memory_resources(mib: f64, ratio: u64) -> Vec<Resource> {
    if mib <= 0.0 {
        return Vec::new();
    }
    let bytes = (mib * 1024.0 * 1024.0).ceil() as u64;
    let limit = (ratio > 0).then(|| builder::process::memory_text(bytes.saturating_mul(ratio)));
    vec![("memory", builder::process::memory_text(bytes), limit)]
}

fn resources(entries: Vec<Resource>) -> ResourceRequirements {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    for (name, request, limit) in entries {
        requests.insert(name.to_string(), Quantity(request));
        if let Some(limit) = limit {
            limits.insert(name.to_string(), Quantity(limit));
        }
    }
    ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        claims: None,
    }
}

/// Cores as Kubernetes writes them: whole cores as a number, else millicores (`500m`).
fn cpu_quantity(cores: f64) -> String {
    let millis = (cores * 1000.0).round() as u64;
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
