//! Stored definitions the API writes: algorithms and pipelines (reference §5.3, §5.4).
//!
//! [`Store`] extends the engine's read-only [`Catalog`] with writes. Each write is one atomic
//! step with its own outcome (`create` refuses an existing name, `replace` and `delete` a
//! missing one), so a database can implement it with one statement each and no
//! read-then-write race. [`MemoryStore`] keeps everything in memory; SQLite comes later
//! behind the same trait. The store checks nothing about the documents: validation belongs to
//! `spec` and `engine::submit`, before a write.

mod memory;
mod sqlite;
mod versions;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
pub use versions::{next_semver, AlgorithmVersion, DEFAULT_USER};

use crate::engine::{Catalog, JobRecord, TaskRecord};
use crate::spec::{Algorithm, Pipeline};

/// Why a write or a listing failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// HKube's `<type> <name> already exists`.
    #[error("{kind} {name} already exists")]
    Exists { kind: &'static str, name: String },
    /// HKube's `<type> <name> Not Found`.
    #[error("{kind} {name} Not Found")]
    NotFound { kind: &'static str, name: String },
    /// The storage itself failed (a database error, a poisoned lock).
    #[error("the store failed: {0}")]
    Backend(String),
}

/// Stored algorithms and pipelines, readable by the engine and writable by the API.
pub trait Store: Catalog {
    /// Every stored algorithm, in name order.
    fn algorithms(&self) -> Result<Vec<Algorithm>, Error>;
    /// Adds a new algorithm; [`Error::Exists`] when the name is taken.
    fn create_algorithm(&self, algorithm: Algorithm) -> Result<(), Error>;
    /// Replaces a stored algorithm; [`Error::NotFound`] when there is none by that name.
    fn replace_algorithm(&self, algorithm: Algorithm) -> Result<(), Error>;
    /// Adds or replaces.
    fn put_algorithm(&self, algorithm: Algorithm) -> Result<(), Error>;
    fn delete_algorithm(&self, name: &str) -> Result<(), Error>;

    /// Every stored pipeline, in name order.
    fn pipelines(&self) -> Result<Vec<Pipeline>, Error>;
    fn create_pipeline(&self, pipeline: Pipeline) -> Result<(), Error>;
    fn replace_pipeline(&self, pipeline: Pipeline) -> Result<(), Error>;
    fn delete_pipeline(&self, name: &str) -> Result<(), Error>;

    /// The result of a job that ended, when this store keeps them (it outlives the engine's
    /// memory: a restarted server still answers for jobs that ended before).
    fn job_result(&self, _job_id: &str) -> Option<serde_json::Value> {
        None
    }

    /// [`Store::job_result`] as JSON text (a database gives it as it keeps it: a million-entry
    /// result is served without building its tree).
    fn job_result_json(&self, job_id: &str) -> Option<String> {
        self.job_result(job_id).map(|result| result.to_string())
    }

    /// The last status document of a job that ended, when this store recorded it.
    fn job_status(&self, _job_id: &str) -> Option<serde_json::Value> {
        None
    }

    /// Every job that ended and is kept here, oldest first (empty when this store keeps no
    /// jobs: the engine's memory is then the only record). Their pipelines come without
    /// their flowInput, which can be large: [`Store::ended_job`] has it.
    fn ended_jobs(&self) -> Result<Vec<EndedJob>, Error> {
        Ok(Vec::new())
    }

    /// One ended job, its record whole (with the flowInput).
    fn ended_job(&self, _job_id: &str) -> Option<EndedJob> {
        None
    }

    /// The record of a job this store knows, ended or not.
    fn job_record(&self, _job_id: &str) -> Option<JobRecord> {
        None
    }

    /// The finished tasks a job's journal recorded, in recording order (kept after the job's
    /// end, for a run from one of its nodes).
    fn job_tasks(&self, _job_id: &str) -> Result<Vec<TaskRecord>, Error> {
        Ok(Vec::new())
    }

    /// The jobs that a job's end triggered, oldest first, as (jobId, pipeline name), ended
    /// or not (`GET /exec/tree/{jobId}`).
    fn triggered_jobs(&self, _parent_job_id: &str) -> Result<Vec<(String, String)>, Error> {
        Ok(Vec::new())
    }

    /// Retention: forgets the jobs that ended before `ended_before` (ms since the epoch), all
    /// their rows, and gives the space back to the file system. Returns their ids: their
    /// stored objects are the caller's to delete.
    fn delete_jobs_ended_before(&self, _ended_before: u64) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }

    /// Keeps the record of one webhook delivery of a job (`kind`: `progress` or `result`);
    /// it goes with the job at retention.
    fn add_webhook_record(
        &self,
        _job_id: &str,
        _kind: &str,
        _record: &serde_json::Value,
    ) -> Result<(), Error> {
        Ok(())
    }

    /// A job's webhook delivery records, oldest first, as (kind, record).
    fn webhook_records(&self, _job_id: &str) -> Result<Vec<(String, serde_json::Value)>, Error> {
        Ok(Vec::new())
    }

    /// The result cache: the output kept under `key` (a digest of an algorithm version and
    /// an input), if any.
    fn cached_result(&self, _key: &str) -> Option<serde_json::Value> {
        None
    }

    /// Keeps an output in the result cache (the first one kept for a key stays). It goes at
    /// retention, as the job that made it.
    fn put_cached_result(
        &self,
        _key: &str,
        _job_id: &str,
        _output: &serde_json::Value,
    ) -> Result<(), Error> {
        Ok(())
    }

    /// Empties the result cache; returns how many outputs it held.
    fn clear_result_cache(&self) -> Result<usize, Error> {
        Ok(0)
    }

    /// The versions of an algorithm, newest first.
    fn algorithm_versions(&self, _name: &str) -> Result<Vec<AlgorithmVersion>, Error> {
        Ok(Vec::new())
    }

    /// One version of an algorithm.
    fn algorithm_version(&self, name: &str, version: &str) -> Option<AlgorithmVersion> {
        self.algorithm_versions(name)
            .ok()?
            .into_iter()
            .find(|v| v.version == version)
    }

    /// Adds a version, numbered after the newest one of its algorithm in one atomic step
    /// ([`AlgorithmVersion::numbered_after`]); returns it as stored.
    fn add_algorithm_version(&self, _version: AlgorithmVersion) -> Result<AlgorithmVersion, Error> {
        Err(Error::Backend("this store keeps no versions".into()))
    }

    /// Removes one version; [`Error::NotFound`] (`version <v> Not Found`) when there is none.
    fn delete_algorithm_version(&self, _name: &str, version: &str) -> Result<(), Error> {
        Err(Error::NotFound {
            kind: "version",
            name: version.to_string(),
        })
    }

    /// Removes every version of an algorithm; returns how many there were.
    fn delete_algorithm_versions(&self, _name: &str) -> Result<usize, Error> {
        Ok(0)
    }

    /// Adds or replaces a build record (HKube's build document, keyed by `buildId`).
    fn put_build(&self, _build: &serde_json::Value) -> Result<(), Error> {
        Err(Error::Backend("this store keeps no builds".into()))
    }

    /// One build record.
    fn build(&self, _build_id: &str) -> Option<serde_json::Value> {
        None
    }

    /// An algorithm's builds, oldest first.
    fn builds(&self, _algorithm: &str) -> Result<Vec<serde_json::Value>, Error> {
        Ok(Vec::new())
    }
}

/// A job that ended, as the engine's journal recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndedJob {
    pub record: JobRecord,
    /// The results document (reference §3.4).
    pub result: serde_json::Value,
    /// The last status document (reference §3.5), when the journal recorded it.
    pub status: Option<serde_json::Value>,
}
