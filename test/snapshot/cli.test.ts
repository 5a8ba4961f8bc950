/**
 * `backstop snapshot`, `snapshots list`, `verify` and `prune` as an operator runs them (the CLI
 * from source in a child process, no terminal): stdout output, one-line errors with a hint, exit codes.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, open as openFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestS3, type TestS3 } from '../support/s3.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function backstop(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--openssl-legacy-provider', '--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), ...args],
      { cwd: REPO_ROOT, env: { ...process.env, BACKSTOP_LOG_LEVEL: 'warn' }, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

function jsonLines(text: string): Record<string, unknown>[] {
  return text.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>);
}

let db: TestDatabase;
let client: pg.Client;
let folder: string;
let s3: TestS3;

beforeAll(async () => {
  db = await createTestDatabase();
  client = await db.client();
  s3 = await startTestS3();
  folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-snapshot-cli-'));
  await client.query(`
    CREATE TABLE "User Accounts" (id int PRIMARY KEY, email text);
    INSERT INTO "User Accounts" SELECT g, 'u' || g FROM generate_series(1, 300) g;
    CREATE TABLE orders (id int PRIMARY KEY, account int REFERENCES "User Accounts", total numeric(8,2));
    INSERT INTO orders SELECT g, 1 + g % 300, g FROM generate_series(1, 900) g;
  `);
});

afterAll(async () => {
  await s3?.stop();
  await db?.drop();
  if (folder) await rm(folder, { recursive: true, force: true });
});

describe('snapshot commands', () => {
  it('snapshot --json prints one object per snapshot; list, verify and prune work on it', async () => {
    const storage = path.join(folder, 'local');
    const run = await backstop(['snapshot', '--db', db.url, '--storage', storage, '--table', '"User Accounts"', '--table', 'public.orders', '--label', 'before migration', '--json']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const lines = jsonLines(run.stdout);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ table: 'public.User Accounts', row_count: 300, checksum: expect.stringMatching(/^sha256:[0-9a-f]{64}$/), parquet_path: expect.stringMatching(/\.parquet$/) });
    expect(lines[1]).toMatchObject({ table: 'public.orders', row_count: 900 });

    const again = await backstop(['snapshot', '--db', db.url, '--storage', storage, '--table', 'orders', '--json']);
    expect(again.code).toBe(0);
    const newest = jsonLines(again.stdout)[0]!;

    const list = await backstop(['snapshots', 'list', '--db', db.url, '--storage', storage, '--json']);
    expect(list.code).toBe(0);
    const manifests = JSON.parse(list.stdout) as Array<{ snapshot_id: string; table: string; label: string | null }>;
    expect(manifests.map((m) => m.snapshot_id)).toEqual([newest.snapshot_id, lines[1]!.snapshot_id, lines[0]!.snapshot_id]);
    expect(manifests[2]!.label).toBe('before migration');

    const human = await backstop(['snapshots', 'list', '--storage', storage, '--table', 'orders']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^SNAPSHOT\s+TABLE\s+CREATED/);
    expect(human.stdout.trim().split('\n')).toHaveLength(3);

    const verified = await backstop(['verify', '--storage', storage, '--snapshot-id', String(lines[0]!.snapshot_id)]);
    expect(verified.code).toBe(0);
    expect(verified.stdout).toContain('verified');

    const pruned = await backstop(['prune', '--storage', storage, '--keep', '1', '--json']);
    expect(pruned.code).toBe(0);
    const report = JSON.parse(pruned.stdout) as { removed: Array<{ snapshot_id: string }> };
    expect(report.removed.map((r) => r.snapshot_id)).toEqual([lines[1]!.snapshot_id]);
  });

  it('prune applies --keep-last / --keep-daily; a dry run says what it would remove and removes nothing', async () => {
    const storage = path.join(folder, 'policy');
    const ids: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      const run = await backstop(['snapshot', '--db', db.url, '--storage', storage, '--table', 'orders', '--json']);
      ids.unshift(String(jsonLines(run.stdout)[0]!.snapshot_id));
    }
    const dry = await backstop(['prune', '--storage', storage, '--keep-last', '1', '--keep-daily', '1', '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`would remove snapshot ${ids[1]}`);
    expect(dry.stdout).toContain(`would remove snapshot ${ids[2]}`);
    const listed = JSON.parse((await backstop(['snapshots', 'list', '--storage', storage, '--json'])).stdout) as Array<{ snapshot_id: string }>;
    expect(listed.map((s) => s.snapshot_id)).toEqual(ids);

    const real = await backstop(['prune', '--storage', storage, '--keep-last', '1', '--keep-daily', '1', '--json']);
    expect(real.code).toBe(0);
    const report = JSON.parse(real.stdout) as { removed: Array<{ snapshot_id: string }>; kept: string[]; uploads: unknown };
    expect(report.removed.map((r) => r.snapshot_id)).toEqual([ids[1], ids[2]]);
    expect(report.kept).toEqual([ids[0]]);
    // A local folder has no multipart uploads.
    expect(report.uploads).toBeNull();
  });

  it('verify fails with one line and a hint when the data file was altered', async () => {
    const storage = path.join(folder, 'tamper');
    const run = await backstop(['snapshot', '--db', db.url, '--storage', storage, '--table', 'orders', '--json']);
    const line = jsonLines(run.stdout)[0]!;
    const handle = await openFile(path.join(storage, String(line.parquet_path)), 'r+');
    await handle.write(Buffer.from('XX'), 0, 2, 100);
    await handle.close();
    const verified = await backstop(['verify', '--storage', storage, '--snapshot-id', String(line.snapshot_id)]);
    expect(verified.code).not.toBe(0);
    expect(verified.stderr).toMatch(/^error: snapshot .* failed verification: .*altered.*\nhint: .+\n$/);
  });

  it('captures a group to S3', async () => {
    const run = await backstop(['snapshot', '--db', db.url, '--storage', s3.url('cli'), '--group', 'shop', '--table', '"User Accounts"', '--table', 'orders', '--json']);
    expect(run.stderr).toBe('');
    const lines = jsonLines(run.stdout);
    expect(lines.map((l) => (l.group as { name: string }).name)).toEqual(['shop', 'shop']);
    const list = await backstop(['snapshots', 'list', '--storage', s3.url('cli'), '--json']);
    expect((JSON.parse(list.stdout) as unknown[]).length).toBe(2);
  });

  it('reports bad input in one line with a hint and a non-zero exit', async () => {
    const noTable = await backstop(['snapshot', '--db', db.url, '--storage', path.join(folder, 'x'), '--table', 'public.nope']);
    expect(noTable.code).not.toBe(0);
    expect(noTable.stderr).toMatch(/^error: .*nope.*\nhint: /);
    const badUrl = await backstop(['snapshots', 'list', '--storage', 's3://Bad_Bucket']);
    expect(badUrl.code).toBe(2);
    expect(badUrl.stderr).toMatch(/^error: .*bucket.*\nhint: /);
    const badKeep = await backstop(['prune', '--storage', path.join(folder, 'x'), '--keep', '0']);
    expect(badKeep.code).toBe(2);
    const noPolicy = await backstop(['prune', '--storage', path.join(folder, 'x')]);
    expect(noPolicy.code).toBe(2);
    expect(noPolicy.stderr).toMatch(/^error: .*\nhint: .*--keep-last 5 --keep-hourly 24 --keep-daily 7/);
    const both = await backstop(['prune', '--storage', path.join(folder, 'x'), '--keep', '2', '--keep-daily', '7']);
    expect(both.code).toBe(2);
    const missing = await backstop(['verify', '--storage', path.join(folder, 'x'), '--snapshot-id', 'abcdefabcdef']);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/no snapshot abcdefabcdef/);
  });
});
