//! Scheduler scenarios: a snapshot in, the decisions a user would notice out.

#![allow(clippy::unwrap_used)] // a test may panic on the unexpected

use super::*;

fn machine(cpus: u32, mem_mib: u64, gpus: u32) -> Node {
    Node {
        name: format!("node-{cpus}-{gpus}"),
        cpu_millis: cpus * 1000,
        mem_mib,
        gpus: (0..gpus)
            .map(|index| Gpu {
                index,
                mem_mib: 16_384,
            })
            .collect(),
    }
}

/// An algorithm whose tasks are long: none has ended yet, and one has run for 10 s already
/// (so its workers spread; see `tasks_of_unknown_duration_start_one_worker_then_spread`).
fn algorithm(name: &str, cpu: f64, mem_mib: f64, gpu: f64) -> AlgorithmPolicy {
    AlgorithmPolicy {
        name: name.into(),
        request: Request::new(cpu, mem_mib, gpu).unwrap(),
        min_hot: 0,
        max_workers: None,
        mean_task_us: None,
        start_cost_ms: 150,
        running_for_us: Some(10_000_000),
        max_window: 0,
        queued_beyond: 0,
    }
}

fn task(id: u64, algorithm: AlgorithmIx, priority: u8, entered_ms: u64) -> QueuedTask {
    QueuedTask {
        id: TaskId(id),
        algorithm,
        priority,
        entered_ms,
        batch_index: id as u32,
        attempts: 0,
    }
}

fn worker(
    id: u64,
    algorithm: &AlgorithmPolicy,
    a: AlgorithmIx,
    node: &Node,
    state: WorkerState,
) -> WorkerView {
    WorkerView {
        id: WorkerId(id),
        algorithm: a,
        node: 0,
        state,
        held: Free::of(node).fit(node, &algorithm.request).unwrap(),
    }
}

fn started(decisions: &Decisions) -> Vec<(AlgorithmIx, Vec<u32>, bool)> {
    decisions
        .start
        .iter()
        .map(|s| (s.algorithm, s.placement.gpu.devices(), s.hot))
        .collect()
}

#[test]
fn a_batch_of_long_tasks_spreads_over_workers() {
    // 16 tasks of unknown length, default resources (cpu 0.1, 256Mi + 20 %), 2 cores: each
    // gets a worker of its own; none waits behind another.
    let sleeper = algorithm("sleeper", 0.1, 307.2, 0.0);
    let snapshot = Snapshot {
        algorithms: vec![sleeper],
        queue: (0..16).map(|i| task(i, 0, 3, 0)).collect(),
        nodes: vec![machine(2, 24_000, 0)],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    assert_eq!(decisions.start.len(), 16, "{decisions:?}");
    assert!(decisions.pending.is_empty(), "{:?}", decisions.pending);
    assert!(decisions.refused.is_empty());
}

#[test]
fn cpu_bounds_how_many_workers_start() {
    let heavy = algorithm("heavy", 0.5, 256.0, 0.0);
    let snapshot = Snapshot {
        algorithms: vec![heavy],
        queue: (0..8).map(|i| task(i, 0, 3, 0)).collect(),
        nodes: vec![machine(2, 24_000, 0)],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    assert_eq!(decisions.start.len(), 4);
    assert_eq!(
        decisions.pending,
        vec![Pending {
            algorithm: 0,
            waiting: 4,
            reason: "waiting for cpu: requested 0.5, free 0 of 2".into()
        }]
    );
}

#[test]
fn idle_workers_are_reused_before_any_start_and_short_tasks_share_a_message() {
    let quick = AlgorithmPolicy {
        mean_task_us: Some(20),
        running_for_us: None,
        ..algorithm("quick", 0.1, 256.0, 0.0)
    };
    let node = machine(2, 24_000, 0);
    let workers = vec![worker(
        1,
        &quick,
        0,
        &node,
        WorkerState::Idle { since_ms: 0 },
    )];
    let snapshot = Snapshot {
        algorithms: vec![quick],
        queue: (0..200).map(|i| task(i, 0, 3, 0)).collect(),
        workers,
        nodes: vec![node],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    // 20 µs tasks: 200 of them are 4 ms of work, less than a worker's start; the one worker
    // takes them in windows of 2 ms / 20 µs = 64 (the cap) and nothing starts.
    assert!(decisions.start.is_empty(), "{:?}", decisions.start);
    assert_eq!(decisions.assign.len(), 1);
    assert_eq!(decisions.assign[0].worker, WorkerId(1));
    assert_eq!(decisions.assign[0].tasks.len(), MAX_WINDOW);
    assert_eq!(decisions.pending[0].waiting, 200 - MAX_WINDOW);
}

#[test]
fn long_measured_tasks_go_one_per_worker() {
    assert_eq!(dispatch_window(None), 1);
    assert_eq!(dispatch_window(Some(1_000_000)), 1);
    assert_eq!(dispatch_window(Some(500)), 4);
    assert_eq!(dispatch_window(Some(1)), MAX_WINDOW);
    let slow = AlgorithmPolicy {
        mean_task_us: Some(1_000_000),
        ..algorithm("slow", 0.1, 256.0, 0.0)
    };
    let node = machine(2, 24_000, 0);
    let workers = vec![
        worker(1, &slow, 0, &node, WorkerState::Idle { since_ms: 0 }),
        worker(2, &slow, 0, &node, WorkerState::Idle { since_ms: 0 }),
    ];
    let snapshot = Snapshot {
        algorithms: vec![slow],
        queue: (0..5).map(|i| task(i, 0, 3, 0)).collect(),
        workers,
        nodes: vec![node],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    let assigned: Vec<(WorkerId, usize)> = decisions
        .assign
        .iter()
        .map(|a| (a.worker, a.tasks.len()))
        .collect();
    assert_eq!(assigned, vec![(WorkerId(1), 1), (WorkerId(2), 1)]);
    assert_eq!(
        decisions.start.len(),
        3,
        "the other 3 tasks get workers of their own"
    );
}

#[test]
fn max_workers_caps_the_pool() {
    let capped = AlgorithmPolicy {
        max_workers: Some(2),
        ..algorithm("capped", 0.1, 256.0, 0.0)
    };
    let snapshot = Snapshot {
        algorithms: vec![capped],
        queue: (0..10).map(|i| task(i, 0, 3, 0)).collect(),
        nodes: vec![machine(16, 64_000, 0)],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    assert_eq!(decisions.start.len(), 2);
    assert_eq!(
        decisions.pending[0].reason,
        "waiting for a free worker of capped: maxWorkers 2 are running"
    );
    assert_eq!(decisions.pending[0].waiting, 8);
}

#[test]
fn min_hot_workers_start_without_tasks_and_stay_idle() {
    let hot = AlgorithmPolicy {
        min_hot: 2,
        ..algorithm("hot", 0.1, 256.0, 0.0)
    };
    let node = machine(2, 24_000, 0);
    let snapshot = Snapshot {
        algorithms: vec![hot.clone()],
        nodes: vec![node.clone()],
        ..Snapshot::default()
    };
    assert_eq!(
        started(&schedule(&snapshot)),
        vec![(0, vec![], true), (0, vec![], true)]
    );

    // Three idle for ten minutes: the one beyond minHotWorkers stops, two stay.
    let idle = WorkerState::Idle { since_ms: 0 };
    let snapshot = Snapshot {
        now_ms: 600_000,
        algorithms: vec![hot.clone()],
        workers: (1..=3).map(|id| worker(id, &hot, 0, &node, idle)).collect(),
        nodes: vec![node],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    assert!(decisions.start.is_empty());
    assert_eq!(decisions.stop.len(), 1);
    assert_eq!(decisions.stop[0].reason, StopReason::Idle);
}

#[test]
fn an_idle_worker_within_the_timeout_stays() {
    let plain = algorithm("plain", 0.1, 256.0, 0.0);
    let node = machine(2, 24_000, 0);
    let snapshot = Snapshot {
        now_ms: 59_000,
        algorithms: vec![plain.clone()],
        workers: vec![worker(
            1,
            &plain,
            0,
            &node,
            WorkerState::Idle { since_ms: 0 },
        )],
        nodes: vec![node],
        ..Snapshot::default()
    };
    assert!(schedule(&snapshot).stop.is_empty());
}

#[test]
fn three_algorithms_compete_for_two_gpus_by_priority() {
    // A, B, C each ask for one GPU; the machine has two. C has priority 1, A and B 3: C and
    // one of the others get the GPUs, the third waits (it is not failed, reference §11.21).
    let algorithms = vec![
        algorithm("a", 0.1, 256.0, 1.0),
        algorithm("b", 0.1, 256.0, 1.0),
        algorithm("c", 0.1, 256.0, 1.0),
    ];
    let snapshot = Snapshot {
        algorithms,
        queue: vec![task(1, 0, 3, 0), task(2, 1, 3, 10), task(3, 2, 1, 20)],
        nodes: vec![machine(8, 64_000, 2)],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    assert_eq!(
        started(&decisions),
        vec![(2, vec![0], false), (0, vec![1], false)]
    );
    assert_eq!(
        decisions.pending,
        vec![Pending {
            algorithm: 1,
            waiting: 1,
            reason: "waiting for gpu: requested 1, free 0 of 2".into()
        }]
    );
    assert!(decisions.refused.is_empty());
}

#[test]
fn a_freed_gpu_goes_to_the_waiting_algorithm_by_stopping_an_idle_worker() {
    // A finished and idles on GPU 0; B waits for a GPU: A's idle worker stops for it.
    let algorithms = vec![
        algorithm("a", 0.1, 256.0, 1.0),
        algorithm("b", 0.1, 256.0, 1.0),
    ];
    let node = machine(8, 64_000, 1);
    let workers = vec![worker(
        7,
        &algorithms[0],
        0,
        &node,
        WorkerState::Idle { since_ms: 0 },
    )];
    let snapshot = Snapshot {
        now_ms: 1_000,
        algorithms,
        queue: vec![task(1, 1, 3, 500)],
        workers,
        nodes: vec![node],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    assert_eq!(
        decisions.stop,
        vec![Stop {
            worker: WorkerId(7),
            reason: StopReason::FreeForOthers
        }]
    );
    assert!(
        decisions.start.is_empty(),
        "B starts once the GPU is given back"
    );
    assert!(decisions.pending[0]
        .reason
        .starts_with("waiting for resources being freed"));

    // Next round, A's worker is stopping: nothing more is stopped, B waits for it.
    let mut next = snapshot.clone();
    next.workers[0].state = WorkerState::Stopping;
    let decisions = schedule(&next);
    assert!(decisions.stop.is_empty());
    assert!(decisions.pending[0]
        .reason
        .starts_with("waiting for resources that stopping workers are releasing"));
    // Then it is gone, and B starts on the GPU.
    next.workers.clear();
    assert_eq!(started(&schedule(&next)), vec![(1, vec![0], false)]);
}

#[test]
fn a_higher_priority_task_preempts_a_lower_priority_one() {
    let algorithms = vec![
        algorithm("low", 1.0, 256.0, 1.0),
        algorithm("urgent", 1.0, 256.0, 1.0),
    ];
    let node = machine(8, 64_000, 1);
    let workers = vec![worker(
        3,
        &algorithms[0],
        0,
        &node,
        WorkerState::Busy { priority: 5 },
    )];
    let mut snapshot = Snapshot {
        algorithms,
        queue: vec![task(1, 1, 1, 0)],
        workers,
        nodes: vec![node],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    assert_eq!(
        decisions.stop,
        vec![Stop {
            worker: WorkerId(3),
            reason: StopReason::Preempted
        }]
    );
    // Equal priority never preempts; nor does anything with preemption off.
    snapshot.workers[0].state = WorkerState::Busy { priority: 1 };
    let decisions = schedule(&snapshot);
    assert!(decisions.stop.is_empty());
    assert_eq!(
        decisions.pending[0].reason,
        "waiting for gpu: requested 1, free 0 of 1"
    );
    snapshot.workers[0].state = WorkerState::Busy { priority: 5 };
    snapshot.options.preempt_busy = false;
    assert!(schedule(&snapshot).stop.is_empty());
}

#[test]
fn an_idle_worker_whose_algorithm_has_work_queued_is_not_taken_by_equal_priority() {
    let algorithms = vec![
        algorithm("a", 1.0, 256.0, 1.0),
        algorithm("b", 1.0, 256.0, 1.0),
    ];
    let node = machine(8, 64_000, 1);
    let workers = vec![worker(
        3,
        &algorithms[0],
        0,
        &node,
        WorkerState::Idle { since_ms: 0 },
    )];
    let snapshot = Snapshot {
        algorithms,
        // b's task came first, but a's idle worker is a's: a's task takes it.
        queue: vec![task(1, 1, 3, 0), task(2, 0, 3, 5)],
        workers,
        nodes: vec![node],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    assert!(decisions.stop.is_empty(), "{:?}", decisions.stop);
    assert_eq!(decisions.assign[0].worker, WorkerId(3));
    assert_eq!(decisions.assign[0].tasks, vec![TaskId(2)]);
}

#[test]
fn fractional_gpus_pack_onto_one_device() {
    let algorithms = vec![
        algorithm("half-a", 0.1, 256.0, 0.5),
        algorithm("half-b", 0.1, 256.0, 0.5),
        algorithm("half-c", 0.1, 256.0, 0.5),
        algorithm("whole", 0.1, 256.0, 1.0),
    ];
    let snapshot = Snapshot {
        algorithms,
        queue: vec![
            task(1, 0, 3, 0),
            task(2, 1, 3, 1),
            task(3, 2, 3, 2),
            task(4, 3, 3, 3),
        ],
        nodes: vec![machine(8, 64_000, 2)],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    // Two halves share device 0, the third takes half of device 1; the whole request waits.
    assert_eq!(
        started(&decisions),
        vec![
            (0, vec![0], false),
            (1, vec![0], false),
            (2, vec![1], false)
        ]
    );
    assert_eq!(decisions.pending[0].algorithm, 3);
    assert_eq!(
        decisions.pending[0].reason,
        "waiting for gpu: requested 1, free 0 of 2"
    );
}

#[test]
fn more_gpus_than_any_node_has_are_refused_at_once() {
    let algorithms = vec![
        algorithm("range", 0.1, 256.0, 1.0),
        algorithm("big", 0.1, 256.0, 3.0),
    ];
    let snapshot = Snapshot {
        algorithms: algorithms.clone(),
        queue: vec![task(1, 0, 3, 0)],
        nodes: vec![machine(2, 24_000, 0)],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    assert!(decisions.start.is_empty());
    assert_eq!(
        decisions.refused[0],
        (
            0,
            "algorithm range requests 1 gpu; the largest node has 0 (declare GPUs with --gpus)"
                .to_string()
        )
    );
    let snapshot = Snapshot {
        algorithms,
        queue: vec![task(1, 1, 3, 0)],
        nodes: vec![machine(2, 24_000, 2)],
        ..Snapshot::default()
    };
    assert_eq!(
        schedule(&snapshot).refused,
        vec![(
            1,
            "algorithm big requests 3 gpu; the largest node has 2 (declare GPUs with --gpus)"
                .to_string()
        )]
    );
    // A request equal to the whole node is not refused (HKube's off-by-one, §8.11).
    let all = vec![algorithm("all", 2.0, 24_000.0, 2.0)];
    let snapshot = Snapshot {
        algorithms: all,
        queue: vec![task(1, 0, 3, 0)],
        nodes: vec![machine(2, 24_000, 2)],
        ..Snapshot::default()
    };
    assert_eq!(started(&schedule(&snapshot)), vec![(0, vec![0, 1], false)]);
}

#[test]
fn priority_orders_tasks_across_algorithms() {
    // One slot; a priority-1 task of another algorithm entered last and still goes first.
    let algorithms = vec![
        algorithm("a", 2.0, 256.0, 0.0),
        algorithm("b", 2.0, 256.0, 0.0),
    ];
    let snapshot = Snapshot {
        now_ms: 100,
        algorithms,
        queue: vec![task(1, 0, 5, 0), task(2, 0, 5, 1), task(3, 1, 1, 99)],
        nodes: vec![machine(2, 24_000, 0)],
        ..Snapshot::default()
    };
    assert_eq!(started(&schedule(&snapshot)), vec![(1, vec![], false)]);
}

#[test]
fn aging_is_bounded_and_ends_starvation() {
    let options = Options::default();
    let old_low = task(1, 0, 5, 0);
    let fresh_top = task(2, 0, 1, 10 * 60_000);
    // Four aging steps bring a priority-5 task to 1, and never beyond.
    let now = 4 * options.aging_step_ms;
    assert_eq!(effective_priority(&old_low, now, options.aging_step_ms), 1);
    assert_eq!(
        effective_priority(&old_low, 100 * now, options.aging_step_ms),
        1
    );
    assert_eq!(
        effective_priority(&old_low, options.aging_step_ms - 1, options.aging_step_ms),
        5
    );
    // A starved low-priority task outranks fresh top-priority ones once aged (it waited
    // longer at the same level); a top-priority task that waited longer still goes first.
    let snapshot = Snapshot {
        now_ms: 10 * 60_000,
        algorithms: vec![algorithm("a", 2.0, 256.0, 0.0)],
        queue: vec![fresh_top.clone(), old_low.clone()],
        nodes: vec![machine(2, 24_000, 0)],
        options,
        ..Snapshot::default()
    };
    assert_eq!(order(&snapshot), vec![1, 0]);
    let mut older_top = fresh_top;
    older_top.entered_ms = 0;
    older_top.id = TaskId(0);
    let mut old_low = old_low;
    old_low.entered_ms = 1;
    let snapshot = Snapshot {
        queue: vec![old_low, older_top],
        ..snapshot
    };
    assert_eq!(order(&snapshot), vec![1, 0]);
}

#[test]
fn lower_batch_indexes_go_first_within_a_job() {
    let mut queue: Vec<QueuedTask> = (0..5).map(|i| task(10 - i, 0, 3, 0)).collect();
    for (i, t) in queue.iter_mut().enumerate() {
        t.batch_index = 5 - i as u32;
    }
    let snapshot = Snapshot {
        algorithms: vec![algorithm("a", 0.1, 256.0, 0.0)],
        queue,
        nodes: vec![machine(2, 24_000, 0)],
        ..Snapshot::default()
    };
    assert_eq!(order(&snapshot), vec![4, 3, 2, 1, 0]);
}

#[test]
fn memory_is_placed_with_its_reserve_and_named_when_short() {
    let big = algorithm("big", 0.1, 10_000.0, 0.0);
    let snapshot = Snapshot {
        algorithms: vec![big],
        queue: (0..3).map(|i| task(i, 0, 3, 0)).collect(),
        nodes: vec![machine(8, 24_000, 0)],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    assert_eq!(decisions.start.len(), 2);
    assert_eq!(
        decisions.pending[0].reason,
        "waiting for memory: requested 10000Mi, free 4000Mi of 24000Mi"
    );
}

#[test]
fn a_starting_worker_is_waited_for_rather_than_starting_another() {
    let a = algorithm("a", 0.1, 256.0, 0.0);
    let node = machine(2, 24_000, 0);
    let snapshot = Snapshot {
        algorithms: vec![a.clone()],
        queue: vec![task(1, 0, 3, 0), task(2, 0, 3, 0)],
        workers: vec![worker(1, &a, 0, &node, WorkerState::Starting)],
        nodes: vec![node],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    assert_eq!(
        decisions.start.len(),
        1,
        "one task waits for the starting worker"
    );
}

#[test]
fn a_round_over_ten_thousand_tasks_and_a_hundred_nodes_stays_linear() {
    // Not a timing test (the benchmark times it): the round must decide everything in one
    // pass, blocking an algorithm once it cannot place more.
    let algorithms: Vec<AlgorithmPolicy> = (0..10)
        .map(|i| {
            algorithm(
                &format!("alg{i}"),
                0.5,
                512.0,
                if i % 3 == 0 { 1.0 } else { 0.0 },
            )
        })
        .collect();
    let nodes: Vec<Node> = (0..100)
        .map(|i| machine(16, 65_536, if i % 4 == 0 { 4 } else { 0 }))
        .collect();
    let queue: Vec<QueuedTask> = (0..10_000)
        .map(|i| task(i, (i % 10) as usize, (i % 5 + 1) as u8, i))
        .collect();
    let snapshot = Snapshot {
        now_ms: 20_000,
        algorithms,
        queue,
        nodes,
        options: Options {
            max_starts_per_round: 100_000,
            ..Options::default()
        },
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    let placed = decisions.start.len();
    let waiting: usize = decisions.pending.iter().map(|p| p.waiting).sum();
    assert_eq!(placed + waiting, 10_000);
    // 100 nodes × 16 cores / 0.5 = 3,200 slots; the GPU algorithms are bounded by 25 × 4 GPUs.
    assert!(placed > 1_000 && placed <= 3_200, "{placed}");
}

#[test]
fn tasks_of_unknown_duration_start_one_worker_then_spread() {
    let unknown = AlgorithmPolicy {
        running_for_us: None,
        ..algorithm("probe", 0.1, 256.0, 0.0)
    };
    let node = machine(2, 24_000, 0);
    let queue: Vec<QueuedTask> = (1..=16).map(|i| task(i, 0, 3, 0)).collect();
    // Nothing has run: one worker starts, the others wait to see how long a task takes.
    let decisions = schedule(&Snapshot {
        algorithms: vec![unknown.clone()],
        queue: queue.clone(),
        nodes: vec![node.clone()],
        ..Snapshot::default()
    });
    assert_eq!(decisions.start.len(), 1);
    assert_eq!(decisions.pending.len(), 1);
    assert!(
        decisions.pending[0]
            .reason
            .contains("first task has run longer"),
        "{:?}",
        decisions.pending
    );
    let busy = worker(1, &unknown, 0, &node, WorkerState::Busy { priority: 3 });
    // Its first task has run 50 ms, so it is taken to last 100 ms: 15 × 100 ms of work is
    // queued behind a worker busy for about 100 ms more, which pays for ten more workers
    // starting (150 ms each), not yet for fifteen.
    let early = AlgorithmPolicy {
        running_for_us: Some(50_000),
        ..unknown.clone()
    };
    let decisions = schedule(&Snapshot {
        algorithms: vec![early],
        queue: queue[1..].to_vec(),
        workers: vec![busy.clone()],
        nodes: vec![node.clone()],
        ..Snapshot::default()
    });
    assert_eq!(decisions.start.len(), 10);
    // Run 200 ms (taken as 400 ms): each waiting task would wait longer than a start for a
    // free worker, so all fifteen spread.
    let long = AlgorithmPolicy {
        running_for_us: Some(200_000),
        ..unknown.clone()
    };
    let decisions = schedule(&Snapshot {
        algorithms: vec![long],
        queue: queue[1..].to_vec(),
        workers: vec![busy.clone()],
        nodes: vec![node.clone()],
        ..Snapshot::default()
    });
    assert_eq!(decisions.start.len(), 15);
    // Measured at 1 ms: 15 tasks are done before a second worker would be ready.
    let short = AlgorithmPolicy {
        mean_task_us: Some(1_000),
        ..unknown
    };
    let decisions = schedule(&Snapshot {
        algorithms: vec![short],
        queue: queue[1..].to_vec(),
        workers: vec![busy],
        nodes: vec![node],
        ..Snapshot::default()
    });
    assert_eq!(decisions.start.len(), 0);
}

#[test]
fn tasks_beyond_the_snapshot_count_toward_starting_workers() {
    let short = AlgorithmPolicy {
        mean_task_us: Some(1_000),
        running_for_us: None,
        ..algorithm("short", 0.1, 256.0, 0.0)
    };
    let node = machine(2, 24_000, 0);
    let busy = worker(1, &short, 0, &node, WorkerState::Busy { priority: 3 });
    let with_beyond = |queued_beyond| Snapshot {
        algorithms: vec![AlgorithmPolicy {
            queued_beyond,
            ..short.clone()
        }],
        queue: vec![task(1, 0, 3, 0)],
        workers: vec![busy.clone()],
        nodes: vec![node.clone()],
        ..Snapshot::default()
    };
    // One 1 ms task: no second worker; 4,000 more behind it (4 s of work): one more starts.
    assert_eq!(schedule(&with_beyond(0)).start.len(), 0);
    assert_eq!(schedule(&with_beyond(4_000)).start.len(), 1);
}

#[test]
fn a_task_running_far_longer_than_its_mean_starts_workers() {
    // Measured at 100 µs (a warm-up of empty tasks), but the task in hand has run 300 ms: the
    // tasks changed, and the 15 behind it are worth more workers.
    let changed = AlgorithmPolicy {
        mean_task_us: Some(100),
        running_for_us: Some(300_000),
        ..algorithm("nap", 0.1, 256.0, 0.0)
    };
    let node = machine(2, 24_000, 0);
    let busy = worker(1, &changed, 0, &node, WorkerState::Busy { priority: 3 });
    let queue: Vec<QueuedTask> = (2..=16).map(|i| task(i, 0, 3, 0)).collect();
    let decisions = schedule(&Snapshot {
        algorithms: vec![changed],
        queue,
        workers: vec![busy],
        nodes: vec![node],
        ..Snapshot::default()
    });
    assert!(decisions.start.len() >= 10, "{:?}", decisions.start.len());
}

#[test]
fn one_second_tasks_behind_busy_workers_still_start_workers() {
    // 12 workers each hold a 1 s task; 4 more wait. Each of them would wait about a second for
    // a free worker, far longer than a start (150 ms): all four get a worker of their own.
    let known = AlgorithmPolicy {
        mean_task_us: Some(1_000_000),
        ..algorithm("sleep", 0.1, 256.0, 0.0)
    };
    let node = machine(2, 24_000, 0);
    let workers: Vec<_> = (1..=12)
        .map(|id| worker(id, &known, 0, &node, WorkerState::Busy { priority: 3 }))
        .collect();
    let queue: Vec<QueuedTask> = (13..=16).map(|i| task(i, 0, 3, 0)).collect();
    let decisions = schedule(&Snapshot {
        algorithms: vec![known],
        queue,
        workers,
        nodes: vec![node],
        ..Snapshot::default()
    });
    assert_eq!(decisions.start.len(), 4, "{:?}", decisions.pending);
}

#[test]
fn short_tasks_get_no_more_workers_than_cores() {
    // 100,000 tasks of 1 ms are 100 s of work, but each is shorter than a start: on 2 cores a
    // third worker would only share them (and, contended, make each task look longer).
    let short = AlgorithmPolicy {
        mean_task_us: Some(1_000),
        running_for_us: None,
        queued_beyond: 100_000,
        ..algorithm("short", 0.1, 256.0, 0.0)
    };
    let node = machine(2, 24_000, 0);
    let busy = |id| worker(id, &short, 0, &node, WorkerState::Busy { priority: 3 });
    let with_workers = |workers: Vec<WorkerView>| Snapshot {
        algorithms: vec![short.clone()],
        queue: vec![task(1, 0, 3, 0)],
        workers,
        nodes: vec![node.clone()],
        ..Snapshot::default()
    };
    assert_eq!(schedule(&with_workers(vec![busy(1)])).start.len(), 1);
    let decisions = schedule(&with_workers(vec![busy(1), busy(2)]));
    assert_eq!(decisions.start.len(), 0);
    assert!(
        decisions.pending[0].reason.contains("short"),
        "{:?}",
        decisions.pending
    );
    // Tasks longer than a start (a sleep, a wait on IO) still spread past the cores.
    let long = AlgorithmPolicy {
        mean_task_us: Some(1_000_000),
        ..short.clone()
    };
    let decisions = schedule(&Snapshot {
        algorithms: vec![long],
        ..with_workers(vec![busy(1), busy(2)])
    });
    assert_eq!(decisions.start.len(), 1);
}

#[test]
fn scaling_up_stops_idle_workers_of_others_only_when_it_saves_more_than_their_start() {
    // numbers on 2 cores: range (0.1) and reduce (0.1) idle, one multiply worker (cpu 1)
    // busy with tasks of 60 ms and two more queued. A second multiply worker would fit only
    // in range's and reduce's room, and would save 60 ms: less than starting them again.
    let mut multiply = algorithm("multiply", 1.0, 64.0, 0.0);
    multiply.mean_task_us = Some(60_000);
    multiply.running_for_us = None;
    let algorithms = vec![
        algorithm("range", 0.1, 256.0, 0.0),
        algorithm("reduce", 0.1, 256.0, 0.0),
        multiply,
    ];
    let node = machine(2, 24_000, 0);
    let workers = vec![
        worker(
            1,
            &algorithms[0],
            0,
            &node,
            WorkerState::Idle { since_ms: 900 },
        ),
        worker(
            2,
            &algorithms[1],
            1,
            &node,
            WorkerState::Idle { since_ms: 900 },
        ),
        worker(
            3,
            &algorithms[2],
            2,
            &node,
            WorkerState::Busy { priority: 3 },
        ),
    ];
    let snapshot = Snapshot {
        now_ms: 1_000,
        algorithms,
        queue: vec![task(10, 2, 3, 950), task(11, 2, 3, 950)],
        workers,
        nodes: vec![node],
        ..Snapshot::default()
    };
    let decisions = schedule(&snapshot);
    assert!(decisions.stop.is_empty(), "{:?}", decisions.stop);
    assert!(decisions.start.is_empty());
    assert!(
        decisions.pending[0].reason.starts_with("waiting for cpu"),
        "{:?}",
        decisions.pending
    );
    let stopped = |snapshot: &Snapshot| -> Vec<WorkerId> {
        schedule(snapshot).stop.iter().map(|s| s.worker).collect()
    };

    // A thousand more queued: the second worker saves seconds, worth their starts.
    let mut large = snapshot.clone();
    large.algorithms[2].queued_beyond = 1_000;
    assert_eq!(stopped(&large), vec![WorkerId(1), WorkerId(2)]);

    // Idle past `evict_idle_after_ms`, they are taken even for the small gain.
    let mut later = snapshot.clone();
    later.now_ms = 900 + later.options.evict_idle_after_ms;
    assert_eq!(stopped(&later), vec![WorkerId(1), WorkerId(2)]);

    // An algorithm with no worker at all takes idle room at once: range, with multiply's
    // two workers idle for 100 ms.
    let mut first = snapshot.clone();
    let (multiply, node) = (&first.algorithms[2], &first.nodes[0]);
    first.workers = vec![
        worker(3, multiply, 2, node, WorkerState::Idle { since_ms: 900 }),
        worker(4, multiply, 2, node, WorkerState::Idle { since_ms: 900 }),
    ];
    first.queue = vec![task(1, 0, 3, 950)];
    assert_eq!(stopped(&first).len(), 1);
}

#[test]
fn a_refill_sends_a_window_only_when_no_round_is_needed() {
    let view = RefillView {
        window: 64,
        held: 30,
        per_worker: 64,
        queued: 1_000,
        others_queued: false,
    };
    // Room for 34: the window is capped by it, then by the queue.
    assert_eq!(refill(view), Some(34));
    assert_eq!(refill(RefillView { queued: 5, ..view }), Some(5));
    assert_eq!(refill(RefillView { held: 0, ..view }), Some(64));
    // A round decides: priorities across algorithms, tasks that go one at a time, nothing
    // queued, no room.
    assert_eq!(
        refill(RefillView {
            others_queued: true,
            ..view
        }),
        None
    );
    assert_eq!(refill(RefillView { window: 1, ..view }), None);
    assert_eq!(refill(RefillView { queued: 0, ..view }), None);
    assert_eq!(refill(RefillView { held: 64, ..view }), None);
}
