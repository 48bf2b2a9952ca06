//! The cluster as the scheduler's nodes: each schedulable, Ready node's allocatable cpu, memory
//! and `nvidia.com/gpu`, minus what the non-terminated pods on it request — all pods but this
//! server's own workers, whose resources the pool already counts as held (counting them here
//! too would count them twice).
//!
//! [`nodes_of`] is pure; [`watch_inventory`] keeps it current from two reflectors (nodes, and
//! the pods of every namespace that are not Succeeded or Failed), never by polling, and sends
//! each changed inventory on a watch channel the pool reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node as KubeNode, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::watch;

use super::manifest::{GPU_RESOURCE, INSTANCE};
use crate::scheduler::{Gpu, Node};

/// The scheduler's nodes from the cluster's nodes and pods (pure). Nodes that are cordoned or
/// not Ready are left out: no pod of ours would start there.
pub fn nodes_of(nodes: &[Arc<KubeNode>], pods: &[Arc<Pod>], instance: &str) -> Vec<Node> {
    let requested = requested_per_node(pods, instance);
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        let Some(name) = node.metadata.name.clone() else {
            continue;
        };
        let cordoned = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        if cordoned || !ready {
            continue;
        }
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let amount = |key: &str| {
            allocatable
                .and_then(|a| a.get(key))
                .and_then(quantity)
                .unwrap_or(0.0)
        };
        let used = requested.get(name.as_str()).copied().unwrap_or_default();
        let cpu = amount("cpu") * 1000.0 - used.cpu_millis;
        let mem = amount("memory") / MIB - used.mem_mib;
        let gpus = amount(GPU_RESOURCE) - used.gpus;
        out.push(Node {
            name,
            cpu_millis: cpu.max(0.0) as u32,
            mem_mib: mem.max(0.0) as u64,
            gpus: (0..gpus.max(0.0) as u32)
                .map(|index| Gpu { index, mem_mib: 0 })
                .collect(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

const MIB: f64 = 1024.0 * 1024.0;

/// What the pods on one node request.
#[derive(Debug, Clone, Copy, Default)]
struct Used {
    cpu_millis: f64,
    mem_mib: f64,
    gpus: f64,
}

/// What the non-terminated pods request, per node (one pass over the pods), but for this
/// server's own workers.
fn requested_per_node<'a>(pods: &'a [Arc<Pod>], instance: &str) -> HashMap<&'a str, Used> {
    let mut per_node: HashMap<&str, Used> = HashMap::new();
    for pod in pods {
        let Some(spec) = &pod.spec else { continue };
        let Some(node) = spec.node_name.as_deref() else {
            continue;
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let ours = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(INSTANCE))
            .is_some_and(|i| i == instance);
        if ours || matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let used = per_node.entry(node).or_default();
        for container in &spec.containers {
            let resources = container.resources.as_ref();
            let requested = |key: &str| {
                resources
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get(key))
                    .and_then(quantity)
            };
            used.cpu_millis += requested("cpu").unwrap_or(0.0) * 1000.0;
            used.mem_mib += requested("memory").unwrap_or(0.0) / MIB;
            // A GPU's request may be left out: Kubernetes then takes the limit.
            let gpu = requested(GPU_RESOURCE).or_else(|| {
                resources
                    .and_then(|r| r.limits.as_ref())
                    .and_then(|l| l.get(GPU_RESOURCE))
                    .and_then(quantity)
            });
            used.gpus += gpu.unwrap_or(0.0);
        }
    }
    per_node
}

/// Whether a reflector's store has been listed once (without waiting).
fn listed_once<K>(store: &reflector::Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// A Kubernetes quantity as a number (`500m` → 0.5, `1Gi` → 1073741824, `1e3` → 1000); `None`
/// when it is not one.
pub fn quantity(quantity: &Quantity) -> Option<f64> {
    let text = quantity.0.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => 10f64.powi(exponent[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

/// Keeps `sender` holding the cluster's inventory: a reflector on nodes and one on the pods
/// of all namespaces that are not Succeeded or Failed. A burst of events makes one new
/// inventory; an unchanged one is not sent. Returns when both watches end (never, in
/// practice: they retry with kube's default backoff).
pub async fn watch_inventory(
    client: kube::Client,
    instance: String,
    sender: watch::Sender<Vec<Node>>,
    listed: tokio::sync::oneshot::Sender<()>,
) {
    let (nodes_store, nodes_writer) = reflector::store::<KubeNode>();
    let (pods_store, pods_writer) = reflector::store::<Pod>();
    let nodes = watcher(
        Api::<KubeNode>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(nodes_writer)
    .map(|_| ());
    let live = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let pods = watcher(Api::<Pod>::all(client), live)
        .default_backoff()
        .reflect(pods_writer)
        .map(|_| ());
    let mut events = std::pin::pin!(futures_util::stream::select(nodes, pods));
    // The stores fill as the streams are read: until both were listed once, read.
    while !(listed_once(&nodes_store) && listed_once(&pods_store)) {
        if events.next().await.is_none() {
            return;
        }
    }
    let mut listed = Some(listed);
    loop {
        // Everything that has arrived makes one inventory.
        while let Some(Some(())) = events.next().now_or_never() {}
        let inventory = nodes_of(&nodes_store.state(), &pods_store.state(), &instance);
        sender.send_if_modified(|current| {
            let changed = *current != inventory;
            if changed {
                *current = inventory;
            }
            changed
        });
        if let Some(listed) = listed.take() {
            let _ = listed.send(());
        }
        if events.next().await.is_none() {
            return;
        }
        // A moment for the rest of a burst (a node's pods listed after it).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: &str, unschedulable: bool, gpus: &str) -> Arc<KubeNode> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"unschedulable": unschedulable},
                "status": {
                    "allocatable": {"cpu": "3900m", "memory": "16Gi", "nvidia.com/gpu": gpus},
                    "conditions": [{"type": "Ready", "status": ready}]
                }
            }))
            .unwrap(),
        )
    }

    fn pod(
        node: &str,
        phase: &str,
        instance: &str,
        cpu: &str,
        mem: &str,
        gpu: Option<&str>,
    ) -> Arc<Pod> {
        let mut resources = json!({"requests": {"cpu": cpu, "memory": mem}});
        if let Some(gpu) = gpu {
            resources["limits"] = json!({"nvidia.com/gpu": gpu});
        }
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "p", "labels": {"hkube.io/instance": instance}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "resources": resources}]},
                "status": {"phase": phase}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn allocatable_minus_what_others_request() {
        let nodes = [
            node("b", "True", false, "2"),
            node("a", "True", false, "0"),
            node("cordoned", "True", true, "0"),
            node("down", "False", false, "0"),
        ];
        let pods = [
            pod("b", "Running", "other", "1500m", "1Gi", Some("1")),
            pod("b", "Pending", "", "0.5", "512Mi", None),
            // Ended pods hold nothing; this server's own are the pool's to count.
            pod("b", "Succeeded", "", "1", "1Gi", None),
            pod("b", "Running", "me", "1", "1Gi", Some("1")),
            pod("elsewhere", "Running", "", "1", "1Gi", None),
        ];
        let inventory = nodes_of(&nodes, &pods, "me");
        assert_eq!(
            inventory,
            vec![
                Node {
                    name: "a".into(),
                    cpu_millis: 3900,
                    mem_mib: 16384,
                    gpus: Vec::new()
                },
                Node {
                    name: "b".into(),
                    cpu_millis: 1900,
                    mem_mib: 16384 - 1536,
                    gpus: vec![Gpu {
                        index: 0,
                        mem_mib: 0
                    }]
                },
            ]
        );
    }

    #[test]
    fn quantities() {
        let q = |text: &str| quantity(&Quantity(text.into()));
        assert_eq!(q("500m"), Some(0.5));
        assert_eq!(q("2"), Some(2.0));
        assert_eq!(q("1Gi"), Some(1073741824.0));
        assert_eq!(q("1G"), Some(1e9));
        assert_eq!(q("1e3"), Some(1000.0));
        assert_eq!(q("12Q"), None);
    }
}
