"""hkube's Python runtime.

Connects to the hkube sidecar over a websocket, loads the user's module (HKube's conventions:
``ALGORITHM_ENTRY_POINT``, module-level ``start(args, api)`` with optional ``init``, ``stop`` and
``exit``), and runs tasks. It speaks HKube's worker protocol (JSON encoding, storage v1) and, when
the sidecar offers it, hkube's fast path: one message in and one out per task.

Large values: a task that returns ``bytes`` writes them to the shared storage folder,
``<BASE_FS_ADAPTER_DIRECTORY>/<CLUSTER_NAME or local>-hkube/<jobId>/<taskId>`` (HKube's 8-byte
header, then the bytes) and answers with ``{"$$hkubeRef": {"path", "size"}}``; references in a
task's ``input`` are replaced by what they point at (``bytes`` for raw objects, the value for JSON
ones) before ``start`` runs. See ``storage``.

Task logs: what ``init`` and ``start`` print to ``sys.stdout`` and ``sys.stderr`` still goes there,
and is also sent with the task's reply, cut to its last 64 KiB (then starting with
``...(truncated)\\n``): the ``log`` field of a fast-path ``result`` (or of an ``errorMessage``'s
``data``, or of each ``runBatch`` result), or, in HKube's exchange, a ``taskLog`` message
``{"taskId", "log"}`` just before ``done`` or ``errorMessage``. A silent task gets no ``log``. See
``logs``.

Standard library only, so it installs anywhere Python 3.8+ runs.
"""

from .runner import Runner, run

__all__ = ["Runner", "run"]
__version__ = "0.1.0"
