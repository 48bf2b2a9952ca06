package io.hkube.rs;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Large values through storage instead of the socket (the Python runtime's {@code storage.py},
 * ported).
 *
 * <p>A task that returns a {@code byte[]} writes it to the shared filesystem storage (HKube's
 * layout: {@code <root>/<cluster>-hkube/<jobId>/<taskId>}, the 8-byte header, then the payload)
 * and answers with a small reference {@code {"$$hkubeRef": {"path", "size"}}}. A task whose input
 * holds such a reference reads the file. So a large result crosses no socket: it is written once
 * and read once.
 *
 * <p>The storage root comes from {@code BASE_FS_ADAPTER_DIRECTORY} and the prefix from
 * {@code CLUSTER_NAME} ({@code local} when unset), set by the sidecar's side.
 */
final class Storage {
    static final String REFERENCE = "$$hkubeRef";
    private static final int HEADER_LEN = 8;
    private static final int RAW = 0x01;
    private static final int ENCODED = 0x02;
    private static final int BSON = 0x01;
    private static final int JSON = 0x02;
    private static final int MSGPACK = 0x03;

    /** A storage failure; its message names the object's path and is the task's error message. */
    static final class StorageException extends RuntimeException {
        private static final long serialVersionUID = 1L;

        StorageException(String message) {
            super(message);
        }
    }

    private final String root;
    private final String cluster;

    Storage(Map<String, String> env) {
        String base = env.get("BASE_FS_ADAPTER_DIRECTORY");
        this.root = base == null || base.isEmpty() ? null : base;
        this.cluster = env.getOrDefault("CLUSTER_NAME", "local");
    }

    static boolean isReference(Object value) {
        return value instanceof Map && ((Map<?, ?>) value).size() == 1 && ((Map<?, ?>) value).containsKey(REFERENCE);
    }

    /** Bytes go to storage; everything else travels in the message. */
    Object prepareOutput(Object output, Object jobId, Object taskId) {
        return output instanceof byte[] ? storeBytes(jobId, taskId, (byte[]) output) : output;
    }

    /** Writes {@code data} as a RAW object and returns its reference. */
    Map<String, Object> storeBytes(Object jobId, Object taskId, byte[] data) {
        if (root == null) {
            throw new StorageException("the result is bytes, which needs storage, but BASE_FS_ADAPTER_DIRECTORY is not set");
        }
        String key = cluster + "-hkube/" + jobId + "/" + taskId;
        Path path = Paths.get(root, key);
        Path temporary = path.resolveSibling(".hkube-tmp." + taskId + "." + ProcessHandle.current().pid());
        byte[] header = {0x01, HEADER_LEN, RAW, MSGPACK, 0, 0, 'H', 'K'};
        try {
            Files.createDirectories(path.getParent());
            // Written aside, then renamed: a reader never sees half an object.
            try (OutputStream out = Files.newOutputStream(temporary)) {
                out.write(header);
                out.write(data);
            }
            Files.move(temporary, path, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new StorageException("cannot write the result to " + key + ": " + e);
        }
        Map<String, Object> details = new LinkedHashMap<>();
        details.put("path", key);
        details.put("size", (long) data.length);
        Map<String, Object> reference = new LinkedHashMap<>();
        reference.put(REFERENCE, details);
        return reference;
    }

    /** The value a reference points at: {@code byte[]} for RAW objects, the value for JSON ones. */
    Object load(Map<?, ?> reference) {
        Object rawDetails = reference.get(REFERENCE);
        Object key = rawDetails instanceof Map ? ((Map<?, ?>) rawDetails).get("path") : null;
        if (root == null) {
            throw new StorageException("an input is in storage, but BASE_FS_ADAPTER_DIRECTORY is not set");
        }
        int dataType;
        int protocol;
        byte[] payload;
        try (FileChannel file = FileChannel.open(Paths.get(root, String.valueOf(key)), StandardOpenOption.READ)) {
            long length = file.size();
            if (length > Integer.MAX_VALUE - 16) {
                throw new StorageException("input " + key + " is " + length + " bytes, more than a Java array holds");
            }
            ByteBuffer header = ByteBuffer.allocate((int) Math.min(HEADER_LEN, length));
            readFully(file, header);
            byte[] head = header.array();
            boolean hasHeader = head.length == HEADER_LEN && head[6] == 'H' && head[7] == 'K';
            ByteBuffer rest = ByteBuffer.allocate((int) length - (hasHeader ? HEADER_LEN : 0));
            if (hasHeader) {
                dataType = head[2];
                protocol = head[3];
            } else {
                dataType = ENCODED;
                protocol = JSON;
                rest.put(head);
            }
            readFully(file, rest);
            payload = rest.array();
        } catch (IOException e) {
            throw new StorageException("cannot read input " + key + ": " + e);
        }
        if (dataType == RAW) {
            return payload;
        }
        if (protocol == JSON) {
            return Json.parse(new String(payload, StandardCharsets.UTF_8));
        }
        String encoding = protocol == BSON ? "bson" : protocol == MSGPACK ? "msgpack" : "an unknown encoding";
        throw new StorageException("input " + key + " is stored as " + encoding
                + ", which this runtime cannot decode (it reads raw and JSON objects)");
    }

    private static void readFully(FileChannel file, ByteBuffer into) throws IOException {
        while (into.hasRemaining()) {
            if (file.read(into) < 0) {
                throw new IOException("the file ended early");
            }
        }
    }

    /** Replaces every reference inside {@code value} by what it points at. */
    Object resolve(Object value) {
        if (isReference(value)) {
            return load((Map<?, ?>) value);
        }
        if (value instanceof List) {
            List<?> items = (List<?>) value;
            boolean nested = false;
            for (Object item : items) {
                if (item instanceof Map || item instanceof List) {
                    nested = true;
                    break;
                }
            }
            if (!nested) {
                return value;
            }
            List<Object> resolved = new ArrayList<>(items.size());
            for (Object item : items) {
                resolved.add(resolve(item));
            }
            return resolved;
        }
        if (value instanceof Map) {
            Map<Object, Object> resolved = new LinkedHashMap<>();
            for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
                resolved.put(entry.getKey(), resolve(entry.getValue()));
            }
            return resolved;
        }
        return value;
    }
}
