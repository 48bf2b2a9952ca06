//! The scheduler's part (pure): the fake nodes' objects, what a pod requests, and the node it
//! fits on, or the reason the real scheduler gives when none fits.

use serde_json::{json, Value};

use super::quantity;

/// A node of the double's inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeNode {
    pub name: String,
    /// Allocatable cores, in Kubernetes' syntax (`"4"`, `"3500m"`).
    pub cpu: String,
    /// Allocatable memory (`"8Gi"`).
    pub memory: String,
    /// Allocatable `nvidia.com/gpu` devices (0: the resource is not listed).
    pub gpu: u32,
    pub labels: Vec<(String, String)>,
}

impl FakeNode {
    pub fn new(name: &str, cpu: &str, memory: &str) -> FakeNode {
        FakeNode {
            name: name.to_string(),
            cpu: cpu.to_string(),
            memory: memory.to_string(),
            gpu: 0,
            labels: Vec::new(),
        }
    }

    pub fn with_gpu(mut self, devices: u32) -> FakeNode {
        self.gpu = devices;
        self
    }

    pub fn with_label(mut self, key: &str, value: &str) -> FakeNode {
        self.labels.push((key.to_string(), value.to_string()));
        self
    }

    /// The Node object a client lists.
    pub fn object(&self) -> Value {
        let mut labels = serde_json::Map::new();
        labels.insert("kubernetes.io/hostname".into(), json!(self.name));
        labels.insert("kubernetes.io/os".into(), json!("linux"));
        for (key, value) in &self.labels {
            labels.insert(key.clone(), json!(value));
        }
        let mut resources = json!({"cpu": self.cpu, "memory": self.memory, "pods": "110"});
        if self.gpu > 0 {
            resources["nvidia.com/gpu"] = json!(self.gpu.to_string());
        }
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "kubelet is posting ready status"}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": self.name}],
                "nodeInfo": {"kubeletVersion": "v1.34.0-double", "containerRuntimeVersion": "docker://",
                             "operatingSystem": "linux", "architecture": std::env::consts::ARCH}
            }
        })
    }
}

/// What a pod asks of a node: cores, bytes, GPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Request {
    pub cpu: f64,
    pub memory: f64,
    pub gpu: f64,
}

/// A pod's request: the sum over its containers of each resource's request, or its limit
/// when only the limit is given (Kubernetes defaults the request to the limit).
pub fn request_of(pod: &Value) -> Request {
    let mut total = Request::default();
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for container in &containers {
        let resources = &container["resources"];
        let amount = |name: &str| {
            quantity::of(&resources["requests"][name])
                .or_else(|| quantity::of(&resources["limits"][name]))
                .unwrap_or(0.0)
        };
        total.cpu += amount("cpu");
        total.memory += amount("memory");
        total.gpu += amount("nvidia.com/gpu");
    }
    total
}

/// Whether a pod still holds its node's resources (not yet finished).
pub fn holds_resources(pod: &Value) -> bool {
    pod["spec"]["nodeName"].is_string()
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

/// The first node `pod` fits on, given the pods already placed; otherwise the real
/// scheduler's message ("0/1 nodes are available: 1 Insufficient cpu.").
pub fn place(pod: &Value, nodes: &[FakeNode], placed: &[Value]) -> Result<String, String> {
    let wanted = request_of(pod);
    let selector = pod["spec"]["nodeSelector"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut reasons: Vec<String> = Vec::new();
    for node in nodes {
        let object = node.object();
        let labels = &object["metadata"]["labels"];
        let affinity = &pod["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"];
        if selector
            .iter()
            .any(|(key, value)| labels.get(key) != Some(value))
            || !affinity.is_null() && !required_affinity(affinity, &object)
        {
            reasons.push("node(s) didn't match Pod's node affinity/selector".into());
            continue;
        }
        let mut used = Request::default();
        for other in placed
            .iter()
            .filter(|p| p["spec"]["nodeName"] == json!(node.name))
        {
            let request = request_of(other);
            used.cpu += request.cpu;
            used.memory += request.memory;
            used.gpu += request.gpu;
        }
        let allocatable =
            |name: &str| quantity::of(&object["status"]["allocatable"][name]).unwrap_or(0.0);
        let mut short = Vec::new();
        // A tiny tolerance: 0.1 + 0.2 cores must fit in 0.3.
        let over = |used: f64, want: f64, have: f64| want > 0.0 && used + want > have + 1e-9;
        if over(used.cpu, wanted.cpu, allocatable("cpu")) {
            short.push("Insufficient cpu".to_string());
        }
        if over(used.memory, wanted.memory, allocatable("memory")) {
            short.push("Insufficient memory".to_string());
        }
        if over(used.gpu, wanted.gpu, allocatable("nvidia.com/gpu")) {
            short.push("Insufficient nvidia.com/gpu".to_string());
        }
        if short.is_empty() {
            return Ok(node.name.clone());
        }
        reasons.extend(short);
    }
    reasons.sort();
    let mut counted: Vec<(String, usize)> = Vec::new();
    for reason in reasons {
        match counted.last_mut() {
            Some((last, count)) if *last == reason => *count += 1,
            _ => counted.push((reason, 1)),
        }
    }
    let parts: Vec<String> = counted.iter().map(|(r, n)| format!("{n} {r}")).collect();
    Err(format!(
        "0/{} nodes are available: {}.",
        nodes.len(),
        parts.join(", ")
    ))
}

/// Whether a node meets a required node affinity: any of its terms, each term all of its
/// label expressions and field (name) expressions. (The preferred kind only ranks nodes:
/// with one node to choose, the double needs none of it.)
fn required_affinity(required: &Value, node: &Value) -> bool {
    let labels = &node["metadata"]["labels"];
    let meets = |expression: &Value, value: Option<&str>| {
        let values: Vec<&str> = expression["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let number = |text: Option<&str>| text.and_then(|t| t.parse::<i64>().ok());
        match expression["operator"].as_str() {
            Some("In") => value.is_some_and(|v| values.contains(&v)),
            Some("NotIn") => !value.is_some_and(|v| values.contains(&v)),
            Some("Exists") => value.is_some(),
            Some("DoesNotExist") => value.is_none(),
            Some("Gt") => number(value) > number(values.first().copied()),
            Some("Lt") => number(value)
                .is_some_and(|v| number(values.first().copied()).is_some_and(|w| v < w)),
            _ => false,
        }
    };
    required["nodeSelectorTerms"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|term| {
            let by_label = term["matchExpressions"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|e| meets(e, e["key"].as_str().and_then(|key| labels[key].as_str())));
            let by_field = term["matchFields"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|e| {
                    e["key"] == "metadata.name" && meets(e, node["metadata"]["name"].as_str())
                });
            by_label && by_field
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(cpu: &str, gpu: Option<&str>) -> Value {
        let mut limits = json!({});
        if let Some(gpu) = gpu {
            limits["nvidia.com/gpu"] = json!(gpu);
        }
        json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": cpu, "memory": "512Mi"}, "limits": limits}},
            {"name": "b"}
        ]}})
    }

    #[test]
    fn pods_fit_until_the_node_is_full() {
        let nodes = [FakeNode::new("double-node", "1", "4Gi").with_gpu(1)];
        let first = pod("500m", Some("1"));
        assert_eq!(request_of(&first).gpu, 1.0);
        assert_eq!(place(&first, &nodes, &[]), Ok("double-node".to_string()));
        let mut placed = first.clone();
        placed["spec"]["nodeName"] = json!("double-node");
        assert_eq!(
            place(&pod("0.5", None), &nodes, &[placed.clone()]),
            Ok("double-node".into())
        );
        assert_eq!(
            place(&pod("600m", Some("1")), &nodes, &[placed]),
            Err(
                "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient nvidia.com/gpu."
                    .into()
            )
        );
        let mut selective = pod("1", None);
        selective["spec"]["nodeSelector"] = json!({"disk": "ssd"});
        assert!(place(&selective, &nodes, &[])
            .unwrap_err()
            .contains("node affinity/selector"));
        let mut affine = pod("1", None);
        let terms = |operator: &str, value: &str| {
            json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": operator, "values": [value]}]}
            ]}})
        };
        affine["spec"]["affinity"]["nodeAffinity"] = terms("In", "double-node");
        assert_eq!(place(&affine, &nodes, &[]), Ok("double-node".into()));
        affine["spec"]["affinity"]["nodeAffinity"] = terms("NotIn", "double-node");
        assert!(place(&affine, &nodes, &[]).is_err());
    }
}
