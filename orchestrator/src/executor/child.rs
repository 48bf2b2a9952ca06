//! One supervised child process: the algorithm runtime of a local worker.
//!
//! Built on the one process runner, `builder::process`: the child starts with a cleared
//! environment plus an allow-list ([`INHERITED_ENV`]) and the variables the worker sets, so
//! nothing of the orchestrator's own environment (tokens, credentials) leaks into user code;
//! it runs in its own process group, and stopping it is SIGTERM to the group, then SIGKILL
//! after a grace period. A supervisor task watches the exit, a deadline and a stop. Its stdout
//! and stderr are kept in a bounded log: the last lines explain a crash.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use builder::process;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use super::limits::{Armed, Limits, MemoryGuard};

pub use builder::process::Exit;

/// Lists of variables a runtime inherits from the orchestrator when set; everything else is
/// cleared.
pub const INHERITED_ENV: &[&[&str]] = &[process::BASE_ENV, process::RUNTIME_ENV];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Limits(#[from] super::limits::Error),
}

/// How to start a child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// Set on top of the inherited allow-list.
    pub env: Vec<(String, String)>,
    /// Bytes of output kept (the newest lines win).
    pub log_limit: usize,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
}

/// The newest output lines of a child, bounded in bytes.
#[derive(Debug, Default)]
pub struct Log {
    lines: VecDeque<String>,
    bytes: usize,
    limit: usize,
    /// Lines dropped to stay within the limit.
    pub dropped: u64,
    /// Also gets each line as it comes: the task the worker runs now (task logs).
    pub sink: Option<LineSink>,
}

/// Where a child's lines go as they are read, besides its log.
#[derive(Clone)]
pub struct LineSink(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for LineSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineSink")
    }
}

impl Log {
    pub fn new(limit: usize) -> Self {
        Log {
            limit,
            ..Log::default()
        }
    }

    pub fn push(&mut self, line: String) {
        if let Some(sink) = &self.sink {
            (sink.0)(&line);
        }
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > self.limit && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len() + 1;
                self.dropped += 1;
            }
        }
    }

    /// The last `count` lines, oldest first.
    pub fn tail(&self, count: usize) -> Vec<String> {
        self.lines
            .iter()
            .skip(self.lines.len().saturating_sub(count))
            .cloned()
            .collect()
    }

    pub fn text(&self) -> String {
        let mut text = self
            .lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        text
    }
}

/// A running child. Dropping it does not kill the process; [`Supervised::stop`] does.
#[derive(Debug)]
pub struct Supervised {
    pub pid: u32,
    pub log: Arc<Mutex<Log>>,
    stop: Arc<watch::Sender<bool>>,
    exit: watch::Receiver<Option<Exit>>,
}

/// The supervisor's side of [`Supervised::external`].
#[derive(Debug)]
pub struct ExternalControls {
    pub log: Arc<Mutex<Log>>,
    /// Becomes `true` when the worker is asked to stop.
    pub stop: watch::Receiver<bool>,
    /// Send the end once, when the worker has ended.
    pub exit: watch::Sender<Option<Exit>>,
}

/// Stops a child from anywhere (a clone of [`Supervised::stop`]).
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<watch::Sender<bool>>);

impl StopHandle {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Supervised {
    /// Starts the child and its supervisor; `deadline` stops it when reached.
    pub fn start(spec: &ChildSpec, deadline: Option<Duration>) -> Result<Supervised, Error> {
        Self::start_limited(spec, deadline, &Limits::default(), &MemoryGuard::Off)
    }

    /// [`Supervised::start`] within `limits`: it sees only its GPUs, and its memory is capped
    /// by `guard` (an end the cap caused is reported as `Exit::OutOfMemory`).
    pub fn start_limited(
        spec: &ChildSpec,
        deadline: Option<Duration>,
        limits: &Limits,
        guard: &MemoryGuard,
    ) -> Result<Supervised, Error> {
        let mut armed = guard.arm(limits)?;
        let mut runner = process::Spec::new(&spec.program)
            .args(&spec.args)
            .cwd(&spec.cwd)
            .timeout(deadline)
            .grace(spec.grace)
            .cgroup(armed.cgroup_path());
        runner.inherit = INHERITED_ENV.to_vec();
        for (name, value) in &spec.env {
            runner = runner.env(name, value);
        }
        // After the algorithm's own variables: its grant is not its to widen.
        if let Some(devices) = limits.cuda_visible_devices() {
            runner = runner.env("CUDA_VISIBLE_DEVICES", devices);
        }
        let mut child = runner.spawn().map_err(|error| match error {
            process::Error::Spawn { program, source } => Error::Spawn { program, source },
        })?;
        let pid = child.id().unwrap_or(0);
        armed.started(pid);
        let log = Arc::new(Mutex::new(Log::new(spec.log_limit)));
        let mut collectors = Vec::new();
        if let Some(stdout) = child.take_stdout() {
            collectors.push(tokio::spawn(collect(stdout, log.clone())));
        }
        if let Some(stderr) = child.take_stderr() {
            collectors.push(tokio::spawn(collect(stderr, log.clone())));
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(supervise(child, stop_rx, exit_tx, collectors, armed));
        Ok(Supervised {
            pid,
            log,
            stop: Arc::new(stop_tx),
            exit: exit_rx,
        })
    }

    /// A handle for a worker that is not a child process (a container pair): its supervisor
    /// watches `stop` and reports the end through `exit`, and fills `log`.
    pub fn external(log_limit: usize) -> (Supervised, ExternalControls) {
        let log = Arc::new(Mutex::new(Log::new(log_limit)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (exit_tx, exit_rx) = watch::channel(None);
        let supervised = Supervised {
            pid: 0,
            log: log.clone(),
            stop: Arc::new(stop_tx),
            exit: exit_rx,
        };
        let controls = ExternalControls {
            log,
            stop: stop_rx,
            exit: exit_tx,
        };
        (supervised, controls)
    }

    /// Asks the child to stop: SIGTERM, then SIGKILL after the grace period.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Waits for the child to end.
    pub async fn wait(&self) -> Exit {
        self.exit_watch().await
    }

    /// A future that resolves when the child ends, independent of `self`.
    pub fn exit_watch(&self) -> impl std::future::Future<Output = Exit> + Send + 'static {
        let mut exit = self.exit.clone();
        async move {
            loop {
                if let Some(done) = exit.borrow().clone() {
                    return done;
                }
                if exit.changed().await.is_err() {
                    return exit
                        .borrow()
                        .clone()
                        .unwrap_or(Exit::Stopped { killed: true });
                }
            }
        }
    }

    /// The exit, if the child has ended.
    pub fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }
}

async fn collect(stream: impl AsyncRead + Unpin, log: Arc<Mutex<Log>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(mut log) = log.lock() {
            log.push(line);
        }
    }
}

async fn supervise(
    child: process::Running,
    mut stop: watch::Receiver<bool>,
    exit: watch::Sender<Option<Exit>>,
    collectors: Vec<tokio::task::JoinHandle<()>>,
    armed: Armed,
) {
    let stop_requested = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let result = armed
        .verdict(child.wait_or_stop(stop_requested).await)
        .await;
    // The last lines explain the exit: let the readers drain the pipes first.
    for collector in collectors {
        let _ = tokio::time::timeout(Duration::from_millis(500), collector).await;
    }
    let _ = exit.send(Some(result));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> ChildSpec {
        ChildSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: std::env::temp_dir(),
            env: vec![("HKUBE_TEST".into(), "set".into())],
            log_limit: 1024,
            grace: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn exit_code_and_output() {
        let child = Supervised::start(&shell("echo out; echo err >&2; exit 3"), None).unwrap();
        assert_eq!(child.wait().await, Exit::Code(3));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let log = child.log.lock().unwrap().text();
        assert!(log.contains("out") && log.contains("err"), "{log}");
    }

    #[tokio::test]
    async fn environment_is_cleared_but_for_the_allow_list() {
        std::env::set_var("HKUBE_SECRET_FOR_TEST", "leak");
        let child = Supervised::start(
            &shell("echo \"[$HKUBE_SECRET_FOR_TEST][$HKUBE_TEST]\"; test -n \"$PATH\""),
            None,
        )
        .unwrap();
        assert_eq!(child.wait().await, Exit::Code(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            child.log.lock().unwrap().tail(1),
            vec!["[][set]".to_string()]
        );
    }

    #[tokio::test]
    async fn stop_sends_sigterm_first() {
        let child = Supervised::start(
            &shell("trap 'exit 0' TERM; while true; do sleep 0.05; done"),
            None,
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        child.stop();
        assert_eq!(child.wait().await, Exit::Stopped { killed: false });
    }

    #[tokio::test]
    async fn a_child_ignoring_sigterm_is_killed() {
        let child = Supervised::start(
            &shell("trap '' TERM; while true; do sleep 0.05; done"),
            None,
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        child.stop();
        assert_eq!(child.wait().await, Exit::Stopped { killed: true });
    }

    #[tokio::test]
    async fn the_deadline_stops_the_child() {
        let child =
            Supervised::start(&shell("sleep 10"), Some(Duration::from_millis(100))).unwrap();
        assert!(matches!(child.wait().await, Exit::Stopped { .. }));
    }

    #[tokio::test]
    async fn a_signal_is_named() {
        let child = Supervised::start(&shell("kill -9 $$"), None).unwrap();
        let exit = child.wait().await;
        assert_eq!(exit, Exit::Signal(9));
        assert_eq!(exit.to_string(), "was killed by SIGKILL");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let mut spec = shell("");
        spec.program = "/no/such/program".into();
        let error = Supervised::start(&spec, None).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot start /no/such/program"),
            "{error}"
        );
    }

    #[test]
    fn the_log_keeps_the_newest_lines() {
        let mut log = Log::new(10);
        for line in ["aaaa", "bbbb", "cccc"] {
            log.push(line.to_string());
        }
        assert_eq!(log.tail(5), vec!["bbbb".to_string(), "cccc".to_string()]);
        assert_eq!(log.dropped, 1);
    }
}
