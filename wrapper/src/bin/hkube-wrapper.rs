//! `hkube-wrapper`: the sidecar as a standalone program, for a custom image or a container pod.
//!
//! It listens where the algorithm's wrapper connects (`WORKER_SOCKET_PORT`, HKube's 3000), dials
//! the orchestrator's link URL, and runs tasks until the algorithm or the orchestrator goes away.
//! Storage (for wrappers that use storage v3) comes from HKube's variables: `DEFAULT_STORAGE`,
//! `STORAGE_ENCODING`, `CLUSTER_NAME`, `BASE_FS_ADAPTER_DIRECTORY`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use wrapper::sidecar::{Sidecar, SidecarOptions, StorageAccess};
use wrapper::{remote, storage, wasm};

#[derive(Debug, Parser)]
#[command(
    name = "hkube-wrapper",
    version,
    about = "hkube's sidecar: serves one algorithm process"
)]
struct Args {
    /// Where the algorithm's wrapper connects.
    #[arg(long, env = "HKUBE_WRAPPER_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// The orchestrator's link URL, e.g. ws://orchestrator:3001/link.
    #[arg(long, env = "HKUBE_ORCHESTRATOR_URL")]
    orchestrator: String,
    /// This worker's name, sent to the orchestrator.
    #[arg(long, env = "HKUBE_WORKER_NAME", default_value = "worker")]
    worker: String,
    /// Seconds the algorithm has to connect.
    #[arg(long, env = "ALGORITHM_DISCONNECTED_TIMEOUT_S", default_value_t = 60)]
    connect_timeout: u64,
    /// Run a WebAssembly module instead of serving an algorithm process: the module and its
    /// sandbox as JSON (`wrapper::wasm::worker::ContainerModule`).
    #[arg(long, env = wasm::worker::MODULE_VAR)]
    wasm: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(spec) = &args.wasm {
        return run_module(&args, spec).await;
    }
    let storage = match storage::config::StorageConfig::from_env().and_then(|c| {
        storage::config::build(&c).map(|s| StorageAccess {
            storage: s,
            cluster: c.cluster_name.clone(),
            encoding: c.storage_encoding,
            // With S3, hkube's runtimes still keep large values in the fs adapter's folder.
            spool: (c.default_storage == storage::Adapter::S3).then(|| {
                Arc::new(storage::FsStorage::new(c.base_fs_adapter_directory.clone()))
                    as Arc<dyn storage::Storage>
            }),
        })
    }) {
        Ok(access) => Some(access),
        Err(error) => {
            eprintln!("hkube-wrapper: no storage for storage-v3 wrappers: {error}");
            None
        }
    };
    let options = SidecarOptions {
        connect_timeout: Duration::from_secs(args.connect_timeout),
        storage,
        ..SidecarOptions::default()
    };
    let sidecar = match Sidecar::bind(args.listen, options).await {
        Ok(sidecar) => sidecar,
        Err(error) => {
            eprintln!("hkube-wrapper: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let (link, pump) = match remote::connect(&args.orchestrator, &args.worker).await {
        Ok(connected) => connected,
        Err(error) => {
            eprintln!("hkube-wrapper: {error}");
            return ExitCode::FAILURE;
        }
    };
    let reason = sidecar.run(link).await;
    eprintln!("hkube-wrapper: {reason}");
    let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
    ExitCode::SUCCESS
}

/// The sidecar as a wasm worker: no algorithm connects; tasks from the link run in the module.
async fn run_module(args: &Args, spec: &str) -> ExitCode {
    let spec: wasm::worker::ContainerModule = match serde_json::from_str(spec) {
        Ok(spec) => spec,
        Err(error) => {
            eprintln!(
                "hkube-wrapper: {} is not a wasm module's description: {error}",
                wasm::worker::MODULE_VAR
            );
            return ExitCode::FAILURE;
        }
    };
    let (link, pump) = match remote::connect(&args.orchestrator, &args.worker).await {
        Ok(connected) => connected,
        Err(error) => {
            eprintln!("hkube-wrapper: {error}");
            return ExitCode::FAILURE;
        }
    };
    // PID 1 of its container: `docker stop` (a worker stopped past its grace) must end it at
    // once, not after the engine's timeout; the running instance ends with the process.
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                eprintln!("hkube-wrapper: cannot watch for SIGTERM: {error}");
                return ExitCode::FAILURE;
            }
        };
    let reason = tokio::select! {
        reason = wasm::worker::serve(link, spec) => reason,
        _ = terminate.recv() => {
            eprintln!("hkube-wrapper: stopped by SIGTERM");
            return ExitCode::SUCCESS;
        }
    };
    eprintln!("hkube-wrapper: {reason}");
    let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
    ExitCode::SUCCESS
}
