/**
 * The SQL that puts recovered rows back where they came from, for the operator to review and
 * run. It is one transaction that checks the row count it expects before COMMIT, and it depends
 * on what happened to the original:
 * - the table is gone (DROP TABLE): rename the recovered table (and its indexes/sequences) into place;
 * - columns are gone (ALTER TABLE … DROP COLUMN): add them back and fill them by primary key;
 * - rows are gone (TRUNCATE, DELETE): insert the recovered rows that are missing (by primary key
 *   when there is one, else all of them).
 */
import type pg from 'pg';
import { describeTable, type TableDefinition, tableExists } from '../db/catalog.js';
import { displayName, quoteIdent, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import type { Manifest } from '../snapshot/manifest.js';
import { renameForTable } from './names.js';

export type CopyBackMode = 'rename' | 'add-columns' | 'insert-rows';

export interface CopyBack {
  mode: CopyBackMode;
  sql: string;
  /** Rows the copy-back statement should report (INSERT/UPDATE count; 0 for a rename). */
  expectedRows: number;
  /** Rows the original should hold after COMMIT. */
  expectedTotal: number;
}

function literal(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

async function primaryKeyColumns(client: pg.ClientBase, table: QualifiedName): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(
    `SELECT a.attname AS name
       FROM pg_catalog.pg_index i
       JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
       JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
      WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary
      ORDER BY k.ord`,
    [table.schema, table.table],
  );
  return rows.map((row) => row.name);
}

async function count(client: pg.ClientBase, sql: string): Promise<number> {
  const { rows } = await client.query<{ n: string }>(sql);
  return Number(rows[0]!.n);
}

function checkBlock(original: QualifiedName, expectedTotal: number): string {
  return [
    `DO $check$ BEGIN`,
    `  IF (SELECT count(*) FROM ${quoteQualified(original)}) <> ${expectedTotal} THEN`,
    `    RAISE EXCEPTION 'copy-back check failed: %.% does not hold ${expectedTotal} rows', ${literal(original.schema)}, ${literal(original.table)};`,
    `  END IF;`,
    `END $check$;`,
  ].join('\n');
}

function sequenceCatchUp(original: QualifiedName, def: TableDefinition): string[] {
  return def.sequences
    .filter((sequence) => !sequence.increment.startsWith('-'))
    .map((sequence) => {
      const seq = quoteQualified({ schema: sequence.schema, table: sequence.name });
      return `SELECT pg_catalog.setval(${literal(seq)}, GREATEST(s.last_value, m.v)) FROM ${seq} AS s, (SELECT max(${quoteIdent(sequence.column)}) AS v FROM ${quoteQualified(original)}) AS m WHERE m.v IS NOT NULL;`;
    });
}

/** Build the copy-back script for rows recovered into `recovered` from `manifest`. */
export async function copyBackSql(client: pg.ClientBase, original: QualifiedName, recovered: QualifiedName, manifest: Manifest): Promise<CopyBack> {
  const recoveredDef = await describeTable(client, recovered);
  const header = [
    `-- ${displayName(recovered)} holds the ${manifest.row_count} rows of snapshot ${manifest.snapshot_id} of ${displayName(original)}`,
    `-- (captured ${manifest.created_at}); row count and content hash were verified against the snapshot.`,
  ];

  if (!(await tableExists(client, original))) {
    const renames: string[] = [];
    for (const index of recoveredDef.indexes) {
      const name = renameForTable(index.name, recovered.table, original.table);
      if (name !== index.name) renames.push(`ALTER INDEX ${quoteQualified({ schema: recovered.schema, table: index.name })} RENAME TO ${quoteIdent(name)};`);
    }
    for (const sequence of recoveredDef.sequences) {
      const name = renameForTable(sequence.name, recovered.table, original.table);
      if (name !== sequence.name) renames.push(`ALTER SEQUENCE ${quoteQualified({ schema: sequence.schema, table: sequence.name })} RENAME TO ${quoteIdent(name)};`);
    }
    const moveSchema = original.schema !== recovered.schema ? [`ALTER TABLE ${quoteQualified(recovered)} SET SCHEMA ${quoteIdent(original.schema)};`] : [];
    const afterMove = { schema: original.schema, table: recovered.table };
    const sql = [
      ...header,
      `-- ${displayName(original)} does not exist: put the recovered table in its place.`,
      'BEGIN;',
      ...renames,
      ...moveSchema,
      `ALTER TABLE ${quoteQualified(afterMove)} RENAME TO ${quoteIdent(original.table)};`,
      checkBlock(original, manifest.row_count),
      'COMMIT;',
    ].join('\n');
    return { mode: 'rename', sql: `${sql}\n`, expectedRows: 0, expectedTotal: manifest.row_count };
  }

  const originalDef = await describeTable(client, original);
  const current = await count(client, `SELECT count(*) AS n FROM ${quoteQualified(original)}`);
  const originalColumns = new Map(originalDef.columns.map((c) => [c.name, c]));
  const missing = recoveredDef.columns.filter((c) => !originalColumns.has(c.name) && c.generated === '');
  const changedTypes = recoveredDef.columns.filter((c) => originalColumns.has(c.name) && originalColumns.get(c.name)!.type !== c.type);
  const pk = await primaryKeyColumns(client, original);
  const pkUsable = pk.length > 0 && pk.every((name) => recoveredDef.columns.some((c) => c.name === name));
  const matchOn = (left: string, right: string) => pk.map((name) => `${left}.${quoteIdent(name)} = ${right}.${quoteIdent(name)}`).join(' AND ');
  const notes = changedTypes.map((c) => `-- note: column "${c.name}" is ${originalColumns.get(c.name)!.type} now, ${c.type} in the snapshot; values are cast on the way back.`);

  if (missing.length > 0) {
    if (!pkUsable) {
      const sql = [
        ...header,
        `-- ${displayName(original)} lacks the column(s) ${missing.map((c) => `"${c.name}"`).join(', ')} and has no primary key to match rows by:`,
        `-- add them back by hand (ALTER TABLE … ADD COLUMN) and fill them from ${displayName(recovered)}.`,
      ].join('\n');
      return { mode: 'add-columns', sql: `${sql}\n`, expectedRows: 0, expectedTotal: current };
    }
    const matched = await count(client, `SELECT count(*) AS n FROM ${quoteQualified(original)} AS o JOIN ${quoteQualified(recovered)} AS r ON ${matchOn('o', 'r')}`);
    const sql = [
      ...header,
      `-- ${displayName(original)} lacks the column(s) ${missing.map((c) => `"${c.name}"`).join(', ')}: add them back and fill them by primary key.`,
      ...notes,
      'BEGIN;',
      ...missing.map((c) => `ALTER TABLE ${quoteQualified(original)} ADD COLUMN ${quoteIdent(c.name)} ${c.type}${c.collation ? ` COLLATE ${c.collation}` : ''};`),
      `UPDATE ${quoteQualified(original)} AS o SET ${missing.map((c) => `${quoteIdent(c.name)} = r.${quoteIdent(c.name)}`).join(', ')}`,
      `  FROM ${quoteQualified(recovered)} AS r WHERE ${matchOn('o', 'r')};`,
      `-- expect: UPDATE ${matched}`,
      checkBlock(original, current),
      'COMMIT;',
      `-- afterwards, add back NOT NULL, defaults and constraints of these columns if they had any.`,
    ].join('\n');
    return { mode: 'add-columns', sql: `${sql}\n`, expectedRows: matched, expectedTotal: current };
  }

  const columns = recoveredDef.columns.filter((c) => c.generated === '' && originalColumns.has(c.name) && originalColumns.get(c.name)!.generated === '');
  const list = columns.map((c) => quoteIdent(c.name)).join(', ');
  const selectList = columns
    .map((c) => (originalColumns.get(c.name)!.type !== c.type ? `r.${quoteIdent(c.name)}::${originalColumns.get(c.name)!.type}` : `r.${quoteIdent(c.name)}`))
    .join(', ');
  const overriding = columns.some((c) => originalColumns.get(c.name)!.identity === 'a') ? ' OVERRIDING SYSTEM VALUE' : '';
  const where = pkUsable ? ` WHERE NOT EXISTS (SELECT 1 FROM ${quoteQualified(original)} AS o WHERE ${matchOn('o', 'r')})` : '';
  const inserting = await count(client, `SELECT count(*) AS n FROM ${quoteQualified(recovered)} AS r${where}`);
  const sql = [
    ...header,
    `-- ${displayName(original)} holds ${current} rows now; ${inserting} recovered rows are missing from it${pkUsable ? ' (matched by primary key)' : ''}.`,
    ...(!pkUsable && current > 0 ? [`-- warning: no primary key to match rows by: every recovered row is inserted, duplicates are possible.`] : []),
    ...notes,
    'BEGIN;',
    `INSERT INTO ${quoteQualified(original)} (${list})${overriding}`,
    `  SELECT ${selectList} FROM ${quoteQualified(recovered)} AS r${where};`,
    `-- expect: INSERT 0 ${inserting}`,
    ...sequenceCatchUp(original, originalDef),
    checkBlock(original, current + inserting),
    'COMMIT;',
  ].join('\n');
  return { mode: 'insert-rows', sql: `${sql}\n`, expectedRows: inserting, expectedTotal: current + inserting };
}
