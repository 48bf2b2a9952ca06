//! State that survives the process: stored algorithms and pipelines, and the engine's journal
//! (jobs, finished tasks, results), in one SQLite database file.
//!
//! Reads and the API's writes go through a connection behind a mutex (they are rare and
//! small). The journal's writes, which come from the engine loop for every finished task, are
//! handed to a writer thread that commits them in batches, so the engine never waits on the
//! disk. A task whose record was still in that queue when the process died runs again after
//! the restart: at least once, never lost.
//!
//! An ended job's rows (its record with the flowInput, its task records, its result) stay until
//! the retention deletes them ([`Store::delete_jobs_ended_before`]); the file is in incremental
//! auto-vacuum mode, so the pages they held go back to the file system then.

use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::{AlgorithmVersion, EndedJob, Error, Store};
use crate::engine::{Catalog, JobRecord, Journal, TaskRecord};
use crate::spec::{Algorithm, Pipeline};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS algorithms (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pipelines (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    result TEXT,
    started INTEGER NOT NULL,
    ended INTEGER,
    parent TEXT,
    status TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks (job_id, seq);
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_by_name ON versions (name, seq);
CREATE TABLE IF NOT EXISTS builds (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    build_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS builds_by_name ON builds (name, seq);
CREATE TABLE IF NOT EXISTS webhooks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_by_job ON webhooks (job_id, seq);
CREATE TABLE IF NOT EXISTS result_cache (
    key TEXT PRIMARY KEY,
    output TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS result_cache_by_age ON result_cache (created);
";

/// Indexes over the columns that [`migrate`] may add to a database made by an older version.
const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS jobs_by_end ON jobs (ended);
CREATE INDEX IF NOT EXISTS jobs_by_parent ON jobs (parent);
";

/// Most journal rows per transaction.
const BATCH: usize = 4096;

enum Op {
    /// Job id, record, start time, parent job id.
    JobStarted(String, String, u64, Option<String>),
    TaskFinished(String, String),
    /// Job id, its last status document.
    JobStatus(String, String),
    JobFinished(String, String),
    Flush(mpsc::Sender<()>),
}

#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    writer: Mutex<Option<mpsc::Sender<Op>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Op")
    }
}

fn backend(error: impl std::fmt::Display) -> Error {
    Error::Backend(error.to_string())
}

fn open(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path)
        .map_err(|e| Error::Backend(format!("cannot open {}: {e}", path.display())))?;
    // WAL: readers do not block the writer; NORMAL: a committed transaction survives the
    // process being killed (only a power loss can take the last ones).
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
    )
    .map_err(backend)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, Error> {
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)
                .map_err(|e| Error::Backend(format!("cannot create {}: {e}", folder.display())))?;
        }
        let conn = open(path)?;
        incremental_vacuum_on(&conn)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        migrate(&conn)?;
        conn.execute_batch(INDEXES).map_err(backend)?;
        let writer_conn = open(path)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("hkube-journal".into())
            .spawn(move || write_loop(writer_conn, rx))
            .map_err(backend)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            writer: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Waits until every journal record handed over so far is committed.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.send(Op::Flush(done)) {
            let _ = wait.recv();
        }
    }

    /// Commits what is queued and stops the writer.
    pub fn close(&self) {
        self.flush();
        if let Ok(mut writer) = self.writer.lock() {
            writer.take();
        }
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }

    fn send(&self, op: Op) -> bool {
        self.writer
            .lock()
            .ok()
            .and_then(|w| w.as_ref().map(|tx| tx.send(op).is_ok()))
            .unwrap_or(false)
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, Error> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| Error::Backend("the store's lock is poisoned".into()))?;
        f(&conn).map_err(backend)
    }

    fn get<T: serde::de::DeserializeOwned>(&self, table: &str, name: &str) -> Option<T> {
        let sql = format!("SELECT doc FROM {table} WHERE name = ?1");
        let doc: Option<String> = self
            .with(|c| {
                c.query_row(&sql, params![name], |row| row.get(0))
                    .optional()
            })
            .ok()
            .flatten();
        doc.and_then(|doc| serde_json::from_str(&doc).ok())
    }

    fn all<T: serde::de::DeserializeOwned>(&self, table: &str) -> Result<Vec<T>, Error> {
        let sql = format!("SELECT doc FROM {table} ORDER BY name");
        let docs: Vec<String> = self.with(|c| {
            let mut statement = c.prepare(&sql)?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect()
        })?;
        docs.iter()
            .map(|doc| serde_json::from_str(doc).map_err(backend))
            .collect()
    }

    fn write(
        &self,
        table: &str,
        kind: &'static str,
        name: &str,
        doc: String,
        mode: Mode,
    ) -> Result<(), Error> {
        let sql = match mode {
            Mode::Create => format!("INSERT OR IGNORE INTO {table} (name, doc) VALUES (?1, ?2)"),
            Mode::Replace => format!("UPDATE {table} SET doc = ?2 WHERE name = ?1"),
            Mode::Put => format!("INSERT OR REPLACE INTO {table} (name, doc) VALUES (?1, ?2)"),
        };
        let changed = self.with(|c| c.execute(&sql, params![name, doc]))?;
        match (mode, changed) {
            (Mode::Create, 0) => Err(Error::Exists {
                kind,
                name: name.to_string(),
            }),
            (Mode::Replace, 0) => Err(Error::NotFound {
                kind,
                name: name.to_string(),
            }),
            _ => Ok(()),
        }
    }

    fn delete(&self, table: &str, kind: &'static str, name: &str) -> Result<(), Error> {
        let sql = format!("DELETE FROM {table} WHERE name = ?1");
        match self.with(|c| c.execute(&sql, params![name]))? {
            0 => Err(Error::NotFound {
                kind,
                name: name.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Create,
    Replace,
    Put,
}

/// Deleted rows leave free pages inside the file; with `auto_vacuum = INCREMENTAL` the
/// retention sweep hands them back to the file system (`PRAGMA incremental_vacuum`) without
/// rewriting the whole database as a `VACUUM` would. The mode can only change through one
/// `VACUUM`: immediate for a new database, once for one made by an older version.
fn incremental_vacuum_on(conn: &Connection) -> Result<(), Error> {
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
        .map_err(backend)?;
    if mode != 2 {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            .map_err(backend)?;
    }
    Ok(())
}

/// Adds the columns a database made by an older version lacks (`ended`, `parent`, `status`).
fn migrate(conn: &Connection) -> Result<(), Error> {
    let columns: Vec<String> = {
        let mut statement = conn.prepare("PRAGMA table_info(jobs)").map_err(backend)?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(1))
            .map_err(backend)?;
        rows.collect::<rusqlite::Result<_>>().map_err(backend)?
    };
    for (column, kind) in [("ended", "INTEGER"), ("parent", "TEXT"), ("status", "TEXT")] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE jobs ADD COLUMN {column} {kind}"))
                .map_err(backend)?;
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn to_doc<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(backend)
}

/// The writer thread: commits queued journal rows, many per transaction.
fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let outcome = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            for op in ops {
                match op {
                    Op::JobStarted(job_id, record, started, parent) => {
                        tx.execute(
                            "INSERT OR IGNORE INTO jobs (job_id, record, started, parent) VALUES (?1, ?2, ?3, ?4)",
                            params![job_id, record, started as i64, parent],
                        )?;
                    }
                    Op::TaskFinished(job_id, record) => {
                        tx.execute(
                            "INSERT INTO tasks (job_id, record) VALUES (?1, ?2)",
                            params![job_id, record],
                        )?;
                    }
                    Op::JobStatus(job_id, status) => {
                        tx.execute(
                            "UPDATE jobs SET status = ?2 WHERE job_id = ?1",
                            params![job_id, status],
                        )?;
                    }
                    Op::JobFinished(job_id, result) => {
                        tx.execute(
                            "UPDATE jobs SET result = ?2, ended = ?3 WHERE job_id = ?1",
                            params![job_id, result, now_ms()],
                        )?;
                        // The task rows stay, for a run from one of the job's nodes; the
                        // retention deletes them with the job.
                    }
                    Op::Flush(done) => flushes.push(done),
                }
            }
            tx.commit()
        })();
        if let Err(error) = outcome {
            tracing::warn!("the journal could not be written: {error}");
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

impl Catalog for SqliteStore {
    fn algorithm(&self, name: &str) -> Option<Algorithm> {
        self.get("algorithms", name)
    }

    fn pipeline(&self, name: &str) -> Option<Pipeline> {
        self.get("pipelines", name)
    }

    fn triggered_by(&self, parent: &str) -> Vec<Pipeline> {
        self.all::<Pipeline>("pipelines")
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.is_triggered_by(parent))
            .collect()
    }
}

impl Store for SqliteStore {
    fn algorithms(&self) -> Result<Vec<Algorithm>, Error> {
        self.all("algorithms")
    }

    fn create_algorithm(&self, algorithm: Algorithm) -> Result<(), Error> {
        let doc = to_doc(&algorithm)?;
        self.write(
            "algorithms",
            "algorithm",
            &algorithm.name,
            doc,
            Mode::Create,
        )
    }

    fn replace_algorithm(&self, algorithm: Algorithm) -> Result<(), Error> {
        let doc = to_doc(&algorithm)?;
        self.write(
            "algorithms",
            "algorithm",
            &algorithm.name,
            doc,
            Mode::Replace,
        )
    }

    fn put_algorithm(&self, algorithm: Algorithm) -> Result<(), Error> {
        let doc = to_doc(&algorithm)?;
        self.write("algorithms", "algorithm", &algorithm.name, doc, Mode::Put)
    }

    fn delete_algorithm(&self, name: &str) -> Result<(), Error> {
        self.delete("algorithms", "algorithm", name)
    }

    fn pipelines(&self) -> Result<Vec<Pipeline>, Error> {
        self.all("pipelines")
    }

    fn create_pipeline(&self, pipeline: Pipeline) -> Result<(), Error> {
        let doc = to_doc(&pipeline)?;
        self.write("pipelines", "pipeline", &pipeline.name, doc, Mode::Create)
    }

    fn replace_pipeline(&self, pipeline: Pipeline) -> Result<(), Error> {
        let doc = to_doc(&pipeline)?;
        self.write("pipelines", "pipeline", &pipeline.name, doc, Mode::Replace)
    }

    fn delete_pipeline(&self, name: &str) -> Result<(), Error> {
        self.delete("pipelines", "pipeline", name)
    }

    fn job_result(&self, job_id: &str) -> Option<Value> {
        self.result(job_id)
    }

    fn job_result_json(&self, job_id: &str) -> Option<String> {
        self.result_text(job_id)
    }

    fn job_status(&self, job_id: &str) -> Option<Value> {
        self.json_column(
            "SELECT status FROM jobs WHERE job_id = ?1 AND result IS NOT NULL",
            job_id,
        )
    }

    fn ended_jobs(&self) -> Result<Vec<EndedJob>, Error> {
        self.flush();
        type Row = (String, String, String, Option<String>);
        let rows: Vec<Row> = self.with(|c| {
            let mut statement = c.prepare(
                "SELECT job_id, json_remove(record, '$.pipeline.flowInput'), result, status
                 FROM jobs WHERE result IS NOT NULL ORDER BY started",
            )?;
            let rows = statement.query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?;
            rows.collect()
        })?;
        let mut jobs = Vec::with_capacity(rows.len());
        for (job_id, record, result, status) in rows {
            match (serde_json::from_str(&record), serde_json::from_str(&result)) {
                (Ok(record), Ok(result)) => jobs.push(EndedJob {
                    record,
                    result,
                    status: status.and_then(|s| serde_json::from_str(&s).ok()),
                }),
                _ => tracing::warn!(
                    "the journal's record of job {job_id} cannot be read; it is skipped"
                ),
            }
        }
        Ok(jobs)
    }

    fn ended_job(&self, job_id: &str) -> Option<EndedJob> {
        self.flush();
        let row: Option<(String, String, Option<String>)> = self
            .with(|c| {
                c.query_row(
                    "SELECT record, result, status FROM jobs WHERE job_id = ?1 AND result IS NOT NULL",
                    params![job_id],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
            })
            .ok()
            .flatten();
        let (record, result, status) = row?;
        Some(EndedJob {
            record: serde_json::from_str(&record).ok()?,
            result: serde_json::from_str(&result).ok()?,
            status: status.and_then(|s| serde_json::from_str(&s).ok()),
        })
    }

    fn job_record(&self, job_id: &str) -> Option<JobRecord> {
        self.flush();
        let record: Option<String> = self
            .with(|c| {
                c.query_row(
                    "SELECT record FROM jobs WHERE job_id = ?1",
                    params![job_id],
                    |row| row.get(0),
                )
                .optional()
            })
            .ok()
            .flatten();
        serde_json::from_str(&record?).ok()
    }

    fn job_tasks(&self, job_id: &str) -> Result<Vec<TaskRecord>, Error> {
        self.flush();
        Ok(self
            .task_rows(job_id)
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect())
    }

    fn triggered_jobs(&self, parent_job_id: &str) -> Result<Vec<(String, String)>, Error> {
        self.flush();
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT job_id, coalesce(json_extract(record, '$.pipeline.name'), '') FROM jobs
                 WHERE parent = ?1 ORDER BY started, rowid",
            )?;
            let rows = statement
                .query_map(params![parent_job_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
    }

    fn delete_jobs_ended_before(&self, ended_before: u64) -> Result<Vec<String>, Error> {
        self.flush();
        let conn = self
            .conn
            .lock()
            .map_err(|_| Error::Backend("the store's lock is poisoned".into()))?;
        // A job ended before this version recorded end times counts as ended when it started.
        let ids: Vec<String> = {
            let tx = conn.unchecked_transaction().map_err(backend)?;
            let ids: Vec<String> = {
                let mut statement = tx
                    .prepare(
                        "DELETE FROM jobs WHERE result IS NOT NULL AND coalesce(ended, started) < ?1
                         RETURNING job_id",
                    )
                    .map_err(backend)?;
                let rows = statement
                    .query_map(params![ended_before as i64], |row| row.get(0))
                    .map_err(backend)?;
                rows.collect::<rusqlite::Result<_>>().map_err(backend)?
            };
            // Cached outputs older than the retention go too: the cache obeys it.
            tx.execute(
                "DELETE FROM result_cache WHERE created < ?1",
                params![ended_before as i64],
            )
            .map_err(backend)?;
            for id in &ids {
                tx.execute("DELETE FROM tasks WHERE job_id = ?1", params![id])
                    .map_err(backend)?;
                tx.execute("DELETE FROM webhooks WHERE job_id = ?1", params![id])
                    .map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            ids
        };
        if ids.is_empty() {
            return Ok(ids);
        }
        // Each step of this pragma frees one page: step it to the end.
        {
            let mut vacuum = conn.prepare("PRAGMA incremental_vacuum").map_err(backend)?;
            let mut steps = vacuum.query([]).map_err(backend)?;
            while steps.next().map_err(backend)?.is_some() {}
        }
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(backend)?;
        Ok(ids)
    }

    fn algorithm_versions(&self, name: &str) -> Result<Vec<AlgorithmVersion>, Error> {
        let docs: Vec<String> = self.with(|c| {
            let mut statement =
                c.prepare("SELECT doc FROM versions WHERE name = ?1 ORDER BY seq DESC")?;
            let rows = statement.query_map(params![name], |row| row.get(0))?;
            rows.collect()
        })?;
        docs.iter()
            .map(|doc| serde_json::from_str(doc).map_err(backend))
            .collect()
    }

    fn algorithm_version(&self, name: &str, version: &str) -> Option<AlgorithmVersion> {
        let doc: Option<String> = self
            .with(|c| {
                c.query_row(
                    "SELECT doc FROM versions WHERE name = ?1 AND version = ?2",
                    params![name, version],
                    |row| row.get(0),
                )
                .optional()
            })
            .ok()
            .flatten();
        doc.and_then(|doc| serde_json::from_str(&doc).ok())
    }

    fn add_algorithm_version(&self, version: AlgorithmVersion) -> Result<AlgorithmVersion, Error> {
        // One lock over the read of the newest semver and the insert: no two versions of an
        // algorithm get the same number.
        let conn = self
            .conn
            .lock()
            .map_err(|_| Error::Backend("the store's lock is poisoned".into()))?;
        let latest: Option<String> = conn
            .query_row(
                "SELECT doc FROM versions WHERE name = ?1 ORDER BY seq DESC LIMIT 1",
                params![version.name],
                |row| row.get(0),
            )
            .optional()
            .map_err(backend)?;
        let latest: Option<AlgorithmVersion> = latest
            .map(|doc| serde_json::from_str(&doc))
            .transpose()
            .map_err(backend)?;
        let version = version.numbered_after(latest.as_ref().map(|v| v.semver.as_str()));
        conn.execute(
            "INSERT INTO versions (name, version, doc) VALUES (?1, ?2, ?3)",
            params![version.name, version.version, to_doc(&version)?],
        )
        .map_err(backend)?;
        Ok(version)
    }

    fn delete_algorithm_version(&self, name: &str, version: &str) -> Result<(), Error> {
        let deleted = self.with(|c| {
            c.execute(
                "DELETE FROM versions WHERE name = ?1 AND version = ?2",
                params![name, version],
            )
        })?;
        match deleted {
            0 => Err(Error::NotFound {
                kind: "version",
                name: version.to_string(),
            }),
            _ => Ok(()),
        }
    }

    fn delete_algorithm_versions(&self, name: &str) -> Result<usize, Error> {
        self.with(|c| c.execute("DELETE FROM versions WHERE name = ?1", params![name]))
    }

    fn add_webhook_record(
        &self,
        job_id: &str,
        kind: &str,
        record: &serde_json::Value,
    ) -> Result<(), Error> {
        let record = to_doc(record)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO webhooks (job_id, kind, record) VALUES (?1, ?2, ?3)",
                params![job_id, kind, record],
            )
        })
        .map(|_| ())
    }

    fn cached_result(&self, key: &str) -> Option<serde_json::Value> {
        let output: Option<String> = self
            .with(|c| {
                c.query_row(
                    "SELECT output FROM result_cache WHERE key = ?1",
                    params![key],
                    |row| row.get(0),
                )
                .optional()
            })
            .ok()
            .flatten();
        output.and_then(|output| serde_json::from_str(&output).ok())
    }

    fn put_cached_result(
        &self,
        key: &str,
        job_id: &str,
        output: &serde_json::Value,
    ) -> Result<(), Error> {
        let output = to_doc(output)?;
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO result_cache (key, output, job_id, created)
                 VALUES (?1, ?2, ?3, ?4)",
                params![key, output, job_id, now_ms()],
            )
        })
        .map(|_| ())
    }

    fn clear_result_cache(&self) -> Result<usize, Error> {
        self.with(|c| c.execute("DELETE FROM result_cache", []))
    }

    fn webhook_records(&self, job_id: &str) -> Result<Vec<(String, serde_json::Value)>, Error> {
        let rows: Vec<(String, String)> = self.with(|c| {
            let mut statement =
                c.prepare("SELECT kind, record FROM webhooks WHERE job_id = ?1 ORDER BY seq")?;
            let rows =
                statement.query_map(params![job_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(kind, record)| Some((kind, serde_json::from_str(&record).ok()?)))
            .collect())
    }

    fn put_build(&self, build: &serde_json::Value) -> Result<(), Error> {
        let id = build["buildId"].as_str().unwrap_or_default().to_string();
        let name = build["algorithmName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let doc = serde_json::to_string(build).map_err(|e| Error::Backend(e.to_string()))?;
        self.with(|c| {
            c.execute(
                "INSERT INTO builds (build_id, name, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT(build_id) DO UPDATE SET doc = excluded.doc",
                params![id, name, doc],
            )
        })
        .map(|_| ())
    }

    fn build(&self, build_id: &str) -> Option<serde_json::Value> {
        let doc: Option<String> = self
            .with(|c| {
                c.query_row(
                    "SELECT doc FROM builds WHERE build_id = ?1",
                    params![build_id],
                    |row| row.get(0),
                )
                .optional()
            })
            .ok()
            .flatten();
        doc.and_then(|doc| serde_json::from_str(&doc).ok())
    }

    fn builds(&self, algorithm: &str) -> Result<Vec<serde_json::Value>, Error> {
        let docs: Vec<String> = self.with(|c| {
            let mut statement = c.prepare("SELECT doc FROM builds WHERE name = ?1 ORDER BY seq")?;
            let rows = statement.query_map(params![algorithm], |row| row.get(0))?;
            rows.collect()
        })?;
        Ok(docs
            .iter()
            .filter_map(|doc| serde_json::from_str(doc).ok())
            .collect())
    }
}

impl Journal for SqliteStore {
    fn job_started(&self, job: &JobRecord) {
        if let Ok(record) = serde_json::to_string(job) {
            self.send(Op::JobStarted(
                job.job_id.clone(),
                record,
                job.start_time,
                job.parent_job_id.clone(),
            ));
        }
    }

    fn task_finished(&self, task: &TaskRecord) {
        if let Ok(record) = serde_json::to_string(task) {
            self.send(Op::TaskFinished(task.job_id.clone(), record));
        }
    }

    fn job_status(&self, job_id: &str, status: &Value) {
        self.send(Op::JobStatus(job_id.to_string(), status.to_string()));
    }

    fn job_finished(&self, job_id: &str, result: &Value) {
        self.send(Op::JobFinished(job_id.to_string(), result.to_string()));
    }

    fn job_finished_json(&self, job_id: &str, result: String) {
        self.send(Op::JobFinished(job_id.to_string(), result));
    }

    fn unfinished(&self) -> Vec<(JobRecord, Vec<TaskRecord>)> {
        self.flush();
        let jobs: Vec<(String, String)> = self
            .with(|c| {
                let mut statement = c.prepare(
                    "SELECT job_id, record FROM jobs WHERE result IS NULL ORDER BY started",
                )?;
                let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
                rows.collect()
            })
            .unwrap_or_default();
        let mut found = Vec::new();
        for (job_id, record) in jobs {
            let Ok(job) = serde_json::from_str::<JobRecord>(&record) else {
                tracing::warn!(
                    "the journal's record of job {job_id} cannot be read; it is skipped"
                );
                continue;
            };
            let tasks = self
                .task_rows(&job_id)
                .iter()
                .filter_map(|t| serde_json::from_str(t).ok())
                .collect();
            found.push((job, tasks));
        }
        found
    }
}

/// Jobs' results as recorded, newest first (for the API's queries and the CLI).
impl SqliteStore {
    /// A job's task records as stored, in recording order.
    fn task_rows(&self, job_id: &str) -> Vec<String> {
        self.with(|c| {
            let mut statement =
                c.prepare("SELECT record FROM tasks WHERE job_id = ?1 ORDER BY seq")?;
            let rows = statement.query_map(params![job_id], |row| row.get(0))?;
            rows.collect()
        })
        .unwrap_or_default()
    }

    pub fn result(&self, job_id: &str) -> Option<Value> {
        self.json_column("SELECT result FROM jobs WHERE job_id = ?1", job_id)
    }

    /// A job's result as the text stored (after the pending writes), if it ended.
    pub fn result_text(&self, job_id: &str) -> Option<String> {
        self.flush();
        self.with(|c| {
            c.query_row(
                "SELECT result FROM jobs WHERE job_id = ?1",
                params![job_id],
                |row| row.get(0),
            )
            .optional()
        })
        .ok()
        .flatten()
        .flatten()
    }

    /// One job's JSON document that `sql` selects (after the pending writes), if any.
    fn json_column(&self, sql: &str, job_id: &str) -> Option<Value> {
        self.flush();
        let text: Option<String> = self
            .with(|c| {
                c.query_row(sql, params![job_id], |row| row.get(0))
                    .optional()
            })
            .ok()
            .flatten()
            .flatten();
        text.and_then(|t| serde_json::from_str(&t).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RecordedOutcome;
    use serde_json::json;

    fn algorithm(name: &str) -> Algorithm {
        crate::spec::parse_algorithm(json!({"name": name, "algorithmImage": "img"})).unwrap()
    }

    #[test]
    fn store_writes_have_hkube_outcomes_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.create_algorithm(algorithm("alpha")).unwrap();
            assert_eq!(
                store
                    .create_algorithm(algorithm("alpha"))
                    .unwrap_err()
                    .to_string(),
                "algorithm alpha already exists"
            );
            assert_eq!(
                store
                    .replace_algorithm(algorithm("beta"))
                    .unwrap_err()
                    .to_string(),
                "algorithm beta Not Found"
            );
            store.put_algorithm(algorithm("beta")).unwrap();
            store.delete_algorithm("beta").unwrap();
            assert!(store.delete_algorithm("beta").is_err());
        }
        let store = SqliteStore::open(&path).unwrap();
        let names: Vec<String> = store
            .algorithms()
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["alpha"]);
        assert_eq!(
            store.algorithm("alpha").unwrap().algorithm_image.as_deref(),
            Some("img")
        );
    }

    #[test]
    fn the_journal_keeps_unfinished_jobs_and_their_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let job = |id: &str| JobRecord {
            job_id: id.into(),
            pipeline: json!({"name": "p"}),
            types: vec!["raw".into()],
            root_job_id: None,
            start_time: 1,
            parent_job_id: None,
        };
        let task = |job: &str, index: u32| TaskRecord {
            job_id: job.into(),
            node: "A".into(),
            group: 0,
            batch_index: index,
            task_id: format!("task000{index}"),
            outcome: RecordedOutcome::Succeeded {
                output: json!(index),
            },
        };
        {
            let store = SqliteStore::open(&path).unwrap();
            store.job_started(&job("j1"));
            store.job_started(&job("j2"));
            store.task_finished(&task("j1", 1));
            store.task_finished(&task("j1", 2));
            store.task_finished(&task("j2", 1));
            store.job_finished("j2", &json!({"status": "completed"}));
        }
        let store = SqliteStore::open(&path).unwrap();
        let unfinished = store.unfinished();
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].0, job("j1"));
        assert_eq!(unfinished[0].1, vec![task("j1", 1), task("j1", 2)]);
        assert_eq!(store.result("j2"), Some(json!({"status": "completed"})));
        let ended = store.ended_jobs().unwrap();
        assert_eq!(
            ended,
            vec![EndedJob {
                record: job("j2"),
                result: json!({"status": "completed"}),
                status: None,
            }]
        );
    }

    fn file_size(path: &Path) -> u64 {
        let wal = path.with_extension("db-wal");
        [path.to_path_buf(), wal]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Retention deletes what ended before its time, the rows of those jobs only, and the
    /// file gives their space back.
    /// Webhook delivery records and cached results survive a reopen and go at retention:
    /// the records with their job, the cached results by age.
    #[test]
    fn webhook_records_and_cached_results_obey_retention() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).unwrap();
        store.job_started(&JobRecord {
            job_id: "j".into(),
            pipeline: json!({"name": "p"}),
            types: vec!["raw".into()],
            root_job_id: None,
            start_time: 1,
            parent_job_id: None,
        });
        store.job_finished("j", &json!({"status": "completed"}));
        store.flush();
        store
            .add_webhook_record("j", "progress", &json!({"n": 1}))
            .unwrap();
        store
            .add_webhook_record("j", "result", &json!({"n": 2}))
            .unwrap();
        store.put_cached_result("k", "j", &json!([1])).unwrap();
        // The first output kept under a key stays.
        store.put_cached_result("k", "j", &json!([2])).unwrap();
        store.close();
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.webhook_records("j").unwrap(),
            [
                ("progress".to_string(), json!({"n": 1})),
                ("result".to_string(), json!({"n": 2}))
            ]
        );
        assert_eq!(store.cached_result("k"), Some(json!([1])));
        assert!(store.delete_jobs_ended_before(1).unwrap().is_empty());
        assert_eq!(
            store.cached_result("k"),
            Some(json!([1])),
            "younger than the cutoff"
        );
        assert_eq!(
            store.delete_jobs_ended_before(u64::MAX >> 1).unwrap(),
            ["j"]
        );
        assert!(store.webhook_records("j").unwrap().is_empty());
        assert_eq!(store.cached_result("k"), None);
        store.put_cached_result("k2", "j", &json!(3)).unwrap();
        assert_eq!(store.clear_result_cache().unwrap(), 1);
        assert_eq!(store.cached_result("k2"), None);
    }

    #[test]
    fn retention_deletes_old_jobs_and_the_file_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).unwrap();
        let big = "x".repeat(3 << 20);
        let job = |id: &str, parent: Option<&str>| JobRecord {
            job_id: id.into(),
            pipeline: json!({"name": id, "flowInput": {"big": big}}),
            types: vec!["raw".into()],
            root_job_id: None,
            start_time: 1,
            parent_job_id: parent.map(str::to_string),
        };
        store.job_started(&job("old", None));
        store.job_started(&job("running", Some("old")));
        let task = TaskRecord {
            job_id: "old".into(),
            node: "A".into(),
            group: 0,
            batch_index: 0,
            task_id: "task0001".into(),
            outcome: RecordedOutcome::Succeeded { output: json!(1) },
        };
        store.task_finished(&task);
        store.job_finished("old", &json!({"status": "completed"}));
        store.flush();
        let grown = file_size(&path);
        assert!(grown > 6 << 20, "{grown}");
        assert_eq!(
            store.triggered_jobs("old").unwrap(),
            [("running".to_string(), "running".to_string())]
        );
        // Ended jobs come without their flowInput; one job comes whole.
        assert_eq!(
            store.ended_jobs().unwrap()[0].record.pipeline,
            json!({"name": "old"})
        );
        assert_eq!(
            store.ended_job("old").unwrap().record.pipeline["flowInput"]["big"]
                .as_str()
                .map(str::len),
            Some(3 << 20)
        );
        assert!(store.ended_job("running").is_none());
        // An ended job's tasks stay, for a run from one of its nodes.
        assert_eq!(store.job_tasks("old").unwrap(), [task]);

        // Nothing ended before a time in the past.
        assert!(store.delete_jobs_ended_before(1).unwrap().is_empty());
        let deleted = store.delete_jobs_ended_before(u64::MAX >> 1).unwrap();
        assert_eq!(deleted, ["old"]);
        assert!(store.job_record("old").is_none());
        assert!(store.job_tasks("old").unwrap().is_empty());
        assert!(
            store.job_record("running").is_some(),
            "an unfinished job stays"
        );
        let shrunk = file_size(&path);
        // What is left is the unfinished job's 3 MB.
        assert!(
            shrunk < 4 << 20,
            "the file gave the space back: {grown} → {shrunk}"
        );
    }

    #[test]
    fn versions_are_numbered_listed_newest_first_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let version = |id: &str, name: &str| AlgorithmVersion::new(id.into(), algorithm(name), 1);
        {
            let store = SqliteStore::open(&path).unwrap();
            let first = store
                .add_algorithm_version(version("v000000001", "alpha"))
                .unwrap();
            assert_eq!(
                (first.semver.as_str(), first.version_alias.as_str()),
                ("1.0.0", "v1.0.0")
            );
            assert_eq!(first.algorithm.extra["version"], "v000000001");
            store
                .add_algorithm_version(version("v000000002", "alpha"))
                .unwrap();
            store
                .add_algorithm_version(version("v000000003", "beta"))
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let listed: Vec<(String, String)> = store
            .algorithm_versions("alpha")
            .unwrap()
            .into_iter()
            .map(|v| (v.version, v.semver))
            .collect();
        assert_eq!(
            listed,
            [
                ("v000000002".to_string(), "1.0.1".to_string()),
                ("v000000001".to_string(), "1.0.0".to_string())
            ]
        );
        assert_eq!(
            store
                .algorithm_version("beta", "v000000003")
                .unwrap()
                .semver,
            "1.0.0"
        );
        assert!(store.algorithm_version("alpha", "v000000003").is_none());
        store
            .delete_algorithm_version("alpha", "v000000001")
            .unwrap();
        assert_eq!(
            store
                .delete_algorithm_version("alpha", "v000000001")
                .unwrap_err()
                .to_string(),
            "version v000000001 Not Found"
        );
        // Numbering follows the newest remaining version.
        let next = store
            .add_algorithm_version(version("v000000004", "alpha"))
            .unwrap();
        assert_eq!(next.semver, "1.0.2");
        assert_eq!(store.delete_algorithm_versions("alpha").unwrap(), 2);
        assert!(store.algorithm_versions("alpha").unwrap().is_empty());
    }
}
