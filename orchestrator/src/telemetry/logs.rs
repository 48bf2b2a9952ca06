//! Task logs: what each task prints, kept as it is printed, and in its file once it ends.
//!
//! A running task's lines are held in memory (the newest [`LIVE_LIMIT`] bytes) and sent to
//! followers as they come; when the task ends its text goes to `<dir>/<jobId>/<taskId>.log`
//! (the same file `hkube run` and earlier versions wrote), and the memory is freed once the
//! file is whole. A runtime that captures its task's output exactly (hkube's runtimes) sends
//! it at the end: that text replaces the lines read from the worker's shared pipe.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::engine::TaskId;

/// Bytes of output a running task keeps in memory (the newest lines win; the file gets them
/// all only when the runtime sends its whole capture).
pub const LIVE_LIMIT: usize = 256 * 1024;
/// Lines followers may lag behind before they miss some (they are told how many).
const FOLLOW_BUFFER: usize = 4096;

/// One line a task printed, for followers.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub job_id: Arc<str>,
    pub task_id: TaskId,
    pub node_name: Arc<str>,
    pub text: Arc<str>,
}

#[derive(Debug)]
struct Live {
    node_name: Arc<str>,
    lines: VecDeque<String>,
    bytes: usize,
    dropped: u64,
    /// Ended: the file is being written.
    ended: bool,
}

impl Live {
    fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > LIVE_LIMIT && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len() + 1;
                self.dropped += 1;
            }
        }
    }

    fn text(&self) -> String {
        let mut text = String::with_capacity(self.bytes + 64);
        if self.dropped > 0 {
            text.push_str(&format!(
                "[hkube: {} earlier lines dropped: a task keeps its newest {} KiB]\n",
                self.dropped,
                LIVE_LIMIT >> 10
            ));
        }
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// The task logs of one server.
#[derive(Debug)]
pub struct TaskLogs {
    dir: PathBuf,
    live: Mutex<HashMap<(Arc<str>, TaskId), Live>>,
    /// Tasks whose log was written to its file lately: a line read from the pipe after that
    /// must not open a new live log (it would shadow the file and never leave memory). A new
    /// attempt of the task reopens it ([`TaskLogs::reopen`]). Bounded: the oldest are dropped.
    ended: Mutex<Ended>,
    follow: broadcast::Sender<LogLine>,
}

/// The recently ended tasks, oldest first (`order` may name a task reopened since).
#[derive(Debug, Default)]
struct Ended {
    keys: std::collections::HashSet<(Arc<str>, TaskId)>,
    order: VecDeque<(Arc<str>, TaskId)>,
}

/// How many ended tasks are remembered against late lines.
const ENDED_KEPT: usize = 65_536;

impl TaskLogs {
    pub fn new(dir: PathBuf) -> TaskLogs {
        TaskLogs {
            dir,
            live: Mutex::new(HashMap::new()),
            ended: Mutex::new(Ended::default()),
            follow: broadcast::channel(FOLLOW_BUFFER).0,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a task's log ends up in.
    pub fn file(&self, job_id: &str, task_id: TaskId) -> PathBuf {
        self.dir.join(job_id).join(format!("{task_id}.log"))
    }

    /// A line the task printed (a line of an ended task is late: its file has its text).
    pub fn line(&self, job_id: &Arc<str>, task_id: TaskId, node_name: &Arc<str>, line: &str) {
        let Ok(mut live) = self.live.lock() else {
            return;
        };
        let Some(entry) = self.open_entry(&mut live, job_id, task_id, node_name) else {
            return;
        };
        entry.push(line.to_string());
        drop(live);
        let _ = self.follow.send(LogLine {
            job_id: job_id.clone(),
            task_id,
            node_name: node_name.clone(),
            text: line.into(),
        });
    }

    /// The runtime's exact capture of the task's output: it replaces the lines seen so far.
    /// Followers get the lines they have not seen yet (those past the ones already sent).
    pub fn whole(&self, job_id: &Arc<str>, task_id: TaskId, node_name: &Arc<str>, text: &str) {
        let Ok(mut live) = self.live.lock() else {
            return;
        };
        let Some(entry) = self.open_entry(&mut live, job_id, task_id, node_name) else {
            return;
        };
        let seen = entry.lines.len() as u64 + entry.dropped;
        let new: Vec<&str> = text.lines().collect();
        entry.lines.clear();
        entry.bytes = 0;
        entry.dropped = 0;
        for line in &new {
            entry.push((*line).to_string());
        }
        drop(live);
        for line in new.iter().skip(usize::try_from(seen).unwrap_or(usize::MAX)) {
            let _ = self.follow.send(LogLine {
                job_id: job_id.clone(),
                task_id,
                node_name: node_name.clone(),
                text: (*line).into(),
            });
        }
    }

    /// The task ended: its text goes to its file (appended: a retried task keeps every run's
    /// output), then leaves memory.
    pub fn finish(self: &Arc<Self>, job_id: &Arc<str>, task_id: TaskId) {
        let text = {
            let Ok(mut live) = self.live.lock() else {
                return;
            };
            let Some(entry) = live.get_mut(&(job_id.clone(), task_id)) else {
                return;
            };
            entry.ended = true;
            entry.text()
        };
        if let Ok(mut ended) = self.ended.lock() {
            let key = (job_id.clone(), task_id);
            if ended.keys.insert(key.clone()) {
                ended.order.push_back(key);
            }
            while ended.order.len() > ENDED_KEPT {
                if let Some(old) = ended.order.pop_front() {
                    ended.keys.remove(&old);
                }
            }
        }
        let file = self.file(job_id, task_id);
        let logs = self.clone();
        let key = (job_id.clone(), task_id);
        let write = move || {
            if let Err(error) = append(&file, &text) {
                tracing::warn!("cannot write the task log {}: {error}", file.display());
            }
            if let Ok(mut live) = logs.live.lock() {
                live.remove(&key);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(write);
            }
            Err(_) => write(),
        }
    }

    /// A new attempt of a task that ended: its lines are taken again.
    pub fn reopen(&self, job_id: &Arc<str>, task_id: TaskId) {
        if let Ok(mut ended) = self.ended.lock() {
            ended.keys.remove(&(job_id.clone(), task_id));
        }
    }

    /// The live log a new line or capture goes to: opened on the task's first output; `None`
    /// once the task ended (its file has its text).
    fn open_entry<'a>(
        &self,
        live: &'a mut HashMap<(Arc<str>, TaskId), Live>,
        job_id: &Arc<str>,
        task_id: TaskId,
        node_name: &Arc<str>,
    ) -> Option<&'a mut Live> {
        let key = (job_id.clone(), task_id);
        if !live.contains_key(&key) && self.ended_lately(&key) {
            return None;
        }
        let entry = live.entry(key).or_insert_with(|| Live {
            node_name: node_name.clone(),
            lines: VecDeque::new(),
            bytes: 0,
            dropped: 0,
            ended: false,
        });
        (!entry.ended).then_some(entry)
    }

    fn ended_lately(&self, key: &(Arc<str>, TaskId)) -> bool {
        self.ended
            .lock()
            .is_ok_and(|ended| ended.keys.contains(key))
    }

    /// A task's text so far: in memory while it runs, else its file; `None` when it has none.
    pub fn text(&self, job_id: &str, task_id: TaskId) -> Option<String> {
        if let Ok(live) = self.live.lock() {
            if let Some(entry) = live.get(&(Arc::from(job_id), task_id)) {
                return Some(entry.text());
            }
        }
        std::fs::read_to_string(self.file(job_id, task_id)).ok()
    }

    /// The tasks of a job that have a log, from memory and from its folder (with their nodes,
    /// where memory knows them).
    pub fn tasks_with_logs(&self, job_id: &str) -> Vec<(TaskId, Option<Arc<str>>)> {
        let mut found: Vec<(TaskId, Option<Arc<str>>)> = Vec::new();
        if let Ok(live) = self.live.lock() {
            for ((job, task), entry) in live.iter() {
                if &**job == job_id {
                    found.push((*task, Some(entry.node_name.clone())));
                }
            }
        }
        let mut seen: std::collections::HashSet<TaskId> =
            found.iter().map(|(task, _)| *task).collect();
        if let Ok(entries) = std::fs::read_dir(self.dir.join(job_id)) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(id) = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".log"))
                    .and_then(TaskId::parse)
                else {
                    continue;
                };
                if seen.insert(id) {
                    found.push((id, None));
                }
            }
        }
        found
    }

    /// New lines of every task, from now on.
    pub fn follow(&self) -> broadcast::Receiver<LogLine> {
        self.follow.subscribe()
    }
}

fn append(file: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(folder) = file.parent() {
        std::fs::create_dir_all(folder)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?
        .write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> TaskId {
        TaskId::parse(text).expect("a valid id")
    }

    #[tokio::test]
    async fn lines_live_then_the_whole_capture_then_the_file() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let logs = Arc::new(TaskLogs::new(dir.path().to_path_buf()));
        let (job, node): (Arc<str>, Arc<str>) = ("job-a".into(), "square".into());
        let mut follower = logs.follow();
        logs.line(&job, id("aaaaaaaa"), &node, "one");
        assert_eq!(logs.text("job-a", id("aaaaaaaa")).as_deref(), Some("one\n"));
        assert_eq!(&*follower.recv().await.expect("a line").text, "one");
        // The runtime's capture has a line the pipe had not delivered yet.
        logs.whole(&job, id("aaaaaaaa"), &node, "one\ntwo\n");
        assert_eq!(&*follower.recv().await.expect("a line").text, "two");
        logs.finish(&job, id("aaaaaaaa"));
        // A late line of an ended task changes nothing: neither while its file is being
        // written, nor once it is written and the task has left memory.
        logs.line(&job, id("aaaaaaaa"), &node, "late");
        for _ in 0..100 {
            if dir.path().join("job-a/aaaaaaaa.log").exists()
                && logs.live.lock().expect("lock").is_empty()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        logs.line(&job, id("aaaaaaaa"), &node, "later");
        assert!(logs.live.lock().expect("lock").is_empty());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("job-a/aaaaaaaa.log")).expect("the file"),
            "one\ntwo\n"
        );
        assert_eq!(
            logs.text("job-a", id("aaaaaaaa")).as_deref(),
            Some("one\ntwo\n")
        );
        assert_eq!(logs.tasks_with_logs("job-a"), vec![(id("aaaaaaaa"), None)]);
    }

    #[test]
    fn a_running_task_keeps_its_newest_lines() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let logs = TaskLogs::new(dir.path().to_path_buf());
        let (job, node): (Arc<str>, Arc<str>) = ("job-b".into(), "n".into());
        let line = "x".repeat(1023);
        for _ in 0..(LIVE_LIMIT / 1024 + 10) {
            logs.line(&job, id("bbbbbbbb"), &node, &line);
        }
        let text = logs.text("job-b", id("bbbbbbbb")).expect("a log");
        assert!(
            text.starts_with("[hkube: 10 earlier lines dropped"),
            "{}",
            &text[..80]
        );
        assert!(text.len() <= LIVE_LIMIT + 200);
    }
}
