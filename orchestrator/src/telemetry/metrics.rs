//! The server's Prometheus metrics (`GET /metrics`), through the `prometheus` crate. Every
//! name starts with `hkube_`.
//!
//! Counters and histograms are process-wide (a server is one process): the engine, the build
//! service and the storage count where the thing happens, without a handle threaded through.
//! Gauges that describe a state (tasks per state, queues, workers) are set from their owners'
//! snapshots just before each scrape ([`render`]).

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The metrics and the registry they are gathered from.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Jobs that reached a final status, by status.
    pub jobs: IntCounterVec,
    /// Tasks on the task board by state (running jobs and the latest ended ones).
    pub tasks: IntGaugeVec,
    /// Tasks that ended, by algorithm and final state.
    pub tasks_ended: IntCounterVec,
    /// Tasks waiting for a worker, per algorithm.
    pub queue: IntGaugeVec,
    /// Workers per algorithm and state.
    pub workers: IntGaugeVec,
    /// A task's run (started → done), per algorithm.
    pub task_duration: HistogramVec,
    /// A build's run, by backend status.
    pub build_duration: HistogramVec,
    /// Bytes read from and written to the job storage through the server.
    pub storage_bytes: IntCounterVec,
}

/// The one registry of this process.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Task durations span microseconds (a square) to hours (training).
const TASK_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0,
];
const BUILD_BUCKETS: &[f64] = &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        // The names and labels are constants: a failure here is a bug in this file.
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let jobs = counter(
            "hkube_jobs_total",
            "Jobs that reached a final status",
            &["status"],
        );
        let tasks_ended = counter(
            "hkube_tasks_ended_total",
            "Tasks that ended, by algorithm and final state",
            &["algorithm", "state"],
        );
        let storage_bytes = counter(
            "hkube_storage_bytes_total",
            "Bytes through the job storage (read by the API and sidecars, written by sidecars)",
            &["direction"],
        );
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let tasks = gauge(
            "hkube_tasks",
            "Tasks by state (running jobs and the latest ended ones)",
            &["state"],
        );
        let queue = gauge(
            "hkube_queue_depth",
            "Tasks waiting for a worker, per algorithm",
            &["algorithm"],
        );
        let workers = gauge(
            "hkube_workers",
            "Workers per algorithm and state",
            &["algorithm", "state"],
        );
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let metric = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let task_duration = histogram(
            "hkube_task_duration_seconds",
            "A task's run, from its start to its end, per algorithm",
            &["algorithm"],
            TASK_BUCKETS,
        );
        let build_duration = histogram(
            "hkube_build_duration_seconds",
            "A build's run, by how it ended",
            &["status"],
            BUILD_BUCKETS,
        );
        Metrics {
            registry,
            jobs,
            tasks,
            tasks_ended,
            queue,
            workers,
            task_duration,
            build_duration,
            storage_bytes,
        }
    }
}

/// A job reached a final status.
pub fn job_ended(status: &str) {
    METRICS.jobs.with_label_values(&[status]).inc();
}

/// A build ended after `seconds`.
pub fn build_ended(status: &str, seconds: f64) {
    METRICS
        .build_duration
        .with_label_values(&[status])
        .observe(seconds);
}

/// Bytes moved through the job storage (`read` or `write`).
pub fn storage_bytes(direction: &str, bytes: u64) {
    METRICS
        .storage_bytes
        .with_label_values(&[direction])
        .inc_by(bytes);
}

/// The text exposition format of every metric.
pub fn render() -> String {
    let mut out = Vec::new();
    // Encoding into memory only fails on a metric the encoder cannot express: none here.
    let _ = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
