"""hkube's Python runtime.

Connects to the hkube sidecar over a websocket, loads the user's module (HKube's conventions:
``ALGORITHM_ENTRY_POINT``, module-level ``start(args, api)`` with optional ``init``, ``stop`` and
``exit``), and runs tasks. It speaks HKube's worker protocol (JSON encoding, storage v1) and, when
the sidecar offers it, hkube's fast path: one message in and one out per task.

Standard library only, so it installs anywhere Python 3.8+ runs.
"""

from .runner import Runner, run

__all__ = ["Runner", "run"]
__version__ = "0.1.0"
