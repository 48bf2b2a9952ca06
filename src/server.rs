//! `hkube server`: the REST API (`orchestrator::api`) over an engine and an executor, until
//! SIGTERM or SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
mod docker;
mod kubernetes;
mod storage;

use orchestrator::api::{self, ApiState};
use orchestrator::build::{Backend, BuildOptions, BuildService, Deployer};
use orchestrator::cache::{self, CachingExecutor};
use orchestrator::engine::{Catalog, Engine, EngineOptions, Journal};
use orchestrator::executor::docker::ImageDeployer;
use orchestrator::executor::local::CodeDeployer;
use orchestrator::executor::local::{LocalExecutor, LocalOptions, Runtimes};
use orchestrator::executor::pool::ClusterFeed;
use orchestrator::executor::wasm::{route::Routed, WasmDeployer, WasmExecutor};
use orchestrator::notify::{WebhookOptions, Webhooks};
use orchestrator::project;
use orchestrator::project::Runner;
use orchestrator::store::{SqliteStore, Store};
use orchestrator::telemetry::storage::Counted;
use orchestrator::telemetry::{Observed, Telemetry};
use orchestrator::triggers::CronService;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExecutorKind {
    /// Algorithms run as processes on this machine.
    Local,
    /// Containers on this machine's Docker engine; uploaded code is built into images.
    Docker,
    /// A pod per worker in a Kubernetes cluster (in-cluster config, else KUBECONFIG); images
    /// build on a Docker engine when one is reachable (docs/kubernetes.md).
    Kubernetes,
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to serve the API on. Listening beyond this machine needs --token.
    #[arg(
        long,
        env = "HKUBE_LISTEN",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:3000"
    )]
    listen: String,
    /// Where the server keeps its files: the local executor's storage (storage/), task logs
    /// (logs/) and compiled code (work/). Default: $HOME/.local/state/hkube.
    #[arg(long, env = "HKUBE_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Where algorithms run.
    #[arg(long, env = "HKUBE_EXECUTOR", value_enum, default_value = "local")]
    executor: ExecutorKind,
    /// A folder whose algorithm.yml files are registered at start (repeatable), as `hkube run`
    /// finds them. Algorithms also arrive through the API: code uploads and git repositories
    /// are built (into images with --executor docker, else into a local folder with its
    /// dependencies installed); one stored with only an image needs --executor docker.
    #[arg(long = "algorithms", value_name = "DIR")]
    algorithms: Vec<PathBuf>,
    /// Every /api request must carry `Authorization: Bearer <TOKEN>`.
    #[arg(
        long,
        env = "HKUBE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// A build (an image, or a local environment) running longer than this many seconds fails.
    #[arg(
        long,
        env = "HKUBE_BUILD_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 1800
    )]
    build_timeout: u64,
    /// Docker executor: a CA bundle trusted while dependencies install in image builds (for a
    /// TLS-intercepting proxy). Default: /etc/ssl/certs/ca-certificates.crt when it exists;
    /// "none" trusts only the base image's own CAs.
    #[arg(long, env = "HKUBE_BUILD_CA_BUNDLE", value_name = "FILE")]
    build_ca_bundle: Option<String>,
    /// Docker executor: the image that algorithms of ENV build FROM when they name no
    /// baseImage (repeatable, e.g. python=registry.local/python:3.11). Default:
    /// hkube/<env>:bookworm, made by scripts/base-images.sh.
    #[arg(long = "base-image", value_name = "ENV=IMAGE", value_parser = parse_base_image)]
    base_images: Vec<(String, String)>,
    /// Docker and Kubernetes executors: built images are named HOST[:PORT]/PATH/<algorithm>:<tag>
    /// and pushed to this registry after each build, and the algorithm's algorithmImage names
    /// the pushed image (what a cluster pulls). A failed push fails the build. Empty: none.
    #[arg(long, env = "HKUBE_REGISTRY", value_name = "HOST[:PORT]/PATH")]
    registry: Option<String>,
    /// --registry: a Docker config file whose auths entry for the registry's host holds the
    /// credentials (base64 user:password in auth, or username and password). Default:
    /// $DOCKER_CONFIG/config.json, else ~/.docker/config.json (pushing without credentials
    /// when it is absent). Read at each push.
    #[arg(long, env = "HKUBE_REGISTRY_AUTH", value_name = "FILE")]
    registry_auth: Option<PathBuf>,
    /// Where jobs' stored objects live: the state folder (fs) or an S3-compatible server (s3,
    /// credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "HKUBE_STORAGE", value_enum, default_value = "fs")]
    storage: storage::StorageKind,
    /// --storage s3: the server's URL, e.g. http://127.0.0.1:9000 (default: AWS).
    #[arg(long, env = "S3_ENDPOINT_URL", value_name = "URL")]
    s3_endpoint: Option<String>,
    /// --storage s3: the region signed requests name.
    #[arg(
        long,
        env = "AWS_REGION",
        value_name = "REGION",
        default_value = "us-east-1"
    )]
    s3_region: String,
    /// Git push webhooks (/api/v1/builds/webhook/github|gitlab) must be signed
    /// with this secret (X-Hub-Signature-256, X-Gitlab-Token); they then need no --token.
    #[arg(
        long,
        env = "HKUBE_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    webhook_secret: Option<String>,
    #[command(flatten)]
    inventory: crate::inventory::InventoryArgs,
    #[command(flatten)]
    kubernetes: kubernetes::KubernetesArgs,
    /// Without --token, requests from browsers must name the server by localhost or an IP
    /// address (DNS rebinding protection); add a name it is served under (repeatable).
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_hosts: Vec<String>,
    /// Ended jobs are deleted this long after their end: their records, results and stored
    /// objects, and the database gives the space back. A number with s, m, h or d (90s, 12h,
    /// 14d); "off" keeps every job.
    #[arg(
        long,
        env = "HKUBE_JOB_RETENTION",
        value_name = "DURATION",
        default_value = "14d",
        value_parser = parse_retention
    )]
    job_retention: Retention,
    /// The server's log on stderr: `text` (a timestamped line per event) or `json` (one JSON
    /// object per line: timestamp, level, target, message and fields).
    #[arg(long, env = "HKUBE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The server's log: every `tracing` event at INFO and above, with a UTC timestamp, on stderr.
fn init_log(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Only a second subscriber fails to install (tests that start servers in one process).
    drop(installed);
}

/// How long ended jobs are kept; `None`: forever.
#[derive(Debug, Clone, Copy)]
struct Retention(Option<Duration>);

fn parse_retention(text: &str) -> Result<Retention, String> {
    if text == "off" {
        return Ok(Retention(None));
    }
    let invalid = || format!("{text}: expected a number with s, m, h or d (90s, 12h, 14d), or off");
    let unit = text.chars().last().ok_or_else(invalid)?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(invalid()),
    };
    let number: u64 = text[..text.len() - 1].parse().map_err(|_| invalid())?;
    let total = number.checked_mul(seconds).ok_or_else(invalid)?;
    if total == 0 {
        return Err(format!(
            "{text}: a retention of 0 would delete jobs as they end; give a duration, or off"
        ));
    }
    Ok(Retention(Some(Duration::from_secs(total))))
}

/// `--registry` and its credentials, checked before anything starts: a typo in the file is
/// said now, not at the first build.
fn registry_target(args: &ServerArgs) -> anyhow::Result<Option<builder::registry::Target>> {
    // An empty value is no registry, as an empty HKUBE_TOKEN is no token (a chart's default).
    let Some(reference) = args.registry.as_deref().filter(|r| !r.trim().is_empty()) else {
        if let Some(file) = &args.registry_auth {
            bail!(
                "--registry-auth {} names credentials for no registry: give --registry too",
                file.display()
            );
        }
        return Ok(None);
    };
    let registry = builder::registry::Registry::parse(reference)?;
    if args.executor == ExecutorKind::Local {
        bail!(
            "--registry needs --executor docker (or kubernetes): the local executor builds code \
             into folders, not images, so there is nothing to push"
        );
    }
    let non_empty = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let target = builder::registry::Target {
        registry,
        auth: builder::registry::AuthSource::resolve(
            args.registry_auth.clone(),
            non_empty("DOCKER_CONFIG"),
            non_empty("HOME"),
        ),
    };
    target.credentials()?;
    Ok(Some(target))
}

/// `ENV=IMAGE` with ENV one of python, nodejs, java, wasm (a module's image on the Docker
/// executor: the sidecar on Debian).
fn parse_base_image(text: &str) -> Result<(String, String), String> {
    let (env, image) = text
        .split_once('=')
        .ok_or_else(|| format!("{text}: expected ENV=IMAGE, such as python=my/python:3.11"))?;
    if !["python", "nodejs", "java", "wasm"].contains(&env) {
        return Err(format!(
            "{env}: the env must be python, nodejs, java or wasm"
        ));
    }
    if image.trim().is_empty() {
        return Err(format!("{text}: the image is empty"));
    }
    Ok((env.to_string(), image.to_string()))
}

pub fn server(args: ServerArgs) -> anyhow::Result<()> {
    init_log(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

fn default_state_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set: name a folder with --state-dir or HKUBE_STATE_DIR")?;
    Ok(PathBuf::from(home).join(".local/state/hkube"))
}

async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    let registry = registry_target(&args)?;
    let token = args.token.filter(|t| !t.is_empty());
    let addresses: Vec<_> = tokio::net::lookup_host(&args.listen)
        .await
        .with_context(|| {
            format!(
                "--listen {}: expected HOST:PORT, such as 127.0.0.1:3000",
                args.listen
            )
        })?
        .collect();
    if token.is_none() && addresses.iter().any(|a| !a.ip().is_loopback()) {
        bail!(
            "refusing to listen on {} without a token: anyone who can reach it could run code on this machine. Give --token (or HKUBE_TOKEN), or listen on 127.0.0.1",
            args.listen
        );
    }
    let state_dir = match args.state_dir {
        Some(dir) => dir,
        None => default_state_dir()?,
    };
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating the state folder {}", state_dir.display()))?;

    let storage_dir = state_dir.join("storage");
    std::fs::create_dir_all(&storage_dir)
        .with_context(|| format!("creating {}", storage_dir.display()))?;
    let job_storage =
        storage::open(args.storage, args.s3_endpoint.as_deref(), &args.s3_region).await?;
    let storage_env = job_storage
        .as_ref()
        .map(|s| s.env.clone())
        .unwrap_or_default();
    let docker = match args.executor {
        ExecutorKind::Docker => {
            Some(docker::connect(&state_dir, &storage_dir, storage_env.clone()).await?)
        }
        _ => None,
    };
    // Kubernetes: pods run the workers; a Docker engine here, when there is one, builds images.
    let (cluster, build_engine) = match args.executor {
        ExecutorKind::Kubernetes => {
            let (cluster, pending_timeout) = kubernetes::connect(kubernetes::Settings {
                args: &args.kubernetes,
                instance: docker::instance_label(&state_dir),
                storage_dir: &storage_dir,
                storage_env: storage_env.clone(),
                storage_is_s3: job_storage.is_some(),
                memory_ratio: args.inventory.limits().memory_ratio,
                log_limit: LocalOptions::default().log_limit,
            })
            .await?;
            let engine = match builder::docker::DockerEngine::connect().await {
                Ok(engine) => Some(engine),
                Err(error) => {
                    tracing::warn!(
                        "no Docker engine to build images ({error}): algorithms need an algorithmImage"
                    );
                    None
                }
            };
            (Some((cluster, pending_timeout)), engine)
        }
        _ => (None, None),
    };
    let pods = cluster.as_ref().map(|(c, _)| c.launcher.clone());
    let mut local = LocalOptions {
        runtimes: Runtimes::in_state_dir(&state_dir)?,
        inventory: args.inventory.node()?,
        limits: args.inventory.limits(),
        work_dir: state_dir.join("work"),
        storage_dir,
        log_dir: state_dir.join("logs"),
        docker: docker.as_ref().map(|d| d.launcher.clone()),
        kubernetes: pods.clone(),
        nodes: cluster.map(|(cluster, pending_timeout)| ClusterFeed {
            nodes: cluster.nodes,
            pending_timeout,
        }),
        storage_env,
        ..LocalOptions::default()
    };
    let storage_module = job_storage
        .as_ref()
        .map_or("@hkube/fs-adapter", |s| s.access.storage.module_name());
    // The API's /storage routes browse the same storage the sidecars write to.
    let api_storage = api::JobStorage {
        backend: Counted::wrap(match &job_storage {
            Some(s) => Arc::clone(&s.access.storage),
            None => Arc::new(wrapper::storage::FsStorage::new(&local.storage_dir)),
        }),
        cluster: local.cluster.clone(),
    };
    // The sidecars' reads and writes count in /metrics too.
    local.sidecar.storage = job_storage.map(|s| {
        let mut access = s.access;
        access.storage = Counted::wrap(access.storage);
        access
    });
    let telemetry = Telemetry::new(local.log_dir.clone());
    let local_runtimes = local.runtimes.clone();
    // env: wasm algorithms' workers are threads of this process, placed by the same pool.
    let wasm = WasmExecutor::start(crate::run::wasm_options(&state_dir))?;
    local.launchers.push(wasm.launcher());
    let executor = LocalExecutor::start(local);
    let wasm = wasm.placed_by(executor.pool().clone());
    let launcher = docker.as_ref().map(|d| d.launcher.clone());
    // Definitions and jobs live in one database: a restart loses nothing, and jobs that were
    // running resume (finished tasks are not run again).
    let database = state_dir.join("hkube.db");
    let store = Arc::new(
        SqliteStore::open(&database).with_context(|| format!("opening {}", database.display()))?,
    );
    let mut code_digests = Vec::new();
    // A folder's wasm modules whose images are built once the build toolkit is ready (below).
    let mut folder_modules = Vec::new();
    for dir in &args.algorithms {
        for algorithm in project::find_algorithms(dir)? {
            let registered = match &algorithm.runner {
                Runner::Local(local) if pods.is_some() && local.container.is_none() => {
                    bail!(
                        "{}: algorithm {} has local code, and --executor kubernetes runs images only: give it an algorithmImage, or apply its code through the API (a Docker engine builds the image)",
                        algorithm.file.display(),
                        local.name
                    );
                }
                Runner::Local(local) => {
                    if let Some(digest) = cache::folder_digest(&local.code_dir) {
                        code_digests.push((algorithm.descriptor.name.clone(), digest));
                    }
                    executor
                        .register(local.clone())
                        .await
                        .map_err(anyhow::Error::from)
                }
                // A module not built yet (examples/numbers/multiply-wasm before its build.sh)
                // leaves the folder's other algorithms usable: it is left out, and said so.
                Runner::Wasm(module) if !module.module.is_file() => {
                    eprintln!(
                        "hkube: {}: warning: {} is not built, algorithm {} is left out",
                        algorithm.file.display(),
                        module.module.display(),
                        module.name
                    );
                    continue;
                }
                // On the Docker and Kubernetes executors a folder's module runs in a container
                // as an applied one does: its image (templates/wasm) is built below.
                Runner::Wasm(module) if args.executor != ExecutorKind::Local => {
                    if pods.is_some() && build_engine.is_none() {
                        bail!(
                            "{}: algorithm {} is a wasm module in a folder, and --executor kubernetes runs images only, with no Docker engine here to build its image: start the server where a Docker engine is reachable, or give the algorithm an algorithmImage built from templates/wasm",
                            algorithm.file.display(),
                            module.name
                        );
                    }
                    if let Some(digest) = cache::file_digest(&module.module) {
                        code_digests.push((algorithm.descriptor.name.clone(), digest));
                    }
                    folder_modules.push((algorithm.clone(), module.module.clone()));
                    continue;
                }
                Runner::Wasm(module) => {
                    if let Some(digest) = cache::file_digest(&module.module) {
                        code_digests.push((algorithm.descriptor.name.clone(), digest));
                    }
                    wasm.register(module.clone())
                        .await
                        .map_err(anyhow::Error::from)
                }
            };
            registered.with_context(|| format!("registering {}", algorithm.file.display()))?;
            store.put_algorithm(algorithm.descriptor.clone())?;
        }
    }
    let catalog: Arc<dyn Catalog> = store.clone();
    let journal: Arc<dyn Journal> = store.clone();
    // Ended jobs leave memory at once and are answered from the database: the server's
    // memory does not grow with its history, however large the jobs were.
    let options = EngineOptions {
        keep_finished_jobs: Some(0),
        ..EngineOptions::default()
    };
    // The loop starts (and resumes unfinished jobs) only once every stored algorithm is
    // registered, below: a job resumed earlier would fail for want of its algorithm's code.
    // Webhooks are delivered apart from the engine, which only hands them over.
    let (webhooks, _deliveries) = Webhooks::start(
        WebhookOptions {
            storage_module,
            ..WebhookOptions::default()
        },
        store.clone() as Arc<dyn Store>,
    );
    // Nodes with `cache: true` are answered from the result cache when they can be.
    // env: wasm algorithms run in process, placed by the pool; every other task goes to the
    // local executor.
    let routed = Routed {
        wasm: wasm.clone(),
        other: Arc::new(executor.clone()),
    };
    let caching = CachingExecutor::new(Arc::new(routed), store.clone() as Arc<dyn Store>);
    for (name, digest) in code_digests {
        caching.set_code_digest(&name, digest);
    }
    // Every task is watched: its timing on the task board, its output in the task logs.
    let observed = Observed::new(Arc::new(caching), telemetry.clone());
    let engine_loop = Engine::new(options, Arc::new(observed), catalog)
        .with_journal(journal)
        .with_notifications(webhooks);
    let engine = engine_loop.handle();
    tokio::spawn(release_freed_memory());
    // Uploaded code builds into images for the Docker executor, or into a kept folder with a
    // prepared environment for the local executor.
    let mut options = BuildOptions::new(&state_dir);
    options.timeout = Duration::from_secs(args.build_timeout);
    for (env, image) in &args.base_images {
        if let Some(slot) = options.base_images.get_mut(env.as_str()) {
            *slot = image.clone();
        }
    }
    if let Some(target) = registry {
        options.push_to(target);
    }
    let image_engine = docker.map(|d| d.engine).or(build_engine);
    // On Kubernetes without a Docker engine nothing builds: the API refuses code, by name.
    let builds_code = pods.is_none() || image_engine.is_some();
    let (backend, deployer): (Backend, Arc<dyn Deployer>) = match image_engine {
        Some(engine) => {
            let ca_bundle = docker::ca_bundle(args.build_ca_bundle.as_deref())?;
            (
                Backend::Docker(
                    engine,
                    docker::toolkit(&state_dir, &local_runtimes, ca_bundle)?,
                ),
                Arc::new(ImageDeployer {
                    pool: executor.pool().clone(),
                }),
            )
        }
        // Pods run images only: with no engine to build them, the API refuses code.
        None if pods.is_some() => (
            Backend::Local,
            Arc::new(ImageDeployer {
                pool: executor.pool().clone(),
            }),
        ),
        None => (
            Backend::Local,
            Arc::new(CodeDeployer {
                executor: executor.clone(),
                code_root: options.code_root.clone(),
            }),
        ),
    };
    // A folder's wasm modules on the Docker and Kubernetes executors: the image an apply would
    // build, stored as the algorithm's image, so the deployer below runs it in containers.
    for (algorithm, module) in folder_modules {
        let Backend::Docker(engine, toolkit) = &backend else {
            bail!(
                "no Docker engine to build the image of {}",
                module.display()
            );
        };
        let mut descriptor = algorithm.descriptor.clone();
        let name = descriptor.name.clone();
        eprintln!(
            "hkube: {}: building the image of {name} (its module runs in a container on this executor)",
            algorithm.file.display()
        );
        let image = orchestrator::build::wasm_folder_image(
            engine,
            toolkit,
            &options,
            &descriptor,
            &module,
            |line| tracing::debug!(algorithm = %name, "{line}"),
        )
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("registering {}", algorithm.file.display()))?;
        tracing::info!(algorithm = %name, %image, "a project folder's wasm module, built into its image");
        descriptor.algorithm_image = Some(image);
        store.put_algorithm(descriptor)?;
    }
    // Built env: wasm algorithms whose code is kept (the local backend) go to the WASM
    // executor; those built into an image (the Docker backend) run in containers.
    let deployer: Arc<dyn Deployer> = Arc::new(WasmDeployer {
        wasm,
        code_root: options.code_root.clone(),
        other: deployer,
    });
    let builds = BuildService::new(
        options,
        backend,
        store.clone() as Arc<dyn Store>,
        engine.clone(),
        deployer.clone(),
    );
    // Algorithms stored with an image or built code (uploads, git builds) run again, before
    // any job resumes; then interrupted builds resume.
    for algorithm in store.algorithms()? {
        if let Err(error) = deployer.register(&algorithm).await {
            tracing::warn!("algorithm {}: {error}", algorithm.name);
        }
    }
    engine_loop
        .start()
        .context("starting the engine's thread")?;
    builds.resume();
    // Enabled cron triggers of stored pipelines start jobs from now on.
    let cron = CronService::spawn(store.clone() as Arc<dyn Store>, engine.clone());
    if let Retention(Some(retention)) = args.job_retention {
        let logs = state_dir.join("logs");
        tokio::spawn(forget_old_jobs(
            store.clone(),
            executor.clone(),
            logs,
            retention,
        ));
    }
    let (builds, deployer) = (builds_code.then_some(builds), Some(deployer));
    let app = api::router(ApiState {
        engine: engine.clone(),
        store: store.clone() as Arc<dyn Store>,
        auth_token: token,
        builds,
        deployer,
        webhook_secret: args.webhook_secret.filter(|s| !s.is_empty()),
        storage_module,
        storage: Some(api_storage),
        allowed_hosts: allowed_hosts(&args.listen, args.allowed_hosts),
        cron: Some(cron),
        telemetry,
    });

    let listener = tokio::net::TcpListener::bind(addresses.as_slice())
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    eprintln!(
        "hkube: listening on http://{local}/api/v1 (state in {})",
        state_dir.display()
    );
    tracing::info!(address = %local, state_dir = %state_dir.display(), "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the API")?;
    // Jobs are not stopped: they stay in the journal and resume at the next start. The engine
    // lets go first, so the workers' ends are not taken for task crashes.
    tracing::info!("stopping: unfinished jobs resume at the next start; workers end");
    engine.detach().await;
    tokio::time::timeout(Duration::from_secs(15), executor.shutdown())
        .await
        .ok();
    if let Some(launcher) = &launcher {
        launcher.remove_leftovers().await;
    }
    // Every pod of this instance is deleted, and the server waits until the watch sees none.
    if let Some(pods) = &pods {
        if let Err(error) = pods.remove_leftovers().await {
            tracing::warn!("{error}");
        }
    }
    store.close();
    Ok(())
}

/// Deletes the jobs that ended longer than `retention` ago: their rows (the database gives the
/// space back), their stored objects and their task logs. Runs every tenth of the retention,
/// between 1 s and 10 min, so a job goes soon after its time.
async fn forget_old_jobs(
    store: Arc<SqliteStore>,
    executor: LocalExecutor,
    logs: PathBuf,
    retention: Duration,
) {
    use orchestrator::engine::Executor;
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let before = orchestrator::engine::now_ms()
            .saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
        let sweeper = store.clone();
        match tokio::task::spawn_blocking(move || sweeper.delete_jobs_ended_before(before)).await {
            Ok(Ok(deleted)) => {
                for job_id in &deleted {
                    // Nothing of it is kept now: its results are gone with its row.
                    executor.job_ended(job_id, &[]);
                    // Job ids are ours ([0-9a-z]); anything else is not a folder to touch.
                    if job_id.chars().all(|c| c.is_ascii_alphanumeric()) {
                        let _ = tokio::fs::remove_dir_all(logs.join(job_id)).await;
                    }
                }
            }
            Ok(Err(error)) => tracing::warn!("deleting old jobs failed: {error}"),
            Err(_) => {}
        }
    }
}

/// The names a browser may reach a token-less server by, besides localhost and addresses: the
/// --listen host when it is a name, and each --allowed-host.
fn allowed_hosts(listen: &str, mut given: Vec<String>) -> Vec<String> {
    if let Some((host, _port)) = listen.rsplit_once(':') {
        if !host.is_empty() {
            given.push(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            );
        }
    }
    given
}

/// glibc keeps memory freed by a burst of jobs in its per-thread arenas instead of giving it
/// back, so a server's resident size would stay at its peak after every burst. Every few
/// seconds we ask it to return what it holds free; when nothing is free this costs
/// microseconds.
async fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            #[allow(unsafe_code)]
            // SAFETY: malloc_trim only walks glibc's own free lists; it takes no pointers.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
