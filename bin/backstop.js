#!/usr/bin/env node
import module from 'node:module';
// DuckDB queries (capture, restore) each hold a libuv worker thread while they run; leave room
// for file I/O beside several of them. Must be set before the thread pool first starts, hence
// before the (dynamic) import of the program.
process.env.UV_THREADPOOL_SIZE ??= '16';
// Reuse compiled code between runs (Node ≥ 22.1; kept in the OS temp folder): about 20 ms off
// every start of the CLI.
module.enableCompileCache?.();
await import('../dist/cli/main.js');
