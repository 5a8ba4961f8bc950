/**
 * Several small tables captured at once in one process, as the agent's startup sweep and a
 * multi-table DROP do: all at once against one after another. Each run is a child process
 * (bench/concurrent-captures-child.ts) killed after a timeout, because the failure this watches
 * for is a hang: captures outnumbering libuv's worker threads (4 by default, which is what a
 * library user of the engine gets; the CLI raises it to 16).
 */
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { dropDatabase, recreateDatabase } from '../anchors.js';
import type { ScenarioContext } from '../context.js';
import type { ScenarioResult } from '../results.js';
import { summarize } from '../stats.js';

const DATABASE = 'bench_concurrent';
const TABLES = 8;
const ROWS = 1000;
const TIMEOUT_MS = 60_000;
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'concurrent-captures-child.ts');
const ID = 'concurrent-captures';
const TITLE = `${TABLES} small tables captured at once in one process (libuv pool 4) vs one after another`;

interface ChildOutcome {
  sequentialMs: number;
  concurrentMs: number;
}

function runChild(url: string, storage: string): Promise<ChildOutcome | 'hung'> {
  return new Promise((resolve, reject) => {
    // The default pool size on purpose: that is what a library user of the engine gets.
    const env = { ...process.env };
    delete env.UV_THREADPOOL_SIZE;
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, url, storage, 'cc_', String(TABLES)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk; });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
    let hung = false;
    const timer = setTimeout(() => {
      hung = true;
      child.kill('SIGKILL');
    }, TIMEOUT_MS);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      if (hung) resolve('hung');
      else if (code !== 0) reject(new Error(`concurrent-captures child exited with ${code}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop()!) as ChildOutcome);
    });
  });
}

export async function concurrentCaptures(context: ScenarioContext): Promise<ScenarioResult[]> {
  const { server, options, workDir, log } = context;
  await recreateDatabase(server, DATABASE);
  const url = server.urlFor(DATABASE);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`DO $$ BEGIN FOR i IN 1..${TABLES} LOOP
      EXECUTE format('CREATE TABLE public.%I AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, ${ROWS}) g', 'cc_' || i);
    END LOOP; END $$`);
  } finally {
    await client.end();
  }
  try {
    const sequential: number[] = [];
    const concurrent: number[] = [];
    let hangs = 0;
    const total = options.warmup + options.runs;
    for (let iteration = 0; iteration < total; iteration += 1) {
      const storage = path.join(workDir, `concurrent-${iteration}`);
      const outcome = await runChild(url, storage);
      await rm(storage, { recursive: true, force: true });
      if (outcome === 'hung') {
        hangs += 1;
        log(`  run ${iteration + 1}/${total}: HUNG (killed after ${TIMEOUT_MS / 1000} s)`);
        continue;
      }
      log(`  run ${iteration + 1}/${total}: sequential ${outcome.sequentialMs.toFixed(0)} ms, at once ${outcome.concurrentMs.toFixed(0)} ms`);
      if (iteration < options.warmup) continue;
      sequential.push(outcome.sequentialMs);
      concurrent.push(outcome.concurrentMs);
    }
    const atOnce = summarize(concurrent);
    const oneByOne = summarize(sequential);
    return [{
      scenario: 'concurrent-captures', id: ID, title: TITLE,
      status: concurrent.length > 0 ? 'measured' : 'failed',
      ...(hangs > 0 ? { reason: `${hangs} of ${total} runs hung` } : {}),
      ...(concurrent.length > 0 ? {
        backstop: { label: `${TABLES} captureTable() at once`, unit: 'ms' as const, summary: atOnce },
        anchor: { label: 'the same, one after another', unit: 'ms' as const, summary: oneByOne },
        ratio: atOnce.median / oneByOne.median,
      } : {}),
      target: { text: 'no run hangs', met: hangs === 0 },
      extra: { tables: TABLES, rowsPerTable: ROWS, hangs, runs: total, timeoutMs: TIMEOUT_MS },
    }];
  } finally {
    await dropDatabase(server, DATABASE);
  }
}
