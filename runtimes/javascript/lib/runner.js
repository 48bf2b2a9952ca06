'use strict';
/**
 * The runtime loop: connect to the sidecar, load the user's code, run tasks.
 *
 * Two ways to run a task, chosen by the sidecar at connect time:
 *
 * - HKube's exchange (what HKube's own wrappers speak): `initialize` → `initialized` → `start` →
 *   `started` → `done` (storage v1: the result travels in `done`). `start` runs as a Promise, so
 *   `stop` and code-API replies are handled while it runs.
 * - hkube's fast path (`fast=1` in the query): `run` → `result`, one message each way. Fast tasks
 *   run one at a time, in the order they arrive; code-API replies are handled meanwhile.
 *
 * Stop (both ways): the user's `stop` is called, the tasks of a batch not begun yet are dropped, and
 * the task in hand is left to settle; its result is discarded, and `stopped` follows once it has
 * settled and the user's `stop` has returned. After `stopped` nothing of the stopped work is ever
 * sent, so the sidecar may hand out the next task (HKube's Node wrapper answers `stopped` at once
 * instead, and may send the stopped task's `done` later). A task that never settles (a busy loop
 * blocks the event loop) is the sidecar's to end: it kills the process after its stop timeout.
 *
 * Errors thrown by user code become `errorMessage` with the message and the stack. A module that
 * fails to load is reported on the first task, not by crashing, so the error reaches the user's job.
 *
 * A task's Buffer result goes to storage and is answered with a reference; references in a task's
 * input are read back before `start` (see `storage.js`). What user code prints while its task runs
 * (`init` and `start`) still goes to the streams and is also attached to the task's reply as `log`
 * (see `logs.js`); HKube's exchange sends it as a `taskLog` message just before `done` or
 * `errorMessage`.
 */

const fs = require('node:fs');
const path = require('node:path');
const logs = require('./logs');
const storage = require('./storage');
const ws = require('./ws');

/**
 * HKube's `{code, message, details}` (details: the stack) plus hkube's `type`, `file` and `line`
 * for an Error: its name, and where in the user's code it was raised.
 */
function errorPayload(err) {
  const isError = err instanceof Error;
  const message = (err && typeof err.message === 'string' && err.message) || (isError ? err.name : String(err));
  const payload = { code: 'Failed', message };
  if (isError && err.stack) payload.details = err.stack;
  if (isError) Object.assign(payload, { type: err.name || 'Error' }, whereRaised(err));
  return payload;
}

/**
 * `{file, line}` of an error: for a SyntaxError met while loading, the `<file>:<line>` that Node
 * puts on its stack's first line; otherwise the innermost frame in the algorithm's folder (the
 * working folder), else the innermost one that is neither Node's nor this runtime's. Paths in
 * the algorithm's folder are given relative to it.
 */
function whereRaised(err) {
  const stack = typeof err.stack === 'string' ? err.stack : '';
  let found = null;
  if (err instanceof SyntaxError) {
    const first = stack.split('\n', 1)[0].match(/^(.+):(\d+)$/);
    if (first) found = [first[1], Number(first[2])];
  }
  if (!found) {
    const frames = [];
    for (const line of stack.split('\n')) {
      const frame = line.match(/^\s+at (?:.*? \()?(?:file:\/\/)?(.+?):(\d+):\d+\)?$/);
      if (frame && path.isAbsolute(frame[1])) frames.push([frame[1], Number(frame[2])]);
    }
    const mine = `${process.cwd()}${path.sep}`;
    found =
      frames.find(([file]) => file.startsWith(mine)) ||
      frames.find(([file]) => !file.startsWith(`${__dirname}${path.sep}`)) ||
      null;
  }
  if (!found) return {};
  const [file, line] = found;
  const inFolder = file.startsWith(`${process.cwd()}${path.sep}`);
  return { file: inFolder ? path.relative(process.cwd(), file) : file, line };
}

function notJson(what, err) {
  return { code: 'Failed', message: `${what} cannot be sent as JSON: ${err.message}` };
}

/** Logs a failure of the runtime itself (never of user code, which is reported to the sidecar). */
function logFailure(err) {
  if (!(err instanceof ws.ConnectionClosed)) logs.note(`hkube runtime: ${err && err.stack}\n`);
}

class Runner {
  /** `loadError`: an errorMessage payload sent instead of running any task. */
  constructor({ start, init, stop, exit, loadError } = {}) {
    this.startFn = start;
    this.initFn = init;
    this.stopFn = stop;
    this.exitFn = exit;
    this.loadError = loadError || null;
    this.conn = null;
    this.args = null;
    this.taskRunning = false;
    this.fastRunning = false;
    this.stopRequested = false;
    // Settles when the user's stop() has returned; `stopped` waits for it.
    this._userStop = Promise.resolve();
    this.exitCode = null;
    this._nextId = 0;
    this._waiting = new Map();
    this._fastQueue = Promise.resolve();
    this.api = makeApi(this);
  }

  // -- wire -------------------------------------------------------------------------------

  send(message) {
    this.conn.sendText(JSON.stringify(message));
  }

  /** Sends a code-API request; resolves with the reply's response, rejects with its error. */
  call(command, idField, payload) {
    this._nextId += 1;
    const id = String(this._nextId);
    return new Promise((resolve, reject) => {
      this._waiting.set(id, { resolve, reject });
      try {
        this.send({ command, data: { ...payload, [idField]: id } });
      } catch (err) {
        this._waiting.delete(id);
        reject(err);
      }
    });
  }

  _settle(id, outcome) {
    const reply = this._waiting.get(String(id));
    if (!reply) return;
    this._waiting.delete(String(id));
    if ('error' in outcome) reply.reject(outcome.error);
    else reply.resolve(outcome.value);
  }

  // -- the loop ---------------------------------------------------------------------------

  /** Handles messages until `exit` or until the connection closes; resolves with the exit code. */
  async serve(conn) {
    this.conn = conn;
    logs.install();
    try {
      while (this.exitCode === null) this._dispatch(await conn.recv());
    } catch (err) {
      if (!(err instanceof ws.ConnectionClosed)) throw err;
    }
    return this.exitCode;
  }

  _dispatch(raw) {
    let message;
    try {
      message = JSON.parse(Buffer.isBuffer(raw) ? raw.toString('utf8') : raw);
    } catch (err) {
      logs.note(`hkube runtime: ignoring a message that is not JSON: ${err.message}\n`);
      return;
    }
    const handler = message && HANDLERS[message.command];
    if (!handler) return;
    const data = message.data == null ? {} : message.data;
    if (handler === Runner.prototype._onRun || handler === Runner.prototype._onRunBatch) {
      this._fastQueue = this._fastQueue.then(() => handler.call(this, data)).catch(logFailure);
    } else {
      Promise.resolve(handler.call(this, data)).catch(logFailure);
    }
  }

  // -- HKube's exchange -------------------------------------------------------------------

  async _onInitialize(data) {
    this.args = data;
    this.stopRequested = false;
    if (this.loadError) return this.send({ command: 'errorMessage', error: this.loadError });
    // The capture stays open from init to the end of start.
    logs.begin();
    try {
      if (this.initFn) await this.initFn(data);
    } catch (err) {
      this._sendLog(data.taskId, logs.end());
      return this.send({ command: 'errorMessage', error: errorPayload(err) });
    }
    this.send({ command: 'initialized' });
  }

  async _onStart() {
    this.send({ command: 'started' });
    this.taskRunning = true;
    const args = this.args || {};
    let output;
    try {
      output = await this._callStart(args);
      output = storage.prepareOutput(output, args.jobId, args.taskId);
    } catch (err) {
      const log = logs.end();
      this.taskRunning = false;
      if (this.stopRequested) return this._answerStopped();
      this._sendLog(args.taskId, log);
      return this.send({ command: 'errorMessage', error: errorPayload(err) });
    }
    const log = logs.end();
    this.taskRunning = false;
    if (this.stopRequested) return this._answerStopped();
    let text;
    try {
      text = JSON.stringify({ command: 'done', data: output === undefined ? null : output });
    } catch (err) {
      text = JSON.stringify({ command: 'errorMessage', error: notJson('the result', err) });
    }
    this._sendLog(args.taskId, log);
    this.conn.sendText(text);
  }

  _sendLog(taskId, log) {
    if (log !== undefined) this.send({ command: 'taskLog', data: { taskId, log } });
  }

  async _callStart(args) {
    if (typeof this.startFn !== 'function') throw new Error('the algorithm has no start function');
    if ('input' in args) args.input = storage.resolve(args.input);
    return this.startFn(args, this.api);
  }

  async _onStop(data) {
    this.stopRequested = true;
    // A running task (start, or a fast-path run or batch) replies `stopped` itself once it settles.
    const running = this.taskRunning || this.fastRunning;
    let stopReturned;
    this._userStop = new Promise((resolve) => (stopReturned = resolve));
    try {
      // What stop prints is not the running task's.
      if (this.stopFn) await logs.quietly(() => this.stopFn(data));
    } catch (err) {
      logs.note(`hkube runtime: the algorithm's stop failed: ${err && err.stack}\n`);
    } finally {
      stopReturned();
    }
    if (!running) this.send({ command: 'stopped' });
  }

  /** The stopped work is over: `stopped`, once the user's stop() has returned too. */
  async _answerStopped() {
    await this._userStop;
    this.send({ command: 'stopped' });
  }

  /** A fast-path run or batch begins (the sidecar sends the next only once this is answered). */
  _fastBegins() {
    this.stopRequested = false;
    this.fastRunning = true;
  }

  /** It has ended; true when a stop came meanwhile (its answers are then dropped). */
  _fastEnds() {
    this.fastRunning = false;
    return this.stopRequested;
  }

  async _onExit(data) {
    if (this.exitFn) {
      try {
        await logs.quietly(() => this.exitFn(data));
      } catch (err) {
        logs.note(`hkube runtime: the algorithm's exit failed: ${err && err.stack}\n`);
      }
    }
    this.exitCode = Number.parseInt(data.exitCode, 10) || 0;
    this.conn.close();
  }

  // -- hkube's fast path ------------------------------------------------------------------

  async _runFast(data) {
    const taskId = data.taskId;
    if (this.loadError) return { taskId, error: this.loadError };
    let outcome;
    logs.begin();
    try {
      if (this.initFn) await this.initFn(data);
      const output = storage.prepareOutput(await this._callStart(data), data.jobId, taskId);
      outcome = { taskId, output: output === undefined ? null : output };
    } catch (err) {
      outcome = { taskId, error: errorPayload(err) };
    }
    const log = logs.end();
    if (log !== undefined) outcome.log = log;
    return outcome;
  }

  async _onRun(data) {
    this._fastBegins();
    const outcome = await this._runFast(data);
    if (this._fastEnds()) return this._answerStopped();
    const taskData = { taskId: outcome.taskId };
    if (outcome.log !== undefined) taskData.log = outcome.log;
    if ('error' in outcome) return this.send({ command: 'errorMessage', error: outcome.error, data: taskData });
    try {
      this.send({ command: 'result', data: outcome });
    } catch (err) {
      if (err instanceof ws.ConnectionClosed) throw err;
      this.send({ command: 'errorMessage', error: notJson('the result', err), data: taskData });
    }
  }

  async _onRunBatch(data) {
    this._fastBegins();
    const results = [];
    for (const task of data.tasks || []) {
      if (this.stopRequested) break; // the rest of a stopped batch never runs
      results.push(await this._runFast(task));
    }
    if (this._fastEnds()) return this._answerStopped();
    try {
      this.send({ command: 'results', data: { results } });
    } catch (err) {
      if (err instanceof ws.ConnectionClosed) throw err;
      const error = notJson('a result', err);
      const failed = results.map((r) => (r.log === undefined ? { taskId: r.taskId, error } : { taskId: r.taskId, error, log: r.log }));
      this.send({ command: 'results', data: { results: failed } });
    }
  }

  // -- code-API replies -------------------------------------------------------------------

  _onAlgorithmDone(data) {
    this._settle(data.execId, { value: data.response });
  }

  _onAlgorithmError(data) {
    this._settle(data.execId, { error: data.error });
  }

  _onSubpipelineDone(data) {
    this._settle(data.subPipelineId, { value: data.response });
  }

  _onSubpipelineError(data) {
    this._settle(data.subPipelineId, { error: data.error });
  }

  _onSubpipelineStopped(data) {
    this._settle(data.subPipelineId, { value: null });
  }
}

const HANDLERS = {
  initialize: Runner.prototype._onInitialize,
  start: Runner.prototype._onStart,
  stop: Runner.prototype._onStop,
  exit: Runner.prototype._onExit,
  run: Runner.prototype._onRun,
  runBatch: Runner.prototype._onRunBatch,
  algorithmExecutionDone: Runner.prototype._onAlgorithmDone,
  algorithmExecutionError: Runner.prototype._onAlgorithmError,
  subPipelineDone: Runner.prototype._onSubpipelineDone,
  subPipelineError: Runner.prototype._onSubpipelineError,
  subPipelineStopped: Runner.prototype._onSubpipelineStopped,
};

/** What `start(args, api)` receives: HKube's code API, plus progress. */
function makeApi(runner) {
  return {
    /** Runs another algorithm in this job; resolves with its output. */
    startAlgorithm(algorithmName, input = [], includeResult = true) {
      return runner.call('startAlgorithmExecution', 'execId', { algorithmName, input: [...input], includeResult });
    },
    /** Runs a stored pipeline; resolves with its results. */
    startStoredSubpipeline(name, flowInput = {}, includeResult = true) {
      return runner.call('startStoredSubPipeline', 'subPipelineId', { includeResult, subPipeline: { name, flowInput } });
    },
    /** Runs a pipeline given as a descriptor; resolves with its results. */
    startRawSubpipeline(name, nodes, flowInput, options = {}, webhooks = {}, includeResult = true) {
      const subPipeline = { name, nodes, flowInput, options, webhooks };
      return runner.call('startRawSubPipeline', 'subPipelineId', { includeResult, subPipeline });
    },
    /** Reports the task's progress (0–100). */
    progress(percent) {
      runner.send({ command: 'progress', data: { progress: percent } });
    },
  };
}

/**
 * Loads the user's module by HKube's Node convention: `require(<ALGORITHM_PATH>/<entry>)` after
 * chdir into the folder. Returns `{ functions, error }`; `error` is an errorMessage payload naming
 * the entry point and the cause.
 */
function loadAlgorithm(entryPoint = 'index.js', algorithmPath) {
  if (algorithmPath && fs.existsSync(algorithmPath) && fs.statSync(algorithmPath).isDirectory()) {
    process.chdir(algorithmPath);
  }
  let module;
  try {
    module = require(path.resolve(entryPoint));
  } catch (err) {
    const error = errorPayload(err);
    const cause = error.type ? `${error.type}: ${error.message}` : error.message;
    error.message = `cannot load the algorithm's entry point '${entryPoint}' from ${process.cwd()}: ${cause}`;
    return { functions: {}, error };
  }
  const exported = module || {};
  const functions = {};
  for (const name of ['start', 'init', 'stop', 'exit']) {
    functions[name] = typeof exported[name] === 'function' ? exported[name] : undefined;
  }
  if (!functions.start) {
    const message = `the algorithm's entry point '${entryPoint}' has no start(args, api) function`;
    return { functions, error: { code: 'Failed', message } };
  }
  return { functions, error: null };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Connects `runner` to the sidecar named by the environment and serves until `exit` or until the
 * connection closes; then calls `exitProcess(code)` (process.exit unless a test injects one).
 */
async function connectAndServe(runner, { env = process.env, exitProcess = process.exit } = {}) {
  const host = env.WORKER_SOCKET_HOST || '127.0.0.1';
  const port = Number.parseInt(env.WORKER_SOCKET_PORT || '3000', 10);
  // hkube's local sidecar also listens on a Unix socket: no TCP/IP stack per message.
  const unixPath = env.HKUBE_WORKER_SOCKET_PATH || null;
  const fast = !['0', 'false', 'no'].includes(env.HKUBE_FAST_PATH || '1');
  const urlPath = `/?storage=v1&encoding=json${fast ? '&fast=1' : ''}`;
  // The sidecar may still be starting: retry for a while, then give up with a clear message.
  const timeout = Number.parseFloat(env.HKUBE_CONNECT_TIMEOUT || '30');
  const deadline = Date.now() + (Number.isFinite(timeout) ? timeout : 30) * 1000;
  let conn;
  for (;;) {
    try {
      conn = await ws.connect(host, port, urlPath, unixPath);
      break;
    } catch (err) {
      if (Date.now() > deadline) {
        logs.note(`hkube runtime: cannot reach the sidecar at ${unixPath || `${host}:${port}`}: ${err.message}\n`);
        exitProcess(1);
        return 1;
      }
      await sleep(50);
    }
  }
  const code = (await runner.serve(conn)) ?? 0;
  exitProcess(code);
  return code;
}

/** For a custom image: runs these functions behind the sidecar. */
function run({ start, init, stop, exit } = {}, options = {}) {
  return connectAndServe(new Runner({ start, init, stop, exit }), options);
}

/** The built image's entry: loads ALGORITHM_ENTRY_POINT from ALGORITHM_PATH and runs it. */
function runFromEnv(options = {}) {
  const env = options.env || process.env;
  const { functions, error } = loadAlgorithm(env.ALGORITHM_ENTRY_POINT || 'index.js', env.ALGORITHM_PATH);
  return connectAndServe(new Runner({ ...functions, loadError: error }), options);
}

module.exports = { Runner, loadAlgorithm, connectAndServe, run, runFromEnv, errorPayload };
