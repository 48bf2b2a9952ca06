//! Engine behaviour that the conformance table cannot show: what the executor sees (bounded
//! dispatch, priorities, task fields), late or duplicate reports, progress while running.

#![allow(clippy::unwrap_used)] // a test may panic on the unexpected

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchestrator::engine::{
    Engine, EngineOptions, Executor, InProcessExecutor, JobStatus, MemoryCatalog, TaskKey,
    TaskOutcome, TaskSpec,
};
use orchestrator::spec;
use serde_json::{json, Value};

fn catalog(names: &[&str]) -> Arc<MemoryCatalog> {
    let catalog = Arc::new(MemoryCatalog::new());
    for name in names {
        catalog.put_algorithm(
            spec::parse_algorithm(json!({"name": name, "algorithmImage": format!("img/{name}")}))
                .unwrap(),
        );
    }
    catalog
}

/// Holds every task until the test releases it, and records what it saw.
#[derive(Default)]
struct Recorder {
    tasks: Mutex<Vec<TaskSpec>>,
    outstanding: AtomicUsize,
    most_outstanding: AtomicUsize,
    cancelled: Mutex<Vec<TaskKey>>,
}

impl Executor for Recorder {
    fn submit(&self, task: TaskSpec) {
        let now = self.outstanding.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_outstanding.fetch_max(now, Ordering::SeqCst);
        task.reporter.started();
        self.tasks.lock().unwrap().push(task);
    }

    fn cancel(&self, key: TaskKey) {
        self.cancelled.lock().unwrap().push(key);
    }
}

impl Recorder {
    /// Finishes every task handed out so far with `output(input)`; returns how many.
    fn finish_all(&self, output: impl Fn(&TaskSpec) -> TaskOutcome) -> usize {
        let tasks: Vec<TaskSpec> = std::mem::take(&mut *self.tasks.lock().unwrap());
        for task in &tasks {
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
            task.reporter.finish(output(task));
        }
        tasks.len()
    }
}

async fn settle() {
    // Let the engine loop drain its messages.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn dispatch_is_bounded_per_job_and_everything_still_runs() {
    let recorder = Arc::new(Recorder::default());
    let options = EngineOptions {
        max_in_flight_per_job: 8,
        ..EngineOptions::default()
    };
    let handle = Engine::spawn_with(options, recorder.clone(), catalog(&["alg"]));
    let items: Vec<Value> = (0..100).map(Value::from).collect();
    let job = handle
        .exec_raw(json!({
            "name": "bounded",
            "nodes": [{"nodeName": "A", "algorithmName": "alg", "input": ["#@flowInput.items"]}],
            "flowInput": {"items": items},
        }))
        .await
        .unwrap();
    let mut finished = 0;
    while finished < 100 {
        settle().await;
        let status = handle.status(&job).await.unwrap();
        let creating = status["data"]["states"]["creating"].as_u64().unwrap_or(0);
        let active = status["data"]["states"]["active"].as_u64().unwrap_or(0);
        assert!(active <= 8, "at most 8 tasks out at once: {status}");
        assert_eq!(creating + active + finished as u64, 100, "{status}");
        finished += recorder.finish_all(|task| TaskOutcome::Succeeded(task.input[0].clone()));
    }
    let result = handle.wait(&job).await.unwrap();
    assert_eq!(result["status"], "completed");
    assert_eq!(result["data"].as_array().unwrap().len(), 100);
    assert_eq!(result["data"][99]["result"], 99);
    assert!(recorder.most_outstanding.load(Ordering::SeqCst) <= 8);
}

#[tokio::test]
async fn a_late_duplicate_report_changes_nothing() {
    let recorder = Arc::new(Recorder::default());
    let handle = Engine::spawn(recorder.clone(), catalog(&["alg"]));
    let job = handle
        .exec_raw(json!({"name": "dup", "nodes": [{"nodeName": "A", "algorithmName": "alg", "input": [1]}]}))
        .await
        .unwrap();
    settle().await;
    let task = recorder.tasks.lock().unwrap().pop().unwrap();
    task.reporter.finish(TaskOutcome::Succeeded(json!("first")));
    task.reporter.finish(TaskOutcome::Failed("second".into()));
    let result = handle.wait(&job).await.unwrap();
    assert_eq!(result["status"], "completed");
    assert_eq!(result["data"][0]["result"], "first");
}

#[tokio::test]
async fn tasks_carry_what_the_algorithm_needs() {
    let recorder = Arc::new(Recorder::default());
    let handle = Engine::spawn(recorder.clone(), catalog(&["alg"]));
    let job = handle
        .exec_raw(json!({
            "name": "fields",
            "priority": 1,
            "nodes": [{"nodeName": "A", "algorithmName": "alg", "input": ["#[x,y]", {"k": "@flowInput.k"}],
                       "extraData": {"note": 7}}],
            "flowInput": {"k": "v"},
        }))
        .await
        .unwrap();
    settle().await;
    let tasks = recorder.tasks.lock().unwrap();
    assert_eq!(tasks.len(), 2);
    let task = &tasks[1];
    assert_eq!(&*task.job_id, job.as_str());
    assert_eq!(&*task.root_job_id, job.as_str());
    assert_eq!(&*task.pipeline_name, "fields");
    assert_eq!(&*task.node_name, "A");
    assert_eq!(&*task.algorithm_name, "alg");
    assert_eq!(task.input, vec![json!("y"), json!({"k": "v"})]);
    assert_eq!(task.batch_index, Some(2));
    assert_eq!(task.priority, 1);
    assert_eq!(task.extra_data.as_deref(), Some(&json!({"note": 7})));
    assert_eq!(task.task_id.as_str().len(), 8);
    assert_ne!(tasks[0].task_id, tasks[1].task_id);
}

#[tokio::test]
async fn progress_while_running() {
    let recorder = Arc::new(Recorder::default());
    let handle = Engine::spawn(recorder.clone(), catalog(&["alg"]));
    let job = handle
        .exec_raw(json!({"name": "progress", "nodes": [
            {"nodeName": "A", "algorithmName": "alg", "input": ["#[1...2]"]},
            {"nodeName": "B", "algorithmName": "alg", "input": ["@A"]},
        ]}))
        .await
        .unwrap();
    settle().await;
    let status = handle.status(&job).await.unwrap();
    assert_eq!(status["status"], "active");
    // Two A tasks out, B not expanded yet (counts as one task).
    assert_eq!(status["data"]["details"], "0% completed, 2 active");
    let first = recorder.tasks.lock().unwrap().remove(0);
    recorder.outstanding.fetch_sub(1, Ordering::SeqCst);
    first.reporter.finish(TaskOutcome::Succeeded(json!(1)));
    settle().await;
    let status = handle.status(&job).await.unwrap();
    assert_eq!(status["data"]["progress"], 33.33);
    assert_eq!(
        status["data"]["details"],
        "33.33% completed, 1 succeed, 1 active"
    );
}

#[tokio::test]
async fn stopping_a_job_cancels_its_running_tasks() {
    let recorder = Arc::new(Recorder::default());
    let handle = Engine::spawn(recorder.clone(), catalog(&["alg"]));
    let job = handle
        .exec_raw(json!({"name": "cancel", "nodes": [{"nodeName": "A", "algorithmName": "alg", "input": ["#[1...3]"]}]}))
        .await
        .unwrap();
    settle().await;
    let stopped = handle
        .stop(orchestrator::engine::StopRequest {
            job_id: Some(job.clone()),
            reason: Some("enough".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stopped, vec![job.clone()]);
    assert_eq!(recorder.cancelled.lock().unwrap().len(), 3);
    let result = handle.wait(&job).await.unwrap();
    assert_eq!(result["status"], "stopped");
    assert_eq!(result["reason"], "enough");
    // Reports after the stop are ignored.
    recorder.finish_all(|_| TaskOutcome::Succeeded(json!(0)));
    settle().await;
    assert_eq!(
        handle.status(&job).await.unwrap()["data"]["states"],
        json!({"stopped": 3})
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_job_of_higher_priority_starts_first() {
    let handle = Engine::spawn(
        Arc::new(InProcessExecutor::with_test_algorithms()),
        catalog(&["sleep", "first"]),
    );
    let pipeline = |priority: u8| {
        json!({"name": "queue", "priority": priority,
               "options": {"concurrentPipelines": {"amount": 1, "rejectOnFailure": false}},
               "nodes": [{"nodeName": "A", "algorithmName": "sleep", "input": [1]}]})
    };
    let running = handle.exec_raw(pipeline(3)).await.unwrap();
    let low = handle.exec_raw(pipeline(5)).await.unwrap();
    let high = handle.exec_raw(pipeline(1)).await.unwrap();
    assert_eq!(handle.status(&low).await.unwrap()["status"], "pending");
    assert_eq!(handle.status(&high).await.unwrap()["status"], "pending");
    handle.wait(&running).await.unwrap();
    assert_eq!(handle.status(&high).await.unwrap()["status"], "active");
    assert_eq!(handle.status(&low).await.unwrap()["status"], "pending");
    let high_done = handle.wait(&high).await.unwrap();
    let low_done = handle.wait(&low).await.unwrap();
    assert!(high_done["timestamp"].as_u64() <= low_done["timestamp"].as_u64());
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn a_job_resumes_after_a_crash_without_running_finished_tasks_again() {
    let journal = Arc::new(orchestrator::engine::MemoryJournal::new());
    resume_after_crash(journal.clone(), journal).await;
}

#[tokio::test]
async fn a_job_resumes_from_the_sqlite_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hkube.db");
    let first = Arc::new(orchestrator::store::SqliteStore::open(&path).unwrap());
    // The second life opens the database anew, as a restarted process does.
    let reopen = || Arc::new(orchestrator::store::SqliteStore::open(&path).unwrap());
    resume_after_crash_with(first, reopen).await;
}

async fn resume_after_crash<J: orchestrator::engine::Journal>(first: Arc<J>, second: Arc<J>) {
    resume_after_crash_with(first, move || second.clone()).await;
}

async fn resume_after_crash_with<
    J: orchestrator::engine::Journal,
    K: orchestrator::engine::Journal,
>(
    journal: Arc<J>,
    second: impl FnOnce() -> Arc<K>,
) {
    use orchestrator::engine::{Engine as E, InProcessExecutor, Run};

    // First life: three of six batch items finish, then the engine dies.
    let recorder = Arc::new(Recorder::default());
    let engine = E::new(
        EngineOptions::default(),
        recorder.clone(),
        catalog(&["alg"]),
    )
    .with_journal(journal.clone());
    let handle = engine.handle();
    let running = tokio::spawn(engine.run());
    let job = handle
        .exec_raw(json!({"name": "resume", "nodes": [
            {"nodeName": "A", "algorithmName": "alg", "input": ["#[1...6]"]},
            {"nodeName": "B", "algorithmName": "alg", "input": ["@A"]},
        ]}))
        .await
        .unwrap();
    settle().await;
    let tasks: Vec<TaskSpec> = std::mem::take(&mut *recorder.tasks.lock().unwrap());
    assert_eq!(tasks.len(), 6);
    for task in &tasks[..3] {
        task.reporter.finish(TaskOutcome::Succeeded(json!(
            task.input[0].as_i64().unwrap() * 10
        )));
    }
    settle().await;
    running.abort();
    let _ = running.await;
    let recorded = journal.unfinished();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].1.len(), 3, "three finished tasks recorded");
    drop(journal);
    let journal = second();

    // Second life: the same journal; only the unfinished work runs.
    let runs = Arc::new(AtomicUsize::new(0));
    let mut executor = InProcessExecutor::default();
    let counter = runs.clone();
    executor.register(
        "alg",
        Arc::new(move |task| {
            counter.fetch_add(1, Ordering::SeqCst);
            match task.input[0].as_i64() {
                Some(n) => Run::Now(TaskOutcome::Succeeded(json!(n * 10))),
                None => Run::Now(TaskOutcome::Succeeded(task.input[0].clone())),
            }
        }),
    );
    let engine = E::new(
        EngineOptions::default(),
        Arc::new(executor),
        catalog(&["alg"]),
    )
    .with_journal(journal.clone());
    let handle = engine.handle();
    tokio::spawn(engine.run());
    let result = handle.wait(&job).await.unwrap();
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"][0]["result"], json!([10, 20, 30, 40, 50, 60]));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        4,
        "three A items and B; the first three A items were not run again"
    );
    assert!(journal.unfinished().is_empty());
}

/// `Handle::jobs` lists jobs by status, oldest first; `resumed` counts as `active`.
#[tokio::test(start_paused = true)]
async fn jobs_are_listed_by_status() {
    let executor = InProcessExecutor::with_test_algorithms();
    let handle = Engine::spawn(Arc::new(executor), catalog(&["sleep", "first"]));
    let done = handle
        .exec_raw(json!({"name": "quick", "nodes": [{"nodeName": "A", "algorithmName": "first", "input": [1]}]}))
        .await
        .unwrap();
    handle.wait(&done).await.unwrap();
    let slow = handle
        .exec_raw(json!({"name": "slow", "nodes": [{"nodeName": "A", "algorithmName": "sleep", "input": [600]}]}))
        .await
        .unwrap();
    let active = vec![JobStatus::Active, JobStatus::Pending];
    let listed = handle.jobs(Some(active.clone())).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].job_id, slow);
    assert_eq!(listed[0].pipeline_name, "slow");
    assert_eq!(listed[0].status, JobStatus::Active);
    assert_eq!(listed[0].types, ["raw"]);
    handle.pause(&slow).await.unwrap();
    handle.resume(&slow).await.unwrap();
    assert_eq!(handle.jobs(Some(active)).await.unwrap().len(), 1);
    let all: Vec<String> = handle
        .jobs(None)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.job_id)
        .collect();
    assert_eq!(all, [done.clone(), slow]);
    let completed = handle.jobs(Some(vec![JobStatus::Completed])).await.unwrap();
    assert_eq!(completed[0].job_id, done);
    handle.shutdown().await;
}

/// The code API's stops: a task stops the sub-pipeline and the algorithm execution it started,
/// and each caller is answered.
#[tokio::test(start_paused = true)]
async fn a_task_stops_what_it_started() {
    use orchestrator::engine::{Run, SubPipeline};
    let mut executor = InProcessExecutor::with_test_algorithms();
    executor.register(
        "stopper",
        Arc::new(|task| {
            let pipeline = task.reporter.start_sub_pipeline(SubPipeline::Stored {
                name: "slow".into(),
                flow_input: None,
            });
            let execution = task
                .reporter
                .start_algorithm("sleep".into(), vec![json!(100)]);
            let reporter = task.reporter.clone();
            Run::Later(Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                reporter.stop_children("enough".into());
                let pipeline = match pipeline.await {
                    Ok(Ok(result)) => json!([result["status"], result["reason"]]),
                    other => json!(format!("{other:?}")),
                };
                let execution = match execution.await {
                    Ok(TaskOutcome::Failed(error)) => json!(error),
                    other => json!(format!("{other:?}")),
                };
                TaskOutcome::Succeeded(json!([pipeline, execution]))
            }))
        }),
    );
    let catalog = catalog(&["sleep", "stopper"]);
    catalog.put_pipeline(
        spec::parse_pipeline(json!({"name": "slow", "nodes": [{"nodeName": "Z", "algorithmName": "sleep", "input": [100]}]}))
            .unwrap(),
    );
    let handle = Engine::spawn(Arc::new(executor), catalog);
    let job = handle
        .exec_raw(json!({"name": "parent", "nodes": [{"nodeName": "S", "algorithmName": "stopper", "input": []}]}))
        .await
        .unwrap();
    let result = handle.wait(&job).await.unwrap();
    assert_eq!(
        result["data"][0]["result"],
        json!([["stopped", "enough"], "stopped: enough"]),
        "{result}"
    );
}

/// With a journal and `keep_finished_jobs`, the oldest ended jobs leave memory; their results
/// stay in the journal.
#[tokio::test]
async fn ended_jobs_beyond_the_limit_leave_memory() {
    use orchestrator::engine::{Journal, MemoryJournal};
    let journal = Arc::new(MemoryJournal::new());
    let options = EngineOptions {
        keep_finished_jobs: Some(2),
        ..EngineOptions::default()
    };
    let engine = Engine::new(
        options,
        Arc::new(InProcessExecutor::with_test_algorithms()),
        catalog(&["first"]),
    )
    .with_journal(journal.clone());
    let handle = engine.handle();
    tokio::spawn(engine.run());
    let mut ids = Vec::new();
    for i in 0..4 {
        let job = handle
            .exec_raw(json!({"name": "keep", "nodes": [{"nodeName": "A", "algorithmName": "first", "input": [i]}]}))
            .await
            .unwrap();
        handle.wait(&job).await.unwrap();
        ids.push(job);
    }
    assert!(
        handle.status(&ids[0]).await.is_err(),
        "the oldest is gone from memory"
    );
    assert!(handle.status(&ids[1]).await.is_err());
    assert_eq!(
        handle.result(&ids[3]).await.unwrap()["data"][0]["result"],
        3
    );
    assert_eq!(handle.jobs(None).await.unwrap().len(), 2);
    assert!(
        journal.unfinished().is_empty(),
        "every job's end is in the journal"
    );
}

/// A trigger cycle that got into the catalog (stored before the store refused cycles) runs a
/// bounded chain of jobs, not jobs without end (issue 15, item 3: 12,600 jobs in 5 s).
#[tokio::test]
async fn a_trigger_cycle_stops_after_the_longest_chain() {
    use orchestrator::engine::{ExecRequest, MAX_TRIGGER_DEPTH};
    let catalog = catalog(&["first"]);
    for (name, parent) in [("ping", "pong"), ("pong", "ping")] {
        catalog.put_pipeline(
            spec::parse_pipeline(json!({
                "name": name,
                "triggers": {"pipelines": [parent]},
                "nodes": [{"nodeName": "A", "algorithmName": "first", "input": [1]}]
            }))
            .unwrap(),
        );
    }
    let executor = InProcessExecutor::with_test_algorithms();
    let handle = Engine::spawn(Arc::new(executor), catalog);
    handle
        .exec(ExecRequest::Stored(json!({"name": "ping"})))
        .await
        .unwrap();
    // The chain is done when the count stops growing and nothing is left running.
    let mut seen = 0;
    let mut quiet_rounds = 0;
    while quiet_rounds < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let jobs = handle.jobs(None).await.unwrap();
        let running = jobs.iter().any(|job| !job.status.is_final());
        if jobs.len() == seen && !running {
            quiet_rounds += 1;
        } else {
            quiet_rounds = 0;
        }
        seen = jobs.len();
        assert!(
            seen <= MAX_TRIGGER_DEPTH as usize + 1,
            "{seen} jobs: the chain did not stop"
        );
    }
    let jobs = handle.jobs(None).await.unwrap();
    assert_eq!(jobs.len(), MAX_TRIGGER_DEPTH as usize + 1);
    assert!(jobs.iter().all(|job| job.status == JobStatus::Completed));
    assert_eq!(jobs[1].types, ["internal", "stored", "trigger"]);
    handle.shutdown().await;
}

/// With a journal and `keep_finished_jobs: Some(0)` (the server's setting), a job leaves the
/// engine as it ends: a stopped job of 100,000 items (its queued ranges, its batch list)
/// is no longer held, and its end is in the journal.
#[tokio::test]
async fn with_no_ended_job_kept_a_stopped_job_leaves_memory_at_once() {
    use orchestrator::engine::{Journal, MemoryJournal};
    let journal = Arc::new(MemoryJournal::new());
    let options = EngineOptions {
        keep_finished_jobs: Some(0),
        max_in_flight_per_job: 16,
    };
    let engine = Engine::new(
        options,
        Arc::new(InProcessExecutor::with_test_algorithms()),
        catalog(&["sleep"]),
    )
    .with_journal(journal.clone());
    let handle = engine.handle();
    tokio::spawn(engine.run());
    let job = handle
        .exec_raw(json!({"name": "big",
            "nodes": [{"nodeName": "A", "algorithmName": "sleep", "input": ["#[1...100000]"]}]}))
        .await
        .unwrap();
    assert_eq!(handle.jobs(None).await.unwrap().len(), 1);
    handle
        .stop(orchestrator::engine::StopRequest {
            job_id: Some(job.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        handle.status(&job).await.is_err(),
        "the stopped job is gone"
    );
    assert!(handle.jobs(None).await.unwrap().is_empty());
    assert!(journal.unfinished().is_empty(), "its end is in the journal");
}

/// An executor whose `block` algorithm holds the engine loop (submit runs on it) for a while;
/// other tasks wait for the test.
#[derive(Default)]
struct Blocking {
    held: Mutex<Vec<TaskSpec>>,
}

impl Executor for Blocking {
    fn submit(&self, task: TaskSpec) {
        task.reporter.started();
        if task.algorithm_name.as_ref() == "block" {
            std::thread::sleep(Duration::from_millis(800));
        }
        self.held.lock().unwrap().push(task);
    }

    fn cancel(&self, _key: TaskKey) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_while_the_engine_loop_is_busy() {
    let executor = Arc::new(Blocking::default());
    let handle = Engine::spawn(executor.clone(), catalog(&["alg", "block"]));
    let job = handle
        .exec_raw(json!({"name": "first", "nodes": [
            {"nodeName": "A", "algorithmName": "alg", "input": ["#[1...2]"]},
        ]}))
        .await
        .unwrap();
    let status = handle.status(&job).await.unwrap();
    assert_eq!(status["data"]["details"], "0% completed, 2 active");
    // A second job's submission holds the loop for 800 ms.
    let busy = handle.clone();
    let second = tokio::spawn(async move {
        busy.exec_raw(json!({"name": "second", "nodes": [
            {"nodeName": "B", "algorithmName": "block", "input": [1]},
        ]}))
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = std::time::Instant::now();
    let status = handle.status(&job).await.unwrap();
    let took = asked.elapsed();
    assert!(
        took < Duration::from_millis(300),
        "status waited {took:?} for the busy loop"
    );
    assert!(!second.is_finished(), "the loop was not busy while asked");
    assert_eq!(status["status"], "active");
    assert_eq!(status["data"]["details"], "0% completed, 2 active");
    assert!(status["timestamp"].as_u64().unwrap() >= orchestrator::engine::now_ms() - 1000);
    second.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_journal_gets_the_same_results_document_as_the_api() {
    use orchestrator::engine::{MemoryJournal, Run};
    let mut executor = InProcessExecutor::default();
    executor.register(
        "item",
        Arc::new(|task| match task.input.first() {
            Some(Value::Number(n)) if n.as_u64() == Some(2) => {
                Run::Now(TaskOutcome::Failed("two is not welcome".into()))
            }
            Some(value) => Run::Now(TaskOutcome::Succeeded(json!({"got": value, "s": "x\"y"}))),
            None => Run::Now(TaskOutcome::Succeeded(Value::Null)),
        }),
    );
    executor.register(
        "one",
        Arc::new(|_| Run::Now(TaskOutcome::Succeeded(json!(1.5)))),
    );
    let journal = Arc::new(MemoryJournal::new());
    let engine = Engine::new(
        EngineOptions::default(),
        Arc::new(executor),
        catalog(&["item", "one"]),
    )
    .with_journal(journal.clone());
    let handle = engine.handle();
    tokio::spawn(engine.run());
    let job = handle
        .exec_raw(
            json!({"name": "results", "options": {"batchTolerance": 80}, "nodes": [
                {"nodeName": "A", "algorithmName": "item", "input": ["#[1...4]"]},
                {"nodeName": "B", "algorithmName": "one", "input": [], "includeInResults": true},
                {"nodeName": "C", "algorithmName": "one", "input": ["@B"]},
            ]}),
        )
        .await
        .unwrap();
    // No one waits on the job: the engine writes the journal's document as text.
    let mut status = Value::Null;
    for _ in 0..200 {
        status = handle.status(&job).await.unwrap();
        if status["status"] == "completed" {
            break;
        }
        settle().await;
    }
    assert_eq!(status["status"], "completed", "{status}");
    let from_api = handle.result(&job).await.unwrap();
    let recorded = journal.result(&job).unwrap();
    assert_eq!(recorded, from_api);
    assert_eq!(
        serde_json::to_string(&recorded).unwrap(),
        serde_json::to_string(&from_api).unwrap(),
        "the same keys in the same order"
    );
    let entries = from_api["data"].as_array().unwrap();
    assert_eq!(entries.len(), 6, "{from_api}");
    assert_eq!(entries[1]["error"], "two is not welcome");
    assert_eq!(entries[0]["result"], json!({"got": 1, "s": "x\"y"}));
}
