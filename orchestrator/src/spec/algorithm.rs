//! The algorithm descriptor (reference §4.1): its typed form, HKube's checks on a raw one (with
//! HKube's error texts) and its defaults, plus the memory-string reader HKube's scheduler and
//! validator share.
//!
//! Pure like the rest of `spec`: whether the image exists, whether a build is needed and whether
//! the cluster can fit the resources are decided by the store, the builder and the scheduler.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::schema::{
    boolean, bounds, check_algorithm_name, default, format, integer, integer_or_null, number,
    object, one_of, property, require, string, string_or_null, url, STATE_TYPES,
};
use super::{Error, StateType};

/// The memory units HKube accepts, in the order its error message lists them.
const MEMORY_UNITS: &[&str] = &[
    "Ki", "M", "Mi", "Gi", "m", "K", "G", "T", "Ti", "P", "Pi", "E", "Ei",
];
/// Below this an algorithm container cannot start its wrapper.
const MIN_MEMORY_MI: f64 = 4.0;
const CODE_ENVS: &[&str] = &["python", "nodejs", "java", "wasm"];
const ALGORITHM_TYPES: &[&str] = &["Image", "Git", "Code"];
const GIT_KINDS: &[&str] = &["github", "gitlab"];
const ALGORITHM_IMAGE_FORMAT: &str =
    "algorithm image must contain only lower-case alphanumeric, dash or dot";

/// An algorithm as stored: HKube's fields with its defaults; keys this type does not name
/// (`nodeSelector`, `mounts`, `sideCars`, `version`, ...) are kept in `extra` and written back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Algorithm {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<CodeEnv>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm_image: Option<String>,
    /// Where the image comes from; the apply step resolves it when absent (a code file: `Code`,
    /// a git repository: `Git`, else `Image`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub algorithm_type: Option<AlgorithmType>,
    /// Cores requested per worker.
    #[serde(default = "default_cpu")]
    pub cpu: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<f64>,
    /// A Kubernetes memory string with a unit; see [`parse_memory_mi`].
    #[serde(default = "default_mem")]
    pub mem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_memory: Option<String>,
    #[serde(default)]
    pub min_hot_workers: u64,
    /// Cap on concurrent workers; `None` or 0: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<u64>,
    #[serde(default)]
    pub options: AlgorithmOptions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency_install_cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repository: Option<GitRepository>,
    /// Environment of the algorithm container: a string, or `{<valueFrom kind>: {...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm_env: Option<Map<String, Value>>,
    /// Environment of the worker sidecar, same shape as `algorithm_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_env: Option<Map<String, Value>>,
    /// `batch` or `stream`, and internal kinds (`debug`, `output`, `gateway`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The default `stateType` of stream nodes running this algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_type: Option<StateType>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The language runtime of a built algorithm (`env`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeEnv {
    Python,
    Nodejs,
    Java,
    /// A WebAssembly module (a WASI command), run in process by hkube's WASM executor; not
    /// one of HKube's envs.
    Wasm,
}

impl CodeEnv {
    /// The descriptor's spelling: `python`, `nodejs`, `java`.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeEnv::Python => "python",
            CodeEnv::Nodejs => "nodejs",
            CodeEnv::Java => "java",
            CodeEnv::Wasm => "wasm",
        }
    }

    pub fn parse(text: &str) -> Option<CodeEnv> {
        [
            CodeEnv::Python,
            CodeEnv::Nodejs,
            CodeEnv::Java,
            CodeEnv::Wasm,
        ]
        .into_iter()
        .find(|env| env.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlgorithmType {
    Image,
    Git,
    Code,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlgorithmOptions {
    /// Mount the sources synced by `hkubectl sync` instead of the built ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_mode: Option<bool>,
    /// True while the first build runs; the algorithm cannot be scheduled until it ends.
    #[serde(default)]
    pub pending: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opengl: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitRepository {
    pub url: String,
    #[serde(default = "default_branch")]
    pub branch_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default = "default_git_kind")]
    pub git_kind: String,
    /// `{id, timestamp?, message?}`, filled by the API from the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_cpu() -> f64 {
    0.1
}
fn default_mem() -> String {
    "256Mi".to_string()
}
fn default_branch() -> String {
    "master".to_string()
}
fn default_git_kind() -> String {
    "github".to_string()
}

/// Checks an algorithm descriptor the way HKube's `POST /store/algorithms/apply` does (first
/// error wins, ajv texts rooted at `data`, coercion), then fills in the defaults.
///
/// Keys are checked in the order of the §4.1 table: `name`, `env`, `algorithmImage`, `type`,
/// `cpu`, `applyCpuLimits`, `gpu`, `mem`, `reservedMemory`, `minHotWorkers`, `maxWorkers`,
/// `quotaGuarantee`, `options`, `algorithmEnv`, `workerEnv`, `nodeSelector`, `labels`,
/// `annotations`, `kind`, `stateType`, `entryPoint`, `baseImage`, `dependencyInstallCmd`,
/// `gitRepository`, `downloadFileExt`. Other keys are accepted unchecked.
pub fn parse_algorithm(mut value: Value) -> Result<Algorithm, Error> {
    let root = object(&mut value, "data")?;
    if !root.contains_key("name") {
        // The apply route checks this itself before the schema, with its own wording.
        return Err(Error::new(
            "algorithm should have required property \"name\"",
        ));
    }
    property(root, "data", "name", check_algorithm_name)?;
    property(root, "data", "env", |v, p| one_of(v, p, CODE_ENVS))?;
    property(root, "data", "algorithmImage", |v, p| {
        if let Some(image) = string_or_null(v, p)? {
            format(
                !image.chars().any(char::is_whitespace),
                ALGORITHM_IMAGE_FORMAT,
            )?;
        }
        Ok(())
    })?;
    property(root, "data", "type", |v, p| one_of(v, p, ALGORITHM_TYPES))?;
    for key in ["cpu", "gpu"] {
        property(root, "data", key, |v, p| {
            let amount = number(v, p)?;
            bounds(amount, p, Some(0.0), None)
        })?;
    }
    property(root, "data", "applyCpuLimits", |v, p| {
        boolean(v, p).map(drop)
    })?;
    property(root, "data", "mem", |v, p| {
        let mem = parse_memory_mi(string(v, p)?)?;
        if mem < MIN_MEMORY_MI {
            return Err(Error::new("memory must be at least 4 Mi"));
        }
        Ok(())
    })?;
    property(root, "data", "reservedMemory", |v, p| {
        if let Some(reserved) = string_or_null(v, p)? {
            parse_memory_mi(reserved)?;
        }
        Ok(())
    })?;
    property(root, "data", "minHotWorkers", |v, p| {
        let workers = integer(v, p)?;
        bounds(workers, p, Some(0.0), None)
    })?;
    for key in ["maxWorkers", "quotaGuarantee"] {
        property(root, "data", key, |v, p| match integer_or_null(v, p)? {
            Some(count) => bounds(count, p, Some(0.0), None),
            None => Ok(()),
        })?;
    }
    property(root, "data", "options", |v, p| {
        let options = object(v, p)?;
        for key in ["devMode", "pending", "opengl"] {
            property(options, p, key, |v, p| boolean(v, p).map(drop))?;
        }
        Ok(())
    })?;
    for key in [
        "algorithmEnv",
        "workerEnv",
        "nodeSelector",
        "labels",
        "annotations",
    ] {
        property(root, "data", key, |v, p| object(v, p).map(drop))?;
    }
    property(root, "data", "kind", |v, p| string(v, p).map(drop))?;
    property(root, "data", "stateType", |v, p| one_of(v, p, STATE_TYPES))?;
    for key in [
        "entryPoint",
        "baseImage",
        "dependencyInstallCmd",
        "downloadFileExt",
    ] {
        property(root, "data", key, |v, p| string_or_null(v, p).map(drop))?;
    }
    property(root, "data", "gitRepository", check_git_repository)?;
    property(root, "data", HKUBE_EXTENSION, check_hkube_extension)?;
    add_algorithm_defaults(root);
    serde_json::from_value(value).map_err(|e| Error::new(format!("invalid algorithm: {e}")))
}

/// hkube's own algorithm fields, kept apart from HKube's (which ignores them): `x-hkube`.
pub const HKUBE_EXTENSION: &str = "x-hkube";

/// `x-hkube: {command: [program, args...]}`: on the local executor the algorithm's process is
/// this command (run in its code folder) instead of hkube's runtime, as a custom image's
/// entrypoint would be: how an algorithm brings its own wrapper (docs/custom-images.md).
fn check_hkube_extension(value: &mut Value, path: &str) -> Result<(), Error> {
    let extension = object(value, path)?;
    // env: wasm only (docs/wasm.md): the folders a module may open, and its time limit.
    property(extension, path, "dirs", |v, p| {
        let valid = v.as_array().is_some_and(|items| {
            items
                .iter()
                .all(|item| item.as_str().is_some_and(|d| wasm_dir(d).is_some()))
        });
        if valid {
            Ok(())
        } else {
            Err(Error::new(format!(
                "{p} should be a list of folders inside the code folder, each \"name\" (read-only) or \"name:rw\", e.g. [\"data\", \"out:rw\"]; got {v}"
            )))
        }
    })?;
    property(extension, path, "ttl", |v, p| {
        let seconds = super::schema::number(v, p)?;
        if seconds > 0.0 && seconds.is_finite() {
            Ok(())
        } else {
            Err(Error::new(format!(
                "{p} should be a number of seconds above 0, e.g. 5; got {v}"
            )))
        }
    })?;
    property(extension, path, "command", |v, p| {
        let valid = v.as_array().is_some_and(|items| {
            !items.is_empty()
                && items
                    .iter()
                    .all(|item| item.as_str().is_some_and(|text| !text.is_empty()))
        });
        if valid {
            Ok(())
        } else {
            Err(Error::new(format!(
                "{p} should be a non-empty list of non-empty strings, the program and its arguments, e.g. [\"node\", \"app.js\"]; got {v}"
            )))
        }
    })
}

/// `data` or `data:rw` as (folder, writable): a relative path that stays inside the code
/// folder; `None` for anything else.
fn wasm_dir(text: &str) -> Option<(&str, bool)> {
    let (folder, writable) = match text.strip_suffix(":rw") {
        Some(folder) => (folder, true),
        None => (text, false),
    };
    let inside = !folder.is_empty()
        && !folder.starts_with('/')
        && !folder.contains('\0')
        && folder.split('/').all(|part| part != "..");
    inside.then_some((folder, writable))
}

impl Algorithm {
    /// `x-hkube.dirs`: the folders (relative to the code folder) a wasm module may open, and
    /// whether it may write there. Checked by [`parse_algorithm`].
    pub fn wasm_dirs(&self) -> Vec<(String, bool)> {
        self.extra
            .get(HKUBE_EXTENSION)
            .and_then(|extension| extension.get("dirs"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|item| wasm_dir(item.as_str()?))
            .map(|(folder, writable)| (folder.to_string(), writable))
            .collect()
    }

    /// `x-hkube.ttl`: the longest one task of a wasm module may run, in seconds.
    pub fn wasm_ttl(&self) -> Option<f64> {
        self.extra
            .get(HKUBE_EXTENSION)?
            .get("ttl")?
            .as_f64()
            .filter(|seconds| *seconds > 0.0)
    }

    /// The algorithm's own command (`x-hkube.command`), checked by [`parse_algorithm`].
    pub fn local_command(&self) -> Option<Vec<String>> {
        let items = self
            .extra
            .get(HKUBE_EXTENSION)?
            .get("command")?
            .as_array()?;
        items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect()
    }

    /// `algorithmEnv`'s plain values (strings, numbers, booleans) as variables; the `valueFrom`
    /// kinds (secrets, config maps) have no meaning on this machine and are returned apart.
    pub fn plain_env(&self) -> (Vec<(String, String)>, Vec<String>) {
        let mut plain = Vec::new();
        let mut other = Vec::new();
        for (name, value) in self.algorithm_env.iter().flatten() {
            match value {
                Value::String(text) => plain.push((name.clone(), text.clone())),
                Value::Number(_) | Value::Bool(_) => plain.push((name.clone(), value.to_string())),
                _ => other.push(name.clone()),
            }
        }
        (plain, other)
    }
}

fn check_git_repository(value: &mut Value, path: &str) -> Result<(), Error> {
    let git = object(value, path)?;
    require(git, path, "url")?;
    property(git, path, "url", url)?;
    for key in ["branchName", "tag", "token"] {
        property(git, path, key, |v, p| string(v, p).map(drop))?;
    }
    property(git, path, "gitKind", |v, p| one_of(v, p, GIT_KINDS))?;
    property(git, path, "commit", |v, p| {
        let commit = object(v, p)?;
        require(commit, p, "id")?;
        property(commit, p, "id", |v, p| string(v, p).map(drop))
    })
}

/// HKube's defaults (§4.1), written into the value so that what is stored shows them.
fn add_algorithm_defaults(root: &mut Map<String, Value>) {
    default(root, "cpu", Value::from(0.1));
    default(root, "mem", Value::from("256Mi"));
    default(root, "minHotWorkers", Value::from(0));
    if let Some(options) = root
        .entry("options")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
    {
        default(options, "pending", Value::from(false));
    }
    if let Some(git) = root.get_mut("gitRepository").and_then(Value::as_object_mut) {
        default(git, "branchName", Value::from("master"));
        default(git, "gitKind", Value::from("github"));
    }
}

/// Reads a Kubernetes memory string (`"512Mi"`, `"1.5Gi"`, `"3900Ki"`, `"1G"`) as MiB, the way
/// HKube's units converter does: the number is the longest numeric prefix, the unit (one of
/// `Ki, M, Mi, Gi, m, K, G, T, Ti, P, Pi, E, Ei`) is mandatory and decimal units are powers of
/// 1000 bytes, binary ones powers of 1024.
pub fn parse_memory_mi(memory: &str) -> Result<f64, Error> {
    // Like the `parse-unit` package HKube uses: the number is the run of `[0-9.+-]` at the
    // start, whitespace may follow, the rest is the unit.
    let number_end = memory
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(memory.len());
    let (number_text, rest) = memory.split_at(number_end);
    let unit = rest.trim_start();
    if unit.is_empty() {
        return Err(Error::new(format!(
            "memory unit must be one of {}",
            MEMORY_UNITS.join(",")
        )));
    }
    let bytes_per_unit = match unit {
        "m" => 1e-3,
        "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => {
            return Err(Error::new(format!(
                "{unit} is not a valid unit [{}]",
                MEMORY_UNITS.join(",")
            )))
        }
    };
    let amount = leading_number(number_text);
    // HKube lets a missing number through as NaN (then "Mi" passes the 4 Mi check); refused
    // here, as no container can be given "Mi" of memory.
    let Some(amount) = amount else {
        return Err(Error::new(format!(
            "memory \"{memory}\" must start with a number, for example 512Mi"
        )));
    };
    if amount < 0.0 {
        return Err(Error::new("value must be >= 0"));
    }
    Ok(amount * bytes_per_unit / 1024f64.powi(2))
}

/// JS `parseFloat` over a run of `[0-9.+-]`: an optional sign, digits, an optional fraction;
/// whatever follows is ignored (`"1.5.2"` is 1.5). Linear, so a long hostile string costs
/// nothing.
fn leading_number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let digits_from = |start: usize| {
        bytes.get(start..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        })
    };
    let sign = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let whole = digits_from(sign);
    let mut end = sign + whole;
    let mut digits = whole;
    if bytes.get(end) == Some(&b'.') {
        let fraction = digits_from(end + 1);
        if whole + fraction > 0 {
            end += 1 + fraction;
            digits += fraction;
        }
    }
    if digits == 0 {
        return None;
    }
    text.get(..end)?
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A minimal valid algorithm with `patch` merged over it.
    fn algorithm(patch: Value) -> Value {
        let mut base = json!({"name": "m-alg", "algorithmImage": "img"});
        if let (Some(base), Some(patch)) = (base.as_object_mut(), patch.as_object()) {
            for (k, v) in patch {
                base.insert(k.clone(), v.clone());
            }
        }
        base
    }

    /// `"ok"` or the exact error text of `parse_algorithm`.
    fn check(input: Value, expected: &str) {
        let outcome = match parse_algorithm(input.clone()) {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        assert_eq!(outcome, expected, "input: {input}");
    }

    #[test]
    fn descriptor_checks() {
        let units = "memory unit must be one of Ki,M,Mi,Gi,m,K,G,T,Ti,P,Pi,E,Ei";
        let name_format = "algorithm name must contain only lower-case alphanumeric, dash or dot";
        let cases = [
            (json!([]), "data should be object"),
            (json!({"algorithmImage": "img"}), "algorithm should have required property \"name\""),
            (algorithm(json!({"name": ""})), "data.name should NOT be shorter than 1 characters"),
            (algorithm(json!({"name": "a".repeat(33)})), "data.name should NOT be longer than 32 characters"),
            (algorithm(json!({"name": "a".repeat(32)})), "ok"),
            // CC-60
            (algorithm(json!({"name": "notvalid_name"})), name_format),
            (algorithm(json!({"name": "a"})), name_format),
            (algorithm(json!({"name": "ab\\cd"})), name_format),
            (algorithm(json!({"name": "Abc"})), name_format),
            (algorithm(json!({"name": "abc-"})), name_format),
            (algorithm(json!({"name": "a.b-c9"})), "ok"),
            (algorithm(json!({"name": {}})), "data.name should be string"),
            (algorithm(json!({"env": "ruby"})), "data.env should be equal to one of the allowed values (python,nodejs,java,wasm)"),
            (algorithm(json!({"env": "java"})), "ok"),
            (algorithm(json!({"algorithmImage": "my image"})), "algorithm image must contain only lower-case alphanumeric, dash or dot"),
            (algorithm(json!({"algorithmImage": "registry:5000/team/img:v1"})), "ok"),
            (algorithm(json!({"algorithmImage": null})), "ok"),
            (algorithm(json!({"type": "Binary"})), "data.type should be equal to one of the allowed values (Image,Git,Code)"),
            (algorithm(json!({"cpu": -1})), "data.cpu should be >= 0"),
            (algorithm(json!({"cpu": "lots"})), "data.cpu should be number"),
            (algorithm(json!({"gpu": -0.5})), "data.gpu should be >= 0"),
            (algorithm(json!({"applyCpuLimits": "maybe"})), "data.applyCpuLimits should be boolean"),
            // CC-59
            (algorithm(json!({"mem": "3900Ki"})), "memory must be at least 4 Mi"),
            (algorithm(json!({"mem": "512"})), units),
            (algorithm(json!({"mem": 512})), units),
            (algorithm(json!({"mem": "4Mi"})), "ok"),
            (algorithm(json!({"mem": "1.5Gi"})), "ok"),
            (algorithm(json!({"mem": "512Xi"})), "Xi is not a valid unit [Ki,M,Mi,Gi,m,K,G,T,Ti,P,Pi,E,Ei]"),
            (algorithm(json!({"mem": "Mi"})), "memory \"Mi\" must start with a number, for example 512Mi"),
            (algorithm(json!({"mem": "-5Mi"})), "value must be >= 0"),
            (algorithm(json!({"reservedMemory": 300})), units),
            (algorithm(json!({"reservedMemory": null})), "ok"),
            (algorithm(json!({"reservedMemory": "1Mi"})), "ok"),
            (algorithm(json!({"minHotWorkers": -1})), "data.minHotWorkers should be >= 0"),
            (algorithm(json!({"minHotWorkers": 1.5})), "data.minHotWorkers should be integer"),
            (algorithm(json!({"maxWorkers": null})), "ok"),
            (algorithm(json!({"maxWorkers": "x"})), "data.maxWorkers should be integer,null"),
            (algorithm(json!({"options": []})), "data.options should be object"),
            (algorithm(json!({"options": {"pending": "no"}})), "data.options.pending should be boolean"),
            (algorithm(json!({"options": {"debug": true}})), "ok"),
            (algorithm(json!({"algorithmEnv": "A=1"})), "data.algorithmEnv should be object"),
            (algorithm(json!({"workerEnv": {"A": "1"}})), "ok"),
            (algorithm(json!({"stateType": "solid"})), "data.stateType should be equal to one of the allowed values (stateless,stateful)"),
            (algorithm(json!({"entryPoint": []})), "data.entryPoint should be string,null"),
            (algorithm(json!({"entryPoint": null, "baseImage": "python:3.10"})), "ok"),
            (algorithm(json!({"gitRepository": {}})), "data.gitRepository should have required property 'url'"),
            (algorithm(json!({"gitRepository": {"url": "github.com/x"}})), "data.gitRepository.url should match format \"url\""),
            (algorithm(json!({"gitRepository": {"url": "https://github.com/x/y", "gitKind": "svn"}})),
             "data.gitRepository.gitKind should be equal to one of the allowed values (github,gitlab)"),
            (algorithm(json!({"gitRepository": {"url": "https://github.com/x/y"}})), "ok"),
            (algorithm(json!({"nodeSelector": {"disktype": "ssd"}, "mounts": [], "anything": 1})), "ok"),
            // hkube's own command for the local executor (issue 17.5).
            (algorithm(json!({"x-hkube": {"command": ["node", "app.js"]}})), "ok"),
            (algorithm(json!({"x-hkube": {}})), "ok"),
            (algorithm(json!({"x-hkube": ["node"]})), "data['x-hkube'] should be object"),
            (algorithm(json!({"x-hkube": {"command": []}})),
             "data['x-hkube'].command should be a non-empty list of non-empty strings, the program and its arguments, e.g. [\"node\", \"app.js\"]; got []"),
            (algorithm(json!({"x-hkube": {"command": "node app.js"}})),
             "data['x-hkube'].command should be a non-empty list of non-empty strings, the program and its arguments, e.g. [\"node\", \"app.js\"]; got \"node app.js\""),
            (algorithm(json!({"x-hkube": {"dirs": ["data", "out:rw", "a/b"], "ttl": 2.5}})), "ok"),
            (algorithm(json!({"x-hkube": {"dirs": ["../etc"]}})),
             "data['x-hkube'].dirs should be a list of folders inside the code folder, each \"name\" (read-only) or \"name:rw\", e.g. [\"data\", \"out:rw\"]; got [\"../etc\"]"),
            (algorithm(json!({"x-hkube": {"dirs": "/data"}})),
             "data['x-hkube'].dirs should be a list of folders inside the code folder, each \"name\" (read-only) or \"name:rw\", e.g. [\"data\", \"out:rw\"]; got \"/data\""),
            (algorithm(json!({"x-hkube": {"ttl": 0}})),
             "data['x-hkube'].ttl should be a number of seconds above 0, e.g. 5; got 0"),
            (algorithm(json!({"x-hkube": {"command": ["node", ""]}})),
             "data['x-hkube'].command should be a non-empty list of non-empty strings, the program and its arguments, e.g. [\"node\", \"app.js\"]; got [\"node\",\"\"]"),
            // First error wins, in table order: name before mem.
            (algorithm(json!({"name": "Bad", "mem": "1"})), name_format),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn defaults_and_coercion() {
        let parsed = parse_algorithm(json!({
            "name": "alg", "cpu": "2", "minHotWorkers": "1", "options": {"devMode": "true"},
            "gitRepository": {"url": "https://github.com/x/y"}, "nodeSelector": {"a": "b"}
        }));
        let Ok(parsed) = parsed else {
            panic!("rejected: {parsed:?}");
        };
        assert_eq!(parsed.cpu, 2.0);
        assert_eq!(parsed.mem, "256Mi");
        assert_eq!(parsed.min_hot_workers, 1);
        assert_eq!(parsed.options.dev_mode, Some(true));
        assert!(!parsed.options.pending);
        assert_eq!(
            parsed
                .git_repository
                .as_ref()
                .map(|g| (g.branch_name.as_str(), g.git_kind.as_str())),
            Some(("master", "github"))
        );
        assert_eq!(parsed.extra.get("nodeSelector"), Some(&json!({"a": "b"})));

        let minimal = parse_algorithm(json!({"name": "alg"}));
        let Ok(minimal) = minimal else {
            panic!("rejected: {minimal:?}");
        };
        assert_eq!(minimal.cpu, 0.1);
        assert_eq!(minimal.min_hot_workers, 0);
        assert_eq!(
            serde_json::to_value(&minimal).ok(),
            Some(
                json!({"name": "alg", "cpu": 0.1, "mem": "256Mi", "minHotWorkers": 0, "options": {"pending": false}})
            )
        );
    }

    #[test]
    fn memory_strings() {
        let cases = [
            ("256Mi", Ok(256.0)),
            ("1.5Gi", Ok(1536.0)),
            ("500Ki", Ok(0.48828125)),
            ("3900Ki", Ok(3900.0 / 1024.0)),
            ("1Ti", Ok(1024.0 * 1024.0)),
            ("1000000M", Ok(1e12 / 1048576.0)),
            ("1G", Ok(1e9 / 1048576.0)),
            ("2 Mi", Ok(2.0)),
            ("1.5.2Mi", Ok(1.5)),
            ("+2.Mi", Ok(2.0)),
            (".5Gi", Ok(512.0)),
            ("0Mi", Ok(0.0)),
            (
                "512",
                Err("memory unit must be one of Ki,M,Mi,Gi,m,K,G,T,Ti,P,Pi,E,Ei"),
            ),
            (
                "",
                Err("memory unit must be one of Ki,M,Mi,Gi,m,K,G,T,Ti,P,Pi,E,Ei"),
            ),
            (
                "1.5i",
                Err("i is not a valid unit [Ki,M,Mi,Gi,m,K,G,T,Ti,P,Pi,E,Ei]"),
            ),
            (
                " 512Mi",
                Err("512Mi is not a valid unit [Ki,M,Mi,Gi,m,K,G,T,Ti,P,Pi,E,Ei]"),
            ),
            (
                "-Mi",
                Err("memory \"-Mi\" must start with a number, for example 512Mi"),
            ),
            ("-1Gi", Err("value must be >= 0")),
        ];
        for (input, expected) in cases {
            let outcome = parse_memory_mi(input).map_err(|e| e.to_string());
            assert_eq!(
                outcome,
                expected.map_err(str::to_string),
                "input: {input:?}"
            );
        }
    }

    #[test]
    fn odd_values_never_panic() {
        for value in [
            json!(null),
            json!({"name": null}),
            json!({"name": "ab", "mem": "\u{1F600}Mi"}),
            json!({"name": "ab", "mem": "9".repeat(400) + "Ei"}),
            json!({"name": "ab", "mem": "1.".repeat(200_000) + "Mi"}),
            json!({"name": "ab", "cpu": 1e308, "maxWorkers": -1e300}),
            json!({"name": "ab", "minHotWorkers": u64::MAX}),
            json!({"name": "ab", "gitRepository": {"url": "https://x", "commit": {}}}),
        ] {
            let _ = parse_algorithm(value);
        }
    }
}
