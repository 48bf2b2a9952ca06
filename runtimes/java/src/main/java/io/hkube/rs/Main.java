package io.hkube.rs;

import java.io.File;
import java.lang.reflect.InvocationTargetException;
import java.net.MalformedURLException;
import java.net.URL;
import java.net.URLClassLoader;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Entry point: {@code java -cp hkube-runtime.jar:<algorithm classes or jar> io.hkube.rs.Main}
 * (or {@code java -jar hkube-runtime.jar <algorithm jar or folder>...}).
 *
 * <p>Environment: {@code ALGORITHM_ENTRY_POINT} (mandatory) names the class implementing
 * {@link Algorithm}; {@code WORKER_SOCKET_HOST} (127.0.0.1) and {@code WORKER_SOCKET_PORT} (3000)
 * locate the sidecar; {@code HKUBE_FAST_PATH} (on; {@code 0}, {@code false} or {@code no} turn it
 * off) offers hkube's fast path; {@code HKUBE_CONNECT_TIMEOUT} (30 seconds) bounds the wait for
 * the sidecar. An entry point that cannot be loaded does not stop the process: the error is sent
 * as the first task's {@code errorMessage}, so it reaches the user's job.
 */
public final class Main {
    private Main() {}

    public static void main(String[] argv) {
        ClassLoader loader = Main.class.getClassLoader();
        if (argv.length > 0) {
            try {
                loader = classLoaderFor(argv, loader);
            } catch (MalformedURLException e) {
                System.err.println("hkube runtime: bad algorithm path: " + e.getMessage());
                System.exit(1);
            }
            Thread.currentThread().setContextClassLoader(loader);
        }
        System.exit(run(System.getenv(), loader));
    }

    /** Loads the algorithm named by {@code env} and serves it; returns the process's exit code. */
    public static int run(Map<String, String> env, ClassLoader loader) {
        Loaded loaded = load(env.get("ALGORITHM_ENTRY_POINT"), loader);
        return connect(new Runner(loaded.algorithm, loaded.error, env), env);
    }

    /**
     * For a custom image with its own {@code main}: serves {@code algorithm} behind the sidecar
     * named by the environment and returns the exit code (blocks until {@code exit}).
     */
    public static int serve(Algorithm algorithm) {
        return connect(new Runner(algorithm), System.getenv());
    }

    static int connect(Runner runner, Map<String, String> env) {
        String host = env.getOrDefault("WORKER_SOCKET_HOST", "127.0.0.1");
        String portText = env.getOrDefault("WORKER_SOCKET_PORT", "3000");
        String timeoutText = env.getOrDefault("HKUBE_CONNECT_TIMEOUT", "30");
        int port;
        double timeout;
        try {
            port = Integer.parseInt(portText.trim());
            timeout = Double.parseDouble(timeoutText.trim());
        } catch (NumberFormatException e) {
            System.err.println("hkube runtime: WORKER_SOCKET_PORT (" + portText + ") and HKUBE_CONNECT_TIMEOUT ("
                    + timeoutText + ") must be numbers");
            return 1;
        }
        String fastText = env.getOrDefault("HKUBE_FAST_PATH", "1").trim().toLowerCase();
        boolean fast = !(fastText.equals("0") || fastText.equals("false") || fastText.equals("no"));
        return runner.run(host, port, fast, timeout);
    }

    /** The user's algorithm, or the {@code errorMessage} payload that says why there is none. */
    public static final class Loaded {
        public final Algorithm algorithm;
        public final Map<String, Object> error;

        Loaded(Algorithm algorithm, Map<String, Object> error) {
            this.algorithm = algorithm;
            this.error = error;
        }
    }

    /** Instantiates {@code className} (public, no-argument constructor, implements {@link Algorithm}). */
    public static Loaded load(String className, ClassLoader loader) {
        if (className == null || className.isBlank()) {
            return new Loaded(null, failure("ALGORITHM_ENTRY_POINT is not set: it must name the class implementing "
                    + Algorithm.class.getName(), null));
        }
        String name = className.trim();
        Class<?> type;
        try {
            type = Class.forName(name, true, loader);
        } catch (ClassNotFoundException | LinkageError e) {
            return new Loaded(null, failure("cannot load the algorithm's entry point '" + name + "': " + e, e));
        }
        if (!Algorithm.class.isAssignableFrom(type)) {
            return new Loaded(null, failure("the algorithm's entry point '" + name + "' does not implement "
                    + Algorithm.class.getName(), null));
        }
        try {
            return new Loaded((Algorithm) type.getConstructor().newInstance(), null);
        } catch (NoSuchMethodException | IllegalAccessException | InstantiationException e) {
            return new Loaded(null, failure("cannot create the algorithm's entry point '" + name
                    + "': it needs to be a concrete public class with a public no-argument constructor (" + e + ")", e));
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            return new Loaded(null, failure("the algorithm's entry point '" + name + "' failed in its constructor: "
                    + cause, cause));
        } catch (RuntimeException | LinkageError e) {
            return new Loaded(null, failure("cannot create the algorithm's entry point '" + name + "': " + e, e));
        }
    }

    private static Map<String, Object> failure(String message, Throwable cause) {
        Map<String, Object> error = new LinkedHashMap<>();
        error.put("code", "Failed");
        error.put("message", message);
        if (cause != null) {
            error.put("details", Runner.stackTrace(cause));
        }
        return error;
    }

    private static ClassLoader classLoaderFor(String[] paths, ClassLoader parent) throws MalformedURLException {
        URL[] urls = new URL[paths.length];
        for (int i = 0; i < paths.length; i++) {
            urls[i] = new File(paths[i]).toURI().toURL();
        }
        return new URLClassLoader(urls, parent);
    }
}
