//! The job engine: jobs and tasks from submission to result (reference §3).
//!
//! - [`Job`]: one job as a pure state machine (events in, actions out).
//! - [`Engine`]: the event loop that owns the jobs and talks to the [`Executor`]; [`Handle`]
//!   is how everything else talks to it.
//! - [`submit`]: validation and preparation of a job, in HKube's order.
//! - [`InProcessExecutor`]: the reference's test algorithms as Rust functions.
//!
//! The engine never names a backend: tasks leave through `Arc<dyn Executor>`.

mod board;
mod catalog;
mod driver;
mod error;
pub(crate) mod executor;
mod ids;
mod in_process;
mod job;
mod journal;
mod status;
pub mod submit;

pub use catalog::{Catalog, MemoryCatalog};
pub use driver::{
    now_ms, Engine, EngineOptions, ExecRequest, Handle, JobSummary, StopRequest, MAX_TRIGGER_DEPTH,
};
pub use error::Error;
pub use executor::{
    Executor, SubPipeline, TaskKey, TaskOutcome, TaskReporter, TaskSpec, TaskWatch,
};
pub use ids::{build_id, job_id, version_id, TaskId};
pub use in_process::{Algorithm, InProcessExecutor, Run};
pub use job::{Action, Job, JobPlan, TaskRun, Timer, MAX_TASKS_PER_NODE};
pub use journal::{JobRecord, Journal, MemoryJournal, RecordedOutcome, TaskRecord};
pub use status::{JobStatus, StateCounts, TaskStatus};
