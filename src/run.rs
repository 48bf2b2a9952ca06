//! `hkube run`: one pipeline on this machine, with the local executor, from a folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use orchestrator::cache::{self, CachingExecutor};
use orchestrator::engine::{Engine, EngineOptions, Handle};
use orchestrator::executor::local::{LocalExecutor, LocalOptions, Runtimes};
use orchestrator::executor::wasm::{route::Routed, WasmExecutor, WasmOptions};
use orchestrator::notify::{WebhookOptions, Webhooks};
use orchestrator::project::Runner;
use orchestrator::store::{MemoryStore, Store};
use orchestrator::{project, spec};
use serde_json::Value;

use crate::progress::Progress;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A pipeline file (JSON or YAML), or a folder holding one pipeline file and its algorithms.
    path: PathBuf,
    /// More folders to search for `algorithm.yml` files (repeatable).
    #[arg(long = "algorithms", value_name = "DIR")]
    algorithms: Vec<PathBuf>,
    /// JSON merged over the pipeline's flowInput, e.g. '{"N": 500}'.
    #[arg(long = "flow-input", value_name = "JSON")]
    flow_input: Option<String>,
    /// No progress and no closing summary on stderr (a failed job is still explained).
    #[arg(long, short)]
    quiet: bool,
    /// Where storage (large results), task logs and compiled code go.
    #[arg(long, env = "HKUBE_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    inventory: crate::inventory::InventoryArgs,
}

/// `$HKUBE_STATE_DIR`, else `~/.local/state/hkube`, else a folder under the temp dir.
pub fn default_state_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/hkube"),
        None => std::env::temp_dir().join("hkube-state"),
    }
}

/// The local executor's settings for a state dir (the language runtimes are written there)
/// and the machine's inventory.
pub fn local_options(
    state_dir: &Path,
    inventory: &crate::inventory::InventoryArgs,
) -> anyhow::Result<LocalOptions> {
    Ok(LocalOptions {
        runtimes: Runtimes::in_state_dir(state_dir)?,
        inventory: inventory.node()?,
        limits: inventory.limits(),
        storage_dir: state_dir.join("storage"),
        log_dir: state_dir.join("logs"),
        work_dir: state_dir.join("work"),
        ..LocalOptions::default()
    })
}

/// The WASM executor's settings for a state dir: compiled modules are kept in
/// How long `hkube run` waits, at its end, for the optimised code of modules new to the cache.
const WASM_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// `<state>/wasm-cache`, task logs beside the other tasks'.
pub fn wasm_options(state_dir: &Path) -> WasmOptions {
    WasmOptions {
        cache_dir: Some(state_dir.join("wasm-cache")),
        log_dir: state_dir.join("logs"),
        threads: 0,
    }
}

/// Runs the pipeline; returns the process exit code (0 when the job completed).
/// How long `hkube run` waits for its last webhook deliveries before it exits (a delivery's
/// tries and waits take at most about this long).
const WEBHOOKS_GRACE: std::time::Duration = std::time::Duration::from_secs(40);

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<u8> {
    let pipeline_file = pipeline_file(&args.path)?;
    let text = std::fs::read_to_string(&pipeline_file)
        .with_context(|| format!("reading {}", pipeline_file.display()))?;
    let mut pipeline = spec::read_document(&text)
        .with_context(|| format!("reading {}", pipeline_file.display()))?;
    for warning in spec::pipeline_warnings(&pipeline) {
        eprintln!("hkube: {}: warning: {warning}", pipeline_file.display());
    }
    if let Some(overrides) = &args.flow_input {
        let overrides: Value =
            serde_json::from_str(overrides).context("--flow-input must be a JSON object")?;
        merge_flow_input(&mut pipeline, overrides)?;
    }

    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    // env: wasm algorithms' workers are threads of this process, placed by the same pool.
    let wasm = WasmExecutor::start(wasm_options(&state_dir))?;
    let mut options = local_options(&state_dir, &args.inventory)?;
    options.launchers.push(wasm.launcher());
    let executor = LocalExecutor::start(options);
    let wasm = wasm.placed_by(executor.pool().clone());
    // A store in memory: the catalog, and the result cache's place.
    let catalog = Arc::new(MemoryStore::new());
    let mut code_digests = Vec::new();
    let folder = pipeline_folder(&pipeline_file);
    let mut searched = vec![folder];
    searched.extend(args.algorithms.iter().cloned());
    // Only the algorithms the pipeline uses are prepared (a Java one is compiled).
    let used: Vec<String> = pipeline["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|node| node["algorithmName"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for dir in &searched {
        for algorithm in project::find_algorithms(dir)? {
            if used.contains(&algorithm.descriptor.name) {
                for warning in &algorithm.warnings {
                    eprintln!("hkube: {}: warning: {warning}", algorithm.file.display());
                }
                catalog.put_algorithm(algorithm.descriptor.clone())?;
                let mut local = match &algorithm.runner {
                    Runner::Local(local) => local.clone(),
                    Runner::Wasm(module) => {
                        if let Some(digest) = cache::file_digest(&module.module) {
                            code_digests.push((algorithm.descriptor.name.clone(), digest));
                        }
                        wasm.register(module.clone()).await?;
                        continue;
                    }
                };
                if let Some(digest) = cache::folder_digest(&local.code_dir) {
                    code_digests.push((algorithm.descriptor.name.clone(), digest));
                }
                // Installing dependencies is the one slow step of a first run: show it.
                local.prepared = Some(
                    executor
                        .prepare_dependencies(&local, |line| {
                            if !args.quiet {
                                eprintln!("hkube: {}: {line}", algorithm.descriptor.name);
                            }
                        })
                        .await?,
                );
                executor.register(local).await?;
            }
        }
    }
    // The pipeline's webhooks are called as a server calls them; their records are not kept.
    let (notifications, deliveries) = Webhooks::start(
        WebhookOptions::default(),
        Arc::new(orchestrator::store::MemoryStore::new()),
    );
    // `cache: true` nodes share results within the run (a server keeps them across runs).
    // env: wasm algorithms run in process; every other task goes to the local executor.
    let routed = Routed {
        wasm: wasm.clone(),
        other: Arc::new(executor.clone()),
    };
    let caching = CachingExecutor::new(Arc::new(routed), catalog.clone());
    for (name, digest) in code_digests {
        caching.set_code_digest(&name, digest);
    }
    let engine = Engine::new(EngineOptions::default(), Arc::new(caching), catalog)
        .with_notifications(notifications);
    let handle = engine.handle();
    tokio::spawn(engine.run());
    let job = match handle.exec_raw(pipeline).await {
        Ok(job) => job,
        Err(error) => {
            executor.shutdown().await;
            bail!("{}: {error}", pipeline_file.display());
        }
    };
    // Workers run in process groups of their own, so a terminal's Ctrl-C reaches only us: we
    // end them before leaving.
    let result = tokio::select! {
        result = wait_with_progress(&handle, &job, args.quiet) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted: job {job} was not finished")),
    };
    // The final status holds the task counts the results document lacks.
    let status_doc = handle.status(&job).await.ok();
    // The last webhook deliveries (the result's) end before we do, or give up.
    handle.shutdown().await;
    let _ = tokio::time::timeout(WEBHOOKS_GRACE, deliveries.finished()).await;
    executor.shutdown().await;
    let result = result?;
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer_pretty(&mut stdout, &result)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(stdout));
    drop(stdout);
    match written {
        // `hkube run … | head`: the reader stopped early; the summary still says how it went.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("writing the results")?,
    }
    // A module new to the cache ran Winch's code; Cranelift's, compiling behind it, reaches
    // the cache before we leave, so the next run starts optimised (docs/wasm.md).
    tokio::task::block_in_place(|| wasm.settle(WASM_SETTLE));
    let status = result
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    if status != "completed" {
        let why = result
            .get("error")
            .or_else(|| result.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        let node = result
            .get("nodeName")
            .and_then(Value::as_str)
            .map(|n| format!(" (node {n})"))
            .unwrap_or_default();
        eprintln!("hkube: job {job} {status}{node}: {why}");
    }
    // The last line, as Argo's and Ray's CLIs end: how it went, how long, and where to look.
    if !args.quiet || status != "completed" {
        let logs = state_dir.join("logs").join(&job);
        eprintln!(
            "hkube: {}",
            summary(
                &job,
                &result,
                status_doc.as_ref(),
                logs.is_dir().then_some(&logs)
            )
        );
    }
    Ok(if status == "completed" { 0 } else { 1 })
}

/// `job 706izq7175u3 completed in 1.2 s, 7 tasks (7 succeed), task logs in …/logs/706izq7175u3`.
fn summary(job: &str, result: &Value, status_doc: Option<&Value>, logs: Option<&Path>) -> String {
    let status = result
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let mut text = format!("job {job} {status}");
    if let Some(seconds) = result.get("timeTook").and_then(Value::as_f64) {
        text.push_str(&format!(" in {seconds:.1} s"));
    }
    let states = status_doc
        .and_then(|doc| doc["data"]["states"].as_object())
        .map(|states| {
            states
                .iter()
                .filter_map(|(state, count)| Some((state.as_str(), count.as_u64()?)))
                .filter(|(_, count)| *count > 0)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let total: u64 = states.iter().map(|(_, count)| count).sum();
    let tasks = if total == 1 { "task" } else { "tasks" };
    text.push_str(&format!(", {total} {tasks}"));
    if !states.is_empty() {
        let parts: Vec<String> = states
            .iter()
            .map(|(state, count)| format!("{count} {state}"))
            .collect();
        text.push_str(&format!(" ({})", parts.join(", ")));
    }
    match logs {
        Some(dir) => text.push_str(&format!(", task logs in {}", dir.display())),
        None => text.push_str(", no task logs"),
    }
    text
}

/// Waits for the job, showing its progress: a bar on a terminal, plain lines otherwise.
async fn wait_with_progress(handle: &Handle, job: &str, quiet: bool) -> anyhow::Result<Value> {
    let mut progress = Progress::new(job);
    let waiting = handle.wait(job);
    tokio::pin!(waiting);
    let mut ticker = tokio::time::interval(progress.interval());
    loop {
        tokio::select! {
            result = &mut waiting => {
                progress.finish();
                return Ok(result?);
            }
            _ = ticker.tick(), if !quiet => {
                let Ok(status) = handle.status(job).await else { continue };
                progress.show(&status);
            }
        }
    }
}

fn merge_flow_input(pipeline: &mut Value, overrides: Value) -> anyhow::Result<()> {
    let Value::Object(overrides) = overrides else {
        bail!("--flow-input must be a JSON object, such as '{{\"N\": 500}}'");
    };
    let Some(map) = pipeline.as_object_mut() else {
        bail!("the pipeline file must hold an object");
    };
    let flow_input = map
        .entry("flowInput")
        .or_insert_with(|| Value::Object(Default::default()));
    if !flow_input.is_object() {
        *flow_input = Value::Object(Default::default());
    }
    if let Some(target) = flow_input.as_object_mut() {
        target.extend(overrides);
    }
    Ok(())
}

/// The folder whose algorithms a pipeline file uses: its parent, `.` for a bare file name
/// (whose parent is the empty path, which names no folder).
fn pipeline_folder(pipeline_file: &Path) -> PathBuf {
    match pipeline_file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The pipeline file: `path` itself, or the one pipeline file at the top of the folder.
fn pipeline_file(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        bail!("{} is neither a pipeline file nor a folder", path.display());
    }
    let mut candidates = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
        let file = entry?.path();
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let is_document = [".yml", ".yaml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext));
        if !file.is_file() || !is_document || name.starts_with("algorithm.") {
            continue;
        }
        let is_pipeline = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| spec::read_document(&text).ok())
            .is_some_and(|value| value.get("nodes").is_some());
        if is_pipeline {
            candidates.push(file);
        }
    }
    candidates.sort();
    // A folder named like one of its pipelines (examples/numbers/numbers.yml) picks that one.
    let folder_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if let Some(named) = candidates.iter().find(|c| {
        c.file_stem()
            .is_some_and(|stem| stem.to_string_lossy() == folder_name)
    }) {
        return Ok(named.clone());
    }
    match candidates.len() {
        1 => Ok(candidates.remove(0)),
        0 => bail!(
            "{} holds no pipeline file (a .yml, .yaml or .json with nodes)",
            path.display()
        ),
        _ => {
            let names: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
            bail!(
                "{} holds several pipeline files ({}); name the one to run",
                path.display(),
                names.join(", ")
            )
        }
    }
}
