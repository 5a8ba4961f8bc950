/**
 * A sweep of the catalog's destructive (and look-alike harmless) DROP and ALTER forms, run by a
 * non-superuser table owner with no agent running: each is paused (and so refused at once,
 * BS001, fail-closed), refused outright (BS005), or passes because it loses no committed data.
 * docs/guard.md ("What is covered") lists the same forms with the same outcomes.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardFixture, type GuardFixture } from './fixture.js';

type Outcome = 'paused' | 'refused' | 'passes';

interface Form {
  sql: string;
  outcome: Outcome;
  /** Objects the form needs, created fresh before it runs. */
  setup?: string;
}

const TABLE = `CREATE TABLE t (id int PRIMARY KEY, c text, n numeric(10,2)); INSERT INTO t VALUES (1, 'x', 1)`;

const FORMS: Form[] = [
  { sql: 'DROP TABLE t', outcome: 'paused' },
  { sql: 'DROP TABLE IF EXISTS t CASCADE', outcome: 'paused' },
  { sql: 'DROP SCHEMA s CASCADE', outcome: 'paused', setup: 'CREATE SCHEMA s; CREATE TABLE s.x (id int)' },
  { sql: 'ALTER TABLE t DROP COLUMN c', outcome: 'paused' },
  { sql: 'ALTER TABLE t DROP c CASCADE', outcome: 'paused' },
  { sql: 'ALTER TABLE t ALTER COLUMN c TYPE int USING length(c)', outcome: 'paused' },
  { sql: 'ALTER TABLE t ALTER COLUMN n TYPE numeric(10,1)', outcome: 'paused' },
  { sql: 'ALTER TABLE t ALTER COLUMN id TYPE bigint', outcome: 'paused' },
  { sql: 'TRUNCATE t', outcome: 'paused' },
  { sql: 'TRUNCATE ONLY t RESTART IDENTITY CASCADE', outcome: 'paused' },
  { sql: 'TRUNCATE p1', outcome: 'paused', setup: 'CREATE TABLE p (id int) PARTITION BY LIST (id); CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1)' },
  { sql: 'DROP TABLE p1', outcome: 'paused', setup: 'CREATE TABLE p (id int) PARTITION BY LIST (id); CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1)' },
  { sql: 'DROP TYPE mood CASCADE', outcome: 'refused', setup: `CREATE TYPE mood AS ENUM ('ok'); CREATE TABLE m (id int, v mood)` },
  { sql: 'DROP DOMAIN posint CASCADE', outcome: 'refused', setup: 'CREATE DOMAIN posint AS int CHECK (VALUE > 0); CREATE TABLE d (v posint)' },
  { sql: 'ALTER TYPE price_t DROP ATTRIBUTE currency', outcome: 'refused', setup: 'CREATE TYPE price_t AS (amount numeric, currency text); CREATE TABLE pr (v price_t)' },
  { sql: 'ALTER TYPE price_t DROP ATTRIBUTE currency CASCADE', outcome: 'refused', setup: 'CREATE TYPE price_t AS (amount numeric, currency text); CREATE TABLE pr OF price_t' },
  { sql: 'DROP FUNCTION twice(int) CASCADE', outcome: 'refused', setup: 'CREATE FUNCTION twice(int) RETURNS int IMMUTABLE LANGUAGE sql AS $$ SELECT $1 * 2 $$; CREATE TABLE g (id int, g int GENERATED ALWAYS AS (twice(id)) STORED)' },
  { sql: 'DROP COLLATION mine CASCADE', outcome: 'refused', setup: `CREATE COLLATION mine (provider = libc, locale = 'C'); CREATE TABLE co (v text COLLATE mine)` },
  { sql: 'DROP OWNED BY CURRENT_USER', outcome: 'refused' },
  { sql: `DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$`, outcome: 'refused' },
  { sql: 'SELECT dropper()', outcome: 'refused', setup: `CREATE FUNCTION dropper() RETURNS void LANGUAGE plpgsql AS $$ BEGIN ALTER TABLE t DROP COLUMN c; END $$` },
  { sql: 'SELECT truncater()', outcome: 'paused', setup: `CREATE FUNCTION truncater() RETURNS void LANGUAGE sql AS $$ TRUNCATE t $$` },
  { sql: 'ALTER TABLE t ADD COLUMN extra int DEFAULT 1', outcome: 'passes' },
  { sql: 'ALTER TABLE t ALTER COLUMN c TYPE varchar', outcome: 'passes' },
  { sql: 'ALTER TABLE t ALTER COLUMN c TYPE varchar(20)', outcome: 'paused' },
  { sql: 'ALTER TABLE t ALTER COLUMN n TYPE numeric(12,2)', outcome: 'passes' },
  { sql: 'ALTER TABLE t ALTER COLUMN c DROP NOT NULL, ALTER COLUMN c DROP DEFAULT', outcome: 'passes' },
  { sql: 'ALTER TABLE t DROP CONSTRAINT t_pkey', outcome: 'passes' },
  { sql: 'ALTER TABLE t RENAME COLUMN c TO type_name', outcome: 'passes' },
  { sql: 'ALTER TABLE t SET UNLOGGED', outcome: 'passes' },
  { sql: 'ALTER TABLE p DETACH PARTITION p1', outcome: 'passes', setup: 'CREATE TABLE p (id int) PARTITION BY LIST (id); CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1)' },
  { sql: 'DROP INDEX ti', outcome: 'passes', setup: 'CREATE INDEX ti ON t (c)' },
  { sql: 'DROP VIEW tv', outcome: 'passes', setup: 'CREATE VIEW tv AS SELECT * FROM t' },
  { sql: 'DROP MATERIALIZED VIEW tm', outcome: 'passes', setup: 'CREATE MATERIALIZED VIEW tm AS SELECT * FROM t' },
  { sql: `ALTER TYPE mood ADD VALUE 'meh'`, outcome: 'passes', setup: `CREATE TYPE mood AS ENUM ('ok'); CREATE TABLE m (id int, v mood)` },
  { sql: 'ALTER TYPE loose_t DROP ATTRIBUTE b', outcome: 'passes', setup: 'CREATE TYPE loose_t AS (a int, b int)' },
  { sql: 'VACUUM FULL t', outcome: 'passes' },
  { sql: 'CREATE TEMP TABLE tt (id int); DROP TABLE tt', outcome: 'passes' },
  { sql: 'BEGIN; CREATE TABLE fresh (id int); INSERT INTO fresh VALUES (1); TRUNCATE fresh; DROP TABLE fresh; COMMIT', outcome: 'passes' },
  { sql: 'DELETE FROM t', outcome: 'passes' },
];

describe('sweep of destructive catalog forms (no agent: paused means refused at once)', () => {
  let f: GuardFixture;
  let owner: pg.Client;

  beforeAll(async () => {
    f = await guardFixture({ roles: { owner: [] } });
    await f.admin.query(`GRANT CREATE ON DATABASE ${f.db.name} TO ${f.roles.owner}`);
    await f.admin.query(`CREATE SCHEMA work AUTHORIZATION ${f.roles.owner}`);
    owner = await f.session('owner');
    await owner.query('SET search_path = work');
  });
  afterAll(async () => {
    await f?.close();
  });

  /** Drop and re-create the owner's schema with the base table and the form's own objects (Backstop off meanwhile). */
  async function reset(setup: string | undefined): Promise<void> {
    await f.admin.query(`ALTER EVENT TRIGGER backstop_guard_dropped DISABLE; ALTER EVENT TRIGGER backstop_guard_statement DISABLE`);
    try {
      await f.admin.query(`DROP SCHEMA IF EXISTS s CASCADE; DROP SCHEMA work CASCADE; CREATE SCHEMA work AUTHORIZATION ${f.roles.owner}`);
    } finally {
      await f.admin.query(`ALTER EVENT TRIGGER backstop_guard_dropped ENABLE ALWAYS; ALTER EVENT TRIGGER backstop_guard_statement ENABLE ALWAYS`);
    }
    await owner.query(`${TABLE}; ${setup ?? ''}`);
  }

  async function outcomeOf(sql: string): Promise<{ outcome: Outcome; code?: string }> {
    try {
      await owner.query(sql);
      return { outcome: 'passes' };
    } catch (error) {
      await owner.query('ROLLBACK').catch(() => {});
      const code = (error as { code?: string }).code;
      if (code === 'BS001') return { outcome: 'paused', code };
      if (code === 'BS005') return { outcome: 'refused', code };
      return { outcome: 'refused', code: `${code}: ${(error as Error).message}` };
    }
  }

  it.each(FORMS)('$sql → $outcome', async (form) => {
    await reset(form.setup);
    const seen = await outcomeOf(form.sql);
    expect({ sql: form.sql, outcome: seen.outcome }).toEqual({ sql: form.sql, outcome: form.outcome });
    if (form.outcome === 'refused') expect(seen.code).toBe('BS005');
  });
});
