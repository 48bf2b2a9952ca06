'use strict';
/**
 * Large values through storage instead of the socket (the Python runtime's `storage.py`, ported).
 *
 * A task that returns a Buffer (or any Uint8Array) writes it to the shared filesystem storage
 * (HKube's layout: `<root>/<cluster>-hkube/<jobId>/<taskId>`, the 8-byte header, then the payload)
 * and answers with a small reference `{"$$hkubeRef": {path, size}}`. A task whose input holds such a
 * reference reads the file. So a large result crosses no socket: it is written once and read once.
 *
 * The storage root comes from `BASE_FS_ADAPTER_DIRECTORY` and the prefix from `CLUSTER_NAME`, set by
 * the sidecar's side. Everything here is synchronous: a task runs alone, so there is nothing to
 * overlap with, and a reader never sees half an object (written aside, then renamed).
 */

const fs = require('node:fs');
const path = require('node:path');

const REFERENCE = '$$hkubeRef';
const HEADER_LEN = 8;
const RAW = 0x01;
const ENCODED = 0x02;
const BSON = 0x01;
const JSON_PROTOCOL = 0x02;
const MSGPACK = 0x03;
const ENCODING_NAMES = { [BSON]: 'bson', [MSGPACK]: 'msgpack' };

class StorageError extends Error {
  constructor(message) {
    super(message);
    this.name = 'StorageError';
  }
}

function root() {
  return process.env.BASE_FS_ADAPTER_DIRECTORY;
}

function cluster() {
  return process.env.CLUSTER_NAME ?? 'local';
}

function isPlainObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Uint8Array);
}

function isReference(value) {
  return isPlainObject(value) && Object.prototype.hasOwnProperty.call(value, REFERENCE) && Object.keys(value).length === 1;
}

/** Writes `data` (a Uint8Array) as a RAW object and returns its reference. */
function storeBytes(jobId, taskId, data) {
  const base = root();
  if (!base) {
    throw new StorageError('the result is bytes, which needs storage, but BASE_FS_ADAPTER_DIRECTORY is not set');
  }
  const key = `${cluster()}-hkube/${jobId}/${taskId}`;
  const target = path.join(base, key);
  const folder = path.dirname(target);
  fs.mkdirSync(folder, { recursive: true });
  const temporary = path.join(folder, `.hkube-tmp.${taskId}.${process.pid}`);
  const header = Buffer.from([0x01, HEADER_LEN, RAW, MSGPACK, 0, 0, 0x48 /* H */, 0x4b /* K */]);
  const fd = fs.openSync(temporary, 'w');
  try {
    fs.writeSync(fd, header);
    for (let offset = 0; offset < data.byteLength; ) offset += fs.writeSync(fd, data, offset);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(temporary, target);
  return { [REFERENCE]: { path: key, size: data.byteLength } };
}

/** The value a reference points at: a Buffer for RAW objects, the value for JSON ones. */
function load(reference) {
  const details = reference[REFERENCE] || {};
  const base = root();
  if (!base) throw new StorageError('an input is in storage, but BASE_FS_ADAPTER_DIRECTORY is not set');
  let contents;
  try {
    contents = fs.readFileSync(path.join(base, String(details.path)));
  } catch (err) {
    throw new StorageError(`cannot read input ${details.path}: ${err.message}`);
  }
  let dataType = ENCODED;
  let protocol = JSON_PROTOCOL;
  let payload = contents;
  if (contents.length >= HEADER_LEN && contents[6] === 0x48 && contents[7] === 0x4b) {
    dataType = contents[2];
    protocol = contents[3];
    payload = contents.subarray(HEADER_LEN);
  }
  if (dataType === RAW) return payload;
  if (protocol === JSON_PROTOCOL) return JSON.parse(payload.toString('utf8'));
  const encoding = ENCODING_NAMES[protocol] || 'an unknown encoding';
  throw new StorageError(
    `input ${details.path} is stored as ${encoding}, which this runtime cannot decode (it reads raw and JSON objects)`,
  );
}

/** Replaces every reference inside `value` by what it points at. */
function resolve(value) {
  if (isReference(value)) return load(value);
  if (Array.isArray(value)) {
    if (value.some((item) => item !== null && typeof item === 'object')) return value.map(resolve);
    return value;
  }
  if (isPlainObject(value)) {
    const resolved = {};
    for (const [key, item] of Object.entries(value)) resolved[key] = resolve(item);
    return resolved;
  }
  return value;
}

/** Bytes go to storage; everything else travels in the message. */
function prepareOutput(output, jobId, taskId) {
  if (output instanceof Uint8Array) return storeBytes(jobId, taskId, output);
  return output;
}

module.exports = { REFERENCE, StorageError, isReference, storeBytes, load, resolve, prepareOutput };
