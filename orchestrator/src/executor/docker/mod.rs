//! The Docker executor's workers: a pod-like pair of containers per worker, started through
//! bollard. The sidecar container (`/hkube/hkube-wrapper` from the algorithm's own image) owns
//! the network namespace and dials the orchestrator's [`LinkServer`]; the algorithm container
//! joins that namespace and connects to the sidecar on 127.0.0.1:3000, exactly as HKube's
//! worker and algorunner containers share a pod.
//!
//! An `env: wasm` algorithm's worker is one container: the sidecar from its image (the module
//! and `hkube-wrapper`, built FROM hkube/debian) runs the module itself with wasmtime
//! (`HKUBE_WASM`, `wrapper::wasm::worker`), one fresh store per task, under the container
//! limits the pool granted the worker.
//!
//! The pools, queues and crash handling are the local executor's (`executor::local`): this
//! module only starts a worker, supervises it (exit, stop, logs) and removes its containers.
//! Every container carries this orchestrator's label, so a crashed server's leftovers are
//! removed at the next start.

pub mod deploy;
pub mod link_server;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

pub use deploy::{container_algorithm, ImageDeployer};
pub use link_server::{LinkEnds, LinkServer};

use crate::executor::child::{Exit, ExternalControls, Supervised};
use crate::executor::limits::Limits;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the Docker engine: {0}")]
    Connect(String),
    #[error("cannot open the sidecars' link port on {address}: {source}")]
    Link {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the Docker engine refused {what}: {reason}")]
    Engine { what: String, reason: String },
}

/// What a worker's containers run.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub image: String,
    /// Cores the algorithm may use (HKube's `cpu`; the limit is twice the request, as HKube's).
    pub cpu: f64,
    /// Its memory request in bytes (HKube's `mem` plus its reserved memory), if any. The
    /// container's limit is the pool's [`Limits`] for the worker (twice this by default).
    pub memory: Option<i64>,
    /// GPUs it asks for; the devices it gets are the pool's grant ([`Limits`]).
    pub gpu: f64,
    /// The algorithm's own variables (`algorithmEnv`).
    pub env: Vec<(String, String)>,
    /// What a pod of it needs beyond this (the Kubernetes launcher; Docker ignores it).
    pub pod: Box<crate::executor::algorithm::PodSettings>,
    /// An `env: wasm` algorithm: the module in the image that the sidecar runs, with no
    /// algorithm container.
    pub wasm: Option<Box<wrapper::wasm::worker::ContainerModule>>,
}

/// Settings shared by every worker.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Where the filesystem storage is; mounted at the same path in both containers.
    pub storage_dir: PathBuf,
    pub cluster: String,
    /// Labels every container, so leftovers of this orchestrator can be found.
    pub instance: String,
    /// Seconds between `docker stop`'s SIGTERM and SIGKILL.
    pub stop_grace: i32,
    /// Overrides of HKube's storage variables for both containers (S3 and its credentials;
    /// the endpoint must be reachable from containers).
    pub storage_env: Vec<(String, String)>,
}

/// Starts worker pairs; cheap to clone.
#[derive(Debug, Clone)]
pub struct DockerLauncher {
    docker: Docker,
    link: LinkServer,
    options: DockerOptions,
}

/// The port the sidecar listens on inside the pair (HKube's `WORKER_SOCKET_PORT`).
const SIDECAR_PORT: u16 = 3000;

impl DockerLauncher {
    /// Connects to the engine, removes this instance's leftover containers, and opens the link
    /// port on the default bridge's gateway (reachable from containers, not from other hosts).
    pub async fn start(options: DockerOptions) -> Result<DockerLauncher, Error> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| Error::Connect(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| Error::Connect(e.to_string()))?;
        let gateway = bridge_gateway(&docker).await?;
        let address = SocketAddr::new(gateway, 0);
        let link = LinkServer::bind(address)
            .await
            .map_err(|source| Error::Link { address, source })?;
        let launcher = DockerLauncher {
            docker,
            link,
            options,
        };
        launcher.remove_leftovers().await;
        Ok(launcher)
    }

    /// Removes every container labelled with this instance (a previous run's, or this one's
    /// at shutdown).
    pub async fn remove_leftovers(&self) {
        let label = format!("io.hkube.instance={}", self.options.instance);
        let filters = HashMap::from([("label".to_string(), vec![label])]);
        let list = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let Ok(containers) = self.docker.list_containers(Some(list)).await else {
            return;
        };
        for container in containers {
            if let Some(id) = container.id {
                remove(&self.docker, &id).await;
            }
        }
    }

    /// Starts a pair for `algorithm` and returns once its sidecar is linked.
    pub async fn start_worker(
        &self,
        algorithm: &str,
        entry_point: &str,
        spec: &ContainerSpec,
        limits: &Limits,
        connect_timeout: Duration,
        log_limit: usize,
    ) -> Result<(LinkEnds, Supervised), String> {
        let worker = worker_token();
        let linked = self.link.expect(&worker);
        let pair = match self
            .create_pair(algorithm, entry_point, spec, limits, &worker)
            .await
        {
            Ok(pair) => pair,
            Err(error) => {
                self.link.forget(&worker);
                return Err(error);
            }
        };
        let (supervised, controls) = Supervised::external(log_limit);
        let exit = supervised.exit_watch();
        tokio::pin!(exit);
        tokio::spawn(supervise(
            self.docker.clone(),
            pair.clone(),
            controls,
            self.options.stop_grace,
            limits.memory_limit_bytes,
        ));
        tokio::select! {
            ends = linked => match ends {
                Ok(ends) => Ok((ends, supervised)),
                Err(_) => Err("the sidecar's link was dropped".to_string()),
            },
            ended = &mut exit => {
                self.link.forget(&worker);
                Err(format!("the algorithm's container {ended} before its sidecar connected"))
            }
            () = tokio::time::sleep(connect_timeout) => {
                self.link.forget(&worker);
                supervised.stop();
                Err(format!(
                    "the sidecar did not connect to {} within {} s",
                    self.link.url(),
                    connect_timeout.as_secs()
                ))
            }
        }
    }

    async fn create_pair(
        &self,
        algorithm: &str,
        entry_point: &str,
        spec: &ContainerSpec,
        limits: &Limits,
        worker: &str,
    ) -> Result<Pair, String> {
        if let Some(module) = &spec.wasm {
            return self
                .create_module_container(algorithm, spec, module, limits, worker)
                .await;
        }
        let storage = self.options.storage_dir.display().to_string();
        let mut settings = vec![
            ("DEFAULT_STORAGE".to_string(), "fs".to_string()),
            ("BASE_FS_ADAPTER_DIRECTORY".to_string(), storage.clone()),
            ("CLUSTER_NAME".to_string(), self.options.cluster.clone()),
            ("STORAGE_ENCODING".to_string(), "msgpack".to_string()),
        ];
        // S3's settings replace the folder's (which hkube's runtimes keep using as their spool).
        for (key, value) in &self.options.storage_env {
            settings.retain(|(k, _)| k != key);
            settings.push((key.clone(), value.clone()));
        }
        let storage_env: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let labels = HashMap::from([
            (
                "io.hkube.instance".to_string(),
                self.options.instance.clone(),
            ),
            ("io.hkube.algorithm".to_string(), algorithm.to_string()),
        ]);
        let binds = Some(vec![format!("{storage}:{storage}")]);
        let suffix = &worker[..10];
        let mut sidecar_env = storage_env.clone();
        sidecar_env.extend([
            format!("HKUBE_ORCHESTRATOR_URL={}", self.link.url()),
            format!("HKUBE_WORKER_NAME={worker}"),
            format!("HKUBE_WRAPPER_LISTEN=127.0.0.1:{SIDECAR_PORT}"),
        ]);
        let sidecar_body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: Some(vec!["/hkube/hkube-wrapper".to_string()]),
            cmd: Some(Vec::new()),
            env: Some(sidecar_env),
            labels: Some(labels.clone()),
            host_config: Some(HostConfig {
                binds: binds.clone(),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let sidecar_name = format!("hkube-{algorithm}-{suffix}-sidecar");
        let sidecar = self.create(&sidecar_name, sidecar_body).await?;
        let mut pair = Pair {
            sidecar: sidecar.clone(),
            algorithm: None,
        };
        if let Err(error) = self.start_container(&sidecar).await {
            remove(&self.docker, &sidecar).await;
            return Err(error);
        }
        let mut env = storage_env;
        env.extend([
            "WORKER_SOCKET_HOST=127.0.0.1".to_string(),
            format!("WORKER_SOCKET_PORT={SIDECAR_PORT}"),
            format!("ALGORITHM_ENTRY_POINT={entry_point}"),
            format!("ALGORITHM_NAME={algorithm}"),
            "HKUBE_FAST_PATH=1".to_string(),
        ]);
        env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        if limits.gpu_devices.as_ref().is_some_and(Vec::is_empty) {
            // A GPU machine whose default runtime is NVIDIA's would give a CUDA image every
            // device (its NVIDIA_VISIBLE_DEVICES=all): a worker granted none sees none.
            env.push("NVIDIA_VISIBLE_DEVICES=void".to_string());
        }
        let host_config = algorithm_host_config(spec, limits, &sidecar, binds);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(env),
            labels: Some(labels),
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        };
        let name = format!("hkube-{algorithm}-{suffix}");
        let created = self.create(&name, body).await;
        let id = match created {
            Ok(id) => id,
            Err(error) => {
                remove(&self.docker, &sidecar).await;
                return Err(error);
            }
        };
        pair.algorithm = Some(id.clone());
        if let Err(error) = self.start_container(&id).await {
            remove(&self.docker, &id).await;
            remove(&self.docker, &sidecar).await;
            return Err(error);
        }
        Ok(pair)
    }

    /// The one container of an `env: wasm` worker: the sidecar, running the module in its
    /// image. No storage (a module has none), its own network namespace (it only dials the
    /// link), and the limits the pool granted.
    async fn create_module_container(
        &self,
        algorithm: &str,
        spec: &ContainerSpec,
        module: &wrapper::wasm::worker::ContainerModule,
        limits: &Limits,
        worker: &str,
    ) -> Result<Pair, String> {
        let described = serde_json::to_string(module)
            .map_err(|e| format!("cannot describe the module for its container: {e}"))?;
        let labels = HashMap::from([
            (
                "io.hkube.instance".to_string(),
                self.options.instance.clone(),
            ),
            ("io.hkube.algorithm".to_string(), algorithm.to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: Some(vec!["/hkube/hkube-wrapper".to_string()]),
            cmd: Some(Vec::new()),
            env: Some(vec![
                format!("HKUBE_ORCHESTRATOR_URL={}", self.link.url()),
                format!("HKUBE_WORKER_NAME={worker}"),
                format!("{}={described}", wrapper::wasm::worker::MODULE_VAR),
            ]),
            labels: Some(labels),
            host_config: Some(module_host_config(spec, limits)),
            ..ContainerCreateBody::default()
        };
        let name = format!("hkube-{algorithm}-{}-wasm", &worker[..10]);
        let id = self.create(&name, body).await?;
        if let Err(error) = self.start_container(&id).await {
            remove(&self.docker, &id).await;
            return Err(error);
        }
        Ok(Pair {
            sidecar: id,
            algorithm: None,
        })
    }

    async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<String, String> {
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map(|created| created.id)
            .map_err(|e| format!("cannot create container {name}: {}", engine_text(&e)))
    }

    async fn start_container(&self, id: &str) -> Result<(), String> {
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|e| format!("cannot start container {id}: {}", engine_text(&e)))
    }
}

/// The algorithm container's limits and namespace (pure): it joins the sidecar's network
/// namespace; cpu is limited to twice the request (HKube's default); memory to the worker's
/// limit, with no swap beyond it (so going over is an OOM kill, as on the local executor);
/// GPUs are an NVIDIA device request for exactly the devices the pool granted.
pub fn algorithm_host_config(
    spec: &ContainerSpec,
    limits: &Limits,
    sidecar: &str,
    binds: Option<Vec<String>>,
) -> HostConfig {
    let memory = limits
        .memory_limit_bytes
        .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX));
    let devices = limits.gpu_devices.clone().unwrap_or_default();
    HostConfig {
        binds,
        network_mode: Some(format!("container:{sidecar}")),
        nano_cpus: (spec.cpu > 0.0).then_some((spec.cpu * 2.0 * 1e9) as i64),
        memory,
        memory_swap: memory,
        device_requests: (!devices.is_empty()).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".to_string()),
                device_ids: Some(devices.iter().map(u32::to_string).collect()),
                capabilities: Some(vec![vec!["gpu".to_string()]]),
                ..DeviceRequest::default()
            }]
        }),
        ..HostConfig::default()
    }
}

/// An `env: wasm` worker's container limits (pure): cpu and memory as an algorithm
/// container's (the module's own `mem` bounds its linear memory inside them); no GPU, and
/// its own network namespace.
pub fn module_host_config(spec: &ContainerSpec, limits: &Limits) -> HostConfig {
    HostConfig {
        network_mode: None,
        device_requests: None,
        ..algorithm_host_config(spec, limits, "", None)
    }
}

/// The engine's message without bollard's wrapping.
fn engine_text(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// A worker's containers: the sidecar, and the algorithm's (none for an `env: wasm` worker,
/// whose sidecar runs the module).
#[derive(Debug, Clone)]
struct Pair {
    sidecar: String,
    algorithm: Option<String>,
}

impl Pair {
    /// The container whose end is the worker's end.
    fn watched(&self) -> &str {
        self.algorithm.as_deref().unwrap_or(&self.sidecar)
    }
}

/// Watches the algorithm container: its output goes to the log; its end, or a stop request,
/// ends the pair; both containers are removed before the exit is reported. An end the
/// container engine's OOM killer caused (`State.OOMKilled`) names the limit.
async fn supervise(
    docker: Docker,
    pair: Pair,
    mut controls: ExternalControls,
    grace: i32,
    memory_limit: Option<u64>,
) {
    let algorithm = pair.watched().to_string();
    let logs_docker = docker.clone();
    let log = controls.log.clone();
    let logs_id = algorithm.clone();
    let logs = tokio::spawn(async move {
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut stream = logs_docker.logs(&logs_id, Some(options));
        let mut partial = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            partial.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            while let Some(end) = partial.find('\n') {
                let line: String = partial.drain(..=end).collect();
                if let Ok(mut log) = log.lock() {
                    log.push(line.trim_end().to_string());
                }
            }
        }
    });
    let mut wait = docker.wait_container(
        &algorithm,
        None::<bollard::query_parameters::WaitContainerOptions>,
    );
    let exit = tokio::select! {
        waited = wait.next() => exit_of(waited),
        _ = stop_requested(&mut controls.stop) => {
            let options = StopContainerOptionsBuilder::new().t(grace).build();
            let _ = docker.stop_container(&algorithm, Some(options)).await;
            Exit::Stopped { killed: false }
        }
    };
    // The log stream ends with the container; give it a moment to deliver the last lines.
    let _ = tokio::time::timeout(Duration::from_millis(500), logs).await;
    let exit = match memory_limit {
        Some(limit_bytes) if !matches!(exit, Exit::Stopped { .. }) => {
            let inspected = docker
                .inspect_container(
                    &algorithm,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await;
            let oom = inspected
                .ok()
                .and_then(|c| c.state)
                .and_then(|state| state.oom_killed)
                .unwrap_or(false);
            if oom {
                Exit::OutOfMemory { limit_bytes }
            } else {
                exit
            }
        }
        _ => exit,
    };
    if pair.algorithm.is_some() {
        remove(&docker, &algorithm).await;
    }
    remove(&docker, &pair.sidecar).await;
    let _ = controls.exit.send(Some(exit));
}

async fn stop_requested(stop: &mut tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            // Nobody can ask any more: never resolves, the container's own end decides.
            std::future::pending::<()>().await;
        }
    }
}

fn exit_of(
    waited: Option<Result<bollard::models::ContainerWaitResponse, bollard::errors::Error>>,
) -> Exit {
    match waited {
        Some(Ok(response)) => Exit::Code(response.status_code as i32),
        // bollard reports a non-zero exit as an error carrying the code.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
            Exit::Code(code as i32)
        }
        _ => Exit::Stopped { killed: true },
    }
}

async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    let _ = docker.remove_container(id, Some(options)).await;
}

/// The default bridge network's gateway: the host's address as containers see it.
async fn bridge_gateway(docker: &Docker) -> Result<IpAddr, Error> {
    let network = docker
        .inspect_network(
            "bridge",
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .map_err(|e| Error::Engine {
            what: "inspecting the bridge network".into(),
            reason: engine_text(&e),
        })?;
    let configs = network
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default();
    let ipv4 = |text: &str| text.parse::<std::net::Ipv4Addr>().ok();
    // The default bridge often lists only its subnet (Debian's 20.10): its gateway is then
    // the subnet's first address.
    configs
        .iter()
        .find_map(|config| config.gateway.as_deref().and_then(ipv4))
        .or_else(|| {
            configs.iter().find_map(|config| {
                let (network, _) = config.subnet.as_deref()?.split_once('/')?;
                let network = u32::from(ipv4(network)?);
                Some(std::net::Ipv4Addr::from(network + 1))
            })
        })
        .map(IpAddr::V4)
        .ok_or_else(|| Error::Engine {
            what: "the bridge network".into(),
            reason: "it has no IPv4 gateway or subnet".into(),
        })
}

/// 32 hex digits from the OS's randomness: the worker's name and its credential on the link.
fn worker_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..16)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::spec::parse_algorithm;
    use serde_json::json;

    #[test]
    fn resources_become_limits_and_device_requests() {
        let algorithm = parse_algorithm(json!({
            "name": "gpu-alg", "algorithmImage": "img:1", "cpu": 0.5, "mem": "1Gi", "gpu": 0.5,
            "algorithmEnv": {"MODE": "fast", "N": 3}
        }))
        .unwrap();
        let local = container_algorithm(&algorithm).unwrap();
        let spec = local.container.unwrap();
        // 1024 Mi plus HKube's 20 % reserved memory.
        assert_eq!(spec.memory, Some((1024 + 205) * 1024 * 1024));
        assert_eq!(
            spec.env,
            vec![("MODE".into(), "fast".into()), ("N".into(), "3".into())]
        );
        // The pool's decision for the worker: device 1 of two, twice the request.
        let node = crate::scheduler::Node {
            name: "local".into(),
            cpu_millis: 2000,
            mem_mib: 8192,
            gpus: (0..2)
                .map(|index| crate::scheduler::Gpu { index, mem_mib: 0 })
                .collect(),
        };
        let limits = Limits::for_worker(
            &local.request,
            &crate::scheduler::GpuGrant::Share {
                device: 1,
                hundredths: 50,
            },
            &node,
            2,
        );
        let host = algorithm_host_config(&spec, &limits, "abc", None);
        assert_eq!(host.network_mode.as_deref(), Some("container:abc"));
        assert_eq!(host.nano_cpus, Some(1_000_000_000));
        assert_eq!(host.memory, Some(2 * 1229 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory, "no swap beyond the limit");
        let gpu = &host.device_requests.unwrap()[0];
        assert_eq!(
            (gpu.driver.as_deref(), gpu.device_ids.clone(), gpu.count),
            (Some("nvidia"), Some(vec!["1".to_string()]), None)
        );
        let none = Limits::for_worker(&local.request, &crate::scheduler::GpuGrant::None, &node, 0);
        let cpu_only = algorithm_host_config(&spec, &none, "abc", None);
        assert!(cpu_only.device_requests.is_none());
        assert_eq!((cpu_only.memory, cpu_only.memory_swap), (None, None));
    }

    #[test]
    fn a_wasm_worker_is_one_container_running_its_module_within_the_grant() {
        let algorithm = parse_algorithm(json!({
            "name": "mul", "env": "wasm", "algorithmImage": "hkube/algorithms/mul:1",
            "entryPoint": "multiply.wasm", "cpu": 0.5, "mem": "64Mi",
            "algorithmEnv": {"MODE": "fast"}, "x-hkube": {"ttl": 2.5, "dirs": ["tables"]}
        }))
        .unwrap();
        let local = container_algorithm(&algorithm).unwrap();
        let spec = local.container.unwrap();
        let module = spec.wasm.as_deref().unwrap();
        assert_eq!(
            module.module,
            PathBuf::from("/hkube/algorithm/multiply.wasm")
        );
        let sandbox = &module.sandbox;
        assert_eq!((sandbox.mem.as_str(), sandbox.mem_mib), ("64Mi", 64));
        assert_eq!(sandbox.time_limit, Some(Duration::from_millis(2500)));
        assert_eq!(sandbox.env, vec![("MODE".into(), "fast".into())]);
        assert_eq!(
            sandbox.dirs[0].host,
            PathBuf::from("/hkube/algorithm/tables")
        );
        let node = crate::scheduler::Node {
            name: "local".into(),
            cpu_millis: 2000,
            mem_mib: 8192,
            gpus: Vec::new(),
        };
        let limits =
            Limits::for_worker(&local.request, &crate::scheduler::GpuGrant::None, &node, 2);
        let host = module_host_config(&spec, &limits);
        assert_eq!(
            host.network_mode, None,
            "its own namespace: it only dials the link"
        );
        assert_eq!(host.nano_cpus, Some(1_000_000_000));
        // 64 Mi plus HKube's 20 % reserve, twice: the pool's limit for the worker.
        assert_eq!(host.memory, Some(2 * 77 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory);
        assert!(host.device_requests.is_none() && host.binds.is_none());

        // A variable a module cannot be given is refused, not dropped.
        let secret = parse_algorithm(json!({
            "name": "mul", "env": "wasm", "algorithmImage": "hkube/algorithms/mul:1",
            "algorithmEnv": {"KEY": {"secretKeyRef": {"name": "s", "key": "k"}}}
        }))
        .unwrap();
        let refused = deploy::container_module(&secret).unwrap_err();
        assert!(refused.contains("algorithmEnv.KEY"), "{refused}");
        // Local code is not an image: nothing to start containers of (a project folder's
        // algorithm stays as the server registered it from its folder).
        let folder =
            parse_algorithm(json!({"name": "range", "algorithmImage": "hkube-local/range"}))
                .unwrap();
        assert!(container_algorithm(&folder).is_none());
        // Other envs have no module.
        let python =
            parse_algorithm(json!({"name": "python-alg", "algorithmImage": "img:1"})).unwrap();
        assert!(deploy::container_module(&python).unwrap().is_none());
    }
}
