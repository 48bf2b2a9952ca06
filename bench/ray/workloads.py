"""The benchmarks' work, done on Ray for comparison (see bench/src/bin/workers.rs and
bench/src/bin/parallel.rs).

Ray runs locally: one `ray.init` on this machine, `num_cpus=2`, no dashboard. The task bodies
are hkube's own, from `bench/python/bench_tasks.py`, so both sides run the same code. Two
scenarios mirror hkube's:

`--scenario workers` (the worker tier):
- numbers: one remote task makes the list 1..N, N remote tasks multiply an item by k, one remote
  task sums their results (passed as top-level arguments, so Ray resolves the dependencies);
- a chain of S no-op remote tasks, each taking the previous task's result;
- the first task of a remote function defined after `ray.init` (init timed on its own);
- B bytes made by one task (`make`) and read whole by the next (`consume`: a CRC-32 over every
  byte), R times, and the same with 1 byte R times. Two intervals, as hkube's: from the
  producer's stamp to the consumer's end of reading, and the whole 2-task job from the driver.

`--scenario parallel` (do workers run side by side):
- a batch of I tasks that each sleep T s, with Ray's default resources (1 CPU per task) and with
  HKube's default request (0.1 CPU per task), submit → all results, R times;
- one CPU-bound task of `--spin N` rounds, `--single-repeat` times (the speedup's denominator,
  so measured more often), and a batch of J such tasks, R times.

Warm figures are measured after a warm-up, as hkube's are. Prints one JSON object, times in
seconds, on stdout; `{"skipped": "<why>"}` when ray cannot be imported. Ray's own output goes
to stderr.

    python workloads.py [--scenario workers] [--items N] [--chain S] [--bytes B] [--repeat R]
    python workloads.py --scenario parallel --spin N [--sleep-items I] [--sleep-seconds T]
                        [--spin-items J] [--repeat R] [--single-repeat R1]
"""

import argparse
import json
import logging
import os
import sys
import time

# Before ray is imported: no usage-stats prompt or upload.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

TASKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python")
sys.path.insert(0, TASKS)
# Ray's workers are processes started by its raylet, which inherits this environment: so they
# import bench_tasks from the same file.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in [os.path.abspath(TASKS), os.environ.get("PYTHONPATH")] if p
)

import bench_tasks  # noqa: E402


def timed(run):
    start = time.perf_counter()
    value = run()
    return time.perf_counter() - start, value


def workers(ray, args, figures):
    # Cold: a remote function that has never run, right after init.
    @ray.remote
    def first(x):
        return x

    start = time.perf_counter()
    assert ray.get(first.remote(1)) == 1
    figures["cold_first_task_s"] = time.perf_counter() - start

    @ray.remote
    def make_range(n):
        return list(range(1, n + 1))

    @ray.remote
    def multiply(item, k):
        return item * k

    @ray.remote
    def reduce(*results):
        return sum(results)

    def numbers(n, k=2):
        items = ray.get(make_range.remote(n))
        products = [multiply.remote(item, k) for item in items]
        return ray.get(reduce.remote(*products))

    expected = args.items * (args.items + 1)  # k = 2
    assert numbers(args.items) == expected
    start = time.perf_counter()
    assert numbers(args.items) == expected
    figures["numbers_s"] = time.perf_counter() - start
    figures["numbers_tasks"] = args.items + 2

    @ray.remote
    def noop(x):
        return x

    def chain(steps):
        ref = noop.remote(1)
        for _ in range(steps - 1):
            ref = noop.remote(ref)
        return ray.get(ref)

    assert chain(args.chain) == 1
    start = time.perf_counter()
    assert chain(args.chain) == 1
    figures["chain_s"] = time.perf_counter() - start
    figures["chain_steps"] = args.chain

    make = ray.remote(bench_tasks.make)
    consume = ray.remote(bench_tasks.consume)

    def big(n):
        """[whole job, passing, reading] in seconds, after checking every byte arrived."""
        took, (size, passing, crc, reading) = timed(
            lambda: ray.get(consume.remote(make.remote(n)))
        )
        assert size == n, (size, n)
        assert crc == expected_crcs[n], "the consumer read other bytes than were made"
        return [took, passing, reading]

    expected_crcs = {n: bench_tasks.expected_crc(n) for n in (1, args.bytes)}
    big(1)  # warm-up: both functions' workers exist
    figures["big_small"] = [big(1) for _ in range(args.repeat)]
    figures["big"] = [big(args.bytes) for _ in range(args.repeat)]
    figures["bytes"] = args.bytes


def parallel(ray, args, figures):
    def batch(function, inputs):
        """[submit → all results in seconds, distinct worker processes]."""
        took, answers = timed(lambda: ray.get([function.remote(x) for x in inputs]))
        return [took, len({pid for pid, _ in answers})]

    nap = ray.remote(bench_tasks.nap)
    for name, function in [
        ("sleep_default", nap),
        ("sleep_cpu01", nap.options(num_cpus=0.1)),
    ]:
        batch(function, [0] * args.sleep_items)  # warm-up
        figures[name] = [
            batch(function, [args.sleep_seconds] * args.sleep_items)
            for _ in range(args.repeat)
        ]
    spin = ray.remote(bench_tasks.spin)
    batch(spin, [0] * args.spin_items)  # warm-up
    figures["spin_one"] = [batch(spin, [args.spin]) for _ in range(args.single_repeat)]
    figures["spin_batch"] = [
        batch(spin, [args.spin] * args.spin_items) for _ in range(args.repeat)
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["workers", "parallel"], default="workers")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--chain", type=int, default=40)
    parser.add_argument("--bytes", type=int, default=256 << 20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sleep-items", type=int, default=16)
    parser.add_argument("--sleep-seconds", type=float, default=1.0)
    parser.add_argument("--spin-items", type=int, default=8)
    parser.add_argument("--spin", type=int, help="rounds of bench_tasks.spin per CPU-bound task")
    parser.add_argument("--single-repeat", type=int, default=5, help="runs of one CPU-bound task")
    args = parser.parse_args()
    if args.scenario == "parallel" and args.spin is None:
        parser.error("--scenario parallel needs --spin N (the calibrated rounds)")

    try:
        import ray
    except ImportError as error:
        print(json.dumps({"skipped": f"ray cannot be imported ({error})"}))
        return

    figures = {"ray": ray.__version__, "python": sys.version.split()[0]}

    start = time.perf_counter()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    figures["init_s"] = time.perf_counter() - start

    {"workers": workers, "parallel": parallel}[args.scenario](ray, args, figures)

    ray.shutdown()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
