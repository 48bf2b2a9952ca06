package io.hkube.rs;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * HKube's code API as {@link Algorithm#start} receives it: start other algorithms and pipelines
 * from inside a task, and report progress.
 *
 * <p>Every call blocks until the worker answers and returns the reply's {@code response}; a worker
 * error becomes an {@link ApiException} carrying the worker's error text. Calls are safe from any
 * thread except inside {@link Algorithm#stop} and {@link Algorithm#cleanup}, which run on the
 * thread that would have to deliver the reply.
 */
public final class Api {
    private final Runner runner;

    Api(Runner runner) {
        this.runner = runner;
    }

    /** Runs algorithm {@code name} in this job with {@code input}; returns its output (null when {@code includeResult} is false). */
    public Object startAlgorithm(String name, List<?> input, boolean includeResult) throws ApiException {
        Map<String, Object> data = new LinkedHashMap<>();
        data.put("algorithmName", name);
        data.put("input", input == null ? new ArrayList<>() : new ArrayList<Object>(input));
        data.put("includeResult", includeResult);
        return runner.call("startAlgorithmExecution", "execId", data);
    }

    /** {@link #startAlgorithm(String, List, boolean)} with the result included. */
    public Object startAlgorithm(String name, List<?> input) throws ApiException {
        return startAlgorithm(name, input, true);
    }

    /** Runs the stored pipeline {@code name}; returns its results (null when the sub-pipeline was stopped). */
    public Object startStoredSubpipeline(String name, Map<String, ?> flowInput, boolean includeResult) throws ApiException {
        Map<String, Object> subPipeline = new LinkedHashMap<>();
        subPipeline.put("name", name);
        subPipeline.put("flowInput", flowInput == null ? new LinkedHashMap<>() : flowInput);
        Map<String, Object> data = new LinkedHashMap<>();
        data.put("includeResult", includeResult);
        data.put("subPipeline", subPipeline);
        return runner.call("startStoredSubPipeline", "subPipelineId", data);
    }

    /** {@link #startStoredSubpipeline(String, Map, boolean)} with the result included. */
    public Object startStoredSubpipeline(String name, Map<String, ?> flowInput) throws ApiException {
        return startStoredSubpipeline(name, flowInput, true);
    }

    /** Runs a pipeline given by its {@code nodes} descriptor; returns its results (null when stopped). */
    public Object startRawSubpipeline(String name, List<?> nodes, Map<String, ?> flowInput, Map<String, ?> options,
            Map<String, ?> webhooks, boolean includeResult) throws ApiException {
        Map<String, Object> subPipeline = new LinkedHashMap<>();
        subPipeline.put("name", name);
        subPipeline.put("nodes", nodes);
        subPipeline.put("flowInput", flowInput);
        subPipeline.put("options", options == null ? new LinkedHashMap<>() : options);
        subPipeline.put("webhooks", webhooks == null ? new LinkedHashMap<>() : webhooks);
        Map<String, Object> data = new LinkedHashMap<>();
        data.put("includeResult", includeResult);
        data.put("subPipeline", subPipeline);
        return runner.call("startRawSubPipeline", "subPipelineId", data);
    }

    /** {@link #startRawSubpipeline(String, List, Map, Map, Map, boolean)} without options or webhooks, result included. */
    public Object startRawSubpipeline(String name, List<?> nodes, Map<String, ?> flowInput) throws ApiException {
        return startRawSubpipeline(name, nodes, flowInput, null, null, true);
    }

    /** Reports the task's progress (0–100); does not wait for an answer. */
    public void progress(double percent) {
        Map<String, Object> data = new LinkedHashMap<>();
        data.put("progress", percent);
        runner.send("progress", data);
    }
}
