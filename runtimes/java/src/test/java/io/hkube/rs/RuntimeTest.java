package io.hkube.rs;

import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.math.BigDecimal;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * The Java runtime against a scripted sidecar on a real socket, plus the JSON codec.
 *
 * <p>No JUnit (nothing may be downloaded): {@link #main} runs every named check, prints
 * {@code ok <name>} or {@code FAIL <name>: <why>}, then {@code Java runtime: N passed, M failed}.
 * The sidecar is played by a tiny RFC 6455 server written here on {@link ServerSocket}.
 */
public final class RuntimeTest {
    interface Check {
        void run() throws Exception;
    }

    private static final Map<String, Check> CHECKS = new LinkedHashMap<>();

    private static void check(String name, Check check) {
        CHECKS.put(name, check);
    }

    public static void main(String[] argv) throws Exception {
        // Fast path
        check("fast_path_one_message_in_one_out", RuntimeTest::fastPathOneInOneOut);
        check("fast_path_exception_becomes_error_with_stack_trace", RuntimeTest::fastPathException);
        check("fast_path_batch_of_tasks", RuntimeTest::fastPathBatch);
        check("fast_path_batch_with_one_unserializable_result", RuntimeTest::fastPathBatchNotJson);
        check("fast_path_code_api_call_inside_a_task", RuntimeTest::fastPathCodeApi);
        check("fast_path_queued_tasks_wait_for_a_code_api_call", RuntimeTest::fastPathQueuedBehindCodeApi);
        check("fast_path_code_api_error_raises_api_exception", RuntimeTest::fastPathCodeApiError);
        check("fast_path_result_that_is_not_json", RuntimeTest::fastPathNotJson);
        check("fast_path_progress_and_subpipelines", RuntimeTest::fastPathProgressAndSubpipelines);
        check("fast_path_one_megabyte_messages_and_fragments", RuntimeTest::fastPathLargeAndFragmented);
        // HKube's exchange
        check("hkube_initialize_start_done", RuntimeTest::hkubeInitializeStartDone);
        check("hkube_code_api_call_inside_start", RuntimeTest::hkubeCodeApi);
        check("hkube_stop_while_running_calls_user_stop_then_stopped", RuntimeTest::hkubeStopWhileRunning);
        check("hkube_stop_when_idle_answers_stopped", RuntimeTest::hkubeStopIdle);
        check("fast_stop_of_a_batch_interrupts_and_drops_the_rest", RuntimeTest::fastStopOfABatch);
        check("hkube_init_failure_is_reported_and_not_initialized", RuntimeTest::hkubeInitFailure);
        check("hkube_result_that_is_not_json", RuntimeTest::hkubeNotJson);
        // Large values through storage
        check("large_values_bytes_go_through_storage_both_ways", RuntimeTest::largeValuesBothWays);
        check("large_values_json_objects_are_parsed_other_encodings_named", RuntimeTest::largeValuesEncodings);
        check("large_values_a_missing_stored_input_is_named", RuntimeTest::largeValuesMissingInput);
        check("large_values_bytes_without_storage_fail_the_task", RuntimeTest::largeValuesNoStorage);
        // Per-task logs
        check("logs_stdout_and_stderr_in_order", RuntimeTest::logsInOrder);
        check("logs_silent_task_has_none_an_error_carries_its_own", RuntimeTest::logsSilentAndError);
        check("logs_batch_where_only_the_second_task_prints", RuntimeTest::logsBatch);
        check("logs_truncation_keeps_the_tail", RuntimeTest::logsTruncation);
        check("logs_code_api_wait_and_user_stop_are_not_the_tasks", RuntimeTest::logsNotDuringWait);
        check("logs_hkube_exchange_task_log_before_done_and_init_error", RuntimeTest::logsHKubeExchange);
        check("exit_calls_cleanup_and_returns_the_exit_code", RuntimeTest::exitCode);
        check("sidecar_closing_fails_waiting_calls_and_cleans_up", RuntimeTest::sidecarCloses);
        // Loading and Main
        check("main_loads_the_entry_point_and_honours_fast_path_off", RuntimeTest::mainLoadsEntryPoint);
        check("main_missing_class_is_named_on_the_first_task", RuntimeTest::mainMissingClass);
        check("load_errors_name_the_class_and_the_cause", RuntimeTest::loadErrors);
        check("load_error_is_sent_on_initialize", RuntimeTest::loadErrorOnInitialize);
        check("connect_timeout_exits_1_with_a_message", RuntimeTest::connectTimeout);
        // JSON
        check("json_round_trips", RuntimeTest::jsonRoundTrips);
        check("json_string_escapes", RuntimeTest::jsonEscapes);
        check("json_surrogate_pairs", RuntimeTest::jsonSurrogates);
        check("json_numbers", RuntimeTest::jsonNumbers);
        check("json_parse_errors_give_offsets", RuntimeTest::jsonParseErrors);
        check("json_serialize_errors", RuntimeTest::jsonSerializeErrors);
        check("json_one_megabyte_message", RuntimeTest::jsonLarge);

        List<String> only = Arrays.asList(argv);
        int passed = 0;
        int failed = 0;
        ExecutorService runner = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "check");
            t.setDaemon(true);
            return t;
        });
        for (Map.Entry<String, Check> entry : CHECKS.entrySet()) {
            if (!only.isEmpty() && !only.contains(entry.getKey())) {
                continue;
            }
            Future<?> outcome = runner.submit(() -> {
                entry.getValue().run();
                return null;
            });
            try {
                outcome.get(20, TimeUnit.SECONDS);
                System.out.println("ok " + entry.getKey());
                passed++;
            } catch (TimeoutException e) {
                outcome.cancel(true);
                System.out.println("FAIL " + entry.getKey() + ": timed out after 20 s");
                failed++;
            } catch (java.util.concurrent.ExecutionException e) {
                Throwable why = e.getCause();
                System.out.println("FAIL " + entry.getKey() + ": " + why);
                if (!(why instanceof AssertionError)) {
                    why.printStackTrace(System.out);
                }
                failed++;
            }
        }
        System.out.println("Java runtime: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }

    // -- assertions ------------------------------------------------------------------------

    private static void assertTrue(boolean condition, String what) {
        if (!condition) {
            throw new AssertionError(what);
        }
    }

    private static void assertEquals(Object expected, Object actual, String what) {
        if (!Objects.equals(expected, actual)) {
            throw new AssertionError(what + ": expected <" + expected + "> but got <" + actual + ">");
        }
    }

    /** Compares a message with the JSON text it should equal (so numbers compare as the codec reads them). */
    private static void assertJson(String expected, Object actual) {
        Object want = Json.parse(expected);
        if (!want.equals(actual)) {
            throw new AssertionError("expected " + Json.write(want) + " but got " + Json.write(actual));
        }
    }

    private static void assertContains(Object text, String part, String what) {
        if (!(text instanceof String) || !((String) text).contains(part)) {
            throw new AssertionError(what + ": expected text containing <" + part + "> but got <" + text + ">");
        }
    }

    private interface Body {
        void run() throws Exception;
    }

    private static void assertThrowsJson(Body body, String part, int offset) throws Exception {
        try {
            body.run();
        } catch (Json.JsonException e) {
            assertContains(e.getMessage(), part, "error message");
            if (offset >= 0) {
                assertEquals(offset, e.offset(), "offset of <" + e.getMessage() + ">");
                assertContains(e.getMessage(), "at offset " + offset, "error message");
            }
            return;
        }
        throw new AssertionError("expected a JsonException containing <" + part + ">");
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> map(Object value) {
        return (Map<String, Object>) value;
    }

    @SuppressWarnings("unchecked")
    private static List<Object> list(Object value) {
        return (List<Object>) value;
    }

    private static Map<String, Object> data(String json) {
        return map(Json.parse(json));
    }

    // -- the scripted sidecar ------------------------------------------------------------

    /** Accepts one runtime connection; send() and recv() speak JSON envelopes. */
    static final class Sidecar implements AutoCloseable {
        private static final String GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
        final ServerSocket listener;
        final int port;
        Socket socket;
        InputStream in;
        OutputStream out;
        String path;

        Sidecar() throws IOException {
            listener = new ServerSocket(0, 1, InetAddress.getLoopbackAddress());
            port = listener.getLocalPort();
        }

        void accept() throws Exception {
            listener.setSoTimeout(10_000);
            socket = listener.accept();
            socket.setSoTimeout(10_000);
            in = socket.getInputStream();
            out = socket.getOutputStream();
            ByteArrayOutputStream head = new ByteArrayOutputStream();
            while (true) {
                int b = in.read();
                if (b < 0) {
                    throw new EOFException("handshake cut short");
                }
                head.write(b);
                byte[] h = head.toByteArray();
                int n = h.length;
                if (n >= 4 && h[n - 4] == '\r' && h[n - 3] == '\n' && h[n - 2] == '\r' && h[n - 1] == '\n') {
                    break;
                }
            }
            String[] lines = head.toString(StandardCharsets.ISO_8859_1).split("\r\n");
            path = lines[0].split(" ")[1];
            String key = null;
            for (String line : lines) {
                int colon = line.indexOf(':');
                if (colon > 0 && line.substring(0, colon).trim().equalsIgnoreCase("Sec-WebSocket-Key")) {
                    key = line.substring(colon + 1).trim();
                }
            }
            if (key == null) {
                throw new IOException("no Sec-WebSocket-Key in " + Arrays.toString(lines));
            }
            byte[] digest = MessageDigest.getInstance("SHA-1").digest((key + GUID).getBytes(StandardCharsets.US_ASCII));
            String answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + "Sec-WebSocket-Accept: " + Base64.getEncoder().encodeToString(digest) + "\r\n\r\n";
            out.write(answer.getBytes(StandardCharsets.US_ASCII));
            out.flush();
        }

        synchronized void frame(int opcode, boolean fin, byte[] payload) throws IOException {
            ByteArrayOutputStream frame = new ByteArrayOutputStream();
            frame.write((fin ? 0x80 : 0) | opcode);
            int n = payload.length;
            if (n < 126) {
                frame.write(n);
            } else if (n < 65536) {
                frame.write(126);
                frame.write(n >>> 8);
                frame.write(n & 0xff);
            } else {
                frame.write(127);
                for (int shift = 56; shift >= 0; shift -= 8) {
                    frame.write((int) (((long) n >>> shift) & 0xff));
                }
            }
            frame.write(payload);
            out.write(frame.toByteArray());
            out.flush();
        }

        void sendText(String text) throws IOException {
            frame(0x1, true, text.getBytes(StandardCharsets.UTF_8));
        }

        /** Sends {@code text} as several frames (text + continuations), as a sidecar may. */
        void sendFragmented(String text, int pieces) throws IOException {
            byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
            int step = (bytes.length + pieces - 1) / pieces;
            for (int i = 0, start = 0; start < bytes.length; i++, start += step) {
                int end = Math.min(bytes.length, start + step);
                frame(i == 0 ? 0x1 : 0x0, end == bytes.length, Arrays.copyOfRange(bytes, start, end));
            }
        }

        void send(String command, String dataJson) throws IOException {
            sendText(dataJson == null ? "{\"command\":\"" + command + "\"}"
                    : "{\"command\":\"" + command + "\",\"data\":" + dataJson + "}");
        }

        private byte[] readFully(int n) throws IOException {
            byte[] bytes = in.readNBytes(n);
            if (bytes.length < n) {
                throw new EOFException("connection closed mid-frame");
            }
            return bytes;
        }

        /** The next text message, or null when the runtime sent a close frame. */
        String recvText() throws IOException {
            ByteArrayOutputStream message = new ByteArrayOutputStream();
            while (true) {
                byte[] head = readFully(2);
                boolean fin = (head[0] & 0x80) != 0;
                int opcode = head[0] & 0x0f;
                if ((head[1] & 0x80) == 0) {
                    throw new IOException("client frames must be masked");
                }
                long length = head[1] & 0x7f;
                if (length == 126) {
                    byte[] ext = readFully(2);
                    length = ((ext[0] & 0xff) << 8) | (ext[1] & 0xff);
                } else if (length == 127) {
                    byte[] ext = readFully(8);
                    length = 0;
                    for (byte b : ext) {
                        length = (length << 8) | (b & 0xff);
                    }
                }
                byte[] mask = readFully(4);
                byte[] payload = readFully((int) length);
                for (int i = 0; i < payload.length; i++) {
                    payload[i] ^= mask[i % 4];
                }
                switch (opcode) {
                    case 0x8:
                        return null;
                    case 0x9:
                        frame(0xA, true, payload);
                        continue;
                    case 0xA:
                        continue;
                    default:
                        message.write(payload);
                        if (fin) {
                            return message.toString(StandardCharsets.UTF_8);
                        }
                }
            }
        }

        Map<String, Object> recv() throws IOException {
            String text = recvText();
            if (text == null) {
                throw new EOFException("the runtime closed the connection");
            }
            return map(Json.parse(text));
        }

        /** Reads until the runtime's close frame; fails on any other message. */
        void expectClose() throws IOException {
            String text = recvText();
            if (text != null) {
                throw new AssertionError("expected the connection to close, got " + text);
            }
        }

        @Override
        public void close() throws IOException {
            if (socket != null) {
                try {
                    frame(0x8, true, new byte[] {0x03, (byte) 0xe8});
                } catch (IOException ignored) {
                    // already gone
                }
                socket.close();
            }
            listener.close();
        }
    }

    /** A runner connected to a fresh scripted sidecar, its loop on a thread. */
    static final class Session implements AutoCloseable {
        final Sidecar sidecar;
        final Thread thread;
        volatile Integer code;

        Session(Runner runner, boolean fast) throws Exception {
            sidecar = new Sidecar();
            thread = new Thread(() -> code = runner.run("127.0.0.1", sidecar.port, fast, 5), "runtime-loop");
            thread.setDaemon(true);
            thread.start();
            sidecar.accept();
        }

        static Session fast(Algorithm algorithm) throws Exception {
            return new Session(new Runner(algorithm), true);
        }

        static Session hkube(Algorithm algorithm) throws Exception {
            return new Session(new Runner(algorithm), false);
        }

        void send(String command, String dataJson) throws IOException {
            sidecar.send(command, dataJson);
        }

        Map<String, Object> recv() throws IOException {
            return sidecar.recv();
        }

        /** Sends {@code exit}, checks the close frame and returns the loop's exit code. */
        int exit(int exitCode) throws Exception {
            send("exit", "{\"exitCode\":" + exitCode + "}");
            sidecar.expectClose();
            thread.join(5000);
            assertTrue(!thread.isAlive(), "the runtime loop ended");
            return code;
        }

        @Override
        public void close() throws IOException {
            sidecar.close();
        }
    }

    // -- test algorithms -----------------------------------------------------------------

    private static long number(Object value) {
        return ((Number) value).longValue();
    }

    public static final class Sum implements Algorithm {
        @Override
        public Object start(Map<String, Object> args, Api api) {
            long total = 0;
            for (Object item : list(args.get("input"))) {
                total += number(item);
            }
            return total;
        }
    }

    public static final class Thrower implements Algorithm {
        @Override
        public Object start(Map<String, Object> args, Api api) {
            throw new IllegalArgumentException("bad value");
        }
    }

    public static final class Doubler implements Algorithm {
        @Override
        public Object start(Map<String, Object> args, Api api) {
            long x = number(list(args.get("input")).get(0));
            if (x < 0) {
                throw new RuntimeException("negative");
            }
            return x * 2;
        }
    }

    public static final class CallsDouble implements Algorithm {
        @Override
        public Object start(Map<String, Object> args, Api api) {
            long x = number(list(args.get("input")).get(0));
            return number(api.startAlgorithm("double", List.of(x))) + 1;
        }
    }

    public static final class CatchesApiError implements Algorithm {
        @Override
        public Object start(Map<String, Object> args, Api api) {
            try {
                api.startStoredSubpipeline("sub", Map.of("x", 1));
                return "no error";
            } catch (ApiException e) {
                return "caught: " + e.getMessage();
            }
        }
    }

    public static final class NotJson implements Algorithm {
        @Override
        public Object start(Map<String, Object> args, Api api) {
            return new Object();
        }
    }

    public static final class Echo implements Algorithm {
        @Override
        public Object start(Map<String, Object> args, Api api) {
            return args.get("input");
        }
    }

    // -- large values through storage ------------------------------------------------------

    /** A fresh storage folder, as the sidecar's side sets it up, and the environment naming it. */
    static final class StorageFolder implements AutoCloseable {
        final java.nio.file.Path root;
        final Map<String, String> env;

        StorageFolder() throws IOException {
            root = java.nio.file.Files.createTempDirectory("hkube-java-storage-");
            env = Map.of("BASE_FS_ADAPTER_DIRECTORY", root.toString(), "CLUSTER_NAME", "test");
        }

        Session fast(Algorithm algorithm) throws Exception {
            return new Session(new Runner(algorithm, null, env), true);
        }

        @Override
        public void close() throws IOException {
            try (java.util.stream.Stream<java.nio.file.Path> paths = java.nio.file.Files.walk(root)) {
                for (java.nio.file.Path path : paths.sorted(Collections.reverseOrder()).toArray(java.nio.file.Path[]::new)) {
                    java.nio.file.Files.delete(path);
                }
            }
        }
    }

    static void largeValuesBothWays() throws Exception {
        Algorithm algorithm = (args, api) -> {
            Object data = list(args.get("input")).get(0);
            if (data instanceof byte[]) {
                return (long) ((byte[]) data).length;
            }
            byte[] out = new byte[(int) number(data) * 2];
            for (int i = 0; i < out.length; i++) {
                out[i] = (byte) (i % 2);
            }
            return out;
        };
        try (StorageFolder storage = new StorageFolder(); Session s = storage.fast(algorithm)) {
            s.send("run", "{\"jobId\":\"j1\",\"taskId\":\"t1\",\"input\":[3]}");
            String reference = "{\"$$hkubeRef\":{\"path\":\"test-hkube/j1/t1\",\"size\":6}}";
            assertJson("{\"command\":\"result\",\"data\":{\"taskId\":\"t1\",\"output\":" + reference + "}}", s.recv());
            byte[] stored = java.nio.file.Files.readAllBytes(storage.root.resolve("test-hkube/j1/t1"));
            assertEquals(Arrays.toString(new byte[] {1, 8, 1, 3, 0, 0, 72, 75, 0, 1, 0, 1, 0, 1}), Arrays.toString(stored), "file");
            try (java.util.stream.Stream<java.nio.file.Path> files = java.nio.file.Files.list(storage.root.resolve("test-hkube/j1"))) {
                assertEquals(List.of("t1"), files.map(p -> p.getFileName().toString()).collect(java.util.stream.Collectors.toList()), "folder");
            }
            s.send("run", "{\"jobId\":\"j1\",\"taskId\":\"t2\",\"input\":[" + reference + "]}");
            assertEquals(6L, map(s.recv().get("data")).get("output"), "length read back");
            s.exit(0);
        }
    }

    static void largeValuesEncodings() throws Exception {
        try (StorageFolder storage = new StorageFolder(); Session s = storage.fast((args, api) -> args.get("input"))) {
            java.nio.file.Path folder = java.nio.file.Files.createDirectories(storage.root.resolve("test-hkube/j"));
            ByteArrayOutputStream json = new ByteArrayOutputStream();
            json.write(new byte[] {1, 8, 2, 2, 0, 0, 'H', 'K'});
            json.write("{\"a\":[1,2]}".getBytes(StandardCharsets.UTF_8));
            java.nio.file.Files.write(folder.resolve("json"), json.toByteArray());
            java.nio.file.Files.write(folder.resolve("bare"), "\"plain\"".getBytes(StandardCharsets.UTF_8));
            java.nio.file.Files.write(folder.resolve("packed"), new byte[] {1, 8, 2, 3, 0, 0, 'H', 'K', (byte) 0x81});
            s.send("run", "{\"jobId\":\"j\",\"taskId\":\"t\",\"input\":[{\"x\":" + ref("json") + "},[" + ref("bare") + "],7]}");
            assertJson("[{\"x\":{\"a\":[1,2]}},[\"plain\"],7]", map(s.recv().get("data")).get("output"));
            s.send("run", "{\"jobId\":\"j\",\"taskId\":\"u\",\"input\":[" + ref("packed") + "]}");
            Map<String, Object> reply = s.recv();
            assertEquals("errorMessage", reply.get("command"), "command");
            assertEquals("input test-hkube/j/packed is stored as msgpack, which this runtime cannot decode "
                    + "(it reads raw and JSON objects)", map(reply.get("error")).get("message"), "message");
            s.exit(0);
        }
    }

    private static String ref(String name) {
        return "{\"$$hkubeRef\":{\"path\":\"test-hkube/j/" + name + "\",\"size\":1}}";
    }

    static void largeValuesMissingInput() throws Exception {
        try (StorageFolder storage = new StorageFolder(); Session s = storage.fast((args, api) -> 1)) {
            s.send("run", "{\"jobId\":\"j\",\"taskId\":\"t\",\"input\":[[" + ref("none") + "]]}");
            Map<String, Object> reply = s.recv();
            assertEquals("errorMessage", reply.get("command"), "command");
            assertJson("{\"taskId\":\"t\"}", reply.get("data"));
            assertContains(map(reply.get("error")).get("message"), "cannot read input test-hkube/j/none", "message");
            s.exit(0);
        }
    }

    static void largeValuesNoStorage() throws Exception {
        try (Session s = new Session(new Runner((args, api) -> new byte[] {1}, null, Map.of()), true)) {
            s.send("run", "{\"jobId\":\"j\",\"taskId\":\"t\",\"input\":[]}");
            Map<String, Object> reply = s.recv();
            assertEquals("errorMessage", reply.get("command"), "command");
            assertEquals("the result is bytes, which needs storage, but BASE_FS_ADAPTER_DIRECTORY is not set",
                    map(reply.get("error")).get("message"), "message");
            s.exit(0);
        }
    }

    // -- per-task logs ---------------------------------------------------------------------

    static void logsInOrder() throws Exception {
        Algorithm algorithm = (args, api) -> {
            System.out.println("out " + list(args.get("input")).get(0));
            System.err.println("err 2");
            System.out.print("out 3\n");
            System.err.printf("err %d%n", 4);
            return 1;
        };
        try (Session s = Session.fast(algorithm)) {
            s.send("run", "{\"taskId\":\"t\",\"input\":[1]}");
            String nl = System.lineSeparator();
            Map<String, Object> expected = new LinkedHashMap<>();
            expected.put("taskId", "t");
            expected.put("output", 1L);
            expected.put("log", "out 1" + nl + "err 2" + nl + "out 3\n" + "err 4" + nl);
            assertEquals(expected, s.recv().get("data"), "result");
            s.exit(0);
        }
    }

    static void logsSilentAndError() throws Exception {
        Algorithm algorithm = (args, api) -> {
            if (number(list(args.get("input")).get(0)) == 1) {
                System.out.print("about to fail\n");
                throw new IllegalStateException("bad");
            }
            return 2;
        };
        try (Session s = Session.fast(algorithm)) {
            s.send("run", "{\"taskId\":\"t\",\"input\":[0]}");
            assertJson("{\"command\":\"result\",\"data\":{\"taskId\":\"t\",\"output\":2}}", s.recv());
            s.send("run", "{\"taskId\":\"u\",\"input\":[1]}");
            Map<String, Object> reply = s.recv();
            assertEquals("errorMessage", reply.get("command"), "command");
            assertJson("{\"taskId\":\"u\",\"log\":\"about to fail\\n\"}", reply.get("data"));
            s.exit(0);
        }
    }

    static void logsBatch() throws Exception {
        Algorithm algorithm = (args, api) -> {
            long x = number(list(args.get("input")).get(0));
            if (x == 2) {
                System.out.print("second\n");
            }
            return x;
        };
        try (Session s = Session.fast(algorithm)) {
            s.send("runBatch", "{\"tasks\":[{\"taskId\":\"a\",\"input\":[1]},{\"taskId\":\"b\",\"input\":[2]},"
                    + "{\"taskId\":\"c\",\"input\":[3]}]}");
            assertJson("[{\"taskId\":\"a\",\"output\":1},{\"taskId\":\"b\",\"output\":2,\"log\":\"second\\n\"},"
                    + "{\"taskId\":\"c\",\"output\":3}]", map(s.recv().get("data")).get("results"));
            s.exit(0);
        }
    }

    static void logsTruncation() throws Exception {
        Algorithm algorithm = (args, api) -> {
            String xs = "x".repeat(1000);
            for (int i = 0; i < 140; i++) {
                System.err.print(String.format("line %05d %s%n", i, xs));
            }
            System.err.print("the end\n");
            return null;
        };
        try (Session s = Session.fast(algorithm)) {
            s.send("run", "{\"taskId\":\"t\",\"input\":[]}");
            String log = (String) map(s.recv().get("data")).get("log");
            assertTrue(log.startsWith(Logs.TRUNCATED), "marked as cut: " + log.substring(0, 40));
            assertEquals(Logs.TRUNCATED.length() + Logs.LIMIT, log.getBytes(StandardCharsets.UTF_8).length, "bytes kept");
            assertTrue(log.endsWith("x" + System.lineSeparator() + "the end\n"), "ends with the last line");
            assertContains(log, "line 00139 ", "log");
            assertTrue(!log.contains("line 00070 "), "older lines dropped");
            s.exit(0);
        }
    }

    static void logsNotDuringWait() throws Exception {
        Algorithm algorithm = new Algorithm() {
            @Override
            public Object start(Map<String, Object> args, Api api) {
                System.out.print("before\n");
                Object value = api.startAlgorithm("double", List.of(1));
                System.out.print("after " + value + "\n");
                return value;
            }

        };
        try (Session s = Session.fast(algorithm)) {
            s.send("run", "{\"taskId\":\"t\",\"input\":[]}");
            Object execId = map(s.recv().get("data")).get("execId");
            s.sidecar.sendText("{not json");
            s.send("algorithmExecutionDone", "{\"execId\":\"" + execId + "\",\"response\":2}");
            assertEquals("before\nafter 2\n", map(s.recv().get("data")).get("log"), "log");
            s.exit(0);
        }
    }

    static void logsHKubeExchange() throws Exception {
        Algorithm algorithm = new Algorithm() {
            @Override
            public void init(Map<String, Object> args) {
                System.out.print("init " + args.get("taskId") + "\n");
                if ("fail".equals(list(args.get("input")).isEmpty() ? null : list(args.get("input")).get(0))) {
                    throw new IllegalStateException("config");
                }
            }

            @Override
            public Object start(Map<String, Object> args, Api api) {
                System.err.print("start\n");
                return 5;
            }
        };
        try (Session s = Session.hkube(algorithm)) {
            s.send("initialize", "{\"jobId\":\"j\",\"taskId\":\"t\",\"input\":[]}");
            assertJson("{\"command\":\"initialized\"}", s.recv());
            s.send("start", "{}");
            assertJson("{\"command\":\"started\"}", s.recv());
            assertJson("{\"command\":\"taskLog\",\"data\":{\"taskId\":\"t\",\"log\":\"init t\\nstart\\n\"}}", s.recv());
            assertJson("{\"command\":\"done\",\"data\":5}", s.recv());
            s.send("initialize", "{\"jobId\":\"j\",\"taskId\":\"u\",\"input\":[\"fail\"]}");
            assertJson("{\"command\":\"taskLog\",\"data\":{\"taskId\":\"u\",\"log\":\"init u\\n\"}}", s.recv());
            assertEquals("errorMessage", s.recv().get("command"), "command");
            s.exit(0);
        }
    }

    // -- fast path -----------------------------------------------------------------------

    static void fastPathOneInOneOut() throws Exception {
        try (Session s = Session.fast(new Sum())) {
            assertEquals("/?storage=v1&encoding=json&fast=1", s.sidecar.path, "connect path");
            for (int i = 0; i < 3; i++) {
                s.send("run", "{\"taskId\":\"t" + i + "\",\"input\":[" + i + ",10]}");
                assertJson("{\"command\":\"result\",\"data\":{\"taskId\":\"t" + i + "\",\"output\":" + (i + 10) + "}}", s.recv());
            }
            assertEquals(0, s.exit(0), "exit code");
        }
    }

    static void fastPathException() throws Exception {
        try (Session s = Session.fast(new Thrower())) {
            s.send("run", "{\"taskId\":\"t1\",\"input\":[]}");
            Map<String, Object> reply = s.recv();
            assertEquals("errorMessage", reply.get("command"), "command");
            assertJson("{\"taskId\":\"t1\"}", reply.get("data"));
            Map<String, Object> error = map(reply.get("error"));
            assertEquals("Failed", error.get("code"), "code");
            assertEquals("java.lang.IllegalArgumentException: bad value", error.get("message"), "message");
            assertContains(error.get("details"), "java.lang.IllegalArgumentException: bad value", "details");
            assertContains(error.get("details"), "at io.hkube.rs.RuntimeTest$Thrower.start", "details");
            assertEquals("java.lang.IllegalArgumentException", error.get("type"), "type");
            assertEquals("RuntimeTest.java", error.get("file"), "file");
            if (!(error.get("line") instanceof Number) || ((Number) error.get("line")).intValue() <= 0) {
                throw new AssertionError("line: a positive number expected, got " + error.get("line"));
            }
            s.exit(0);
        }
    }

    static void fastPathBatch() throws Exception {
        try (Session s = Session.fast(new Doubler())) {
            s.send("runBatch", "{\"tasks\":[{\"taskId\":\"a\",\"input\":[1]},{\"taskId\":\"b\",\"input\":[-1]},"
                    + "{\"taskId\":\"c\",\"input\":[3]}]}");
            Map<String, Object> reply = s.recv();
            assertEquals("results", reply.get("command"), "command");
            List<Object> results = list(map(reply.get("data")).get("results"));
            assertEquals(3, results.size(), "result count");
            assertJson("{\"taskId\":\"a\",\"output\":2}", results.get(0));
            assertEquals("b", map(results.get(1)).get("taskId"), "taskId");
            assertEquals("java.lang.RuntimeException: negative", map(map(results.get(1)).get("error")).get("message"), "message");
            assertJson("{\"taskId\":\"c\",\"output\":6}", results.get(2));
            s.exit(0);
        }
    }

    static void fastPathBatchNotJson() throws Exception {
        Algorithm algorithm = (args, api) -> number(list(args.get("input")).get(0)) == 0 ? new Object() : "fine";
        try (Session s = Session.fast(algorithm)) {
            s.send("runBatch", "{\"tasks\":[{\"taskId\":\"a\",\"input\":[1]},{\"taskId\":\"b\",\"input\":[0]}]}");
            List<Object> results = list(map(s.recv().get("data")).get("results"));
            assertJson("{\"taskId\":\"a\",\"output\":\"fine\"}", results.get(0));
            assertJson("{\"taskId\":\"b\",\"error\":{\"code\":\"Failed\",\"message\":"
                    + "\"the result cannot be sent as JSON: a java.lang.Object cannot be sent as JSON\"}}", results.get(1));
            s.exit(0);
        }
    }

    static void fastPathCodeApi() throws Exception {
        try (Session s = Session.fast(new CallsDouble())) {
            s.send("run", "{\"taskId\":\"t\",\"input\":[20]}");
            Map<String, Object> request = s.recv();
            assertEquals("startAlgorithmExecution", request.get("command"), "command");
            assertJson("{\"algorithmName\":\"double\",\"input\":[20],\"includeResult\":true,\"execId\":\"1\"}", request.get("data"));
            s.send("subPipelineStarted", "{\"subPipelineId\":\"99\"}"); // ignored, as HKube's wrappers do
            s.send("algorithmExecutionDone", "{\"execId\":\"1\",\"response\":40}");
            assertJson("{\"command\":\"result\",\"data\":{\"taskId\":\"t\",\"output\":41}}", s.recv());
            s.exit(0);
        }
    }

    static void fastPathQueuedBehindCodeApi() throws Exception {
        try (Session s = Session.fast(new CallsDouble())) {
            s.send("run", "{\"taskId\":\"t1\",\"input\":[1]}");
            s.send("run", "{\"taskId\":\"t2\",\"input\":[2]}");
            Map<String, Object> first = map(s.recv().get("data"));
            assertEquals("1", first.get("execId"), "first execId");
            s.send("algorithmExecutionDone", "{\"execId\":\"1\",\"response\":2}");
            assertJson("{\"command\":\"result\",\"data\":{\"taskId\":\"t1\",\"output\":3}}", s.recv());
            Map<String, Object> second = map(s.recv().get("data"));
            assertEquals("2", second.get("execId"), "second execId");
            s.send("algorithmExecutionDone", "{\"execId\":\"2\",\"response\":4}");
            assertJson("{\"command\":\"result\",\"data\":{\"taskId\":\"t2\",\"output\":5}}", s.recv());
            s.exit(0);
        }
    }

    static void fastPathCodeApiError() throws Exception {
        try (Session s = Session.fast(new CatchesApiError())) {
            s.send("run", "{\"taskId\":\"t\",\"input\":[]}");
            Map<String, Object> request = s.recv();
            assertEquals("startStoredSubPipeline", request.get("command"), "command");
            assertJson("{\"includeResult\":true,\"subPipeline\":{\"name\":\"sub\",\"flowInput\":{\"x\":1}},\"subPipelineId\":\"1\"}",
                    request.get("data"));
            s.send("subPipelineError", "{\"subPipelineId\":\"1\",\"error\":\"pipeline sub not found\"}");
            assertJson("{\"command\":\"result\",\"data\":{\"taskId\":\"t\",\"output\":\"caught: pipeline sub not found\"}}", s.recv());
            // Uncaught, the ApiException fails the task with the worker's text.
            try (Session t = Session.fast((args, api) -> api.startAlgorithm("missing", List.of()))) {
                t.send("run", "{\"taskId\":\"u\",\"input\":[]}");
                Object execId = map(t.recv().get("data")).get("execId");
                t.send("algorithmExecutionError", "{\"execId\":\"" + execId + "\",\"error\":\"algorithm missing not found\"}");
                Map<String, Object> reply = t.recv();
                assertEquals("errorMessage", reply.get("command"), "command");
                assertEquals("io.hkube.rs.ApiException: algorithm missing not found", map(reply.get("error")).get("message"), "message");
                t.exit(0);
            }
            s.exit(0);
        }
    }

    static void fastPathNotJson() throws Exception {
        try (Session s = Session.fast(new NotJson())) {
            s.send("run", "{\"taskId\":\"t\",\"input\":[]}");
            Map<String, Object> reply = s.recv();
            assertEquals("errorMessage", reply.get("command"), "command");
            assertJson("{\"taskId\":\"t\"}", reply.get("data"));
            assertEquals("the result cannot be sent as JSON: a java.lang.Object cannot be sent as JSON",
                    map(reply.get("error")).get("message"), "message");
            s.exit(0);
        }
    }

    static void fastPathProgressAndSubpipelines() throws Exception {
        Algorithm algorithm = (args, api) -> {
            api.progress(50);
            Object stored = api.startStoredSubpipeline("simple", Map.of("x", 1), false);
            Object raw = api.startRawSubpipeline("sub", List.of(Map.of("nodeName", "d1", "algorithmName", "green")),
                    Map.of("foo", 3));
            return Arrays.asList(stored, raw);
        };
        try (Session s = Session.fast(algorithm)) {
            s.send("run", "{\"taskId\":\"t\",\"input\":[]}");
            assertJson("{\"command\":\"progress\",\"data\":{\"progress\":50.0}}", s.recv());
            Map<String, Object> stored = s.recv();
            assertJson("{\"command\":\"startStoredSubPipeline\",\"data\":{\"includeResult\":false,"
                    + "\"subPipeline\":{\"name\":\"simple\",\"flowInput\":{\"x\":1}},\"subPipelineId\":\"1\"}}", stored);
            s.send("subPipelineStopped", "{\"subPipelineId\":\"1\",\"reason\":\"user\"}");
            Map<String, Object> raw = s.recv();
            assertJson("{\"command\":\"startRawSubPipeline\",\"data\":{\"includeResult\":true,\"subPipeline\":{\"name\":\"sub\","
                    + "\"nodes\":[{\"nodeName\":\"d1\",\"algorithmName\":\"green\"}],\"flowInput\":{\"foo\":3},"
                    + "\"options\":{},\"webhooks\":{}},\"subPipelineId\":\"2\"}}", raw);
            s.send("subPipelineDone", "{\"subPipelineId\":\"2\",\"response\":[{\"nodeName\":\"d1\",\"result\":6}]}");
            assertJson("{\"command\":\"result\",\"data\":{\"taskId\":\"t\",\"output\":[null,[{\"nodeName\":\"d1\",\"result\":6}]]}}",
                    s.recv());
            s.exit(0);
        }
    }

    static void fastPathLargeAndFragmented() throws Exception {
        StringBuilder big = new StringBuilder();
        while (big.length() < 1 << 20) {
            big.append("héllo \"wörld\" 😀 \\ ").append(big.length()).append('\n');
        }
        String payload = big.toString();
        try (Session s = Session.fast(new Echo())) {
            long began = System.nanoTime();
            s.send("run", "{\"taskId\":\"big\",\"input\":[" + Json.write(payload) + "]}");
            Map<String, Object> reply = s.recv();
            assertEquals("result", reply.get("command"), "command");
            assertEquals(List.of(payload), map(reply.get("data")).get("output"), "1 MB echoed");
            s.sidecar.sendFragmented("{\"command\":\"run\",\"data\":{\"taskId\":\"frag\",\"input\":[" + Json.write(payload) + "]}}", 5);
            reply = s.recv();
            assertEquals(List.of(payload), map(reply.get("data")).get("output"), "fragmented message reassembled");
            long ms = (System.nanoTime() - began) / 1_000_000;
            assertTrue(ms < 5000, "two 1 MB round trips took " + ms + " ms");
            s.exit(0);
        }
    }

    // -- HKube's exchange ----------------------------------------------------------------

    static void hkubeInitializeStartDone() throws Exception {
        List<String> calls = new CopyOnWriteArrayList<>();
        Algorithm algorithm = new Algorithm() {
            @Override
            public void init(Map<String, Object> args) {
                calls.add("init:" + args.get("taskId"));
            }

            @Override
            public Object start(Map<String, Object> args, Api api) {
                calls.add("start");
                return Map.of("got", args.get("input"));
            }
        };
        try (Session s = Session.hkube(algorithm)) {
            assertEquals("/?storage=v1&encoding=json", s.sidecar.path, "connect path");
            for (int round = 0; round < 2; round++) {
                s.send("initialize", "{\"jobId\":\"j\",\"taskId\":\"t" + round + "\",\"input\":[1,2]}");
                assertJson("{\"command\":\"initialized\"}", s.recv());
                s.send("start", "{\"spanId\":{}}");
                assertJson("{\"command\":\"started\"}", s.recv());
                assertJson("{\"command\":\"done\",\"data\":{\"got\":[1,2]}}", s.recv());
            }
            assertEquals(List.of("init:t0", "start", "init:t1", "start"), calls, "user calls");
            s.exit(0);
        }
    }

    static void hkubeCodeApi() throws Exception {
        try (Session s = Session.hkube(new CallsDouble())) {
            s.send("initialize", "{\"taskId\":\"t\",\"input\":[5]}");
            assertJson("{\"command\":\"initialized\"}", s.recv());
            s.send("start", "{}");
            assertJson("{\"command\":\"started\"}", s.recv());
            Map<String, Object> request = s.recv();
            assertEquals("startAlgorithmExecution", request.get("command"), "command");
            s.send("algorithmExecutionDone", "{\"execId\":\"1\",\"response\":10}");
            assertJson("{\"command\":\"done\",\"data\":11}", s.recv());
            s.exit(0);
        }
    }

    static void hkubeStopWhileRunning() throws Exception {
        CountDownLatch release = new CountDownLatch(1);
        List<String> calls = new CopyOnWriteArrayList<>();
        Algorithm algorithm = new Algorithm() {
            @Override
            public Object start(Map<String, Object> args, Api api) throws Exception {
                calls.add("start");
                try {
                    // The stop interrupts the task thread: released or interrupted, it returns.
                    release.await(5, TimeUnit.SECONDS);
                } finally {
                    calls.add("start returned");
                }
                return "late";
            }

            @Override
            public void stop() {
                calls.add("stop");
                release.countDown();
            }
        };
        try (Session s = Session.hkube(algorithm)) {
            s.send("initialize", "{\"taskId\":\"t\",\"input\":[]}");
            assertJson("{\"command\":\"initialized\"}", s.recv());
            s.send("start", "{}");
            assertJson("{\"command\":\"started\"}", s.recv());
            while (calls.isEmpty()) {
                Thread.sleep(5);
            }
            s.send("stop", "{\"forceStop\":true}");
            assertJson("{\"command\":\"stopped\"}", s.recv());
            assertEquals(List.of("start", "stop", "start returned"), calls, "user calls");
            // The next task runs normally: the stop does not stick.
            s.send("initialize", "{\"taskId\":\"t2\",\"input\":[]}");
            assertJson("{\"command\":\"initialized\"}", s.recv());
            s.send("start", "{}");
            assertJson("{\"command\":\"started\"}", s.recv());
            assertJson("{\"command\":\"done\",\"data\":\"late\"}", s.recv());
            s.exit(0);
        }
    }

    static void fastStopOfABatch() throws Exception {
        List<String> ran = new CopyOnWriteArrayList<>();
        List<String> calls = new CopyOnWriteArrayList<>();
        Algorithm algorithm = new Algorithm() {
            @Override
            public Object start(Map<String, Object> args, Api api) throws Exception {
                ran.add((String) args.get("taskId"));
                Thread.sleep(10_000);
                return args.get("taskId");
            }

            @Override
            public void stop() {
                calls.add("stop");
            }
        };
        try (Session s = Session.fast(algorithm)) {
            StringBuilder tasks = new StringBuilder();
            for (int i = 0; i < 6; i++) {
                tasks.append(i == 0 ? "" : ",").append("{\"taskId\":\"t").append(i).append("\",\"input\":[]}");
            }
            s.send("runBatch", "{\"tasks\":[" + tasks + "]}");
            while (ran.isEmpty()) {
                Thread.sleep(5);
            }
            long began = System.nanoTime();
            s.send("stop", "{\"forceStop\":true}");
            // The sleeping task is interrupted, the rest never run, and only `stopped` is sent.
            assertJson("{\"command\":\"stopped\"}", s.recv());
            assertTrue(System.nanoTime() - began < 5_000_000_000L, "stopped without waiting for the sleep");
            assertEquals(List.of("t0"), ran, "tasks run");
            assertEquals(List.of("stop"), calls, "user calls");
            s.send("stop", "{\"forceStop\":true}");
            assertJson("{\"command\":\"stopped\"}", s.recv());
            s.exit(0);
        }
    }

    static void hkubeStopIdle() throws Exception {
        List<String> calls = new CopyOnWriteArrayList<>();
        Algorithm algorithm = new Algorithm() {
            @Override
            public Object start(Map<String, Object> args, Api api) {
                return 1;
            }

            @Override
            public void stop() {
                calls.add("stop");
            }
        };
        try (Session s = Session.hkube(algorithm)) {
            s.send("stop", "{\"forceStop\":false}");
            assertJson("{\"command\":\"stopped\"}", s.recv());
            assertEquals(List.of("stop"), calls, "user calls");
            s.exit(0);
        }
    }

    static void hkubeInitFailure() throws Exception {
        Algorithm algorithm = new Algorithm() {
            @Override
            public void init(Map<String, Object> args) {
                throw new IllegalStateException("config");
            }

            @Override
            public Object start(Map<String, Object> args, Api api) {
                return 1;
            }
        };
        try (Session s = Session.hkube(algorithm)) {
            s.send("initialize", "{\"taskId\":\"t\",\"input\":[]}");
            Map<String, Object> reply = s.recv();
            assertEquals("errorMessage", reply.get("command"), "command");
            assertEquals("java.lang.IllegalStateException: config", map(reply.get("error")).get("message"), "message");
            assertContains(map(reply.get("error")).get("details"), ".init(", "details");
            assertEquals(3, s.exit(3), "exit code");
        }
    }

    static void hkubeNotJson() throws Exception {
        try (Session s = Session.hkube((args, api) -> Double.NaN)) {
            s.send("initialize", "{\"taskId\":\"t\",\"input\":[]}");
            s.recv();
            s.send("start", "{}");
            assertJson("{\"command\":\"started\"}", s.recv());
            assertJson("{\"command\":\"errorMessage\",\"error\":{\"code\":\"Failed\","
                    + "\"message\":\"the result cannot be sent as JSON: NaN cannot be sent as JSON\"}}", s.recv());
            s.exit(0);
        }
    }

    static void exitCode() throws Exception {
        List<String> calls = new CopyOnWriteArrayList<>();
        Algorithm algorithm = new Algorithm() {
            @Override
            public Object start(Map<String, Object> args, Api api) {
                return 1;
            }

            @Override
            public void cleanup() {
                calls.add("cleanup");
            }
        };
        try (Session s = Session.fast(algorithm)) {
            assertEquals(7, s.exit(7), "exit code");
            assertEquals(List.of("cleanup"), calls, "cleanup called once");
        }
    }

    static void sidecarCloses() throws Exception {
        List<String> calls = new CopyOnWriteArrayList<>();
        Algorithm algorithm = new Algorithm() {
            @Override
            public Object start(Map<String, Object> args, Api api) {
                try {
                    return api.startAlgorithm("x", List.of());
                } catch (ApiException e) {
                    calls.add("api: " + e.getMessage());
                    throw e;
                }
            }

            @Override
            public void cleanup() {
                calls.add("cleanup");
            }
        };
        Session s = Session.fast(algorithm);
        s.send("run", "{\"taskId\":\"t\",\"input\":[]}");
        assertEquals("startAlgorithmExecution", s.recv().get("command"), "command");
        s.close();
        s.thread.join(5000);
        assertEquals(0, s.code, "exit code when the sidecar goes away");
        long deadline = System.currentTimeMillis() + 5000;
        while (calls.size() < 2 && System.currentTimeMillis() < deadline) {
            Thread.sleep(5);
        }
        assertEquals(new LinkedHashSet<>(List.of("cleanup", "api: the connection to the sidecar closed")),
                new LinkedHashSet<>(calls), "calls");
    }

    // -- loading and Main ----------------------------------------------------------------

    /** Runs Main.run with {@code env} plus the sidecar's port on a thread; returns the session. */
    private static final class MainSession implements AutoCloseable {
        final Sidecar sidecar = new Sidecar();
        final Thread thread;
        volatile Integer code;

        MainSession(Map<String, String> env) throws Exception {
            Map<String, String> full = new HashMap<>(env);
            full.put("WORKER_SOCKET_PORT", Integer.toString(sidecar.port));
            full.put("HKUBE_CONNECT_TIMEOUT", "5");
            thread = new Thread(() -> code = Main.run(full, RuntimeTest.class.getClassLoader()), "main-loop");
            thread.setDaemon(true);
            thread.start();
            sidecar.accept();
        }

        @Override
        public void close() throws IOException {
            sidecar.close();
        }
    }

    static void mainLoadsEntryPoint() throws Exception {
        try (MainSession m = new MainSession(Map.of("ALGORITHM_ENTRY_POINT", Sum.class.getName(), "HKUBE_FAST_PATH", "false"))) {
            assertEquals("/?storage=v1&encoding=json", m.sidecar.path, "connect path without the fast path");
            m.sidecar.send("initialize", "{\"taskId\":\"t\",\"input\":[4,5]}");
            assertJson("{\"command\":\"initialized\"}", m.sidecar.recv());
            m.sidecar.send("start", "{}");
            assertJson("{\"command\":\"started\"}", m.sidecar.recv());
            assertJson("{\"command\":\"done\",\"data\":9}", m.sidecar.recv());
            m.sidecar.send("exit", "{\"exitCode\":5}");
            m.sidecar.expectClose();
            m.thread.join(5000);
            assertEquals(5, m.code, "exit code");
        }
    }

    static void mainMissingClass() throws Exception {
        try (MainSession m = new MainSession(Map.of("ALGORITHM_ENTRY_POINT", "com.example.NoSuchAlgorithm"))) {
            assertEquals("/?storage=v1&encoding=json&fast=1", m.sidecar.path, "connect path");
            m.sidecar.send("run", "{\"taskId\":\"t\",\"input\":[]}");
            Map<String, Object> reply = m.sidecar.recv();
            assertEquals("errorMessage", reply.get("command"), "command");
            assertJson("{\"taskId\":\"t\"}", reply.get("data"));
            Object message = map(reply.get("error")).get("message");
            assertContains(message, "cannot load the algorithm's entry point 'com.example.NoSuchAlgorithm'", "message");
            assertContains(message, "ClassNotFoundException", "message");
            m.sidecar.send("exit", "{\"exitCode\":0}");
            m.sidecar.expectClose();
            m.thread.join(5000);
            assertEquals(0, m.code, "exit code");
        }
    }

    public static final class NotAnAlgorithm {}

    public static final class NoDefaultConstructor implements Algorithm {
        public NoDefaultConstructor(int unused) {}

        @Override
        public Object start(Map<String, Object> args, Api api) {
            return null;
        }
    }

    public static final class FailingConstructor implements Algorithm {
        public FailingConstructor() {
            throw new IllegalStateException("no config file");
        }

        @Override
        public Object start(Map<String, Object> args, Api api) {
            return null;
        }
    }

    static void loadErrors() throws Exception {
        ClassLoader loader = RuntimeTest.class.getClassLoader();
        Main.Loaded ok = Main.load(Sum.class.getName(), loader);
        assertTrue(ok.algorithm instanceof Sum && ok.error == null, "a valid entry point loads");

        Object[][] cases = {
            {null, "ALGORITHM_ENTRY_POINT is not set"},
            {"  ", "ALGORITHM_ENTRY_POINT is not set"},
            {"com.example.Missing", "cannot load the algorithm's entry point 'com.example.Missing': java.lang.ClassNotFoundException"},
            {NotAnAlgorithm.class.getName(), "'" + NotAnAlgorithm.class.getName() + "' does not implement io.hkube.rs.Algorithm"},
            {NoDefaultConstructor.class.getName(), "public no-argument constructor"},
            {FailingConstructor.class.getName(), "failed in its constructor: java.lang.IllegalStateException: no config file"},
        };
        for (Object[] c : cases) {
            Main.Loaded loaded = Main.load((String) c[0], loader);
            assertTrue(loaded.algorithm == null && loaded.error != null, "no algorithm for " + c[0]);
            assertEquals("Failed", loaded.error.get("code"), "code");
            assertContains(loaded.error.get("message"), (String) c[1], "message for " + c[0]);
        }
    }

    static void loadErrorOnInitialize() throws Exception {
        Map<String, Object> error = data("{\"code\":\"Failed\",\"message\":\"cannot load\"}");
        try (Session s = new Session(new Runner(null, error), false)) {
            s.send("initialize", "{\"taskId\":\"t\",\"input\":[]}");
            assertJson("{\"command\":\"errorMessage\",\"error\":{\"code\":\"Failed\",\"message\":\"cannot load\"}}", s.recv());
            s.send("run", "{\"taskId\":\"t\",\"input\":[]}");
            assertJson("{\"command\":\"errorMessage\",\"error\":{\"code\":\"Failed\",\"message\":\"cannot load\"},"
                    + "\"data\":{\"taskId\":\"t\"}}", s.recv());
            s.exit(0);
        }
    }

    static void connectTimeout() throws Exception {
        int port;
        try (ServerSocket probe = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            port = probe.getLocalPort();
        }
        PrintStream original = System.err;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        long began = System.nanoTime();
        int code;
        try {
            System.setErr(new PrintStream(captured, true, StandardCharsets.UTF_8));
            code = Main.connect(new Runner(new Sum()), Map.of("WORKER_SOCKET_PORT", Integer.toString(port),
                    "HKUBE_CONNECT_TIMEOUT", "0.3"));
        } finally {
            System.setErr(original);
        }
        long ms = (System.nanoTime() - began) / 1_000_000;
        assertEquals(1, code, "exit code");
        assertTrue(ms >= 250 && ms < 5000, "gave up after " + ms + " ms");
        assertContains(captured.toString(StandardCharsets.UTF_8), "hkube runtime: cannot reach the sidecar at 127.0.0.1:" + port,
                "stderr");
    }

    // -- JSON ----------------------------------------------------------------------------

    static void jsonRoundTrips() {
        String[] texts = {
            "null", "true", "false", "0", "-1", "1.5", "\"\"", "[]", "{}",
            "{\"b\":1,\"a\":[1,2.5,\"x\",null,true,false,{}],\"c\":{\"d\":[[]]}}",
            "[-9223372036854775808,9223372036854775807,18446744073709551616]",
        };
        for (String text : texts) {
            assertEquals(text, Json.write(Json.parse(text)), "round trip of " + text);
        }
        assertEquals("{\"a\":[1,2]}", Json.write(Json.parse(" \t\r\n{ \"a\" : [ 1 , 2 ] } \n")), "whitespace is dropped");
        assertEquals(List.of("b", "a"), new ArrayList<>(map(Json.parse("{\"b\":1,\"a\":2}")).keySet()), "key order kept");
        assertTrue(Json.parse("{}") instanceof LinkedHashMap && Json.parse("[]") instanceof ArrayList, "container types");
        assertEquals(2L, map(Json.parse("{\"a\":1,\"a\":2}")).get("a"), "the last duplicate key wins");

        Map<Object, Object> keys = new LinkedHashMap<>();
        keys.put(1, "int key");
        keys.put(true, "bool key");
        keys.put('c', List.of());
        assertEquals("{\"1\":\"int key\",\"true\":\"bool key\",\"c\":[]}", Json.write(keys), "scalar keys become text");
        assertEquals("[1,2,3]", Json.write(new int[] {1, 2, 3}), "int[]");
        assertEquals("[[\"a\"],[true,false]]", Json.write(new Object[] {new String[] {"a"}, new boolean[] {true, false}}), "nested arrays");
        assertEquals("[\"x\"]", Json.write(Collections.singleton("x")), "a Set");
        assertEquals("[1.5,0.1,3]", Json.write(List.of(1.5, 0.1f, (short) 3)), "number kinds");
        assertEquals("\"c\"", Json.write('c'), "a Character");
        assertEquals("\"sb\"", Json.write(new StringBuilder("sb")), "a CharSequence");
    }

    static void jsonEscapes() {
        assertEquals("a\"b\\c/d\b\f\n\r\tA\u00e9",
                Json.parse("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u0041\\u00E9\""), "escapes decoded");
        assertEquals("\"q\\\"b\\\\n\\nr\\rt\\tb\\bf\\f\\u0001\\u001f/é\"",
                Json.write("q\"b\\n\nr\rt\tb\bf\f\u0001\u001f/é"), "escapes written");
        String all = new String(new char[] {0, 1, 8, 9, 10, 12, 13, 31, 32, '"', '\\', 0x7f, 0xe9, 0x2028});
        assertEquals(all, Json.parse(Json.write(all)), "every special character survives");
    }

    static void jsonSurrogates() {
        assertEquals("😀", Json.parse("\"\\ud83d\\ude00\""), "escaped surrogate pair");
        assertEquals("😀", Json.parse("\"\\uD83D\\uDE00\""), "upper-case hex");
        assertEquals("a😀b", Json.parse("\"a😀b\""), "raw pair");
        assertEquals("\"😀\"", Json.write("😀"), "a pair is written as is");
        assertEquals("\"\\ud800x\"", Json.write("\ud800x"), "a lone high surrogate is escaped");
        assertEquals("\"x\\udc00\"", Json.write("x\udc00"), "a lone low surrogate is escaped");
        assertEquals("\ud800", Json.parse("\"\\ud800\""), "a lone escaped surrogate is kept");
        String mixed = "𝄞 music, 😀 face, 中文";
        assertEquals(mixed, Json.parse(Json.write(mixed)), "round trip");
    }

    static void jsonNumbers() throws Exception {
        Object[][] cases = {
            {"0", 0L}, {"-0", 0L}, {"42", 42L}, {"-12", -12L},
            {"9223372036854775807", Long.MAX_VALUE}, {"-9223372036854775808", Long.MIN_VALUE},
            {"9223372036854775808", new BigDecimal("9223372036854775808")},
            {"-123456789012345678901234567890", new BigDecimal("-123456789012345678901234567890")},
            {"1.5", 1.5}, {"-0.25", -0.25}, {"1e3", 1000.0}, {"1E+3", 1000.0}, {"2.5e-3", 0.0025},
            {"1.0", 1.0}, {"1e400", new BigDecimal("1e400")}, {"-1e400", new BigDecimal("-1e400")}, {"1e-400", 0.0},
        };
        for (Object[] c : cases) {
            Object parsed = Json.parse((String) c[0]);
            assertEquals(c[1], parsed, "parse " + c[0]);
            assertEquals(c[1].getClass(), parsed.getClass(), "type of " + c[0]);
        }
        assertEquals("1.0", Json.write(1.0), "a double keeps its point");
        assertEquals("1.0E20", Json.write(1e20), "large double");
        assertEquals(1e20, Json.parse(Json.write(1e20)), "large double round trip");
        assertEquals("1E+400", Json.write(new BigDecimal("1e400")), "big decimal");
        assertEquals("0.1", Json.write(0.1f), "float text");
        assertEquals("123456789012345678901234567890", Json.write(new java.math.BigInteger("123456789012345678901234567890")), "big integer");
        assertThrowsJson(() -> Json.write(Double.NaN), "NaN cannot be sent as JSON", -1);
        assertThrowsJson(() -> Json.write(List.of(Double.POSITIVE_INFINITY)), "Infinity cannot be sent as JSON", -1);
        assertThrowsJson(() -> Json.write(Float.NEGATIVE_INFINITY), "-Infinity cannot be sent as JSON", -1);
    }

    static void jsonParseErrors() throws Exception {
        Object[][] cases = {
            {"", "unexpected end of input, expected a value", 0},
            {"   ", "unexpected end of input", 3},
            {"{\"a\":}", "unexpected character '}', expected a value", 5},
            {"[1,2", "unexpected end of input, expected ',' or ']'", 4},
            {"[1,]", "expected a value", 3},
            {"{,}", "expected a string key", 1},
            {"{\"a\" 1}", "expected ':'", 5},
            {"{\"a\":1 \"b\":2}", "expected ',' or '}'", 7},
            {"{a:1}", "expected a string key", 1},
            {"\"abc", "unterminated string", 0},
            {"[\"ab\\", "unterminated string", 1},
            {"\"a\u0001\"", "unescaped control character U+0001 in a string", 2},
            {"\"a\\x\"", "invalid escape '\\x'", 2},
            {"\"\\u12G4\"", "invalid hex digit in a \\u escape", 5},
            {"\"\\u12\"", "truncated \\u escape", 1},
            {"\"\\u12\" ", "invalid hex digit in a \\u escape", 5},
            {"\"\\u12", "truncated \\u escape", 1},
            {"01", "leading zero", 0},
            {"-", "expected a digit", 1},
            {"-a", "expected a digit", 1},
            {"1.", "expected a digit after the decimal point", 2},
            {"1.e5", "expected a digit after the decimal point", 2},
            {"1e", "expected a digit in the exponent", 2},
            {"1e+", "expected a digit in the exponent", 3},
            {".5", "expected a value", 0},
            {"+1", "expected a value", 0},
            {"tru", "expected 'true'", 0},
            {"nul", "expected 'null'", 0},
            {"NaN", "expected a value", 0},
            {"[1] x", "unexpected character 'x' after the JSON value", 4},
            {"{} {}", "after the JSON value", 3},
            {"'a'", "expected a value", 0},
        };
        for (Object[] c : cases) {
            assertThrowsJson(() -> Json.parse((String) c[0]), (String) c[1], (Integer) c[2]);
        }
        String deep = "[".repeat(Json.MAX_DEPTH + 1) + "]".repeat(Json.MAX_DEPTH + 1);
        assertThrowsJson(() -> Json.parse(deep), "nesting deeper than " + Json.MAX_DEPTH + " levels", Json.MAX_DEPTH);
        String ok = "[".repeat(Json.MAX_DEPTH) + "]".repeat(Json.MAX_DEPTH);
        assertEquals(ok, Json.write(Json.parse(ok)), "the deepest allowed nesting");
    }

    static void jsonSerializeErrors() throws Exception {
        assertThrowsJson(() -> Json.write(new byte[] {1}), "bytes cannot be sent as JSON", -1);
        assertThrowsJson(() -> Json.write(Map.of("data", new byte[0])), "bytes cannot be sent as JSON", -1);
        assertThrowsJson(() -> Json.write(new Object()), "a java.lang.Object cannot be sent as JSON", -1);
        assertThrowsJson(() -> Json.write(Map.of(List.of(1), 2)), "map key of type", -1);
        List<Object> cycle = new ArrayList<>();
        cycle.add(cycle);
        assertThrowsJson(() -> Json.write(cycle), "is there a cycle?", -1);
    }

    static void jsonLarge() {
        StringBuilder text = new StringBuilder();
        while (text.length() < 1 << 20) {
            text.append("line ").append(text.length()).append(" \"quoted\" \\ tab\t é 😀\n");
        }
        List<Object> numbers = new ArrayList<>();
        for (long i = 0; i < 100_000; i++) {
            numbers.add(i % 3 == 0 ? (Object) (i * 1.5) : (Object) (i * 7919));
        }
        Map<String, Object> message = new LinkedHashMap<>();
        message.put("text", text.toString());
        message.put("numbers", numbers);
        long began = System.nanoTime();
        String json = Json.write(message);
        Object back = Json.parse(json);
        long ms = (System.nanoTime() - began) / 1_000_000;
        assertTrue(json.length() > 1 << 20, "the message is over 1 MB");
        assertEquals(message, back, "a 1 MB message survives");
        assertTrue(ms < 3000, String.format(Locale.ROOT, "1 MB write + parse took %d ms", ms));
    }
}
