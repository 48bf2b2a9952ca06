//! A [`Store`] held in memory, for tests. Its definitions are a [`MemoryCatalog`], so lookups
//! behave exactly as the engine's own in-memory catalog.

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::{AlgorithmVersion, Error, Store};
use crate::engine::{Catalog, MemoryCatalog};
use crate::spec::{Algorithm, Pipeline};

#[derive(Debug, Default)]
pub struct MemoryStore {
    definitions: MemoryCatalog,
    /// Every algorithm's versions, oldest first.
    versions: RwLock<Vec<AlgorithmVersion>>,
    /// Build records, oldest first.
    builds: RwLock<Vec<serde_json::Value>>,
    /// Webhook delivery records, oldest first: (jobId, kind, record).
    webhooks: RwLock<Vec<(String, String, serde_json::Value)>>,
    /// The result cache: key → output.
    results: RwLock<BTreeMap<String, serde_json::Value>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::Backend("a writer panicked while holding the store".into())
}

/// The four writes, shared by algorithms and pipelines.
fn create<T>(
    map: &RwLock<BTreeMap<String, T>>,
    kind: &'static str,
    name: String,
    value: T,
) -> Result<(), Error> {
    let mut map = map.write().map_err(poisoned)?;
    if map.contains_key(&name) {
        return Err(Error::Exists { kind, name });
    }
    map.insert(name, value);
    Ok(())
}

fn replace<T>(
    map: &RwLock<BTreeMap<String, T>>,
    kind: &'static str,
    name: String,
    value: T,
) -> Result<(), Error> {
    let mut map = map.write().map_err(poisoned)?;
    match map.get_mut(&name) {
        Some(slot) => {
            *slot = value;
            Ok(())
        }
        None => Err(Error::NotFound { kind, name }),
    }
}

fn delete<T>(
    map: &RwLock<BTreeMap<String, T>>,
    kind: &'static str,
    name: &str,
) -> Result<(), Error> {
    let mut map = map.write().map_err(poisoned)?;
    match map.remove(name) {
        Some(_) => Ok(()),
        None => Err(Error::NotFound {
            kind,
            name: name.to_string(),
        }),
    }
}

fn list<T: Clone>(map: &RwLock<BTreeMap<String, T>>) -> Result<Vec<T>, Error> {
    Ok(map.read().map_err(poisoned)?.values().cloned().collect())
}

impl Catalog for MemoryStore {
    fn algorithm(&self, name: &str) -> Option<Algorithm> {
        self.definitions.algorithm(name)
    }

    fn pipeline(&self, name: &str) -> Option<Pipeline> {
        self.definitions.pipeline(name)
    }

    fn triggered_by(&self, parent: &str) -> Vec<Pipeline> {
        self.definitions.triggered_by(parent)
    }
}

impl Store for MemoryStore {
    fn algorithms(&self) -> Result<Vec<Algorithm>, Error> {
        list(&self.definitions.algorithms)
    }

    fn create_algorithm(&self, algorithm: Algorithm) -> Result<(), Error> {
        create(
            &self.definitions.algorithms,
            "algorithm",
            algorithm.name.clone(),
            algorithm,
        )
    }

    fn replace_algorithm(&self, algorithm: Algorithm) -> Result<(), Error> {
        replace(
            &self.definitions.algorithms,
            "algorithm",
            algorithm.name.clone(),
            algorithm,
        )
    }

    fn put_algorithm(&self, algorithm: Algorithm) -> Result<(), Error> {
        let mut map = self.definitions.algorithms.write().map_err(poisoned)?;
        map.insert(algorithm.name.clone(), algorithm);
        Ok(())
    }

    fn delete_algorithm(&self, name: &str) -> Result<(), Error> {
        delete(&self.definitions.algorithms, "algorithm", name)
    }

    fn pipelines(&self) -> Result<Vec<Pipeline>, Error> {
        list(&self.definitions.pipelines)
    }

    fn create_pipeline(&self, pipeline: Pipeline) -> Result<(), Error> {
        create(
            &self.definitions.pipelines,
            "pipeline",
            pipeline.name.clone(),
            pipeline,
        )
    }

    fn replace_pipeline(&self, pipeline: Pipeline) -> Result<(), Error> {
        replace(
            &self.definitions.pipelines,
            "pipeline",
            pipeline.name.clone(),
            pipeline,
        )
    }

    fn delete_pipeline(&self, name: &str) -> Result<(), Error> {
        delete(&self.definitions.pipelines, "pipeline", name)
    }

    fn algorithm_versions(&self, name: &str) -> Result<Vec<AlgorithmVersion>, Error> {
        let versions = self.versions.read().map_err(poisoned)?;
        Ok(versions
            .iter()
            .rev()
            .filter(|v| v.name == name)
            .cloned()
            .collect())
    }

    fn add_algorithm_version(&self, version: AlgorithmVersion) -> Result<AlgorithmVersion, Error> {
        let mut versions = self.versions.write().map_err(poisoned)?;
        let latest = versions
            .iter()
            .rev()
            .find(|v| v.name == version.name)
            .map(|v| v.semver.as_str());
        let version = version.numbered_after(latest);
        versions.push(version.clone());
        Ok(version)
    }

    fn delete_algorithm_version(&self, name: &str, version: &str) -> Result<(), Error> {
        let mut versions = self.versions.write().map_err(poisoned)?;
        let before = versions.len();
        versions.retain(|v| !(v.name == name && v.version == version));
        if versions.len() == before {
            return Err(Error::NotFound {
                kind: "version",
                name: version.to_string(),
            });
        }
        Ok(())
    }

    fn delete_algorithm_versions(&self, name: &str) -> Result<usize, Error> {
        let mut versions = self.versions.write().map_err(poisoned)?;
        let before = versions.len();
        versions.retain(|v| v.name != name);
        Ok(before - versions.len())
    }

    fn add_webhook_record(
        &self,
        job_id: &str,
        kind: &str,
        record: &serde_json::Value,
    ) -> Result<(), Error> {
        let mut records = self.webhooks.write().map_err(poisoned)?;
        records.push((job_id.to_string(), kind.to_string(), record.clone()));
        Ok(())
    }

    fn cached_result(&self, key: &str) -> Option<serde_json::Value> {
        self.results.read().ok()?.get(key).cloned()
    }

    fn put_cached_result(
        &self,
        key: &str,
        _job_id: &str,
        output: &serde_json::Value,
    ) -> Result<(), Error> {
        let mut results = self.results.write().map_err(poisoned)?;
        results
            .entry(key.to_string())
            .or_insert_with(|| output.clone());
        Ok(())
    }

    fn clear_result_cache(&self) -> Result<usize, Error> {
        let mut results = self.results.write().map_err(poisoned)?;
        let count = results.len();
        results.clear();
        Ok(count)
    }

    fn webhook_records(&self, job_id: &str) -> Result<Vec<(String, serde_json::Value)>, Error> {
        let records = self.webhooks.read().map_err(poisoned)?;
        Ok(records
            .iter()
            .filter(|(job, _, _)| job == job_id)
            .map(|(_, kind, record)| (kind.clone(), record.clone()))
            .collect())
    }

    fn put_build(&self, build: &serde_json::Value) -> Result<(), Error> {
        let mut builds = self.builds.write().map_err(poisoned)?;
        match builds.iter_mut().find(|b| b["buildId"] == build["buildId"]) {
            Some(stored) => *stored = build.clone(),
            None => builds.push(build.clone()),
        }
        Ok(())
    }

    fn build(&self, build_id: &str) -> Option<serde_json::Value> {
        let builds = self.builds.read().ok()?;
        builds.iter().find(|b| b["buildId"] == build_id).cloned()
    }

    fn builds(&self, algorithm: &str) -> Result<Vec<serde_json::Value>, Error> {
        let builds = self.builds.read().map_err(poisoned)?;
        Ok(builds
            .iter()
            .filter(|b| b["algorithmName"] == algorithm)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::spec;
    use serde_json::json;

    fn pipeline(name: &str, triggered_by: Option<&str>) -> Pipeline {
        let mut body = json!({"name": name, "nodes": [{"nodeName": "A", "algorithmName": "echo"}]});
        if let Some(parent) = triggered_by {
            body["triggers"] = json!({"pipelines": [parent]});
        }
        spec::parse_pipeline(body).unwrap()
    }

    #[test]
    fn writes_refuse_what_exists_or_is_missing() {
        let store = MemoryStore::new();
        store.create_pipeline(pipeline("p", None)).unwrap();
        assert_eq!(
            store
                .create_pipeline(pipeline("p", None))
                .unwrap_err()
                .to_string(),
            "pipeline p already exists"
        );
        assert_eq!(
            store
                .replace_pipeline(pipeline("q", None))
                .unwrap_err()
                .to_string(),
            "pipeline q Not Found"
        );
        store.replace_pipeline(pipeline("p", Some("x"))).unwrap();
        assert_eq!(store.triggered_by("x").len(), 1);
        store.delete_pipeline("p").unwrap();
        assert_eq!(
            store.delete_pipeline("p").unwrap_err().to_string(),
            "pipeline p Not Found"
        );

        let algorithm =
            spec::parse_algorithm(json!({"name": "a1", "algorithmImage": "img"})).unwrap();
        store.create_algorithm(algorithm.clone()).unwrap();
        assert_eq!(
            store
                .create_algorithm(algorithm.clone())
                .unwrap_err()
                .to_string(),
            "algorithm a1 already exists"
        );
        assert_eq!(store.algorithms().unwrap().len(), 1);
        assert!(store.algorithm("a1").is_some());
        store.delete_algorithm("a1").unwrap();
        assert_eq!(
            store.delete_algorithm("a1").unwrap_err().to_string(),
            "algorithm a1 Not Found"
        );
    }
}
