//! Keeping the module cache (`<cache>/<sha256>-<settings>.cwasm`, and the links that know a
//! module file by its identity, `<sha256>-<settings>.link`) from growing without end.
//!
//! The cache gains a file per module version and per wasmtime build, and loses none by itself:
//! an algorithm updated daily, or an hkube upgrade (new settings hash), leaves the old files
//! behind. And a write killed midway (the process ended while a `*.partial-<pid>-<n>` file was
//! being written) leaves its partial file. So when a runtime opens the cache, [`sweep`]
//! removes:
//!
//! - **partial files of no live writer**: the writer's process is gone, or the file is older
//!   than [`Policy::partial_age`] (a whole write takes milliseconds; a file that old is not
//!   being written any more, whatever process now has that id);
//! - **code not used for [`Policy::unused_for`]**: a load touches its file's modification
//!   time ([`touch`]), so the time says when the code was last used, not when it was written;
//! - **the least recently used code beyond [`Policy::budget_bytes`]**, oldest first, until the
//!   rest fits;
//! - **links that lead nowhere** (their code was removed), and links older than
//!   [`Policy::unused_for`] (a module file seen again is linked again).
//!
//! Files of other names are not the cache's and stay. Removing a file another process has
//! mapped is safe (the mapping keeps the inode); that process compiles again at its next
//! start, nothing more. The decision ([`plan`]) is pure; [`sweep`] only lists and removes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What the cache keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// A partial file older than this is removed even if its writer's process id is alive.
    pub partial_age: Duration,
    /// Code not used for this long is removed.
    pub unused_for: Duration,
    /// The most the code files may take together; the least recently used go first.
    pub budget_bytes: u64,
}

impl Default for Policy {
    /// A minute for partial files; code unused for 30 days, or beyond 1 GiB in all.
    fn default() -> Policy {
        Policy {
            partial_age: Duration::from_secs(60),
            unused_for: Duration::from_secs(30 * 24 * 3600),
            budget_bytes: 1 << 30,
        }
    }
}

/// What a file of the cache folder is, by its name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Compiled code (`*.cwasm`).
    Code,
    /// A write in progress, or killed midway (`*.partial-<pid>-<n>`), by process `pid`.
    Partial { pid: u32 },
    /// A module file's identity, a symbolic link to its code (`*.link`).
    Link,
    /// Not the cache's.
    Other,
}

/// The name of `path`'s partial file while it is written by this process: unique to one write,
/// because two executors of one process may keep the same module at once.
pub fn partial_name(path: &Path, pid: u32, nth: u64) -> PathBuf {
    path.with_extension(format!("partial-{pid}-{nth}"))
}

/// The kind of a file named `name`.
pub fn kind(name: &str) -> Kind {
    if let Some((_, rest)) = name.rsplit_once(".partial-") {
        return match rest.split_once('-').map(|(pid, _)| pid.parse()) {
            Some(Ok(pid)) => Kind::Partial { pid },
            _ => Kind::Other,
        };
    }
    if name.ends_with(".cwasm") {
        Kind::Code
    } else if name.ends_with(".link") {
        Kind::Link
    } else {
        Kind::Other
    }
}

/// One file of the cache folder, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub bytes: u64,
    /// Its modification time: for code, when it was last used; for a link, when it was made.
    pub modified: SystemTime,
    /// A link whose code is gone.
    pub dangling: bool,
}

/// The names of the files to remove from `entries`, at `now`, `alive` telling whether a
/// process id is a live process.
pub fn plan(
    entries: &[Entry],
    now: SystemTime,
    policy: &Policy,
    alive: impl Fn(u32) -> bool,
) -> Vec<String> {
    // A time in the future (a clock set back) counts as now: the file is young.
    let age = |entry: &Entry| now.duration_since(entry.modified).unwrap_or_default();
    let mut removed = Vec::new();
    let mut kept_code = Vec::new();
    for entry in entries {
        match kind(&entry.name) {
            Kind::Partial { pid } => {
                if !alive(pid) || age(entry) > policy.partial_age {
                    removed.push(entry.name.clone());
                }
            }
            Kind::Link if entry.dangling || age(entry) > policy.unused_for => {
                removed.push(entry.name.clone())
            }
            Kind::Code if age(entry) > policy.unused_for => removed.push(entry.name.clone()),
            Kind::Code => kept_code.push(entry),
            Kind::Link | Kind::Other => {}
        }
    }
    // Most recently used first; the name breaks ties, so a plan is the same for the same list.
    kept_code.sort_by(|a, b| b.modified.cmp(&a.modified).then(a.name.cmp(&b.name)));
    let mut total = 0u64;
    for entry in kept_code {
        total = total.saturating_add(entry.bytes);
        if total > policy.budget_bytes {
            removed.push(entry.name.clone());
        }
    }
    removed
}

/// Applies [`plan`] to the folder `dir`; returns the names removed. A file that cannot be
/// listed or removed stays (the next sweep tries again).
pub fn sweep(dir: &Path, policy: &Policy) -> Vec<String> {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let entries: Vec<Entry> = listing
        .filter_map(Result::ok)
        .filter_map(|entry| {
            // The entry itself: a link's own times, not its code's.
            let metadata = entry.metadata().ok()?;
            let link = metadata.file_type().is_symlink();
            if !link && !metadata.is_file() {
                return None;
            }
            Some(Entry {
                name: entry.file_name().into_string().ok()?,
                bytes: if link { 0 } else { metadata.len() },
                modified: metadata.modified().ok()?,
                // `exists` follows the link.
                dangling: link && !entry.path().exists(),
            })
        })
        .collect();
    plan(&entries, SystemTime::now(), policy, process_alive)
        .into_iter()
        .filter(|name| std::fs::remove_file(dir.join(name)).is_ok())
        .collect()
}

/// Marks the code at `path` used now, for [`plan`]'s "last used". A file that cannot be
/// touched only looks older than it is.
pub fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Whether `pid` is a running process: `/proc/<pid>` exists (Linux). Where there is no
/// `/proc`, every writer counts as alive and only the age decides.
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn entry(name: &str, bytes: u64, age: Duration, now: SystemTime) -> Entry {
        Entry {
            name: name.into(),
            bytes,
            modified: now - age,
            dangling: false,
        }
    }

    #[test]
    fn names_say_what_a_file_is() {
        assert_eq!(kind("ab12-00ff.cwasm"), Kind::Code);
        assert_eq!(
            kind("ab12-00ff.partial-4242-7"),
            Kind::Partial { pid: 4242 }
        );
        assert_eq!(
            partial_name(Path::new("/c/ab12-00ff.cwasm"), 9, 3),
            PathBuf::from("/c/ab12-00ff.partial-9-3")
        );
        assert_eq!(
            kind("ab12-00ff.partial-9-3"),
            kind(
                &partial_name(Path::new("ab12-00ff.cwasm"), 9, 3)
                    .display()
                    .to_string()
            )
        );
        assert_eq!(kind("cd34-00ff.link"), Kind::Link);
        assert_eq!(kind("README"), Kind::Other);
        assert_eq!(kind("x.partial-notapid-1"), Kind::Other);
    }

    #[test]
    fn partial_files_of_dead_writers_or_old_ones_go_and_live_recent_ones_stay() {
        let now = SystemTime::now();
        let policy = Policy::default();
        let entries = [
            entry("a.partial-10-0", 5, Duration::from_secs(2), now), // live, writing
            entry("b.partial-11-0", 5, Duration::from_secs(2), now), // its writer died
            entry("c.partial-10-1", 5, Duration::from_secs(120), now), // live id, too old
            entry("notes.txt", 5, 400 * DAY, now),                   // not the cache's
        ];
        let removed = plan(&entries, now, &policy, |pid| pid == 10);
        assert_eq!(removed, vec!["b.partial-11-0", "c.partial-10-1"]);
    }

    #[test]
    fn code_unused_too_long_goes() {
        let now = SystemTime::now();
        let policy = Policy::default();
        let entries = [
            entry("old.cwasm", 10, 31 * DAY, now),
            entry("used.cwasm", 10, 29 * DAY, now),
            // A clock set back: a time in the future is young.
            Entry {
                name: "future.cwasm".into(),
                bytes: 10,
                modified: now + DAY,
                dangling: false,
            },
        ];
        assert_eq!(plan(&entries, now, &policy, |_| true), vec!["old.cwasm"]);
    }

    #[test]
    fn links_leading_nowhere_or_old_go_and_count_nothing_against_the_budget() {
        let now = SystemTime::now();
        let policy = Policy {
            budget_bytes: 100,
            ..Policy::default()
        };
        let link = |name: &str, age: Duration, dangling: bool| Entry {
            dangling,
            ..entry(name, 0, age, now)
        };
        let entries = [
            entry("a.cwasm", 100, DAY, now),
            link("fresh.link", DAY, false),
            link("nowhere.link", DAY, true),
            link("old.link", 31 * DAY, false),
        ];
        assert_eq!(
            plan(&entries, now, &policy, |_| true),
            vec!["nowhere.link", "old.link"]
        );
    }

    #[test]
    fn beyond_the_budget_the_least_recently_used_code_goes() {
        let now = SystemTime::now();
        let policy = Policy {
            budget_bytes: 250,
            ..Policy::default()
        };
        let entries = [
            entry("c.cwasm", 100, 3 * DAY, now),
            entry("a.cwasm", 100, DAY, now),
            entry("d.cwasm", 100, 4 * DAY, now),
            entry("b.cwasm", 100, 2 * DAY, now),
        ];
        // a and b fit (200 bytes); c would make 300.
        let mut removed = plan(&entries, now, &policy, |_| true);
        removed.sort();
        assert_eq!(removed, vec!["c.cwasm", "d.cwasm"]);
        // One file larger than the whole budget is not kept either.
        let huge = [entry("huge.cwasm", 1000, Duration::ZERO, now)];
        assert_eq!(plan(&huge, now, &policy, |_| true), vec!["huge.cwasm"]);
    }

    #[test]
    fn a_sweep_removes_what_the_plan_says_and_a_touch_marks_code_used() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, age: Duration| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"code").unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(SystemTime::now() - age).unwrap();
            path
        };
        let old = write("old.cwasm", 40 * DAY);
        write("kept.cwasm", DAY);
        // Process ids are below 2^22 on Linux: this writer is certainly gone.
        write("kept.partial-4294967295-0", Duration::ZERO);
        let live = write(
            &format!("live.partial-{}-0", std::process::id()),
            Duration::ZERO,
        );
        let used = write("used.cwasm", 40 * DAY);
        touch(&used);
        // A link to kept code stays; one to removed code goes with it.
        std::os::unix::fs::symlink("kept.cwasm", dir.path().join("kept.link")).unwrap();
        std::os::unix::fs::symlink("old.cwasm", dir.path().join("old.link")).unwrap();
        let mut removed = sweep(dir.path(), &Policy::default());
        removed.sort();
        assert_eq!(removed, vec!["kept.partial-4294967295-0", "old.cwasm"]);
        // The link's code went in this sweep: it leads nowhere at the next.
        assert_eq!(sweep(dir.path(), &Policy::default()), vec!["old.link"]);
        assert!(dir.path().join("kept.link").exists());
        assert!(!old.exists() && used.exists());
        assert!(dir.path().join("kept.cwasm").exists());
        assert!(live.exists(), "this process is writing it");
    }
}
