/**
 * `backstop restore` and `backstop recover` as an operator runs them (the CLI from source, in a
 * child process without a terminal): output on stdout, one-line errors with a hint, exit codes.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDatabase } from '../../src/db/connection.js';
import { captureGroup, captureTable } from '../../src/snapshot/capture.js';
import type { Manifest } from '../../src/snapshot/manifest.js';
import { openStorage } from '../../src/storage/open.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { tableFingerprint } from '../support/type-torture.js';
import { withoutGuard } from './guard.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function backstop(args: string[], input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      ['--openssl-legacy-provider', '--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), ...args],
      { cwd: REPO_ROOT, env: { ...process.env, BACKSTOP_LOG_LEVEL: 'warn' }, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin!.end(input ?? '');
  });
}

describe('restore and recover commands', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let folder: string;
  let manifest: Manifest;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-cli-'));
    await client.query(`
      CREATE TABLE "Order Items" (id int PRIMARY KEY, "Qty" int CHECK ("Qty" > 0), note text);
      INSERT INTO "Order Items" SELECT g, g, 'note ' || g FROM generate_series(1, 200) g;
    `);
    manifest = await captureTable({ database: resolveDatabase(db.url), storage: openStorage(folder), table: { schema: 'public', table: 'Order Items' } });
  });
  afterAll(async () => {
    await db?.drop();
    if (folder) await rm(folder, { recursive: true, force: true });
  });

  const common = () => ['--db', db.url, '--storage', folder, '--snapshot-id', manifest.snapshot_id];

  it('--dry-run prints the SQL and changes nothing', async () => {
    const run = await backstop(['restore', ...common(), '--table', '"Order Items"', '--into', 'items_dry', '--dry-run']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('-- dry run: nothing was changed; checksums verified');
    expect(run.stdout).toContain('CREATE TABLE "public"."items_dry"');
    expect(run.stdout).toContain('COPY "public"."items_dry" ("id", "Qty", "note") FROM STDIN WITH (FREEZE);  -- 200 rows');
    const { rows } = await client.query(`SELECT to_regclass('public.items_dry') AS t`);
    expect(rows[0].t).toBeNull();
  });

  it('refuses a maintenance_work_mem it cannot read, before reading or creating anything', async () => {
    const run = await backstop(['restore', ...common(), '--into', 'items_mwm', '--maintenance-work-mem', 'lots']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/maintenance_work_mem for the restore must be a size/);
    expect(run.stderr).toMatch(/--maintenance-work-mem 1GB/);
    const { rows } = await client.query(`SELECT to_regclass('public.items_mwm') AS t`);
    expect(rows[0].t).toBeNull();
  });

  it('restores into another name and reports it as JSON', async () => {
    const run = await backstop(['restore', ...common(), '--into', 'public."Items Back"', '--json']);
    expect(run.code).toBe(0);
    const result = JSON.parse(run.stdout);
    expect(result.tables[0]).toMatchObject({ snapshot_id: manifest.snapshot_id, source: 'public.Order Items', table: 'public.Items Back', rows: 200, replaced: false });
    expect(await tableFingerprint(client, { schema: 'public', table: 'Items Back' })).toEqual(await tableFingerprint(client, { schema: 'public', table: 'Order Items' }));
  });

  it('refuses a --table that is not the snapshot\'s, and an existing target, with a hint', async () => {
    const wrong = await backstop(['restore', ...common(), '--table', 'customers']);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/^error: snapshot \w+ is of "public"."Order Items", not "public"."customers"\nhint: .*--into/);
    const wrongWithInto = await backstop(['restore', ...common(), '--table', 'customers', '--into', 'zz']);
    expect(wrongWithInto.code).toBe(2);
    expect(wrongWithInto.stderr).toMatch(/^error: snapshot \w+ is of "public"."Order Items", not "public"."customers"\nhint: check the snapshot id/);
    const exists = await backstop(['restore', ...common(), '--table', '"Order Items"']);
    expect(exists.code).toBe(1);
    expect(exists.stderr).toMatch(/^error: "public"."Order Items" already exists\nhint: .*--replace/);
  });

  it('refuses a tampered snapshot with exit 1 and a clear message', async () => {
    const file = path.join(folder, manifest.parquet_path);
    const original = await readFile(file);
    try {
      await writeFile(file, original.subarray(0, original.length - 10));
      const run = await backstop(['restore', ...common(), '--into', 'items_tampered']);
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/^error: snapshot \w+ is damaged: .*\nhint: the file was modified or truncated after capture; nothing was restored/);
    } finally {
      await writeFile(file, original);
    }
  });

  it('restores a recovery group with --group and --suffix', async () => {
    await client.query(`
      CREATE TABLE authors (id int PRIMARY KEY, name text);
      CREATE TABLE books (id int PRIMARY KEY, author int REFERENCES authors(id));
      INSERT INTO authors VALUES (1, 'a'), (2, 'b'); INSERT INTO books VALUES (1, 1), (2, 2), (3, 1);
    `);
    const manifests = await captureGroup({ database: resolveDatabase(db.url), storage: openStorage(folder), group: 'library', tables: [{ table: { schema: 'public', table: 'books' } }, { table: { schema: 'public', table: 'authors' } }] });
    const run = await backstop(['restore', '--db', db.url, '--storage', folder, '--snapshot-id', manifests[0]!.snapshot_id, '--group', '--suffix', '_r']);
    expect(run.stderr).toBe('');
    expect(run.stdout.trim().split('\n').map((line) => line.split(' ')[1])).toEqual(['public.authors_r', 'public.books_r']);
    const { rows } = await client.query(`SELECT confrelid::regclass::text AS ref FROM pg_constraint WHERE conrelid = 'books_r'::regclass AND contype = 'f'`);
    expect(rows).toEqual([{ ref: 'authors_r' }]);
  });

  it('recover without a terminal explains which flag to pass', async () => {
    const run = await backstop(['recover', '--db', db.url, '--storage', folder, '--table', '"Order Items"']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('Verified recovery points for public.Order Items (newest first):');
    expect(run.stderr).toMatch(/error: choose a recovery point: there is no terminal to ask on\nhint: pass --snapshot-id ID .* or --yes to take the newest/);
  });

  it('recover --yes restores beside the original and prints copy-back SQL that works', async () => {
    const before = await tableFingerprint(client, { schema: 'public', table: 'Order Items' });
    await withoutGuard(client, () => client.query(`DROP TABLE "Order Items"`));
    const run = await backstop(['recover', '--db', db.url, '--storage', folder, '--table', '"Order Items"', '--yes']);
    expect(run.code).toBe(0);
    expect(run.stderr).toContain('Recovered public.Order Items into public.Order Items_recovered: 200 rows, validated.');
    expect(run.stdout).toMatch(/^-- public\.Order Items_recovered holds the 200 rows of snapshot /);
    expect(run.stdout).toContain('BEGIN;');
    expect(run.stdout).toContain('ALTER TABLE "public"."Order Items_recovered" RENAME TO "Order Items";');
    await client.query(run.stdout);
    expect(await tableFingerprint(client, { schema: 'public', table: 'Order Items' })).toEqual(before);
  });
});
