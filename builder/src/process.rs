//! The one way hkube starts a process: installers (pip, npm, `dependencyInstallCmd`), git,
//! javac, and the algorithms' runtimes (through the orchestrator's `executor::child`).
//!
//! Every child
//! - starts with a **cleared environment** plus an allow-list of names copied from ours and
//!   the variables its caller sets: nothing of the server's own environment (`HKUBE_TOKEN`, S3
//!   credentials such as `AWS_SECRET_ACCESS_KEY`) reaches code a user wrote or chose;
//! - runs in **its own process group**, so the helpers it starts (pip's builds, git's
//!   transports, a user's background processes) end with it;
//! - ends within **a deadline** or on a stop: SIGTERM to the whole group, SIGKILL after a grace
//!   period. Whatever is left of the group when the child itself exits is killed too, and
//!   dropping a [`Running`] (a stopped build drops the future waiting for it) kills its group.
//!
//! What this module must never do: start a process that inherits our environment wholesale,
//! report a child's end while its group can still run, or block a thread while waiting. It
//! lives in `builder` because both the build service and the orchestrator's workers need it,
//! and `builder` must never depend on `orchestrator`.

use std::ffi::OsString;
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::time::Instant;

/// What every child may see of our environment: where things are and how text is encoded.
pub const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// An algorithm's runtime: [`BASE_ENV`], the language's own search paths and certificates.
pub const RUNTIME_ENV: &[&str] = &[
    "PYTHONPATH",
    "NODE_PATH",
    "JAVA_HOME",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];

/// How to reach the network through the operator's proxy: for installers and git.
pub const PROXY_ENV: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
];

/// An installer (pip, npm, an algorithm's `dependencyInstallCmd`), on top of [`RUNTIME_ENV`]
/// and [`PROXY_ENV`]: how to reach a package index (a mirror the operator configured). The
/// index settings are the operator's choice for installing dependencies, so installs see them;
/// no credential of hkube's own (token, storage keys) is among them.
pub const INSTALL_ENV: &[&str] = &[
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_TRUSTED_HOST",
    "PIP_CERT",
    "NPM_CONFIG_REGISTRY",
    "npm_config_registry",
    "NPM_CONFIG_CAFILE",
    "npm_config_cafile",
];

/// Time between SIGTERM and SIGKILL unless a [`Spec`] says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// How to start a child. Its stdin is empty; stdout and stderr are pipes for the caller.
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// `None`: our working folder.
    pub cwd: Option<PathBuf>,
    /// Lists of names copied from our environment when set ([`BASE_ENV`] always is).
    pub inherit: Vec<&'static [&'static str]>,
    /// Set on top of the inherited names (later entries win).
    pub env: Vec<(OsString, OsString)>,
    /// From the start to SIGTERM; `None`: no deadline.
    pub timeout: Option<Duration>,
    /// From SIGTERM to SIGKILL.
    pub grace: Duration,
    /// A cgroup folder (v1 or v2) the child joins before its program starts, so that
    /// everything it ever starts is counted and limited there: joining after the start would
    /// leave out what it forked meanwhile.
    pub cgroup: Option<PathBuf>,
}

impl Spec {
    pub fn new(program: impl Into<PathBuf>) -> Spec {
        Spec {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            inherit: vec![BASE_ENV],
            env: Vec::new(),
            timeout: None,
            grace: DEFAULT_GRACE,
            cgroup: None,
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Spec
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Spec {
        self.cwd = Some(cwd.into());
        self
    }

    pub fn inherit(mut self, names: &'static [&'static str]) -> Spec {
        self.inherit.push(names);
        self
    }

    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Spec {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn timeout(mut self, timeout: Option<Duration>) -> Spec {
        self.timeout = timeout;
        self
    }

    pub fn grace(mut self, grace: Duration) -> Spec {
        self.grace = grace;
        self
    }

    pub fn cgroup(mut self, cgroup: Option<PathBuf>) -> Spec {
        self.cgroup = cgroup;
        self
    }

    /// The command as the runner starts it: a cleared environment plus the allow-list and
    /// `env`, a process group of its own, an empty stdin.
    fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .stdin(Stdio::null())
            .process_group(0);
        for name in self.inherit.iter().copied().flatten() {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        if let Some(cgroup) = &self.cgroup {
            join_cgroup_before_exec(&mut command, cgroup);
        }
        command
    }

    /// Starts the child in a process group of its own.
    pub fn spawn(&self) -> Result<Running, Error> {
        let mut command = Command::from(self.command());
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().map_err(|source| Error::Spawn {
            program: self.program.display().to_string(),
            source,
        })?;
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        Ok(Running {
            child,
            group: GroupGuard(group),
            deadline: self.timeout.map(|after| Instant::now() + after),
            grace: self.grace,
        })
    }
}

impl Spec {
    /// Runs the child to its end on this thread, output discarded, for a quick tool working on
    /// hkube's own files (objcopy) outside any async runtime: the same environment and group,
    /// and no deadline; what is left of its group is killed when it exits.
    pub fn run_blocking(&self) -> Result<Exit, Error> {
        let mut command = self.command();
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            program: self.program.display().to_string(),
            source,
        })?;
        let group = i32::try_from(child.id()).ok().map(Pid::from_raw);
        let exit = match child.wait() {
            Ok(status) => exit_of(status),
            Err(_) => Exit::Stopped { killed: true },
        };
        drop(GroupGuard(group));
        Ok(exit)
    }
}

/// Makes the child move itself into `cgroup` between fork and exec (writing `0` to
/// `cgroup.procs` moves the writer, in v1 and v2 alike). Should the write fail, the spawn fails
/// with that error: a child must never run outside the limits it was given.
fn join_cgroup_before_exec(command: &mut std::process::Command, cgroup: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let procs = cgroup.join("cgroup.procs");
    // Built before the fork: between fork and exec nothing may allocate.
    let procs = std::ffi::CString::new(procs.as_os_str().as_bytes()).unwrap_or_default();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed; it calls only open(2), write(2) and close(2) on memory prepared
    // before the fork, and reads errno through std's io::Error (no allocation).
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            if written == 1 {
                Ok(())
            } else {
                Err(error)
            }
        });
    }
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Stopped by us (its deadline or a stop), after SIGTERM or SIGKILL.
    Stopped {
        killed: bool,
    },
    /// Killed for going over its memory limit (bytes): by the kernel in its cgroup, by
    /// hkube's watchdog, or by the container engine. The caller that enforces the limit
    /// decides this; the runner itself only sees a signal.
    OutOfMemory {
        limit_bytes: u64,
    },
    /// Ended by what runs it from outside, which says how in its own words (a Kubernetes pod:
    /// `was evicted by Kubernetes (Evicted: The node was low on resource: memory)`); shown as
    /// is after "the algorithm's process".
    External {
        reason: String,
    },
}

impl Exit {
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with code {code}"),
            Exit::Signal(signal) => {
                let name = Signal::try_from(*signal)
                    .map_or_else(|_| format!("signal {signal}"), |s| s.to_string());
                write!(f, "was killed by {name}")
            }
            Exit::Stopped { killed: false } => f.write_str("was stopped (SIGTERM)"),
            Exit::Stopped { killed: true } => {
                f.write_str("was stopped (SIGKILL after the grace period)")
            }
            Exit::OutOfMemory { limit_bytes } => write!(
                f,
                "exceeded its memory limit of {} (OOM)",
                memory_text(*limit_bytes)
            ),
            Exit::External { reason } => f.write_str(reason),
        }
    }
}

/// Bytes in HKube's memory units, as a user wrote them: `512Mi`, `2Gi`, `1536Ki`.
pub fn memory_text(bytes: u64) -> String {
    const KI: u64 = 1024;
    for (unit, size) in [
        ("Ti", KI.pow(4)),
        ("Gi", KI.pow(3)),
        ("Mi", KI.pow(2)),
        ("Ki", KI),
    ] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    if bytes >= KI.pow(2) {
        // Not a whole unit: MiB rounded up, so the figure is never below the real limit.
        return format!("{}Mi", bytes.div_ceil(KI.pow(2)));
    }
    format!("{bytes}B")
}

/// A started child. Dropping it kills its whole process group.
#[derive(Debug)]
pub struct Running {
    child: Child,
    group: GroupGuard,
    deadline: Option<Instant>,
    grace: Duration,
}

impl Running {
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Waits for the end: an exit, the deadline, or `stop` resolving. The deadline or a stop
    /// sends SIGTERM to the group, then SIGKILL after the grace period. When this returns,
    /// nothing of the group runs any more.
    pub async fn wait_or_stop(mut self, stop: impl Future<Output = ()>) -> Exit {
        let deadline = self.deadline;
        let timer = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            // An exit that already happened wins over a stop asked for at the same moment.
            biased;
            status = self.child.wait() => Some(status),
            () = timer => None,
            () = stop => None,
        };
        let exit = match outcome {
            Some(Ok(status)) => exit_of(status),
            Some(Err(_)) => Exit::Stopped { killed: true },
            None => self.terminate().await,
        };
        // Helpers the child left behind (they may hold its output pipes open) go with it.
        self.group.signal(Signal::SIGKILL);
        self.group.0 = None;
        exit
    }

    /// [`Running::wait_or_stop`] with no stop but the deadline.
    pub async fn wait(self) -> Exit {
        self.wait_or_stop(std::future::pending()).await
    }

    /// Waits for the end while keeping the last `keep` bytes of stdout and stderr together
    /// (for a tool whose output only matters when it fails).
    pub async fn output_tail(mut self, keep: usize) -> (Exit, String) {
        let stdout = self.take_stdout();
        let stderr = self.take_stderr();
        let (out, err, exit) = tokio::join!(tail(stdout, keep), tail(stderr, keep), self.wait());
        let mut text = String::from_utf8_lossy(&out).into_owned();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&String::from_utf8_lossy(&err));
        let cut = text.len().saturating_sub(keep);
        let cut = (cut..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        (exit, text[cut..].trim_end().to_string())
    }

    async fn terminate(&mut self) -> Exit {
        if let Ok(Some(status)) = self.child.try_wait() {
            return exit_of(status);
        }
        self.group.signal(Signal::SIGTERM);
        match tokio::time::timeout(self.grace, self.child.wait()).await {
            Ok(_) => Exit::Stopped { killed: false },
            Err(_) => {
                self.group.signal(Signal::SIGKILL);
                let _ = self.child.wait().await;
                Exit::Stopped { killed: true }
            }
        }
    }
}

/// The last `keep` bytes of a stream, read to its end (so the child never blocks on a pipe).
async fn tail(stream: Option<impl AsyncRead + Unpin>, keep: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut stream) = stream else {
        return kept;
    };
    let mut buffer = [0u8; 8192];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        kept.extend_from_slice(&buffer[..read]);
        if kept.len() > 2 * keep {
            kept.drain(..kept.len() - keep);
        }
    }
    let over = kept.len().saturating_sub(keep);
    kept.drain(..over);
    kept
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Code(-1),
    }
}

/// Signals a child's process group; kills it when dropped while still armed.
#[derive(Debug)]
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn signal(&self, signal: Signal) {
        if let Some(group) = self.0 {
            // ESRCH only means everyone in the group has already gone.
            let _ = killpg(group, signal);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn shell(script: &str) -> Spec {
        Spec::new("/bin/sh")
            .args(["-c", script])
            .grace(Duration::from_millis(300))
    }

    /// Running or sleeping: a zombie waiting for its reaper counts as gone.
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let state = stat.rsplit_once(") ")?.1.chars().next()?;
                Some(state != 'Z' && state != 'X')
            })
            .unwrap_or(false)
    }

    /// Reads the grandchild's pid that the script prints first.
    async fn first_line(running: &mut Running) -> i32 {
        let mut stdout = running.take_stdout().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).await.unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        String::from_utf8(line).unwrap().trim().parse().unwrap()
    }

    #[tokio::test]
    async fn the_deadline_ends_the_child_and_its_grandchildren() {
        // The grandchild ignores SIGTERM: only the group's SIGKILL ends it.
        let mut running = shell("sh -c \"trap '' TERM; sleep 30\" & echo $!; wait")
            .timeout(Some(Duration::from_millis(300)))
            .spawn()
            .unwrap();
        let grandchild = first_line(&mut running).await;
        assert!(alive(grandchild));
        let exit = running.wait().await;
        assert!(matches!(exit, Exit::Stopped { .. }), "{exit:?}");
        let gone = Instant::now() + Duration::from_secs(5);
        while alive(grandchild) && Instant::now() < gone {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(grandchild), "the grandchild outlived the deadline");
    }

    /// A child that cannot join its cgroup never runs: the spawn fails naming why.
    #[tokio::test]
    async fn a_cgroup_that_cannot_be_joined_fails_the_spawn() {
        let error = shell("echo ran")
            .cgroup(Some("/no/such/cgroup".into()))
            .spawn()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("cannot start /bin/sh") && error.contains("No such file"),
            "{error}"
        );
    }

    #[test]
    fn memory_is_written_in_hkube_units() {
        let cases = [
            (512 * 1024 * 1024, "512Mi"),
            (2 << 30, "2Gi"),
            (1536 * 1024, "1536Ki"),
            (154 * 1024 * 1024 + 1, "155Mi"),
            (100, "100B"),
        ];
        for (bytes, text) in cases {
            assert_eq!(memory_text(bytes), text);
        }
        assert_eq!(
            Exit::OutOfMemory {
                limit_bytes: 512 << 20
            }
            .to_string(),
            "exceeded its memory limit of 512Mi (OOM)"
        );
    }

    #[tokio::test]
    async fn an_exited_child_leaves_no_helper_behind() {
        let mut running = shell("sleep 30 & echo $!").spawn().unwrap();
        let grandchild = first_line(&mut running).await;
        assert_eq!(running.wait().await, Exit::Code(0));
        let gone = Instant::now() + Duration::from_secs(5);
        while alive(grandchild) && Instant::now() < gone {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(grandchild), "the background helper still runs");
    }

    #[tokio::test]
    async fn dropping_a_running_child_kills_its_group() {
        let mut running = shell("sleep 30 & echo $!; wait").spawn().unwrap();
        let grandchild = first_line(&mut running).await;
        drop(running);
        let gone = Instant::now() + Duration::from_secs(5);
        while alive(grandchild) && Instant::now() < gone {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(grandchild));
    }

    #[tokio::test]
    async fn the_environment_is_the_allow_list_and_what_the_caller_sets() {
        std::env::set_var("HKUBE_SECRET_FOR_PROCESS_TEST", "leak");
        let (exit, output) =
            shell("echo \"[$HKUBE_SECRET_FOR_PROCESS_TEST][$SET][${PATH:+path}]\"")
                .env("SET", "set")
                .spawn()
                .unwrap()
                .output_tail(100)
                .await;
        assert!(exit.success(), "{exit}");
        assert_eq!(output, "[][set][path]");
    }

    #[tokio::test]
    async fn output_tail_keeps_the_end_of_both_streams() {
        let (exit, output) = shell("seq 1 1000; echo failed >&2; exit 3")
            .spawn()
            .unwrap()
            .output_tail(30)
            .await;
        assert_eq!(exit, Exit::Code(3));
        assert!(output.ends_with("failed"), "{output}");
        assert!(output.len() <= 30, "{output}");
    }

    #[tokio::test]
    async fn a_stop_sends_sigterm_first() {
        let running = shell("trap 'exit 0' TERM; while true; do sleep 0.05; done")
            .spawn()
            .unwrap();
        let exit = running
            .wait_or_stop(tokio::time::sleep(Duration::from_millis(100)))
            .await;
        assert_eq!(exit, Exit::Stopped { killed: false });
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let error = Spec::new("/no/such/program").spawn().unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot start /no/such/program"),
            "{error}"
        );
    }
}
