/**
 * The benchmark tables: `bench_t` from the shared generator (../shared/bench/gen_1m.sql, 1M
 * rows) and `bench_t5m`, made by the same SQL with the series run to 5,000,000. They live in
 * database `bench` and are loaded once (a kept server already has them).
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ROW_SIZES, type RowSize } from './options.js';
import type { BenchServer } from './server.js';

export const BENCH_DATABASE = 'bench';
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/**
 * ../shared/bench/gen_1m.sql beside the repository; a git worktree one level further down
 * (e.g. /work/wt/NAME beside /work/main) finds it two levels up. BACKSTOP_BENCH_GENERATOR
 * overrides both.
 */
const GENERATOR_CANDIDATES = [
  path.resolve(REPO_ROOT, '..', 'shared', 'bench', 'gen_1m.sql'),
  path.resolve(REPO_ROOT, '..', '..', 'shared', 'bench', 'gen_1m.sql'),
];
export const GENERATOR_PATH = process.env.BACKSTOP_BENCH_GENERATOR
  ?? GENERATOR_CANDIDATES.find((candidate) => existsSync(candidate))
  ?? GENERATOR_CANDIDATES[0]!;

export interface BenchTable {
  size: RowSize;
  name: string;
  rows: number;
  /** pg_total_relation_size, for the report. */
  bytes: number;
}

export function tableName(size: RowSize): string {
  return size === '1m' ? 'bench_t' : `bench_t${size}`;
}

export async function readGenerator(): Promise<string> {
  if (!existsSync(GENERATOR_PATH)) {
    throw new Error(`benchmark generator not found at ${GENERATOR_PATH} (expected ../shared/bench/gen_1m.sql beside the repository)`);
  }
  const sql = await readFile(GENERATOR_PATH, 'utf8');
  if (!sql.includes('bench_t') || !sql.includes('generate_series(1, 1000000)')) {
    throw new Error(`${GENERATOR_PATH} no longer has the expected shape (table bench_t, generate_series(1, 1000000)); update bench/dataset.ts`);
  }
  return sql;
}

/** The generator SQL for another table name and row count (same columns, same value formulas). */
export function generatorFor(sql: string, name: string, rows: number): string {
  return sql.replace(/\bbench_t\b/g, name).replace('generate_series(1, 1000000)', `generate_series(1, ${rows})`);
}

/** The generator's statements (it has no semicolons inside literals). */
export function splitStatements(sql: string): string[] {
  return sql.split(/;\s*(?:\n|$)/).map((statement) => statement.trim()).filter(Boolean);
}

export async function ensureBenchDatabase(server: BenchServer): Promise<void> {
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  try {
    const { rowCount } = await admin.query(`SELECT 1 FROM pg_database WHERE datname = $1`, [BENCH_DATABASE]);
    if (!rowCount) await admin.query(`CREATE DATABASE ${pg.Client.prototype.escapeIdentifier(BENCH_DATABASE)}`);
  } finally {
    await admin.end();
  }
}

async function loadedRows(client: pg.Client, name: string): Promise<number | undefined> {
  const { rows } = await client.query<{ exists: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS exists`, [name]);
  if (!rows[0]!.exists) return undefined;
  const count = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${pg.Client.prototype.escapeIdentifier(name)}`);
  return Number(count.rows[0]!.n);
}

/** Make sure each requested table exists with its full row count; load it if not. */
export async function ensureBenchTables(server: BenchServer, sizes: RowSize[], log: (line: string) => void): Promise<BenchTable[]> {
  await ensureBenchDatabase(server);
  const generator = await readGenerator();
  const client = new pg.Client({ connectionString: server.urlFor(BENCH_DATABASE) });
  await client.connect();
  try {
    const tables: BenchTable[] = [];
    for (const size of sizes) {
      const name = tableName(size);
      const rows = ROW_SIZES[size];
      if ((await loadedRows(client, name)) !== rows) {
        log(`loading ${name} (${rows.toLocaleString('en')} rows)…`);
        const started = performance.now();
        // One statement at a time: VACUUM refuses to run inside the implicit transaction of a
        // multi-statement query string.
        for (const statement of splitStatements(generatorFor(generator, name, rows))) await client.query(statement);
        log(`loaded ${name} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      }
      const { rows: sizeRows } = await client.query<{ bytes: string }>(`SELECT pg_total_relation_size($1::regclass) AS bytes`, [name]);
      tables.push({ size, name, rows, bytes: Number(sizeRows[0]!.bytes) });
    }
    return tables;
  } finally {
    await client.end();
  }
}
