package io.hkube.rs;

import java.io.ByteArrayOutputStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.WebSocket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The protocol loop: connects to the sidecar, runs the user's {@link Algorithm}, answers.
 *
 * <p>Two ways to run a task, chosen by the sidecar at connect time:
 * <ul>
 *   <li>HKube's exchange: {@code initialize} → {@code initialized}, {@code start} → {@code started}
 *       → {@code done} (storage v1: the result travels in {@code done}); {@code stop} →
 *       {@code stopped}; {@code exit}.
 *   <li>hkube's fast path ({@code fast=1} in the query): {@code run} → {@code result}, one message
 *       each way, or {@code runBatch} → {@code results}.
 * </ul>
 *
 * <p>Threads: the websocket's listener thread only routes messages. User {@code init} and
 * {@code start} run, one task at a time and in arrival order, on a single dedicated task thread,
 * so a code-API call made by a task simply waits for its reply while the listener keeps receiving
 * (and handling {@code stop}). {@code stop}, {@code exit} and code-API replies are handled on the
 * listener thread.
 *
 * <p>Stop (both ways): the user's {@code stop()} is called, then the task thread is interrupted (a
 * task waiting or sleeping ends at once); the tasks of a batch not begun yet are dropped, the
 * result of the task in hand is discarded, and {@code stopped} follows once it has returned. In
 * the fast path nothing of the stopped work is sent after {@code stopped}, so the sidecar may hand
 * out the next task. A task that never returns is the sidecar's to end: it kills the process
 * after its stop timeout.
 *
 * <p>Errors raised by user code become {@code errorMessage} with the exception's
 * text and stack trace; an algorithm that failed to load is reported on the first task.
 *
 * <p>A task's {@code byte[]} result goes to storage and is answered with a reference; references in
 * a task's input are read back before {@code start} (see {@link Storage}). What user code prints
 * while its task runs ({@code init} and {@code start}) still goes to {@code System.out} /
 * {@code System.err} and is also attached to the task's reply as {@code log} (see {@link Logs});
 * HKube's exchange sends it as a {@code taskLog} message just before {@code done} or
 * {@code errorMessage}.
 */
public final class Runner {
    private static final AtomicInteger RUNNERS = new AtomicInteger();

    private final Algorithm algorithm;
    private final Map<String, Object> loadError;
    private final Storage storage;
    private final Api api = new Api(this);
    private final ExecutorService tasks;
    private final ExecutorService socketThreads;
    private final HttpClient client;

    private final Object sendLock = new Object();
    private volatile WebSocket socket;
    private final CompletableFuture<Integer> finished = new CompletableFuture<>();
    private volatile Integer exitCode;
    private final AtomicBoolean cleanedUp = new AtomicBoolean();

    private final AtomicLong nextId = new AtomicLong();
    private final Map<String, CompletableFuture<Reply>> waiting = new ConcurrentHashMap<>();
    /** Set while the listener thread dispatches: a code-API call there could never get its reply. */
    private static final ThreadLocal<Boolean> ON_LISTENER = ThreadLocal.withInitial(() -> Boolean.FALSE);

    // Guarded by `this`. taskRunning: HKube's exchange's start; fastRunning: a fast-path run or
    // batch. The answer to fast-path work and `stopped` are decided under the lock, so exactly one
    // of them ends that work.
    private Map<String, Object> args;
    private boolean taskRunning;
    private boolean fastRunning;
    private boolean stopRequested;
    private CompletableFuture<Void> userStopDone;
    /** The task thread, interrupted by a stop. */
    private volatile Thread taskThread;

    /** A runner for a loaded algorithm. */
    public Runner(Algorithm algorithm) {
        this(algorithm, null);
    }

    /**
     * A runner for {@code algorithm}, or, when {@code loadError} is set (an {@code errorMessage}
     * error payload), one that answers every task with that error.
     */
    public Runner(Algorithm algorithm, Map<String, Object> loadError) {
        this(algorithm, loadError, System.getenv());
    }

    /**
     * As {@link #Runner(Algorithm, Map)}, reading the storage settings ({@code
     * BASE_FS_ADAPTER_DIRECTORY}, {@code CLUSTER_NAME}) from {@code env} instead of the process's.
     */
    public Runner(Algorithm algorithm, Map<String, Object> loadError, Map<String, String> env) {
        if (algorithm == null && loadError == null) {
            throw new IllegalArgumentException("a Runner needs an algorithm or a load error");
        }
        this.algorithm = algorithm;
        this.loadError = loadError;
        this.storage = new Storage(env);
        int n = RUNNERS.incrementAndGet();
        this.tasks = Executors.newSingleThreadExecutor(daemonThreads("hkube-task-" + n));
        this.socketThreads = Executors.newCachedThreadPool(daemonThreads("hkube-socket-" + n));
        this.client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).executor(socketThreads).build();
    }

    private static ThreadFactory daemonThreads(String name) {
        AtomicInteger count = new AtomicInteger();
        return task -> {
            Thread thread = new Thread(task, name + "-" + count.incrementAndGet());
            thread.setDaemon(true);
            return thread;
        };
    }

    /** The URI the runtime connects to. */
    public static URI uri(String host, int port, boolean fast) {
        String hostPart = host.contains(":") && !host.startsWith("[") ? "[" + host + "]" : host;
        return URI.create("ws://" + hostPart + ":" + port + "/?storage=v1&encoding=json" + (fast ? "&fast=1" : ""));
    }

    /**
     * Connects (retrying every 50 ms for up to {@code connectTimeoutSeconds}, as the sidecar may
     * still be starting) and handles messages until {@code exit} or until the connection closes.
     *
     * @return the exit code the sidecar asked for (0 when the connection just closed), or 1 when
     *     the sidecar could not be reached (after a message on stderr)
     */
    public int run(String host, int port, boolean fast, double connectTimeoutSeconds) {
        URI uri = uri(host, port, fast);
        Logs.install();
        long deadline = System.nanoTime() + (long) (connectTimeoutSeconds * 1e9);
        while (true) {
            long remaining = Math.max(deadline - System.nanoTime(), TimeUnit.MILLISECONDS.toNanos(200));
            try {
                client.newWebSocketBuilder()
                        .connectTimeout(Duration.ofNanos(remaining))
                        .buildAsync(uri, new Listener())
                        .get(remaining + TimeUnit.SECONDS.toNanos(1), TimeUnit.NANOSECONDS);
                break;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return fail("hkube runtime: interrupted while connecting to the sidecar at " + host + ":" + port);
            } catch (Exception e) {
                if (System.nanoTime() > deadline) {
                    Throwable cause = e instanceof ExecutionException && e.getCause() != null ? e.getCause() : e;
                    return fail("hkube runtime: cannot reach the sidecar at " + host + ":" + port + " within "
                            + connectTimeoutSeconds + " s: " + cause
                            + (cause.getMessage() == null ? " (is the sidecar listening there?)" : ""));
                }
                try {
                    Thread.sleep(50);
                } catch (InterruptedException interrupted) {
                    Thread.currentThread().interrupt();
                    return fail("hkube runtime: interrupted while connecting to the sidecar at " + host + ":" + port);
                }
            }
        }
        try {
            return finished.join();
        } finally {
            tasks.shutdown();
        }
    }

    private int fail(String message) {
        Logs.note(message);
        tasks.shutdown();
        return 1;
    }

    // -- wire ----------------------------------------------------------------------------

    private final class Listener implements WebSocket.Listener {
        private StringBuilder text = new StringBuilder();
        private final ByteArrayOutputStream binary = new ByteArrayOutputStream();

        @Override
        public void onOpen(WebSocket webSocket) {
            socket = webSocket;
            webSocket.request(1);
        }

        @Override
        public CompletionStage<?> onText(WebSocket webSocket, CharSequence data, boolean last) {
            text.append(data);
            if (last) {
                String message = text.toString();
                // Do not keep a large buffer alive between messages.
                text = text.capacity() > (1 << 16) ? new StringBuilder() : text;
                text.setLength(0);
                dispatchOnListener(message);
            }
            webSocket.request(1);
            return null;
        }

        @Override
        public CompletionStage<?> onBinary(WebSocket webSocket, ByteBuffer data, boolean last) {
            byte[] bytes = new byte[data.remaining()];
            data.get(bytes);
            binary.write(bytes, 0, bytes.length);
            if (last) {
                String message = new String(binary.toByteArray(), StandardCharsets.UTF_8);
                binary.reset();
                dispatchOnListener(message);
            }
            webSocket.request(1);
            return null;
        }

        @Override
        public CompletionStage<?> onClose(WebSocket webSocket, int statusCode, String reason) {
            synchronized (sendLock) {
                try {
                    webSocket.sendClose(WebSocket.NORMAL_CLOSURE, "");
                } catch (RuntimeException ignored) {
                    // already closing
                }
            }
            connectionEnded();
            return null;
        }

        @Override
        public void onError(WebSocket webSocket, Throwable error) {
            if (exitCode == null) {
                Logs.note("hkube runtime: the connection to the sidecar failed: " + error);
            }
            connectionEnded();
        }
    }

    private void dispatchOnListener(String text) {
        ON_LISTENER.set(Boolean.TRUE);
        // What is printed here (a user stop or cleanup, the runtime) is never a task's.
        boolean wasQuiet = Logs.quiet(true);
        try {
            dispatch(text);
        } catch (RuntimeException | Error e) {
            Logs.note("hkube runtime: cannot handle a message from the sidecar: " + e);
        } finally {
            ON_LISTENER.set(Boolean.FALSE);
            Logs.quiet(wasQuiet);
        }
    }

    /** The sidecar went away (or we closed after {@code exit}): release waiters and finish. */
    private void connectionEnded() {
        for (String id : new ArrayList<>(waiting.keySet())) {
            CompletableFuture<Reply> reply = waiting.remove(id);
            if (reply != null) {
                reply.completeExceptionally(new ApiException("the connection to the sidecar closed", null));
            }
        }
        cleanupOnce();
        Integer code = exitCode;
        finished.complete(code == null ? 0 : code);
    }

    private void cleanupOnce() {
        if (algorithm != null && cleanedUp.compareAndSet(false, true)) {
            try {
                algorithm.cleanup();
            } catch (Throwable t) {
                t.printStackTrace();
            }
        }
    }

    /** Sends one message; false (after a note on stderr) when it could not be sent. */
    boolean sendText(String text) {
        WebSocket ws = socket;
        if (ws == null || finished.isDone()) {
            // After exit or a lost connection the process is ending: nobody is left to tell.
            if (ws == null) {
                Logs.note("hkube runtime: not connected; dropped a message to the sidecar");
            }
            return false;
        }
        // java.net.http.WebSocket allows one outstanding send: the lock makes senders take turns.
        synchronized (sendLock) {
            try {
                ws.sendText(text, true).get();
                return true;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            } catch (ExecutionException | RuntimeException e) {
                Throwable cause = e instanceof ExecutionException && e.getCause() != null ? e.getCause() : e;
                Logs.note("hkube runtime: cannot send to the sidecar: " + cause);
            }
            return false;
        }
    }

    boolean send(String command, Object data) {
        Map<String, Object> message = new LinkedHashMap<>();
        message.put("command", command);
        if (data != null) {
            message.put("data", data);
        }
        return sendText(Json.write(message));
    }

    private void sendError(Map<String, Object> error, Object taskId, boolean withTaskId) {
        sendError(error, taskId, withTaskId, null);
    }

    /** An {@code errorMessage}; on the fast path ({@code withTaskId}) its data carries the task's log. */
    private void sendError(Map<String, Object> error, Object taskId, boolean withTaskId, Object log) {
        Map<String, Object> message = new LinkedHashMap<>();
        message.put("command", "errorMessage");
        message.put("error", error);
        if (withTaskId) {
            Map<String, Object> data = new LinkedHashMap<>();
            data.put("taskId", taskId);
            if (log != null) {
                data.put("log", log);
            }
            message.put("data", data);
        }
        sendText(Json.write(message));
    }

    /** HKube's exchange: the task's log, just before its {@code done} or {@code errorMessage}. */
    private void sendLog(Object taskId, String log) {
        if (log != null) {
            Map<String, Object> data = new LinkedHashMap<>();
            data.put("taskId", taskId);
            data.put("log", log);
            send("taskLog", data);
        }
    }

    /** Calls the user's start with the task's stored inputs read back. */
    private Object callStart(Map<String, Object> taskArgs) throws Exception {
        if (taskArgs.containsKey("input")) {
            taskArgs.put("input", storage.resolve(taskArgs.get("input")));
        }
        return algorithm.start(taskArgs, api);
    }

    /** Sends a code-API request and waits for its reply (see {@link Api}). */
    Object call(String command, String idField, Map<String, Object> payload) {
        if (ON_LISTENER.get()) {
            throw new ApiException("code-API calls cannot be made from stop() or cleanup(): "
                    + "their replies arrive on the thread that runs them", null);
        }
        String id = Long.toString(nextId.incrementAndGet());
        CompletableFuture<Reply> reply = new CompletableFuture<>();
        waiting.put(id, reply);
        payload.put(idField, id);
        Map<String, Object> message = new LinkedHashMap<>();
        message.put("command", command);
        message.put("data", payload);
        String text;
        try {
            text = Json.write(message);
        } catch (Json.JsonException e) {
            waiting.remove(id);
            throw new ApiException(command + ": the request cannot be sent as JSON: " + e.getMessage(), null);
        }
        if (!sendText(text)) {
            waiting.remove(id);
            throw new ApiException(command + " could not be sent: the sidecar is not connected", null);
        }
        Reply answer;
        try {
            answer = reply.get();
        } catch (InterruptedException e) {
            waiting.remove(id);
            Thread.currentThread().interrupt();
            throw new ApiException(command + " was interrupted while waiting for its reply", null);
        } catch (ExecutionException e) {
            throw e.getCause() instanceof ApiException ? (ApiException) e.getCause()
                    : new ApiException(String.valueOf(e.getCause()), null);
        }
        if (answer.failed) {
            throw new ApiException(errorText(answer.value), answer.value);
        }
        return answer.value;
    }

    private static String errorText(Object error) {
        if (error == null) {
            return "the worker reported an error";
        }
        if (error instanceof CharSequence) {
            return error.toString();
        }
        if (error instanceof Map && ((Map<?, ?>) error).get("message") instanceof CharSequence) {
            return ((Map<?, ?>) error).get("message").toString();
        }
        try {
            return Json.write(error);
        } catch (Json.JsonException e) {
            return String.valueOf(error);
        }
    }

    private static final class Reply {
        final Object value;
        final boolean failed;

        Reply(Object value, boolean failed) {
            this.value = value;
            this.failed = failed;
        }
    }

    private void resolve(Object id, Object value, boolean failed) {
        CompletableFuture<Reply> reply = waiting.remove(String.valueOf(id));
        if (reply != null) {
            reply.complete(new Reply(value, failed));
        }
    }

    // -- the loop ------------------------------------------------------------------------

    @SuppressWarnings("unchecked")
    private void dispatch(String text) {
        Object parsed;
        try {
            parsed = Json.parse(text);
        } catch (Json.JsonException e) {
            Logs.note("hkube runtime: ignoring a message that is not JSON: " + e.getMessage());
            return;
        }
        if (!(parsed instanceof Map)) {
            return;
        }
        Map<String, Object> message = (Map<String, Object>) parsed;
        Object command = message.get("command");
        Object rawData = message.get("data");
        Map<String, Object> data = rawData instanceof Map ? (Map<String, Object>) rawData : new LinkedHashMap<>();
        if (!(command instanceof String)) {
            return;
        }
        switch ((String) command) {
            case "initialize":
                onInitialize(data);
                break;
            case "start":
                onStart();
                break;
            case "stop":
                onStop();
                break;
            case "exit":
                onExit(data);
                break;
            case "run":
                onTaskThread(() -> onRun(data));
                break;
            case "runBatch":
                onTaskThread(() -> onRunBatch(data));
                break;
            case "algorithmExecutionDone":
                resolve(data.get("execId"), data.get("response"), false);
                break;
            case "algorithmExecutionError":
                resolve(data.get("execId"), data.get("error"), true);
                break;
            case "subPipelineDone":
                resolve(data.get("subPipelineId"), data.get("response"), false);
                break;
            case "subPipelineError":
                resolve(data.get("subPipelineId"), data.get("error"), true);
                break;
            case "subPipelineStopped":
                resolve(data.get("subPipelineId"), null, false);
                break;
            default:
                // Unknown commands (subPipelineStarted, serviceDiscoveryUpdate, ...) are not ours to answer.
                break;
        }
    }

    private void onTaskThread(Runnable work) {
        try {
            tasks.execute(() -> {
                taskThread = Thread.currentThread();
                // An interrupt meant for stopped work never reaches the next.
                Thread.interrupted();
                work.run();
            });
        } catch (RejectedExecutionException e) {
            Logs.note("hkube runtime: a task arrived after exit; ignored");
        }
    }

    // -- HKube's exchange ----------------------------------------------------------------

    private void onInitialize(Map<String, Object> data) {
        synchronized (this) {
            args = data;
            stopRequested = false;
        }
        onTaskThread(() -> {
            if (loadError != null) {
                sendError(loadError, null, false);
                return;
            }
            // The capture stays open from init to the end of start (both on this thread).
            Logs.begin();
            try {
                algorithm.init(data);
            } catch (Throwable t) {
                sendLog(data.get("taskId"), Logs.end());
                sendError(errorPayload(t), null, false);
                return;
            }
            send("initialized", null);
        });
    }

    private void onStart() {
        Map<String, Object> taskArgs;
        synchronized (this) {
            taskArgs = args != null ? args : new LinkedHashMap<>();
            taskRunning = true;
        }
        send("started", null);
        onTaskThread(() -> runTask(taskArgs));
    }

    private void runTask(Map<String, Object> taskArgs) {
        Object output = null;
        Throwable failure = null;
        if (loadError == null) {
            try {
                output = storage.prepareOutput(callStart(taskArgs), taskArgs.get("jobId"), taskArgs.get("taskId"));
            } catch (Throwable t) {
                failure = t;
            }
        }
        String log = Logs.end();
        boolean stopped;
        CompletableFuture<Void> stopDone;
        synchronized (this) {
            taskRunning = false;
            stopped = stopRequested;
            stopDone = userStopDone;
        }
        if (stopped) {
            answerStopped(stopDone);
        } else if (loadError != null) {
            sendError(loadError, null, false);
        } else if (failure != null) {
            sendLog(taskArgs.get("taskId"), log);
            sendError(errorPayload(failure), null, false);
        } else {
            Map<String, Object> message = new LinkedHashMap<>();
            message.put("command", "done");
            message.put("data", output);
            String text;
            try {
                text = Json.write(message);
            } catch (Json.JsonException e) {
                sendLog(taskArgs.get("taskId"), log);
                sendError(notJson("the result", e), null, false);
                return;
            }
            sendLog(taskArgs.get("taskId"), log);
            sendText(text);
        }
    }

    private void onStop() {
        boolean running;
        CompletableFuture<Void> done = new CompletableFuture<>();
        synchronized (this) {
            stopRequested = true;
            running = taskRunning || fastRunning;
            userStopDone = done;
        }
        try {
            if (algorithm != null) {
                algorithm.stop();
            }
        } catch (Throwable t) {
            t.printStackTrace();
        } finally {
            // Before `done`: the task thread clears its interrupt only after waiting for it.
            Thread thread = taskThread;
            if (running && thread != null) {
                thread.interrupt();
            }
            done.complete(null);
        }
        if (!running) {
            send("stopped", null);
        }
        // Otherwise the task thread sends `stopped` once start() returns; its result is discarded.
    }

    /** The stopped work is over: `stopped`, once the user's stop() has returned too. */
    private void answerStopped(CompletableFuture<Void> stopDone) {
        if (stopDone != null) {
            stopDone.join();
        }
        // The stop's interrupt is spent; sending must not see it.
        Thread.interrupted();
        send("stopped", null);
    }

    /** A fast-path run or batch begins (the sidecar sends the next only once this is answered). */
    private synchronized void fastBegins() {
        stopRequested = false;
        fastRunning = true;
    }

    private synchronized boolean stopRequested() {
        return stopRequested;
    }

    /** The fast-path work ends: {@code answer} is sent, unless a stop came first; then `stopped` is. */
    private void fastEnds(Runnable answer) {
        CompletableFuture<Void> stopDone;
        synchronized (this) {
            fastRunning = false;
            if (!stopRequested) {
                answer.run();
                return;
            }
            stopDone = userStopDone;
        }
        answerStopped(stopDone);
    }

    private void onExit(Map<String, Object> data) {
        Object code = data.get("exitCode");
        exitCode = code instanceof Number ? ((Number) code).intValue() : 0;
        cleanupOnce();
        WebSocket ws = socket;
        if (ws != null) {
            synchronized (sendLock) {
                try {
                    ws.sendClose(WebSocket.NORMAL_CLOSURE, "").get(1, TimeUnit.SECONDS);
                } catch (Exception ignored) {
                    // The process is leaving anyway.
                }
            }
        }
        connectionEnded();
    }

    // -- hkube's fast path ---------------------------------------------------------------

    /** Runs one fast-path task: {@code {taskId, output}} or {@code {taskId, error}}. */
    private Map<String, Object> runFast(Map<String, Object> data) {
        Map<String, Object> outcome = new LinkedHashMap<>();
        outcome.put("taskId", data.get("taskId"));
        if (loadError != null) {
            outcome.put("error", loadError);
            return outcome;
        }
        Logs.begin();
        try {
            algorithm.init(data);
            outcome.put("output", storage.prepareOutput(callStart(data), data.get("jobId"), data.get("taskId")));
        } catch (Throwable t) {
            outcome.put("error", errorPayload(t));
        }
        String log = Logs.end();
        if (log != null) {
            outcome.put("log", log);
        }
        return outcome;
    }

    @SuppressWarnings("unchecked")
    private void onRun(Map<String, Object> data) {
        fastBegins();
        Map<String, Object> outcome = runFast(data);
        Object taskId = outcome.get("taskId");
        Object log = outcome.get("log");
        if (outcome.containsKey("error")) {
            fastEnds(() -> sendError((Map<String, Object>) outcome.get("error"), taskId, true, log));
            return;
        }
        Map<String, Object> message = new LinkedHashMap<>();
        message.put("command", "result");
        message.put("data", outcome);
        String text;
        try {
            text = Json.write(message);
        } catch (Json.JsonException e) {
            fastEnds(() -> sendError(notJson("the result", e), taskId, true, log));
            return;
        }
        fastEnds(() -> sendText(text));
    }

    private void onRunBatch(Map<String, Object> data) {
        fastBegins();
        Object listed = data.get("tasks");
        List<?> batch = listed instanceof List ? (List<?>) listed : new ArrayList<>();
        StringBuilder out = new StringBuilder("{\"command\":\"results\",\"data\":{\"results\":[");
        for (int i = 0; i < batch.size(); i++) {
            if (stopRequested()) {
                break; // the rest of a stopped batch never runs
            }
            Object item = batch.get(i);
            @SuppressWarnings("unchecked")
            Map<String, Object> task = item instanceof Map ? (Map<String, Object>) item : new LinkedHashMap<>();
            Map<String, Object> outcome = runFast(task);
            if (i > 0) {
                out.append(',');
            }
            // Each result is checked on its own, so one unserializable output fails only its task.
            int mark = out.length();
            try {
                Json.write(outcome, out);
            } catch (Json.JsonException e) {
                out.setLength(mark);
                Map<String, Object> failed = new LinkedHashMap<>();
                failed.put("taskId", task.get("taskId"));
                failed.put("error", notJson("the result", e));
                if (outcome.containsKey("log")) {
                    failed.put("log", outcome.get("log"));
                }
                Json.write(failed, out);
            }
        }
        String text = out.append("]}}").toString();
        fastEnds(() -> sendText(text));
    }

    // -- errors --------------------------------------------------------------------------

    /** The {@code error} of an {@code errorMessage} for an exception raised by user code. */
    static Map<String, Object> errorPayload(Throwable t) {
        Map<String, Object> error = new LinkedHashMap<>();
        error.put("code", "Failed");
        // A storage failure's message already says what went wrong and where.
        error.put("message", t instanceof Storage.StorageException ? t.getMessage() : t.toString());
        error.put("details", stackTrace(t));
        // hkube's additions: the exception's class and where the user's code raised it.
        error.put("type", t.getClass().getName());
        StackTraceElement where = userFrame(t);
        if (where != null && where.getFileName() != null) {
            error.put("file", where.getFileName());
            if (where.getLineNumber() > 0) {
                error.put("line", where.getLineNumber());
            }
        }
        return error;
    }

    /** The innermost frame that is neither this runtime's nor the JDK's (else the innermost). */
    static StackTraceElement userFrame(Throwable t) {
        StackTraceElement[] frames = t.getStackTrace();
        for (StackTraceElement frame : frames) {
            String name = frame.getClassName();
            boolean platform = name.startsWith("io.hkube.rs.") || name.startsWith("java.")
                    || name.startsWith("javax.") || name.startsWith("jdk.") || name.startsWith("sun.");
            if (!platform) {
                return frame;
            }
        }
        return frames.length > 0 ? frames[0] : null;
    }

    static String stackTrace(Throwable t) {
        StringWriter text = new StringWriter();
        t.printStackTrace(new PrintWriter(text, true));
        return text.toString();
    }

    private static Map<String, Object> notJson(String what, Json.JsonException e) {
        Map<String, Object> error = new LinkedHashMap<>();
        error.put("code", "Failed");
        error.put("message", what + " cannot be sent as JSON: " + e.getMessage());
        return error;
    }
}
