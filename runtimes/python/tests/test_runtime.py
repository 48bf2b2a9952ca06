"""The Python runtime against a scripted sidecar on a real socket.

The test plays the sidecar with the runtime's own websocket code (server side) and checks the
messages the runtime sends back, for HKube's exchange and for hkube's fast path.
"""

import contextlib
import io
import json
import os
import socket
import sys
import tempfile
import textwrap
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from hkube_runtime import logs, ws  # noqa: E402
from hkube_runtime.runner import Runner, load_algorithm  # noqa: E402


class Sidecar:
    """Accepts one runtime connection; send() and recv() speak JSON envelopes."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.conn = None
        self.path = None

    def accept(self):
        sock, _ = self.listener.accept()
        sock.settimeout(10)
        self.conn, self.path = ws.accept(sock)

    def send(self, command, data=None):
        message = {"command": command}
        if data is not None:
            message["data"] = data
        self.conn.send_text(json.dumps(message))

    def recv(self):
        return json.loads(self.conn.recv())

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def serve(runner):
    """Runs the runtime's loop against a fresh scripted sidecar on a thread."""
    sidecar = Sidecar()
    outcome = {}

    def client():
        conn = ws.connect("127.0.0.1", sidecar.port, "/?storage=v1&encoding=json&fast=1")
        outcome["code"] = runner.serve(conn)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    sidecar.accept()
    return sidecar, thread, outcome


class FastPath(unittest.TestCase):
    def test_one_message_in_one_out(self):
        runner = Runner(start=lambda args, api: sum(args["input"]))
        sidecar, thread, outcome = serve(runner)
        self.assertEqual(sidecar.path, "/?storage=v1&encoding=json&fast=1")
        for i in range(3):
            sidecar.send("run", {"taskId": "t%d" % i, "input": [i, 10]})
            self.assertEqual(sidecar.recv(), {"command": "result", "data": {"taskId": "t%d" % i, "output": i + 10}})
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        self.assertEqual(outcome["code"], 0)
        sidecar.close()

    def test_start_with_one_parameter(self):
        runner = Runner(start=lambda args: args["input"][0] * 3)
        sidecar, thread, _ = serve(runner)
        sidecar.send("run", {"taskId": "t", "input": [5]})
        self.assertEqual(sidecar.recv()["data"]["output"], 15)
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()

    def test_an_exception_becomes_an_error_with_its_traceback(self):
        def start(args, api):
            raise ValueError("bad value")

        sidecar, thread, _ = serve(Runner(start=start))
        sidecar.send("run", {"taskId": "t1", "input": []})
        reply = sidecar.recv()
        self.assertEqual(reply["command"], "errorMessage")
        self.assertEqual(reply["data"], {"taskId": "t1"})
        self.assertEqual(reply["error"]["message"], "bad value")
        self.assertIn("ValueError: bad value", reply["error"]["details"])
        self.assertIn("in start", reply["error"]["details"])
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()

    def test_a_batch_of_tasks_in_one_message(self):
        def start(args, api):
            if args["input"][0] < 0:
                raise RuntimeError("negative")
            return args["input"][0] * 2

        sidecar, thread, _ = serve(Runner(start=start))
        sidecar.send("runBatch", {"tasks": [{"taskId": "a", "input": [1]}, {"taskId": "b", "input": [-1]}, {"taskId": "c", "input": [3]}]})
        results = sidecar.recv()["data"]["results"]
        self.assertEqual(results[0], {"taskId": "a", "output": 2})
        self.assertEqual(results[1]["error"]["message"], "negative")
        self.assertEqual(results[2], {"taskId": "c", "output": 6})
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()

    def test_a_slow_batch_is_answered_in_parts(self):
        import time as clock

        def start(args, api):
            clock.sleep(args["input"][0])
            return args["input"][0]

        sidecar, thread, _ = serve(Runner(start=start))
        sidecar.send("runBatch", {"tasks": [{"taskId": "a", "input": [0.05]}, {"taskId": "b", "input": [0]}]})
        first = sidecar.recv()["data"]["results"]
        self.assertEqual(first, [{"taskId": "a", "output": 0.05}])
        self.assertEqual(sidecar.recv()["data"]["results"], [{"taskId": "b", "output": 0}])
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()

    def test_a_stopped_batch_runs_no_further_and_sends_nothing_after_stopped(self):
        import time as clock
        ran = []

        def start(args, api):
            ran.append(args["taskId"])
            clock.sleep(0.3)
            return args["taskId"]

        stops = []
        sidecar, thread, _ = serve(Runner(start=start, stop=lambda data: stops.append(data)))
        tasks = [{"taskId": "t%d" % i, "input": []} for i in range(6)]
        sidecar.send("runBatch", {"tasks": tasks})
        self.assertEqual(sidecar.recv()["data"]["results"], [{"taskId": "t0", "output": "t0"}])
        sidecar.send("stop", {"forceStop": True})
        # t1 was in hand: it returns, its result is dropped; t2.. never run.
        self.assertEqual(sidecar.recv(), {"command": "stopped"})
        self.assertEqual(ran, ["t0", "t1"])
        self.assertEqual(stops, [{"forceStop": True}])
        # The runtime is clean: the next task's answer is the next message.
        sidecar.send("run", {"taskId": "next", "input": []})
        self.assertEqual(sidecar.recv(), {"command": "result", "data": {"taskId": "next", "output": "next"}})
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()

    def test_a_stop_between_tasks_is_answered_at_once(self):
        sidecar, thread, _ = serve(Runner(start=lambda args, api: 1))
        sidecar.send("run", {"taskId": "t", "input": []})
        sidecar.recv()
        sidecar.send("stop", {"forceStop": True})
        self.assertEqual(sidecar.recv(), {"command": "stopped"})
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()

    def test_a_code_api_call_inside_a_fast_task(self):
        def start(args, api):
            return api.start_algorithm("double", [args["input"][0]]) + 1

        sidecar, thread, _ = serve(Runner(start=start))
        sidecar.send("run", {"taskId": "t", "input": [20]})
        request = sidecar.recv()
        self.assertEqual(request["command"], "startAlgorithmExecution")
        self.assertEqual(request["data"]["algorithmName"], "double")
        self.assertEqual(request["data"]["input"], [20])
        sidecar.send("algorithmExecutionDone", {"execId": request["data"]["execId"], "response": 40})
        self.assertEqual(sidecar.recv(), {"command": "result", "data": {"taskId": "t", "output": 41}})
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()

    def test_a_code_api_call_from_a_thread_of_the_task(self):
        # The task runs on the thread that read it; a thread the task started calls the code
        # API, so the other runtime thread must take the socket over to read the reply.
        def start(args, api):
            box = []
            helper = threading.Thread(target=lambda: box.append(api.start_algorithm("double", [2])))
            helper.start()
            helper.join(5)
            return box[0] + 1

        sidecar, thread, _ = serve(Runner(start=start))
        sidecar.send("run", {"taskId": "t", "input": []})
        request = sidecar.recv()
        self.assertEqual(request["command"], "startAlgorithmExecution")
        sidecar.send("algorithmExecutionDone", {"execId": request["data"]["execId"], "response": 4})
        self.assertEqual(sidecar.recv(), {"command": "result", "data": {"taskId": "t", "output": 5}})
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()

    def test_a_stop_is_read_during_a_long_task_after_an_idle_spell(self):
        # Short tasks run on the reading thread; the other thread looks every TICK and takes the
        # socket over from a task that runs on. Idle, it parks; the next task wakes it again.
        import time as clock

        release = threading.Event()

        def start(args, api):
            if args["input"]:
                release.wait(5)
                return "late"
            return "quick"

        runner = Runner(start=start, stop=lambda data: release.set())
        runner.TICK, runner.PARK_TICKS = 0.005, 3
        sidecar, thread, _ = serve(runner)
        for i in range(20):
            sidecar.send("run", {"taskId": "q%d" % i, "input": []})
            self.assertEqual(sidecar.recv()["data"]["output"], "quick")
        deadline = clock.monotonic() + 5
        while not runner._parked and clock.monotonic() < deadline:
            clock.sleep(0.01)
        self.assertTrue(runner._parked, "the idle follower parks")
        sidecar.send("run", {"taskId": "long", "input": [1]})
        clock.sleep(0.05)
        began = clock.monotonic()
        sidecar.send("stop", {"forceStop": True})
        # The result of the stopped task is never sent: `stopped` is the next message.
        self.assertEqual(sidecar.recv(), {"command": "stopped"})
        self.assertLess(clock.monotonic() - began, 1)
        sidecar.send("run", {"taskId": "after", "input": []})
        self.assertEqual(sidecar.recv(), {"command": "result", "data": {"taskId": "after", "output": "quick"}})
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()

    def test_a_result_that_is_not_json(self):
        sidecar, thread, _ = serve(Runner(start=lambda args, api: object()))
        sidecar.send("run", {"taskId": "t", "input": []})
        reply = sidecar.recv()
        self.assertEqual(reply["command"], "errorMessage")
        self.assertIn("cannot be sent as JSON", reply["error"]["message"])
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()


class LargeValues(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        os.environ["BASE_FS_ADAPTER_DIRECTORY"] = self.folder.name
        os.environ["CLUSTER_NAME"] = "test"

    def tearDown(self):
        del os.environ["BASE_FS_ADAPTER_DIRECTORY"]
        del os.environ["CLUSTER_NAME"]
        self.folder.cleanup()

    def test_bytes_go_through_storage_both_ways(self):
        def start(args, api):
            data = args["input"][0]
            if isinstance(data, bytes):
                return len(data)
            return b"\x00\x01" * data

        sidecar, thread, _ = serve(Runner(start=start))
        sidecar.send("run", {"jobId": "j1", "taskId": "t1", "input": [3]})
        reply = sidecar.recv()
        reference = {"$$hkubeRef": {"path": "test-hkube/j1/t1", "size": 6}}
        self.assertEqual(reply, {"command": "result", "data": {"taskId": "t1", "output": reference}})
        with open(os.path.join(self.folder.name, "test-hkube/j1/t1"), "rb") as f:
            self.assertEqual(f.read(), bytes([1, 8, 1, 3, 0, 0, 72, 75]) + b"\x00\x01" * 3)
        self.assertEqual(os.listdir(os.path.join(self.folder.name, "test-hkube/j1")), ["t1"])
        sidecar.send("run", {"jobId": "j1", "taskId": "t2", "input": [reference]})
        self.assertEqual(sidecar.recv()["data"]["output"], 6)
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()

    def test_large_stored_inputs_are_mapped_not_copied(self):
        from hkube_runtime import storage

        saved = storage.ZERO_COPY_BYTES
        storage.ZERO_COPY_BYTES = 4
        try:
            reference = storage.store_bytes("j", "big", b"abcdefgh")
            view = storage.load(reference)
            self.assertIsInstance(view, memoryview)
            self.assertTrue(view.readonly)
            self.assertEqual(bytes(view), b"abcdefgh")
            small = storage.store_bytes("j", "small", b"abc")
            self.assertEqual(storage.load(small), b"abc")
        finally:
            storage.ZERO_COPY_BYTES = saved

    def test_a_missing_stored_input_is_named(self):
        sidecar, thread, _ = serve(Runner(start=lambda args, api: 1))
        missing = {"$$hkubeRef": {"path": "test-hkube/j/none", "size": 1}}
        sidecar.send("run", {"jobId": "j", "taskId": "t", "input": [[missing]]})
        reply = sidecar.recv()
        self.assertEqual(reply["command"], "errorMessage")
        self.assertIn("cannot read input test-hkube/j/none", reply["error"]["message"])
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()


@contextlib.contextmanager
def real_streams():
    """Stands in for the process's stdout and stderr, to see what is passed through."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    try:
        yield sys.stdout, sys.stderr
    finally:
        sys.stdout, sys.stderr = saved


class TaskLogs(unittest.TestCase):
    def test_stdout_and_stderr_in_order_and_passed_through(self):
        def start(args, api):
            print("out", args["input"][0])
            sys.stderr.write("err 2\n")
            print("out 3")
            return 1

        with real_streams() as (out, err):
            sidecar, thread, _ = serve(Runner(start=start))
            sidecar.send("run", {"taskId": "t", "input": [1]})
            reply = sidecar.recv()
            sidecar.send("exit", {"exitCode": 0})
            thread.join(5)
            sidecar.close()
        self.assertEqual(reply, {"command": "result", "data": {"taskId": "t", "output": 1, "log": "out 1\nerr 2\nout 3\n"}})
        self.assertEqual((out.getvalue(), err.getvalue()), ("out 1\nout 3\n", "err 2\n"))

    def test_a_silent_task_has_no_log(self):
        sidecar, thread, _ = serve(Runner(start=lambda args, api: 2))
        sidecar.send("run", {"taskId": "t", "input": []})
        self.assertEqual(sidecar.recv(), {"command": "result", "data": {"taskId": "t", "output": 2}})
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()

    def test_a_batch_where_only_the_second_task_prints(self):
        def start(args, api):
            if args["input"][0] == 2:
                print("second")
            return args["input"][0]

        with real_streams():
            sidecar, thread, _ = serve(Runner(start=start))
            sidecar.send("runBatch", {"tasks": [{"taskId": "a", "input": [1]}, {"taskId": "b", "input": [2]}, {"taskId": "c", "input": [3]}]})
            results = sidecar.recv()["data"]["results"]
            sidecar.send("exit", {"exitCode": 0})
            thread.join(5)
            sidecar.close()
        self.assertEqual(results, [
            {"taskId": "a", "output": 1},
            {"taskId": "b", "output": 2, "log": "second\n"},
            {"taskId": "c", "output": 3},
        ])

    def test_truncation_keeps_the_tail(self):
        def start(args, api):
            for i in range(300):
                print("line %05d " % i + "x" * 1000)
            print("the end")

        with real_streams():
            sidecar, thread, _ = serve(Runner(start=start))
            sidecar.send("run", {"taskId": "t", "input": []})
            log = sidecar.recv()["data"]["log"]
            sidecar.send("exit", {"exitCode": 0})
            thread.join(5)
            sidecar.close()
        self.assertTrue(log.startswith(logs.TRUNCATED), log[:40])
        self.assertEqual(len(log.encode("utf-8")), len(logs.TRUNCATED) + logs.LIMIT)
        self.assertTrue(log.endswith("x\nthe end\n"))
        self.assertIn("line 00299 ", log)
        self.assertNotIn("line 00200 ", log)

    def test_an_error_carries_the_log(self):
        def start(args, api):
            print("about to fail")
            raise ValueError("bad")

        with real_streams():
            sidecar, thread, _ = serve(Runner(start=start))
            sidecar.send("run", {"taskId": "t", "input": []})
            reply = sidecar.recv()
            sidecar.send("exit", {"exitCode": 0})
            thread.join(5)
            sidecar.close()
        self.assertEqual(reply["command"], "errorMessage")
        self.assertEqual(reply["data"], {"taskId": "t", "log": "about to fail\n"})

    def test_output_around_a_code_api_call_is_the_tasks(self):
        def start(args, api):
            print("before")
            value = api.start_algorithm("double", [1])
            print("after", value)
            return value

        with real_streams():
            sidecar, thread, _ = serve(Runner(start=start))
            sidecar.send("run", {"taskId": "t", "input": []})
            request = sidecar.recv()
            sidecar.send("algorithmExecutionDone", {"execId": request["data"]["execId"], "response": 2})
            reply = sidecar.recv()
            sidecar.send("exit", {"exitCode": 0})
            thread.join(5)
            sidecar.close()
        self.assertEqual(reply["data"]["log"], "before\nafter 2\n")

    def test_a_stop_while_waiting_for_the_code_api_ends_with_stopped_only(self):
        def start(args, api):
            return api.start_algorithm("double", [1])

        with real_streams() as (out, _):
            sidecar, thread, _ = serve(Runner(start=start, stop=lambda data: print("in stop")))
            sidecar.send("run", {"taskId": "t", "input": []})
            request = sidecar.recv()
            sidecar.send("stop", {"forceStop": True})
            sidecar.send("algorithmExecutionDone", {"execId": request["data"]["execId"], "response": 2})
            # The task returned after the stop: its result is dropped, `stopped` ends it.
            self.assertEqual(sidecar.recv(), {"command": "stopped"})
            sidecar.send("run", {"taskId": "next", "input": []})
            self.assertEqual(sidecar.recv()["command"], "startAlgorithmExecution")
            sidecar.send("exit", {"exitCode": 0})
            thread.join(5)
            sidecar.close()
        self.assertIn("in stop", out.getvalue())

    def test_hkube_exchange_sends_task_log_before_done(self):
        def init(args):
            print("init")

        def start(args, api):
            print("start")
            return 5

        with real_streams():
            sidecar, thread, _ = serve(Runner(start=start, init=init))
            sidecar.send("initialize", {"jobId": "j", "taskId": "t", "input": []})
            messages = [sidecar.recv()]
            sidecar.send("start", {})
            messages += [sidecar.recv(), sidecar.recv(), sidecar.recv()]
            sidecar.send("exit", {"exitCode": 0})
            thread.join(5)
            sidecar.close()
        self.assertEqual(messages, [
            {"command": "initialized"},
            {"command": "started"},
            {"command": "taskLog", "data": {"taskId": "t", "log": "init\nstart\n"}},
            {"command": "done", "data": 5},
        ])

    def test_hkube_exchange_sends_task_log_before_an_init_error(self):
        def init(args):
            print("loading")
            raise KeyError("config")

        with real_streams():
            sidecar, thread, _ = serve(Runner(start=lambda a, b: 1, init=init))
            sidecar.send("initialize", {"taskId": "t", "input": []})
            first, second = sidecar.recv(), sidecar.recv()
            sidecar.send("exit", {"exitCode": 0})
            thread.join(5)
            sidecar.close()
        self.assertEqual(first, {"command": "taskLog", "data": {"taskId": "t", "log": "loading\n"}})
        self.assertEqual(second["command"], "errorMessage")


class HKubeExchange(unittest.TestCase):
    def test_initialize_start_done(self):
        calls = []
        runner = Runner(start=lambda args, api: {"got": args["input"]}, init=lambda args: calls.append("init"))
        sidecar, thread, _ = serve(runner)
        sidecar.send("initialize", {"jobId": "j", "taskId": "t", "input": [1, 2]})
        self.assertEqual(sidecar.recv(), {"command": "initialized"})
        sidecar.send("start", {"spanId": {}})
        self.assertEqual(sidecar.recv(), {"command": "started"})
        self.assertEqual(sidecar.recv(), {"command": "done", "data": {"got": [1, 2]}})
        self.assertEqual(calls, ["init"])
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()

    def test_stop_while_running_calls_the_user_stop(self):
        release = threading.Event()

        def start(args, api):
            release.wait(5)
            return "late"

        runner = Runner(start=start, stop=lambda data: release.set())
        sidecar, thread, _ = serve(runner)
        sidecar.send("initialize", {"taskId": "t", "input": []})
        sidecar.recv()
        sidecar.send("start", {})
        self.assertEqual(sidecar.recv(), {"command": "started"})
        sidecar.send("stop", {"forceStop": True})
        self.assertEqual(sidecar.recv(), {"command": "stopped"})
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()

    def test_init_failure_is_reported_and_not_initialized(self):
        def init(args):
            raise KeyError("config")

        sidecar, thread, _ = serve(Runner(start=lambda a, b: 1, init=init))
        sidecar.send("initialize", {"taskId": "t", "input": []})
        reply = sidecar.recv()
        self.assertEqual(reply["command"], "errorMessage")
        self.assertIn("config", reply["error"]["message"])
        sidecar.send("exit", {"exitCode": 3})
        thread.join(5)
        sidecar.close()


class Loading(unittest.TestCase):
    def setUp(self):
        self.cwd = os.getcwd()

    def tearDown(self):
        os.chdir(self.cwd)

    def test_entry_point_by_hkube_convention(self):
        with tempfile.TemporaryDirectory() as folder:
            os.makedirs(os.path.join(folder, "pkg"))
            with open(os.path.join(folder, "pkg", "algo_conv.py"), "w") as f:
                f.write(textwrap.dedent("""
                    def start(args, api):
                        return "ok"
                    def init(args):
                        pass
                """))
            functions, error = load_algorithm("pkg/algo_conv.py", folder)
            self.assertIsNone(error)
            self.assertEqual(functions["start"]({}, None), "ok")
            self.assertIsNone(functions["stop"])

    def test_a_missing_module_is_named(self):
        with tempfile.TemporaryDirectory() as folder:
            functions, error = load_algorithm("nowhere_to_be_found.py", folder)
            self.assertIn("nowhere_to_be_found", error["message"])
            self.assertIn("cannot load the algorithm's entry point", error["message"])

    def test_a_key_error_names_its_type_file_and_line(self):
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "keyerror_mod.py"), "w") as f:
                f.write("def lookup(d):\n    return d['missing-key']\n\ndef start(args):\n    return lookup({})\n")
            functions, error = load_algorithm("keyerror_mod.py", folder)
            self.assertIsNone(error)
            sidecar, thread, _ = serve(Runner(start=functions["start"]))
            sidecar.send("run", {"taskId": "t", "input": []})
            error = sidecar.recv()["error"]
            sidecar.send("exit", {"exitCode": 0})
            thread.join(5)
            sidecar.close()
        self.assertEqual(error["message"], "'missing-key'")
        self.assertEqual(error["type"], "KeyError")
        self.assertEqual((error["file"], error["line"]), ("keyerror_mod.py", 2))
        self.assertIn('keyerror_mod.py", line 5, in start', error["details"])
        self.assertIn("KeyError: 'missing-key'", error["details"])
        # The runtime's own frames are not the user's concern.
        self.assertNotIn("hkube_runtime", error["details"])

    def test_a_syntax_error_names_the_file_and_line(self):
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "syntax_mod.py"), "w") as f:
                f.write("x = 1\ndef start(args:\n    return 1\n")
            _, error = load_algorithm("syntax_mod.py", folder)
        self.assertEqual(error["type"], "SyntaxError")
        self.assertEqual((error["file"], error["line"]), ("syntax_mod.py", 2))
        self.assertNotIn("importlib", error["details"])

    def test_a_module_without_start_is_named(self):
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "nostart_mod.py"), "w") as f:
                f.write("def init(args):\n    pass\n")
            _, error = load_algorithm("nostart_mod.py", folder)
            self.assertIn("has no start(args, api) function", error["message"])

    def test_a_load_error_is_sent_on_the_first_task(self):
        error = {"code": "Failed", "message": "cannot load"}
        sidecar, thread, _ = serve(Runner(load_error=error))
        sidecar.send("run", {"taskId": "t", "input": []})
        self.assertEqual(sidecar.recv(), {"command": "errorMessage", "error": error, "data": {"taskId": "t"}})
        sidecar.send("exit", {"exitCode": 0})
        thread.join(5)
        sidecar.close()


if __name__ == "__main__":
    unittest.main()


class JsonCodec(unittest.TestCase):
    """The runtime's kept JSON encoder and reader say exactly what the standard ones say."""

    def test_encoding_matches_json_dumps(self):
        from hkube_runtime import runner

        values = [
            0, -1, 2 ** 70, 1.5, -0.0, 1e-300, float("nan"), float("inf"), "", "é\u2028\"\\\n\x00",
            None, True, [], {}, {"a": [1, {"b": None}], "c": "d"}, {1: "int key", 2.5: "float key", None: 0},
            list(range(50)), {"nested": [[[[["deep"]]]]]},
        ]
        for value in values:
            self.assertEqual(runner._encode(value), json.dumps(value, separators=(",", ":")), value)

    def test_what_cannot_be_encoded_raises_the_standard_errors(self):
        from hkube_runtime import runner

        cycle = []
        cycle.append(cycle)
        with self.assertRaisesRegex(ValueError, "Circular reference detected"):
            runner._encode({"a": cycle})
        with self.assertRaisesRegex(TypeError, "Object of type object is not JSON serializable"):
            runner._encode([object()])
        with self.assertRaisesRegex(TypeError, "keys must be"):
            runner._encode({(1, 2): 3})

    def test_reading(self):
        from hkube_runtime import runner

        self.assertEqual(runner._decode('{"command":"run","data":{"input":[1,"é"]}}'), {"command": "run", "data": {"input": [1, "é"]}})
        self.assertEqual(runner._decode(' \n{"a": 1}\n '), {"a": 1})
        with self.assertRaisesRegex(ValueError, "Extra data"):
            runner._decode('{"a": 1} {"b": 2}')
        with self.assertRaises(ValueError):
            runner._decode('{"a": ')
