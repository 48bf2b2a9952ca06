#!/usr/bin/env node
'use strict';
// Runs the algorithm named by ALGORITHM_PATH and ALGORITHM_ENTRY_POINT behind the hkube sidecar.
require('../index.js').runFromEnv();
