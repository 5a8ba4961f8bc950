/**
 * The type-torture table: more than 50 column types with their extremes and awkward values
 * (NaN, ±Infinity, -0, BC dates, zero bytes, tabs and backslashes, multi-dimensional arrays with
 * NULLs, enums, composites, domains, …), a row that is NULL in every nullable column, an identity
 * and a generated column, under a quoted, mixed-case, unicode schema and table name.
 *
 * `tableFingerprint` is the test's own, independent check of a round trip: the row count and an
 * order-independent hash of `t::text` over all rows, in plain SQL.
 */
import type pg from 'pg';
import { quoteIdent, quoteQualified, type QualifiedName } from '../../src/db/identifiers.js';

export const TORTURE_TABLE: QualifiedName = { schema: 'Tör"ture Schéma ✓', table: 'Týpe "Torture" Täble' };

export interface TortureTable {
  table: QualifiedName;
  /** Columns in the table (identity and generated included). */
  columnCount: number;
  rowCount: number;
  /** Whether the server supports xml (built with libxml); the xml column is left out otherwise. */
  xml: boolean;
}

async function xmlSupported(client: pg.ClientBase): Promise<boolean> {
  try {
    await client.query(`SELECT '<a/>'::xml`);
    return true;
  } catch {
    return false;
  }
}

/** Column name → [type, values for rows 1..4] (row 5 is NULL everywhere). Literals are SQL. */
function columnSpecs(schema: string, xml: boolean): Array<[string, string, string[]]> {
  const s = quoteIdent(schema);
  const specs: Array<[string, string, string[]]> = [
    ['c_smallint', 'smallint', ['0', '32767', '-32768', '1']],
    ['c_integer', 'integer', ['0', '2147483647', '-2147483648', '42']],
    ['c_bigint', 'bigint', ['0', '9223372036854775807', '-9223372036854775808', '9007199254740993']],
    ['c_real', 'real', [`'NaN'`, `'Infinity'`, `'-Infinity'`, `'-0'`]],
    ['c_real_extremes', 'real', [`'3.4028235e38'`, `'1.4e-45'`, `'-1.17549435e-38'`, `'0.1'`]],
    ['c_double', 'double precision', [`'NaN'`, `'Infinity'`, `'-Infinity'`, `'-0'`]],
    ['c_double_extremes', 'double precision', [`'1.7976931348623157e308'`, `'5e-324'`, `'-2.2250738585072014e-308'`, `'0.30000000000000004'`]],
    ['c_numeric', 'numeric', [`'NaN'`, `'${'9'.repeat(300)}.${'1'.repeat(300)}'`, `'-0.000000000000000000000000000001'`, `'12345678901234567890.000'`]],
    ['c_numeric_wide', 'numeric(60,20)', [`'1234567890123456789012345678901234567890.12345678901234567890'`, '0', `'-1.5'`, '7']],
    ['c_numeric_money', 'numeric(12,2)', [`'9999999999.99'`, `'-9999999999.99'`, '0', `'0.10'`]],
    ['c_boolean', 'boolean', ['true', 'false', 'true', 'false']],
    ['c_text', 'text', [`E'tab\\there\\nnew line\\r\\nCRLF \\\\ backslash \\\\N'`, `''`, `E'quote '' and "double" and \\\\. alone'`, `'unicode: ü 中文 🎉 ∞ ‮rtl'`]],
    ['c_varchar', 'varchar(50)', [`'plain'`, `''`, `E'\\\\.'`, `'ümlaut'`]],
    ['c_char', 'char(5)', [`'ab'`, `''`, `'abcde'`, `'ü'`]],
    ['c_name', 'name', [`'pg_class'`, `''`, `'Mixed Case'`, `'名前'`]],
    ['c_bytea', 'bytea', [`'\\x00ff00'`, `''`, `'\\x5c0a09'`, `convert_to(repeat('bin', 100), 'UTF8')`]],
    ['c_date', 'date', [`'infinity'`, `'-infinity'`, `'4713-01-01 BC'`, `'5874897-12-31'`]],
    ['c_date_common', 'date', [`'2000-02-29'`, `'1970-01-01'`, `'0001-01-01'`, `'0044-03-15 BC'`]],
    ['c_timestamp', 'timestamp', [`'infinity'`, `'-infinity'`, `'0044-03-15 12:00:00.000001 BC'`, `'2024-02-29 23:59:59.999999'`]],
    ['c_timestamp0', 'timestamp(0)', [`'1999-12-31 23:59:59'`, `'1970-01-01 00:00:00'`, `'1900-01-01 00:00:00'`, `'2262-04-11 23:47:17'`]],
    ['c_timestamptz', 'timestamptz', [`'infinity'`, `'-infinity'`, `'0001-01-01 00:00:00+00 BC'`, `'2024-06-01 12:34:56.789012+05:30'`]],
    ['c_time', 'time', [`'00:00:00'`, `'24:00:00'`, `'23:59:59.999999'`, `'12:00:00.000001'`]],
    ['c_timetz', 'timetz', [`'00:00:00+00'`, `'23:59:59.999999-15:59'`, `'12:00:00+15:59'`, `'01:02:03.5+05:30'`]],
    ['c_interval', 'interval', [`'1 year 2 mons 3 days 04:05:06.789'`, `'-178000000 years'`, `'178000000 years'`, `'-1 day +1 microsecond'`]],
    ['c_uuid', 'uuid', [`'00000000-0000-0000-0000-000000000000'`, `'ffffffff-ffff-ffff-ffff-ffffffffffff'`, `'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'`, `gen_random_uuid()`]],
    ['c_json', 'json', [`'{"b": 1,   "a": [1, 2.50, null], "a": "dup"}'`, `'"tab\\t\\u0000-free"'`, `'[]'`, `'{"ü": "中文 🎉"}'`]],
    ['c_jsonb', 'jsonb', [`'{"b": 1, "a": [1, 2.50, null]}'`, `'null'`, `'{"nested": {"deep": [true, false, 1e100]}}'`, `'"\\\\ backslash"'`]],
    ['c_int_array', 'integer[]', [`'{1,NULL,3}'`, `'{}'`, `'[0:2]={7,8,9}'`, `ARRAY[NULL]::integer[]`]],
    ['c_text_array2', 'text[][]', [`'{{a,b},{NULL,"d e"}}'`, `'{{"quote\\"s","back\\\\slash"}}'`, `ARRAY[['', 'NULL'], ['{', '}']]`, `'{}'`]],
    ['c_float_array', 'double precision[]', [`'{NaN,Infinity,-Infinity,-0}'`, `'{1.5,NULL}'`, `'{}'`, `'{{1,2},{3,4}}'`]],
    ['c_date_array', 'date[]', [`'{infinity,2020-01-01,NULL}'`, `'{}'`, `ARRAY['0044-03-15 BC'::date]`, `'{1970-01-01}'`]],
    ['c_inet', 'inet', [`'192.168.0.1/24'`, `'::1'`, `'2001:db8::ff00:42:8329/64'`, `'0.0.0.0'`]],
    ['c_cidr', 'cidr', [`'10.0.0.0/8'`, `'::/0'`, `'2001:db8::/32'`, `'192.168.100.128/25'`]],
    ['c_macaddr', 'macaddr', [`'08:00:2b:01:02:03'`, `'ff:ff:ff:ff:ff:ff'`, `'00:00:00:00:00:00'`, `'0a:0b:0c:0d:0e:0f'`]],
    ['c_macaddr8', 'macaddr8', [`'08:00:2b:01:02:03:04:05'`, `'ff:ff:ff:ff:ff:ff:ff:ff'`, `'00:00:00:00:00:00:00:00'`, `'08:00:2b:ff:fe:01:02:03'`]],
    ['c_int4range', 'int4range', [`'[1,10)'`, `'empty'`, `'(,5]'`, `'[-2147483648,)'`]],
    ['c_tstzrange', 'tstzrange', [`'[2024-01-01 00:00:00+00,infinity)'`, `'empty'`, `'(,)'`, `'["2020-01-01 00:00:00.000001+00","2020-01-02 00:00:00+00"]'`]],
    ['c_numrange', 'numrange', [`'[0.1,0.3)'`, `'empty'`, `'(-1e-20,1e20]'`, `'[1,1]'`]],
    ['c_int4multirange', 'int4multirange', [`'{[1,3),[5,7)}'`, `'{}'`, `'{(,0)}'`, `'{[10,20]}'`]],
    ['c_tsvector', 'tsvector', [`'a fat cat:3A sat:4 on:5 a:6 mat:7'`, `''`, `$$'quoted '' lexeme' 'back\\\\slash'$$`, `to_tsvector('english', 'The quick brown foxes')`]],
    ['c_tsquery', 'tsquery', [`'fat & (rat | cat)'`, `'!a <-> b'`, `'a:* & b:AB'`, `to_tsquery('english', 'foxes')`]],
    ['c_enum', `${s}."Mood ☺"`, [`'sad'`, `'ok'`, `'Very "happy"'`, `'sad'`]],
    ['c_composite', `${s}."Pair"`, [`ROW(1, 'a')`, `ROW(NULL, NULL)`, `ROW(-1, E'tab\\t,"quoted",(paren)')`, `ROW(0, '')`]],
    ['c_domain', `${s}.positive_int`, ['1', '2147483647', '7', '100']],
    ['c_bit', 'bit(8)', [`B'00000000'`, `B'11111111'`, `B'10101010'`, `B'00000001'`]],
    ['c_varbit', 'bit varying(64)', [`B''`, `B'1'`, `B'${'10'.repeat(32)}'`, `B'0001'`]],
    ['c_money', 'money', [`'0'`, `'92233720368547758.07'`, `'-92233720368547758.08'`, `'1.23'`]],
    ['c_point', 'point', [`'(0,0)'`, `'(1.5,-2.5)'`, `'(NaN,Infinity)'`, `'(1e300,-1e-300)'`]],
    ['c_oid', 'oid', ['0', '4294967295', '1', '16384']],
    ['c_char1', '"char"', [`'a'`, `'Z'`, `' '`, `'\\'`]],
    ['c_bytea_array', 'bytea[]', [`ARRAY['\\x00'::bytea, NULL, '\\x'::bytea]`, `'{}'`, `ARRAY['\\x5c'::bytea]`, `NULL`]],
    ['Mixed "Case" Ünïcode ✓', 'text', [`'column with a quoted, spaced, unicode name'`, `''`, `E'\\n'`, `'✓'`]],
  ];
  if (xml) {
    specs.push(['c_xml', 'xml', [`'<a b="1">text &amp; more</a>'`, `'plain text content'`, `'<?xml version="1.0"?><root><ü/></root>'`, `'<![CDATA[ <not> a tag ]]>'`]]);
  }
  return specs;
}

/** Create the torture table (and its types) with five rows, the last NULL in every nullable column. */
export async function createTypeTortureTable(client: pg.ClientBase, table: QualifiedName = TORTURE_TABLE): Promise<TortureTable> {
  const xml = await xmlSupported(client);
  const s = quoteIdent(table.schema);
  const specs = columnSpecs(table.schema, xml);
  await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
  await client.query(`CREATE TYPE ${s}."Mood ☺" AS ENUM ('sad', 'ok', 'Very "happy"')`);
  await client.query(`CREATE TYPE ${s}."Pair" AS (n integer, label text)`);
  await client.query(`CREATE DOMAIN ${s}.positive_int AS integer CHECK (VALUE > 0)`);
  const columns = [
    `"Ïd" bigint GENERATED ALWAYS AS IDENTITY (START WITH 1000)`,
    ...specs.map(([name, type]) => `${quoteIdent(name)} ${type}`),
    `c_generated bigint GENERATED ALWAYS AS (c_integer::bigint * 2) STORED`,
  ];
  await client.query(`CREATE TABLE ${quoteQualified(table)} (\n  ${columns.join(',\n  ')}\n)`);
  const names = specs.map(([name]) => quoteIdent(name)).join(', ');
  for (let row = 0; row < 4; row += 1) {
    await client.query(`INSERT INTO ${quoteQualified(table)} (${names}) VALUES (${specs.map(([, , values]) => values[row]).join(', ')})`);
  }
  await client.query(`INSERT INTO ${quoteQualified(table)} DEFAULT VALUES`);
  return { table, columnCount: columns.length, rowCount: 5, xml };
}

export interface TableFingerprint {
  rows: number;
  /** md5 over the sorted md5s of every row's `t::text`: independent of row order. */
  hash: string;
}

/** The test's own content check, independent of Backstop's content hash. */
export async function tableFingerprint(client: pg.ClientBase, table: QualifiedName): Promise<TableFingerprint> {
  const { rows } = await client.query<{ rows: number; hash: string }>(
    `SELECT count(*)::int AS rows, coalesce(md5(string_agg(h, '' ORDER BY h COLLATE "C")), '') AS hash
       FROM (SELECT md5(t::text) AS h FROM ${quoteQualified(table)} AS t) AS s`,
  );
  return rows[0]!;
}
