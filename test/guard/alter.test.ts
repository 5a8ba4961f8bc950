import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardFixture, pgError, requestRows, type GuardFixture } from './fixture.js';

async function columns(f: GuardFixture, table: string): Promise<Record<string, string>> {
  const { rows } = await f.admin.query<{ attname: string; type: string }>(
    `SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute
      WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`,
    [table],
  );
  return Object.fromEntries(rows.map((row) => [row.attname, row.type]));
}

describe('ALTER TABLE guard', () => {
  let f: GuardFixture;
  beforeAll(async () => {
    f = await guardFixture();
    await f.agent.heartbeat();
    await f.admin.query(`CREATE TABLE accounts (id int PRIMARY KEY, email text, balance int DEFAULT 0 NOT NULL,
                                                CONSTRAINT positive CHECK (balance >= 0))`);
  });
  afterAll(async () => {
    await f?.close();
  });

  it('lets changes that lose no data pass with no request', async () => {
    const session = await f.session();
    await session.query(`ALTER TABLE accounts ADD COLUMN note text DEFAULT 'drop type'`);
    await session.query(`ALTER TABLE accounts ALTER COLUMN balance DROP DEFAULT, ALTER COLUMN balance DROP NOT NULL`);
    await session.query(`ALTER TABLE accounts DROP CONSTRAINT positive`);
    await session.query(`ALTER TABLE accounts RENAME COLUMN note TO remark -- then drop column x`);
    await session.query(`/* ALTER TABLE accounts DROP COLUMN email */ ALTER TABLE accounts ALTER COLUMN remark SET DEFAULT $x$ drop column email $x$`);
    expect(await requestRows(f.admin)).toEqual([]);
  });

  it('pauses DROP COLUMN until approved', async () => {
    const session = await f.session();
    const alter = session.query('ALTER TABLE accounts DROP COLUMN remark');
    const request = await f.agent.approveNext({ statement: 'DROP COLUMN remark', targets: ['accounts'] });
    expect(request.command_tag).toBe('ALTER TABLE');
    await alter;
    expect(Object.keys(await columns(f, 'accounts'))).not.toContain('remark');
  });

  it('pauses DROP without the word COLUMN too, and refuses when denied', async () => {
    const session = await f.session();
    const alter = pgError(session.query('ALTER TABLE ONLY public.accounts DROP IF EXISTS email'));
    await f.agent.denyNext('no fresh snapshot of public.accounts', { statement: 'DROP IF EXISTS email' });
    const error = await alter;
    expect(error.code).toBe('BS002');
    expect(error.message).toMatch(/no fresh snapshot of public\.accounts/);
    expect(Object.keys(await columns(f, 'accounts'))).toContain('email');
  });

  it('pauses ALTER COLUMN ... TYPE until approved', async () => {
    const session = await f.session();
    const alter = session.query('ALTER TABLE accounts ALTER COLUMN balance SET DATA TYPE bigint');
    await f.agent.approveNext({ statement: 'SET DATA TYPE bigint', targets: ['accounts'] });
    await alter;
    expect((await columns(f, 'accounts')).balance).toBe('bigint');
  });

  it('refuses a column type change hidden from the statement text (table_rewrite)', async () => {
    const session = await f.session();
    const error = await pgError(session.query(`DO $$ BEGIN EXECUTE 'ALTER TABLE accounts ALTER balance TYPE numeric'; END $$`));
    expect(error.code).toBe('BS005');
    expect(error.message).toMatch(/rewrites public\.accounts/);
    expect((await columns(f, 'accounts')).balance).toBe('bigint');
  });

  it('reads statements the way PostgreSQL does (comments, literals, quoting, several statements)', async () => {
    await f.admin.query(`CREATE TABLE "Drop Me" (id int, "type" text, "drop" text)`);
    const cases: Array<[string, string, boolean]> = [
      ['ALTER TABLE', `ALTER TABLE "Drop Me" ALTER COLUMN "type" SET DEFAULT 'x'`, false],
      ['ALTER TABLE', `ALTER TABLE "Drop Me" DROP "drop"`, true],
      ['ALTER TABLE', `ALTER TABLE "Drop Me" ADD COLUMN z int; ALTER TABLE accounts ALTER id TYPE bigint`, true],
      ['ALTER TABLE', `ALTER TABLE "Drop Me" ADD COLUMN z int; -- ALTER TABLE accounts DROP id`, false],
      ['ALTER TABLE', `ALTER TABLE "Drop Me" ADD CONSTRAINT c CHECK ("type" <> 'drop column id')`, false],
      ['DROP TABLE', `DROP TABLE IF EXISTS nothing_here, "Drop Me" CASCADE`, true],
      ['DROP TABLE', `DROP TABLE nothing_here`, false],
      ['DROP TABLE', `SELECT 'DROP TABLE "Drop Me"'`, false],
      ['DROP TABLE', `drop   table\n  public . "Drop Me";`, true],
    ];
    for (const [tag, statement, pauses] of cases) {
      const { rows } = await f.admin.query<{ n: number }>(
        `SELECT cardinality(backstop._pause_targets($1, $2, 'public')) AS n`,
        [tag, statement],
      );
      expect({ statement, pauses: rows[0]!.n > 0 }).toEqual({ statement, pauses });
    }
  });
});
