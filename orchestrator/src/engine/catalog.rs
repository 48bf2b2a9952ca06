//! What the engine looks up when a job is submitted: stored algorithms and pipelines.
//!
//! The engine reads the catalog; it never writes it. The SQLite store implements this trait
//! for the server; [`MemoryCatalog`] serves tests, benchmarks and `hkube run`.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::spec::{Algorithm, Pipeline};

pub trait Catalog: Send + Sync + 'static {
    fn algorithm(&self, name: &str) -> Option<Algorithm>;
    fn pipeline(&self, name: &str) -> Option<Pipeline>;
    /// Stored pipelines whose `triggers.pipelines` names `parent`, in name order.
    fn triggered_by(&self, parent: &str) -> Vec<Pipeline>;
}

/// A catalog held in memory.
#[derive(Debug, Default)]
pub struct MemoryCatalog {
    // The in-memory store keeps its definitions here too and writes these maps itself.
    pub(crate) algorithms: RwLock<BTreeMap<String, Algorithm>>,
    pub(crate) pipelines: RwLock<BTreeMap<String, Pipeline>>,
}

impl MemoryCatalog {
    pub fn new() -> Self {
        MemoryCatalog::default()
    }

    pub fn put_algorithm(&self, algorithm: Algorithm) {
        if let Ok(mut algorithms) = self.algorithms.write() {
            algorithms.insert(algorithm.name.clone(), algorithm);
        }
    }

    pub fn put_pipeline(&self, pipeline: Pipeline) {
        if let Ok(mut pipelines) = self.pipelines.write() {
            pipelines.insert(pipeline.name.clone(), pipeline);
        }
    }
}

impl Catalog for MemoryCatalog {
    fn algorithm(&self, name: &str) -> Option<Algorithm> {
        self.algorithms.read().ok()?.get(name).cloned()
    }

    fn pipeline(&self, name: &str) -> Option<Pipeline> {
        self.pipelines.read().ok()?.get(name).cloned()
    }

    fn triggered_by(&self, parent: &str) -> Vec<Pipeline> {
        let Ok(pipelines) = self.pipelines.read() else {
            return Vec::new();
        };
        pipelines
            .values()
            .filter(|p| p.is_triggered_by(parent))
            .cloned()
            .collect()
    }
}
