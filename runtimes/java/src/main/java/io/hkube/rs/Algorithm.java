package io.hkube.rs;

import java.util.Map;

/**
 * What a user implements to run behind hkube's sidecar; modelled on HKube's {@code IAlgorithm}.
 *
 * <p>The class named by {@code ALGORITHM_ENTRY_POINT} must implement this interface and have a
 * public no-argument constructor. One instance serves every task of the process, one task at a
 * time: {@link #init} and {@link #start} always run on the same task thread, while {@link #stop}
 * and {@link #cleanup} run on the thread that receives the sidecar's messages.
 */
public interface Algorithm {
    /** Called before each task with the task's arguments; an exception fails the task. */
    default void init(Map<String, Object> args) throws Exception {}

    /**
     * Runs the task. {@code args.get("input")} is the node's input list. The return value is the
     * task's result and must be JSON-serializable (see {@link Json}); an exception fails the task
     * with its {@code toString()} as the message and its stack trace as the details.
     */
    Object start(Map<String, Object> args, Api api) throws Exception;

    /** The task is being stopped: make {@link #start} return soon. Its result is then discarded. */
    default void stop() {}

    /** The process is about to exit (or lost its sidecar): release resources. */
    default void cleanup() {}
}
