//! The nodes a pool schedules on when they change: a cluster's inventory (the Kubernetes
//! executor's), fed through a watch channel. The local machine's one node never changes and
//! needs none of this.

use std::time::Duration;

use tokio::sync::watch;

use crate::scheduler::{Node, NodeIx};

/// A changing inventory, and what a request no node holds does meanwhile.
#[derive(Debug, Clone)]
pub struct ClusterFeed {
    /// The current nodes (the pool takes each new value as it comes).
    pub nodes: watch::Receiver<Vec<Node>>,
    /// Nodes can be added to a cluster: a request none of them could hold waits this long,
    /// its reason shown as pending, before its tasks fail (a fixed machine fails them at once).
    pub pending_timeout: Duration,
}

/// Where each worker's node is in `new`, by name, from its index in `old`; `None`: its node
/// left the inventory (the scheduler then counts the worker nowhere).
pub(super) fn remap(old: &[Node], new: &[Node], node: NodeIx) -> NodeIx {
    old.get(node)
        .and_then(|known| new.iter().position(|n| n.name == known.name))
        .unwrap_or(NodeIx::MAX)
}

/// The text a waiting request shows, and the one its tasks fail with after `timeout`.
pub(super) fn waiting_text(why: &str, timeout: Duration) -> String {
    format!(
        "{}; waiting up to {} s for a node that can hold it",
        cluster_words(why),
        timeout.as_secs()
    )
}

pub(super) fn gave_up_text(why: &str, timeout: Duration) -> String {
    format!(
        "{}; no such node joined within {} s (--pending-timeout)",
        cluster_words(why),
        timeout.as_secs()
    )
}

/// The scheduler's refusal without its advice for one machine ("declare more with --cpus"):
/// a cluster's nodes are not declared by flags.
fn cluster_words(why: &str) -> &str {
    match why.rfind(" (declare ") {
        Some(at) if why.ends_with(')') => &why[..at],
        _ => why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            cpu_millis: 1000,
            mem_mib: 1024,
            gpus: Vec::new(),
        }
    }

    #[test]
    fn a_clusters_texts_give_no_flag_advice() {
        let why = "algorithm a requests 2 gpu; the largest node has 1 (declare GPUs with --gpus)";
        assert_eq!(
            waiting_text(why, Duration::from_secs(600)),
            "algorithm a requests 2 gpu; the largest node has 1; waiting up to 600 s for a node that can hold it"
        );
        assert_eq!(
            gave_up_text("no node", Duration::from_secs(5)),
            "no node; no such node joined within 5 s (--pending-timeout)"
        );
    }

    #[test]
    fn workers_follow_their_node_by_name() {
        let old = [node("a"), node("b")];
        let new = [node("b"), node("c")];
        assert_eq!(remap(&old, &new, 1), 0);
        assert_eq!(remap(&old, &new, 0), NodeIx::MAX);
        assert_eq!(remap(&old, &new, NodeIx::MAX), NodeIx::MAX);
    }
}
