/**
 * Fidelity through a real S3 HTTP server (s3rver in-process, or MinIO with Docker): the
 * type-torture table and an FK-linked recovery group, captured to S3 and restored by snapshot id.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDatabase } from '../../src/db/connection.js';
import { restoreGroup, restoreSnapshot } from '../../src/restore/restore.js';
import { captureGroup, captureTable } from '../../src/snapshot/capture.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/storage.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestS3, type TestS3 } from '../support/s3.js';
import { TORTURE_TABLE, createTypeTortureTable, tableFingerprint } from '../support/type-torture.js';

describe('restore from S3', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let s3: TestS3;
  let storage: Storage;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    s3 = await startTestS3();
    storage = openStorage(s3.url('fidelity/run'));
  });
  afterAll(async () => {
    await db?.drop();
    await s3?.stop();
  });

  it('restores the type-torture table with identical rows', async () => {
    const torture = await createTypeTortureTable(client);
    const manifest = await captureTable({ database: resolveDatabase(db.url), storage, table: torture.table });
    const into = { schema: TORTURE_TABLE.schema, table: 'from S3 ✓' };
    const result = await restoreSnapshot({ client, storage, snapshotId: manifest.snapshot_id, table: torture.table, into });
    expect(result.tables[0]!.rows).toBe(torture.rowCount);
    expect(await tableFingerprint(client, into)).toEqual(await tableFingerprint(client, torture.table));
  });

  it('restores an FK-linked recovery group consistently', async () => {
    await client.query(`
      CREATE TABLE teams (id int PRIMARY KEY, name text NOT NULL);
      CREATE TABLE players (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, team int NOT NULL REFERENCES teams(id) ON DELETE CASCADE, name text);
      INSERT INTO teams SELECT g, 'team ' || g FROM generate_series(1, 50) g;
      INSERT INTO players (team, name) SELECT 1 + g % 50, 'player ' || g FROM generate_series(1, 5000) g;
    `);
    const manifests = await captureGroup({
      database: resolveDatabase(db.url),
      storage,
      group: 'league',
      tables: [{ table: { schema: 'public', table: 'players' } }, { table: { schema: 'public', table: 'teams' } }],
    });
    const result = await restoreGroup({ client, storage, snapshotId: manifests[0]!.snapshot_id, intoSchema: 'restored' });
    expect(result.tables.map((t) => `${t.target.schema}.${t.target.table}`)).toEqual(['restored.teams', 'restored.players']);
    for (const table of ['teams', 'players']) {
      expect(await tableFingerprint(client, { schema: 'restored', table })).toEqual(await tableFingerprint(client, { schema: 'public', table }));
    }
    const { rows } = await client.query(`SELECT count(*)::int AS orphans FROM restored.players p LEFT JOIN restored.teams t ON t.id = p.team WHERE t.id IS NULL`);
    expect(rows[0].orphans).toBe(0);
    await expect(client.query(`INSERT INTO restored.players (team) VALUES (999)`)).rejects.toThrow(/foreign key/);
  });
});
