/**
 * Undoing a drop: a table restored under its own name brings back what `DROP TABLE … CASCADE`
 * and `DROP SCHEMA … CASCADE` took with it — views and materialized views built on it, other
 * tables' foreign keys to it, its schema and the types its columns need — exactly as pg_dump
 * showed them before the drop (PostgreSQL 15, whose pg_dump is installed here), or as the catalog
 * showed them (both majors). Restored under another name, it gets none of that.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDatabase } from '../../src/db/connection.js';
import { quoteIdent, quoteQualified, type QualifiedName } from '../../src/db/identifiers.js';
import { dependentCreateSql, typeCreateSql } from '../../src/restore/dependents-sql.js';
import { restoreItems } from '../../src/restore/restore.js';
import { captureTable } from '../../src/snapshot/capture.js';
import type { Manifest } from '../../src/snapshot/manifest.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/storage.js';
import { createTestDatabase, dropServerRoles, serverInfo, type TestDatabase } from '../support/database.js';
import { tableFingerprint } from '../support/type-torture.js';
import { withoutGuard } from './guard.js';

const PG_DUMP_15 = '/usr/lib/postgresql/15/bin/pg_dump';
const run = promisify(execFile);

describe('restoring a dropped table undoes the drop', () => {
  let db: TestDatabase;
  let client: pg.Client;
  let folder: string;
  let storage: Storage;
  const suffix = Math.random().toString(16).slice(2, 8);
  const owner = `dep_owner_${suffix}`;
  const reader = `dep "reader" ✓ ${suffix}`;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-dependents-'));
    storage = openStorage(folder);
    await client.query(`CREATE ROLE ${quoteIdent(owner)}; CREATE ROLE ${quoteIdent(reader)}`);
  });
  afterAll(async () => {
    await db?.drop();
    if (folder) await rm(folder, { recursive: true, force: true });
    await dropServerRoles([owner, reader]);
  });

  const capture = (table: QualifiedName) => captureTable({ database: resolveDatabase(db.url), storage, table });
  const canDump = () => serverInfo().major === 15 && existsSync(PG_DUMP_15);

  /** pg_dump -s of the given relations (-t) or schemas (-n), as lines. */
  async function dump(option: '-t' | '-n', names: Array<QualifiedName | string>): Promise<string[]> {
    const patterns = names.flatMap((name) => [option, typeof name === 'string' ? quoteIdent(name) : quoteQualified(name)]);
    // A fixed restrict key: pg_dump otherwise picks a random one per run for its \restrict line.
    const { stdout } = await run(PG_DUMP_15, ['-s', '--restrict-key=backstop', ...patterns, '-d', db.url], { maxBuffer: 16 * 1024 * 1024 });
    return stdout.split('\n');
  }

  /** What the catalog says about relations, printed fully qualified: compared before and after on every major. */
  async function relationFacts(names: QualifiedName[]): Promise<unknown[]> {
    await client.query(`SELECT set_config('search_path', '', false)`);
    try {
      const { rows } = await client.query(
        `SELECT n.nspname, c.relname, c.relkind, c.relispopulated, c.reloptions, pg_get_userbyid(c.relowner) AS owner, c.relacl::text AS acl,
                obj_description(c.oid, 'pg_class') AS comment,
                CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END AS definition,
                ARRAY(SELECT concat_ws(' | ', a.attname, format_type(a.atttypid, a.atttypmod), col_description(c.oid, a.attnum),
                                       pg_get_expr(ad.adbin, ad.adrelid), a.attacl::text)
                        FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS columns,
                ARRAY(SELECT concat_ws(' | ', pg_get_indexdef(i.indexrelid), i.indisclustered, obj_description(i.indexrelid, 'pg_class'))
                        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = c.oid ORDER BY ic.relname) AS indexes,
                ARRAY(SELECT concat_ws(' | ', con.conname, pg_get_constraintdef(con.oid), obj_description(con.oid, 'pg_constraint'))
                        FROM pg_constraint con WHERE con.conrelid = c.oid ORDER BY con.conname) AS constraints,
                ARRAY(SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal ORDER BY t.tgname) AS triggers
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
          ORDER BY 1, 2`,
        [names.map((n) => n.schema), names.map((n) => n.table)],
      );
      expect(rows).toHaveLength(names.length);
      return rows;
    } finally {
      await client.query('RESET search_path');
    }
  }

  /** The schema and its types, as the catalog says. */
  async function schemaFacts(schema: string): Promise<unknown> {
    await client.query(`SELECT set_config('search_path', '', false)`);
    try {
      const { rows } = await client.query(
        `SELECT pg_get_userbyid(n.nspowner) AS owner, n.nspacl::text AS acl, obj_description(n.oid, 'pg_namespace') AS comment,
                ARRAY(SELECT concat_ws(' | ', t.typname, t.typtype, pg_get_userbyid(t.typowner), t.typacl::text, obj_description(t.oid, 'pg_type'),
                                       format_type(t.typbasetype, t.typtypmod), t.typnotnull, pg_get_expr(t.typdefaultbin, 0),
                                       (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
                                       (SELECT string_agg(con.conname || ' ' || pg_get_constraintdef(con.oid), ',' ORDER BY con.conname)
                                          FROM pg_constraint con WHERE con.contypid = t.oid),
                                       (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attcollation::regcollation::text, ',' ORDER BY a.attnum)
                                          FROM pg_attribute a JOIN pg_class r ON r.oid = a.attrelid AND r.relkind = 'c' WHERE a.attrelid = t.typrelid))
                        FROM pg_type t LEFT JOIN pg_class tc ON tc.oid = t.typrelid
                       WHERE t.typnamespace = n.oid AND (tc.oid IS NULL OR tc.relkind = 'c') ORDER BY t.typname) AS types
           FROM pg_namespace n WHERE n.nspname = $1`,
        [schema],
      );
      return rows[0];
    } finally {
      await client.query('RESET search_path');
    }
  }

  describe('DROP TABLE … CASCADE', () => {
    const crm = 'crm "Kunden" ✓';
    const people = { schema: crm, table: 'peöple' };
    const orders = { schema: crm, table: 'orders' };
    const peopleView = { schema: crm, table: 'people "v"' };
    const adults = { schema: 'reports ✓', table: 'adults' };
    const byAge = { schema: 'reports ✓', table: 'Bÿ age' };
    const unpopulated = { schema: 'reports ✓', table: 'not yet' };
    const joined = { schema: 'reports ✓', table: 'people with orders' };
    const relations = [people, orders, peopleView, adults, byAge, unpopulated, joined];

    beforeAll(async () => {
      const [p, o, v] = [quoteQualified(people), quoteQualified(orders), quoteQualified(peopleView)];
      await client.query(`
        CREATE SCHEMA ${quoteIdent(crm)};
        CREATE SCHEMA ${quoteIdent(adults.schema)};
        CREATE TABLE ${p} (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "Name" text NOT NULL, age int CHECK (age >= 0));
        CREATE INDEX "peöple name" ON ${p} ("Name");
        INSERT INTO ${p} ("Name", age) SELECT 'person ' || g, g % 90 FROM generate_series(1, 200) g;
        CREATE TABLE ${o} (id int PRIMARY KEY, person int REFERENCES ${p}(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED, amount numeric);
        COMMENT ON CONSTRAINT orders_person_fkey ON ${o} IS 'who ordered';
        INSERT INTO ${o} SELECT g, g, g * 1.5 FROM generate_series(1, 50) g;

        CREATE VIEW ${v} WITH (security_barrier) AS SELECT id, upper("Name") AS "Shout", age FROM ${p} WHERE age > 1;
        ALTER VIEW ${v} ALTER COLUMN "Shout" SET DEFAULT 'x';
        ALTER VIEW ${v} OWNER TO ${quoteIdent(owner)};
        GRANT SELECT ON ${v} TO ${quoteIdent(reader)};
        GRANT UPDATE ("Shout") ON ${v} TO ${quoteIdent(reader)};
        COMMENT ON VIEW ${v} IS 'people, loudly';
        COMMENT ON COLUMN ${v}."Shout" IS 'it''s loud';
        CREATE FUNCTION ${quoteIdent(adults.schema)}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
        CREATE TRIGGER "no insert" INSTEAD OF INSERT ON ${v} FOR EACH ROW EXECUTE FUNCTION ${quoteIdent(adults.schema)}.refuse();

        CREATE VIEW ${quoteQualified(adults)} WITH (security_invoker = true) AS SELECT * FROM ${v} WHERE age >= 18 WITH CASCADED CHECK OPTION;
        CREATE MATERIALIZED VIEW ${quoteQualified(byAge)} WITH (fillfactor = 70) AS SELECT age, count(*) AS n FROM ${p} GROUP BY age;
        CREATE UNIQUE INDEX "bÿ age key" ON ${quoteQualified(byAge)} (age);
        CLUSTER ${quoteQualified(byAge)} USING "bÿ age key";
        COMMENT ON MATERIALIZED VIEW ${quoteQualified(byAge)} IS 'counts';
        COMMENT ON INDEX ${quoteIdent(byAge.schema)}."bÿ age key" IS 'one row per age';
        REVOKE ALL ON ${quoteQualified(byAge)} FROM CURRENT_USER;
        GRANT SELECT ON ${quoteQualified(byAge)} TO CURRENT_USER, PUBLIC;
        CREATE MATERIALIZED VIEW ${quoteQualified(unpopulated)} AS SELECT id FROM ${p} WITH NO DATA;
        CREATE VIEW ${quoteQualified(joined)} AS SELECT p.id, o.amount FROM ${p} p JOIN ${o} o ON o.person = p.id;
      `);
    });

    it('brings back the views, materialized views and foreign keys the CASCADE took, as pg_dump showed them', async () => {
      const dumpedBefore = canDump() ? await dump('-t', relations) : [];
      const factsBefore = await relationFacts(relations);
      const rowsBefore = await tableFingerprint(client, people);
      const manifest = await capture(people);

      await withoutGuard(client, () => client.query(`DROP TABLE ${quoteQualified(people)} CASCADE`));
      const { rows: gone } = await client.query(`SELECT count(*)::int AS n FROM pg_class WHERE relname = ANY ($1)`, [[peopleView.table, adults.table, byAge.table, joined.table]]);
      expect(gone[0].n).toBe(0);

      const result = await restoreItems(client, storage, [{ manifest, target: people }]);
      const created = result.dependents.created;
      expect([...created].sort()).toEqual([peopleView, adults, byAge, unpopulated, joined].map((r) => `${r.schema}.${r.table}`).sort());
      // The view on the view comes after it.
      expect(created.indexOf(`${adults.schema}.${adults.table}`)).toBeGreaterThan(created.indexOf(`${crm}.${peopleView.table}`));
      expect(result.dependents.notRestored).toEqual([]);
      expect(result.tables[0]!.notRestored).toEqual([]);

      expect(await tableFingerprint(client, people)).toEqual(rowsBefore);
      expect(await relationFacts(relations)).toEqual(factsBefore);
      if (canDump()) expect(await dump('-t', relations)).toEqual(dumpedBefore);
      // Populated as captured, and the foreign key validated against the restored rows.
      const { rows } = await client.query(`SELECT (SELECT sum(n)::int FROM ${quoteQualified(byAge)}) AS counted, (SELECT count(*)::int FROM ${quoteQualified(joined)}) AS joined`);
      expect(rows[0]).toEqual({ counted: 200, joined: 50 });
    });
  });

  describe('DROP SCHEMA … CASCADE', () => {
    const sales = 'Sales "EU" ✓';
    const accounts = { schema: sales, table: 'accounts' };
    const ledger = { schema: sales, table: 'lédger' };
    const overview = { schema: sales, table: 'overview' };

    it('brings back the schema, its types, every table and the views joining them, as pg_dump showed them', async () => {
      const s = quoteIdent(sales);
      await client.query(`
        CREATE SCHEMA ${s};
        ALTER SCHEMA ${s} OWNER TO ${quoteIdent(owner)};
        GRANT USAGE ON SCHEMA ${s} TO ${quoteIdent(reader)};
        COMMENT ON SCHEMA ${s} IS 'sales, Europe';
        CREATE TYPE ${s}."Mood ✓" AS ENUM ('sad', 'ok', 'it''s fine');
      `);
      // Its own transaction: a value added to an enum cannot be used in the transaction that added it.
      await client.query(`ALTER TYPE ${s}."Mood ✓" ADD VALUE 'meh' BEFORE 'ok'`);
      await client.query(`
        CREATE DOMAIN ${s}.positive AS numeric(12, 2) DEFAULT 1 NOT NULL CONSTRAINT "more than nothing" CHECK (VALUE > 0);
        ALTER DOMAIN ${s}.positive ADD CONSTRAINT "not absurd" CHECK (VALUE < 1e9) NOT VALID;
        CREATE TYPE ${s}.address AS (street text COLLATE "C", amount ${s}.positive, moods ${s}."Mood ✓"[]);
        ALTER TYPE ${s}.address OWNER TO ${quoteIdent(owner)};
        COMMENT ON TYPE ${s}.address IS 'where';
        REVOKE USAGE ON TYPE ${s}."Mood ✓" FROM PUBLIC;
        GRANT USAGE ON TYPE ${s}."Mood ✓" TO ${quoteIdent(reader)};
        CREATE TABLE ${s}.accounts (id serial PRIMARY KEY, mood ${s}."Mood ✓", home ${s}.address, balance ${s}.positive);
        INSERT INTO ${s}.accounts (mood, home, balance) VALUES ('ok', ROW('Main St', 5, '{sad,meh}'), 10), ('it''s fine', NULL, 2);
        CREATE TABLE ${s}."lédger" (account int REFERENCES ${s}.accounts(id), amount ${s}.positive);
        INSERT INTO ${s}."lédger" VALUES (1, 3), (2, 4);
        CREATE VIEW ${s}.overview AS SELECT a.id, a.mood, sum(l.amount) AS total FROM ${s}.accounts a JOIN ${s}."lédger" l ON l.account = a.id GROUP BY a.id, a.mood;
        CREATE VIEW ${s}."happy ones" AS SELECT * FROM ${s}.accounts WHERE mood = 'ok'::${s}."Mood ✓";
      `);
      const dumpedBefore = canDump() ? await dump('-n', [sales]) : [];
      const schemaBefore = await schemaFacts(sales);
      const relationsBefore = await relationFacts([accounts, ledger, overview]);
      const manifests = [await capture(ledger), await capture(accounts)];

      await withoutGuard(client, () => client.query(`DROP SCHEMA ${s} CASCADE`));
      const items = manifests.map((manifest) => ({ manifest, target: { schema: manifest.schema, table: manifest.table } }));

      // --dry-run prints the schema and types before the tables, the views after, and changes nothing.
      const dryRun = await restoreItems(client, storage, items, { dryRun: true });
      const script = [...dryRun.tables.map((t) => t.script), dryRun.dependents.script].join('\n');
      for (const expected of [`CREATE SCHEMA ${s};`, `ALTER SCHEMA ${s} OWNER TO ${quoteIdent(owner)};`, `CREATE TYPE ${s}."Mood ✓" AS ENUM`, `CREATE DOMAIN ${quoteQualified({ schema: sales, table: 'positive' })}`, `CREATE VIEW ${quoteQualified(overview)}`]) {
        expect(script).toContain(expected);
      }
      expect(script.match(/CREATE SCHEMA/g)).toHaveLength(1);
      expect(script.indexOf(`CREATE TYPE ${quoteQualified({ schema: sales, table: 'address' })}`)).toBeLessThan(script.indexOf(`CREATE TABLE ${quoteQualified(accounts)}`));
      const { rows: stillGone } = await client.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = $1`, [sales]);
      expect(stillGone[0].n).toBe(0);

      const result = await restoreItems(client, storage, items);

      // The view joining both tables is created once, after both.
      expect([...result.dependents.created].sort()).toEqual([`${sales}.happy ones`, `${sales}.overview`]);
      expect(result.dependents.notRestored).toEqual([]);
      expect(result.tables.flatMap((t) => t.notRestored)).toEqual([]);
      expect(await schemaFacts(sales)).toEqual(schemaBefore);
      expect(await relationFacts([accounts, ledger, overview])).toEqual(relationsBefore);
      if (canDump()) expect(await dump('-n', [sales])).toEqual(dumpedBefore);
    });
  });

  describe("other tables' foreign keys", () => {
    it('are added back where their table still exists and its rows hold; the others are reported', async () => {
      const schema = 'refs "fk" ✓';
      const q = (name: string) => quoteQualified({ schema, table: name });
      const parent = { schema, table: 'pärent' };
      await client.query(`
        CREATE SCHEMA ${quoteIdent(schema)};
        CREATE TABLE ${q(parent.table)} (id int PRIMARY KEY, code text UNIQUE);
        INSERT INTO ${q(parent.table)} SELECT g, 'c' || g FROM generate_series(1, 10) g;
        CREATE TABLE ${q('child ok')} (p int, code text);
        ALTER TABLE ${q('child ok')} ADD CONSTRAINT "child ok → parent" FOREIGN KEY (p) REFERENCES ${q(parent.table)}(id) MATCH FULL ON UPDATE CASCADE NOT VALID;
        ALTER TABLE ${q('child ok')} ADD CONSTRAINT "by code" FOREIGN KEY (code) REFERENCES ${q(parent.table)}(code);
        INSERT INTO ${q('child ok')} VALUES (1, 'c1'), (2, 'c2');
        CREATE TABLE ${q('child bad')} (p int REFERENCES ${q(parent.table)}(id));
        CREATE TABLE ${q('child gone')} (p int REFERENCES ${q(parent.table)}(id));
      `);
      const manifest = await capture(parent);
      expect(manifest.definition.referencedBy!.map((k) => `${k.table}.${k.name}`)).toEqual(['child bad.child bad_p_fkey', 'child gone.child gone_p_fkey', 'child ok.by code', 'child ok.child ok → parent']);
      await withoutGuard(client, async () => {
        await client.query(`DROP TABLE ${q(parent.table)} CASCADE`);
        await client.query(`DROP TABLE ${q('child gone')}`);
      });
      await client.query(`INSERT INTO ${q('child bad')} VALUES (999)`);

      const dryRun = await restoreItems(client, storage, [{ manifest, target: parent }], { dryRun: true });
      expect(dryRun.tables[0]!.script).toContain(
        `ALTER TABLE ${q('child ok')} ADD CONSTRAINT "child ok → parent" FOREIGN KEY ("p") REFERENCES ${q(parent.table)}("id") MATCH FULL ON UPDATE CASCADE NOT VALID;`,
      );
      expect(dryRun.tables[0]!.script).toContain(`-- foreign key ${schema}.child gone.child gone_p_fkey not restored: the referencing table ${schema}.child gone no longer exists`);

      const result = await restoreItems(client, storage, [{ manifest, target: parent }]);
      const notRestored = result.tables[0]!.notRestored;
      expect(notRestored.map((n) => [n.kind, n.name])).toEqual([
        ['foreign key', `${schema}.child gone.child gone_p_fkey`],
        ['foreign key', `${schema}.child bad.child bad_p_fkey`],
      ]);
      expect(notRestored[1]!.reason).toMatch(/violates foreign key constraint/);
      const { rows } = await client.query(
        `SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conrelid IN ($1::regclass, $2::regclass) AND contype = 'f' ORDER BY conname`,
        [q('child ok'), q('child bad')],
      );
      expect(rows.map((r) => r.conname)).toEqual(['by code', 'child ok → parent']);
      expect(rows[1].def).toMatch(/MATCH FULL ON UPDATE CASCADE NOT VALID$/);
    });
  });

  describe('a view whose name would now resolve to another relation', () => {
    it('is not created reading the wrong one: it is reported instead', async () => {
      const home = 'home ✓';
      const other = 'other "schema"';
      await client.query(`
        CREATE SCHEMA ${quoteIdent(home)};
        CREATE SCHEMA ${quoteIdent(other)};
        CREATE TABLE ${quoteIdent(home)}.facts (id int);
        CREATE TABLE ${quoteIdent(other)}.lookup (id int, label text);
        CREATE VIEW ${quoteIdent(other)}.labelled AS SELECT f.id, l.label FROM ${quoteIdent(home)}.facts f JOIN ${quoteIdent(other)}.lookup l USING (id);
      `);
      const table = { schema: home, table: 'facts' };
      const manifest = await capture(table);
      await withoutGuard(client, () => client.query(`DROP TABLE ${quoteQualified(table)} CASCADE`));
      // Created meanwhile, earlier in the view's captured search path than the lookup it read.
      await client.query(`CREATE TABLE ${quoteIdent(home)}.lookup (id int, label text)`);

      const result = await restoreItems(client, storage, [{ manifest, target: table }]);
      expect(result.dependents.created).toEqual([]);
      expect(result.dependents.notRestored).toHaveLength(1);
      expect(result.dependents.notRestored[0]).toMatchObject({ kind: 'view', name: `${other}.labelled` });
      expect(result.dependents.notRestored[0]!.reason).toContain(`would read ${home}.facts, ${home}.lookup instead of ${home}.facts, ${other}.lookup`);
      const { rows } = await client.query(`SELECT count(*)::int AS n FROM pg_class WHERE relname = 'labelled'`);
      expect(rows[0].n).toBe(0);
    });
  });

  describe('a type that exists', () => {
    it('is used as it is, and the plan says so when it differs from the snapshot', async () => {
      const schema = 'typed "ex" ✓';
      const table = { schema, table: 'moods' };
      const mood = quoteQualified({ schema, table: 'Mööd' });
      await client.query(`
        CREATE SCHEMA ${quoteIdent(schema)};
        CREATE TYPE ${mood} AS ENUM ('sad', 'ok');
        CREATE TABLE ${quoteQualified(table)} (m ${mood});
        INSERT INTO ${quoteQualified(table)} VALUES ('ok');
      `);
      const manifest = await capture(table);
      await withoutGuard(client, () => client.query(`DROP TABLE ${quoteQualified(table)}`));
      await client.query(`ALTER TYPE ${mood} ADD VALUE 'glad'`);

      const result = await restoreItems(client, storage, [{ manifest, target: table }]);
      expect(result.tables[0]!.plan.prerequisites.notes).toEqual([`type ${schema}.Mööd exists and differs from the snapshot's (enum (sad, ok, glad) now, enum (sad, ok) then): it is used as it is`]);
      expect(result.tables[0]!.script).toContain(`-- type ${schema}.Mööd exists and differs`);
      expect(result.tables[0]!.script).not.toContain('CREATE TYPE');
      expect(await tableFingerprint(client, table)).toMatchObject({ rows: 1 });
    });
  });

  describe('restored under another name', () => {
    it('creates no views, types or foreign keys pointing at the copy', async () => {
      const schema = 'copy "test" ✓';
      const table = { schema, table: 'things' };
      await client.query(`
        CREATE SCHEMA ${quoteIdent(schema)};
        CREATE TYPE ${quoteIdent(schema)}.colour AS ENUM ('red');
        CREATE TABLE ${quoteQualified(table)} (id int PRIMARY KEY, c ${quoteIdent(schema)}.colour);
        INSERT INTO ${quoteQualified(table)} VALUES (1, 'red');
        CREATE VIEW ${quoteIdent(schema)}."things ✓" AS SELECT * FROM ${quoteQualified(table)};
        CREATE TABLE ${quoteIdent(schema)}.refs (thing int REFERENCES ${quoteQualified(table)}(id));
      `);
      const manifest = await capture(table);
      expect(manifest.definition.dependents).toHaveLength(1);
      await withoutGuard(client, () => client.query(`DROP TABLE ${quoteQualified(table)} CASCADE`));
      const into = { schema, table: 'things_recovered' };
      const dryRun = await restoreItems(client, storage, [{ manifest, target: into }], { dryRun: true });
      expect(dryRun.dependents).toEqual({ created: [], notRestored: [], script: '' });
      expect(dryRun.tables[0]!.script).not.toMatch(/CREATE VIEW|CREATE TYPE|CREATE SCHEMA|"refs"/);

      const result = await restoreItems(client, storage, [{ manifest, target: into }]);
      expect(result.dependents.created).toEqual([]);
      const { rows } = await client.query(
        `SELECT (SELECT count(*)::int FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind IN ('v', 'm')) AS views,
                (SELECT count(*)::int FROM pg_constraint WHERE conrelid = ($2)::regclass AND contype = 'f') AS foreign_keys`,
        [quoteIdent(schema), `${quoteIdent(schema)}.refs`],
      );
      expect(rows[0]).toEqual({ views: 0, foreign_keys: 0 });
    });
  });

  describe('a name taken meanwhile', () => {
    it('is left alone: the view is skipped and reported, the rest restored', async () => {
      const schema = 'taken ✓';
      const table = { schema, table: 'base "table"' };
      const view = { schema, table: 'Vïew' };
      const other = { schema, table: 'other view' };
      await client.query(`
        CREATE SCHEMA ${quoteIdent(schema)};
        CREATE TABLE ${quoteQualified(table)} (id int PRIMARY KEY);
        INSERT INTO ${quoteQualified(table)} VALUES (1), (2);
        CREATE VIEW ${quoteQualified(view)} AS SELECT id FROM ${quoteQualified(table)};
        CREATE VIEW ${quoteQualified(other)} AS SELECT count(*) AS n FROM ${quoteQualified(table)};
      `);
      const manifest = await capture(table);
      await withoutGuard(client, () => client.query(`DROP TABLE ${quoteQualified(table)} CASCADE`));
      await client.query(`CREATE TABLE ${quoteQualified(view)} (meanwhile text); INSERT INTO ${quoteQualified(view)} VALUES ('kept')`);

      const dryRun = await restoreItems(client, storage, [{ manifest, target: table }], { dryRun: true });
      expect(dryRun.dependents.script).toContain(`CREATE VIEW ${quoteQualified(other)}`);
      expect(dryRun.dependents.script).toContain(`-- view ${schema}.${view.table} not restored: a table named ${schema}.${view.table} exists (it is never replaced)`);

      const result = await restoreItems(client, storage, [{ manifest, target: table }]);
      expect(result.dependents.created).toEqual([`${schema}.${other.table}`]);
      expect(result.dependents.notRestored).toEqual([{ kind: 'view', name: `${schema}.${view.table}`, reason: `a table named ${schema}.${view.table} exists (it is never replaced)` }]);
      const { rows } = await client.query(`SELECT (SELECT meanwhile FROM ${quoteQualified(view)}) AS kept, (SELECT n::int FROM ${quoteQualified(other)}) AS n`);
      expect(rows[0]).toEqual({ kept: 'kept', n: 2 });
    });
  });

  describe('snapshots taken before dependents were captured', () => {
    it('restore the table alone, as before', async () => {
      const schema = 'old "format" ✓';
      const table = { schema, table: 'legacy' };
      await client.query(`
        CREATE SCHEMA ${quoteIdent(schema)};
        CREATE TABLE ${quoteQualified(table)} (id int PRIMARY KEY, v text);
        INSERT INTO ${quoteQualified(table)} VALUES (1, 'a');
        CREATE VIEW ${quoteIdent(schema)}.legacy_v AS SELECT * FROM ${quoteQualified(table)};
        CREATE TABLE ${quoteIdent(schema)}.refs (id int REFERENCES ${quoteQualified(table)}(id));
      `);
      const captured = await capture(table);
      const { dependents: _d, referencedBy: _r, schemaDefinition: _s, types: _t, ...definition } = captured.definition;
      const manifest: Manifest = { ...captured, definition };
      await withoutGuard(client, () => client.query(`DROP TABLE ${quoteQualified(table)} CASCADE`));

      const result = await restoreItems(client, storage, [{ manifest, target: table }]);
      expect(result.dependents).toEqual({ created: [], notRestored: [], script: '' });
      expect(result.tables[0]!.notRestored).toEqual([]);
      expect(await tableFingerprint(client, table)).toMatchObject({ rows: 1 });
      const { rows } = await client.query(`SELECT count(*)::int AS n FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind = 'v'`, [quoteIdent(schema)]);
      expect(rows[0].n).toBe(0);
    });
  });

  describe('rendering for a staging schema (the agent)', () => {
    it('creates a view in the staging schema reading the staged table, which keeps reading it once both are moved', async () => {
      const schema = 'stage "home" ✓';
      const staging = 'backstop_restore_test ✓';
      const table = { schema, table: 'items' };
      await client.query(`
        CREATE SCHEMA ${quoteIdent(schema)};
        CREATE TYPE ${quoteIdent(schema)}.size AS ENUM ('s', 'm');
        CREATE TABLE ${quoteQualified(table)} (id int, sz ${quoteIdent(schema)}.size);
        CREATE TABLE ${quoteIdent(schema)}.keep (id int);
        CREATE VIEW ${quoteIdent(schema)}."items v" AS SELECT i.id, i.sz, 'm'::${quoteIdent(schema)}.size AS m FROM ${quoteQualified(table)} i JOIN ${quoteIdent(schema)}.keep k USING (id);
      `);
      const manifest = await capture(table);
      const [view] = manifest.definition.dependents!;
      const [type] = manifest.definition.types!;
      await withoutGuard(client, () => client.query(`DROP SCHEMA ${quoteIdent(schema)} CASCADE`));
      await client.query(`CREATE SCHEMA ${quoteIdent(schema)}; CREATE TABLE ${quoteIdent(schema)}.keep (id int); CREATE SCHEMA ${quoteIdent(staging)}`);

      // Stage: the type and the table under their own names in the staging schema, then the view.
      await client.query('BEGIN');
      for (const sql of typeCreateSql(type!, { schema: staging, readFirst: staging })) await client.query(sql);
      await client.query(`CREATE TABLE ${quoteIdent(staging)}.items (id int, sz ${quoteIdent(staging)}.size)`);
      for (const sql of dependentCreateSql(view!, { schema: staging, readFirst: staging })) await client.query(sql);
      await client.query('COMMIT');
      const reads = async (v: QualifiedName) =>
        (
          await client.query<{ name: string }>(
            `SELECT DISTINCT d.refobjid::regclass::text AS name FROM pg_rewrite r JOIN pg_depend d ON d.objid = r.oid AND d.refobjid <> r.ev_class
              WHERE r.ev_class = $1::regclass AND d.refclassid = 'pg_class'::regclass ORDER BY 1`,
            [quoteQualified(v)],
          )
        ).rows.map((r) => r.name).sort();
      expect(await reads({ schema: staging, table: 'items v' })).toEqual([`${quoteIdent(schema)}.keep`, `${quoteIdent(staging)}.items`].sort());

      // Move everything to its real schema: the view follows the table, not a name.
      await client.query(`ALTER TYPE ${quoteIdent(staging)}.size SET SCHEMA ${quoteIdent(schema)}`);
      await client.query(`ALTER TABLE ${quoteIdent(staging)}.items SET SCHEMA ${quoteIdent(schema)}`);
      await client.query(`ALTER VIEW ${quoteIdent(staging)}."items v" SET SCHEMA ${quoteIdent(schema)}`);
      expect(await reads({ schema, table: 'items v' })).toEqual([`${quoteIdent(schema)}.items`, `${quoteIdent(schema)}.keep`].sort());
      const { rows } = await client.query(`SELECT pg_get_viewdef($1::regclass) AS def`, [`${quoteIdent(schema)}."items v"`]);
      expect(rows[0].def).toContain(`'m'::${quoteIdent(schema)}.size`);
    });
  });
});
