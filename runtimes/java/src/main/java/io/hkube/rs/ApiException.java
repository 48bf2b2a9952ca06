package io.hkube.rs;

/**
 * A code-API call failed: the worker answered with an error (or the sidecar went away).
 *
 * <p>Unchecked, so {@link Api} calls fit in lambdas; {@link Algorithm#start} lets it propagate and
 * the task fails with its message unless the algorithm catches it.
 */
public class ApiException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final transient Object error;

    public ApiException(String message, Object error) {
        super(message);
        this.error = error;
    }

    /** The worker's {@code error} value as received (usually a string), or null when there was none. */
    public Object error() {
        return error;
    }
}
