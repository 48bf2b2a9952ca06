"""The worker-tier benchmark's work, done on Ray for comparison (see bench/src/bin/workers.rs).

Ray runs locally: one `ray.init` on this machine, `num_cpus=2`, no dashboard. The work mirrors
hkube's scenarios:

- numbers: one remote task makes the list 1..N, N remote tasks multiply an item by k, one remote
  task sums their results (passed as top-level arguments, so Ray resolves the dependencies);
- a chain of S no-op remote tasks, each taking the previous task's result;
- the first task of a remote function defined after `ray.init` (init timed on its own);
- a bytes object of B bytes made by one task and measured by the next, and the same with 1 byte.

Warm figures are measured after one warm-up run, as hkube's are. Prints one JSON object, times
in seconds, on stdout; `{"skipped": "<why>"}` when ray cannot be imported. Ray's own output goes
to stderr.

    python workloads.py [--items N] [--chain S] [--bytes B]
"""

import argparse
import json
import logging
import os
import sys
import time

# Before ray is imported: no usage-stats prompt or upload.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--chain", type=int, default=40)
    parser.add_argument("--bytes", type=int, default=256 << 20)
    args = parser.parse_args()

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

    @ray.remote
    def make(size):
        return bytes(size)

    @ray.remote
    def size(data):
        return len(data)

    def big(n):
        return ray.get(size.remote(make.remote(n)))

    assert big(1) == 1
    start = time.perf_counter()
    assert big(1) == 1
    figures["big_small_s"] = time.perf_counter() - start
    start = time.perf_counter()
    assert big(args.bytes) == args.bytes
    figures["big_s"] = time.perf_counter() - start
    figures["bytes"] = args.bytes

    ray.shutdown()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
