//! The process launcher (the local executor's): a worker is a sidecar on a loopback port and
//! the algorithm's runtime as a child process connected to it. Knows how each language's
//! runtime is started (Python, Node.js, Java, or the algorithm's own command).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;
use wrapper::sidecar::{link_pair, Sidecar, SidecarOptions};

use super::{Error, Launch, Launched, Launcher};
use crate::executor::algorithm::{Language, WorkerAlgorithm};
use crate::executor::child::{ChildSpec, Supervised};
use crate::executor::limits::{Limits, MemoryGuard};

/// Starts workers as local processes.
#[derive(Debug, Clone)]
pub struct ProcessLauncher {
    pub runtimes: Runtimes,
    pub settings: Settings,
}

impl Launcher for ProcessLauncher {
    fn runs(&self, algorithm: &WorkerAlgorithm) -> bool {
        // A module is no process: the wasm launcher runs it in hkube's.
        algorithm.container.is_none() && algorithm.language != Language::Wasm
    }

    fn launch(&self, launch: Launch) -> BoxFuture<'static, Result<Launched, Error>> {
        let (runtimes, settings) = (self.runtimes.clone(), self.settings.clone());
        Box::pin(async move {
            // `launch.limits` (from the grant) caps the process's memory and sets
            // CUDA_VISIBLE_DEVICES.
            start_process(
                &runtimes,
                &launch.algorithm,
                launch.sidecar,
                &settings,
                &launch.limits,
            )
            .await
        })
    }
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
            None => crate::executor::local::embedded::unpack(state_dir).map_err(Error::Runtimes)?,
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
    /// Written under the temp dir, beside [`crate::executor::local::LocalOptions`]' default folders. Should
    /// that fail, the folder is named anyway: starting a worker then fails naming it.
    fn default() -> Self {
        let state_dir = std::env::temp_dir().join("hkube-local");
        Runtimes::in_state_dir(&state_dir).unwrap_or_else(|_| {
            Runtimes::at(
                state_dir
                    .join("runtimes")
                    .join(&crate::executor::local::embedded::DIGEST[..16]),
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

    /// The command that runs `algorithm`'s runtime against a sidecar on `port` (and on the
    /// Unix socket `unix`, for hkube's runtimes), within `limits` (a JVM sizes its heap to the
    /// memory cap).
    pub fn child_spec(
        &self,
        algorithm: &WorkerAlgorithm,
        port: u16,
        unix: Option<&Path>,
        settings: &Settings,
        limits: &Limits,
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
            if let Some(unix) = unix {
                // hkube's runtimes connect here rather than to the port (Sidecar::bind_local).
                env.push((
                    "HKUBE_WORKER_SOCKET_PATH".to_string(),
                    unix.display().to_string(),
                ));
            }
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
                let python = match algorithm.prepared.as_ref().and_then(|p| p.python.as_ref()) {
                    Some(prepared) => prepared.display().to_string(),
                    None => self.python_in(&algorithm.code_dir, &mut env),
                };
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
                let mut args = jvm_options(limits);
                args.extend(["-cp".to_string(), classpath, "io.hkube.rs.Main".to_string()]);
                (self.java.clone(), args)
            }
            // Never started as a process (`runs` refuses it): an empty program, should it be,
            // fails to start with the spawn error naming it.
            Language::Wasm => (String::new(), Vec::new()),
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
    /// The Python interpreter to start in `cwd`: pyenv's choice without its shim when
    /// `python3` is one (`pyenv.rs`: the shim's bash cost more than Python's own start), with
    /// that version's `bin` first on PATH as `pyenv exec` puts it; else the configured name.
    fn python_in(&self, cwd: &Path, env: &mut Vec<(String, String)>) -> String {
        // An algorithm that sets its own PATH has its interpreter looked up there.
        if env.iter().any(|(name, _)| name == "PATH") {
            return self.python.clone();
        }
        match super::pyenv::resolve(&self.python, cwd) {
            Some((interpreter, bin)) => {
                let path = std::env::var("PATH").unwrap_or_default();
                env.push(("PATH".into(), format!("{}:{path}", bin.display())));
                interpreter.display().to_string()
            }
            None => self.python.clone(),
        }
    }

    /// The algorithm's own command, run in its code folder with what it needs of what
    /// `register` prepared: a Python virtual environment's `bin` first on PATH, node_modules
    /// on NODE_PATH.
    fn own_command(
        &self,
        algorithm: &WorkerAlgorithm,
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

/// The JVM's options for a Java worker. With a memory cap, `-XX:MaxRAM` is the cap: the JVM
/// sizes its heap (a quarter by default) and its other pools from the worker's limit, not from
/// the machine's memory, which the watchdog (or the cgroup) would kill it for reaching.
fn jvm_options(limits: &Limits) -> Vec<String> {
    let mut options = vec![
        "-XX:+UseSerialGC".to_string(),
        "-XX:TieredStopAtLevel=1".to_string(),
        "-Xshare:auto".to_string(),
    ];
    if let Some(bytes) = limits.memory_limit_bytes {
        options.push(format!("-XX:MaxRAM={bytes}"));
    }
    options
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

/// Binds a sidecar on a free loopback port and starts the runtime against it.
async fn start_process(
    runtimes: &Runtimes,
    algorithm: &WorkerAlgorithm,
    options: SidecarOptions,
    settings: &Settings,
    limits: &Limits,
) -> Result<Launched, Error> {
    let sidecar = Sidecar::bind_local(options)
        .await
        .map_err(|e| Error::Start(format!("cannot open a sidecar port: {e}")))?;
    let port = sidecar
        .local_addr()
        .map_err(|e| Error::Start(format!("cannot read the sidecar's port: {e}")))?
        .port();
    let (link, end) = link_pair();
    let spec = runtimes.child_spec(algorithm, port, sidecar.unix_path(), settings, limits);
    let child = Supervised::start_limited(&spec, None, limits, &settings.memory_guard)
        .map_err(|e| Error::Start(e.to_string()))?;
    tokio::spawn(sidecar.run(link));
    Ok(Launched {
        to_sidecar: end.to_sidecar,
        from_sidecar: end.from_sidecar,
        worker: child,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn java_worker() -> WorkerAlgorithm {
        WorkerAlgorithm {
            name: "sum-java".into(),
            language: Language::Java,
            code_dir: PathBuf::from("/code"),
            entry_point: "Sum".into(),
            min_hot_workers: 0,
            max_workers: 0,
            request: crate::scheduler::Request::default(),
            classpath: None,
            container: None,
            prepared: None,
            command: None,
            env: Vec::new(),
        }
    }

    fn settings() -> Settings {
        Settings {
            log_limit: 1024,
            storage_dir: PathBuf::from("/storage"),
            cluster: "local".into(),
            storage_env: Vec::new(),
            memory_guard: MemoryGuard::Off,
        }
    }

    #[test]
    fn a_jvm_sizes_its_heap_to_the_workers_memory_cap() {
        let runtimes = Runtimes::at(PathBuf::from("/runtimes"));
        let capped = Limits {
            memory_limit_bytes: Some(512 << 20),
            gpu_devices: None,
        };
        let spec = runtimes.child_spec(&java_worker(), 4000, None, &settings(), &capped);
        let main = spec.args.iter().position(|a| a == "io.hkube.rs.Main");
        let max_ram = spec.args.iter().position(|a| a == "-XX:MaxRAM=536870912");
        // A JVM option: before the main class, or the JVM passes it to main as an argument.
        assert!(
            matches!((max_ram, main), (Some(at), Some(main)) if at < main),
            "{:?}",
            spec.args
        );
        let uncapped =
            runtimes.child_spec(&java_worker(), 4000, None, &settings(), &Limits::default());
        assert!(
            !uncapped.args.iter().any(|a| a.starts_with("-XX:MaxRAM")),
            "{:?}",
            uncapped.args
        );
    }
}
