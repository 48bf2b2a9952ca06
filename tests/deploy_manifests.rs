//! The deployment files in `deploy/`: the plain manifests (`deploy/kubernetes`, applied with
//! `kubectl apply -k`) and the Helm chart (`deploy/helm/hkube`) that makes the same objects.
//!
//! No cluster runs here, so the checks are what can be told from the files: every manifest is
//! read into its `k8s_openapi` type and written back unchanged (a misspelt or misplaced field
//! would be dropped by the type and the comparison fails); the chart's templates, rendered with
//! its default values for a release `hkube` in namespace `hkube`, are the plain manifests; the
//! RBAC rules are exactly the verbs the server uses; and the names and ports the objects refer
//! to each other by agree, as do the server's flags with `hkube server --help`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The YAML documents of a file, as JSON values (empty documents, such as a file's comments
/// before a `---`, left out).
fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|value| !value.is_null())
        .collect()
}

/// `value` read as `T` and written back: equal to `value` when every field is one `T` knows
/// where it stands.
fn typed<T: DeserializeOwned + serde::Serialize>(value: &Value, file: &str) -> T {
    let object: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{file}: not a {}: {e}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&object).unwrap();
    assert_eq!(
        &back, value,
        "{file}: {} drops or changes fields (a misspelt or misplaced one?)",
        value["kind"]
    );
    object
}

/// Every object of the plain manifests, by kind.
#[derive(Default)]
struct Objects {
    service_accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    claims: Vec<PersistentVolumeClaim>,
    services: Vec<Service>,
    deployments: Vec<Deployment>,
    secrets: Vec<Secret>,
}

impl Objects {
    fn add(&mut self, value: &Value, file: &str) {
        match value["kind"].as_str().unwrap_or_default() {
            "ServiceAccount" => self.service_accounts.push(typed(value, file)),
            "Role" => self.roles.push(typed(value, file)),
            "RoleBinding" => self.role_bindings.push(typed(value, file)),
            "ClusterRole" => self.cluster_roles.push(typed(value, file)),
            "ClusterRoleBinding" => self.cluster_role_bindings.push(typed(value, file)),
            "PersistentVolumeClaim" => self.claims.push(typed(value, file)),
            "Service" => self.services.push(typed(value, file)),
            "Deployment" => self.deployments.push(typed(value, file)),
            "Secret" => self.secrets.push(typed(value, file)),
            other => panic!("{file}: a {other} is not expected in hkube's deployment"),
        }
    }
}

/// The kustomization's fields this test reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kustomization {
    namespace: String,
    resources: Vec<String>,
    secret_generator: Vec<SecretGenerator>,
}

#[derive(Deserialize)]
struct SecretGenerator {
    name: String,
    envs: Vec<String>,
}

fn kustomization() -> Kustomization {
    let text = std::fs::read_to_string(deploy().join("kubernetes/kustomization.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn plain_objects() -> Objects {
    let mut objects = Objects::default();
    for file in kustomization().resources {
        let text = std::fs::read_to_string(deploy().join("kubernetes").join(&file)).unwrap();
        for document in documents(&text) {
            objects.add(&document, &file);
        }
    }
    objects
}

/// The chart's templates with `{{ .Release.Name }}`, `{{ .Release.Namespace }}` and
/// `{{ .Values.a.b }}` put in, as Helm does with the default values: the templates use nothing
/// else (no conditionals), so that this is all it takes to render them here without Helm.
fn render(template: &str, values: &Value, release: &str, namespace: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .unwrap_or_else(|| panic!("an unclosed {{{{ in {template}"));
        let expression = rest[start + 2..start + end].trim();
        let value = match expression {
            ".Release.Name" => release.to_string(),
            ".Release.Namespace" => namespace.to_string(),
            path => {
                let path = path.strip_prefix(".Values.").unwrap_or_else(|| {
                    panic!("{{{{ {path} }}}}: the chart's templates use only .Release.Name, .Release.Namespace and .Values (no functions), so that this test renders them")
                });
                let found = path.split('.').fold(values, |value, key| &value[key]);
                match found {
                    Value::String(text) => text.clone(),
                    Value::Number(number) => number.to_string(),
                    other => panic!(".Values.{path} is {other}, not a string or number"),
                }
            }
        };
        out.push_str(&value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

fn chart_values() -> Value {
    let text = std::fs::read_to_string(deploy().join("helm/hkube/values.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn rendered_template(name: &str) -> Vec<Value> {
    let path = deploy().join("helm/hkube/templates").join(name);
    let template = std::fs::read_to_string(path).unwrap();
    documents(&render(&template, &chart_values(), "hkube", "hkube"))
}

fn yaml_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect()
}

#[test]
fn every_plain_manifest_is_a_kubernetes_object_and_listed_by_the_kustomization() {
    let listed: BTreeSet<String> = kustomization().resources.into_iter().collect();
    let mut files = yaml_files(&deploy().join("kubernetes"));
    files.remove("kustomization.yaml");
    assert_eq!(listed, files, "kustomization.yaml lists every manifest");
    let objects = plain_objects();
    assert_eq!(objects.deployments.len(), 1);
    assert_eq!(objects.services.len(), 1);
    assert_eq!(objects.claims.len(), 1);
    assert_eq!(objects.service_accounts.len(), 1);
    assert_eq!(kustomization().namespace, "hkube");
}

#[test]
fn the_chart_renders_the_plain_manifests() {
    let templates = yaml_files(&deploy().join("helm/hkube/templates"));
    let plain: BTreeSet<String> = kustomization().resources.into_iter().collect();
    // The Secrets are the chart's from its values; kustomize generates them from env files.
    let expected: BTreeSet<String> = plain
        .iter()
        .cloned()
        .chain(["secrets.yaml".to_string()])
        .collect();
    assert_eq!(templates, expected);
    for file in &plain {
        let text = std::fs::read_to_string(deploy().join("kubernetes").join(file)).unwrap();
        assert_eq!(
            rendered_template(file),
            documents(&text),
            "deploy/kubernetes/{file} is not the chart's template rendered with its defaults"
        );
    }
    // The chart's Secrets are the ones kustomize generates: the same names and keys.
    let mut chart_secrets = BTreeMap::new();
    for document in rendered_template("secrets.yaml") {
        let secret: Secret = typed(&document, "secrets.yaml");
        let keys: BTreeSet<String> = secret.string_data.unwrap().into_keys().collect();
        chart_secrets.insert(secret.metadata.name.unwrap(), keys);
    }
    let mut generated = BTreeMap::new();
    for generator in kustomization().secret_generator {
        let mut keys = BTreeSet::new();
        for env in &generator.envs {
            let example = deploy().join("kubernetes").join(format!("{env}.example"));
            let text = std::fs::read_to_string(&example)
                .unwrap_or_else(|e| panic!("{}: {e}", example.display()));
            keys.extend(
                text.lines()
                    .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
                    .map(|line| line.split('=').next().unwrap().to_string()),
            );
        }
        generated.insert(generator.name, keys);
    }
    assert_eq!(chart_secrets, generated);
}

fn rule(resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

#[test]
fn rbac_grants_exactly_the_verbs_the_server_uses() {
    let objects = plain_objects();
    let [role] = &objects.roles[..] else {
        panic!("one Role")
    };
    assert_eq!(
        role.rules.clone().unwrap(),
        vec![
            rule(
                &["pods"],
                &[
                    "create",
                    "get",
                    "list",
                    "watch",
                    "delete",
                    "deletecollection"
                ]
            ),
            rule(&["pods/log"], &["get"]),
        ]
    );
    let [cluster_role] = &objects.cluster_roles[..] else {
        panic!("one ClusterRole")
    };
    // Nodes are cluster-scoped; pods of every namespace are read (never written) for the
    // inventory of what the nodes have left.
    assert_eq!(
        cluster_role.rules.clone().unwrap(),
        vec![
            rule(&["nodes"], &["get", "list", "watch"]),
            rule(&["pods"], &["list", "watch"]),
        ]
    );
    let account = objects.service_accounts[0].metadata.name.clone().unwrap();
    let [binding] = &objects.role_bindings[..] else {
        panic!("one RoleBinding")
    };
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let [cluster_binding] = &objects.cluster_role_bindings[..] else {
        panic!("one ClusterRoleBinding")
    };
    assert_eq!(cluster_binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(&cluster_binding.role_ref.name),
        cluster_role.metadata.name.as_ref()
    );
    for subjects in [&binding.subjects, &cluster_binding.subjects] {
        let [subject] = &subjects.as_deref().unwrap() else {
            panic!("one subject")
        };
        assert_eq!(subject.kind, "ServiceAccount");
        assert_eq!(subject.name, account);
        assert_eq!(subject.namespace.as_deref(), Some("hkube"));
    }
    let pod = objects.deployments[0].spec.clone().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(account.as_str()));
}

/// The server's `--name=value` arguments.
fn flags(args: &[String]) -> BTreeMap<String, String> {
    args.iter()
        .filter_map(|arg| arg.strip_prefix("--"))
        .map(|arg| {
            let (name, value) = arg.split_once('=').unwrap_or((arg, ""));
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// Flags the Kubernetes launcher brings to `hkube server`. Until it is part of the server they
/// are all absent from its --help; once it is, each must be there (a renamed one is caught).
const LAUNCHER_FLAGS: [&str; 4] = [
    "namespace",
    "link-listen",
    "link-address",
    "image-pull-secret",
];

#[test]
fn the_deployment_service_claim_and_secrets_refer_to_each_other() {
    let objects = plain_objects();
    let deployment = &objects.deployments[0];
    let pod = deployment.spec.clone().template.spec.unwrap();
    let [server] = &pod.containers[..] else {
        panic!("one container")
    };
    let args = server.args.clone().unwrap();
    assert_eq!(args[0], "server");
    let flags = flags(&args);
    assert_eq!(flags["executor"], "kubernetes");
    assert_eq!(flags["storage"], "s3");
    assert_eq!(flags["namespace"], "$(POD_NAMESPACE)");

    // Ports: the Service's api and link reach the container's ports of those names, which the
    // server listens on; the sidecars dial the Service's link port.
    let service = &objects.services[0];
    let service_name = service.metadata.name.clone().unwrap();
    let container_ports: BTreeMap<String, i32> = server
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), p.container_port))
        .collect();
    let service_ports: BTreeMap<String, i32> = service
        .spec
        .clone()
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .map(|p| {
            let name = p.name.unwrap();
            let target = p.target_port.unwrap();
            assert_eq!(
                target,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name.clone())
            );
            (name, p.port)
        })
        .collect();
    assert_eq!(
        service_ports.keys().collect::<Vec<_>>(),
        ["api", "link"],
        "the Service's ports are named api and link"
    );
    assert_eq!(container_ports, service_ports);
    assert_eq!(flags["listen"], format!("0.0.0.0:{}", service_ports["api"]));
    assert_eq!(
        flags["link-listen"],
        format!("0.0.0.0:{}", service_ports["link"])
    );
    assert_eq!(
        flags["link-address"],
        format!(
            "{service_name}.$(POD_NAMESPACE).svc:{}",
            service_ports["link"]
        )
    );
    let selector = service.spec.clone().unwrap().selector.unwrap();
    let labels = deployment
        .spec
        .clone()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));

    // The state folder is the claim's volume.
    let mounts = server.volume_mounts.clone().unwrap();
    let state = mounts
        .iter()
        .find(|m| m.mount_path == flags["state-dir"])
        .expect("--state-dir is a mounted volume");
    let volume = pod
        .volumes
        .clone()
        .unwrap()
        .into_iter()
        .find(|v| v.name == state.name)
        .unwrap();
    assert_eq!(
        volume.persistent_volume_claim.unwrap().claim_name,
        objects.claims[0].metadata.name.clone().unwrap()
    );

    // The Secrets it reads are the ones kustomize generates (and the chart makes).
    let generated: BTreeSet<String> = kustomization()
        .secret_generator
        .into_iter()
        .map(|g| g.name)
        .collect();
    let env = server.env.clone().unwrap();
    let token = env.iter().find(|e| e.name == "HKUBE_TOKEN").unwrap();
    let token_ref = token.value_from.clone().unwrap().secret_key_ref.unwrap();
    assert!(generated.contains(&token_ref.name));
    let s3 = server.env_from.clone().unwrap()[0]
        .secret_ref
        .clone()
        .unwrap()
        .name;
    assert!(generated.contains(&s3));
    let namespace = env.iter().find(|e| e.name == "POD_NAMESPACE").unwrap();
    assert_eq!(
        namespace
            .value_from
            .clone()
            .unwrap()
            .field_ref
            .unwrap()
            .field_path,
        "metadata.namespace"
    );

    // Every flag is one `hkube server` takes.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_hkube"))
        .args(["server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let known =
        |flag: &str| help.contains(&format!("--{flag} ")) || help.contains(&format!("--{flag}\n"));
    let launcher_merged = LAUNCHER_FLAGS.iter().any(|flag| known(flag));
    for flag in flags.keys() {
        if !launcher_merged && LAUNCHER_FLAGS.contains(&flag.as_str()) {
            continue;
        }
        assert!(known(flag), "hkube server has no --{flag}:\n{help}");
    }
    for variable in ["HKUBE_REGISTRY", "HKUBE_TOKEN", "HKUBE_LOG_FORMAT"] {
        assert!(env.iter().any(|e| e.name == variable));
        assert!(help.contains(variable), "hkube server reads no {variable}");
    }
}
