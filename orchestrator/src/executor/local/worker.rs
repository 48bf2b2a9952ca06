//! One local worker: a sidecar on a loopback port and the algorithm's runtime as a child
//! process connected to it. Knows how to launch each language's runtime.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use wrapper::link::{FromSidecar, ToSidecar};
use wrapper::sidecar::{link_pair, Sidecar, SidecarOptions};

use super::Error;
use crate::executor::child::{ChildSpec, Exit, Supervised};
use crate::executor::docker::{ContainerSpec, DockerLauncher};
use crate::executor::limits::{Limits, MemoryGuard};
use builder::local::Prepared;

/// The languages the local executor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Python,
    Nodejs,
    Java,
}

impl Language {
    pub fn parse(env: &str) -> Option<Language> {
        match env {
            "python" => Some(Language::Python),
            "nodejs" => Some(Language::Nodejs),
            "java" => Some(Language::Java),
            _ => None,
        }
    }

    pub fn default_entry_point(self) -> &'static str {
        match self {
            Language::Python => "main.py",
            Language::Nodejs => "index.js",
            Language::Java => "",
        }
    }
}

/// An algorithm the local executor can run: its code on disk and how to start it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalAlgorithm {
    pub name: String,
    pub language: Language,
    /// The folder holding the user's code.
    pub code_dir: PathBuf,
    /// Python: a file (`main.py`); JavaScript: a file (`index.js`); Java: a class name.
    pub entry_point: String,
    pub min_hot_workers: usize,
    /// At most this many processes at once; 0: as many as the machine's resources hold.
    pub max_workers: usize,
    /// What each worker asks of the machine (cpu, memory with its reserve, gpu): workers start
    /// while the machine has room for it.
    pub request: crate::scheduler::Request,
    /// Java: where the compiled classes are (filled by the executor's javac step).
    pub classpath: Option<PathBuf>,
    /// Run in containers from this image (the Docker executor) instead of a local process.
    pub container: Option<ContainerSpec>,
    /// The dependencies prepared for it (a virtual environment, a node_modules); `None`: not
    /// yet, `register` prepares them.
    pub prepared: Option<Prepared>,
    /// Its own command (`x-hkube.command`): run in `code_dir` instead of hkube's runtime, as a
    /// custom image's entrypoint would be; it brings its own wrapper (HKube's official ones).
    pub command: Option<Vec<String>>,
    /// `algorithmEnv`'s plain values, set for its process; the sidecar's address and the
    /// storage variables hkube sets win over them.
    pub env: Vec<(String, String)>,
}

/// Where the language runtimes and interpreters are.
#[derive(Debug, Clone)]
pub struct Runtimes {
    /// The runtimes' folder: the copy compiled into this binary, written under a state
    /// folder, or `HKUBE_RUNTIMES_DIR` (a checkout's `runtimes/`, to try changes to them).
    pub dir: PathBuf,
    pub python: String,
    pub node: String,
    pub java: String,
}

impl Runtimes {
    /// The runtimes for a state folder: `HKUBE_RUNTIMES_DIR` when set, else the copy compiled
    /// into this binary, written to `<state_dir>/runtimes/<digest>/` on first use. Nothing
    /// depends on where the binary was built, so a copied or installed `hkube` works.
    pub fn in_state_dir(state_dir: &Path) -> Result<Runtimes, Error> {
        let dir = match std::env::var_os("HKUBE_RUNTIMES_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => super::embedded::unpack(state_dir).map_err(Error::Runtimes)?,
        };
        Ok(Runtimes::at(dir))
    }

    /// The runtimes in `dir`, with the interpreters `HKUBE_PYTHON`, `HKUBE_NODE` and
    /// `HKUBE_JAVA` name (else found on PATH).
    fn at(dir: PathBuf) -> Runtimes {
        Runtimes {
            dir,
            python: std::env::var("HKUBE_PYTHON").unwrap_or_else(|_| "python3".into()),
            node: std::env::var("HKUBE_NODE").unwrap_or_else(|_| "node".into()),
            java: std::env::var("HKUBE_JAVA").unwrap_or_else(|_| "java".into()),
        }
    }
}

impl Default for Runtimes {
    /// Written under the temp dir, beside [`super::LocalOptions`]' default folders. Should
    /// that fail, the folder is named anyway: starting a worker then fails naming it.
    fn default() -> Self {
        let state_dir = std::env::temp_dir().join("hkube-local");
        Runtimes::in_state_dir(&state_dir).unwrap_or_else(|_| {
            Runtimes::at(
                state_dir
                    .join("runtimes")
                    .join(&super::embedded::DIGEST[..16]),
            )
        })
    }
}

impl Runtimes {
    pub fn java_jar(&self) -> PathBuf {
        self.dir.join("java/build/hkube-runtime.jar")
    }

    /// The Java runtime's jar, built from its sources with javac first when missing (the
    /// runtimes' folder is written without it); the build script locks against a second build.
    pub fn java_jar_built(&self) -> Result<PathBuf, String> {
        let jar = self.java_jar();
        if jar.is_file() {
            return Ok(jar);
        }
        let script = self.dir.join("java/build.sh");
        let output = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("building the Java runtime with {}: {e}", script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "building the Java runtime with {} failed ({}):\n{}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            ));
        }
        Ok(jar)
    }

    /// The command that runs `algorithm`'s runtime against a sidecar on `port`.
    pub fn child_spec(
        &self,
        algorithm: &LocalAlgorithm,
        port: u16,
        settings: &Settings,
    ) -> ChildSpec {
        let mut env = Vec::new();
        if algorithm.command.is_some() {
            // HKube's wrappers start a peer data server on fixed ports (9020, 9021) that hkube
            // never uses: two workers on one machine would collide. algorithmEnv may turn it on.
            env.push(("DISCOVERY_ENABLE".to_string(), "false".to_string()));
        }
        env.extend(algorithm.env.iter().cloned());
        env.extend([
            // HKube's storage variables: our runtimes put large results there, and HKube's
            // own wrappers (storage v3) read and write every object there.
            ("DEFAULT_STORAGE".to_string(), "fs".to_string()),
            (
                "BASE_FS_ADAPTER_DIRECTORY".to_string(),
                settings.storage_dir.display().to_string(),
            ),
            ("CLUSTER_NAME".to_string(), settings.cluster.clone()),
            ("STORAGE_ENCODING".to_string(), "msgpack".to_string()),
            ("WORKER_SOCKET_HOST".to_string(), "127.0.0.1".to_string()),
            ("WORKER_SOCKET_PORT".to_string(), port.to_string()),
            (
                "ALGORITHM_ENTRY_POINT".to_string(),
                algorithm.entry_point.clone(),
            ),
            ("ALGORITHM_NAME".to_string(), algorithm.name.clone()),
            ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
        ]);
        if algorithm.command.is_none() {
            // hkube's runtimes take a folder; HKube's wrappers take a path relative to their
            // working directory, which is the algorithm's to set (algorithmEnv).
            env.push((
                "ALGORITHM_PATH".to_string(),
                algorithm.code_dir.display().to_string(),
            ));
            env.push(("HKUBE_FAST_PATH".to_string(), "1".to_string()));
        }
        // Later entries win: with S3, HKube's wrappers use it; hkube's runtimes keep using
        // BASE_FS_ADAPTER_DIRECTORY, which the sidecar bridges to S3.
        env.extend(settings.storage_env.iter().cloned());
        if let Some(command) = &algorithm.command {
            return self.own_command(algorithm, command, env, settings);
        }
        let (program, args) = match algorithm.language {
            Language::Python => {
                let mut path = self.dir.join("python").display().to_string();
                if let Ok(existing) = std::env::var("PYTHONPATH") {
                    path = format!("{path}:{existing}");
                }
                env.push(("PYTHONPATH".into(), path));
                let python = algorithm
                    .prepared
                    .as_ref()
                    .and_then(|p| p.python.as_ref())
                    .map_or_else(|| self.python.clone(), |p| p.display().to_string());
                (python, vec!["-m".to_string(), "hkube_runtime".to_string()])
            }
            Language::Nodejs => {
                if let Some(modules) = algorithm
                    .prepared
                    .as_ref()
                    .and_then(|p| p.node_modules.as_ref())
                {
                    // require() of a package falls back to NODE_PATH.
                    env.push(("NODE_PATH".into(), modules.display().to_string()));
                }
                let bin = self.dir.join("javascript/bin/hkube-runtime-node.js");
                (self.node.clone(), vec![bin.display().to_string()])
            }
            Language::Java => {
                let classes = algorithm
                    .classpath
                    .clone()
                    .unwrap_or_else(|| algorithm.code_dir.clone());
                let classpath = format!("{}:{}", self.java_jar().display(), classes.display());
                (
                    self.java.clone(),
                    vec![
                        "-XX:+UseSerialGC".to_string(),
                        "-XX:TieredStopAtLevel=1".to_string(),
                        "-Xshare:auto".to_string(),
                        "-cp".to_string(),
                        classpath,
                        "io.hkube.rs.Main".to_string(),
                    ],
                )
            }
        };
        ChildSpec {
            program: program.into(),
            args,
            cwd: algorithm.code_dir.clone(),
            env,
            log_limit: settings.log_limit,
            grace: Duration::from_secs(3),
        }
    }
}

impl Runtimes {
    /// The algorithm's own command, run in its code folder with what it needs of what
    /// `register` prepared: a Python virtual environment's `bin` first on PATH, node_modules
    /// on NODE_PATH.
    fn own_command(
        &self,
        algorithm: &LocalAlgorithm,
        command: &[String],
        mut env: Vec<(String, String)>,
        settings: &Settings,
    ) -> ChildSpec {
        let prepared = algorithm.prepared.as_ref();
        if let Some(bin) = prepared
            .and_then(|p| p.python.as_ref())
            .and_then(|python| python.parent())
        {
            let path = std::env::var("PATH").unwrap_or_default();
            env.push(("PATH".into(), format!("{}:{path}", bin.display())));
        }
        if let Some(modules) = prepared.and_then(|p| p.node_modules.as_ref()) {
            env.push(("NODE_PATH".into(), modules.display().to_string()));
        }
        let (program, args) = command.split_first().map_or_else(
            || (String::new(), Vec::new()),
            |(program, args)| (program.clone(), args.to_vec()),
        );
        // `./app.sh` means the one in the code folder, not in the server's working directory.
        let program = if program.contains('/') && Path::new(&program).is_relative() {
            algorithm.code_dir.join(&program)
        } else {
            PathBuf::from(program)
        };
        ChildSpec {
            program,
            args,
            cwd: algorithm.code_dir.clone(),
            env,
            log_limit: settings.log_limit,
            grace: Duration::from_secs(3),
        }
    }
}

/// What every worker of an executor shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub log_limit: usize,
    pub storage_dir: PathBuf,
    pub cluster: String,
    /// Overrides of HKube's storage variables (S3), after the folder's.
    pub storage_env: Vec<(String, String)>,
    /// How a process worker's memory limit is enforced on this machine.
    pub memory_guard: MemoryGuard,
}

/// A started worker: its link to the sidecar and its process.
#[derive(Debug)]
pub struct Started {
    pub to_sidecar: mpsc::UnboundedSender<ToSidecar>,
    pub from_sidecar: mpsc::UnboundedReceiver<FromSidecar>,
    pub child: Supervised,
}

/// Starts a worker: a container pair when the algorithm has an image, else a local process.
pub async fn start(
    runtimes: &Runtimes,
    algorithm: &LocalAlgorithm,
    options: SidecarOptions,
    settings: &Settings,
    docker: Option<&DockerLauncher>,
    limits: &Limits,
) -> Result<Started, Error> {
    match (&algorithm.container, docker) {
        (Some(spec), Some(docker)) => {
            let (ends, child) = docker
                .start_worker(
                    &algorithm.name,
                    &algorithm.entry_point,
                    spec,
                    limits,
                    options.connect_timeout,
                    settings.log_limit,
                )
                .await
                .map_err(Error::Worker)?;
            Ok(Started {
                to_sidecar: ends.to_sidecar,
                from_sidecar: ends.from_sidecar,
                child,
            })
        }
        (Some(spec), None) => Err(Error::Worker(format!(
            "algorithm {} runs in image {}, and this server has no container engine: start it with --executor docker",
            algorithm.name, spec.image
        ))),
        (None, _) => start_process(runtimes, algorithm, options, settings, limits).await,
    }
}

/// Binds a sidecar on a free loopback port and starts the runtime against it.
async fn start_process(
    runtimes: &Runtimes,
    algorithm: &LocalAlgorithm,
    options: SidecarOptions,
    settings: &Settings,
    limits: &Limits,
) -> Result<Started, Error> {
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let sidecar = Sidecar::bind(loopback, options)
        .await
        .map_err(|e| Error::Worker(format!("cannot open a sidecar port: {e}")))?;
    let port = sidecar
        .local_addr()
        .map_err(|e| Error::Worker(format!("cannot read the sidecar's port: {e}")))?
        .port();
    let (link, end) = link_pair();
    let spec = runtimes.child_spec(algorithm, port, settings);
    let child = Supervised::start_limited(&spec, None, limits, &settings.memory_guard)
        .map_err(|e| Error::Worker(e.to_string()))?;
    tokio::spawn(sidecar.run(link));
    Ok(Started {
        to_sidecar: end.to_sidecar,
        from_sidecar: end.from_sidecar,
        child,
    })
}

/// Explains a lost worker: how the process ended and its last output lines.
pub fn crash_report(reason: &str, exit: Option<&Exit>, last_lines: &[String]) -> String {
    let mut text = match exit {
        // The exit says it better than "disconnected".
        Some(exit) if reason.starts_with("the algorithm disconnected") => {
            format!("the algorithm's process {exit}")
        }
        Some(exit) => format!("{reason}; the algorithm's process {exit}"),
        None => reason.to_string(),
    };
    if !last_lines.is_empty() {
        text.push_str("; last output:\n");
        text.push_str(&last_lines.join("\n"));
    }
    text
}
