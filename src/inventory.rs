//! `--cpus`, `--memory`, `--gpus` (`HKUBE_CPUS`, `HKUBE_MEMORY`, `HKUBE_GPUS`): what workers of
//! the local executor may use in all, replacing what the machine reports; `--memory-limits`
//! and `--memory-limit-ratio`: how each worker's memory is capped. Shared by `hkube run` and
//! `hkube server`.

use anyhow::bail;
use orchestrator::executor::limits::{Enforcement, LimitOptions};
use orchestrator::executor::local::inventory::{local_node, Overrides};
use orchestrator::scheduler::Node;

#[derive(Debug, Clone, clap::Args)]
pub struct InventoryArgs {
    /// Cores all workers may ask for together (fractions allowed). Default: this machine's.
    #[arg(long, env = "HKUBE_CPUS", value_name = "CORES")]
    cpus: Option<f64>,
    /// Memory all workers may ask for together, in HKube's units (16Gi, 512Mi). Default: this
    /// machine's.
    #[arg(long, env = "HKUBE_MEMORY", value_name = "MEMORY")]
    memory: Option<String>,
    /// GPUs workers may be given, numbered 0..N. Default: those nvidia-smi lists (none
    /// without it).
    #[arg(long, env = "HKUBE_GPUS", value_name = "N")]
    gpus: Option<u32>,
    /// How a worker's memory limit is enforced: auto (a cgroup per worker where this machine
    /// allows, else a watchdog on its processes' RSS), cgroup, watchdog, or off.
    #[arg(
        long,
        env = "HKUBE_MEMORY_LIMITS",
        value_name = "HOW",
        default_value = "auto"
    )]
    memory_limits: Enforcement,
    /// A worker's memory limit as a multiple of its request (mem + reservedMemory): HKube's
    /// 2, or 1 as with HKube's USE_RESOURCE_LIMITS; 0 sets no limit.
    #[arg(
        long,
        env = "HKUBE_MEMORY_LIMIT_RATIO",
        value_name = "N",
        default_value_t = 2
    )]
    memory_limit_ratio: u64,
}

impl InventoryArgs {
    /// This machine as the scheduler's node, with the flags applied.
    pub fn node(&self) -> anyhow::Result<Node> {
        if let Some(cpus) = self.cpus {
            if !(cpus.is_finite() && cpus > 0.0) {
                bail!("--cpus {cpus}: give a number of cores above 0, such as 2 or 0.5");
            }
        }
        let memory_mib = match &self.memory {
            None => None,
            Some(text) => {
                let mib = orchestrator::spec::parse_memory_mi(text)
                    .map_err(|e| anyhow::anyhow!("--memory {text}: {e}, such as 16Gi"))?;
                if mib < 1.0 {
                    bail!("--memory {text}: give at least 1Mi, such as 16Gi");
                }
                Some(mib as u64)
            }
        };
        Ok(local_node(&Overrides {
            cpus: self.cpus,
            memory_mib,
            gpus: self.gpus,
        }))
    }

    /// How workers' memory is capped.
    pub fn limits(&self) -> LimitOptions {
        LimitOptions {
            memory_ratio: self.memory_limit_ratio,
            enforcement: self.memory_limits,
        }
    }
}
