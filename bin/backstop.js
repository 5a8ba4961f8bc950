#!/usr/bin/env node
// DuckDB queries (capture, restore) each hold a libuv worker thread while they run; leave room
// for file I/O beside several of them. Must be set before the thread pool first starts, hence
// before the (dynamic) import of the program.
process.env.UV_THREADPOOL_SIZE ??= '16';
await import('../dist/cli/main.js');
