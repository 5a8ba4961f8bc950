/**
 * Values at the edges come back exactly when read from the Parquet file itself (hyparquet, plus
 * DuckDB for decimals): integer extremes, NaN/±Infinity/-0, huge and NaN numerics, awkward text,
 * zero bytes, BC / infinite / far-future dates and timestamps. Columns whose values a Parquet
 * type cannot carry are stored as PostgreSQL text and say so in the manifest.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDatabase } from '../../src/db/connection.js';
import { captureTable } from '../../src/snapshot/capture.js';
import type { Manifest } from '../../src/snapshot/manifest.js';
import { openStorage } from '../../src/storage/open.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { downloadDataFile, duckdbQuery, hyparquetRows } from './parquet-files.js';

let db: TestDatabase;
let client: pg.Client;
let folder: string;
let manifest: Manifest;
let file: string;

const HUGE = `${'9'.repeat(200)}.${'1'.repeat(200)}`;

beforeAll(async () => {
  db = await createTestDatabase();
  client = await db.client();
  folder = await mkdtemp(path.join(os.tmpdir(), 'backstop-edge-'));
  await client.query(`
    CREATE TABLE edge (
      id int PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
      n_any numeric, n_nan numeric(10,2), n_ok numeric(38,10), t text, b bytea,
      d_edge date, d_ok date, ts_edge timestamp, tstz_ok timestamptz, tstz_edge timestamptz,
      j json, u uuid, bo boolean
    );
    INSERT INTO edge VALUES
      (1, 32767, 2147483647, 9223372036854775807, 'NaN', 'NaN', 'NaN', 'NaN', '9999999999999999999999999999.9999999999',
       E'tab\\there\\nnew line\\r\\nCRLF \\\\ backslash "double" ''single''', '\\x000102', 'infinity', '0001-01-01', 'infinity',
       '0001-01-01 00:00:00+00', '-infinity', '{"a":   1, "a": 2}', '00000000-0000-0000-0000-000000000000', true),
      (2, -32768, -2147483648, -9223372036854775808, 'Infinity', 'Infinity', '${HUGE}', 1.5, '-9999999999999999999999999999.9999999999',
       '', '\\x', '4713-01-01 BC', '9999-12-31', '0044-03-15 12:00:00.000001 BC', '9999-12-31 23:59:59.999999+00',
       '294276-12-31 23:59:59.999999+00', '[]', 'ffffffff-ffff-ffff-ffff-ffffffffffff', false),
      (3, 0, 0, 0, '-Infinity', '-Infinity', '-0.000000000000000000000000000000000000001', -0.01, '0.0000000001',
       E'unicode ü 中文 🎉 and \\\\N and \\\\.', '\\x00', '5874897-12-31', '1970-01-01', '10000-01-01 00:00:00',
       '2024-02-29 12:34:56.789012+00', '0001-01-01 00:00:00+00 BC', '"x"', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', null),
      (4, 1, 1, 9007199254740993, '-0', '-0', '0', 0, '0', 'NULL', '\\x5c4e', '2000-02-29', '2000-02-29', '2000-01-01 00:00:00',
       '1969-12-31 23:59:59.999999+00', '2000-01-01 00:00:00+00', '{}', null, true),
      (5, null, null, null, '1.4e-45', '5e-324', null, null, null, E'\\\\.', null, null, null, null, null, null, null, null, null),
      (6, null, null, null, '3.4028235e38', '1.7976931348623157e308', null, null, null, null, null, null, null, null, null, null, null, null, null),
      (7, null, null, null, '0.1', '0.30000000000000004', null, null, null, ' ', null, null, null, null, null, null, null, null, null),
      (8, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null);
  `);
  const storage = openStorage(folder);
  manifest = await captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'edge' } });
  file = await downloadDataFile(storage, manifest);
});

afterAll(async () => {
  await db?.drop();
  if (folder) await rm(folder, { recursive: true, force: true });
});

/** PostgreSQL's own text of every column under the capture's settings, by id. */
async function expectedText(): Promise<Map<number, Record<string, string | null>>> {
  await client.query(`SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET extra_float_digits = 1`);
  const { rows } = await client.query<Record<string, string | null>>(`
    SELECT id::text, i2::text, i4::text, i8::text, f4::text, f8::text, n_any::text, n_nan::text, n_ok::text, t,
           encode(b, 'hex') AS b, d_edge::text, (d_ok - date '1970-01-01')::text AS d_ok, ts_edge::text,
           ((extract(epoch FROM tstz_ok) * 1000000)::bigint)::text AS tstz_ok, tstz_edge::text, j::text, u::text, bo::text
      FROM edge`);
  return new Map(rows.map((row) => [Number(row.id), row]));
}

function asNumber(text: string | null, float4: boolean): number | null {
  if (text === null) return null;
  const value = Number(text);
  return float4 ? Math.fround(value) : value;
}

describe('edge values', () => {
  it('records which columns are native and which are text, with warnings', () => {
    const storedAs = Object.fromEntries(manifest.columns.map((c) => [c.name, c.stored_as]));
    expect(storedAs).toEqual({
      id: 'native', i2: 'native', i4: 'native', i8: 'native', f4: 'native', f8: 'native',
      n_any: 'text', n_nan: 'text', n_ok: 'native', t: 'native', b: 'native',
      d_edge: 'text', d_ok: 'native', ts_edge: 'text', tstz_ok: 'native', tstz_edge: 'text',
      j: 'native', u: 'native', bo: 'native',
    });
    const warnings = manifest.warnings.join('\n');
    for (const column of ['n_nan', 'd_edge', 'ts_edge', 'tstz_edge']) expect(warnings).toContain(`"${column}"`);
    expect(warnings).toContain('"n_any" (numeric)');
  });

  it('reads back every value exactly from the Parquet file', async () => {
    const expected = await expectedText();
    const rows = await hyparquetRows(file);
    expect(rows).toHaveLength(8);
    for (const row of rows) {
      const wanted = expected.get(Number(row.id))!;
      const want = (column: string): string | null => wanted[column] ?? null;
      const where = `row ${row.id}`;
      expect(row.i2, where).toBe(want('i2') === null ? null : Number(want('i2')!));
      expect(row.i4, where).toBe(want('i4') === null ? null : Number(want('i4')!));
      expect(row.i8, where).toBe(want('i8') === null ? null : BigInt(want('i8')!));
      expect(Object.is(row.f4, asNumber(want('f4'), true)), `${where} f4 ${String(row.f4)} vs ${want('f4')}`).toBe(true);
      expect(Object.is(row.f8, asNumber(want('f8'), false)), `${where} f8 ${String(row.f8)} vs ${want('f8')}`).toBe(true);
      expect(row.n_any, where).toBe(want('n_any'));
      expect(row.n_nan, where).toBe(want('n_nan'));
      expect(row.t, where).toBe(want('t'));
      expect(row.b === null ? null : Buffer.from(row.b as Uint8Array).toString('hex'), where).toBe(want('b'));
      expect(row.d_edge, where).toBe(want('d_edge'));
      expect(row.d_ok, where).toBe(want('d_ok') === null ? null : Number(want('d_ok')!));
      expect(row.ts_edge, where).toBe(want('ts_edge'));
      expect(row.tstz_ok, where).toBe(want('tstz_ok') === null ? null : BigInt(want('tstz_ok')!));
      expect(row.tstz_edge, where).toBe(want('tstz_edge'));
      expect(row.j, where).toBe(want('j'));
      expect(row.u ?? null, where).toBe(want('u'));
      expect(row.bo, where).toBe(want('bo') === null ? null : want('bo') === 'true');
    }
  });

  it('stores a column as text when only the range guard, not the cast, objects to its values (infinite date)', async () => {
    // DuckDB accepts 'infinity' as a DATE: the column's range guard must stop the native encode.
    await client.query(`CREATE TABLE edge_inf (id int PRIMARY KEY, d date); INSERT INTO edge_inf VALUES (1, '2024-01-01'), (2, 'infinity'), (3, null)`);
    const storage = openStorage(folder);
    const inf = await captureTable({ database: resolveDatabase(db.url), storage, table: { schema: 'public', table: 'edge_inf' } });
    expect(inf.columns.map((c) => c.stored_as)).toEqual(['native', 'text']);
    expect(inf.warnings.join('\n')).toContain('"d" (date)');
    const rows = await hyparquetRows(await downloadDataFile(storage, inf));
    expect(rows.map((r) => r.d).sort()).toEqual(['2024-01-01', 'infinity', null].sort());
  });

  it('keeps DECIMAL values exact (read with DuckDB)', async () => {
    const rows = await duckdbQuery(file, `SELECT id, n_ok::VARCHAR AS n_ok FROM p ORDER BY id`);
    const expected = await expectedText();
    for (const row of rows) expect(row.n_ok, `row ${row.id}`).toBe(expected.get(Number(row.id))!['n_ok']);
  });
});
