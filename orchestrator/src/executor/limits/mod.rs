//! Enforcing a worker's resources on this machine: its memory is capped at its limit, and it
//! sees only the GPUs it was granted.
//!
//! - The limit is HKube's: twice the request (`mem` plus the reserved memory) unless the
//!   operator configured another ratio (HKube's `USE_RESOURCE_LIMITS` makes it 1).
//! - Memory is capped by a cgroup per worker where the machine allows ([`cgroup`]: v2's
//!   `memory.max`, or v1's `memory.limit_in_bytes`; the kernel kills the worker at the limit),
//!   else by a watchdog on the RSS of the worker's process tree ([`watchdog`]: hkube kills the
//!   tree when the sum is over the limit). Either way the worker's end reads
//!   `exceeded its memory limit of 154Mi (OOM)` ([`Exit::OutOfMemory`]), its task crashes, and
//!   the engine retries it by the node's retry policy.
//! - GPUs: `CUDA_VISIBLE_DEVICES` names exactly the devices the pool granted; on a machine
//!   with GPUs a worker granted none sees none (an empty variable).
//!
//! What is decided ([`Limits`], the parsers in the submodules) is pure; [`MemoryGuard`] and
//! [`Armed`] do the IO. This module must never decide placement: the pool (or the scheduler)
//! grants the devices, this only applies the grant.

pub mod cgroup;
pub mod watchdog;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use builder::process::Exit;

use crate::scheduler::{GpuGrant, Node, Request};

/// HKube's default: a worker's memory limit is twice its request.
pub const DEFAULT_MEMORY_LIMIT_RATIO: u64 = 2;

/// How often the watchdog reads the process tree's memory.
pub const WATCHDOG_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up the worker's memory limit in cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("memory limits by cgroup were asked for, and this machine has none usable: {0}")]
    CgroupUnavailable(String),
}

/// What one worker may use, as applied at its start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    /// Its memory cap; `None`: none.
    pub memory_limit_bytes: Option<u64>,
    /// The GPUs it sees; `None`: the variable is left alone (the machine declares no GPUs);
    /// `Some(empty)`: it sees none.
    pub gpu_devices: Option<Vec<u32>>,
}

impl Limits {
    /// The limits of a worker placed on `node` with `gpu`: memory `ratio` × the request, and
    /// the granted devices (none visible when the node has GPUs and it was granted none).
    pub fn for_worker(request: &Request, gpu: &GpuGrant, node: &Node, ratio: u64) -> Limits {
        let memory_limit_bytes = (ratio > 0 && request.mem_mib > 0).then(|| {
            request
                .mem_mib
                .saturating_mul(ratio)
                .saturating_mul(1024 * 1024)
        });
        let gpu_devices = (!node.gpus.is_empty() || *gpu != GpuGrant::None).then(|| gpu.devices());
        Limits {
            memory_limit_bytes,
            gpu_devices,
        }
    }

    /// `CUDA_VISIBLE_DEVICES` for the worker: `0,1`, or empty for none.
    pub fn cuda_visible_devices(&self) -> Option<String> {
        self.gpu_devices.as_ref().map(|devices| {
            devices
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

/// How memory limits are enforced; [`Enforcement::Auto`] picks a cgroup where it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enforcement {
    #[default]
    Auto,
    /// A cgroup per worker, or a clear error at each worker start when none is usable.
    Cgroup,
    /// The RSS watchdog, even where cgroups are usable.
    Watchdog,
    /// No memory cap (the limits are still computed, and Docker still gets them).
    Off,
}

impl std::str::FromStr for Enforcement {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Enforcement::Auto),
            "cgroup" => Ok(Enforcement::Cgroup),
            "watchdog" => Ok(Enforcement::Watchdog),
            "off" => Ok(Enforcement::Off),
            other => Err(format!(
                "memory enforcement {other:?} is not one of auto, cgroup, watchdog, off"
            )),
        }
    }
}

/// How the limits of an executor's workers are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitOptions {
    /// A worker's memory limit is this many times its request (HKube: 2; 1 with
    /// `USE_RESOURCE_LIMITS`); 0: no memory limit.
    pub memory_ratio: u64,
    pub enforcement: Enforcement,
}

impl Default for LimitOptions {
    fn default() -> Self {
        LimitOptions {
            memory_ratio: DEFAULT_MEMORY_LIMIT_RATIO,
            enforcement: Enforcement::Auto,
        }
    }
}

/// The mechanism chosen for this machine, once per executor; cheap to clone.
#[derive(Debug, Clone)]
pub enum MemoryGuard {
    Cgroup(Arc<cgroup::Parent>),
    Watchdog,
    Off,
    /// A cgroup was asked for and none is usable: every worker start fails with the reason.
    Unavailable(String),
}

impl MemoryGuard {
    /// Picks the mechanism `enforcement` asks for on this machine.
    pub fn choose(enforcement: Enforcement) -> MemoryGuard {
        match enforcement {
            Enforcement::Off => MemoryGuard::Off,
            Enforcement::Watchdog => MemoryGuard::Watchdog,
            Enforcement::Auto => match cgroup::Parent::create() {
                Ok(parent) => MemoryGuard::Cgroup(Arc::new(parent)),
                Err(_) => MemoryGuard::Watchdog,
            },
            Enforcement::Cgroup => match cgroup::Parent::create() {
                Ok(parent) => MemoryGuard::Cgroup(Arc::new(parent)),
                Err(why) => MemoryGuard::Unavailable(why),
            },
        }
    }

    /// In words, for the server's start-up line and the docs.
    pub fn describe(&self) -> String {
        match self {
            MemoryGuard::Cgroup(parent) => parent.describe(),
            MemoryGuard::Watchdog => format!(
                "a watchdog on the RSS of each worker's process tree (every {} ms)",
                WATCHDOG_INTERVAL.as_millis()
            ),
            MemoryGuard::Off => "not enforced".to_string(),
            MemoryGuard::Unavailable(why) => format!("unavailable: {why}"),
        }
    }

    /// Prepares one worker's enforcement before its process starts: its cgroup exists and is
    /// limited (the process joins it before exec, see [`Armed::cgroup_path`]).
    pub fn arm(&self, limits: &Limits) -> Result<Armed, Error> {
        let Some(limit) = limits.memory_limit_bytes else {
            return Ok(Armed::default());
        };
        match self {
            MemoryGuard::Off => Ok(Armed::default()),
            MemoryGuard::Unavailable(why) => Err(Error::CgroupUnavailable(why.clone())),
            MemoryGuard::Watchdog => Ok(Armed {
                limit_bytes: limit,
                watchdog: Some(None),
                ..Armed::default()
            }),
            MemoryGuard::Cgroup(parent) => Ok(Armed {
                limit_bytes: limit,
                cgroup: Some(parent.worker(limit)?),
                ..Armed::default()
            }),
        }
    }
}

/// One worker's memory enforcement, from before its start to after its end.
#[derive(Debug, Default)]
pub struct Armed {
    limit_bytes: u64,
    cgroup: Option<cgroup::WorkerCgroup>,
    /// `Some(None)`: a watchdog is wanted and starts with the process.
    watchdog: Option<Option<watchdog::Watchdog>>,
}

impl Armed {
    /// The cgroup the process must join before exec, if any.
    pub fn cgroup_path(&self) -> Option<PathBuf> {
        self.cgroup.as_ref().map(|c| c.path().to_path_buf())
    }

    /// The process started as `pid` (the leader of its own process group).
    pub fn started(&mut self, pid: u32) {
        if let Some(slot @ None) = &mut self.watchdog {
            *slot = Some(watchdog::Watchdog::spawn(
                pid,
                self.limit_bytes,
                WATCHDOG_INTERVAL,
            ));
        }
    }

    /// How the worker ended, knowing its limit: an end the limit caused becomes
    /// [`Exit::OutOfMemory`]. Removes its cgroup (killing whatever is left in it).
    pub async fn verdict(self, exit: Exit) -> Exit {
        let mut over = false;
        if let Some(Some(watchdog)) = self.watchdog {
            over |= watchdog.finish();
        }
        if let Some(cgroup) = &self.cgroup {
            over |= cgroup.oom_killed();
            cgroup.remove().await;
        }
        // A stop we asked for stays a stop, even when the limit was hit on the way out.
        if over && !matches!(exit, Exit::Stopped { .. } | Exit::Code(0)) {
            Exit::OutOfMemory {
                limit_bytes: self.limit_bytes,
            }
        } else {
            exit
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::scheduler::Gpu;

    fn node(gpus: u32) -> Node {
        Node {
            name: "local".into(),
            cpu_millis: 2000,
            mem_mib: 8192,
            gpus: (0..gpus).map(|index| Gpu { index, mem_mib: 0 }).collect(),
        }
    }

    #[test]
    fn limits_follow_the_request_and_the_grant() {
        // mem 64Mi + 13Mi reserved, twice.
        let request = Request::new(0.1, 77.0, 1.0).unwrap();
        let cases: &[(GpuGrant, u32, u64, Option<&str>, u64)] = &[
            (GpuGrant::Whole(vec![1]), 2, 2, Some("1"), 154),
            (GpuGrant::Whole(vec![0, 1]), 2, 1, Some("0,1"), 77),
            (
                GpuGrant::Share {
                    device: 1,
                    hundredths: 50,
                },
                2,
                2,
                Some("1"),
                154,
            ),
            // A machine with GPUs hides them from a worker granted none.
            (GpuGrant::None, 2, 2, Some(""), 154),
            // Without GPUs the variable is left alone.
            (GpuGrant::None, 0, 2, None, 154),
        ];
        for (grant, gpus, ratio, visible, limit_mib) in cases {
            let limits = Limits::for_worker(&request, grant, &node(*gpus), *ratio);
            assert_eq!(
                limits.cuda_visible_devices().as_deref(),
                *visible,
                "{grant:?}"
            );
            assert_eq!(
                limits.memory_limit_bytes,
                Some(limit_mib << 20),
                "{grant:?}"
            );
        }
        let unlimited = Limits::for_worker(&request, &GpuGrant::None, &node(0), 0);
        assert_eq!(unlimited.memory_limit_bytes, None);
    }

    #[test]
    fn enforcement_is_named() {
        assert_eq!("watchdog".parse(), Ok(Enforcement::Watchdog));
        assert_eq!(
            "cgroups".parse::<Enforcement>().unwrap_err(),
            "memory enforcement \"cgroups\" is not one of auto, cgroup, watchdog, off"
        );
        // A cgroup asked for where none is usable: each worker start says so, none runs
        // without its cap.
        let limits = Limits {
            memory_limit_bytes: Some(1 << 30),
            gpu_devices: None,
        };
        let unavailable = MemoryGuard::Unavailable("no cgroup hierarchy is mounted".into());
        assert_eq!(
            unavailable.arm(&limits).unwrap_err().to_string(),
            "memory limits by cgroup were asked for, and this machine has none usable: no cgroup hierarchy is mounted"
        );
        // Without a limit there is nothing to enforce.
        assert!(unavailable.arm(&Limits::default()).is_ok());
    }

    #[tokio::test]
    async fn the_verdict_names_the_limit_only_for_an_end_the_limit_caused() {
        let guard = MemoryGuard::Watchdog;
        let limits = Limits {
            memory_limit_bytes: Some(1 << 20),
            gpu_devices: None,
        };
        // A process far over 1 MiB: the watchdog kills it.
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", "x = bytearray(64 << 20); import time; time.sleep(30)"])
            .spawn()
            .unwrap();
        let mut armed = guard.arm(&limits).unwrap();
        armed.started(child.id().unwrap());
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("the watchdog killed it")
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        let exit = armed.verdict(Exit::Signal(status.signal().unwrap())).await;
        assert_eq!(exit.to_string(), "exceeded its memory limit of 1Mi (OOM)");
        // Nothing over the limit: the exit is left as it was.
        let armed = guard.arm(&limits).unwrap();
        assert_eq!(armed.verdict(Exit::Code(3)).await, Exit::Code(3));
    }
}
