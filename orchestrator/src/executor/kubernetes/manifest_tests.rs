#![allow(clippy::unwrap_used)]
//! The manifests against the snapshots in `testdata/`: each is written as YAML, compared with
//! its file, and read back into k8s-openapi's `Pod`. `HKUBE_UPDATE_SNAPSHOTS=1` rewrites the
//! files (review the diff before committing it).

use super::*;
use crate::executor::docker::container_algorithm;
use crate::spec::parse_algorithm;
use serde_json::json;

fn template() -> PodTemplate {
    PodTemplate {
        instance: "0123456789ab".into(),
        cluster: "local".into(),
        link_url: "ws://hkube.hkube.svc:3003/link".into(),
        storage_env: Vec::new(),
        storage_dir: "/var/lib/hkube/storage".into(),
        storage_volume: StorageVolume::Claim("hkube-storage".into()),
        stop_grace_seconds: 3,
        memory_ratio: 2,
        image_pull_secrets: Vec::new(),
    }
}

fn algorithm(descriptor: Value) -> WorkerAlgorithm {
    container_algorithm(&parse_algorithm(descriptor).unwrap()).unwrap()
}

fn pod_of(template: &PodTemplate, algorithm: &WorkerAlgorithm, node: Option<&str>) -> Pod {
    worker_pod(
        template,
        &WorkerPod {
            name: &pod_name(&algorithm.name, "f00dfeed00112233"),
            worker: 7,
            token: "f00dfeed00112233f00dfeed00112233",
            algorithm,
            node,
        },
    )
    .unwrap()
}

/// The pod as YAML equals `testdata/<file>`, and the YAML reads back into the same `Pod`.
fn snapshot(pod: &Pod, file: &str) {
    let yaml = serde_yaml_ng::to_string(pod).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/executor/kubernetes/testdata")
        .join(file);
    if std::env::var_os("HKUBE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &yaml).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (HKUBE_UPDATE_SNAPSHOTS=1 writes it)",
            path.display()
        )
    });
    assert_eq!(yaml, expected, "{} differs", path.display());
    let read: Pod = serde_yaml_ng::from_str(&expected).unwrap();
    assert_eq!(&read, pod, "{file} does not read back into the same Pod");
}

fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers.iter().find(|c| c.name == name).unwrap()
}

fn quantities(map: &Option<BTreeMap<String, Quantity>>) -> BTreeMap<String, String> {
    map.iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn env_value(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

/// The acceptance case: cpu 0.5, mem 512Mi, gpu 1.
#[test]
fn cpu_half_mem_512mi_gpu_one() {
    let algorithm = algorithm(json!({
        "name": "gpu-alg", "algorithmImage": "registry.local/gpu-alg:v1",
        "cpu": 0.5, "mem": "512Mi", "gpu": 1
    }));
    let pod = pod_of(&template(), &algorithm, Some("node-a"));
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.containers.len(), 2);
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));

    let sidecar = container(&pod, SIDECAR_CONTAINER);
    assert_eq!(sidecar.image.as_deref(), Some("registry.local/gpu-alg:v1"));
    assert_eq!(
        sidecar.command,
        Some(vec!["/hkube/hkube-wrapper".to_string()])
    );
    assert_eq!(
        env_value(sidecar, "HKUBE_ORCHESTRATOR_URL").as_deref(),
        Some("ws://hkube.hkube.svc:3003/link")
    );
    assert_eq!(
        env_value(sidecar, "HKUBE_WORKER_NAME").as_deref(),
        Some("f00dfeed00112233f00dfeed00112233")
    );

    let algorunner = container(&pod, ALGORITHM_CONTAINER);
    let resources = algorunner.resources.as_ref().unwrap();
    assert_eq!(
        quantities(&resources.requests),
        BTreeMap::from([
            ("cpu".to_string(), "500m".to_string()),
            ("memory".to_string(), "512Mi".to_string()),
            (GPU_RESOURCE.to_string(), "1".to_string()),
        ])
    );
    assert_eq!(
        quantities(&resources.limits),
        BTreeMap::from([
            ("cpu".to_string(), "1".to_string()),
            ("memory".to_string(), "1Gi".to_string()),
            (GPU_RESOURCE.to_string(), "1".to_string()),
        ])
    );
    // HKube's reserved memory (20 % of mem, rounded up) is the sidecar's: the pod asks for
    // mem + reserved in all, what the scheduler placed it by.
    let reserved = sidecar.resources.as_ref().unwrap();
    assert_eq!(
        quantities(&reserved.requests),
        BTreeMap::from([("memory".to_string(), "103Mi".to_string())])
    );
    assert_eq!(
        quantities(&reserved.limits),
        BTreeMap::from([("memory".to_string(), "206Mi".to_string())])
    );
    snapshot(&pod, "gpu-worker.yaml");
}

/// Everything a descriptor can give a pod: nodeSelector (a value and a list), tolerations,
/// both envs with a secret source, volumes and mounts, pull secrets, labels; S3 storage.
#[test]
fn the_descriptors_kubernetes_fields() {
    let algorithm = algorithm(json!({
        "name": "full", "algorithmImage": "img:2", "cpu": 2, "mem": "1Gi", "reservedMemory": "256Mi",
        "algorithmEnv": {"MODE": "fast", "N": 3,
                         "TOKEN": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        "workerEnv": {"WORKER_FLAG": true},
        "nodeSelector": {"disktype": "ssd", "zone": ["a", "b"]},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "imagePullSecrets": [{"name": "private-registry"}],
        "labels": {"team": "vision", "app.kubernetes.io/managed-by": "someone-else"},
        "annotations": {"note": "hello"}
    }));
    let mut template = template();
    template.storage_env = vec![
        ("DEFAULT_STORAGE".into(), "s3".into()),
        ("S3_ENDPOINT_URL".into(), "http://minio:9000".into()),
    ];
    template.storage_volume = StorageVolume::Empty;
    template.image_pull_secrets = vec!["cluster-pull".into()];
    let pod = pod_of(&template, &algorithm, None);
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels[MANAGED_BY], "hkube", "hkube's labels win");
    assert_eq!(labels["team"], "vision");
    assert_eq!(labels[WORKER], "7");
    let algorunner = container(&pod, ALGORITHM_CONTAINER);
    let token = algorunner
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "TOKEN")
        .unwrap();
    assert_eq!(
        token
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .key,
        "token"
    );
    assert_eq!(
        env_value(algorunner, "DEFAULT_STORAGE").as_deref(),
        Some("s3")
    );
    assert_eq!(
        env_value(container(&pod, SIDECAR_CONTAINER), "WORKER_FLAG").as_deref(),
        Some("true")
    );
    snapshot(&pod, "full-worker.yaml");
}

#[test]
fn what_a_pod_cannot_carry_is_refused() {
    let half = algorithm(json!({"name": "half", "algorithmImage": "img", "gpu": 0.5}));
    let error = worker_pod(
        &template(),
        &WorkerPod {
            name: "p",
            worker: 1,
            token: "t",
            algorithm: &half,
            node: None,
        },
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "algorithm half requests gpu 0.5: Kubernetes gives whole GPUs (nvidia.com/gpu); request 1, 2, ..."
    );
    for (descriptor, expected) in [
        (
            json!({"name": "alg", "algorithmImage": "img", "sideCars": [{"container": {"name": "x", "image": "y"}}]}),
            "algorithm alg sets sideCars, which hkube's pods do not carry out: remove it to run on Kubernetes",
        ),
        (
            json!({"name": "alg", "algorithmImage": "img", "volumes": [{"name": 3}]}),
            "algorithm alg: volumes is not what Kubernetes takes: invalid type: integer `3`, expected a string",
        ),
        (
            json!({"name": "alg", "algorithmImage": "img", "algorithmEnv": {"X": {"secretKeyRef": "s"}}}),
            "algorithm alg: algorithmEnv is not what Kubernetes takes: algorithmEnv.X: invalid type: string \"s\", expected SecretKeySelector",
        ),
    ] {
        let algorithm = algorithm(descriptor);
        let error = worker_pod(
            &template(),
            &WorkerPod {
                name: "p",
                worker: 1,
                token: "t",
                algorithm: &algorithm,
                node: None,
            },
        )
        .unwrap_err();
        assert_eq!(error.to_string(), expected);
    }
}

#[test]
fn names_and_selectors() {
    assert_eq!(
        pod_name("My_Alg", "0123456789abcdef"),
        "hkube-my-alg-0123456789"
    );
    let long = "a".repeat(100);
    assert!(pod_name(&long, "0123456789abcdef").len() <= 63);
    assert_eq!(
        instance_selector("abc"),
        "app.kubernetes.io/managed-by=hkube,hkube.io/instance=abc"
    );
    assert_eq!(cpu_quantity(0.25), "250m");
    assert_eq!(cpu_quantity(3.0), "3");
}

/// An `env: wasm` worker is one container from the module's image: the sidecar running the
/// module (HKUBE_WASM), named as the algorithm's container, within cpu and mem, with no storage.
#[test]
fn a_wasm_worker_is_one_container_running_its_module() {
    let algorithm = algorithm(json!({
        "name": "mul", "env": "wasm", "algorithmImage": "registry.local/mul:v1",
        "entryPoint": "multiply.wasm", "cpu": 0.5, "mem": "64Mi"
    }));
    let pod = pod_of(&template(), &algorithm, None);
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.containers.len(), 1);
    assert!(spec.volumes.as_ref().is_none_or(Vec::is_empty));
    let worker = container(&pod, ALGORITHM_CONTAINER);
    assert_eq!(worker.image.as_deref(), Some("registry.local/mul:v1"));
    assert_eq!(
        worker.command,
        Some(vec!["/hkube/hkube-wrapper".to_string()])
    );
    let module: wrapper::wasm::worker::ContainerModule =
        serde_json::from_str(&env_value(worker, wrapper::wasm::worker::MODULE_VAR).unwrap())
            .unwrap();
    assert_eq!(
        module.module,
        std::path::PathBuf::from("/hkube/algorithm/multiply.wasm")
    );
    assert_eq!(
        env_value(worker, "HKUBE_ORCHESTRATOR_URL").as_deref(),
        Some("ws://hkube.hkube.svc:3003/link")
    );
    let resources = worker.resources.as_ref().unwrap();
    assert_eq!(
        quantities(&resources.requests),
        BTreeMap::from([
            ("cpu".to_string(), "500m".to_string()),
            ("memory".to_string(), "64Mi".to_string()),
        ])
    );
    assert_eq!(
        quantities(&resources.limits),
        BTreeMap::from([
            ("cpu".to_string(), "1".to_string()),
            ("memory".to_string(), "128Mi".to_string()),
        ])
    );
    snapshot(&pod, "wasm-worker.yaml");
}
