//! How several batch lists of one node combine into tasks (reference §2.4).

use crate::spec::BatchOperation;

/// The tasks of a batch node: how many, and which element of each list task `i` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    lens: Vec<usize>,
    operation: BatchOperation,
    count: usize,
}

/// `indexed` (the default): as many tasks as the longest list, task `i` takes element `i` of
/// every list (`null` where a list is shorter). `cartesian`: every combination, the first list
/// varying slowest. A count too large for `usize` saturates; the engine refuses it.
pub fn combine(lens: Vec<usize>, operation: BatchOperation) -> BatchPlan {
    let count = match operation {
        BatchOperation::Indexed => lens.iter().copied().max().unwrap_or(0),
        BatchOperation::Cartesian if lens.is_empty() => 0,
        BatchOperation::Cartesian => lens
            .iter()
            .try_fold(1usize, |acc, &len| acc.checked_mul(len))
            .unwrap_or(usize::MAX),
    };
    BatchPlan {
        lens,
        operation,
        count,
    }
}

impl BatchPlan {
    /// Number of tasks; 0 means the node is skipped.
    pub fn count(&self) -> usize {
        self.count
    }

    /// For task `task` (0-based), the element index taken from each list, in list order.
    pub fn indices(&self, task: usize, out: &mut Vec<Option<usize>>) {
        out.clear();
        match self.operation {
            BatchOperation::Indexed => {
                out.extend(self.lens.iter().map(|&len| (task < len).then_some(task)))
            }
            BatchOperation::Cartesian => {
                out.resize(self.lens.len(), None);
                let mut rest = task;
                for (slot, &len) in out.iter_mut().zip(&self.lens).rev() {
                    *slot = Some(rest % len.max(1));
                    rest /= len.max(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(plan: &BatchPlan) -> Vec<Vec<Option<usize>>> {
        let mut out = Vec::new();
        (0..plan.count())
            .map(|i| {
                plan.indices(i, &mut out);
                out.clone()
            })
            .collect()
    }

    #[test]
    fn indexed_zips_to_the_longest() {
        let plan = combine(vec![3, 1], BatchOperation::Indexed);
        assert_eq!(
            all(&plan),
            vec![
                vec![Some(0), Some(0)],
                vec![Some(1), None],
                vec![Some(2), None]
            ]
        );
    }

    #[test]
    fn cartesian_first_list_varies_slowest() {
        let plan = combine(vec![2, 3], BatchOperation::Cartesian);
        assert_eq!(plan.count(), 6);
        let firsts: Vec<_> = all(&plan).iter().map(|v| (v[0], v[1])).collect();
        assert_eq!(firsts[0], (Some(0), Some(0)));
        assert_eq!(firsts[2], (Some(0), Some(2)));
        assert_eq!(firsts[3], (Some(1), Some(0)));
        // Reference CC: 10 x 5, task 38 (index 37) takes [7] and [12] → indices 7 and 2.
        let mut out = Vec::new();
        combine(vec![10, 5], BatchOperation::Cartesian).indices(37, &mut out);
        assert_eq!(out, vec![Some(7), Some(2)]);
    }

    #[test]
    fn empty_lists_skip() {
        assert_eq!(combine(vec![0, 0], BatchOperation::Indexed).count(), 0);
        assert_eq!(combine(vec![3, 0], BatchOperation::Cartesian).count(), 0);
        assert_eq!(
            combine(vec![usize::MAX, 2], BatchOperation::Cartesian).count(),
            usize::MAX
        );
    }
}
