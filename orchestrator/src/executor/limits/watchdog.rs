//! The memory cap where no cgroup is usable: every interval, the RSS of the worker's process
//! tree is summed from `/proc`, and a tree over its limit is killed (SIGKILL to each process).
//! One scanner thread serves every watched worker of the process.
//!
//! The tree is the worker's descendants by parent pid, plus the members of its process group
//! (a helper whose parent exited is reparented away, but stays in the group). Unlike a cgroup,
//! this is late by up to one interval: a process allocating fast can go past the limit for
//! that long before it is killed. Reading and deciding are pure ([`parse_stat`], [`tree`]);
//! the loop does the IO.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// What the watchdog needs of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
}

/// `/proc/<pid>/stat`: the pid, then the command in parentheses (which may hold spaces and
/// parentheses itself), then the state, the parent pid and the process group.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (pid, rest) = text.split_once(" (")?;
    let (_, fields) = rest.rsplit_once(") ")?;
    let mut fields = fields.split_whitespace().skip(1);
    Some(ProcStat {
        pid: pid.trim().parse().ok()?,
        ppid: fields.next()?.parse().ok()?,
        pgrp: fields.next()?.parse().ok()?,
    })
}

/// `VmRSS:  1234 kB` from `/proc/<pid>/status`, in bytes (absent for a zombie).
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The processes of `root`'s tree: itself, its descendants, and its process group's members
/// when it leads one.
pub fn tree(processes: &[ProcStat], root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for process in processes {
        children.entry(process.ppid).or_default().push(process.pid);
    }
    let mut members: HashSet<u32> = HashSet::new();
    let mut stack = vec![root];
    // A group of its own (the process runner's children lead theirs): its members are ours.
    if processes.iter().any(|p| p.pid == root && p.pgrp == root) {
        stack.extend(processes.iter().filter(|p| p.pgrp == root).map(|p| p.pid));
    }
    while let Some(pid) = stack.pop() {
        if members.insert(pid) {
            stack.extend(children.get(&pid).into_iter().flatten());
        }
    }
    let mut members: Vec<u32> = members.into_iter().collect();
    members.sort_unstable();
    members
}

/// One process tree under watch.
#[derive(Debug)]
struct Watched {
    root: u32,
    limit_bytes: u64,
    tripped: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

/// Every watched tree, read by one scanner thread: one pass over `/proc` per interval serves
/// all workers (a pass per worker would cost a core on a busy machine).
static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());
static WAKE: Condvar = Condvar::new();
static SCANNER: OnceLock<()> = OnceLock::new();

/// A watch over one process tree.
#[derive(Debug)]
pub struct Watchdog {
    tripped: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl Watchdog {
    /// Watches `root`'s tree every `interval` (the first caller's interval is the scanner's)
    /// and kills it when its RSS is over `limit_bytes`.
    pub fn spawn(root: u32, limit_bytes: u64, interval: Duration) -> Watchdog {
        let tripped = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        SCANNER.get_or_init(|| {
            let _ = std::thread::Builder::new()
                .name("hkube-memory-watchdog".into())
                .spawn(move || scan_forever(interval));
        });
        if let Ok(mut watched) = WATCHED.lock() {
            watched.push(Watched {
                root,
                limit_bytes,
                tripped: tripped.clone(),
                done: done.clone(),
            });
        }
        WAKE.notify_one();
        Watchdog { tripped, done }
    }

    /// Stops watching; whether it killed the tree for its limit.
    pub fn finish(self) -> bool {
        self.done.store(true, Ordering::SeqCst);
        self.tripped.load(Ordering::SeqCst)
    }
}

fn scan_forever(interval: Duration) {
    loop {
        {
            let Ok(mut watched) = WATCHED.lock() else {
                return;
            };
            watched.retain(|w| !w.done.load(Ordering::SeqCst));
            while watched.is_empty() {
                watched = match WAKE.wait(watched) {
                    Ok(guard) => guard,
                    Err(_) => return,
                };
            }
        }
        let processes = all_processes();
        if let Ok(mut watched) = WATCHED.lock() {
            watched.retain(|w| check(w, &processes));
        }
        std::thread::sleep(interval);
    }
}

/// One look at one tree; false once it needs no more watching (gone, done, or killed).
fn check(watched: &Watched, processes: &[ProcStat]) -> bool {
    if watched.done.load(Ordering::SeqCst) || !processes.iter().any(|p| p.pid == watched.root) {
        return false;
    }
    let members = tree(processes, watched.root);
    let rss: u64 = members
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| parse_rss(&status))
        .sum();
    if rss <= watched.limit_bytes {
        return true;
    }
    watched.tripped.store(true, Ordering::SeqCst);
    for pid in members {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    false
}

/// Every process's parent and group, from `/proc/<pid>/stat`.
fn all_processes() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|text| parse_stat(&text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_files() {
        let stat = "4242 (python3 (x) y) S 4200 4242 4200 0 -1 4194304 123 0 0 0 1 2";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                pid: 4242,
                ppid: 4200,
                pgrp: 4242
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        let status = "Name:\tpython3\nVmPeak:\t 9000 kB\nVmRSS:\t   2048 kB\n";
        assert_eq!(parse_rss(status), Some(2 << 20));
        assert_eq!(parse_rss("Name:\tzombie\n"), None);
    }

    #[test]
    fn the_tree_is_descendants_and_the_group() {
        let p = |pid, ppid, pgrp| ProcStat { pid, ppid, pgrp };
        let processes = [
            p(1, 0, 1),
            p(10, 1, 10),  // the worker, leading its group
            p(11, 10, 10), // its child
            p(12, 11, 12), // a grandchild in a group of its own
            p(13, 1, 10),  // reparented to init, still in the group
            p(20, 1, 20),  // someone else
            p(21, 20, 10), // not ours by parent, but in our group
        ];
        assert_eq!(tree(&processes, 10), vec![10, 11, 12, 13, 21]);
        // A root that does not lead its group brings only its descendants.
        assert_eq!(tree(&processes, 11), vec![11, 12]);
    }
}
