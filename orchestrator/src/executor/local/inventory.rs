//! The local executor's inventory: this machine as the scheduler's one node (its cores, its
//! memory, its GPUs from `nvidia-smi` when present), each overridable (`--cpus`, `--memory`,
//! `--gpus`).
//!
//! Reading the machine is IO; turning what was read into a [`Node`] is pure and tested with
//! recorded text.

use std::process::Command;
use std::time::Duration;

use crate::scheduler::{Gpu, Node};

/// What a user declared, each replacing what the machine says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Cores (fractions allowed).
    pub cpus: Option<f64>,
    /// MiB.
    pub memory_mib: Option<u64>,
    /// GPUs: this many devices numbered 0..n (their memory unknown), replacing those found.
    pub gpus: Option<u32>,
}

/// This machine as a node, with `overrides` applied.
pub fn local_node(overrides: &Overrides) -> Node {
    let cpus = overrides
        .cpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64));
    let memory_mib = overrides.memory_mib.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total_mib(&text))
            .unwrap_or(4096)
    });
    let gpus = match overrides.gpus {
        Some(count) => (0..count).map(|index| Gpu { index, mem_mib: 0 }).collect(),
        None => nvidia_smi()
            .map(|text| parse_gpus(&text))
            .unwrap_or_default(),
    };
    Node {
        name: "local".into(),
        cpu_millis: (cpus * 1000.0).round().clamp(0.0, u32::MAX as f64) as u32,
        mem_mib: memory_mib,
        gpus,
    }
}

/// `MemTotal:  24592112 kB` → MiB.
fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// `nvidia-smi`'s CSV of the devices, when it is installed and answers within a few seconds.
fn nvidia_smi() -> Option<String> {
    let mut child = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    // A wedged driver can hang nvidia-smi: never let it hold up a start.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut text).ok()?;
    Some(text)
}

/// `0, 81559` per line → devices.
fn parse_gpus(csv: &str) -> Vec<Gpu> {
    csv.lines()
        .filter_map(|line| {
            let mut fields = line.split(',').map(str::trim);
            let index = fields.next()?.parse().ok()?;
            let mem_mib = fields.next().and_then(|m| m.parse().ok()).unwrap_or(0);
            Some(Gpu { index, mem_mib })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_and_gpus_as_the_machine_reports_them() {
        let meminfo = "MemTotal:       24592112 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_mib(meminfo), Some(24015));
        assert_eq!(mem_total_mib("nothing"), None);
        let csv = "0, 81559\n1, 81559\nnot a line\n";
        assert_eq!(
            parse_gpus(csv),
            vec![
                Gpu {
                    index: 0,
                    mem_mib: 81559
                },
                Gpu {
                    index: 1,
                    mem_mib: 81559
                }
            ]
        );
    }

    #[test]
    fn overrides_replace_what_the_machine_says() {
        let node = local_node(&Overrides {
            cpus: Some(1.5),
            memory_mib: Some(2048),
            gpus: Some(2),
        });
        assert_eq!(node.cpu_millis, 1500);
        assert_eq!(node.mem_mib, 2048);
        assert_eq!(
            node.gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
            vec![0, 1]
        );
        let machine = local_node(&Overrides::default());
        assert!(machine.cpu_millis >= 1000 && machine.mem_mib > 0);
    }
}
