#!/usr/bin/env node
// The Node.js check comes first, before any module loads: on Node 20, better-sqlite3 crashes
// with a segmentation fault, and `npm start` would leave its embedded PostgreSQL running. So this
// file uses only syntax that old Node versions parse (no static imports, no top-level await, no
// `??=` or `?.`): the program is imported only once the version is known to be good.
var MINIMUM_NODE_MAJOR = 22;
var major = Number(process.versions.node.split('.')[0]);
if (!(major >= MINIMUM_NODE_MAJOR)) {
  var platform = process.platform === 'win32' ? 'win' : process.platform;
  process.stderr.write(
    'error: Backstop needs Node.js ' + MINIMUM_NODE_MAJOR + ' or newer (24 recommended); this is Node.js ' + process.versions.node + ' (' + process.execPath + ')\n' +
      'hint: install Node 24 with `npm install --prefix ~/.cache/node24 node-' + platform + '-' + process.arch + '@24` and put ' +
      '~/.cache/node24/node_modules/node-' + platform + '-' + process.arch + '/bin first on PATH (or `nvm install 24`), then run `npm ci` again\n',
  );
  process.exit(2);
}

// DuckDB queries (capture, restore) each hold a libuv worker thread while they run; leave room
// for file I/O beside several of them. Must be set before the thread pool first starts, hence
// before the (dynamic) import of the program.
if (process.env.UV_THREADPOOL_SIZE === undefined) process.env.UV_THREADPOOL_SIZE = '16';

import('node:module')
  .then(function (module) {
    // Reuse compiled code between runs (Node ≥ 22.1; kept in the OS temp folder): about 20 ms
    // off every start of the CLI.
    if (typeof module.default.enableCompileCache === 'function') module.default.enableCompileCache();
    return import('../dist/cli/main.js');
  })
  .catch(function (error) {
    process.stderr.write('error: ' + (error && error.message ? error.message : String(error)) + '\n');
    if (error && error.code === 'ERR_MODULE_NOT_FOUND') process.stderr.write('hint: dist/ is missing or incomplete: run `npm ci` (or `npm run build`) in the Backstop folder\n');
    else process.stderr.write('hint: Backstop could not load; run `npm ci` in the Backstop folder, and rerun with BACKSTOP_LOG_LEVEL=debug to see where\n');
    if (process.env.BACKSTOP_LOG_LEVEL === 'debug' && error && error.stack) process.stderr.write(error.stack + '\n');
    process.exitCode = 1;
  });
