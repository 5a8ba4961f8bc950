/**
 * Child process of the concurrent-captures scenario: capture `count` small tables with
 * captureTable(), first one after another, then all at once (as the agent's startup sweep does),
 * and print one JSON line with both wall times. Run as a child so the runner can kill it when
 * the captures hang (a hang here can block the event loop, so no in-process timeout would fire).
 * Usage: concurrent-captures-child.ts <database url> <storage folder> <table prefix> <count>
 */
import pg from 'pg';
import { captureTable } from '../src/snapshot/capture.js';
import { openStorage } from '../src/storage/open.js';

const [url, storageDir, prefix, countText] = process.argv.slice(2);
if (!url || !storageDir || !prefix || !countText) {
  process.stderr.write('usage: concurrent-captures-child.ts <url> <storage> <prefix> <count>\n');
  process.exit(2);
}
const count = Number(countText);
const pool = new pg.Pool({ connectionString: url, max: count + 2 });
const storage = openStorage(storageDir);
const capture = (index: number) => captureTable({ pool, storage, table: { schema: 'public', table: `${prefix}${index}` }, source: 'sidecar' });
const tables = Array.from({ length: count }, (_, index) => index + 1);

let started = performance.now();
for (const index of tables) await capture(index);
const sequentialMs = performance.now() - started;
started = performance.now();
await Promise.all(tables.map(capture));
const concurrentMs = performance.now() - started;
await pool.end();
process.stdout.write(`${JSON.stringify({ sequentialMs, concurrentMs })}\n`);
