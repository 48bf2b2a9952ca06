"""The runtime loop: connect to the sidecar, load the user's code, run tasks.

Two ways to run a task, chosen by the sidecar at connect time:

* HKube's exchange (what HKube's own wrappers speak): ``initialize`` → ``initialized`` →
  ``start`` → ``started`` → ``done`` (storage v1: the result travels in ``done``).
* hkube's fast path (``fast=1`` in the query): ``run`` → ``result``, one message each way, or
  ``runBatch`` → ``results``.

Either way ``stop`` and code-API replies are read while user ``start`` runs. Two threads take
turns (leader/follower): the one reading the socket when work arrives runs the work itself, at
once, and keeps reading once it is answered; a short task involves no other thread at all. The
other thread (the follower) looks every ``TICK`` seconds: when it finds the same work still
running, it takes the socket over, so a ``stop`` is read during a long task. A code-API call
asks it to take over at once, since its reply must be read. Handing the socket over on every task
instead (waking the other thread, then a GIL hand-off) cost about half of a 60–120 µs round trip.

Stop (both ways): the user's ``stop`` is called, the tasks of a batch not begun yet are dropped,
and the task in hand is left to return; its result is discarded, and ``stopped`` follows once it
has returned (HKube's Python wrapper does the same). After ``stopped`` nothing of the stopped work
is ever sent, so the sidecar may hand out the next task. A task that never returns is the
sidecar's to end: it kills the process after its stop timeout.

Errors raised by user code become ``errorMessage`` with the message and the traceback. A module
that fails to import is reported on the first task, not by crashing, so the error reaches the
user's job.

What user code prints while its task runs (``init`` and ``start``) goes to the real streams and is
also attached to the task's reply as ``log`` (see ``logs``); HKube's exchange sends it as a
``taskLog`` message just before ``done`` or ``errorMessage``.
"""

import importlib
import inspect
import json
import os
import queue
import sys
import threading
import time
import traceback

from . import logs, storage, ws


def _json_codec():
    """Compact JSON (what ``json.dumps(separators=(",", ":"))`` writes) and JSON reading, fast.

    Per message this is most of the runtime's own work: ``json.dumps`` with separators builds a
    new ``JSONEncoder`` and the C encoder behind it on every call (3.5 µs for a small result on
    a small VM, against 1.6 µs for one C encoder kept, with no cycle check), and ``json.loads``
    matches whitespace around the value twice (2.7 µs, against 1.3 µs for ``raw_decode``). The
    kept encoder is checked against the standard one at import and left out where it differs or
    is missing; a value it refuses goes through the standard encoder, which raises the standard
    error (``Circular reference detected`` for a cycle, which the kept one meets as recursion).
    """
    standard = json.JSONEncoder(separators=(",", ":"))
    encode = standard.encode
    try:
        from json.encoder import c_make_encoder

        # (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys,
        # allow_nan), as JSONEncoder.iterencode passes them; markers None: no cycle check.
        kept = c_make_encoder(
            None, standard.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
        )
        probe = {"a": [1, 2.5, -0.0, 1e300, "é\n\"", None, True, False], "b": {"c": []}}
        if "".join(kept(probe, 0)) != encode(probe):
            kept = None
    except Exception:  # no C accelerator, or another signature: the standard encoder does it
        kept = None
    if kept is not None:

        def encode(value, kept=kept, join="".join, standard=encode):
            try:
                return join(kept(value, 0))
            except Exception:
                return standard(value)

    decoder = json.JSONDecoder()
    raw_decode, decode_all = decoder.raw_decode, decoder.decode

    def decode(text):
        try:
            value, end = raw_decode(text)
            if end == len(text):
                return value
        except ValueError:
            pass
        return decode_all(text)  # whitespace around the value, or the standard error

    return encode, decode


_encode, _decode = _json_codec()

# Tokens for the follower: look now whether the reader runs work (when it has been parked), take
# the socket over now if the reader runs work (a code-API call waits for its reply), or end.
_LOOK, _TAKE_OVER, _END = "look", "take over", None


class _Reply:
    __slots__ = ("event", "value", "error", "done")

    def __init__(self):
        self.event = threading.Event()
        self.value = None
        self.error = None
        self.done = False


class Api:
    """What ``start(args, api)`` receives: HKube's code API, plus progress."""

    def __init__(self, runner):
        self._runner = runner

    def start_algorithm(self, algorithmName, input=None, includeResult=True):
        """Runs another algorithm in this job; returns its output (or the error text)."""
        return self._runner.call(
            "startAlgorithmExecution",
            "execId",
            {"algorithmName": algorithmName, "input": list(input or []), "includeResult": includeResult},
        )

    def start_stored_subpipeline(self, name, flowInput=None, includeResult=True):
        """Runs a stored pipeline; returns its results (or the error text)."""
        return self._runner.call(
            "startStoredSubPipeline",
            "subPipelineId",
            {"includeResult": includeResult, "subPipeline": {"name": name, "flowInput": flowInput or {}}},
        )

    def start_raw_subpipeline(self, name, nodes, flowInput, options=None, webhooks=None, includeResult=True):
        """Runs a pipeline given as a descriptor; returns its results (or the error text)."""
        sub = {"name": name, "nodes": nodes, "flowInput": flowInput, "options": options or {}, "webhooks": webhooks or {}}
        return self._runner.call("startRawSubPipeline", "subPipelineId", {"includeResult": includeResult, "subPipeline": sub})

    def progress(self, percent):
        """Reports the task's progress (0–100)."""
        self._runner.send({"command": "progress", "data": {"progress": percent}})


_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))


def _error_payload(exc):
    """HKube's ``{code, message, details}`` plus hkube's ``type``, ``file`` and ``line``.

    ``message`` stays ``str(exc)`` as HKube's wrapper sends it (``'missing-key'`` for a
    ``KeyError``); ``type`` names the exception, and ``file``/``line`` the innermost frame in
    the user's folder (a library's frame says less about what to fix). ``details`` is the
    traceback without this runtime's own frames.
    """
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_runtime_file(f.filename)]
    lines = traceback.format_exception_only(type(exc), exc)
    if frames:
        lines = ["Traceback (most recent call last):\n"] + traceback.format_list(frames) + lines
    payload = {
        "code": "Failed",
        "message": str(exc) or type(exc).__name__,
        "details": "".join(lines),
        "type": type(exc).__name__,
    }
    where = None
    if isinstance(exc, SyntaxError) and exc.filename:
        where = (exc.filename, exc.lineno)
    else:
        cwd = os.getcwd() + os.sep
        mine = [f for f in frames if os.path.abspath(f.filename).startswith(cwd)]
        frame = (mine or frames or [None])[-1]
        if frame is not None:
            where = (frame.filename, frame.lineno)
    if where is not None:
        file, line = where
        absolute = os.path.abspath(file)
        if absolute.startswith(os.getcwd() + os.sep):
            file = os.path.relpath(absolute)
        payload["file"] = file
        if line is not None:
            payload["line"] = line
    return payload


def _is_runtime_file(filename):
    # The runtime and the import machinery are not where a user looks for the cause.
    if filename.startswith("<frozen"):
        return True
    folder = os.path.dirname(os.path.abspath(filename))
    return folder == _RUNTIME_DIR or os.path.basename(folder) == "importlib"


class Runner:
    def __init__(self, start=None, init=None, stop=None, exit=None, load_error=None):
        self.start_fn, self.init_fn, self.stop_fn, self.exit_fn = start, init, stop, exit
        self.load_error = load_error
        self.conn = None
        self.api = Api(self)
        self.args = None
        self.stop_requested = False
        # Guards stop_requested and _busy: the answer to the work in hand (a result, `done`) and
        # `stopped` are decided under it, so exactly one of them ends that work.
        self._lock = threading.Lock()
        self._busy = False  # work is in hand (a fast-path run or batch, or start)
        self._user_stop_done = threading.Event()
        self._user_stop_done.set()
        # Tokens for the follower (_LOOK, _TAKE_OVER, _END).
        self._turns = queue.SimpleQueue()
        self._ended = threading.Event()
        self._deferred = None  # work that arrived while user code read the socket (init)
        self.exit_code = None
        self._next_id = 0
        self._waiting = {}
        self._id_lock = threading.Lock()
        # Under _lock: the ident of the thread that owns the socket; the number of the work it
        # runs itself now (None while it reads); how many works began; the follower is parked.
        self._reader = None
        self._running = None
        self._works = 0
        self._parked = False
        # HKube allows start(args) as well as start(args, api).
        self._start_takes_api = start is not None and _positional_count(start) != 1

    # -- wire ---------------------------------------------------------------------------

    def send(self, message):
        self.conn.send_text(_encode(message))

    def call(self, command, id_field, payload):
        """Sends a code-API request and waits for its reply."""
        with self._id_lock:
            self._next_id += 1
            request_id = str(self._next_id)
            reply = _Reply()
            self._waiting[request_id] = reply
        payload = dict(payload)
        payload[id_field] = request_id
        self.send({"command": command, "data": payload})
        with self._lock:
            # The reader itself runs work (maybe this very call): nobody reads the reply unless
            # the follower takes the socket over, now.
            if self._running is not None:
                self._parked = False
                self._turns.put(_TAKE_OVER)
                reading_here = False
            else:
                reading_here = threading.get_ident() == self._reader
        if reading_here:
            # User code on the reading thread (init): nobody else reads the socket, so read it
            # here until the reply is in. What is printed meanwhile is not the task's.
            previous = logs.quiet(threading.get_ident())
            try:
                while not reply.done:
                    work = self._dispatch(self._receive())
                    if work is not None:
                        self._deferred = work
            finally:
                logs.quiet(previous)
        else:
            reply.event.wait()
        return reply.error if reply.error is not None else reply.value

    def _receive(self):
        # Polling only when no task runs here (the reader between tasks); see ws.recv.
        with self._lock:
            idle = not self._busy
        text = self.conn.recv(poll=idle)
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return _decode(text)

    def _resolve(self, request_id, value=None, error=None):
        with self._id_lock:
            reply = self._waiting.pop(str(request_id), None)
        if reply is None:
            return
        reply.value, reply.error, reply.done = value, error, True
        reply.event.set()

    # -- the loop -----------------------------------------------------------------------

    def serve(self, conn):
        """Handles messages until ``exit`` or until the connection closes."""
        self.conn = conn
        logs.install()
        threads = [
            threading.Thread(target=self._take_turns, args=(first,), name="hkube-{}".format(i), daemon=True)
            for i, first in ((1, True), (2, False))
        ]
        for thread in threads:
            thread.start()
        # A task may still run when the connection ends: its thread is a daemon, as before.
        self._ended.wait()
        return self.exit_code

    # -- the two threads ----------------------------------------------------------------

    # How often the follower looks whether the reader still runs the same work; a task that
    # runs longer than one to two ticks has the socket read by the follower meanwhile. It parks
    # (no wake-ups at all) once no work began for PARK_TICKS ticks.
    TICK = 0.005
    PARK_TICKS = 200

    def _take_turns(self, first):
        me = threading.get_ident()
        if first:
            with self._lock:
                self._reader = me
                logs.quiet(me)
        elif not self._follow(me):
            return
        while True:
            work = self._read_until_work()
            if work is None:
                self._ended.set()
                self._turns.put(_END)  # the follower ends, or the thread running work once it returned
                return
            with self._lock:
                self._works += 1
                self._running = self._works
                # Nobody reads while this thread runs the work: what it prints is the task's.
                logs.quiet(None)
                if self._parked:
                    self._parked = False
                    self._turns.put(_LOOK)
            run, data = work
            try:
                run(data)
            except ws.ConnectionClosed:
                pass  # the reading thread sees the close and ends
            except Exception:  # the runtime's own failure: say so, keep serving
                traceback.print_exc()
            with self._lock:
                kept = self._reader == me
                if kept:
                    self._running = None
                    logs.quiet(me)  # the reading thread's own output is never a task's
            if not kept and not self._follow(me):
                return

    def _follow(self, me):
        """Waits until this thread takes the socket over (True) or the session ends (False)."""
        seen = None  # the work found running at the last look
        looked = self._works
        idle = 0
        while True:
            with self._lock:
                parked = self._parked
            try:
                token = self._turns.get() if parked else self._turns.get(timeout=self.TICK)
            except queue.Empty:
                token = _LOOK
            if token is _END or self._ended.is_set():
                return False
            with self._lock:
                running = self._running
                if running is None or (token is _LOOK and running != seen):
                    # Nothing to take over yet: the reader reads, or its work began since the last look.
                    seen = running
                    idle = 0 if self._works != looked else idle + 1
                    looked = self._works
                    if idle >= self.PARK_TICKS:
                        self._parked = True
                    continue
                # The reader has run this work for a tick at least, or a code-API reply is awaited.
                self._reader = me
                self._running = None
                logs.quiet(me)
                return True

    def _read_until_work(self):
        """Handles messages until one brings work (returned) or the session ends (None)."""
        try:
            while self.exit_code is None:
                work, self._deferred = self._deferred, None
                if work is None:
                    work = self._dispatch(self._receive())
                if work is not None:
                    return work
        except ws.ConnectionClosed:
            pass
        return None

    def _hand_over(self, work, data):
        """The work in hand is ``work(data)`` (the sidecar sends the next only once this one is answered)."""
        with self._lock:
            self.stop_requested = False
            self._busy = True
        return work, data

    def _send_unless_stopped(self, messages, last=False):
        """Sends answers of the work in hand unless a stop came first; ``last`` ends that work.

        Returns False when stopped: the answers are dropped and, if ``last``, ``stopped`` is sent.
        """
        with self._lock:
            stopped = self.stop_requested
            if last:
                self._busy = False
            if not stopped:
                for message in messages:
                    if isinstance(message, str):
                        self.conn.send_text(message)
                    else:
                        self.send(message)
        if stopped and last:
            # Once the user's stop has returned, whichever thread gets there first.
            self._user_stop_done.wait()
            self.send({"command": "stopped"})
        return not stopped


    def _dispatch(self, message):
        """Handles one message; returns the work it brings, for a thread other than the reader."""
        command = message.get("command")
        data = message.get("data")
        handler = _HANDLERS.get(command)
        if handler is not None:
            return handler(self, data if data is not None else {})
        return None

    # -- HKube's exchange ---------------------------------------------------------------

    def _on_initialize(self, data):
        self.args = data
        self.stop_requested = False
        if self.load_error is not None:
            self.send({"command": "errorMessage", "error": self.load_error})
            return
        # The capture stays open from init to the end of start, which runs off the reading thread.
        previous = logs.begin()
        try:
            if self.init_fn is not None:
                self.init_fn(data)
        except Exception as exc:  # user code: report, never crash the runtime
            self._send_log(data.get("taskId"), logs.end(previous))
            self.send({"command": "errorMessage", "error": _error_payload(exc)})
            return
        logs.quiet(previous)
        self.send({"command": "initialized"})

    def _on_start(self, _data):
        self.send({"command": "started"})
        args = self.args or {}
        with self._lock:
            self._busy = True
        return self._run_task, args

    def _run_task(self, args):
        task_id = args.get("taskId")
        try:
            output = self._call_start(args)
            output = storage.prepare_output(output, args.get("jobId"), task_id)
        except Exception as exc:
            log = logs.end()
            error = {"command": "errorMessage", "error": _error_payload(exc)}
            self._send_unless_stopped(self._with_log(task_id, log, [error]), last=True)
            return
        log = logs.end()
        try:
            text = _encode({"command": "done", "data": output})
        except (TypeError, ValueError) as exc:
            error = {"code": "Failed", "message": "the result cannot be sent as JSON: {}".format(exc)}
            text = _encode({"command": "errorMessage", "error": error})
        self._send_unless_stopped(self._with_log(task_id, log, [text]), last=True)

    @staticmethod
    def _with_log(task_id, log, messages):
        if log is None:
            return messages
        return [{"command": "taskLog", "data": {"taskId": task_id, "log": log}}] + messages

    def _send_log(self, task_id, log):
        if log is not None:
            self.send({"command": "taskLog", "data": {"taskId": task_id, "log": log}})

    def _call_start(self, args):
        if self.start_fn is None:
            raise RuntimeError("the algorithm has no start function")
        if "input" in args:
            args["input"] = storage.resolve(args["input"])
        if self._start_takes_api:
            return self.start_fn(args, self.api)
        return self.start_fn(args)

    def _on_stop(self, data):
        with self._lock:
            self.stop_requested = True
            busy = self._busy
            self._user_stop_done.clear()
        try:
            if self.stop_fn is not None:
                self.stop_fn(data)
        except Exception:
            traceback.print_exc()
        finally:
            self._user_stop_done.set()
        if not busy:
            self.send({"command": "stopped"})
        # Otherwise the thread running the work sends `stopped` once the task in hand has returned.

    def _on_exit(self, data):
        if self.exit_fn is not None:
            try:
                self.exit_fn(data)
            except Exception:
                traceback.print_exc()
        self.exit_code = int(data.get("exitCode", 0) or 0)
        self.conn.close()

    # -- hkube's fast path --------------------------------------------------------------

    def _run_fast(self, data):
        task_id = data.get("taskId")
        if self.load_error is not None:
            return {"taskId": task_id, "error": self.load_error}
        # Whoever reads the socket meanwhile stays quiet (a user stop is not the task's).
        logs.capture()
        try:
            if self.init_fn is not None:
                self.init_fn(data)
            output = self._call_start(data)
            outcome = {"taskId": task_id, "output": storage.prepare_output(output, data.get("jobId"), task_id)}
        except Exception as exc:
            outcome = {"taskId": task_id, "error": _error_payload(exc)}
        except BaseException:
            logs.end()
            raise
        log = logs.end()
        if log is not None:
            outcome["log"] = log
        return outcome

    def _on_run(self, data):
        return self._hand_over(self._run_one, data)

    def _run_one(self, data):
        outcome = self._run_fast(data)
        task_data = {"taskId": outcome["taskId"]}
        if "log" in outcome:
            task_data["log"] = outcome["log"]
        if "error" in outcome:
            message = {"command": "errorMessage", "error": outcome["error"], "data": task_data}
        else:
            try:
                message = _encode({"command": "result", "data": outcome})
            except (TypeError, ValueError) as exc:
                error = {"code": "Failed", "message": "the result cannot be sent as JSON: {}".format(exc)}
                message = {"command": "errorMessage", "error": error, "data": task_data}
        self._send_unless_stopped([message], last=True)

    # A batch's results go out in parts: once the results not yet sent took this long to
    # produce, they are sent. Short tasks still share one message; a long task's result leaves
    # as soon as it is done (and a crash of the process loses no finished task).
    FLUSH_SECONDS = 0.02

    def _on_run_batch(self, data):
        return self._hand_over(self._run_batch, data)

    def _run_batch(self, data):
        pending = []
        since = None
        for task in data.get("tasks", []):
            if self.stop_requested:
                break  # the rest of a stopped batch never runs
            if since is None:
                since = time.monotonic()
            pending.append(self._run_fast(task))
            if time.monotonic() - since >= self.FLUSH_SECONDS:
                if not self._send_unless_stopped([self._results_text(pending)]):
                    break
                pending, since = [], None
        self._send_unless_stopped([self._results_text(pending)] if pending else [], last=True)

    @staticmethod
    def _results_text(results):
        try:
            return _encode({"command": "results", "data": {"results": results}})
        except (TypeError, ValueError) as exc:
            error = {"code": "Failed", "message": "a result cannot be sent as JSON: {}".format(exc)}
            failed = []
            for r in results:
                entry = {"taskId": r["taskId"], "error": error}
                if "log" in r:
                    entry["log"] = r["log"]
                failed.append(entry)
            return _encode({"command": "results", "data": {"results": failed}})

    # -- code-API replies ---------------------------------------------------------------

    def _on_algorithm_done(self, data):
        self._resolve(data.get("execId"), value=data.get("response"))

    def _on_algorithm_error(self, data):
        self._resolve(data.get("execId"), error=data.get("error"))

    def _on_subpipeline_done(self, data):
        self._resolve(data.get("subPipelineId"), value=data.get("response"))

    def _on_subpipeline_error(self, data):
        self._resolve(data.get("subPipelineId"), error=data.get("error"))

    def _on_subpipeline_stopped(self, data):
        self._resolve(data.get("subPipelineId"), value=None)


_HANDLERS = {
    "initialize": Runner._on_initialize,
    "start": Runner._on_start,
    "stop": Runner._on_stop,
    "exit": Runner._on_exit,
    "run": Runner._on_run,
    "runBatch": Runner._on_run_batch,
    "algorithmExecutionDone": Runner._on_algorithm_done,
    "algorithmExecutionError": Runner._on_algorithm_error,
    "subPipelineDone": Runner._on_subpipeline_done,
    "subPipelineError": Runner._on_subpipeline_error,
    "subPipelineStopped": Runner._on_subpipeline_stopped,
}


def _positional_count(fn):
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return 2
    return sum(1 for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def load_algorithm(entry_point, algorithm_path=None):
    """Imports the user's module by HKube's convention: ``foo/bar/main.py`` → ``foo.bar.main``.

    Returns ``(functions, error)``; ``error`` is an errorMessage payload naming what is missing.
    """
    if algorithm_path and os.path.isdir(algorithm_path):
        os.chdir(algorithm_path)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name = entry_point[:-3] if entry_point.endswith(".py") else entry_point
    module_name = module_name.replace("/", ".").strip(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        error = _error_payload(exc)
        error["message"] = "cannot load the algorithm's entry point {!r} (module {!r}) from {}: {}: {}".format(
            entry_point, module_name, os.getcwd(), error["type"], error["message"]
        )
        return {}, error
    functions = {name: getattr(module, name, None) for name in ("start", "init", "stop", "exit")}
    if not callable(functions["start"]):
        return functions, {
            "code": "Failed",
            "message": "the algorithm's entry point {!r} has no start(args, api) function".format(entry_point),
        }
    return functions, None


def run(start, init=None, stop=None, exit=None):
    """For a custom image: run these functions behind the sidecar (blocks until exit)."""
    return _connect_and_serve(Runner(start=start, init=init, stop=stop, exit=exit))


def run_from_env():
    functions, error = load_algorithm(
        os.environ.get("ALGORITHM_ENTRY_POINT", "main.py"),
        os.environ.get("ALGORITHM_PATH"),
    )
    return _connect_and_serve(Runner(load_error=error, **functions))


def _connect_and_serve(runner):
    host = os.environ.get("WORKER_SOCKET_HOST", "127.0.0.1")
    port = int(os.environ.get("WORKER_SOCKET_PORT", "3000"))
    # hkube's local sidecar also listens on a Unix socket: no TCP/IP stack per message.
    unix_path = os.environ.get("HKUBE_WORKER_SOCKET_PATH") or None
    fast = os.environ.get("HKUBE_FAST_PATH", "1") not in ("0", "false", "no")
    path = "/?storage=v1&encoding=json" + ("&fast=1" if fast else "")
    # The sidecar may still be starting: retry for a while, then give up with a clear message.
    deadline = time.monotonic() + float(os.environ.get("HKUBE_CONNECT_TIMEOUT", "30"))
    while True:
        try:
            conn = ws.connect(host, port, path, unix_path)
            break
        except (OSError, ws.ConnectionClosed) as exc:
            if time.monotonic() > deadline:
                where = unix_path or "{}:{}".format(host, port)
                sys.stderr.write("hkube runtime: cannot reach the sidecar at {}: {}\n".format(where, exc))
                return 1
            time.sleep(0.05)
    code = runner.serve(conn)
    return 0 if code is None else code
