'use strict';
/**
 * hkube's JavaScript runtime.
 *
 * Connects to the hkube sidecar over a websocket, loads the user's module (HKube's Node
 * conventions: `ALGORITHM_ENTRY_POINT`, exported `start(args, api)` with optional `init`, `stop`
 * and `exit`), and runs tasks. It speaks HKube's worker protocol (JSON encoding, storage v1) and,
 * when the sidecar offers it, hkube's fast path: one message in and one out per task.
 *
 * No dependencies, so it installs anywhere Node 18+ runs.
 */

const { Runner, loadAlgorithm, run, runFromEnv } = require('./lib/runner');

module.exports = { Runner, loadAlgorithm, run, runFromEnv };
