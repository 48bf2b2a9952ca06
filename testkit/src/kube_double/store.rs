//! The double's objects and their history: one resourceVersion counter for everything (as
//! etcd's revision), every change kept so a watch can resume from any version a list gave
//! (short tests never see `410 Gone`), and the open watches fed under the same lock as the
//! change, so a watch started from a list's version misses nothing and sees nothing twice.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Where an object lives: its resource (`pods`), namespace (empty when cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

/// One change, as a watch sends it.
#[derive(Debug, Clone)]
pub struct Event {
    pub revision: u64,
    pub resource: String,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
    /// A MODIFIED event's object before the change: a watch with a selector sees an object
    /// that stops matching as DELETED, one that starts matching as ADDED.
    pub previous: Option<Value>,
}

struct Watcher {
    resource: String,
    /// `None`: every namespace.
    namespace: Option<String>,
    sender: mpsc::UnboundedSender<Event>,
}

#[derive(Default)]
struct Inner {
    revision: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Event>,
    watchers: Vec<Watcher>,
}

/// The objects; shared by the API, the scheduler and the kubelet.
#[derive(Default)]
pub struct Store {
    inner: Mutex<Inner>,
    /// Signalled on every change, for tests that wait for a state.
    changed: Condvar,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    AlreadyExists,
    NotFound,
    /// The object's resourceVersion is not the stored one.
    Conflict,
    /// The object is not one the server can store (no name).
    Invalid(String),
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn random_suffix(length: usize) -> String {
    use rand::Rng;
    // The real server's alphabet for generateName: no vowels, no look-alikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..length)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn uid() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let hex: String = (0..16)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

impl Inner {
    fn record(
        &mut self,
        resource: &str,
        namespace: &str,
        kind: &'static str,
        object: Value,
        previous: Option<Value>,
    ) {
        let event = Event {
            revision: self.revision,
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            kind,
            object,
            previous,
        };
        self.watchers.retain(|watcher| {
            let wanted = watcher.resource == event.resource
                && watcher
                    .namespace
                    .as_ref()
                    .is_none_or(|ns| *ns == event.namespace);
            !wanted || watcher.sender.send(event.clone()).is_ok()
        });
        self.watchers.retain(|watcher| !watcher.sender.is_closed());
        self.history.push(event);
    }

    fn bump(&mut self, object: &mut Value) {
        self.revision += 1;
        object["metadata"]["resourceVersion"] = json!(self.revision.to_string());
    }
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current revision (a list's `metadata.resourceVersion`).
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// Stores a new object: names it from `generateName` if it has no name, gives it a uid,
    /// a resourceVersion and a creation time, and lets `prepare` fill defaults (a pod's
    /// status).
    pub fn create(
        &self,
        resource: &str,
        namespace: &str,
        mut object: Value,
        prepare: impl FnOnce(&mut Value),
    ) -> Result<Value, (Refused, String)> {
        let mut inner = self.lock();
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let metadata = &mut object["metadata"];
        if metadata["name"].as_str().is_none_or(str::is_empty) {
            let Some(prefix) = metadata["generateName"].as_str() else {
                let why = "metadata.name or metadata.generateName is required".to_string();
                return Err((Refused::Invalid(why), String::new()));
            };
            metadata["name"] = json!(format!("{prefix}{}", random_suffix(5)));
        }
        let name = metadata["name"].as_str().unwrap_or_default().to_string();
        let key = Key {
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            name: name.clone(),
        };
        if inner.objects.contains_key(&key) {
            return Err((Refused::AlreadyExists, name));
        }
        if !namespace.is_empty() {
            metadata["namespace"] = json!(namespace);
        }
        metadata["uid"] = json!(uid());
        metadata["creationTimestamp"] = json!(now());
        if let Some(map) = metadata.as_object_mut() {
            map.remove("resourceVersion");
        }
        prepare(&mut object);
        inner.bump(&mut object);
        inner.objects.insert(key, object.clone());
        inner.record(resource, namespace, "ADDED", object.clone(), None);
        drop(inner);
        self.changed.notify_all();
        Ok(object)
    }

    pub fn get(&self, key: &Key) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// Every object of a resource (in one namespace, or all), by namespace and name, with
    /// the revision they are current at.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|(key, _)| {
                key.resource == resource && namespace.is_none_or(|ns| key.namespace == ns)
            })
            .map(|(_, object)| object.clone())
            .collect();
        (items, inner.revision)
    }

    /// Changes an object in place (a MODIFIED event); `None` when it is gone. `change`
    /// returns false to leave it as it was (no event).
    pub fn update(&self, key: &Key, change: impl FnOnce(&mut Value) -> bool) -> Option<Value> {
        let mut inner = self.lock();
        let previous = inner.objects.get(key)?.clone();
        let mut object = previous.clone();
        if !change(&mut object) {
            return Some(object);
        }
        inner.bump(&mut object);
        inner.objects.insert(key.clone(), object.clone());
        inner.record(
            &key.resource,
            &key.namespace,
            "MODIFIED",
            object.clone(),
            Some(previous),
        );
        drop(inner);
        self.changed.notify_all();
        Some(object)
    }

    /// Replaces an object (PUT): its resourceVersion, when given, must be the stored one.
    pub fn replace(&self, key: &Key, mut object: Value) -> Result<Value, Refused> {
        let mut inner = self.lock();
        let stored = inner.objects.get(key).ok_or(Refused::NotFound)?.clone();
        let given = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !given.is_empty() && given != stored["metadata"]["resourceVersion"] {
            return Err(Refused::Conflict);
        }
        // What the server owns stays the server's.
        for field in ["uid", "creationTimestamp", "namespace", "name"] {
            object["metadata"][field] = stored["metadata"][field].clone();
        }
        inner.bump(&mut object);
        inner.objects.insert(key.clone(), object.clone());
        inner.record(
            &key.resource,
            &key.namespace,
            "MODIFIED",
            object.clone(),
            Some(stored),
        );
        drop(inner);
        self.changed.notify_all();
        Ok(object)
    }

    /// Removes an object (a DELETED event carrying its last state at a new version).
    pub fn remove(&self, key: &Key) -> Option<Value> {
        let mut inner = self.lock();
        let mut object = inner.objects.remove(key)?;
        inner.bump(&mut object);
        inner.record(
            &key.resource,
            &key.namespace,
            "DELETED",
            object.clone(),
            None,
        );
        drop(inner);
        self.changed.notify_all();
        Some(object)
    }

    /// Opens a watch: the events it must send first, and the channel of what follows.
    /// From `since`, the first events are the recorded changes after it; with no version,
    /// every current object as ADDED (the real server's "0"/unset semantics).
    pub fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> (Vec<Event>, mpsc::UnboundedReceiver<Event>, u64) {
        let mut inner = self.lock();
        let wanted = |r: &str, ns: &str| r == resource && namespace.is_none_or(|n| n == ns);
        let first = match since {
            Some(since) => inner
                .history
                .iter()
                .filter(|e| e.revision > since && wanted(&e.resource, &e.namespace))
                .cloned()
                .collect(),
            None => inner
                .objects
                .iter()
                .filter(|(key, _)| wanted(&key.resource, &key.namespace))
                .map(|(key, object)| Event {
                    revision: inner.revision,
                    resource: key.resource.clone(),
                    namespace: key.namespace.clone(),
                    kind: "ADDED",
                    object: object.clone(),
                    previous: None,
                })
                .collect(),
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        inner.watchers.push(Watcher {
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
            sender,
        });
        (first, receiver, inner.revision)
    }

    /// Waits until `check` finds what it looks for in the objects, or `timeout` passes.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&BTreeMap<Key, Value>) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            if let Some(found) = check(&inner.objects) {
                return Some(found);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Closes every watch (the server is stopping).
    pub fn close_watches(&self) {
        self.lock().watchers.clear();
    }
}

/// The time now, as the API writes timestamps.
pub fn timestamp() -> String {
    now()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name}})
    }

    #[test]
    fn a_watch_from_a_lists_version_sees_exactly_what_came_after() {
        let store = Store::default();
        store.create("pods", "ns", pod("a"), |_| {}).unwrap();
        let (items, version) = store.list("pods", Some("ns"));
        assert_eq!(items.len(), 1);
        store.create("pods", "ns", pod("b"), |_| {}).unwrap();
        store.create("pods", "other", pod("c"), |_| {}).unwrap();
        let (first, mut rest, _) = store.watch("pods", Some("ns"), Some(version));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].object["metadata"]["name"], "b");
        let key = Key {
            resource: "pods".into(),
            namespace: "ns".into(),
            name: "a".into(),
        };
        store.remove(&key).unwrap();
        let deleted = rest.try_recv().unwrap();
        assert_eq!((deleted.kind, deleted.revision), ("DELETED", version + 3));
        assert!(rest.try_recv().is_err());
        let error = store.create("pods", "ns", pod("b"), |_| {}).unwrap_err();
        assert_eq!(error.0, Refused::AlreadyExists);
    }

    #[test]
    fn generate_name_and_stale_replaces() {
        let store = Store::default();
        let made = store
            .create(
                "pods",
                "ns",
                json!({"metadata": {"generateName": "w-"}}),
                |_| {},
            )
            .unwrap();
        let name = made["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("w-") && name.len() == 7, "{name}");
        let key = Key {
            resource: "pods".into(),
            namespace: "ns".into(),
            name: name.into(),
        };
        let mut stale = made.clone();
        store.update(&key, |_| true).unwrap();
        stale["spec"] = json!({});
        assert_eq!(store.replace(&key, stale), Err(Refused::Conflict));
    }
}
