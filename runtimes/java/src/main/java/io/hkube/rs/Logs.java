package io.hkube.rs;

import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.Charset;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * Per-task logs: what user code prints while its task runs, attached to the task's reply.
 *
 * <p>{@code System.out} and {@code System.err} are replaced once per process by pass-through
 * streams that also copy into the current task's capture, when one is open. Opening and closing a
 * capture sets one field, so a task that prints nothing costs nothing measurable: no per-task
 * stream, buffer or thread.
 *
 * <p>Only what user code prints is kept: the runtime writes its own notes with {@link #note}, which
 * bypasses the copy, and the thread that handles the sidecar's messages (where {@code stop} and
 * {@code cleanup} run) is {@link #quiet quiet} while it does. Output of other threads is copied
 * while a task's capture is open. This class never holds more than about twice {@link #LIMIT} bytes
 * per task, however much a task prints.
 */
final class Logs {
    static final int LIMIT = 64 * 1024;
    static final String TRUNCATED = "...(truncated)\n";

    private static final ThreadLocal<Boolean> QUIET = ThreadLocal.withInitial(() -> Boolean.FALSE);
    private static volatile Capture current;

    private Logs() {}

    /** Puts the pass-through streams in place (once; again if someone replaced them since). */
    static synchronized void install() {
        if (!(System.out instanceof Tee)) {
            System.setOut(new Tee(System.out, charset("sun.stdout.encoding")));
        }
        if (!(System.err instanceof Tee)) {
            System.setErr(new Tee(System.err, charset("sun.stderr.encoding")));
        }
    }

    private static Charset charset(String property) {
        String name = System.getProperty(property);
        try {
            return name != null && Charset.isSupported(name) ? Charset.forName(name) : Charset.defaultCharset();
        } catch (IllegalArgumentException e) {
            return Charset.defaultCharset();
        }
    }

    /** Writes the runtime's own line to stderr, never into a task's log. */
    static void note(String line) {
        PrintStream err = System.err instanceof Tee ? ((Tee) System.err).real : System.err;
        err.println(line);
    }

    /** Whether the calling thread's output is kept out of tasks' logs; returns the previous setting. */
    static boolean quiet(boolean quiet) {
        boolean previous = QUIET.get();
        QUIET.set(quiet);
        return previous;
    }

    /** Opens a capture for the task about to run. */
    static void begin() {
        current = new Capture();
    }

    /** Closes the capture; returns its text (the last LIMIT bytes, marked when cut) or null when empty. */
    static String end() {
        Capture capture = current;
        current = null;
        return capture == null ? null : capture.text();
    }

    private static void copy(byte[] bytes, int offset, int length, Charset charset) {
        Capture capture = current;
        if (capture != null && length > 0 && !QUIET.get()) {
            capture.add(bytes, offset, length, charset);
        }
    }

    /** Stands in for System.out / System.err: writes through, and copies into the capture. */
    private static final class Tee extends PrintStream {
        final PrintStream real;

        Tee(PrintStream real, Charset charset) {
            super(new Copier(real, charset), true, charset);
            this.real = real;
        }
    }

    private static final class Copier extends OutputStream {
        private final PrintStream real;
        private final Charset charset;

        Copier(PrintStream real, Charset charset) {
            this.real = real;
            this.charset = charset;
        }

        @Override
        public void write(int b) {
            real.write(b);
            copy(new byte[] {(byte) b}, 0, 1, charset);
        }

        @Override
        public void write(byte[] bytes, int offset, int length) {
            real.write(bytes, offset, length);
            copy(bytes, offset, length, charset);
        }

        @Override
        public void flush() {
            real.flush();
        }
    }

    /** One task's output: bytes in the order written, each run of them decoded with its stream's charset. */
    private static final class Capture {
        private final StringBuilder text = new StringBuilder();
        private boolean cut;

        synchronized void add(byte[] bytes, int offset, int length, Charset charset) {
            text.append(new String(bytes, offset, length, charset));
            if (text.length() > 2 * LIMIT) {
                // Keep the last LIMIT characters: at least LIMIT bytes once encoded, which is all that is sent.
                text.delete(0, text.length() - LIMIT);
                cut = true;
            }
        }

        synchronized String text() {
            if (text.length() == 0) {
                return null;
            }
            String all = text.toString();
            boolean truncated = cut;
            byte[] utf8 = all.getBytes(StandardCharsets.UTF_8);
            if (utf8.length > LIMIT) {
                int start = utf8.length - LIMIT;
                // A character cut in half at the start is dropped, not mangled.
                while (start < utf8.length && (utf8[start] & 0xc0) == 0x80) {
                    start++;
                }
                all = new String(Arrays.copyOfRange(utf8, start, utf8.length), StandardCharsets.UTF_8);
                truncated = true;
            }
            return truncated ? TRUNCATED + all : all;
        }
    }
}
