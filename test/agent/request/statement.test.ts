import { describe, expect, it } from 'vitest';
import { parseStatement, StatementParseError } from '../../../src/request/statement.js';

describe('parseStatement', () => {
  it('keeps quoted, mixed-case and unicode names exactly and folds unquoted ones', async () => {
    const parsed = await parseStatement('DROP TABLE "My Table", "Sales"."Ünïcödé ""q""", Mixed');
    expect(parsed.operations).toEqual([
      { kind: 'drop_table', relation: { name: 'My Table' }, missingOk: false, cascade: false },
      { kind: 'drop_table', relation: { schema: 'Sales', name: 'Ünïcödé "q"' }, missingOk: false, cascade: false },
      { kind: 'drop_table', relation: { name: 'mixed' }, missingOk: false, cascade: false },
    ]);
  });

  it('reads IF EXISTS, CASCADE and schema-qualified names', async () => {
    const parsed = await parseStatement('drop table if exists app.users cascade');
    expect(parsed.operations).toEqual([{ kind: 'drop_table', relation: { schema: 'app', name: 'users' }, missingOk: true, cascade: true }]);
  });

  it('collects every critical statement of a multi-statement string and ignores the rest', async () => {
    const parsed = await parseStatement(`SELECT 1; DROP TABLE a; CREATE TABLE z (i int); TRUNCATE b; DROP SCHEMA "S" CASCADE;`);
    expect(parsed.operations.map((op) => op.kind)).toEqual(['drop_table', 'truncate', 'drop_schema']);
    expect(parsed.operations[2]).toEqual({ kind: 'drop_schema', schema: 'S', missingOk: false, cascade: true });
  });

  it('tells DROP COLUMN and ALTER COLUMN TYPE apart from DROP CONSTRAINT and other subcommands', async () => {
    const parsed = await parseStatement('ALTER TABLE ONLY t DROP COLUMN c, DROP CONSTRAINT k, ALTER COLUMN d TYPE bigint, ADD COLUMN e int, ALTER COLUMN f SET DEFAULT 1');
    expect(parsed.operations).toEqual([
      { kind: 'drop_column', relation: { name: 't' }, column: 'c', missingOk: false, includeChildren: false },
      { kind: 'alter_column_type', relation: { name: 't' }, column: 'd', missingOk: false, includeChildren: false },
    ]);
    const onlyConstraint = await parseStatement('ALTER TABLE t DROP CONSTRAINT k');
    expect(onlyConstraint.operations).toEqual([]);
  });

  it('recognises ALTER … SET DATA TYPE and leaves ALTER TYPE (the type statement) alone', async () => {
    const parsed = await parseStatement('ALTER TABLE IF EXISTS s.t ALTER "Col" SET DATA TYPE text');
    expect(parsed.operations).toEqual([
      { kind: 'alter_column_type', relation: { schema: 's', name: 't' }, column: 'Col', missingOk: true, includeChildren: true },
    ]);
    expect((await parseStatement(`ALTER TYPE mood ADD VALUE 'meh'`)).operations).toEqual([]);
  });

  it('reads TRUNCATE with ONLY and CASCADE', async () => {
    const parsed = await parseStatement('TRUNCATE ONLY a, public.b RESTART IDENTITY CASCADE');
    expect(parsed.operations).toEqual([
      { kind: 'truncate', relation: { name: 'a' }, includeChildren: false, cascade: true },
      { kind: 'truncate', relation: { schema: 'public', name: 'b' }, includeChildren: true, cascade: true },
    ]);
  });

  it('reports DO blocks as opaque instead of guessing what they run', async () => {
    const parsed = await parseStatement(`DO $$ BEGIN EXECUTE 'DROP TABLE x'; END $$`);
    expect(parsed.operations).toEqual([]);
    expect(parsed.opaque).toEqual(['DO block']);
  });

  it('ignores drops of other object kinds', async () => {
    expect((await parseStatement('DROP VIEW v; DROP INDEX i; DROP SEQUENCE s')).operations).toEqual([]);
  });

  it('throws a typed error for text that is not SQL', async () => {
    await expect(parseStatement('DROP TABLE')).rejects.toBeInstanceOf(StatementParseError);
  });
});
