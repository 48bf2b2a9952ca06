//! An algorithm's queued tasks, most urgent first: priority 1 before 5, then oldest first
//! (arrival order, `Task::seq`).
//!
//! One FIFO per priority rather than a binary heap: tasks arrive in `seq` order, so a new task
//! goes to the back of its priority's FIFO and the head is the front, with no sifting. A
//! round takes the heads and gives back those it could not place, which go back to the front
//! (an insert by `seq`, cheap at either end). A heap moved each task through about log₂(n)
//! slots at every pop and push, which was a large share of the pool's loop at microsecond
//! tasks.

use std::collections::{BTreeMap, VecDeque};

use super::worker::Task;

#[derive(Default)]
pub(super) struct TaskQueue {
    /// By priority (1 is the most urgent); each FIFO in `seq` order. No empty FIFO is kept.
    by_priority: BTreeMap<u8, VecDeque<Task>>,
    len: usize,
}

impl TaskQueue {
    /// Queues `task` in its place: at the back for a new task, by its `seq` for one that comes
    /// back (not placed by a round, requeued after a stop).
    pub fn push(&mut self, task: Task) {
        let fifo = self.by_priority.entry(task.priority).or_default();
        let seq = task.seq;
        if fifo.back().is_none_or(|last| last.seq < seq) {
            fifo.push_back(task);
        } else if fifo.front().is_some_and(|first| seq < first.seq) {
            // A round's head given back (last first): no search.
            fifo.push_front(task);
        } else {
            let at = fifo.partition_point(|t| t.seq < seq);
            fifo.insert(at, task);
        }
        self.len += 1;
    }

    /// The most urgent task, taken off the queue.
    pub fn pop(&mut self) -> Option<Task> {
        let mut entry = self.by_priority.first_entry()?;
        let task = entry.get_mut().pop_front();
        if entry.get().is_empty() {
            entry.remove();
        }
        self.len -= usize::from(task.is_some());
        task
    }

    /// The most urgent task.
    pub fn peek(&self) -> Option<&Task> {
        self.by_priority.values().next().and_then(VecDeque::front)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every queued task, most urgent first.
    pub fn iter(&self) -> impl Iterator<Item = &Task> {
        self.by_priority.values().flatten()
    }

    /// Keeps the tasks `keep` says yes to, in their order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Task) -> bool) {
        for fifo in self.by_priority.values_mut() {
            fifo.retain(&mut keep);
        }
        self.by_priority.retain(|_, fifo| !fifo.is_empty());
        self.len = self.by_priority.values().map(VecDeque::len).sum();
    }
}

impl IntoIterator for TaskQueue {
    type Item = Task;
    type IntoIter = std::iter::Flatten<std::collections::btree_map::IntoValues<u8, VecDeque<Task>>>;

    /// The tasks, most urgent first.
    fn into_iter(self) -> Self::IntoIter {
        self.by_priority.into_values().flatten()
    }
}

impl FromIterator<Task> for TaskQueue {
    fn from_iter<I: IntoIterator<Item = Task>>(tasks: I) -> Self {
        let mut queue = TaskQueue::default();
        for task in tasks {
            queue.push(task);
        }
        queue
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::executor::{Report, ReportSink};
    use crate::engine::{TaskKey, TaskReporter};
    use wrapper::link::Assignment;

    /// Reports go nowhere: the queue never reports.
    struct Nowhere;
    impl ReportSink for Nowhere {
        fn report(&self, _: Report) -> Result<(), Box<Report>> {
            Ok(())
        }
    }

    fn task(seq: u64, priority: u8) -> Task {
        let key = TaskKey {
            job: 1,
            node: 0,
            task: seq as u32,
            attempt: 0,
        };
        Task {
            priority,
            seq,
            entered_ms: 0,
            key,
            reporter: TaskReporter::new(key, Arc::new(Nowhere)),
            assignment: Arc::new(Assignment {
                job_id: "j".into(),
                task_id: format!("t{seq}"),
                node_name: "n".into(),
                algorithm_name: "a".into(),
                pipeline_name: "p".into(),
                batch_index: None,
                input: Vec::new(),
                extra_data: None,
                root_job_id: "j".into(),
                parent_node_name: None,
            }),
            cancelled: false,
            preempted: false,
        }
    }

    fn order(queue: &TaskQueue) -> Vec<u64> {
        queue.iter().map(|t| t.seq).collect()
    }

    #[test]
    fn most_urgent_first_then_oldest() {
        let mut queue: TaskQueue = [(1, 3), (2, 5), (3, 1), (4, 3), (5, 1)]
            .into_iter()
            .map(|(seq, priority)| task(seq, priority))
            .collect();
        assert_eq!(order(&queue), [3, 5, 1, 4, 2]);
        assert_eq!((queue.len(), queue.peek().map(|t| t.seq)), (5, Some(3)));
        // What a round took and could not place goes back to its place, in any order.
        let heads: Vec<Task> = (0..3).filter_map(|_| queue.pop()).collect();
        assert_eq!(heads.iter().map(|t| t.seq).collect::<Vec<_>>(), [3, 5, 1]);
        for head in heads.into_iter().rev() {
            queue.push(head);
        }
        assert_eq!(order(&queue), [3, 5, 1, 4, 2]);
        // A requeued task (an old seq) goes before the newer ones of its priority.
        let newest = queue.pop().unwrap();
        queue.push(task(6, 1));
        queue.push(newest);
        assert_eq!(order(&queue), [3, 5, 6, 1, 4, 2]);
        queue.retain(|t| t.priority != 1);
        assert_eq!((order(&queue), queue.len()), (vec![1, 4, 2], 3));
        let all: Vec<u64> = std::mem::take(&mut queue)
            .into_iter()
            .map(|t| t.seq)
            .collect();
        assert_eq!(all, [1, 4, 2]);
        assert!(queue.is_empty() && queue.pop().is_none() && queue.peek().is_none());
    }

    #[test]
    fn a_task_that_comes_back_goes_between_older_and_newer_ones() {
        let mut queue: TaskQueue = [10, 20, 30].into_iter().map(|seq| task(seq, 3)).collect();
        queue.push(task(25, 3));
        queue.push(task(5, 3));
        assert_eq!(order(&queue), [5, 10, 20, 25, 30]);
        assert_eq!(queue.len(), 5);
    }
}
