"""Per-task logs: what user code prints while its task runs, attached to the task's reply.

``sys.stdout`` and ``sys.stderr`` are replaced once per process by pass-through streams that also
copy into the current task's capture, if one is open. Opening and closing a capture only sets a
few attributes, so a task that prints nothing costs nothing measurable: no per-task stream,
buffer or thread.

Only what user code prints is kept: the runtime marks the thread reading the socket as quiet
whenever that thread is not running ``init`` or ``start`` itself (a task runs on the thread that
read it; a thread that takes the socket over from a long task, to read a ``stop`` or a code-API
reply, is quiet), and writes from a quiet thread are passed through but not copied. Output of
other threads the user's code started is copied while its task's capture is open.

This module must never hold more than about twice ``LIMIT`` characters per task, however much a
task prints.
"""

import sys
import threading

LIMIT = 64 * 1024
TRUNCATED = "...(truncated)\n"

_get_ident = threading.get_ident


class _State:
    __slots__ = ("chunks", "size", "cut", "quiet")

    def __init__(self):
        self.chunks = None  # a list while a task's capture is open
        self.size = 0  # characters in chunks (0 again once the capture is closed)
        self.cut = False  # older text was dropped (False again once the capture is closed)
        self.quiet = None  # the ident of a thread whose writes are not copied


_state = _State()


class _Tee:
    """Stands in for ``sys.stdout`` / ``sys.stderr``: writes through, and copies into the capture."""

    def __init__(self, stream):
        self._hkube_stream = stream

    def write(self, text):
        written = self._hkube_stream.write(text)
        chunks = _state.chunks
        if chunks is not None and text and _get_ident() != _state.quiet:
            _add(chunks, text)
        return written

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._hkube_stream, name)


def _add(chunks, text):
    if not isinstance(text, str):
        text = str(text)
    chunks.append(text)
    _state.size += len(text)
    if _state.size > 2 * LIMIT:
        # Keep the last LIMIT characters: at least LIMIT bytes once encoded, which is all that is sent.
        tail = "".join(chunks)[-LIMIT:]
        chunks[:] = [tail]
        _state.size = len(tail)
        _state.cut = True


def install():
    """Puts the pass-through streams in place (once; again if someone replaced them since)."""
    if not isinstance(sys.stdout, _Tee):
        sys.stdout = _Tee(sys.stdout)
    if not isinstance(sys.stderr, _Tee):
        sys.stderr = _Tee(sys.stderr)


def quiet(ident):
    """Writes from the thread ``ident`` (None: from none) are no longer copied; returns the previous one."""
    previous = _state.quiet
    _state.quiet = ident
    return previous


_UNCHANGED = object()


def begin():
    """Opens a capture for the task about to run on this thread, which stops being quiet.

    Returns the quiet thread before, for ``end`` (or ``quiet``) to restore.
    """
    state = _state
    previous = state.quiet
    state.chunks = []
    state.quiet = None
    return previous


def capture():
    """Opens a capture for the task about to run, leaving the quiet thread as it is."""
    _state.chunks = []


def end(quiet=_UNCHANGED):
    """Closes the capture (making ``quiet`` the quiet thread, when given).

    Returns the captured text (its last LIMIT bytes, marked when cut), or None when nothing was printed.
    """
    state = _state
    if quiet is not _UNCHANGED:
        state.quiet = quiet
    chunks = state.chunks
    state.chunks = None
    if not chunks:
        return None
    cut = state.cut
    state.size, state.cut = 0, False
    return _tail("".join(chunks), cut)


def _tail(text, cut):
    if not text:
        return None
    data = text.encode("utf-8", "replace")
    if len(data) > LIMIT:
        # A character cut in half at the start is dropped, not mangled.
        text = data[-LIMIT:].decode("utf-8", "ignore")
        cut = True
    return TRUNCATED + text if cut else text
