//! A memory cgroup per worker: created and limited before the worker starts (its process
//! joins it before exec, see `builder::process::Spec::cgroup`), read after its end for an OOM
//! kill, and removed with whatever is left in it.
//!
//! Both hierarchies are supported, v2 first:
//! - v2: `<our cgroup>/hkube-<pid>-<n>/<worker>` with `memory.max`, `memory.swap.max = 0`
//!   and `memory.oom.group = 1` (the kernel ends the whole worker, not one of its processes);
//!   an OOM kill shows in `memory.events` as `oom_kill N`. Needs the memory controller
//!   delegated to our cgroup, which v2 allows only where our cgroup holds no process itself
//!   (the root, or a delegated subtree): otherwise v1 is tried, then the watchdog.
//! - v1: the same folders under the memory controller's mount, with `memory.limit_in_bytes`
//!   (and `memory.memsw.limit_in_bytes`, so swap cannot stretch it); an OOM kill shows in
//!   `memory.oom_control` as `oom_kill N`.
//!
//! Finding the hierarchy and reading the counters are pure functions of the text read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Where our own memory cgroup is: the folder and its hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ours {
    pub version: Version,
    pub dir: PathBuf,
}

/// Our memory cgroup's folders, from `/proc/self/mountinfo` and `/proc/self/cgroup`: the v2
/// one (when our cgroup has the memory controller, per `v2_controllers`) first, then v1's.
pub fn find_ours(
    mountinfo: &str,
    proc_cgroup: &str,
    v2_controllers: impl Fn(&Path) -> Option<String>,
) -> Vec<Ours> {
    let mut found = Vec::new();
    let mut v1 = None;
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = before.split(' ').collect();
        let after: Vec<&str> = after.split(' ').collect();
        let (Some(root), Some(mount)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        match after.first() {
            Some(&"cgroup2") => {
                let Some(path) = own_path(proc_cgroup, |controllers| controllers.is_empty()) else {
                    continue;
                };
                let dir = join_below(Path::new(mount), root, path);
                let has_memory = v2_controllers(&dir)
                    .is_some_and(|list| list.split_whitespace().any(|c| c == "memory"));
                if has_memory {
                    found.push(Ours {
                        version: Version::V2,
                        dir,
                    });
                }
            }
            Some(&"cgroup")
                if after
                    .get(2)
                    .is_some_and(|options| options.split(',').any(|o| o == "memory")) =>
            {
                if let Some(path) = own_path(proc_cgroup, |controllers| {
                    controllers.split(',').any(|c| c == "memory")
                }) {
                    v1 = Some(Ours {
                        version: Version::V1,
                        dir: join_below(Path::new(mount), root, path),
                    });
                }
            }
            _ => {}
        }
    }
    found.extend(v1);
    found
}

/// Our path in the hierarchy whose controller list (the second field) `matches`.
fn own_path(proc_cgroup: &str, matches: impl Fn(&str) -> bool) -> Option<&str> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        matches(controllers).then_some(path)
    })
}

/// `mount` shows the hierarchy from `root` down: our `path` (from the hierarchy's top) is
/// below it.
fn join_below(mount: &Path, root: &str, path: &str) -> PathBuf {
    let relative = path
        .strip_prefix(root)
        .unwrap_or(path)
        .trim_start_matches('/');
    if relative.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(relative)
    }
}

/// `oom_kill N` from v2's `memory.events` or v1's `memory.oom_control`.
pub fn oom_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == "oom_kill").then(|| value.trim().parse().ok())?
    })
}

/// This executor's folder of worker cgroups; removed when the last handle goes.
#[derive(Debug)]
pub struct Parent {
    version: Version,
    dir: PathBuf,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Parent {
    /// Finds our memory cgroup, and creates this executor's folder in it (v2, then v1).
    pub fn create() -> Result<Parent, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
        let candidates = find_ours(&mountinfo, &proc_cgroup, |mount| {
            std::fs::read_to_string(mount.join("cgroup.controllers")).ok()
        });
        if candidates.is_empty() {
            return Err("no cgroup hierarchy with the memory controller is mounted".into());
        }
        let name = format!(
            "hkube-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut reasons = Vec::new();
        for ours in candidates {
            remove_leftovers(&ours.dir);
            let parent = Parent {
                version: ours.version,
                dir: ours.dir.join(&name),
            };
            match parent.ensure(&ours.dir) {
                Ok(()) => return Ok(parent),
                Err(why) => reasons.push(why),
            }
        }
        Err(reasons.join("; "))
    }

    /// The folder exists with the memory controller available to its children.
    fn ensure(&self, ours: &Path) -> Result<(), String> {
        let write = |path: PathBuf, text: &str| {
            std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
        };
        if self.version == Version::V2 {
            let enabled =
                std::fs::read_to_string(ours.join("cgroup.subtree_control")).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == "memory") {
                write(ours.join("cgroup.subtree_control"), "+memory")?;
            }
        }
        match std::fs::create_dir(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("creating {}: {e}", self.dir.display())),
        }
        if self.version == Version::V2 {
            write(self.dir.join("cgroup.subtree_control"), "+memory")?;
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        let version = match self.version {
            Version::V1 => "v1",
            Version::V2 => "v2",
        };
        format!("a cgroup {version} per worker under {}", self.dir.display())
    }

    /// A new worker's cgroup, limited to `limit_bytes`.
    pub fn worker(&self, limit_bytes: u64) -> Result<WorkerCgroup, Error> {
        let path = self
            .dir
            .join(format!("worker-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        let failed = |source| Error::Cgroup {
            path: path.clone(),
            source,
        };
        // Another executor of this process may have removed an empty parent meanwhile.
        std::fs::create_dir_all(&path).map_err(failed)?;
        let limit = limit_bytes.to_string();
        let written = match self.version {
            Version::V2 => std::fs::write(path.join("memory.max"), &limit).map(|()| {
                // Without swap the limit is the limit; one OOM ends the whole worker.
                let _ = std::fs::write(path.join("memory.swap.max"), "0");
                let _ = std::fs::write(path.join("memory.oom.group"), "1");
            }),
            Version::V1 => std::fs::write(path.join("memory.limit_in_bytes"), &limit).map(|()| {
                // Absent where swap accounting is off: then there is no swap to stretch into.
                let _ = std::fs::write(path.join("memory.memsw.limit_in_bytes"), &limit);
            }),
        };
        if let Err(error) = written {
            let _ = std::fs::remove_dir(&path);
            return Err(failed(error));
        }
        Ok(WorkerCgroup {
            version: self.version,
            path,
        })
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        // Fails harmlessly while a worker's cgroup is still in it.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Folders of servers that are gone (`hkube-<pid>-<n>` of a pid that no longer runs) and
/// their empty worker cgroups.
fn remove_leftovers(ours: &Path) {
    let Ok(entries) = std::fs::read_dir(ours) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("hkube-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        if let Ok(workers) = std::fs::read_dir(entry.path()) {
            for worker in workers.flatten() {
                if worker.path().is_dir() {
                    let _ = std::fs::remove_dir(worker.path());
                }
            }
        }
        let _ = std::fs::remove_dir(entry.path());
    }
}

/// One worker's cgroup.
#[derive(Debug)]
pub struct WorkerCgroup {
    version: Version,
    path: PathBuf,
}

impl WorkerCgroup {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the kernel killed a process of it for its limit.
    pub fn oom_killed(&self) -> bool {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        std::fs::read_to_string(self.path.join(file))
            .ok()
            .and_then(|text| oom_kills(&text))
            .is_some_and(|kills| kills > 0)
    }

    /// Kills what is left in it (a process that left the worker's process group) and removes
    /// it; a cgroup is removable once its processes are reaped, which takes a moment.
    pub async fn remove(&self) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for WorkerCgroup {
    /// A worker that never started (its spawn failed) leaves no folder behind.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// This machine's hybrid layout (v1 memory, v2 without controllers), and a pure v2 one.
    #[test]
    fn finds_our_memory_cgroup() {
        let hybrid = "\
35 26 0:30 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw
36 26 0:31 / /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory
37 26 0:32 / /sys/fs/cgroup/cpu rw,relatime shared:16 - cgroup cgroup rw,cpu
";
        let proc_cgroup = "4:memory:/process_api/b48\n1:cpu:/\n0::/\n";
        let none = |_: &Path| Some("hugetlb\n".to_string());
        assert_eq!(
            find_ours(hybrid, proc_cgroup, none),
            vec![Ours {
                version: Version::V1,
                dir: "/sys/fs/cgroup/memory/process_api/b48".into()
            }]
        );
        let v2 = "30 25 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let memory = |_: &Path| Some("cpuset cpu io memory pids\n".to_string());
        assert_eq!(
            find_ours(v2, "0::/kubepods/pod1/hkube\n", memory),
            vec![Ours {
                version: Version::V2,
                dir: "/sys/fs/cgroup/hkube".into()
            }]
        );
        assert_eq!(find_ours(v2, "0::/\n", none), vec![]);
    }

    #[test]
    fn reads_oom_kills() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n";
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n";
        assert_eq!(oom_kills(v2), Some(1));
        assert_eq!(oom_kills(v1), Some(0));
        assert_eq!(oom_kills("max 3\n"), None);
    }

    /// On a machine whose cgroups are writable (root here and in CI): a process that joined a
    /// worker's cgroup and went over its limit is killed by the kernel, the OOM kill is
    /// counted, and the cgroup is removed.
    #[tokio::test]
    async fn a_process_over_its_cgroup_limit_is_killed_and_counted() {
        let parent = match Parent::create() {
            Ok(parent) => parent,
            Err(why) => {
                testkit::skip(None, &format!("no usable memory cgroup: {why}"));
                return;
            }
        };
        let cgroup = parent.worker(32 << 20).unwrap();
        let running = builder::process::Spec::new("python3")
            .args(["-c", "x = bytearray(256 << 20); print('survived')"])
            .cgroup(Some(cgroup.path().to_path_buf()))
            .spawn()
            .unwrap();
        let (exit, output) = running.output_tail(4096).await;
        assert_eq!(exit, builder::process::Exit::Signal(9), "{output}");
        assert!(cgroup.oom_killed());
        let path = cgroup.path().to_path_buf();
        cgroup.remove().await;
        assert!(!path.exists());
    }
}
