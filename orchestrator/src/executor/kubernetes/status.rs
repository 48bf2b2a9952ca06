//! What a worker pod's status means for its worker (pure): still starting, waiting for a node,
//! running, or ended, and how, in Kubernetes' own words.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::manifest::{ALGORITHM_CONTAINER, SIDECAR_CONTAINER};
use crate::executor::child::Exit;

/// A container waiting for one of these will not run as it is: the worker's start fails (or
/// its run ends) with the reason and Kubernetes' message.
const FATAL_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Created, not running yet (scheduled, pulling, creating): nothing to say.
    Starting,
    /// No node takes it now (`PodScheduled=False`, `Unschedulable`): Kubernetes' message.
    /// Nodes may come; the launcher gives up after its pending timeout.
    Unschedulable(String),
    /// Both containers started.
    Running,
    /// It will not run, or ran and ended.
    Ended(Exit),
}

/// The verdict on `pod`; `memory_limit` names an OOM kill's limit.
pub fn verdict(pod: &Pod, memory_limit: Option<u64>) -> Verdict {
    let Some(status) = &pod.status else {
        return Verdict::Starting;
    };
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    let named = |name: &str| containers.iter().find(|c| c.name == name);
    // The algorithm's own end says most: its exit code, or its OOM kill.
    if let Some(exit) = named(ALGORITHM_CONTAINER).and_then(|c| terminated(c, memory_limit)) {
        return Verdict::Ended(exit);
    }
    // The algorithm's container first: an image both containers share names it there.
    let mut ordered: Vec<&ContainerStatus> = containers.iter().collect();
    ordered.sort_by_key(|c| c.name != ALGORITHM_CONTAINER);
    for container in ordered {
        let waiting = container
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| Some((w.reason.as_deref()?, w.message.as_deref())));
        if let Some((reason, message)) = waiting {
            if FATAL_WAITING.contains(&reason) {
                return Verdict::Ended(Exit::External {
                    reason: format!(
                        "could not run on Kubernetes: container {} is {}",
                        container.name,
                        said(reason, message)
                    ),
                });
            }
        }
    }
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if phase == "Failed" || phase == "Unknown" {
        // Evicted, its node lost, its deadline passed: the pod's reason and message.
        let reason = status.reason.as_deref().unwrap_or(phase);
        let verb = if reason == "Evicted" {
            "was evicted by Kubernetes"
        } else {
            "was ended by Kubernetes"
        };
        return Verdict::Ended(Exit::External {
            reason: format!("{verb} ({})", said(reason, status.message.as_deref())),
        });
    }
    if let Some(exit) = named(SIDECAR_CONTAINER).and_then(|c| terminated(c, None)) {
        return Verdict::Ended(Exit::External {
            reason: format!("lost its sidecar, which {exit}"),
        });
    }
    if phase == "Succeeded" {
        return Verdict::Ended(Exit::Code(0));
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(condition) = unschedulable {
        return Verdict::Unschedulable(said("Unschedulable", condition.message.as_deref()));
    }
    let running = |name: &str| {
        named(name)
            .and_then(|c| c.state.as_ref())
            .is_some_and(|s| s.running.is_some())
    };
    if phase == "Running" && running(ALGORITHM_CONTAINER) && running(SIDECAR_CONTAINER) {
        return Verdict::Running;
    }
    Verdict::Starting
}

/// A terminated container's end: OOMKilled as the memory limit, else its code.
fn terminated(container: &ContainerStatus, memory_limit: Option<u64>) -> Option<Exit> {
    let ended = container.state.as_ref()?.terminated.as_ref()?;
    if ended.reason.as_deref() == Some("OOMKilled") {
        return Some(match memory_limit {
            Some(limit_bytes) => Exit::OutOfMemory { limit_bytes },
            None => Exit::External {
                reason: "was killed by Kubernetes for memory (OOMKilled)".into(),
            },
        });
    }
    Some(match ended.signal {
        Some(signal) if signal > 0 => Exit::Signal(signal),
        _ => Exit::Code(ended.exit_code),
    })
}

/// `Reason: message`, or the reason alone.
fn said(reason: &str, message: Option<&str>) -> String {
    match message.map(str::trim).filter(|m| !m.is_empty()) {
        Some(message) => format!("{reason}: {message}"),
        None => reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": status
        }))
        .unwrap()
    }

    fn container(name: &str, state: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "image": "img", "imageID": "", "ready": false, "restartCount": 0, "state": state})
    }

    #[test]
    fn an_image_that_cannot_be_pulled() {
        for reason in ["ErrImagePull", "ImagePullBackOff"] {
            let verdict = verdict(
                &pod(json!({"phase": "Pending", "containerStatuses": [
                    container("algorunner", json!({"waiting": {"reason": reason,
                        "message": "Back-off pulling image \"nope:1\""}})),
                    container("worker", json!({"waiting": {"reason": reason,
                        "message": "Back-off pulling image \"nope:1\""}}))
                ]})),
                None,
            );
            let Verdict::Ended(exit) = verdict else {
                panic!("{verdict:?}")
            };
            assert_eq!(
                exit.to_string(),
                format!("could not run on Kubernetes: container algorunner is {reason}: Back-off pulling image \"nope:1\"")
            );
        }
    }

    #[test]
    fn unschedulable_evicted_oom_and_exit_codes() {
        let waiting = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}),
        );
        assert_eq!(
            verdict(&waiting, None),
            Verdict::Unschedulable(
                "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into()
            )
        );
        let evicted = pod(json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."}));
        assert_eq!(
            verdict(&evicted, None),
            Verdict::Ended(Exit::External {
                reason:
                    "was evicted by Kubernetes (Evicted: The node was low on resource: memory.)"
                        .into()
            })
        );
        let oom = pod(json!({"phase": "Running", "containerStatuses": [
            container("algorunner", json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})),
            container("worker", json!({"running": {}}))
        ]}));
        assert_eq!(
            verdict(&oom, Some(1 << 30)),
            Verdict::Ended(Exit::OutOfMemory {
                limit_bytes: 1 << 30
            })
        );
        let crashed = pod(json!({"phase": "Running", "containerStatuses": [
            container("algorunner", json!({"terminated": {"exitCode": 3, "reason": "Error"}})),
            container("worker", json!({"running": {}}))
        ]}));
        assert_eq!(verdict(&crashed, None), Verdict::Ended(Exit::Code(3)));
        let running = pod(json!({"phase": "Running", "containerStatuses": [
            container("algorunner", json!({"running": {}})),
            container("worker", json!({"running": {}}))
        ]}));
        assert_eq!(verdict(&running, None), Verdict::Running);
        assert_eq!(
            verdict(&pod(json!({"phase": "Pending"})), None),
            Verdict::Starting
        );
    }
}
