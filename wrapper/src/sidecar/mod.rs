//! The sidecar: the websocket server an algorithm's wrapper connects to.
//!
//! One sidecar serves one algorithm process. Tasks arrive on the [`link`](crate::link) from the
//! orchestrator; the sidecar runs them through HKube's exchange (`initialize` … `done`) or,
//! when the wrapper negotiated it, hkube's fast path (`run` → `result`, several tasks per
//! `runBatch`), and reports how each ended. Code-API requests are relayed to the orchestrator
//! and answered.
//!
//! It never brings itself down on bad input: a second connection, a malformed frame or a message
//! out of order is logged and fails the task it concerns, naming what was wrong. It ends when
//! the algorithm disconnects or exits, when the orchestrator goes away, or when the algorithm
//! never connects or never stops; it says why in [`FromSidecar::Gone`].
//!
//! Stops. A stop of a task the algorithm has (the one task, or any task of a fast-path batch)
//! sends `stop` and stops the whole of that work; from then on the sidecar hands out nothing
//! and takes nothing the algorithm sends as an outcome until the wrapper answers `stopped`:
//! a late `done`/`result`/`results` of the stopped work is dropped, and so is a fast-path answer
//! naming a task the algorithm no longer has, whenever it comes. On `stopped` every task of the
//! stopped work is reported [`Outcome::Stopped`] (the orchestrator runs again those it did not
//! ask to stop); a fast-path runtime then takes the next tasks, while a wrapper speaking HKube's
//! exchange gets `exit` and the sidecar ends ([`REPLACED_AFTER_STOP`]). Without `stopped`
//! within `stop_timeout` the sidecar ends too, and the orchestrator kills the process.

mod connection;
mod spool;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::either::Either;

use crate::link::{Assignment, CodeApiReply, CodeApiRequest, FromSidecar, Outcome, ToSidecar};
use crate::protocol::messages::{
    DataSourceResponse, ErrorInfo, ExecutionDone, ExecutionError, ExitPayload, JobData, JobInfo,
    RunBatch, StartAlgorithmExecution, StartPayload, StopPayload, SubPipelineDone,
    SubPipelineError, SubPipelineStopped, TaskOutcome,
};
use crate::protocol::{self, FromAlgorithm, Session, StorageMode, ToAlgorithm};
use crate::storage::{self, Storage};
use connection::Connection;

/// Why a sidecar ends after a wrapper speaking HKube's exchange answered a stop.
pub const REPLACED_AFTER_STOP: &str =
    "the wrapper was stopped and is replaced: HKube's exchange cannot tell a late `done` of stopped work from the next task's";

/// How the reason starts when the algorithm did not answer a stop in time.
const STOP_TIMED_OUT: &str = "the algorithm did not stop within";
/// How the reason starts when a wrapper that sent `alive` went silent.
const ALIVE_TIMED_OUT: &str = "no response from the algorithm's wrapper for";

/// Whether the sidecar ended (with this reason) because the algorithm stopped answering: a stop
/// it ignored, or `alive` that stopped coming. Its process will not leave on its own; whoever
/// started it kills it at once.
pub fn process_is_stuck(reason: &str) -> bool {
    reason.starts_with(STOP_TIMED_OUT) || reason.starts_with(ALIVE_TIMED_OUT)
}

/// Where v3 wrappers read inputs from and write outputs to.
#[derive(Debug, Clone)]
pub struct StorageAccess {
    pub storage: Arc<dyn Storage>,
    pub cluster: String,
    pub encoding: storage::encoding::Encoding,
    /// When `storage` is not the folder hkube's runtimes write large values to (S3): that
    /// folder. The sidecar then publishes a runtime's stored result to `storage` and fetches a
    /// stored input the folder lacks (see [`spool`]).
    pub spool: Option<Arc<dyn Storage>>,
}

#[derive(Debug, Clone)]
pub struct SidecarOptions {
    /// How long the algorithm has to connect (HKube: 60 s).
    pub connect_timeout: Duration,
    /// How long a stopped task has to answer `stopped` (HKube: 10 s; each `stopping` restarts
    /// it, up to `stopping_limit` in all).
    pub stop_timeout: Duration,
    pub stopping_limit: Duration,
    /// After a wrapper's first `alive` for a task, silence this long means it is stuck
    /// (HKube's `WRAPPER_TIMEOUT_DURATION`, 10 s). Wrappers that never send `alive` are never
    /// held to it.
    pub alive_timeout: Duration,
    /// Most tasks in one fast-path `runBatch`.
    pub max_batch: usize,
    /// Largest websocket message accepted (HKube: 100,000,000 bytes).
    pub max_message_bytes: usize,
    /// Needed for wrappers that negotiate storage v3 (HKube's official wrappers).
    pub storage: Option<StorageAccess>,
}

impl Default for SidecarOptions {
    fn default() -> Self {
        SidecarOptions {
            connect_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(10),
            stopping_limit: Duration::from_secs(600),
            alive_timeout: Duration::from_secs(10),
            max_batch: 64,
            max_message_bytes: 100_000_000,
            storage: None,
        }
    }
}

/// The sidecar's end of the task link.
#[derive(Debug)]
pub struct Link {
    pub from_orchestrator: mpsc::UnboundedReceiver<ToSidecar>,
    pub to_orchestrator: mpsc::UnboundedSender<FromSidecar>,
}

/// The orchestrator's end of an in-process task link.
#[derive(Debug)]
pub struct OrchestratorEnd {
    pub to_sidecar: mpsc::UnboundedSender<ToSidecar>,
    pub from_sidecar: mpsc::UnboundedReceiver<FromSidecar>,
}

/// An in-process link: the local executor and its sidecars share one process.
pub fn link_pair() -> (Link, OrchestratorEnd) {
    let (to_sidecar, from_orchestrator) = mpsc::unbounded_channel();
    let (to_orchestrator, from_sidecar) = mpsc::unbounded_channel();
    (
        Link {
            from_orchestrator,
            to_orchestrator,
        },
        OrchestratorEnd {
            to_sidecar,
            from_sidecar,
        },
    )
}

#[derive(Debug)]
pub struct Sidecar {
    listener: TcpListener,
    unix: Option<UnixSocket>,
    options: SidecarOptions,
}

/// A Unix socket the algorithm may connect to instead of the TCP port, in a private folder of
/// its own (mode 0700) that goes when the sidecar ends.
#[derive(Debug)]
struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    _folder: tempfile::TempDir,
}

/// Longest path a Unix socket address holds on Linux (`sun_path` is 108 bytes with its NUL).
const UNIX_PATH_MAX: usize = 107;

impl Sidecar {
    /// Listens on `addr` (`127.0.0.1:0` picks a free port).
    pub async fn bind(addr: SocketAddr, options: SidecarOptions) -> std::io::Result<Sidecar> {
        Ok(Sidecar {
            listener: TcpListener::bind(addr).await?,
            unix: None,
            options,
        })
    }

    /// Listens on a free loopback port, as [`Sidecar::bind`], and also on a Unix socket for an
    /// algorithm on this machine ([`Sidecar::unix_path`]). hkube's own runtimes connect there:
    /// a message over a Unix socket skips the TCP/IP stack (a 40-step chain of no-op Python
    /// tasks on one core took 2.9–3.0 ms instead of 3.3–3.5, docs/semantics.md). HKube's
    /// wrappers know only the port, which stays. Without a folder for the socket (a temp dir
    /// too long, or not writable), the port alone is served.
    pub async fn bind_local(options: SidecarOptions) -> std::io::Result<Sidecar> {
        let mut sidecar = Sidecar::bind(SocketAddr::from(([127, 0, 0, 1], 0)), options).await?;
        sidecar.unix = UnixSocket::bind().ok();
        Ok(sidecar)
    }

    /// The Unix socket's path, when [`Sidecar::bind_local`] made one.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_ref().map(|unix| unix.path.as_path())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves the algorithm until it goes away; returns why (also sent as `Gone`).
    pub async fn run(self, link: Link) -> String {
        let Sidecar {
            listener,
            unix,
            options,
        } = self;
        let mut run = Run {
            connect_deadline: Instant::now() + options.connect_timeout,
            options,
            to_orchestrator: link.to_orchestrator,
            conn: None,
            session: Session::new(),
            queue: VecDeque::new(),
            current: Vec::new(),
            storing: None,
            calls: HashMap::new(),
            next_call: 1,
            stored_runs: 0,
            stop: None,
            alive: None,
        };
        let reason = run.serve(listener, unix, link.from_orchestrator).await;
        let _ = run.to_orchestrator.send(FromSidecar::Gone {
            reason: reason.clone(),
        });
        reason
    }
}

/// A code-API request the algorithm is waiting on.
#[derive(Debug)]
enum Call {
    Algorithm { exec_id: String },
    SubPipeline { id: String },
}

#[derive(Debug)]
struct StopState {
    deadline: Instant,
    began: Instant,
}

struct Run {
    options: SidecarOptions,
    to_orchestrator: mpsc::UnboundedSender<FromSidecar>,
    conn: Option<Connection>,
    session: Session,
    connect_deadline: Instant,
    /// Tasks not handed to the algorithm yet.
    queue: VecDeque<Arc<Assignment>>,
    /// Tasks the algorithm has now (one, or a fast-path batch).
    current: Vec<Arc<Assignment>>,
    /// Where a v3 wrapper said it stored the current output.
    storing: Option<String>,
    calls: HashMap<u64, Call>,
    next_call: u64,
    /// Tasks whose inputs were written to storage so far (storage v3).
    stored_runs: u64,
    stop: Option<StopState>,
    /// When the running task's wrapper must next say `alive`.
    alive: Option<Instant>,
}

impl Run {
    async fn serve(
        &mut self,
        listener: TcpListener,
        unix: Option<UnixSocket>,
        mut link: mpsc::UnboundedReceiver<ToSidecar>,
    ) -> String {
        loop {
            let connect_deadline = self.connect_deadline;
            let stop_deadline = self.stop.as_ref().map(|s| s.deadline);
            let alive_deadline = self.alive;
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, peer)) = accepted {
                        self.accepted(Either::Left(stream), peer.to_string()).await;
                    }
                }
                accepted = accept_unix(unix.as_ref()) => {
                    if let Ok(stream) = accepted {
                        self.accepted(Either::Right(stream), "its Unix socket".to_string()).await;
                    }
                }
                message = link.recv() => match message {
                    Some(message) => {
                        if let Some(reason) = self.on_orchestrator(message).await {
                            return reason;
                        }
                    }
                    None => {
                        self.close().await;
                        return "the orchestrator closed the link".to_string();
                    }
                },
                frame = connection::next(&mut self.conn) => {
                    if let Some(reason) = self.on_algorithm(frame).await {
                        return reason;
                    }
                }
                () = tokio::time::sleep_until(connect_deadline), if self.conn.is_none() => {
                    let reason = format!(
                        "the algorithm did not connect within {} s",
                        self.options.connect_timeout.as_secs_f64()
                    );
                    self.crash_current(&reason);
                    return reason;
                }
                () = sleep_until_some(alive_deadline), if alive_deadline.is_some() => {
                    let reason = format!(
                        "{ALIVE_TIMED_OUT} {} s (it stopped sending alive)",
                        self.options.alive_timeout.as_secs_f64()
                    );
                    self.crash_current(&reason);
                    self.close().await;
                    return reason;
                }
                () = sleep_until_some(stop_deadline), if stop_deadline.is_some() => {
                    let reason = format!(
                        "{STOP_TIMED_OUT} {} s",
                        self.options.stop_timeout.as_secs_f64()
                    );
                    for task in std::mem::take(&mut self.current) {
                        self.report_finished(&task.task_id, Outcome::Stopped);
                    }
                    self.close().await;
                    return reason;
                }
            }
        }
    }

    async fn accepted(&mut self, stream: connection::Stream, peer: String) {
        if self.conn.is_some() {
            let message = format!(
                "a second algorithm connection (from {peer}) was refused: one sidecar serves one algorithm process"
            );
            eprintln!("hkube sidecar: {message}");
            tokio::spawn(connection::refuse(
                stream,
                message.clone(),
                self.options.max_message_bytes,
            ));
            self.fail_current(&message);
            return;
        }
        match Connection::accept(stream, self.options.max_message_bytes).await {
            Ok(conn) => {
                for warning in &conn.negotiated.warnings {
                    eprintln!("hkube sidecar: {warning}");
                }
                if conn.negotiated.storage == StorageMode::V3
                    && !conn.negotiated.fast
                    && self.options.storage.is_none()
                {
                    eprintln!("hkube sidecar: the wrapper asked for storage v3 but no storage is configured; tasks will fail");
                }
                self.conn = Some(conn);
                self.session = Session::new();
                let _ = self.to_orchestrator.send(FromSidecar::Ready);
                self.dispatch().await;
            }
            Err(error) => eprintln!(
                "hkube sidecar: a connection from {peer} failed its websocket handshake: {error}"
            ),
        }
    }

    // ----- the orchestrator's side ------------------------------------------------------

    async fn on_orchestrator(&mut self, message: ToSidecar) -> Option<String> {
        match message {
            ToSidecar::Run { tasks } => {
                self.queue.extend(tasks);
                self.dispatch().await;
            }
            ToSidecar::Stop { task_id, force } => {
                if let Some(position) = self.queue.iter().position(|t| t.task_id == task_id) {
                    self.queue.remove(position);
                    self.report_finished(&task_id, Outcome::Stopped);
                } else if self.current.iter().any(|t| t.task_id == task_id) && self.stop.is_none() {
                    let now = Instant::now();
                    // A stopping wrapper answers to the stop timer, not the alive one.
                    self.alive = None;
                    self.stop = Some(StopState {
                        deadline: now + self.options.stop_timeout,
                        began: now,
                    });
                    self.send(&ToAlgorithm::Stop(StopPayload {
                        force_stop: force,
                        ..StopPayload::default()
                    }))
                    .await;
                }
            }
            ToSidecar::CodeApiReply { request_id, reply } => {
                if let Some(call) = self.calls.remove(&request_id) {
                    let reply = self.reply_for_wrapper(request_id, reply).await;
                    let message = reply_message(call, reply);
                    self.send(&message).await;
                }
            }
            ToSidecar::Exit { exit_code } => {
                self.send(&ToAlgorithm::Exit(ExitPayload {
                    exit_code,
                    ..ExitPayload::default()
                }))
                .await;
                self.close().await;
                return Some(format!("exit {exit_code} was requested"));
            }
        }
        None
    }

    /// Hands queued tasks to the algorithm when it is connected and idle.
    async fn dispatch(&mut self) {
        let Some(conn) = &self.conn else { return };
        if !self.current.is_empty() || self.queue.is_empty() {
            return;
        }
        let negotiated = conn.negotiated.clone();
        if negotiated.fast {
            let take = self.queue.len().min(self.options.max_batch.max(1));
            self.current = self.queue.drain(..take).collect();
            if let Some(access) = &self.options.storage {
                // hkube's runtimes read referenced inputs from their folder: fetch what it lacks.
                let mut failed = None;
                for task in &self.current {
                    if let Err(error) = spool::fetch(access, &task.input).await {
                        failed = Some(error);
                        break;
                    }
                }
                if let Some(error) = failed {
                    let outcome = Outcome::Crashed {
                        reason: format!("cannot fetch an input from storage: {error}"),
                    };
                    for task in std::mem::take(&mut self.current) {
                        self.report_finished(&task.task_id, outcome.clone());
                    }
                    return;
                }
            }
            let message = if self.current.len() == 1 {
                ToAlgorithm::Run(Box::new(job_data(&self.current[0])))
            } else {
                ToAlgorithm::RunBatch(RunBatch {
                    tasks: self.current.iter().map(|task| job_data(task)).collect(),
                })
            };
            self.send(&message).await;
            for task in &self.current {
                let _ = self.to_orchestrator.send(FromSidecar::Started {
                    task_id: task.task_id.clone(),
                });
            }
            return;
        }
        let Some(task) = self.queue.pop_front() else {
            return;
        };
        let mut data = job_data(&task);
        self.current = vec![task];
        self.storing = None;
        // HKube's wrappers know nothing of hkube's storage references: give them the values
        // (a top-level one under v3 is linked to where it already is instead).
        let keep_top_level = negotiated.storage == StorageMode::V3;
        if let Err(error) = self.load_references(&mut data.input, keep_top_level).await {
            self.fail_current(&error);
            return;
        }
        if negotiated.storage == StorageMode::V3 {
            self.stored_runs += 1;
            if let Err(error) = self.store_inputs(&mut data, self.stored_runs).await {
                self.fail_current(&error);
                return;
            }
        }
        self.send(&ToAlgorithm::Initialize(Box::new(data))).await;
    }

    /// Storage v3: the wrapper reads each input from storage; write them and pass references
    /// (`$$<key>`), as HKube's worker does. `run` makes the keys unique within this sidecar: the
    /// Python wrapper caches what it read by path for the life of its process, so a path must
    /// never be reused with other contents (a task id can come back, e.g. on a retry).
    async fn store_inputs(&self, data: &mut JobData, run: u64) -> Result<(), String> {
        let Some(access) = &self.options.storage else {
            return Err(
                "the wrapper negotiated storage v3, but this sidecar has no storage configured"
                    .into(),
            );
        };
        let mut links = Map::new();
        let mut flat = Map::new();
        for (index, value) in data.input.iter_mut().enumerate() {
            if let Some((path, size)) = storage::reference::as_reference(value) {
                // Already in storage (a large result of an earlier task): link it as it is.
                let key = format!("{}-input-{run}-{index}", data.task_id);
                links.insert(
                    key.clone(),
                    json!({"storageInfo": {"path": path, "size": size}}),
                );
                *value = Value::String(format!("$${key}"));
                flat.insert(index.to_string(), value.clone());
                continue;
            }
            let key = format!("{}-input-{run}-{index}", data.task_id);
            let path = storage::task_key(&access.cluster, &data.job_id, &key);
            let stored = stored_value(std::mem::take(value));
            let size = storage::put_value(access.storage.as_ref(), &path, &stored, access.encoding)
                .await
                .map_err(|e| format!("cannot store input {index} for the wrapper: {e}"))?;
            *value = Value::String(format!("$${key}"));
            flat.insert(index.to_string(), value.clone());
            links.insert(key, json!({"storageInfo": {"path": path, "size": size}}));
        }
        data.storage = links;
        data.flat_input = Some(flat);
        Ok(())
    }

    /// Replaces hkube storage references inside `input` by the values they point at (bytes
    /// as binary values); with `keep_top_level`, items that are themselves references stay.
    async fn load_references(
        &self,
        input: &mut [Value],
        keep_top_level: bool,
    ) -> Result<(), String> {
        let mut paths = Vec::new();
        for item in input.iter() {
            if keep_top_level && storage::reference::as_reference(item).is_some() {
                continue;
            }
            collect_references(item, &mut paths);
        }
        if paths.is_empty() {
            return Ok(());
        }
        let Some(access) = &self.options.storage else {
            return Err(
                "an input is in storage, but this sidecar has no storage configured".into(),
            );
        };
        let mut loaded = HashMap::new();
        for path in paths {
            let value = match storage::get_value(access.storage.as_ref(), &path, access.encoding)
                .await
            {
                Ok(storage::encoding::StoredValue::Value(value)) => value,
                Ok(storage::encoding::StoredValue::Raw(bytes)) => protocol::codec::binary(&bytes),
                Err(error) => return Err(format!("cannot read an input from storage: {error}")),
            };
            loaded.insert(path, value);
        }
        for item in input.iter_mut() {
            if keep_top_level && storage::reference::as_reference(item).is_some() {
                continue;
            }
            replace_references(item, &loaded);
        }
        Ok(())
    }

    // ----- the algorithm's side ---------------------------------------------------------

    async fn on_algorithm(
        &mut self,
        frame: Option<Result<protocol::Frame, String>>,
    ) -> Option<String> {
        let frame = match frame {
            Some(Ok(frame)) => frame,
            ended => {
                let reason = match ended {
                    Some(Err(why)) => format!("the algorithm disconnected ({why})"),
                    _ => "the algorithm disconnected".to_string(),
                };
                self.crash_current(&reason);
                self.conn = None;
                return Some(reason);
            }
        };
        let encoding = self
            .conn
            .as_ref()
            .map_or(protocol::Encoding::Json, |c| c.negotiated.encoding);
        let message = match protocol::decode_from_algorithm(encoding, frame) {
            Ok(message) => message,
            Err(error) => {
                let text = format!("the algorithm sent a message the sidecar cannot read: {error}");
                eprintln!("hkube sidecar: {text}");
                // While stopping, the tasks' outcome is already decided: wait for `stopped`.
                if self.stop.is_none() {
                    self.fail_current(&text);
                }
                return None;
            }
        };
        if let Some(stale) = self.stale_answer(&message) {
            eprintln!("hkube sidecar: {stale}");
            return None;
        }
        if let Err(error) = self.session.received(&message) {
            let text = format!("the algorithm sent a message out of order: {error}");
            eprintln!("hkube sidecar: {text}");
            if self.stop.is_none() {
                self.fail_current(&text);
            }
            return None;
        }
        self.handle(message).await
    }

    /// A fast-path answer that names only tasks the algorithm no longer has (the late result of
    /// a stopped batch): it must change neither the session nor the outcome of a newer task.
    fn stale_answer(&self, message: &FromAlgorithm) -> Option<String> {
        let ids: Vec<&str> = match message {
            FromAlgorithm::Result(result) => vec![result.task_id.as_str()],
            FromAlgorithm::Results(batch) => {
                batch.results.iter().map(TaskOutcome::task_id).collect()
            }
            FromAlgorithm::ErrorMessage {
                task_id: Some(id), ..
            } => vec![id.as_str()],
            _ => return None,
        };
        let known = |id: &&str| self.current.iter().any(|task| task.task_id == *id);
        if ids.is_empty() || ids.iter().any(known) {
            return None;
        }
        Some(format!(
            "dropped `{}` for task {}, which the algorithm no longer runs (a late answer of stopped work)",
            message.command(),
            ids.join(", ")
        ))
    }

    /// The wrapper answered a stop: its stopped work is over. The tasks it had are reported
    /// stopped. A fast-path runtime (hkube's) promises that nothing of that work follows, so it
    /// takes the next tasks. A wrapper speaking HKube's exchange is replaced instead (`exit`, and
    /// the sidecar ends): `done` carries no task id, and HKube's Node wrapper answers `stopped`
    /// before the stopped `start` returns, so its late `done` could complete the next task.
    async fn stop_answered(&mut self) -> Option<String> {
        let fast = self.conn.as_ref().is_some_and(|c| c.negotiated.fast);
        if fast {
            self.finish_current(Outcome::Stopped).await;
            return None;
        }
        for task in std::mem::take(&mut self.current) {
            self.report_finished(&task.task_id, Outcome::Stopped);
        }
        self.stop = None;
        self.send(&ToAlgorithm::Exit(ExitPayload::default())).await;
        self.close().await;
        Some(REPLACED_AFTER_STOP.to_string())
    }

    /// Handles a message the session accepted; `Some(reason)` ends the sidecar.
    async fn handle(&mut self, message: FromAlgorithm) -> Option<String> {
        // While a stop is in progress, the stopped work's answers are not outcomes: its tasks
        // are reported stopped when `stopped` arrives. What they printed still goes to their logs.
        if self.stop.is_some() {
            match message {
                FromAlgorithm::Stopped => return self.stop_answered().await,
                FromAlgorithm::Done(_) | FromAlgorithm::Storing(_) => return None,
                FromAlgorithm::Result(result) => {
                    if let Some(text) = result.log {
                        self.report_log(&result.task_id, text);
                    }
                    return None;
                }
                FromAlgorithm::Results(batch) => {
                    for result in batch.results {
                        if let TaskOutcome::Succeeded {
                            task_id,
                            log: Some(text),
                            ..
                        }
                        | TaskOutcome::Failed {
                            task_id,
                            log: Some(text),
                            ..
                        } = result
                        {
                            self.report_log(&task_id, text);
                        }
                    }
                    return None;
                }
                FromAlgorithm::ErrorMessage { task_id, log, .. } => {
                    let task = task_id.or_else(|| self.current.first().map(|t| t.task_id.clone()));
                    if let (Some(task_id), Some(text)) = (task, log) {
                        self.report_log(&task_id, text);
                    }
                    return None;
                }
                _ => {}
            }
        }
        self.handle_task_message(message).await;
        None
    }

    async fn handle_task_message(&mut self, message: FromAlgorithm) {
        match message {
            FromAlgorithm::Initialized => {
                self.send(&ToAlgorithm::Start(StartPayload::default()))
                    .await;
            }
            FromAlgorithm::Started => {
                if let Some(task) = self.current.first() {
                    let _ = self.to_orchestrator.send(FromSidecar::Started {
                        task_id: task.task_id.clone(),
                    });
                }
            }
            FromAlgorithm::Storing(payload) => self.storing = Some(payload.storage_info.path),
            FromAlgorithm::Done(data) => {
                let outcome = match self.storing.take() {
                    Some(path) => self.read_output(&path).await,
                    None => Outcome::Output {
                        output: data.unwrap_or(Value::Null),
                    },
                };
                self.finish_current(outcome).await;
            }
            FromAlgorithm::ErrorMessage {
                error,
                task_id,
                log,
            } => {
                let task = task_id.or_else(|| self.current.first().map(|t| t.task_id.clone()));
                if let (Some(task_id), Some(text)) = (task, log) {
                    self.report_log(&task_id, text);
                }
                let outcome = error_outcome(error);
                self.finish_current(outcome).await;
            }
            FromAlgorithm::TaskLog(entry) => self.report_log(&entry.task_id, entry.log),
            // Only valid while stopping, which `handle` deals with.
            FromAlgorithm::Stopped => {}
            FromAlgorithm::Alive if !self.current.is_empty() && self.stop.is_none() => {
                self.alive = Some(Instant::now() + self.options.alive_timeout);
            }
            FromAlgorithm::Stopping => {
                if let Some(stop) = &mut self.stop {
                    if stop.began.elapsed() < self.options.stopping_limit {
                        stop.deadline = Instant::now() + self.options.stop_timeout;
                    }
                }
            }
            FromAlgorithm::Result(result) => {
                if let Some(text) = result.log {
                    self.report_log(&result.task_id, text);
                }
                let outcome = self
                    .published(Outcome::Output {
                        output: result.output,
                    })
                    .await;
                self.finish_one(&result.task_id, outcome);
                self.after_batch().await;
            }
            FromAlgorithm::Results(batch) => {
                for result in batch.results {
                    match result {
                        TaskOutcome::Succeeded {
                            task_id,
                            output,
                            log,
                        } => {
                            if let Some(text) = log {
                                self.report_log(&task_id, text);
                            }
                            let outcome = self.published(Outcome::Output { output }).await;
                            self.finish_one(&task_id, outcome)
                        }
                        TaskOutcome::Failed {
                            task_id,
                            error,
                            log,
                        } => {
                            if let Some(text) = log {
                                self.report_log(&task_id, text);
                            }
                            self.finish_one(&task_id, error_outcome(error))
                        }
                    }
                }
                // Entries may come in several `results` (a runtime sends what is done as it
                // goes); the batch ends when every task has its outcome.
                if self.current.is_empty() {
                    self.session.batch_done();
                }
                self.after_batch().await;
            }
            FromAlgorithm::Progress(progress) => {
                let value = progress.progress.as_ref().and_then(Value::as_f64);
                if let (Some(task), Some(progress)) = (self.current.first(), value) {
                    let _ = self.to_orchestrator.send(FromSidecar::Progress {
                        task_id: task.task_id.clone(),
                        progress,
                    });
                }
            }
            FromAlgorithm::StartAlgorithmExecution(request) => {
                let input = match self.code_api_input(&request).await {
                    Ok(input) => input,
                    Err(error) => {
                        let reply = ToAlgorithm::AlgorithmExecutionError(ExecutionError {
                            exec_id: Some(request.exec_id),
                            error,
                            extra: Map::new(),
                        });
                        self.send(&reply).await;
                        return;
                    }
                };
                let call = Call::Algorithm {
                    exec_id: request.exec_id,
                };
                let request = CodeApiRequest::StartAlgorithm {
                    algorithm_name: request.algorithm_name,
                    input,
                    include_result: request.include_result.unwrap_or(true),
                };
                self.relay(call, request).await;
            }
            FromAlgorithm::StartStoredSubPipeline(request) => {
                let call = Call::SubPipeline {
                    id: request.sub_pipeline_id,
                };
                let request = CodeApiRequest::StartStoredSubPipeline {
                    name: request.sub_pipeline.name,
                    flow_input: request.sub_pipeline.flow_input,
                    include_result: request.include_result.unwrap_or(true),
                };
                self.relay(call, request).await;
            }
            FromAlgorithm::StartRawSubPipeline(request) => {
                let call = Call::SubPipeline {
                    id: request.sub_pipeline_id.clone(),
                };
                let pipeline = serde_json::to_value(&request.sub_pipeline).unwrap_or(Value::Null);
                let request = CodeApiRequest::StartRawSubPipeline {
                    pipeline,
                    include_result: request.include_result.unwrap_or(true),
                };
                self.relay(call, request).await;
            }
            FromAlgorithm::StopSubPipeline(request) => {
                let reason = request
                    .reason
                    .unwrap_or_else(|| "stopped by the algorithm".into());
                self.relay_stop(reason);
            }
            FromAlgorithm::StopAlgorithmExecution(request) => {
                let reason = request
                    .reason
                    .unwrap_or_else(|| "stopped by the algorithm".into());
                self.relay_stop(reason);
            }
            FromAlgorithm::DataSourceRequest(request) => {
                let reply = ToAlgorithm::DataSourceResponse(DataSourceResponse {
                    request_id: request.request_id,
                    response: None,
                    error: Some("data sources are not supported by hkube yet".into()),
                    extra: Map::new(),
                });
                self.send(&reply).await;
            }
            // Heartbeats, spans, statistics, logs and unknown commands need no answer.
            _ => {}
        }
    }

    /// Whether the wrapper speaks storage v3: it reads its inputs and code-API results from
    /// storage and writes its output there (HKube's official wrappers, by default).
    fn storage_v3(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.negotiated.storage == StorageMode::V3 && !c.negotiated.fast)
    }

    /// The child's input values. A v1 wrapper sends them in `input`; a v3 wrapper (the official
    /// Python one) writes each to storage first and sends `storageInput: ["$$<key>", ...]` with a
    /// `storage` map of links, which the orchestrator cannot read, so they are read back here.
    async fn code_api_input(
        &self,
        request: &StartAlgorithmExecution,
    ) -> Result<Vec<Value>, String> {
        if let Some(input) = &request.input {
            return Ok(input.clone());
        }
        let mut input = Vec::new();
        for item in request.storage_input.iter().flatten() {
            let Some(key) = item.as_str().and_then(|s| s.strip_prefix("$$")) else {
                input.push(item.clone());
                continue;
            };
            let link = request
                .storage
                .as_ref()
                .and_then(|links| links.get(key))
                .ok_or_else(|| format!("storageInput {item} has no link in `storage`"))?;
            input.push(self.read_link(link).await?);
        }
        Ok(input)
    }

    /// The value a storage link (`{storageInfo: {path}, path?}`) points at.
    async fn read_link(&self, link: &Value) -> Result<Value, String> {
        let access = self.options.storage.as_ref().ok_or(
            "the wrapper sent storage references, but this sidecar has no storage configured",
        )?;
        let path = link
            .pointer("/storageInfo/path")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("storage link {link} has no storageInfo.path"))?;
        let value = match storage::get_value(access.storage.as_ref(), path, access.encoding).await {
            Ok(storage::encoding::StoredValue::Value(value)) => value,
            Ok(storage::encoding::StoredValue::Raw(bytes)) => protocol::codec::binary(&bytes),
            Err(error) => return Err(format!("cannot read the code-API input: {error}")),
        };
        Ok(match link.get("path").and_then(Value::as_str) {
            Some(inner) => storage::encoding::apply_path(&value, inner),
            None => value,
        })
    }

    /// A v3 wrapper expects a code-API result as HKube's worker sends it: a storage link
    /// (`{storageInfo: {path, size}, metadata}`) that it reads itself. A plain value would mostly
    /// work with the Python wrapper too, but not an object that happens to hold `storageInfo`,
    /// nor bytes, nor a list whose items look like HKube's `isBigData` results. `null` (a child
    /// without output, or `includeResult: false`) needs no object: the wrapper returns it as is.
    async fn reply_for_wrapper(&self, request_id: u64, reply: CodeApiReply) -> CodeApiReply {
        let CodeApiReply::Done { response } = reply else {
            return reply;
        };
        if !self.storage_v3() || response.is_null() {
            return CodeApiReply::Done { response };
        }
        let (Some(access), Some(task)) = (&self.options.storage, self.current.first()) else {
            return CodeApiReply::Error {
                error: "the code-API result cannot be passed on: this sidecar has no storage configured".into(),
            };
        };
        let key = format!("{}-code-api-{request_id}", task.task_id);
        let path = storage::task_key(&access.cluster, &task.job_id, &key);
        let stored = stored_value(response);
        match storage::put_value(access.storage.as_ref(), &path, &stored, access.encoding).await {
            Ok(size) => CodeApiReply::Done {
                response: json!({"storageInfo": {"path": path, "size": size}, "metadata": {}}),
            },
            Err(error) => CodeApiReply::Error {
                error: format!("cannot store the code-API result for the algorithm: {error}"),
            },
        }
    }

    /// A stop needs no answer of its own: the requests it stops are answered.
    fn relay_stop(&mut self, reason: String) {
        let Some(task) = self.current.first() else {
            return;
        };
        let request_id = self.next_call;
        self.next_call += 1;
        let _ = self.to_orchestrator.send(FromSidecar::CodeApi {
            task_id: task.task_id.clone(),
            request_id,
            request: CodeApiRequest::Stop { reason },
        });
    }

    async fn relay(&mut self, call: Call, request: CodeApiRequest) {
        let Some(task) = self.current.first() else {
            let reply = reply_message(
                call,
                CodeApiReply::Error {
                    error: "no task is running".into(),
                },
            );
            self.send(&reply).await;
            return;
        };
        let request_id = self.next_call;
        self.next_call += 1;
        self.calls.insert(request_id, call);
        let _ = self.to_orchestrator.send(FromSidecar::CodeApi {
            task_id: task.task_id.clone(),
            request_id,
            request,
        });
    }

    async fn read_output(&self, path: &str) -> Outcome {
        let Some(access) = &self.options.storage else {
            return Outcome::error(format!("the wrapper stored its output at {path}, but this sidecar has no storage configured"));
        };
        match storage::get_value(access.storage.as_ref(), path, access.encoding).await {
            Ok(storage::encoding::StoredValue::Value(output)) => Outcome::Output { output },
            Ok(storage::encoding::StoredValue::Raw(bytes)) => Outcome::Output {
                output: protocol::codec::binary(&bytes),
            },
            Err(error) => Outcome::error(format!("cannot read the algorithm's output: {error}")),
        }
    }

    // ----- task outcomes ----------------------------------------------------------------

    /// What a task printed goes to the orchestrator ahead of its outcome.
    fn report_log(&self, task_id: &str, text: String) {
        let _ = self.to_orchestrator.send(FromSidecar::Log {
            task_id: task_id.to_string(),
            text,
        });
    }

    fn report_finished(&self, task_id: &str, outcome: Outcome) {
        let _ = self.to_orchestrator.send(FromSidecar::Finished {
            task_id: task_id.to_string(),
            outcome,
        });
    }

    /// A runtime's result kept in its folder goes to the job's storage first (S3); a failure
    /// to publish crashes the task, so the engine's retry policy decides.
    async fn published(&self, outcome: Outcome) -> Outcome {
        let (Some(access), Outcome::Output { output }) = (&self.options.storage, &outcome) else {
            return outcome;
        };
        match spool::publish(access, output).await {
            Ok(()) => outcome,
            Err(error) => Outcome::Crashed {
                reason: format!("cannot publish the result to storage: {error}"),
            },
        }
    }

    fn finish_one(&mut self, task_id: &str, outcome: Outcome) {
        if let Some(position) = self.current.iter().position(|t| t.task_id == task_id) {
            self.current.remove(position);
            self.report_finished(task_id, outcome);
        }
    }

    async fn after_batch(&mut self) {
        if self.current.is_empty() {
            self.stop = None;
            self.alive = None;
            self.calls.clear();
            self.dispatch().await;
        }
    }

    async fn finish_current(&mut self, outcome: Outcome) {
        for task in std::mem::take(&mut self.current) {
            self.report_finished(&task.task_id, outcome.clone());
        }
        self.stop = None;
        self.alive = None;
        self.storing = None;
        self.calls.clear();
        self.dispatch().await;
    }

    /// Fails the current task(s) for a protocol problem; the connection stays.
    fn fail_current(&mut self, message: &str) {
        for task in std::mem::take(&mut self.current) {
            self.report_finished(&task.task_id, Outcome::error(message.to_string()));
        }
        self.session = Session::new();
        self.stop = None;
        self.alive = None;
        self.storing = None;
    }

    /// The algorithm is gone: the current task(s) crashed. Queued ones never started; the
    /// orchestrator gives them to another worker.
    fn crash_current(&mut self, reason: &str) {
        for task in std::mem::take(&mut self.current) {
            self.report_finished(
                &task.task_id,
                Outcome::Crashed {
                    reason: reason.to_string(),
                },
            );
        }
    }

    async fn send(&mut self, message: &ToAlgorithm) {
        let Some(conn) = &mut self.conn else { return };
        if let Err(error) = self.session.sent(message) {
            eprintln!("hkube sidecar: not sending {}: {error}", message.command());
            return;
        }
        if let Err(error) = conn.send(message).await {
            eprintln!(
                "hkube sidecar: cannot send {} to the algorithm: {error}",
                message.command()
            );
        }
    }

    async fn close(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close().await;
        }
    }
}

impl UnixSocket {
    /// A socket `s` in a new private folder of the temp dir: its own folder, so no other user
    /// can connect to it, and no name is ever reused or left behind.
    fn bind() -> std::io::Result<UnixSocket> {
        use std::os::unix::fs::PermissionsExt;
        let folder = tempfile::Builder::new()
            .prefix("hkube-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        let path = folder.path().join("s");
        if path.as_os_str().len() > UNIX_PATH_MAX {
            return Err(std::io::Error::other(
                "the temp dir's path is too long for a socket",
            ));
        }
        Ok(UnixSocket {
            listener: UnixListener::bind(&path)?,
            path,
            _folder: folder,
        })
    }
}

/// The next connection on the Unix socket; pending forever without one.
async fn accept_unix(unix: Option<&UnixSocket>) -> std::io::Result<tokio::net::UnixStream> {
    match unix {
        Some(unix) => unix.listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// How a value is stored for a wrapper: bytes (the tagged binary object) as a raw object, so
/// the wrapper reads them back as bytes (Python `bytes`), as HKube stores a raw output; anything
/// else encoded.
fn stored_value(value: Value) -> storage::encoding::StoredValue {
    match protocol::codec::as_bytes(&value) {
        Some(bytes) => storage::encoding::StoredValue::Raw(bytes),
        None => storage::encoding::StoredValue::Value(value),
    }
}

fn error_outcome(error: ErrorInfo) -> Outcome {
    let exception = error.exception().map(str::to_owned);
    let location = error.location();
    let details = error.details.map(|d| match d {
        Value::String(text) => text,
        other => other.to_string(),
    });
    Outcome::Error {
        message: error.message,
        details,
        exception,
        location,
    }
}

fn reply_message(call: Call, reply: CodeApiReply) -> ToAlgorithm {
    match (call, reply) {
        (Call::Algorithm { exec_id }, CodeApiReply::Done { response }) => {
            ToAlgorithm::AlgorithmExecutionDone(ExecutionDone {
                exec_id,
                response,
                extra: Map::new(),
            })
        }
        (
            Call::Algorithm { exec_id },
            CodeApiReply::Error { error } | CodeApiReply::Stopped { reason: error },
        ) => ToAlgorithm::AlgorithmExecutionError(ExecutionError {
            exec_id: Some(exec_id),
            error,
            extra: Map::new(),
        }),
        (Call::SubPipeline { id }, CodeApiReply::Done { response }) => {
            ToAlgorithm::SubPipelineDone(SubPipelineDone {
                sub_pipeline_id: id,
                response,
                extra: Map::new(),
            })
        }
        (Call::SubPipeline { id }, CodeApiReply::Error { error }) => {
            ToAlgorithm::SubPipelineError(SubPipelineError {
                sub_pipeline_id: Some(id),
                error,
                extra: Map::new(),
            })
        }
        (Call::SubPipeline { id }, CodeApiReply::Stopped { reason }) => {
            ToAlgorithm::SubPipelineStopped(SubPipelineStopped {
                sub_pipeline_id: id,
                reason: Some(reason),
                extra: Map::new(),
            })
        }
    }
}

fn collect_references(value: &Value, paths: &mut Vec<String>) {
    if let Some((path, _)) = storage::reference::as_reference(value) {
        paths.push(path.to_string());
        return;
    }
    match value {
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_references(item, paths)),
        Value::Object(map) => map
            .values()
            .for_each(|item| collect_references(item, paths)),
        _ => {}
    }
}

fn replace_references(value: &mut Value, loaded: &HashMap<String, Value>) {
    if let Some((path, _)) = storage::reference::as_reference(value) {
        if let Some(found) = loaded.get(path) {
            *value = found.clone();
        }
        return;
    }
    match value {
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| replace_references(item, loaded)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|item| replace_references(item, loaded)),
        _ => {}
    }
}

/// HKube's job data for a task (reference wrapper-protocol §2.4).
fn job_data(task: &Assignment) -> JobData {
    JobData {
        job_id: task.job_id.to_string(),
        task_id: task.task_id.clone(),
        node_name: task.node_name.to_string(),
        algorithm_name: Some(task.algorithm_name.to_string()),
        pipeline_name: Some(task.pipeline_name.to_string()),
        batch_index: task.batch_index.map(u64::from),
        input: task.input.clone(),
        kind: Some("batch".into()),
        parent_node_name: task.parent_node_name.clone(),
        info: Some(JobInfo {
            extra_data: task.extra_data.as_deref().cloned(),
            save_paths: Some(Vec::new()),
            root_job_id: Some(task.root_job_id.to_string()),
            ..JobInfo::default()
        }),
        ..JobData::default()
    }
}
