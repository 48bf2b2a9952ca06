'use strict';
/**
 * The JavaScript runtime against a scripted sidecar on a real localhost socket.
 *
 * The test plays the sidecar with the runtime's own websocket code (server side) and checks the
 * messages the runtime sends back, for HKube's exchange and for hkube's fast path.
 */

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { once } = require('node:events');
const { spawn } = require('node:child_process');

const ws = require('../lib/ws');
const { Runner, loadAlgorithm } = require('../lib/runner');

const BIN = path.join(__dirname, '..', 'bin', 'hkube-runtime-node.js');

/** The next message on a raw websocket connection, or a failure after 5 s. */
const next = (conn) => withTimeout(conn.recv(), 5000, 'a websocket message');

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// What a test opened, torn down after it even when it fails, so a failure cannot hang the run.
const opened = { sidecars: new Set(), children: new Set() };
test.afterEach(() => {
  for (const sidecar of opened.sidecars) {
    if (sidecar.conn) sidecar.conn.socket.destroy();
    sidecar.server.close();
  }
  for (const child of opened.children) child.kill('SIGKILL');
  opened.sidecars.clear();
  opened.children.clear();
});

/** Accepts one runtime connection; send() and recv() speak JSON envelopes. */
class Sidecar {
  /** On a free loopback port, or on the Unix socket `unixPath`. */
  static async listen(unixPath = null) {
    const sidecar = new Sidecar();
    opened.sidecars.add(sidecar);
    sidecar.server = net.createServer();
    if (unixPath) sidecar.server.listen(unixPath);
    else sidecar.server.listen(0, '127.0.0.1');
    await once(sidecar.server, 'listening');
    sidecar.port = unixPath ? null : sidecar.server.address().port;
    return sidecar;
  }

  async accept() {
    const [socket] = await once(this.server, 'connection');
    ({ conn: this.conn, path: this.path } = await ws.accept(socket));
  }

  send(command, data) {
    const message = { command };
    if (data !== undefined) message.data = data;
    this.conn.sendText(JSON.stringify(message));
  }

  async recv() {
    return JSON.parse(await next(this.conn));
  }

  close() {
    if (this.conn) this.conn.close();
    this.server.close();
  }
}

/** Runs the runtime's loop against a fresh scripted sidecar. */
async function serve(runner) {
  const sidecar = await Sidecar.listen();
  const accepted = sidecar.accept();
  const conn = await ws.connect('127.0.0.1', sidecar.port, '/?storage=v1&encoding=json&fast=1');
  const served = runner.serve(conn);
  await accepted;
  return { sidecar, served };
}

/** Sends `exit`, checks the loop ends with `code`, closes the sidecar. */
async function finish(sidecar, served, code = 0) {
  sidecar.send('exit', { exitCode: code });
  assert.strictEqual(await withTimeout(served, 5000, 'the runtime to exit'), code);
  sidecar.close();
}

function tempFolder(files) {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'hkube-js-'));
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(folder, name)), { recursive: true });
    fs.writeFileSync(path.join(folder, name), text);
  }
  return folder;
}

/** Loads in `folder` and restores the working directory (loading chdirs, as HKube's does). */
function loadIn(entryPoint, folder) {
  const cwd = process.cwd();
  try {
    return loadAlgorithm(entryPoint, folder);
  } finally {
    process.chdir(cwd);
  }
}

// -- hkube's fast path ------------------------------------------------------------------------

test('fast path: one message in, one message out', async () => {
  const { sidecar, served } = await serve(new Runner({ start: (args, api) => args.input[0] + args.input[1] }));
  assert.strictEqual(sidecar.path, '/?storage=v1&encoding=json&fast=1');
  for (let i = 0; i < 3; i++) {
    sidecar.send('run', { taskId: `t${i}`, input: [i, 10] });
    assert.deepStrictEqual(await sidecar.recv(), { command: 'result', data: { taskId: `t${i}`, output: i + 10 } });
  }
  await finish(sidecar, served);
});

test('fast path: start with one parameter, and start returning a Promise', async () => {
  const oneParameter = await serve(new Runner({ start: (args) => args.input[0] * 3 }));
  oneParameter.sidecar.send('run', { taskId: 't', input: [5] });
  assert.strictEqual((await oneParameter.sidecar.recv()).data.output, 15);
  await finish(oneParameter.sidecar, oneParameter.served);

  const start = async (args) => {
    await new Promise((resolve) => setTimeout(resolve, 10));
    return { doubled: args.input[0] * 2 };
  };
  const promised = await serve(new Runner({ start }));
  promised.sidecar.send('run', { taskId: 't', input: [21] });
  assert.deepStrictEqual(await promised.sidecar.recv(), { command: 'result', data: { taskId: 't', output: { doubled: 42 } } });
  await finish(promised.sidecar, promised.served);
});

test('fast path: a start returning nothing sends a null output', async () => {
  const { sidecar, served } = await serve(new Runner({ start: () => {} }));
  sidecar.send('run', { taskId: 't', input: [] });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'result', data: { taskId: 't', output: null } });
  await finish(sidecar, served);
});

test('fast path: tasks run one at a time, replies in order', async () => {
  const start = async (args) => {
    await new Promise((resolve) => setTimeout(resolve, args.input[0]));
    return args.input[0];
  };
  const { sidecar, served } = await serve(new Runner({ start }));
  sidecar.send('run', { taskId: 'slow', input: [40] });
  sidecar.send('run', { taskId: 'fast', input: [1] });
  assert.strictEqual((await sidecar.recv()).data.taskId, 'slow');
  assert.strictEqual((await sidecar.recv()).data.taskId, 'fast');
  await finish(sidecar, served);
});

test('fast path: an exception becomes an error with its stack', async () => {
  const runner = new Runner({
    start: function start() {
      throw new RangeError('bad value');
    },
  });
  const { sidecar, served } = await serve(runner);
  sidecar.send('run', { taskId: 't1', input: [] });
  const reply = await sidecar.recv();
  assert.strictEqual(reply.command, 'errorMessage');
  assert.deepStrictEqual(reply.data, { taskId: 't1' });
  assert.strictEqual(reply.error.code, 'Failed');
  assert.strictEqual(reply.error.message, 'bad value');
  assert.match(reply.error.details, /RangeError: bad value/);
  assert.match(reply.error.details, /at .*start/);
  await finish(sidecar, served);
});

test('fast path: a rejected Promise and a thrown string are errors too', async () => {
  const start = (args) => (args.input[0] ? Promise.reject(new Error('async failure')) : Promise.reject('just text'));
  const { sidecar, served } = await serve(new Runner({ start }));
  sidecar.send('run', { taskId: 'a', input: [true] });
  assert.strictEqual((await sidecar.recv()).error.message, 'async failure');
  sidecar.send('run', { taskId: 'b', input: [false] });
  assert.deepStrictEqual(await sidecar.recv(), {
    command: 'errorMessage',
    error: { code: 'Failed', message: 'just text' },
    data: { taskId: 'b' },
  });
  await finish(sidecar, served);
});

test('fast path: a batch of tasks in one message', async () => {
  const start = (args) => {
    if (args.input[0] < 0) throw new Error('negative');
    return args.input[0] * 2;
  };
  const { sidecar, served } = await serve(new Runner({ start }));
  sidecar.send('runBatch', {
    tasks: [
      { taskId: 'a', input: [1] },
      { taskId: 'b', input: [-1] },
      { taskId: 'c', input: [3] },
    ],
  });
  const reply = await sidecar.recv();
  assert.strictEqual(reply.command, 'results');
  const results = reply.data.results;
  assert.deepStrictEqual(results[0], { taskId: 'a', output: 2 });
  assert.strictEqual(results[1].taskId, 'b');
  assert.strictEqual(results[1].error.message, 'negative');
  assert.deepStrictEqual(results[2], { taskId: 'c', output: 6 });
  await finish(sidecar, served);
});

test('fast path: a code-API call inside a fast task', async () => {
  const start = async (args, api) => (await api.startAlgorithm('double', [args.input[0]])) + 1;
  const { sidecar, served } = await serve(new Runner({ start }));
  sidecar.send('run', { taskId: 't', input: [20] });
  const request = await sidecar.recv();
  assert.strictEqual(request.command, 'startAlgorithmExecution');
  assert.deepStrictEqual(request.data, { algorithmName: 'double', input: [20], includeResult: true, execId: '1' });
  sidecar.send('algorithmExecutionDone', { execId: request.data.execId, response: 40 });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'result', data: { taskId: 't', output: 41 } });
  await finish(sidecar, served);
});

test('code API: sub-pipelines, errors, stopped, progress', async () => {
  const start = async (args, api) => {
    api.progress(50);
    const stored = await api.startStoredSubpipeline('simple', { x: 1 });
    const stopped = await api.startRawSubpipeline('raw', [{ nodeName: 'a', algorithmName: 'alg' }], { y: 2 });
    const failure = await api.startAlgorithm('broken').catch((error) => ({ rejected: error }));
    return { stored, stopped, failure };
  };
  const { sidecar, served } = await serve(new Runner({ start }));
  sidecar.send('run', { taskId: 't', input: [] });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'progress', data: { progress: 50 } });
  const stored = await sidecar.recv();
  assert.deepStrictEqual(stored, {
    command: 'startStoredSubPipeline',
    data: { includeResult: true, subPipeline: { name: 'simple', flowInput: { x: 1 } }, subPipelineId: '1' },
  });
  sidecar.send('subPipelineStarted', { subPipelineId: '1' });
  sidecar.send('subPipelineDone', { subPipelineId: '1', response: [{ nodeName: 'n', result: 7 }] });
  const raw = await sidecar.recv();
  assert.deepStrictEqual(raw, {
    command: 'startRawSubPipeline',
    data: {
      includeResult: true,
      subPipeline: { name: 'raw', nodes: [{ nodeName: 'a', algorithmName: 'alg' }], flowInput: { y: 2 }, options: {}, webhooks: {} },
      subPipelineId: '2',
    },
  });
  sidecar.send('subPipelineStopped', { subPipelineId: '2', reason: 'user' });
  const algorithm = await sidecar.recv();
  assert.strictEqual(algorithm.data.execId, '3');
  assert.deepStrictEqual(algorithm.data.input, []);
  sidecar.send('algorithmExecutionError', { execId: '3', error: 'algorithm broken not found' });
  assert.deepStrictEqual((await sidecar.recv()).data.output, {
    stored: [{ nodeName: 'n', result: 7 }],
    stopped: null,
    failure: { rejected: 'algorithm broken not found' },
  });
  await finish(sidecar, served);
});

test('fast path: a result that is not JSON is an error saying so', async () => {
  const circular = {};
  circular.self = circular;
  const start = (args) => (args.input[0] === 'big' ? 10n : circular);
  const { sidecar, served } = await serve(new Runner({ start }));
  for (const kind of ['big', 'circular']) {
    sidecar.send('run', { taskId: kind, input: [kind] });
    const reply = await sidecar.recv();
    assert.strictEqual(reply.command, 'errorMessage');
    assert.deepStrictEqual(reply.data, { taskId: kind });
    assert.match(reply.error.message, /cannot be sent as JSON/);
  }
  sidecar.send('runBatch', { tasks: [{ taskId: 'b', input: ['big'] }] });
  const batch = await sidecar.recv();
  assert.strictEqual(batch.data.results[0].taskId, 'b');
  assert.match(batch.data.results[0].error.message, /cannot be sent as JSON/);
  await finish(sidecar, served);
});

// -- HKube's exchange -------------------------------------------------------------------------

test('HKube exchange: initialize, start, done', async () => {
  const calls = [];
  const runner = new Runner({
    init: async (args) => calls.push(['init', args.taskId]),
    start: async (args, api) => ({ got: args.input }),
  });
  const { sidecar, served } = await serve(runner);
  sidecar.send('initialize', { jobId: 'j', taskId: 't', input: [1, 2] });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'initialized' });
  sidecar.send('start', { spanId: {} });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'started' });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'done', data: { got: [1, 2] } });
  assert.deepStrictEqual(calls, [['init', 't']]);
  await finish(sidecar, served);
});

test('HKube exchange: an error in start is an errorMessage with the stack', async () => {
  const runner = new Runner({
    start: async function start() {
      throw new TypeError('division by zero');
    },
  });
  const { sidecar, served } = await serve(runner);
  sidecar.send('initialize', { taskId: 't', input: [] });
  await sidecar.recv();
  sidecar.send('start', {});
  assert.deepStrictEqual(await sidecar.recv(), { command: 'started' });
  const reply = await sidecar.recv();
  assert.strictEqual(reply.command, 'errorMessage');
  assert.strictEqual(reply.error.code, 'Failed');
  assert.strictEqual(reply.error.message, 'division by zero');
  assert.match(reply.error.details, /TypeError: division by zero/);
  await finish(sidecar, served);
});

test('HKube exchange: stop while running calls the user stop, then stopped', async () => {
  const calls = [];
  let release;
  const released = new Promise((resolve) => (release = resolve));
  const runner = new Runner({
    start: async () => {
      await released;
      calls.push('start settled');
      return 'late';
    },
    stop: () => {
      calls.push('stop');
      release();
    },
  });
  const { sidecar, served } = await serve(runner);
  sidecar.send('initialize', { taskId: 't', input: [] });
  await sidecar.recv();
  sidecar.send('start', {});
  assert.deepStrictEqual(await sidecar.recv(), { command: 'started' });
  sidecar.send('stop', { forceStop: true });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'stopped' });
  assert.deepStrictEqual(calls, ['stop', 'start settled']);
  // The late result is discarded: the next message is the reply to the next exchange.
  sidecar.send('initialize', { taskId: 't2', input: [] });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'initialized' });
  await finish(sidecar, served);
});

test('HKube exchange: stop with no task running replies at once', async () => {
  let stopped = 0;
  const { sidecar, served } = await serve(new Runner({ start: () => 1, stop: () => (stopped += 1) }));
  sidecar.send('stop', { forceStop: true });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'stopped' });
  assert.strictEqual(stopped, 1);
  await finish(sidecar, served);
});

test('HKube exchange: init failure is reported and not initialized', async () => {
  const runner = new Runner({
    start: () => 1,
    init: () => {
      throw new Error("missing 'config'");
    },
  });
  const { sidecar, served } = await serve(runner);
  sidecar.send('initialize', { taskId: 't', input: [] });
  const reply = await sidecar.recv();
  assert.strictEqual(reply.command, 'errorMessage');
  assert.match(reply.error.message, /config/);
  await finish(sidecar, served, 3);
});

test('HKube exchange: exit calls the user exit with its data', async () => {
  const seen = [];
  const { sidecar, served } = await serve(new Runner({ start: () => 1, exit: (data) => seen.push(data) }));
  await finish(sidecar, served, 2);
  assert.deepStrictEqual(seen, [{ exitCode: 2 }]);
});

// -- large values through storage ------------------------------------------------------------

/** Points the runtime's storage at a fresh folder for `body`, as the sidecar's side does. */
async function withStorage(body) {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'hkube-js-storage-'));
  process.env.BASE_FS_ADAPTER_DIRECTORY = folder;
  process.env.CLUSTER_NAME = 'test';
  try {
    await body(folder);
  } finally {
    delete process.env.BASE_FS_ADAPTER_DIRECTORY;
    delete process.env.CLUSTER_NAME;
    fs.rmSync(folder, { recursive: true, force: true });
  }
}

test('large values: bytes go through storage both ways', () =>
  withStorage(async (folder) => {
    const start = (args) => {
      const data = args.input[0];
      if (Buffer.isBuffer(data)) return data.length;
      return Buffer.from(new Uint8Array(data * 2).map((_, i) => i % 2));
    };
    const { sidecar, served } = await serve(new Runner({ start }));
    sidecar.send('run', { jobId: 'j1', taskId: 't1', input: [3] });
    const reference = { $$hkubeRef: { path: 'test-hkube/j1/t1', size: 6 } };
    assert.deepStrictEqual(await sidecar.recv(), { command: 'result', data: { taskId: 't1', output: reference } });
    assert.deepStrictEqual(
      fs.readFileSync(path.join(folder, 'test-hkube/j1/t1')),
      Buffer.from([1, 8, 1, 3, 0, 0, 72, 75, 0, 1, 0, 1, 0, 1]),
    );
    assert.deepStrictEqual(fs.readdirSync(path.join(folder, 'test-hkube/j1')), ['t1']);
    sidecar.send('run', { jobId: 'j1', taskId: 't2', input: [reference] });
    assert.strictEqual((await sidecar.recv()).data.output, 6);
    await finish(sidecar, served);
  }));

test('large values: JSON objects with and without a header are parsed; other encodings are named', () =>
  withStorage(async (folder) => {
    fs.mkdirSync(path.join(folder, 'test-hkube/j'), { recursive: true });
    const header = (type, protocol) => Buffer.from([1, 8, type, protocol, 0, 0, 72, 75]);
    fs.writeFileSync(path.join(folder, 'test-hkube/j/json'), Buffer.concat([header(2, 2), Buffer.from('{"a":[1,2]}')]));
    fs.writeFileSync(path.join(folder, 'test-hkube/j/bare'), '"plain"');
    fs.writeFileSync(path.join(folder, 'test-hkube/j/packed'), Buffer.concat([header(2, 3), Buffer.from([0x81])]));
    const ref = (name) => ({ $$hkubeRef: { path: `test-hkube/j/${name}`, size: 1 } });
    const { sidecar, served } = await serve(new Runner({ start: (args) => args.input }));
    sidecar.send('run', { jobId: 'j', taskId: 't', input: [{ x: ref('json') }, [ref('bare')], 7] });
    assert.deepStrictEqual((await sidecar.recv()).data.output, [{ x: { a: [1, 2] } }, ['plain'], 7]);
    sidecar.send('run', { jobId: 'j', taskId: 'u', input: [ref('packed')] });
    const reply = await sidecar.recv();
    assert.strictEqual(reply.command, 'errorMessage');
    assert.match(reply.error.message, /input test-hkube\/j\/packed is stored as msgpack, which this runtime cannot decode/);
    await finish(sidecar, served);
  }));

test('large values: a missing stored input is named', () =>
  withStorage(async () => {
    const { sidecar, served } = await serve(new Runner({ start: () => 1 }));
    const missing = { $$hkubeRef: { path: 'test-hkube/j/none', size: 1 } };
    sidecar.send('run', { jobId: 'j', taskId: 't', input: [[missing]] });
    const reply = await sidecar.recv();
    assert.strictEqual(reply.command, 'errorMessage');
    assert.deepStrictEqual(reply.data, { taskId: 't' });
    assert.match(reply.error.message, /cannot read input test-hkube\/j\/none/);
    await finish(sidecar, served);
  }));

test('large values: bytes without BASE_FS_ADAPTER_DIRECTORY fail the task, saying so', async () => {
  const { sidecar, served } = await serve(new Runner({ start: () => new Uint8Array([1]) }));
  sidecar.send('run', { jobId: 'j', taskId: 't', input: [] });
  const reply = await sidecar.recv();
  assert.strictEqual(reply.command, 'errorMessage');
  assert.match(reply.error.message, /the result is bytes, which needs storage, but BASE_FS_ADAPTER_DIRECTORY is not set/);
  await finish(sidecar, served);
});

// -- per-task logs ----------------------------------------------------------------------------

test('logs: what a task prints to stdout and stderr is its log, in order', async () => {
  const start = (args) => {
    console.log('out', args.input[0]);
    process.stderr.write('err 2\n');
    process.stdout.write(Buffer.from('out 3\n'));
    console.error('err 4');
    return 1;
  };
  const { sidecar, served } = await serve(new Runner({ start }));
  sidecar.send('run', { taskId: 't', input: [1] });
  assert.deepStrictEqual(await sidecar.recv(), {
    command: 'result',
    data: { taskId: 't', output: 1, log: 'out 1\nerr 2\nout 3\nerr 4\n' },
  });
  await finish(sidecar, served);
});

test('logs: a silent task has no log; an error carries its log', async () => {
  const start = (args) => {
    if (args.input[0]) {
      console.log('about to fail');
      throw new Error('bad');
    }
    return 2;
  };
  const { sidecar, served } = await serve(new Runner({ start }));
  sidecar.send('run', { taskId: 't', input: [0] });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'result', data: { taskId: 't', output: 2 } });
  sidecar.send('run', { taskId: 'u', input: [1] });
  const reply = await sidecar.recv();
  assert.strictEqual(reply.command, 'errorMessage');
  assert.deepStrictEqual(reply.data, { taskId: 'u', log: 'about to fail\n' });
  await finish(sidecar, served);
});

test('logs: a batch where only the second task prints', async () => {
  const start = (args) => {
    if (args.input[0] === 2) console.log('second');
    return args.input[0];
  };
  const { sidecar, served } = await serve(new Runner({ start }));
  sidecar.send('runBatch', { tasks: [1, 2, 3].map((i) => ({ taskId: `t${i}`, input: [i] })) });
  assert.deepStrictEqual((await sidecar.recv()).data.results, [
    { taskId: 't1', output: 1 },
    { taskId: 't2', output: 2, log: 'second\n' },
    { taskId: 't3', output: 3 },
  ]);
  await finish(sidecar, served);
});

test('logs: truncation keeps the last 64 KiB', async () => {
  const { LIMIT, TRUNCATED } = require('../lib/logs');
  const start = () => {
    for (let i = 0; i < 140; i++) process.stderr.write(`line ${String(i).padStart(5, '0')} ${'x'.repeat(1000)}\n`);
    console.error('the end');
  };
  const { sidecar, served } = await serve(new Runner({ start }));
  sidecar.send('run', { taskId: 't', input: [] });
  const { log } = (await sidecar.recv()).data;
  assert.ok(log.startsWith(TRUNCATED), log.slice(0, 40));
  assert.strictEqual(Buffer.byteLength(log), TRUNCATED.length + LIMIT);
  assert.ok(log.endsWith('x\nthe end\n'));
  assert.ok(log.includes('line 00139 '));
  assert.ok(!log.includes('line 00070 '));
  await finish(sidecar, served);
});

test('logs: output while a task waits for the code API is not the task\'s', async () => {
  const start = async (args, api) => {
    console.log('before');
    const value = await api.startAlgorithm('double', [1]);
    console.log('after', value);
    return value;
  };
  const { sidecar, served } = await serve(new Runner({ start }));
  sidecar.send('run', { taskId: 't', input: [] });
  const request = await sidecar.recv();
  sidecar.send('this is not json');
  sidecar.conn.sendText('{not json');
  sidecar.send('algorithmExecutionDone', { execId: request.data.execId, response: 2 });
  assert.strictEqual((await sidecar.recv()).data.log, 'before\nafter 2\n');
  await finish(sidecar, served);
});

test('fast path: a stopped batch runs no further and sends nothing after stopped', async () => {
  const ran = [];
  const calls = [];
  const start = async (args) => {
    ran.push(args.taskId);
    await new Promise((resolve) => setTimeout(resolve, 200));
    return args.taskId;
  };
  const { sidecar, served } = await serve(new Runner({ start, stop: () => calls.push('stop') }));
  const tasks = [0, 1, 2, 3, 4, 5].map((i) => ({ taskId: `t${i}`, input: [] }));
  sidecar.send('runBatch', { tasks });
  await new Promise((resolve) => setTimeout(resolve, 300));
  sidecar.send('stop', { forceStop: true });
  // t1 was in hand: it settles, its result is dropped; t2.. never run.
  assert.deepStrictEqual(await sidecar.recv(), { command: 'stopped' });
  assert.deepStrictEqual(ran, ['t0', 't1']);
  assert.deepStrictEqual(calls, ['stop']);
  // The runtime is clean: the next task's answer is the next message.
  sidecar.send('run', { taskId: 'next', input: [] });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'result', data: { taskId: 'next', output: 'next' } });
  await finish(sidecar, served);
});

test('fast path: a stop while a task waits for the code API ends with stopped only', async () => {
  const start = async (args, api) => api.startAlgorithm('double', [1]);
  const { sidecar, served } = await serve(new Runner({ start }));
  sidecar.send('run', { taskId: 't', input: [] });
  const request = await sidecar.recv();
  sidecar.send('stop', { forceStop: true });
  sidecar.send('algorithmExecutionDone', { execId: request.data.execId, response: 2 });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'stopped' });
  sidecar.send('run', { taskId: 'next', input: [] });
  assert.strictEqual((await sidecar.recv()).command, 'startAlgorithmExecution');
  await finish(sidecar, served);
});

test('logs: HKube exchange sends taskLog just before done and before an init error', async () => {
  const init = (args) => {
    console.log('init', args.taskId);
    if (args.input[0] === 'fail') throw new Error('config');
  };
  const start = () => {
    console.error('start');
    return 5;
  };
  const { sidecar, served } = await serve(new Runner({ start, init }));
  sidecar.send('initialize', { jobId: 'j', taskId: 't', input: [] });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'initialized' });
  sidecar.send('start', {});
  assert.deepStrictEqual(await sidecar.recv(), { command: 'started' });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'taskLog', data: { taskId: 't', log: 'init t\nstart\n' } });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'done', data: 5 });
  sidecar.send('initialize', { jobId: 'j', taskId: 'u', input: ['fail'] });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'taskLog', data: { taskId: 'u', log: 'init u\n' } });
  assert.strictEqual((await sidecar.recv()).command, 'errorMessage');
  await finish(sidecar, served);
});

// -- loading the user's code ------------------------------------------------------------------

test('loading: the entry point by HKube convention, relative to ALGORITHM_PATH', () => {
  const folder = tempFolder({
    'lib/algo.js': "exports.start = (args, api) => 'ok';\nexports.init = (args) => {};\n",
  });
  const { functions, error } = loadIn('lib/algo.js', folder);
  assert.strictEqual(error, null);
  assert.strictEqual(functions.start({}, null), 'ok');
  assert.strictEqual(typeof functions.init, 'function');
  assert.strictEqual(functions.stop, undefined);

  const defaults = tempFolder({ 'index.js': 'module.exports = { start: () => "index" };\n' });
  assert.strictEqual(loadIn(undefined, defaults).functions.start(), 'index');
  assert.strictEqual(loadIn('index', defaults).functions.start(), 'index');
});

test('loading: a missing file, a syntax error and a missing start are named', () => {
  const folder = tempFolder({
    'broken.js': 'exports.start = (args => {\n',
    'nostart.js': 'exports.init = () => {};\n',
  });
  const missing = loadIn('nowhere_to_be_found.js', folder).error;
  assert.match(missing.message, /cannot load the algorithm's entry point 'nowhere_to_be_found.js'/);
  assert.match(missing.message, /Cannot find module/);

  const broken = loadIn('broken.js', folder).error;
  assert.match(broken.message, /cannot load the algorithm's entry point 'broken.js'/);
  assert.match(broken.message, /SyntaxError|Unexpected|missing/);
  assert.match(broken.details, /broken\.js/);

  const nostart = loadIn('nostart.js', folder).error;
  assert.strictEqual(nostart.message, "the algorithm's entry point 'nostart.js' has no start(args, api) function");
});

test('loading: a load error is sent on the first task, fast or HKube', async () => {
  const error = { code: 'Failed', message: 'cannot load' };
  const { sidecar, served } = await serve(new Runner({ loadError: error }));
  sidecar.send('run', { taskId: 't', input: [] });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'errorMessage', error, data: { taskId: 't' } });
  sidecar.send('initialize', { taskId: 't2', input: [] });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'errorMessage', error });
  await finish(sidecar, served);
});

// -- the process, as a built image runs it ----------------------------------------------------

test("custom image: run({start, exit}) as HKube's nodejs-wrapper offers it", async () => {
  const { run } = require('..');
  const sidecar = await Sidecar.listen();
  const accepted = sidecar.accept();
  const exitCodes = [];
  const exitData = [];
  const running = run(
    { start: (args) => args.input.length, exit: (data) => exitData.push(data) },
    { env: { WORKER_SOCKET_PORT: String(sidecar.port) }, exitProcess: (code) => exitCodes.push(code) },
  );
  await withTimeout(accepted, 5000, 'the runtime to connect');
  sidecar.send('run', { taskId: 't', input: [1, 2, 3] });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'result', data: { taskId: 't', output: 3 } });
  sidecar.send('exit', { exitCode: 4 });
  assert.strictEqual(await withTimeout(running, 5000, 'run() to return'), 4);
  assert.deepStrictEqual(exitCodes, [4]);
  assert.deepStrictEqual(exitData, [{ exitCode: 4 }]);
  sidecar.close();
});

function spawnRuntime(env) {
  const child = spawn(process.execPath, [BIN], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  opened.children.add(child);
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = once(child, 'exit').then(([code]) => ({ code, stderr }));
  return { child, exited };
}

test('process: loads ALGORITHM_PATH/ALGORITHM_ENTRY_POINT, speaks HKube, exits with the exit code', async () => {
  const folder = tempFolder({
    'src/main.js': 'exports.start = async (args) => ({ cwd: process.cwd(), input: args.input });\n',
  });
  const sidecar = await Sidecar.listen();
  const accepted = sidecar.accept();
  const { exited } = spawnRuntime({
    WORKER_SOCKET_PORT: String(sidecar.port),
    ALGORITHM_PATH: folder,
    ALGORITHM_ENTRY_POINT: 'src/main.js',
    HKUBE_FAST_PATH: '0',
  });
  await withTimeout(accepted, 5000, 'the runtime to connect');
  assert.strictEqual(sidecar.path, '/?storage=v1&encoding=json');
  sidecar.send('initialize', { taskId: 't', input: ['x'] });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'initialized' });
  sidecar.send('start', {});
  assert.deepStrictEqual(await sidecar.recv(), { command: 'started' });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'done', data: { cwd: fs.realpathSync(folder), input: ['x'] } });
  sidecar.send('exit', { exitCode: 3 });
  assert.strictEqual((await withTimeout(exited, 5000, 'the runtime process to exit')).code, 3);
  sidecar.close();
});

test('process: a load error does not crash, and reaches the first task', async () => {
  const sidecar = await Sidecar.listen();
  const accepted = sidecar.accept();
  const { exited } = spawnRuntime({ WORKER_SOCKET_PORT: String(sidecar.port), ALGORITHM_PATH: tempFolder({}) });
  await withTimeout(accepted, 5000, 'the runtime to connect');
  assert.strictEqual(sidecar.path, '/?storage=v1&encoding=json&fast=1');
  sidecar.send('run', { taskId: 't', input: [] });
  const reply = await sidecar.recv();
  assert.strictEqual(reply.command, 'errorMessage');
  assert.match(reply.error.message, /cannot load the algorithm's entry point 'index.js'/);
  sidecar.send('exit', { exitCode: 0 });
  assert.strictEqual((await withTimeout(exited, 5000, 'the runtime process to exit')).code, 0);
  sidecar.close();
});

test('process: with HKUBE_WORKER_SOCKET_PATH it connects over that Unix socket, not the port', async () => {
  const socketPath = path.join(tempFolder({}), 's');
  const sidecar = await Sidecar.listen(socketPath);
  const accepted = sidecar.accept();
  const closed = net.createServer().listen(0, '127.0.0.1');
  await once(closed, 'listening');
  const port = closed.address().port;
  closed.close(); // a port nobody listens on: the task can only come over the socket
  const { exited } = spawnRuntime({
    WORKER_SOCKET_PORT: String(port),
    HKUBE_WORKER_SOCKET_PATH: socketPath,
    HKUBE_CONNECT_TIMEOUT: '5',
    ALGORITHM_PATH: tempFolder({ 'index.js': 'exports.start = (args) => args.input[0] * 2;\n' }),
  });
  await withTimeout(accepted, 5000, 'the runtime to connect over the socket');
  sidecar.send('run', { taskId: 't', input: [21] });
  assert.deepStrictEqual(await sidecar.recv(), { command: 'result', data: { taskId: 't', output: 42 } });
  sidecar.send('exit', { exitCode: 0 });
  assert.strictEqual((await withTimeout(exited, 5000, 'the runtime process to exit')).code, 0);
  sidecar.close();
});

test('process: no sidecar within HKUBE_CONNECT_TIMEOUT exits 1 with a clear message', async () => {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = server.address().port;
  server.close(); // a port nobody listens on
  const started = Date.now();
  const { exited } = spawnRuntime({ WORKER_SOCKET_PORT: String(port), HKUBE_CONNECT_TIMEOUT: '0.3', ALGORITHM_PATH: tempFolder({}) });
  const { code, stderr } = await withTimeout(exited, 5000, 'the runtime process to give up');
  assert.strictEqual(code, 1);
  assert.match(stderr, new RegExp(`cannot reach the sidecar at 127\\.0\\.0\\.1:${port}`));
  assert.ok(Date.now() - started >= 300, 'it retried until the timeout');
});

// -- websocket frames -------------------------------------------------------------------------

test('frames: payloads over 64 KiB and over 16 MiB (64-bit length) in both directions', async () => {
  const sidecar = await Sidecar.listen();
  const accepted = sidecar.accept();
  const client = await ws.connect('127.0.0.1', sidecar.port, '/');
  await accepted;
  for (const size of [125, 126, 65535, 65536 + 7, 16 * 1024 * 1024 + 3]) {
    const text = 'x'.repeat(size - 1) + 'é'.slice(0, 1); // non-ASCII last char: byte length differs
    client.sendText(text);
    assert.strictEqual(await next(sidecar.conn), text);
    const bytes = Buffer.alloc(size, 0xa5);
    bytes[size - 1] = 7;
    sidecar.conn.sendBinary(bytes);
    assert.ok(bytes.equals(await next(client)), `binary of ${size} bytes`);
  }
  client.close();
  await assert.rejects(next(sidecar.conn), ws.ConnectionClosed);
  sidecar.close();

  // And through the runtime: a 17 MiB input echoed back as a result.
  const { sidecar: echo, served } = await serve(new Runner({ start: (args) => args.input[0] }));
  const big = 'y'.repeat(17 * 1024 * 1024);
  echo.send('run', { taskId: 't', input: [big] });
  const reply = await echo.recv();
  assert.strictEqual(reply.data.output.length, big.length);
  await finish(echo, served);
});

test('frames: fragmented messages with a ping in between, and close', async () => {
  const sidecar = await Sidecar.listen();
  const accepted = sidecar.accept();
  const client = await ws.connect('127.0.0.1', sidecar.port, '/');
  await accepted;
  const server = sidecar.conn;
  const controlFrames = [];
  const onFrame = server._onFrame.bind(server);
  server._onFrame = (fin, opcode, payload) => {
    if (opcode === ws.OP.PONG) controlFrames.push(['pong', payload.toString()]);
    onFrame(fin, opcode, payload);
  };
  server.sendFrame(ws.OP.TEXT, Buffer.from('hel'), { fin: false });
  server.sendFrame(ws.OP.PING, Buffer.from('are you there'));
  server.sendFrame(ws.OP.CONT, Buffer.from('lo '), { fin: false });
  server.sendFrame(ws.OP.CONT, Buffer.from('wörld'));
  assert.strictEqual(await next(client), 'hello wörld');
  client.sendFrame(ws.OP.BINARY, Buffer.from([1, 2]), { fin: false });
  client.sendFrame(ws.OP.CONT, Buffer.from([3]));
  assert.deepStrictEqual([...(await next(server))], [1, 2, 3]);
  assert.deepStrictEqual(controlFrames, [['pong', 'are you there']]);
  server.close();
  await assert.rejects(next(client), ws.ConnectionClosed);
  assert.throws(() => client.sendText('late'), ws.ConnectionClosed);
  sidecar.close();
});

test('frames: a server with a wrong Sec-WebSocket-Accept is refused', async () => {
  const server = net.createServer((socket) => {
    socket.once('data', () => {
      socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  opened.sidecars.add({ server });
  await assert.rejects(ws.connect('127.0.0.1', server.address().port, '/'), /bad Sec-WebSocket-Accept/);
  server.close();
});

test('errors: a syntax error names the file and line, a thrown error its type and place', async () => {
  const folder = tempFolder({
    'broken.js': 'const x = 1;\nmodule.exports.start = (args) => {\n  return x +;\n};\n',
    'lib/lookup.js': "module.exports = (d) => {\n  if (!('missing-key' in d)) throw new TypeError('missing-key');\n};\n",
    'ok.js': "const lookup = require('./lib/lookup');\nmodule.exports.start = () => lookup({});\n",
  });
  const { error: broken } = loadIn('broken.js', folder);
  assert.strictEqual(broken.type, 'SyntaxError');
  assert.strictEqual(broken.file, 'broken.js');
  assert.strictEqual(broken.line, 3);

  const cwd = process.cwd();
  process.chdir(folder);
  try {
    const { functions } = loadAlgorithm('ok.js');
    const { sidecar, served } = await serve(new Runner(functions));
    sidecar.send('run', { taskId: 't', input: [] });
    const { error } = await sidecar.recv();
    await finish(sidecar, served);
    assert.strictEqual(error.type, 'TypeError');
    assert.strictEqual(error.message, 'missing-key');
    assert.deepStrictEqual([error.file, error.line], [path.join('lib', 'lookup.js'), 2]);
  } finally {
    process.chdir(cwd);
  }
});
