//! `hkube server --executor kubernetes`: the cluster (kube's default client: in-cluster, else
//! `KUBECONFIG`), the pod launcher and the inventory, from the server's options.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use orchestrator::executor::kubernetes::{self, Cluster, KubeOptions, PodTemplate, StorageVolume};

/// The Kubernetes executor's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct KubernetesArgs {
    /// --executor kubernetes: the namespace of the workers' pods. Default: the server's own
    /// (in a cluster), else the kubeconfig context's.
    #[arg(long, env = "HKUBE_NAMESPACE", value_name = "NS")]
    namespace: Option<String>,
    /// --executor kubernetes: the address the workers' sidecars dial, as pods reach this
    /// server (in a cluster, its Service's DNS name and link port, e.g.
    /// hkube.hkube.svc:3003).
    #[arg(long, env = "HKUBE_LINK_ADDRESS", value_name = "HOST:PORT")]
    link_address: Option<String>,
    /// --executor kubernetes: where the link server listens. Default: 0.0.0.0 and the port of
    /// --link-address. Sidecars name a random 128-bit worker token; others are turned away.
    #[arg(long, env = "HKUBE_LINK_LISTEN", value_name = "HOST:PORT")]
    link_listen: Option<String>,
    /// --executor kubernetes: a request no node can hold waits this long for one to join,
    /// and so does a pod no node takes (Unschedulable), before its tasks fail. A number with
    /// s, m or h (90s, 10m, 1h).
    #[arg(
        long,
        env = "HKUBE_PENDING_TIMEOUT",
        value_name = "DURATION",
        default_value = "10m",
        value_parser = parse_duration
    )]
    pending_timeout: Duration,
    /// --executor kubernetes with --storage fs: the PersistentVolumeClaim (ReadWriteMany) that
    /// holds the job storage, mounted in every pod at the state folder's storage/ path, as the
    /// server mounts it. Without it the pods mount that path from their node (hostPath): only
    /// for a one-node cluster whose node is this machine.
    #[arg(long, env = "HKUBE_STORAGE_CLAIM", value_name = "NAME")]
    storage_claim: Option<String>,
    /// --executor kubernetes: an image pull secret for every worker pod (repeatable).
    #[arg(long = "image-pull-secret", value_name = "NAME")]
    image_pull_secrets: Vec<String>,
}

/// `90s`, `10m`, `1h`, or seconds alone.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 && seconds > 0 => Ok(Duration::from_secs(n * seconds)),
        _ => Err(format!(
            "{text:?}: give a number of seconds, minutes or hours above 0, such as 90s, 10m or 1h"
        )),
    }
}

/// Everything a server needs of the cluster.
pub struct Settings<'a> {
    pub args: &'a KubernetesArgs,
    pub instance: String,
    pub storage_dir: &'a Path,
    pub storage_env: Vec<(String, String)>,
    /// --storage s3: the folder is only the runtimes' spool, each pod's own.
    pub storage_is_s3: bool,
    pub memory_ratio: u64,
    pub log_limit: usize,
}

pub async fn connect(settings: Settings<'_>) -> anyhow::Result<(Cluster, Duration)> {
    let args = settings.args;
    let Some(link_address) = &args.link_address else {
        bail!(
            "--executor kubernetes needs --link-address HOST:PORT: the address pods reach this server's link port at (its Service, e.g. hkube.hkube.svc:3003)"
        );
    };
    let port = link_address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .filter(|port| *port > 0)
        .with_context(|| {
            format!(
                "--link-address {link_address}: expected HOST:PORT, such as hkube.hkube.svc:3003"
            )
        })?;
    let link_listen: SocketAddr = match &args.link_listen {
        Some(text) => text
            .to_socket_addrs()
            .ok()
            .and_then(|mut all| all.next())
            .with_context(|| {
                format!("--link-listen {text}: expected HOST:PORT, such as 0.0.0.0:3003")
            })?,
        None => SocketAddr::from(([0, 0, 0, 0], port)),
    };
    let storage_volume = match (&args.storage_claim, settings.storage_is_s3) {
        (Some(claim), _) => StorageVolume::Claim(claim.clone()),
        (None, true) => StorageVolume::Empty,
        (None, false) => {
            tracing::warn!(
                "--storage fs without --storage-claim: worker pods mount {} from their node, which works only when that node is this machine",
                settings.storage_dir.display()
            );
            StorageVolume::HostPath
        }
    };
    let options = KubeOptions {
        namespace: args.namespace.clone(),
        template: PodTemplate {
            instance: settings.instance,
            cluster: "local".into(),
            link_url: format!("ws://{link_address}/link"),
            storage_env: settings.storage_env,
            storage_dir: settings.storage_dir.display().to_string(),
            storage_volume,
            // The pool's stop grace (the Docker executor's too).
            stop_grace_seconds: 3,
            memory_ratio: settings.memory_ratio,
            image_pull_secrets: args.image_pull_secrets.clone(),
        },
        link_listen,
        pending_timeout: args.pending_timeout,
        log_limit: settings.log_limit,
    };
    let cluster = kubernetes::connect(options).await?;
    tracing::info!(
        namespace = cluster.launcher.namespace(),
        nodes = cluster.nodes.borrow().len(),
        link = %link_address,
        "workers run as pods"
    );
    Ok((cluster, args.pending_timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
