//! Resources as HKube defines them, in integer units so that sums never drift: cpu in
//! millicores, memory in MiB, GPUs in hundredths of a device (a request below one device
//! shares a device; one of one or more takes whole devices).
//!
//! Pure: what a request is, what a node has, what is free on it and whether a request fits.

use std::fmt;

use crate::spec::{self, Algorithm};

/// HKube's default reserved memory: a fifth of `mem` on top of it
/// (`defaultAlgorithmReservedMemoryRatio`).
pub const RESERVED_MEMORY_RATIO: f64 = 0.2;

/// A whole GPU, in the hundredths a request counts in.
pub const WHOLE_GPU: u32 = 100;

/// What one worker of an algorithm asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Request {
    pub cpu_millis: u32,
    /// `mem` plus the reserved memory: what the worker is placed by.
    pub mem_mib: u64,
    /// Hundredths of a GPU: 0 none, 1..=99 a share of one device, n·100 n whole devices.
    pub gpu_hundredths: u32,
}

impl Request {
    /// The request of `algorithm`'s workers: cpu, `mem` + reserved memory (HKube's 20 % when
    /// `reservedMemory` is unset), gpu. Refuses a gpu above one that is not whole: a worker
    /// takes whole devices or shares one.
    pub fn for_algorithm(algorithm: &Algorithm) -> Result<Request, String> {
        let mem = spec::parse_memory_mi(&algorithm.mem).map_err(|e| e.to_string())?;
        let reserved = match &algorithm.reserved_memory {
            Some(text) => spec::parse_memory_mi(text).map_err(|e| e.to_string())?,
            None => mem * RESERVED_MEMORY_RATIO,
        };
        let gpu = algorithm.gpu.unwrap_or(0.0);
        Request::new(algorithm.cpu, mem + reserved, gpu)
            .map_err(|why| format!("algorithm {}: {why}", algorithm.name))
    }

    /// cpu in cores, memory in MiB, gpu in devices.
    pub fn new(cpu: f64, mem_mib: f64, gpu: f64) -> Result<Request, String> {
        if !(cpu.is_finite() && cpu >= 0.0) {
            return Err(format!("cpu {cpu} must be a number of cores >= 0"));
        }
        if !(gpu.is_finite() && gpu >= 0.0) {
            return Err(format!("gpu {gpu} must be a number of devices >= 0"));
        }
        if gpu > 1.0 && gpu.fract() != 0.0 {
            return Err(format!(
                "gpu {gpu}: above one device a request must be whole (a share is below 1, such as 0.5)"
            ));
        }
        let gpu_hundredths = (gpu * 100.0).round() as u32;
        if gpu > 0.0 && gpu_hundredths == 0 {
            return Err(format!("gpu {gpu}: the smallest share of a device is 0.01"));
        }
        Ok(Request {
            cpu_millis: (cpu * 1000.0).round().min(u32::MAX as f64) as u32,
            mem_mib: mem_mib.ceil().max(0.0).min(u64::MAX as f64) as u64,
            gpu_hundredths,
        })
    }

    /// Whole devices asked for (0 for none or a share).
    pub fn whole_gpus(&self) -> u32 {
        if self.gpu_hundredths >= WHOLE_GPU {
            self.gpu_hundredths / WHOLE_GPU
        } else {
            0
        }
    }

    /// A share of one device, in hundredths (0 when none or whole devices).
    pub fn gpu_share(&self) -> u32 {
        if self.gpu_hundredths < WHOLE_GPU {
            self.gpu_hundredths
        } else {
            0
        }
    }

    /// HKube's limit rule: twice the request (the GPU is never multiplied).
    pub fn memory_limit_mib(&self) -> u64 {
        self.mem_mib.saturating_mul(2)
    }
}

/// A place workers run on: the machine for the local executor, a cluster node on Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub cpu_millis: u32,
    pub mem_mib: u64,
    /// The node's GPUs, each with its memory (MiB; 0 when unknown).
    pub gpus: Vec<Gpu>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gpu {
    /// The device's index as the machine numbers it (`CUDA_VISIBLE_DEVICES`).
    pub index: u32,
    pub mem_mib: u64,
}

/// What a worker holds on its node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    pub cpu_millis: u32,
    pub mem_mib: u64,
    pub gpu: GpuGrant,
}

/// The GPUs a worker was given, by device index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GpuGrant {
    #[default]
    None,
    /// Whole devices, no other worker uses them.
    Whole(Vec<u32>),
    /// A share (hundredths) of one device, which other shares may use too.
    Share { device: u32, hundredths: u32 },
}

impl GpuGrant {
    /// The devices a worker sees (`CUDA_VISIBLE_DEVICES`).
    pub fn devices(&self) -> Vec<u32> {
        match self {
            GpuGrant::None => Vec::new(),
            GpuGrant::Whole(devices) => devices.clone(),
            GpuGrant::Share { device, .. } => vec![*device],
        }
    }
}

/// What is free on one node, device by device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Free {
    pub cpu_millis: i64,
    pub mem_mib: i64,
    /// Per device (same order as the node's `gpus`): the hundredths in use.
    pub gpu_used: Vec<u32>,
}

impl Free {
    pub fn of(node: &Node) -> Free {
        Free {
            cpu_millis: i64::from(node.cpu_millis),
            mem_mib: node.mem_mib.min(i64::MAX as u64) as i64,
            gpu_used: vec![0; node.gpus.len()],
        }
    }

    fn device_slot(node: &Node, device: u32) -> Option<usize> {
        node.gpus.iter().position(|g| g.index == device)
    }

    /// Takes what `placement` holds (a worker on this node).
    pub fn take(&mut self, node: &Node, placement: &Placement) {
        self.cpu_millis -= i64::from(placement.cpu_millis);
        self.mem_mib -= placement.mem_mib.min(i64::MAX as u64) as i64;
        self.apply_gpu(node, &placement.gpu, true);
    }

    /// Gives back what `placement` held.
    pub fn give(&mut self, node: &Node, placement: &Placement) {
        self.cpu_millis += i64::from(placement.cpu_millis);
        self.mem_mib += placement.mem_mib.min(i64::MAX as u64) as i64;
        self.apply_gpu(node, &placement.gpu, false);
    }

    fn apply_gpu(&mut self, node: &Node, grant: &GpuGrant, take: bool) {
        let mut change = |device: u32, hundredths: u32| {
            if let Some(slot) = Self::device_slot(node, device) {
                let used = &mut self.gpu_used[slot];
                *used = if take {
                    used.saturating_add(hundredths)
                } else {
                    used.saturating_sub(hundredths)
                };
            }
        };
        match grant {
            GpuGrant::None => {}
            GpuGrant::Whole(devices) => devices.iter().for_each(|d| change(*d, WHOLE_GPU)),
            GpuGrant::Share { device, hundredths } => change(*device, *hundredths),
        }
    }

    /// Devices nobody uses.
    pub fn whole_free_gpus(&self) -> u32 {
        self.gpu_used.iter().filter(|used| **used == 0).count() as u32
    }

    /// The placement of `request` here, if it fits: whole devices are the lowest free ones; a
    /// share goes to the fullest device that still has room (shares pack, whole devices stay
    /// free for whole requests).
    pub fn fit(&self, node: &Node, request: &Request) -> Option<Placement> {
        if i64::from(request.cpu_millis) > self.cpu_millis
            || request.mem_mib.min(i64::MAX as u64) as i64 > self.mem_mib
        {
            return None;
        }
        let gpu = if request.whole_gpus() > 0 {
            let free: Vec<u32> = node
                .gpus
                .iter()
                .zip(&self.gpu_used)
                .filter(|(_, used)| **used == 0)
                .map(|(gpu, _)| gpu.index)
                .take(request.whole_gpus() as usize)
                .collect();
            if free.len() < request.whole_gpus() as usize {
                return None;
            }
            GpuGrant::Whole(free)
        } else if request.gpu_share() > 0 {
            let share = request.gpu_share();
            let device = node
                .gpus
                .iter()
                .zip(&self.gpu_used)
                .filter(|(_, used)| **used + share <= WHOLE_GPU)
                .max_by_key(|(gpu, used)| (**used, std::cmp::Reverse(gpu.index)))
                .map(|(gpu, _)| gpu.index)?;
            GpuGrant::Share {
                device,
                hundredths: share,
            }
        } else {
            GpuGrant::None
        };
        Some(Placement {
            cpu_millis: request.cpu_millis,
            mem_mib: request.mem_mib,
            gpu,
        })
    }

    /// The first resource `request` lacks here, in the order gpu, cpu, memory.
    pub fn shortfall(&self, node: &Node, request: &Request) -> Option<Resource> {
        let gpus_fit = if request.whole_gpus() > 0 {
            self.whole_free_gpus() >= request.whole_gpus()
        } else if request.gpu_share() > 0 {
            self.gpu_used
                .iter()
                .any(|used| used + request.gpu_share() <= WHOLE_GPU)
        } else {
            true
        };
        if !gpus_fit {
            return Some(Resource::Gpu);
        }
        if i64::from(request.cpu_millis) > self.cpu_millis {
            return Some(Resource::Cpu);
        }
        if request.mem_mib.min(i64::MAX as u64) as i64 > self.mem_mib {
            return Some(Resource::Memory);
        }
        let _ = node;
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Gpu,
    Cpu,
    Memory,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Gpu => "gpu",
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        })
    }
}

/// `2`, `0.5`, `1.25`: cores or devices from thousandths/hundredths, without noise.
pub fn amount(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The resource `resource` as `request` asks for it, in the user's units.
pub fn requested(resource: Resource, request: &Request) -> String {
    match resource {
        Resource::Gpu => amount(f64::from(request.gpu_hundredths) / 100.0),
        Resource::Cpu => amount(f64::from(request.cpu_millis) / 1000.0),
        Resource::Memory => format!("{}Mi", request.mem_mib),
    }
}

/// Why `request` can never run on any of `nodes`, if so: names the resource and the largest
/// node's amount. A request that some node could hold when empty is fine (it waits).
pub fn never_fits(algorithm: &str, request: &Request, nodes: &[Node]) -> Option<String> {
    let empty = |node: &Node| Free::of(node).fit(node, request).is_some();
    if nodes.iter().any(empty) {
        return None;
    }
    let largest_gpus = nodes.iter().map(|n| n.gpus.len()).max().unwrap_or(0);
    let largest_cpu = nodes.iter().map(|n| n.cpu_millis).max().unwrap_or(0);
    let largest_mem = nodes.iter().map(|n| n.mem_mib).max().unwrap_or(0);
    let gpu_possible = nodes.iter().any(|n| {
        let free = Free::of(n);
        free.shortfall(n, request) != Some(Resource::Gpu)
    });
    Some(if !gpu_possible {
        format!(
            "algorithm {algorithm} requests {} gpu; the largest node has {largest_gpus} (declare GPUs with --gpus)",
            requested(Resource::Gpu, request)
        )
    } else if u64::from(request.cpu_millis) > u64::from(largest_cpu) {
        format!(
            "algorithm {algorithm} requests {} cpu; the largest node has {} (declare more with --cpus)",
            requested(Resource::Cpu, request),
            amount(f64::from(largest_cpu) / 1000.0)
        )
    } else if request.mem_mib > largest_mem {
        format!(
            "algorithm {algorithm} requests {}Mi of memory (mem + reservedMemory); the largest node has {largest_mem}Mi (declare more with --memory)",
            request.mem_mib
        )
    } else {
        // Each resource fits some node, but no node holds them all at once.
        format!(
            "algorithm {algorithm} requests {} cpu, {}Mi of memory and {} gpu; no single node has all of them",
            requested(Resource::Cpu, request),
            request.mem_mib,
            requested(Resource::Gpu, request)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cpus: u32, mem_mib: u64, gpus: u32) -> Node {
        Node {
            name: "n".into(),
            cpu_millis: cpus * 1000,
            mem_mib,
            gpus: (0..gpus).map(|index| Gpu { index, mem_mib: 0 }).collect(),
        }
    }

    #[test]
    fn requests_in_hkube_units() {
        let cases: &[(f64, f64, f64, Result<Request, &str>)] = &[
            (0.1, 256.0, 0.0, Ok(Request { cpu_millis: 100, mem_mib: 256, gpu_hundredths: 0 })),
            (1.5, 307.2, 0.5, Ok(Request { cpu_millis: 1500, mem_mib: 308, gpu_hundredths: 50 })),
            (1.0, 1.0, 2.0, Ok(Request { cpu_millis: 1000, mem_mib: 1, gpu_hundredths: 200 })),
            (1.0, 1.0, 1.5, Err("gpu 1.5: above one device a request must be whole (a share is below 1, such as 0.5)")),
            (1.0, 1.0, 0.001, Err("gpu 0.001: the smallest share of a device is 0.01")),
            (-1.0, 1.0, 0.0, Err("cpu -1 must be a number of cores >= 0")),
        ];
        for (cpu, mem, gpu, expected) in cases {
            let got = Request::new(*cpu, *mem, *gpu);
            assert_eq!(
                got.as_ref().map_err(String::as_str),
                expected.as_ref().map_err(|e| *e),
                "{cpu} {mem} {gpu}"
            );
        }
    }

    #[test]
    fn an_algorithm_request_adds_reserved_memory() {
        let algorithm = spec::parse_algorithm(
            serde_json::json!({"name": "alg", "mem": "1Gi", "cpu": 0.5, "gpu": 1}),
        )
        .unwrap();
        let request = Request::for_algorithm(&algorithm).unwrap();
        assert_eq!(
            request,
            Request {
                cpu_millis: 500,
                mem_mib: 1229,
                gpu_hundredths: 100
            }
        );
        assert_eq!(request.memory_limit_mib(), 2458);
        let algorithm = spec::parse_algorithm(
            serde_json::json!({"name": "alg", "mem": "1Gi", "reservedMemory": "24Mi"}),
        )
        .unwrap();
        assert_eq!(Request::for_algorithm(&algorithm).unwrap().mem_mib, 1048);
    }

    #[test]
    fn shares_pack_and_whole_devices_stay_whole() {
        let n = node(8, 8192, 2);
        let mut free = Free::of(&n);
        let half = Request::new(0.1, 10.0, 0.5).unwrap();
        let first = free.fit(&n, &half).unwrap();
        assert_eq!(
            first.gpu,
            GpuGrant::Share {
                device: 0,
                hundredths: 50
            }
        );
        free.take(&n, &first);
        // The second share joins the first device, keeping device 1 whole.
        let second = free.fit(&n, &half).unwrap();
        assert_eq!(
            second.gpu,
            GpuGrant::Share {
                device: 0,
                hundredths: 50
            }
        );
        free.take(&n, &second);
        let whole = Request::new(0.1, 10.0, 1.0).unwrap();
        assert_eq!(free.fit(&n, &whole).unwrap().gpu, GpuGrant::Whole(vec![1]));
        let two = Request::new(0.1, 10.0, 2.0).unwrap();
        assert_eq!(free.fit(&n, &two), None);
        assert_eq!(free.shortfall(&n, &two), Some(Resource::Gpu));
        free.give(&n, &first);
        free.give(&n, &second);
        assert_eq!(free.fit(&n, &two).unwrap().gpu, GpuGrant::Whole(vec![0, 1]));
    }

    #[test]
    fn a_request_no_node_can_hold_is_named() {
        let nodes = [node(2, 4096, 0)];
        let gpu = Request::new(0.1, 256.0, 1.0).unwrap();
        assert_eq!(
            never_fits("range", &gpu, &nodes).unwrap(),
            "algorithm range requests 1 gpu; the largest node has 0 (declare GPUs with --gpus)"
        );
        let cpu = Request::new(4.0, 256.0, 0.0).unwrap();
        assert_eq!(
            never_fits("x", &cpu, &nodes).unwrap(),
            "algorithm x requests 4 cpu; the largest node has 2 (declare more with --cpus)"
        );
        let mem = Request::new(1.0, 8192.0, 0.0).unwrap();
        assert_eq!(
            never_fits("x", &mem, &nodes).unwrap(),
            "algorithm x requests 8192Mi of memory (mem + reservedMemory); the largest node has 4096Mi (declare more with --memory)"
        );
        // Exactly the whole node fits (HKube's GPU off-by-one refused it).
        let all = Request::new(2.0, 4096.0, 0.0).unwrap();
        assert_eq!(never_fits("x", &all, &nodes), None);
        let gpu_node = [node(2, 4096, 2)];
        assert_eq!(
            never_fits("x", &Request::new(0.1, 1.0, 2.0).unwrap(), &gpu_node),
            None
        );
    }
}
