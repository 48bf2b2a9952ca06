//! Which message is valid when: the task life cycle of one algorithm connection, seen from the
//! worker (our sidecar).
//!
//! ```text
//! ready --send initialize--> initializing --initialized--> initialized --send start--> working
//! working --storing--> storing --done--> ready          working --done--> ready
//! any task state --errorMessage--> ready               any state --send stop--> stopping --stopped--> ready
//! stopping --storing|done|result|results|errorMessage|stopping--> stopping  (the stopped work's late
//!                                                     answers: only `stopped` ends a stop)
//! any state --send exit--> exiting --exited--> exited
//! ready --send run--> running --result|errorMessage--> ready                      (hkube fast path)
//! ready --send runBatch--> running-batch --results|errorMessage--> ready          (hkube fast path)
//! ```
//!
//! Pure: [`expected`] and [`after_send`] take a state and a message and return the next state or
//! an [`Error`] naming the message and the state; [`Session`] holds the state between calls. The
//! sidecar decides what to do with a rejected message (log and drop, per the reference's advice
//! for case 35); nothing here does IO or keeps time.

use std::fmt;

use super::messages::{FromAlgorithm, ToAlgorithm};
use super::Error;

/// Where the connection is in the task life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum State {
    /// No task; waiting for the worker to send `initialize` (or fast-path `run`/`runBatch`).
    #[default]
    Ready,
    /// `initialize` sent; waiting for `initialized` or `errorMessage`.
    Initializing,
    /// `initialized` received; the worker sends `start` next.
    Initialized,
    /// `start` sent; user code runs.
    Working,
    /// `storing` received; waiting for `done`.
    Storing,
    /// `stop` sent; waiting for `stopped` (`stopping` extends the wait).
    Stopping,
    /// hkube fast path: `run` sent; waiting for one `result` or `errorMessage`.
    Running,
    /// hkube fast path: `runBatch` sent; waiting for one `results` or `errorMessage`.
    RunningBatch,
    /// `exit` sent; the wrapper is going away.
    Exiting,
    /// `exited` received (Java); nothing more is expected.
    Exited,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Initializing => "initializing",
            Self::Initialized => "initialized",
            Self::Working => "working",
            Self::Storing => "storing",
            Self::Stopping => "stopping",
            Self::Running => "running",
            Self::RunningBatch => "running-batch",
            Self::Exiting => "exiting",
            Self::Exited => "exited",
        }
    }

    /// What the algorithm may send that moves this state on, for error messages.
    pub fn expecting(self) -> &'static str {
        match self {
            Self::Ready => "no task message until the worker sends `initialize`",
            Self::Initializing => "`initialized` or `errorMessage`",
            Self::Initialized => "no task message until the worker sends `start`",
            Self::Working => "`started`, `storing`, `done`, `errorMessage` or a code-API request",
            Self::Storing => "`done` or `errorMessage`",
            Self::Stopping => "`stopping` or `stopped`",
            Self::Running => "`result` or `errorMessage`",
            Self::RunningBatch => "`results` or `errorMessage`",
            Self::Exiting => "`exited` or nothing",
            Self::Exited => "nothing",
        }
    }

    /// Whether a task is in flight (a task status is owed to the pipeline).
    pub fn has_task(self) -> bool {
        matches!(
            self,
            Self::Initializing
                | Self::Initialized
                | Self::Working
                | Self::Storing
                | Self::Stopping
                | Self::Running
                | Self::RunningBatch
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state after the algorithm sent `message` in `state`, or why it may not send it now.
///
/// Messages that never change the state (`alive`, `servingStatus`, `streamingStatistics`,
/// `progress`, spans, `logData`, unknown commands) are valid in every state. `done` is only
/// accepted while a task runs or stops, never in `ready` (a late `done` must not complete the
/// next task). Once `exit` was sent everything but `exited` is accepted and ignored.
pub fn expected(state: State, message: &FromAlgorithm) -> Result<State, Error> {
    use FromAlgorithm as M;
    use State as S;
    let next = match (state, message) {
        (
            _,
            M::Alive
            | M::ServingStatus(_)
            | M::StreamingStatistics(_)
            | M::Progress(_)
            | M::StartSpan(_)
            | M::FinishSpan(_)
            | M::LogData(_)
            | M::TaskLog(_)
            | M::Unknown { .. },
        ) => Some(state),
        (S::Exiting, M::Exited) => Some(S::Exited),
        (S::Exiting | S::Exited, _) => Some(state),

        (S::Initializing, M::Initialized) => Some(S::Initialized),
        (S::Working | S::Stopping, M::Started) => Some(state),
        (S::Working, M::Storing(_)) => Some(S::Storing),
        // A result that races a stop is recorded by nobody. Only `stopped` ends a stop: the
        // wrapper sends it once the stopped work is over, so nothing of it can reach the next
        // task (every wrapper answers a stop with `stopped`, also after a `done` it raced).
        (S::Stopping, M::Storing(_) | M::Done(_) | M::Result(_) | M::Results(_)) => {
            Some(S::Stopping)
        }
        (S::Working | S::Storing, M::Done(_)) => Some(S::Ready),
        (S::Stopping, M::Stopping) => Some(S::Stopping),
        (S::Stopping, M::Stopped) => Some(S::Ready),
        // A failure while stopping does not end the stop: `stopped` still follows.
        (S::Stopping, M::ErrorMessage { .. }) => Some(S::Stopping),
        (
            S::Initializing
            | S::Initialized
            | S::Working
            | S::Storing
            | S::Running
            | S::RunningBatch,
            M::ErrorMessage { .. },
        ) => Some(S::Ready),
        // User code runs (and may call the code API) while working, and until it returns after a
        // stop; the sidecar answers requests made while stopping with an error.
        (
            S::Working | S::Stopping | S::Running | S::RunningBatch,
            M::StartAlgorithmExecution(_)
            | M::StopAlgorithmExecution(_)
            | M::StartStoredSubPipeline(_)
            | M::StartRawSubPipeline(_)
            | M::StopSubPipeline(_)
            | M::DataSourceRequest(_),
        ) => Some(state),
        (S::Running, M::Result(_)) => Some(S::Ready),
        // A batch may be answered in parts; the worker calls `batch_done` when all are in.
        (S::RunningBatch, M::Results(_)) => Some(S::RunningBatch),
        _ => None,
    };
    next.ok_or_else(|| Error::UnexpectedMessage {
        command: message.command().to_owned(),
        state,
        expected: state.expecting(),
    })
}

/// The state after the worker sends `message` in `state`, or why it may not send it now.
pub fn after_send(state: State, message: &ToAlgorithm) -> Result<State, Error> {
    use State as S;
    use ToAlgorithm as M;
    let next = match (state, message) {
        (S::Exiting | S::Exited, _) => None,
        (_, M::Exit(_)) => Some(S::Exiting),
        (_, M::Stop(_)) => Some(S::Stopping),
        (S::Ready, M::Initialize(_)) => Some(S::Initializing),
        (S::Initialized, M::Start(_)) => Some(S::Working),
        (S::Ready, M::Run(_)) => Some(S::Running),
        (S::Ready, M::RunBatch(_)) => Some(S::RunningBatch),
        (
            _,
            M::ServiceDiscoveryUpdate(_)
            | M::AlgorithmExecutionDone(_)
            | M::AlgorithmExecutionError(_)
            | M::SubPipelineStarted(_)
            | M::SubPipelineDone(_)
            | M::SubPipelineError(_)
            | M::SubPipelineStopped(_)
            | M::DataSourceResponse(_)
            | M::Unknown { .. },
        ) => Some(state),
        _ => None,
    };
    next.ok_or_else(|| Error::CannotSend {
        command: message.command().to_owned(),
        state,
    })
}

/// The state of one algorithm connection, advanced by what is sent and received.
#[derive(Debug, Clone, Default)]
pub struct Session {
    state: State,
}

impl Session {
    /// A session in [`State::Ready`] (the wrapper just connected).
    pub fn new() -> Self {
        Self::default()
    }

    /// Every task of a fast-path batch has its result (they may come in several `results`).
    pub fn batch_done(&mut self) {
        if self.state == State::RunningBatch {
            self.state = State::Ready;
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Records a message from the algorithm. On error the state is unchanged.
    pub fn received(&mut self, message: &FromAlgorithm) -> Result<State, Error> {
        self.state = expected(self.state, message)?;
        Ok(self.state)
    }

    /// Records a message the worker is about to send. On error the state is unchanged and the
    /// message should not be sent.
    pub fn sent(&mut self, message: &ToAlgorithm) -> Result<State, Error> {
        self.state = after_send(self.state, message)?;
        Ok(self.state)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::messages::{
        ErrorInfo, ExitPayload, RunBatch, StartPayload, StopPayload, StoringPayload, TaskResult,
    };

    fn storing() -> FromAlgorithm {
        FromAlgorithm::Storing(
            serde_json::from_value::<StoringPayload>(json!({"storageInfo": {"path": "p"}}))
                .unwrap(),
        )
    }

    fn error() -> FromAlgorithm {
        FromAlgorithm::ErrorMessage {
            error: ErrorInfo::failed("boom"),
            task_id: None,
            log: None,
        }
    }

    fn code_api() -> FromAlgorithm {
        serde_json::from_value(json!({"command": "startAlgorithmExecution", "data": {"execId": "1", "algorithmName": "a"}}))
            .unwrap()
    }

    fn result() -> FromAlgorithm {
        FromAlgorithm::Result(TaskResult {
            task_id: "t1".into(),
            output: json!(1),
            log: None,
        })
    }

    fn initialize() -> ToAlgorithm {
        ToAlgorithm::Initialize(Box::default())
    }

    /// `Ok(next)` or the error text.
    fn check_received(state: State, message: FromAlgorithm, want: Result<State, &str>) {
        let got = expected(state, &message).map_err(|e| e.to_string());
        match (&got, want) {
            (Ok(got), Ok(want)) => assert_eq!(*got, want, "{state} + {}", message.command()),
            (Err(got), Err(want)) => assert_eq!(got, want, "{state} + {}", message.command()),
            _ => panic!(
                "{state} + {}: got {got:?}, want {want:?}",
                message.command()
            ),
        }
    }

    #[test]
    fn messages_from_the_algorithm() {
        use FromAlgorithm as M;
        use State::*;
        let cases: Vec<(State, FromAlgorithm, Result<State, &str>)> = vec![
            // Case 35.
            (
                Ready,
                M::Initialized,
                Err("algorithm sent `initialized` while the session is ready; expected no task message until the worker sends `initialize`"),
            ),
            (Initializing, M::Initialized, Ok(Initialized)),
            (Initializing, error(), Ok(Ready)),
            (Initialized, M::Initialized, Err("algorithm sent `initialized` while the session is initialized; expected no task message until the worker sends `start`")),
            (Working, M::Started, Ok(Working)),
            (Working, storing(), Ok(Storing)),
            (Storing, M::Done(None), Ok(Ready)),
            (Working, M::Done(Some(json!({"x": 1}))), Ok(Ready)),
            (Working, error(), Ok(Ready)),
            (Storing, storing(), Err("algorithm sent `storing` while the session is storing; expected `done` or `errorMessage`")),
            // A late `done` must not complete anything (reference §6).
            (Ready, M::Done(None), Err("algorithm sent `done` while the session is ready; expected no task message until the worker sends `initialize`")),
            (Ready, error(), Err("algorithm sent `errorMessage` while the session is ready; expected no task message until the worker sends `initialize`")),
            (Stopping, M::Stopping, Ok(Stopping)),
            (Stopping, M::Started, Ok(Stopping)),
            (Stopping, storing(), Ok(Stopping)),
            (Stopping, M::Done(None), Ok(Stopping)),
            (Stopping, result(), Ok(Stopping)),
            (Stopping, M::Results(Default::default()), Ok(Stopping)),
            (Stopping, error(), Ok(Stopping)),
            (Stopping, M::Stopped, Ok(Ready)),
            (Working, M::Stopped, Err("algorithm sent `stopped` while the session is working; expected `started`, `storing`, `done`, `errorMessage` or a code-API request")),
            (Working, M::Stopping, Err("algorithm sent `stopping` while the session is working; expected `started`, `storing`, `done`, `errorMessage` or a code-API request")),
            (Working, code_api(), Ok(Working)),
            (Stopping, code_api(), Ok(Stopping)),
            (Initializing, code_api(), Err("algorithm sent `startAlgorithmExecution` while the session is initializing; expected `initialized` or `errorMessage`")),
            (Ready, M::Alive, Ok(Ready)),
            (Working, M::Alive, Ok(Working)),
            (Working, M::ServingStatus(true), Ok(Working)),
            (Ready, M::Unknown { command: "fooBar".into() }, Ok(Ready)),
            (Exiting, M::Done(None), Ok(Exiting)),
            (Exiting, M::Exited, Ok(Exited)),
            (Working, M::Exited, Err("algorithm sent `exited` while the session is working; expected `started`, `storing`, `done`, `errorMessage` or a code-API request")),
            (Running, result(), Ok(Ready)),
            (Running, error(), Ok(Ready)),
            (Running, M::Results(Default::default()), Err("algorithm sent `results` while the session is running; expected `result` or `errorMessage`")),
            (RunningBatch, M::Results(Default::default()), Ok(RunningBatch)),
            (Ready, result(), Err("algorithm sent `result` while the session is ready; expected no task message until the worker sends `initialize`")),
        ];
        for (state, message, want) in cases {
            check_received(state, message, want);
        }
    }

    #[test]
    fn messages_from_the_worker() {
        use State::*;
        use ToAlgorithm as M;
        let cases: Vec<(State, ToAlgorithm, Result<State, &str>)> = vec![
            (Ready, initialize(), Ok(Initializing)),
            (
                Working,
                initialize(),
                Err("cannot send `initialize` while the session is working"),
            ),
            (Initialized, M::Start(StartPayload::default()), Ok(Working)),
            (
                Initializing,
                M::Start(StartPayload::default()),
                Err("cannot send `start` while the session is initializing"),
            ),
            (Working, M::Stop(StopPayload::default()), Ok(Stopping)),
            (Ready, M::Stop(StopPayload::default()), Ok(Stopping)),
            (Working, M::Exit(ExitPayload::default()), Ok(Exiting)),
            (
                Exiting,
                M::Stop(StopPayload::default()),
                Err("cannot send `stop` while the session is exiting"),
            ),
            (Ready, M::Run(Box::default()), Ok(Running)),
            (Ready, M::RunBatch(RunBatch::default()), Ok(RunningBatch)),
            (
                Running,
                M::Run(Box::default()),
                Err("cannot send `run` while the session is running"),
            ),
            (
                Working,
                M::Unknown {
                    command: "cleanup".into(),
                },
                Ok(Working),
            ),
        ];
        for (state, message, want) in cases {
            let got = after_send(state, &message).map_err(|e| e.to_string());
            assert_eq!(
                got,
                want.map_err(str::to_owned),
                "{state} + {}",
                message.command()
            );
        }
    }

    #[test]
    fn a_hot_worker_runs_two_tasks_then_exits() {
        let mut session = Session::new();
        for _ in 0..2 {
            session.sent(&initialize()).unwrap();
            session.received(&FromAlgorithm::Initialized).unwrap();
            session
                .sent(&ToAlgorithm::Start(StartPayload::default()))
                .unwrap();
            session.received(&FromAlgorithm::Started).unwrap();
            session.received(&FromAlgorithm::Alive).unwrap();
            session.received(&storing()).unwrap();
            assert_eq!(
                session.received(&FromAlgorithm::Done(None)).unwrap(),
                State::Ready
            );
        }
        // A rejected message leaves the state alone.
        assert!(session.received(&FromAlgorithm::Stopped).is_err());
        assert_eq!(session.state(), State::Ready);
        session
            .sent(&ToAlgorithm::Exit(ExitPayload::default()))
            .unwrap();
        assert_eq!(
            session.received(&FromAlgorithm::Exited).unwrap(),
            State::Exited
        );
    }

    #[test]
    fn task_states() {
        assert!(!State::Ready.has_task());
        assert!(State::Stopping.has_task());
        assert!(!State::Exiting.has_task());
    }
}
