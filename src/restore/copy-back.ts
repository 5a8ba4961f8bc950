/**
 * The SQL that puts recovered rows back where they came from, for the operator to review and
 * run. It is one transaction that checks the row count it expects before COMMIT, and it depends
 * on what happened to the original:
 * - the table is gone (DROP TABLE): rename the recovered table (and its indexes/sequences) into place;
 * - columns are gone (ALTER TABLE … DROP COLUMN): add them back and fill them by primary key;
 * - rows are gone (TRUNCATE, DELETE): insert the recovered rows that are missing (by primary key
 *   when there is one, else all of them). Rows present in both whose values differ (changed
 *   since the snapshot) are counted and left as they are; the other form (`overwriteChanged`,
 *   INSERT … ON CONFLICT (pk) DO UPDATE) sets them back too, and checks that none differs after.
 */
import type pg from 'pg';
import { describeTable, type TableDefinition, tableExists } from '../db/catalog.js';
import { displayName, quoteIdent, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import type { Manifest } from '../snapshot/manifest.js';
import { renameForTable } from './names.js';

export type CopyBackMode = 'rename' | 'add-columns' | 'insert-rows' | 'upsert-rows';

export interface CopyBack {
  mode: CopyBackMode;
  sql: string;
  /** Rows the copy-back statement should report (INSERT/UPDATE count; 0 for a rename). */
  expectedRows: number;
  /** Rows the original should hold after COMMIT. */
  expectedTotal: number;
  /**
   * Rows in both tables (by primary key) whose values differ: changed since the snapshot. Null
   * when it cannot be told (no primary key, or the table is gone or lost columns).
   */
  changedRows: number | null;
  /** The other form, when there is a choice: sets changed rows back too (`upsert-rows`). */
  alternative?: CopyBack;
}

export interface CopyBackOptions {
  /** Also set rows changed since the snapshot back to their snapshot values (INSERT … ON CONFLICT DO UPDATE). */
  overwriteChanged?: boolean;
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
export async function copyBackSql(client: pg.ClientBase, original: QualifiedName, recovered: QualifiedName, manifest: Manifest, options: CopyBackOptions = {}): Promise<CopyBack> {
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
    return { mode: 'rename', sql: `${sql}\n`, expectedRows: 0, expectedTotal: manifest.row_count, changedRows: null };
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
      return { mode: 'add-columns', sql: `${sql}\n`, expectedRows: 0, expectedTotal: current, changedRows: null };
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
    return { mode: 'add-columns', sql: `${sql}\n`, expectedRows: matched, expectedTotal: current, changedRows: null };
  }

  const columns = recoveredDef.columns.filter((c) => c.generated === '' && originalColumns.has(c.name) && originalColumns.get(c.name)!.generated === '');
  const list = columns.map((c) => quoteIdent(c.name)).join(', ');
  // A recovered value as the original's column type (cast when the type changed since).
  const recoveredValue = (alias: string, c: (typeof columns)[number]) =>
    originalColumns.get(c.name)!.type !== c.type ? `${alias}.${quoteIdent(c.name)}::${originalColumns.get(c.name)!.type}` : `${alias}.${quoteIdent(c.name)}`;
  const selectList = columns.map((c) => recoveredValue('r', c)).join(', ');
  const overriding = columns.some((c) => originalColumns.get(c.name)!.identity === 'a') ? ' OVERRIDING SYSTEM VALUE' : '';
  const where = pkUsable ? ` WHERE NOT EXISTS (SELECT 1 FROM ${quoteQualified(original)} AS o WHERE ${matchOn('o', 'r')})` : '';
  const inserting = await count(client, `SELECT count(*) AS n FROM ${quoteQualified(recovered)} AS r${where}`);
  const insertMissing = (changedNote: string[]) =>
    [
      ...header,
      `-- ${displayName(original)} holds ${current} rows now; ${inserting} recovered rows are missing from it${pkUsable ? ' (matched by primary key)' : ''}.`,
      ...changedNote,
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
  const missingOnly: CopyBack = { mode: 'insert-rows', sql: '', expectedRows: inserting, expectedTotal: current + inserting, changedRows: null };
  if (!pkUsable) return { ...missingOnly, sql: `${insertMissing([])}\n` };

  // Rows present in both, by primary key, whose values differ: changed since the snapshot. The
  // rows' text forms are compared, so every type compares (json, point, … have no equality).
  // A GENERATED ALWAYS identity column outside the key cannot be set by an UPDATE: left out.
  const comparable = columns.filter((c) => !pk.includes(c.name) && originalColumns.get(c.name)!.identity !== 'a');
  const differs = (left: string, right: string, rightValue: (c: (typeof columns)[number]) => string) =>
    comparable.length === 0
      ? 'false'
      : `ROW(${comparable.map((c) => `${left}.${quoteIdent(c.name)}`).join(', ')})::text IS DISTINCT FROM ROW(${comparable.map(rightValue).join(', ')})::text`;
  const changedWhere = `${matchOn('o', 'r')} AND ${differs('o', 'r', (c) => recoveredValue('r', c))}`;
  const changed = await count(client, `SELECT count(*) AS n FROM ${quoteQualified(original)} AS o JOIN ${quoteQualified(recovered)} AS r ON ${changedWhere}`);
  const changedNote = [
    `-- ${changed} row(s) of ${displayName(original)} differ from the snapshot (changed since it was taken; matched by primary key)${changed > 0 ? ': this copy-back leaves them as they are now' : ''}.`,
  ];
  const upsert = [
    ...header,
    `-- ${displayName(original)} holds ${current} rows now; ${inserting} recovered rows are missing from it and ${changed} differ from the snapshot (matched by primary key).`,
    `-- This copy-back inserts the missing rows and sets the changed ones back to their values in the snapshot.`,
    ...notes,
    'BEGIN;',
    `INSERT INTO ${quoteQualified(original)} AS o (${list})${overriding}`,
    `  SELECT ${selectList} FROM ${quoteQualified(recovered)} AS r`,
    comparable.length === 0
      ? `  ON CONFLICT (${pk.map(quoteIdent).join(', ')}) DO NOTHING;`
      : [
          `  ON CONFLICT (${pk.map(quoteIdent).join(', ')}) DO UPDATE SET ${comparable.map((c) => `${quoteIdent(c.name)} = EXCLUDED.${quoteIdent(c.name)}`).join(', ')}`,
          `  WHERE ${differs('o', 'EXCLUDED', (c) => `EXCLUDED.${quoteIdent(c.name)}`)};`,
        ].join('\n'),
    `-- expect: INSERT 0 ${inserting + changed}`,
    ...sequenceCatchUp(original, originalDef),
    checkBlock(original, current + inserting),
    `DO $check$ BEGIN`,
    `  IF EXISTS (SELECT 1 FROM ${quoteQualified(original)} AS o JOIN ${quoteQualified(recovered)} AS r ON ${changedWhere}) THEN`,
    `    RAISE EXCEPTION 'copy-back check failed: rows of %.% still differ from the snapshot', ${literal(original.schema)}, ${literal(original.table)};`,
    `  END IF;`,
    `END $check$;`,
    'COMMIT;',
  ].join('\n');
  const overwrite: CopyBack = { mode: 'upsert-rows', sql: `${upsert}\n`, expectedRows: inserting + changed, expectedTotal: current + inserting, changedRows: changed };
  const keep: CopyBack = { ...missingOnly, sql: `${insertMissing(changedNote)}\n`, changedRows: changed };
  if (options.overwriteChanged) return overwrite;
  return changed > 0 ? { ...keep, alternative: overwrite } : keep;
}
