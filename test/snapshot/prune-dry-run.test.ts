/** `prune --dry-run` removes nothing and says "would" in its log lines, not "removed". */
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { resolveDatabase } from '../../src/db/connection.js';
import { createLogger } from '../../src/log/logger.js';
import { captureTable } from '../../src/snapshot/capture.js';
import { pruneWithReport } from '../../src/snapshot/prune.js';
import { LocalStorage } from '../../src/storage/local.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

let db: TestDatabase;
let folder: string;

beforeAll(async () => {
  db = await createTestDatabase();
  const client = await db.client();
  await client.query(`CREATE TABLE dry (id int); INSERT INTO dry VALUES (1), (2)`);
  folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-prune-dry-'));
});

afterAll(async () => {
  await db?.drop();
  if (folder) await rm(folder, { recursive: true, force: true });
});

it('logs what it would remove and removes nothing', async () => {
  const storage = new LocalStorage(folder);
  const manifests = [];
  for (let i = 0; i < 3; i += 1) manifests.push(await captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'dry' } }));
  const orphan = path.join(storage.root, 'snapshots', 'public.dry', '20200101T000000000Z_aaaaaaaaaaaa.parquet');
  await mkdir(path.dirname(orphan), { recursive: true });
  await writeFile(orphan, 'partial');
  const longAgo = new Date(Date.now() - 2 * 3600_000);
  await utimes(orphan, longAgo, longAgo);

  const stream = new PassThrough();
  let output = '';
  stream.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const report = await pruneWithReport(storage, { keep: 1, dryRun: true, logger: createLogger({ stream, json: true, level: 'info' }) });
  expect(report.removed).toHaveLength(2);
  expect(report.orphans).toHaveLength(1);

  const messages = output.trim().split('\n').map((line) => (JSON.parse(line) as { msg: string }).msg);
  expect(messages).toHaveLength(3);
  for (const message of messages) expect(message).toMatch(/would be (pruned|removed) \(dry run\)/);
  for (const manifest of manifests) expect(await storage.head(manifest.parquet_path)).toBeDefined();
  expect(await storage.head('snapshots/public.dry/20200101T000000000Z_aaaaaaaaaaaa.parquet')).toBeDefined();
});
