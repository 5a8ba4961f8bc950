/**
 * Undo from psql against a real agent (auto mode, snapshots in a local folder): a statement
 * approved and run, then `SELECT backstop.undo(id)` brings back what it destroyed, with the
 * content hash of the rows equal to the before-image's, or puts the image beside the table
 * when putting it back would overwrite rows written since. Failures leave nothing behind.
 */
import { execFile } from 'node:child_process';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contentHash } from '../../src/snapshot/content-hash.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { BACKSTOP_BIN, startAgent, tempDir, waitUntil, type AgentProcess } from '../support/agent-process.js';
import { runApproved as runApprovedIn, settle } from './requests.js';

/** The built CLI (bin/backstop.js), as an operator runs it. */
function backstopCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BACKSTOP_BIN, ...args], { env: { ...process.env, BACKSTOP_LOG_LEVEL: 'warn' } },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }));
  });
}

describe('backstop.undo', () => {
  let db: TestDatabase;
  let folder: string;
  let admin: pg.Client;
  let agent: AgentProcess | undefined;

  beforeAll(async () => {
    folder = await tempDir('backstop-undo-');
    db = await createTestDatabase();
    admin = await db.client();
    agent = await startAgent({ db: db.url, storage: folder, args: ['--interval', '1h'] });
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await db?.drop();
    if (folder) await rm(folder, { recursive: true, force: true });
  });

  const runApproved = (statement: string) => runApprovedIn(() => db.client(), admin, statement);

  /** Rows of the TRUNCATE image are exported by the agent after the TRUNCATE commits. */
  async function waitForImage(requestId: string): Promise<void> {
    await waitUntil(async () => {
      const { rows } = await admin.query(`SELECT 1 FROM backstop.snapshots WHERE request_id = $1::bigint AND verified`, [requestId]);
      return rows.length > 0 ? true : undefined;
    }, 60_000, `the before-image of request ${requestId}`);
  }

  async function notices<T>(client: pg.Client, work: () => Promise<T>): Promise<{ result: T; notices: string[] }> {
    const seen: string[] = [];
    const listener = (notice: { message?: string }) => seen.push(notice.message ?? "");
    client.on('notice', listener);
    try {
      return { result: await work(), notices: seen };
    } finally {
      client.off('notice', listener);
    }
  }

  async function stagingSchemas(): Promise<string[]> {
    const { rows } = await admin.query<{ nspname: string }>(`SELECT nspname FROM pg_namespace WHERE nspname ~ '^backstop_restore_'`);
    return rows.map((row) => row.nspname);
  }

  it('DROP TABLE: the table comes back under its own name with identical rows, identity and indexes', async () => {
    await admin.query(`
      CREATE TABLE "Ünï People" (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "Full Name" text NOT NULL, born date);
      CREATE INDEX "people by name" ON "Ünï People" (lower("Full Name"));
      INSERT INTO "Ünï People" ("Full Name", born) SELECT 'person ' || i, date '1990-01-01' + i FROM generate_series(1, 3000) AS i;
    `);
    const before = await contentHash(admin, { schema: 'public', table: 'Ünï People' });
    const requestId = await runApproved(`DROP TABLE "Ünï People"`);
    const { result, notices: seen } = await notices(admin, () => admin.query<{ undo: string }>('SELECT backstop.undo($1::bigint) AS undo', [requestId]));
    expect(result.rows[0]!.undo).toMatch(/done: table public\."Ünï People" restored/);
    expect(seen.some((line) => /3000 rows loaded and verified/.test(line))).toBe(true);
    expect(await contentHash(admin, { schema: 'public', table: 'Ünï People' })).toEqual(before);
    const { rows: [identity] } = await admin.query(`SELECT attidentity FROM pg_attribute WHERE attrelid = '"Ünï People"'::regclass AND attname = 'id'`);
    expect(identity.attidentity).toBe('a');
    const { rows: [next] } = await admin.query(`INSERT INTO "Ünï People" ("Full Name") VALUES ('new') RETURNING id`);
    expect(next.id).toBe(3001);
    const { rows: indexes } = await admin.query(`SELECT indexname FROM pg_indexes WHERE tablename = 'Ünï People' ORDER BY 1`);
    expect(indexes.map((r) => r.indexname)).toContain('people by name');
    const { rows: [guard] } = await admin.query(`SELECT tgenabled FROM pg_trigger WHERE tgrelid = '"Ünï People"'::regclass AND tgname = 'backstop_truncate_guard'`);
    expect(guard.tgenabled).toBe('A');
    const { rows: [logged] } = await admin.query(`SELECT status, rows, verified_by, requested_by FROM backstop.restores WHERE request_id = $1::bigint`, [requestId]);
    expect(logged).toMatchObject({ status: 'done', rows: '3000', requested_by: 'postgres' });
    expect(await stagingSchemas()).toEqual([]);
  });

  it('refuses to undo the same request twice', async () => {
    await admin.query(`CREATE TABLE twice (id int PRIMARY KEY); INSERT INTO twice VALUES (1)`);
    const requestId = await runApproved('DROP TABLE twice');
    await admin.query('SELECT backstop.undo($1::bigint)', [requestId]);
    const again = await settle(admin.query('SELECT backstop.undo($1::bigint)', [requestId]));
    expect(again.ok).toBe(false);
    if (!again.ok) {
      expect(again.error.code).toBe('BS006');
      expect(again.error.message).toMatch(/already undone/);
    }
  });

  it('a name taken since the DROP: the table comes back beside it, and says so', async () => {
    await admin.query(`CREATE TABLE reused (id int PRIMARY KEY, v text); INSERT INTO reused VALUES (1, 'old')`);
    const requestId = await runApproved('DROP TABLE reused');
    await admin.query(`CREATE TABLE reused (id int PRIMARY KEY, v text); INSERT INTO reused VALUES (2, 'new')`);
    const { rows: [undo] } = await admin.query('SELECT backstop.undo($1::bigint) AS undo', [requestId]);
    expect(undo.undo).toMatch(/public\.reused_undo\d+ restored.* beside the existing public\.reused/);
    expect((await admin.query('SELECT v FROM reused')).rows).toEqual([{ v: 'new' }]);
    const name = /public\.(reused_undo\d+)/.exec(undo.undo)![1]!;
    expect((await admin.query(`SELECT v FROM ${name}`)).rows).toEqual([{ v: 'old' }]);
  });

  it('TRUNCATE: the rows come back into the still-empty table', async () => {
    await admin.query(`CREATE TABLE ledger (id int PRIMARY KEY, amount numeric(12,2), note text);
                       INSERT INTO ledger SELECT i, i * 1.5, 'n' || i FROM generate_series(1, 500) AS i`);
    const before = await contentHash(admin, { schema: 'public', table: 'ledger' });
    const requestId = await runApproved('TRUNCATE ledger');
    await waitForImage(requestId);
    const { rows: [undo] } = await admin.query('SELECT backstop.undo($1::bigint) AS undo', [requestId]);
    expect(undo.undo).toMatch(/500 rows put back into public\.ledger/);
    expect(await contentHash(admin, { schema: 'public', table: 'ledger' })).toEqual(before);
  });

  it('TRUNCATE … CASCADE: both sides of the foreign key come back, referenced rows first', async () => {
    await admin.query(`CREATE TABLE customers (id int PRIMARY KEY, name text);
                       CREATE TABLE invoices (id int PRIMARY KEY, customer int NOT NULL REFERENCES customers (id), total numeric);
                       INSERT INTO customers SELECT i, 'c' || i FROM generate_series(1, 100) AS i;
                       INSERT INTO invoices SELECT i, 1 + i % 100, i * 3 FROM generate_series(1, 300) AS i`);
    const customers = await contentHash(admin, { schema: 'public', table: 'customers' });
    const invoices = await contentHash(admin, { schema: 'public', table: 'invoices' });
    const requestId = await runApproved('TRUNCATE customers CASCADE');
    await waitUntil(async () => {
      const { rows } = await admin.query(`SELECT count(*)::int AS n FROM backstop.snapshots WHERE request_id = $1::bigint AND verified`, [requestId]);
      return rows[0].n === 2 ? true : undefined;
    }, 60_000, 'both TRUNCATE images');
    const { rows: [undo] } = await admin.query('SELECT backstop.undo($1::bigint) AS undo', [requestId]);
    expect(undo.undo).toMatch(/100 rows put back into public\.customers; 300 rows put back into public\.invoices/);
    expect(await contentHash(admin, { schema: 'public', table: 'customers' })).toEqual(customers);
    expect(await contentHash(admin, { schema: 'public', table: 'invoices' })).toEqual(invoices);
  });

  it('two sessions undoing the same request at once: one undoes it, the other is refused', async () => {
    await admin.query(`CREATE TABLE raced (id int PRIMARY KEY); INSERT INTO raced SELECT generate_series(1, 1000)`);
    const requestId = await runApproved('DROP TABLE raced');
    const [a, b] = [await db.client(), await db.client()];
    const outcomes = await Promise.all([a, b].map((client) => settle(client.query('SELECT backstop.undo($1::bigint)', [requestId]))));
    expect(outcomes.filter((outcome) => outcome.ok)).toHaveLength(1);
    const refused = outcomes.find((outcome) => !outcome.ok);
    if (refused && !refused.ok) {
      expect(refused.error.code).toBe('BS006');
      expect(refused.error.message).toMatch(/already (undone|being undone)/);
    }
    expect((await admin.query('SELECT count(*)::int AS n FROM raced')).rows[0].n).toBe(1000);
    expect((await admin.query(`SELECT count(*)::int AS n FROM pg_class WHERE relname LIKE 'raced_undo%'`)).rows[0].n).toBe(0);
  });

  it('TRUNCATE: a table written since keeps its rows; the image goes beside it with copy-back SQL', async () => {
    await admin.query(`CREATE TABLE busy (id int PRIMARY KEY, v text); INSERT INTO busy SELECT i, 'old' FROM generate_series(1, 50) AS i`);
    const requestId = await runApproved('TRUNCATE busy');
    await waitForImage(requestId);
    await admin.query(`INSERT INTO busy VALUES (1000, 'new')`);
    const { rows: [undo] } = await admin.query('SELECT backstop.undo($1::bigint) AS undo', [requestId]);
    expect(undo.undo).toMatch(new RegExp(`public\\.busy is not empty.*public\\.busy_before_${requestId}.*INSERT INTO public\\.busy SELECT`));
    expect((await admin.query('SELECT id, v FROM busy')).rows).toEqual([{ id: 1000, v: 'new' }]);
    expect((await admin.query(`SELECT count(*)::int AS n FROM busy_before_${requestId}`)).rows[0].n).toBe(50);
  });

  it('DROP COLUMN: the column comes back with its values, matched by primary key; rows added since get none', async () => {
    await admin.query(`CREATE TABLE accounts (id int PRIMARY KEY, name text, "Balance €" numeric(10,2) NOT NULL DEFAULT 0);
                       INSERT INTO accounts SELECT i, 'a' || i, i * 10.25 FROM generate_series(1, 200) AS i`);
    const before = (await admin.query(`SELECT id, "Balance €" AS b FROM accounts ORDER BY id`)).rows;
    const requestId = await runApproved('ALTER TABLE accounts DROP COLUMN "Balance €"');
    await admin.query(`UPDATE accounts SET name = 'renamed' WHERE id = 7`);
    const { rows: [undo] } = await admin.query('SELECT backstop.undo($1::bigint) AS undo', [requestId]);
    expect(undo.undo).toMatch(/column "Balance €" put back into public\.accounts: 200 rows matched by id/);
    expect((await admin.query(`SELECT id, "Balance €" AS b FROM accounts ORDER BY id`)).rows).toEqual(before);
    const { rows: [column] } = await admin.query(`SELECT attnotnull, pg_get_expr(d.adbin, d.adrelid) AS def FROM pg_attribute a
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum WHERE a.attrelid = 'accounts'::regclass AND a.attname = 'Balance €'`);
    expect(column).toEqual({ attnotnull: true, def: '0' });
    expect((await admin.query(`SELECT name FROM accounts WHERE id = 7`)).rows[0].name).toBe('renamed');
  });

  it('DROP COLUMN of a table without a key: refused with a hint, the image restored beside the table', async () => {
    await admin.query(`CREATE TABLE events (at timestamptz, what text, detail text);
                       INSERT INTO events SELECT now(), 'e' || i, 'd' || i FROM generate_series(1, 20) AS i`);
    const requestId = await runApproved('ALTER TABLE events DROP COLUMN detail');
    const { result, notices: seen } = await notices(admin, () => admin.query('SELECT backstop.undo($1::bigint) AS undo', [requestId]));
    expect(result.rows[0].undo).toMatch(new RegExp(`column detail not put back into public\\.events \\(no key to match rows by\\): public\\.events_before_${requestId}`));
    expect(seen.some((line) => /no primary key or replica identity/.test(line))).toBe(true);
    expect((await admin.query(`SELECT count(*)::int AS n FROM events_before_${requestId} WHERE detail IS NOT NULL`)).rows[0].n).toBe(20);
    expect((await admin.query(`SELECT count(*)::int AS n FROM pg_attribute WHERE attrelid = 'events'::regclass AND attname = 'detail' AND NOT attisdropped`)).rows[0].n).toBe(0);
  });

  it('ALTER COLUMN TYPE: the previous type and the exact values come back', async () => {
    await admin.query(`CREATE TABLE prices (id int PRIMARY KEY, amount numeric(10,3) DEFAULT 1.5);
                       INSERT INTO prices SELECT i, i + 0.125 FROM generate_series(1, 100) AS i`);
    const before = await contentHash(admin, { schema: 'public', table: 'prices' });
    const requestId = await runApproved('ALTER TABLE prices ALTER COLUMN amount TYPE int');
    expect((await admin.query(`SELECT amount FROM prices WHERE id = 1`)).rows[0].amount).toBe(1);
    const { rows: [undo] } = await admin.query('SELECT backstop.undo($1::bigint) AS undo', [requestId]);
    expect(undo.undo).toMatch(/column amount of public\.prices changed back to numeric\(10,3\): 100 rows/);
    expect(await contentHash(admin, { schema: 'public', table: 'prices' })).toEqual(before);
  });

  it('ALTER COLUMN TYPE with rows written since: nothing overwritten, the image beside the table', async () => {
    await admin.query(`CREATE TABLE rates (id int PRIMARY KEY, r numeric(6,2)); INSERT INTO rates SELECT i, i / 4.0 FROM generate_series(1, 10) AS i`);
    const requestId = await runApproved('ALTER TABLE rates ALTER COLUMN r TYPE int');
    await admin.query(`UPDATE rates SET r = 99 WHERE id = 3`);
    const { rows: [undo] } = await admin.query('SELECT backstop.undo($1::bigint) AS undo', [requestId]);
    expect(undo.undo).toMatch(new RegExp(`column r of public\\.rates not changed back .*rates_before_${requestId}`));
    expect((await admin.query(`SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute WHERE attrelid = 'rates'::regclass AND attname = 'r'`)).rows[0].t).toBe('integer');
    expect((await admin.query(`SELECT r FROM rates WHERE id = 3`)).rows[0].r).toBe(99);
  });

  it('a plain role is refused; an approver may undo only what it could do by hand', async () => {
    // Roles are cluster-wide: named after this test's database.
    const plainRole = `${db.name}_plain`;
    const approverRole = `${db.name}_approver`;
    const ownerRole = `${db.name}_owner`;
    await admin.query(`CREATE ROLE ${plainRole} LOGIN; CREATE ROLE ${approverRole} LOGIN IN ROLE backstop_approver; CREATE ROLE ${ownerRole};
                       GRANT CREATE ON SCHEMA public TO ${approverRole}, ${ownerRole};
                       CREATE TABLE guarded_t (id int PRIMARY KEY); INSERT INTO guarded_t VALUES (1);
                       ALTER TABLE guarded_t OWNER TO ${ownerRole}`);
    const requestId = await runApproved('DROP TABLE guarded_t');
    const plain = new pg.Client({ connectionString: db.urlAs(plainRole) });
    await plain.connect();
    try {
      const refused = await settle(plain.query('SELECT backstop.undo($1::bigint)', [requestId]));
      expect(refused.ok).toBe(false);
      if (!refused.ok) {
        expect(refused.error.code).toBe('BS006');
        expect(refused.error.message).toMatch(new RegExp(`role ${plainRole} may not undo`));
        expect(refused.error.hint).toMatch(/backstop_approver/);
      }
    } finally {
      await plain.end();
    }
    expect((await admin.query(`SELECT to_regclass('guarded_t') AS t`)).rows[0].t).toBeNull();
    const approver = new pg.Client({ connectionString: db.urlAs(approverRole) });
    await approver.connect();
    try {
      // It could not create a table owned by that role by hand: neither may its undo.
      const notByHand = await settle(approver.query('SELECT backstop.undo($1::bigint)', [requestId]));
      expect(notByHand.ok).toBe(false);
      if (!notByHand.ok) {
        expect(notByHand.error.code).toBe('BS006');
        expect(notByHand.error.message).toMatch(new RegExp(`may not create table public\\.guarded_t owned by ${ownerRole}`));
        expect(notByHand.error.hint).toMatch(/nothing was restored/);
      }
      expect((await admin.query(`SELECT to_regclass('guarded_t') AS t`)).rows[0].t).toBeNull();
      await admin.query(`GRANT ${ownerRole} TO ${approverRole}`);
      const { rows: [undo] } = await approver.query('SELECT backstop.undo($1::bigint) AS undo', [requestId]);
      expect(undo.undo).toMatch(/table public\.guarded_t restored/);
      const { rows: [owner] } = await admin.query(`SELECT pg_get_userbyid(relowner) AS owner FROM pg_class WHERE oid = 'guarded_t'::regclass`);
      expect(owner.owner).toBe(ownerRole);
    } finally {
      await approver.end();
    }
  });

  it('an undo that fails midway (its data file gone from storage) leaves nothing behind and says why', async () => {
    await admin.query(`CREATE TABLE fragile (id int PRIMARY KEY, v text); INSERT INTO fragile SELECT i, 'v' FROM generate_series(1, 100) AS i`);
    const requestId = await runApproved('DROP TABLE fragile');
    for (const entry of await readdir(folder, { recursive: true })) {
      if (entry.includes('fragile') && entry.endsWith('.parquet')) await rm(path.join(folder, entry));
    }
    const failed = await settle(admin.query('SELECT backstop.undo($1::bigint)', [requestId]));
    expect(failed.ok).toBe(false);
    if (!failed.ok) expect(failed.error.message).toMatch(/Backstop undo \d+ failed: /);
    expect((await admin.query(`SELECT to_regclass('fragile') AS t`)).rows[0].t).toBeNull();
    const { rows: [logged] } = await admin.query(`SELECT status, error FROM backstop.restores WHERE request_id = $1::bigint ORDER BY id DESC LIMIT 1`, [requestId]);
    expect(logged.status).toBe('failed');
    expect(logged.error).toMatch(/fragile/);
    await waitUntil(async () => ((await stagingSchemas()).length === 0 ? true : undefined), 60_000, 'the staging schema to be discarded');
  });

  it('an undo rolled back by its caller leaves nothing, and its staging is discarded', async () => {
    await admin.query(`CREATE TABLE rolled (id int PRIMARY KEY); INSERT INTO rolled VALUES (1), (2)`);
    const requestId = await runApproved('DROP TABLE rolled');
    const session = await db.client();
    try {
      await session.query('BEGIN');
      await session.query('SELECT backstop.undo($1::bigint)', [requestId]);
      await session.query('ROLLBACK');
    } finally {
      await session.end();
    }
    expect((await admin.query(`SELECT to_regclass('rolled') AS t`)).rows[0].t).toBeNull();
    await admin.query(`NOTIFY backstop_restores`);
    await waitUntil(async () => ((await stagingSchemas()).length === 0 ? true : undefined), 60_000, 'the staging schema to be discarded');
    const { rows: [again] } = await admin.query('SELECT backstop.undo($1::bigint) AS undo', [requestId]);
    expect(again.undo).toMatch(/table public\.rolled restored/);
  });

  it('backstop undo 42 (the CLI) runs the same undo and prints the same summary and notices', async () => {
    await admin.query(`CREATE TABLE by_cli (id int PRIMARY KEY, v text); INSERT INTO by_cli SELECT i, 'v' || i FROM generate_series(1, 1200) AS i`);
    const before = await contentHash(admin, { schema: 'public', table: 'by_cli' });
    const requestId = await runApproved('DROP TABLE by_cli');
    const run = await backstopCli(['undo', requestId, '--db', db.url]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^Backstop undo \\d+ done: table public\\.by_cli restored`));
    expect(run.stderr).toMatch(/NOTICE: {2}Backstop undo \d+: 1200 rows loaded and verified/);
    expect(await contentHash(admin, { schema: 'public', table: 'by_cli' })).toEqual(before);

    const again = await backstopCli(['undo', requestId, '--db', db.url]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(new RegExp(`^error: Backstop cannot undo request ${requestId}: request ${requestId} is already undone by undo \\d+\n`));
    expect(again.stderr).toMatch(/\nhint: .*backstop\.restores/);

    const bad = await backstopCli(['undo', 'forty-two', '--db', db.url]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: "forty-two" is not a request id\nhint: /);
  });

  it('backstop.restore(snapshot, name) restores any verified snapshot from psql, beside what exists', async () => {
    await admin.query(`CREATE TABLE "Price List" (id int PRIMARY KEY, price numeric(8,2)); INSERT INTO "Price List" SELECT i, i * 2.5 FROM generate_series(1, 400) AS i`);
    const before = await contentHash(admin, { schema: 'public', table: 'Price List' });
    const requestId = await runApproved('DROP TABLE "Price List"');
    const { rows: [snapshot] } = await admin.query(`SELECT snapshot_ids[1] AS id FROM backstop.requests WHERE id = $1::bigint`, [requestId]);
    // The name is read as SQL reads it: a name with spaces is double-quoted.
    const unquoted = await settle(admin.query(`SELECT backstop.restore($1, 'Price List (copy)')`, [snapshot.id]));
    expect(unquoted.ok).toBe(false);
    if (!unquoted.ok) expect(unquoted.error.code).toBe('BS006');
    const { rows: [restored] } = await admin.query(`SELECT backstop.restore($1, '"Price List (copy)"') AS summary`, [snapshot.id]);
    expect(restored.summary).toMatch(/^Backstop restore \d+ done: table public\."Price List \(copy\)" restored/);
    expect(await contentHash(admin, { schema: 'public', table: 'Price List (copy)' })).toEqual(before);
    // Under a name that exists: beside it, never over it.
    const { rows: [beside] } = await admin.query(`SELECT backstop.restore($1, "into" => '"Price List (copy)"') AS summary`, [snapshot.id]);
    expect(beside.summary).toMatch(/"Price List \(copy\)_undo\d+" restored.* beside the existing public\."Price List \(copy\)"/);
    const missing = await settle(admin.query(`SELECT backstop.restore('no-such-snapshot')`));
    expect(missing.ok).toBe(false);
    if (!missing.ok) {
      expect(missing.error.code).toBe('BS006');
      expect(missing.error.hint).toMatch(/backstop\.snapshots/);
    }
    const { rows: logged } = await admin.query(`SELECT kind, snapshot_id, status, rows FROM backstop.restores WHERE snapshot_id = $1 ORDER BY id`, [snapshot.id]);
    expect(logged).toEqual([
      { kind: 'restore', snapshot_id: snapshot.id, status: 'done', rows: '400' },
      { kind: 'restore', snapshot_id: snapshot.id, status: 'done', rows: '400' },
    ]);
  });
});
