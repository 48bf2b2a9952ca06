//! `hkube algorithm apply|list|get|delete` (hkubectl's `algorithm` group, reference §4.4, §6.2).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

use super::{cell, pack, read_document, segment, table::table, Ctx, RemoteArgs};
use crate::client::{self, Part};

#[derive(Debug, clap::Args)]
pub struct AlgorithmArgs {
    #[command(flatten)]
    pub(super) remote: RemoteArgs,
    #[command(subcommand)]
    command: AlgorithmCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AlgorithmCommand {
    /// Create or update an algorithm from hkubectl's YAML (`name`, `env`, `code.path`,
    /// `code.entryPoint`, `resources`, `algorithmImage`/`image`, any algorithm field); flags
    /// override the file. Code is packed as a tar.gz (honouring .hkubeignore) and uploaded.
    Apply(ApplyArgs),
    /// The stored algorithms: NAME ENV IMAGE CPU MEM.
    List,
    /// One stored algorithm.
    Get { name: String },
    /// Delete a stored algorithm; --force also deletes the pipelines that use it and stops
    /// its unfinished jobs.
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Default, clap::Args)]
struct ApplyArgs {
    /// The algorithm's name (overrides the file's).
    name: Option<String>,
    /// The algorithm's YAML or JSON file.
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
    #[arg(long, value_parser = ["python", "nodejs", "java"])]
    env: Option<String>,
    /// The code: a folder (packed as tar.gz) or a .zip/.tar.gz archive.
    #[arg(long = "codePath", alias = "code-path", value_name = "PATH")]
    code_path: Option<PathBuf>,
    /// The file or module the runtime loads.
    #[arg(
        long = "codeEntryPoint",
        visible_alias = "entryPoint",
        alias = "entry-point",
        value_name = "ENTRY"
    )]
    entry_point: Option<String>,
    /// A ready image (no build).
    #[arg(
        long = "algorithmImage",
        visible_alias = "image",
        alias = "algorithm-image",
        value_name = "IMAGE"
    )]
    image: Option<String>,
    #[arg(long)]
    cpu: Option<f64>,
    #[arg(long)]
    gpu: Option<f64>,
    /// Memory with its unit, such as 512Mi.
    #[arg(long)]
    mem: Option<String>,
    /// Make this the current definition of an existing algorithm (sent as
    /// options.forceUpdate; without it a change only makes a new version).
    #[arg(long = "setCurrent", alias = "set-current")]
    set_current: bool,
    /// Accepted for hkubectl's scripts: there are no builds to wait for yet.
    #[arg(long = "noWait", alias = "no-wait")]
    no_wait: bool,
}

pub(super) fn run(ctx: &Ctx, args: AlgorithmArgs) -> anyhow::Result<u8> {
    match args.command {
        AlgorithmCommand::Apply(apply) => self::apply(ctx, apply),
        AlgorithmCommand::List => {
            let response = ctx.client.get("store/algorithms")?;
            ctx.print(&response, |value| {
                let rows: Vec<Vec<String>> = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        ["name", "env", "algorithmImage", "cpu", "mem"]
                            .iter()
                            .map(|key| cell(&a[*key]))
                            .collect()
                    })
                    .collect();
                table(&["NAME", "ENV", "IMAGE", "CPU", "MEM"], &rows)
            })?;
            Ok(0)
        }
        AlgorithmCommand::Get { name } => {
            let response = ctx
                .client
                .get(&format!("store/algorithms/{}", segment(&name)))?;
            ctx.print_document(&response)?;
            Ok(0)
        }
        AlgorithmCommand::Delete { name, force } => {
            let query = if force { "?force=true" } else { "" };
            let response = ctx
                .client
                .delete(&format!("store/algorithms/{}{query}", segment(&name)))?;
            ctx.print(&response, |value| cell(&value["message"]))?;
            Ok(0)
        }
    }
}

/// The request `apply` sends: the payload, and the code to upload if any.
#[derive(Debug, PartialEq)]
struct Apply {
    payload: Value,
    code: Option<PathBuf>,
}

/// hkubectl's YAML plus the flags → the payload: the algorithm minus `code`, with
/// `entryPoint`, `resources` spread into `cpu`/`gpu`/`mem`, `image` as `algorithmImage`.
/// `code.path` is relative to the file's folder; `--codePath` to the current folder.
fn payload(document: Option<Value>, file_dir: &Path, args: &ApplyArgs) -> anyhow::Result<Apply> {
    let mut algorithm: Map<String, Value> = match document {
        None => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => bail!("the algorithm file must hold an object"),
    };
    let mut code_path = None;
    let mut entry_point = None;
    match algorithm.remove("code") {
        None | Some(Value::Null) => {}
        Some(Value::Object(code)) => {
            if let Some(path) = code.get("path").and_then(Value::as_str) {
                // `path: .` names the file's folder itself: `dir`, not `dir/.`.
                code_path = Some(file_dir.join(path).components().collect());
            }
            entry_point = code.get("entryPoint").cloned();
        }
        Some(_) => bail!("code must be an object with path and entryPoint"),
    }
    if let Some(image) = algorithm.remove("image") {
        algorithm.entry("algorithmImage").or_insert(image);
    }
    if let Some(resources) = algorithm.remove("resources") {
        let Value::Object(resources) = resources else {
            bail!("resources must be an object with cpu, gpu and mem");
        };
        for key in ["cpu", "gpu", "mem"] {
            if let Some(value) = resources.get(key) {
                algorithm.insert(key.to_string(), value.clone());
            }
        }
    }
    if let Some(entry) = entry_point {
        algorithm.insert("entryPoint".into(), entry);
    }
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            algorithm.insert(key.to_string(), value);
        }
    };
    set("name", args.name.clone().map(Value::from));
    set("env", args.env.clone().map(Value::from));
    set("entryPoint", args.entry_point.clone().map(Value::from));
    set("algorithmImage", args.image.clone().map(Value::from));
    set("cpu", args.cpu.map(Value::from));
    set("gpu", args.gpu.map(Value::from));
    set("mem", args.mem.clone().map(Value::from));
    if let Some(path) = &args.code_path {
        code_path = Some(path.clone());
    }
    if !algorithm.contains_key("name") {
        bail!("the algorithm needs a name: give it as `hkube algorithm apply NAME` or as name: in the file");
    }
    Ok(Apply {
        payload: Value::Object(algorithm),
        code: code_path,
    })
}

fn apply(ctx: &Ctx, args: ApplyArgs) -> anyhow::Result<u8> {
    let (document, file_dir) = match &args.file {
        Some(file) => {
            let dir = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            (Some(read_document(file)?), dir)
        }
        None => (None, PathBuf::from(".")),
    };
    let apply = payload(document, &file_dir, &args)?;
    let mut parts = vec![Part {
        name: "payload".into(),
        filename: None,
        content: apply.payload.to_string().into_bytes(),
    }];
    if args.set_current {
        parts.push(Part {
            name: "options".into(),
            filename: None,
            content: json!({"forceUpdate": true}).to_string().into_bytes(),
        });
    }
    let file = match &apply.code {
        Some(path) => Some(code_archive(path)?),
        None => None,
    };
    let uploads_code = file.is_some();
    let (filename, content) = file.unwrap_or_default();
    parts.push(Part {
        name: "file".into(),
        filename: Some(filename),
        content,
    });
    let response = match ctx.client.post_multipart("store/algorithms/apply", &parts) {
        Ok(response) => response,
        Err(client::Error::Api {
            status: 400,
            message,
            ..
        }) if uploads_code => {
            let code = apply.code.as_deref().unwrap_or(Path::new("."));
            eprintln!("hkube: {message}");
            eprintln!(
                "hkube: the code in {} was packed and sent; a server without a container engine runs a folder's algorithms with `hkube server --algorithms DIR`",
                code.display()
            );
            return Ok(1);
        }
        Err(error) => return Err(error.into()),
    };
    ctx.print(&response, |value| {
        let mut text = String::new();
        for message in value["messages"].as_array().into_iter().flatten() {
            text.push_str(&cell(message));
            text.push('\n');
        }
        text
    })?;
    let build_id = response.json()?["buildId"].as_str().map(str::to_string);
    match build_id {
        Some(build_id) if !args.no_wait => wait_for_build(ctx, &build_id),
        _ => Ok(0),
    }
}

/// Follows a build as hkubectl does (its status every half second), on stderr; 0 when it
/// completed, 1 when it failed or was stopped (with the reason).
fn wait_for_build(ctx: &Ctx, build_id: &str) -> anyhow::Result<u8> {
    let mut shown = String::new();
    loop {
        let record = ctx
            .client
            .get(&format!("builds/status/{build_id}"))?
            .json()?;
        let status = record["status"].as_str().unwrap_or_default();
        let line = format!("build {build_id}: {status} {}%", record["progress"]);
        if line != shown {
            eprintln!("hkube: {line}");
            shown = line;
        }
        match status {
            "completed" => {
                eprintln!(
                    "hkube: built {}",
                    record["algorithmImage"].as_str().unwrap_or_default()
                );
                return Ok(0);
            }
            "failed" | "stopped" => {
                eprintln!(
                    "hkube: build {build_id} {status}: {}",
                    record["error"].as_str().unwrap_or("stopped by request")
                );
                eprintln!("hkube: the whole log: GET /api/v1/builds/logs/{build_id}");
                return Ok(1);
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

/// The code to upload: a folder packed as tar.gz, or an archive or a wasm module as it is.
fn code_archive(path: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    if path.is_dir() {
        let (bytes, names) = pack::pack(path)?;
        if names.is_empty() {
            bail!("{} holds no files to upload", path.display());
        }
        return Ok(("code.tar.gz".to_string(), bytes));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    // A .wasm goes as it is: the server takes a bare module for an env: wasm algorithm.
    if ![".zip", ".tar.gz", ".tgz", ".wasm"]
        .iter()
        .any(|ext| name.ends_with(ext))
    {
        bail!(
            "{}: code must be a folder, a .zip, a .tar.gz or a .wasm module",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((name, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: Option<&str>, args: ApplyArgs, expected: Value, code: Option<&str>) {
        let document = yaml.map(|y| orchestrator::spec::read_document(y).unwrap());
        let apply = payload(document, Path::new("algs/range"), &args).unwrap();
        assert_eq!(apply.payload, expected);
        assert_eq!(apply.code, code.map(PathBuf::from));
    }

    #[test]
    fn the_yaml_shape_becomes_the_payload() {
        check(
            Some(
                "name: range\nenv: python\ncode: {path: ., entryPoint: main.py}\nresources: {cpu: 0.5, mem: 512Mi}\nminHotWorkers: 1\n",
            ),
            ApplyArgs::default(),
            json!({"name": "range", "env": "python", "minHotWorkers": 1, "cpu": 0.5, "mem": "512Mi", "entryPoint": "main.py"}),
            Some("algs/range"),
        );
        check(
            Some("name: img\nimage: repo/img:1\n"),
            ApplyArgs::default(),
            json!({"name": "img", "algorithmImage": "repo/img:1"}),
            None,
        );
    }

    #[test]
    fn flags_override_the_file() {
        check(
            Some("name: a\nenv: python\ncode: {path: src, entryPoint: main.py}\ncpu: 1\n"),
            ApplyArgs {
                name: Some("b".into()),
                env: Some("nodejs".into()),
                entry_point: Some("index.js".into()),
                code_path: Some("elsewhere".into()),
                cpu: Some(2.0),
                mem: Some("1Gi".into()),
                image: Some("r/b:2".into()),
                ..ApplyArgs::default()
            },
            json!({"name": "b", "env": "nodejs", "cpu": 2.0, "entryPoint": "index.js", "algorithmImage": "r/b:2", "mem": "1Gi"}),
            Some("elsewhere"),
        );
        check(
            None,
            ApplyArgs {
                name: Some("only-flags".into()),
                image: Some("r/x:1".into()),
                ..ApplyArgs::default()
            },
            json!({"name": "only-flags", "algorithmImage": "r/x:1"}),
            None,
        );
    }

    #[test]
    fn a_name_is_needed() {
        let error = payload(None, Path::new("."), &ApplyArgs::default()).unwrap_err();
        assert!(error.to_string().contains("needs a name"), "{error}");
    }
}
