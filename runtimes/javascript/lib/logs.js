'use strict';
/**
 * Per-task logs: what user code prints while its task runs, attached to the task's reply.
 *
 * `process.stdout.write` and `process.stderr.write` are wrapped once per process (the `console`
 * methods write through them): every write still goes to the stream, and is also copied into the
 * current task's capture when one is open. Opening and closing a capture sets two fields, so a task
 * that prints nothing costs nothing measurable.
 *
 * Only what user code prints is kept: the runtime writes its own notes with `note()`, which
 * bypasses the copy, and calls a user's `stop` / `exit` through `quietly()`. This module never
 * holds more than about twice `LIMIT` bytes per task, however much a task prints.
 */

const LIMIT = 64 * 1024;
const TRUNCATED = '...(truncated)\n';

const state = { chunks: null, size: 0, cut: false, quiet: false };
const originals = new Map();

function copy(chunk, encoding) {
  const chunks = state.chunks;
  if (chunks === null || state.quiet) return;
  let bytes;
  if (typeof chunk === 'string') {
    bytes = Buffer.from(chunk, typeof encoding === 'string' && Buffer.isEncoding(encoding) ? encoding : 'utf8');
  } else if (chunk instanceof Uint8Array) {
    bytes = Buffer.from(chunk); // a copy: the caller may reuse its buffer
  } else {
    return;
  }
  if (bytes.length === 0) return;
  chunks.push(bytes);
  state.size += bytes.length;
  if (state.size > 2 * LIMIT) {
    const joined = Buffer.concat(chunks);
    chunks.length = 0;
    chunks.push(joined.subarray(joined.length - LIMIT));
    state.size = LIMIT;
    state.cut = true;
  }
}

/** Wraps the streams' `write` (once per process). */
function install() {
  for (const stream of [process.stdout, process.stderr]) {
    if (originals.has(stream)) continue;
    const write = stream.write;
    originals.set(stream, write);
    stream.write = function hkubeCapturedWrite(chunk, encoding, callback) {
      copy(chunk, encoding);
      return write.call(this, chunk, encoding, callback);
    };
  }
}

/** Writes the runtime's own text to stderr, never into a task's log. */
function note(text) {
  const write = originals.get(process.stderr) || process.stderr.write;
  write.call(process.stderr, text);
}

/** Calls `fn` with copying paused for what it prints synchronously (a user's stop or exit). */
function quietly(fn) {
  const previous = state.quiet;
  state.quiet = true;
  try {
    return fn();
  } finally {
    state.quiet = previous;
  }
}

/** Opens a capture for the task about to run. */
function begin() {
  state.chunks = [];
}

/** Closes the capture; returns its text (the last LIMIT bytes, marked when cut) or undefined when empty. */
function end() {
  const chunks = state.chunks;
  state.chunks = null;
  if (chunks === null || chunks.length === 0) return undefined;
  let cut = state.cut;
  state.size = 0;
  state.cut = false;
  let bytes = Buffer.concat(chunks);
  if (bytes.length > LIMIT) {
    bytes = bytes.subarray(bytes.length - LIMIT);
    cut = true;
  }
  if (cut) {
    // A character cut in half at the start is dropped, not mangled.
    let start = 0;
    while (start < bytes.length && start < 3 && (bytes[start] & 0xc0) === 0x80) start += 1;
    bytes = bytes.subarray(start);
  }
  const text = bytes.toString('utf8');
  return cut ? TRUNCATED + text : text;
}

module.exports = { LIMIT, TRUNCATED, install, note, quietly, begin, end };
