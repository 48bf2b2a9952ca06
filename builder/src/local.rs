//! Dependencies for algorithms that run as local processes (no container engine): a Python
//! virtual environment or a `node_modules` folder, made once per lockfile digest and shared by
//! every algorithm (and every run) with the same dependencies.
//!
//! An environment is made in a temporary folder and renamed into place only when complete, so
//! a failed or interrupted install leaves nothing behind that a later run would trust.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::context::hex;
use crate::env::Env;
use crate::process;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed ({status}); last output: {last}")]
    Failed {
        what: String,
        status: String,
        last: String,
    },
    #[error("{what} took longer than {} s and was stopped", after.as_secs())]
    Timeout { what: String, after: Duration },
}

/// Where environments live and which tools make them.
#[derive(Debug, Clone)]
pub struct LocalEnvs {
    pub root: PathBuf,
    pub python: String,
    pub npm: String,
    /// For one install.
    pub timeout: Duration,
}

/// What a prepared algorithm runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// The virtual environment's interpreter (Python with requirements).
    pub python: Option<PathBuf>,
    /// A `node_modules` folder for `NODE_PATH` (Node.js with a package.json).
    pub node_modules: Option<PathBuf>,
}

impl LocalEnvs {
    pub fn new(root: PathBuf) -> LocalEnvs {
        LocalEnvs {
            root,
            python: std::env::var("HKUBE_PYTHON").unwrap_or_else(|_| "python3".into()),
            npm: "npm".into(),
            timeout: Duration::from_secs(30 * 60),
        }
    }

    /// Makes (or finds) the environment the code in `code_dir` needs; `log` gets each line
    /// the installers print. Nothing to install: an empty [`Prepared`].
    pub async fn prepare(
        &self,
        env: Env,
        code_dir: &Path,
        mut log: impl FnMut(&str),
    ) -> Result<Prepared, Error> {
        match env {
            Env::Python => {
                let requirements = code_dir.join("requirements.txt");
                let Some(key) = digest_of(&[&requirements])? else {
                    return Ok(Prepared::default());
                };
                let dir = self.root.join(format!("python-{key}"));
                if !ready(&dir) {
                    log(&format!(
                        "making a Python environment for requirements.txt ({})",
                        dir.display()
                    ));
                    self.make(&dir, &mut log, |tmp| {
                        let python = tmp.join("bin/python").display().to_string();
                        let requirements = requirements.display().to_string();
                        Ok(vec![
                            Step::new(&self.python, &["-m", "venv", &tmp.display().to_string()]),
                            Step::new(&python, &["-m", "pip", "install", "-r", &requirements]),
                        ])
                    })
                    .await?;
                } else {
                    log(&format!("reusing the Python environment {}", dir.display()));
                }
                Ok(Prepared {
                    python: Some(dir.join("bin/python")),
                    node_modules: None,
                })
            }
            Env::Nodejs => {
                let package = code_dir.join("package.json");
                let lock = code_dir.join("package-lock.json");
                let Some(key) = digest_of(&[&package, &lock])? else {
                    return Ok(Prepared::default());
                };
                let dir = self.root.join(format!("node-{key}"));
                if !ready(&dir) {
                    log(&format!(
                        "installing package.json's dependencies ({})",
                        dir.display()
                    ));
                    self.make(&dir, &mut log, |tmp| {
                        // npm installs into the folder it runs in: the manifests go there.
                        for manifest in [&package, &lock] {
                            if manifest.is_file() {
                                std::fs::copy(
                                    manifest,
                                    tmp.join(manifest.file_name().unwrap_or_default()),
                                )?;
                            }
                        }
                        let mut install = Step::new(
                            &self.npm,
                            &["install", "--omit=dev", "--no-audit", "--no-fund"],
                        );
                        install.cwd = Some(tmp.to_path_buf());
                        Ok(vec![install])
                    })
                    .await?;
                } else {
                    log(&format!("reusing the node_modules of {}", dir.display()));
                }
                Ok(Prepared {
                    python: None,
                    node_modules: Some(dir.join("node_modules")),
                })
            }
            Env::Java | Env::Wasm => Ok(Prepared::default()),
        }
    }

    /// Runs an algorithm's `dependencyInstallCmd` with `sh -c` in its (kept) code folder, with
    /// the prepared virtual environment first on PATH; once per folder (a marker file records
    /// success, so a failed command runs again at the next build).
    pub async fn run_install_cmd(
        &self,
        command: &str,
        code_dir: &Path,
        prepared: &Prepared,
        mut log: impl FnMut(&str),
    ) -> Result<(), Error> {
        let done = code_dir.join(".hkube-install-cmd-done");
        if done.is_file() {
            log("the dependency install command already ran for this code");
            return Ok(());
        }
        log(&format!(
            "running the dependency install command in {}: {command}",
            code_dir.display()
        ));
        let mut path = std::env::var("PATH").unwrap_or_default();
        if let Some(bin) = prepared.python.as_ref().and_then(|p| p.parent()) {
            path = format!("{}:{path}", bin.display());
        }
        let step = Step {
            program: "sh".into(),
            args: vec!["-c".into(), command.to_string()],
            cwd: Some(code_dir.to_path_buf()),
        };
        self.run_with(&step, &[("PATH", path.as_str())], &mut log)
            .await?;
        std::fs::write(&done, b"").map_err(|source| Error::Io {
            what: format!("writing {}", done.display()),
            source,
        })
    }

    /// Runs the steps `plan` gives for a fresh temporary folder (it may put files there
    /// first), then renames the folder to `dir`.
    async fn make(
        &self,
        dir: &Path,
        log: &mut impl FnMut(&str),
        plan: impl FnOnce(&Path) -> std::io::Result<Vec<Step>>,
    ) -> Result<(), Error> {
        let io = |what: String| move |source| Error::Io { what, source };
        std::fs::create_dir_all(&self.root)
            .map_err(io(format!("creating {}", self.root.display())))?;
        let tmp = self.root.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        let outcome = async {
            let steps = plan(&tmp).map_err(io(format!("preparing {}", tmp.display())))?;
            for step in steps {
                self.run_with(&step, &[], log).await?;
            }
            std::fs::write(tmp.join(".ready"), b"")
                .map_err(io("marking the environment ready".into()))?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(error) = outcome {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(error);
        }
        match std::fs::rename(&tmp, dir) {
            Ok(()) => Ok(()),
            // Another run made the same environment meanwhile: theirs is as good.
            Err(_) if ready(dir) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(source) => Err(Error::Io {
                what: format!("moving the environment to {}", dir.display()),
                source,
            }),
        }
    }

    /// Runs one step through the process runner: a cleared environment with what installers
    /// need ([`process::PROXY_ENV`], [`process::INSTALL_ENV`]) plus `env`, its own process group, this service's
    /// timeout. A stopped build drops this future: the installer and its helpers go with it.
    async fn run_with(
        &self,
        step: &Step,
        env: &[(&str, &str)],
        log: &mut impl FnMut(&str),
    ) -> Result<(), Error> {
        let Step { program, args, cwd } = step;
        let what = format!("{program} {}", args.join(" "));
        let mut spec = process::Spec::new(program)
            .args(args)
            .inherit(process::RUNTIME_ENV)
            .inherit(process::PROXY_ENV)
            .inherit(process::INSTALL_ENV)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .timeout(Some(self.timeout));
        for (name, value) in env {
            spec = spec.env(name, value);
        }
        if let Some(cwd) = cwd {
            spec = spec.cwd(cwd);
        }
        let mut running = spec.spawn().map_err(|error| Error::Io {
            what: format!("starting {program}"),
            source: match error {
                process::Error::Spawn { source, .. } => source,
            },
        })?;
        let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        let streams = [
            running
                .take_stdout()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            running
                .take_stderr()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let mut last: Vec<String> = Vec::new();
        let mut keep = |line: String, log: &mut dyn FnMut(&str)| {
            log(&line);
            last.push(line);
            if last.len() > 3 {
                last.remove(0);
            }
        };
        let exit = running.wait();
        tokio::pin!(exit);
        let exit = loop {
            tokio::select! {
                Some(line) = lines.recv() => keep(line, log),
                exit = &mut exit => break exit,
            }
        };
        // The group is gone, so the pipes close: the last lines explain a failure.
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_millis(500), lines.recv()).await
        {
            keep(line, log);
        }
        match exit {
            process::Exit::Code(0) => Ok(()),
            process::Exit::Stopped { .. } => Err(Error::Timeout {
                what,
                after: self.timeout,
            }),
            other => Err(Error::Failed {
                what,
                status: other.to_string(),
                last: last.join(" | "),
            }),
        }
    }
}

/// One command of an environment's making.
#[derive(Debug)]
struct Step {
    program: String,
    args: Vec<String>,
    cwd: Option<PathBuf>,
}

impl Step {
    fn new(program: &str, args: &[&str]) -> Step {
        Step {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: None,
        }
    }
}

fn ready(dir: &Path) -> bool {
    dir.join(".ready").is_file()
}

/// A short digest of the files that exist among `files`; `None` when none does.
fn digest_of(files: &[&Path]) -> Result<Option<String>, Error> {
    let mut hasher = Sha256::new();
    let mut any = false;
    for file in files {
        match std::fs::read(file) {
            Ok(bytes) => {
                any = true;
                hasher.update(
                    file.file_name()
                        .map(|n| n.as_encoded_bytes())
                        .unwrap_or_default(),
                );
                hasher.update([0]);
                hasher.update(Sha256::digest(&bytes));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    what: format!("reading {}", file.display()),
                    source,
                })
            }
        }
    }
    Ok(any.then(|| hex(&hasher.finalize())[..16].to_string()))
}
