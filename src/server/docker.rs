//! `hkube server --executor docker`: the container engine, the worker launcher and the image
//! builds' toolkit, from the server's options.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use builder::context::Toolkit;
use builder::docker::DockerEngine;
use orchestrator::executor::docker::{DockerLauncher, DockerOptions};
use orchestrator::executor::local::Runtimes;

/// The engine for builds and the launcher for workers.
pub struct Docker {
    pub engine: DockerEngine,
    pub launcher: DockerLauncher,
}

pub async fn connect(
    state_dir: &Path,
    storage_dir: &Path,
    storage_env: Vec<(String, String)>,
) -> anyhow::Result<Docker> {
    let engine = DockerEngine::connect().await.context(
        "--executor docker needs a running Docker engine (is dockerd started, and is DOCKER_HOST right?)",
    )?;
    let instance = instance_label(state_dir);
    let launcher = DockerLauncher::start(DockerOptions {
        storage_dir: storage_dir.to_path_buf(),
        cluster: "local".into(),
        instance,
        stop_grace: 3,
        storage_env,
    })
    .await?;
    Ok(Docker { engine, launcher })
}

/// One label per state folder: a restarted server removes what its previous run left (its
/// containers, or its pods).
pub fn instance_label(state_dir: &Path) -> String {
    let canonical = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    builder::context::hex(&sha2_digest(canonical.display().to_string().as_bytes()))[..12]
        .to_string()
}

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// The CA bundle for builds: the named file, none for "none", else the system's when present.
pub fn ca_bundle(given: Option<&str>) -> anyhow::Result<Option<PathBuf>> {
    match given {
        Some("none") => Ok(None),
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!("--build-ca-bundle {}: no such file", path.display());
            }
            Ok(Some(path))
        }
        None => {
            let system = PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
            Ok(system.is_file().then_some(system))
        }
    }
}

/// Where the templates are: `HKUBE_TEMPLATES_DIR`, else the repository's `templates/`.
fn templates_dir() -> PathBuf {
    std::env::var_os("HKUBE_TEMPLATES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"))
}

/// The sidecar binary that goes into images: `HKUBE_SIDECAR_BINARY`, else `hkube-wrapper`
/// beside this program (cargo builds both into the same folder).
fn sidecar_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("HKUBE_SIDECAR_BINARY") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("finding this program's folder")?;
    let beside = exe.with_file_name("hkube-wrapper");
    if !beside.is_file() {
        bail!(
            "the sidecar binary {} is missing: build it (cargo build -p wrapper) or set HKUBE_SIDECAR_BINARY",
            beside.display()
        );
    }
    Ok(beside)
}

/// The templates, runtimes and sidecar that go into images; the sidecar stripped of debug
/// information once, into the state folder.
pub fn toolkit(
    state_dir: &Path,
    runtimes: &Runtimes,
    ca_bundle: Option<PathBuf>,
) -> anyhow::Result<Toolkit> {
    let sidecar = builder::context::stripped_sidecar(&sidecar_binary()?, &state_dir.join("work"));
    // Java images take the runtime's jar, which the runtimes' folder is written without. With
    // no JDK here the jar stays missing and a Java build says so.
    let has_javac = std::process::Command::new("javac")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_javac {
        runtimes.java_jar_built().map_err(anyhow::Error::msg)?;
    }
    Ok(Toolkit {
        templates_dir: templates_dir(),
        runtimes_dir: runtimes.dir.clone(),
        sidecar_binary: sidecar,
        ca_bundle,
    })
}
