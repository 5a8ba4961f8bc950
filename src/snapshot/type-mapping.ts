/**
 * How each PostgreSQL column is stored in Parquet. Real Parquet types where the round trip is
 * exact; otherwise the PostgreSQL text form (arrays, ranges, enums, composites, domains,
 * intervals, network types, money, …), which restore loads back through the captured type.
 *
 * Rows travel as PostgreSQL COPY text into DuckDB, which reads every field as VARCHAR, undoes
 * COPY's backslash escapes where a type's text can hold them, and casts it with
 * `duckdbExpression`. Some types can hold values the Parquet type cannot (numeric NaN and
 * ±Infinity, dates and timestamps that are BC, infinite or past year 9999). A capture first
 * encodes every such column natively, and DuckDB refuses the file when it meets one of those
 * values (the cast fails, or the column's range guard raises); only then does
 * `unrepresentableSql` find the columns in the capture's own snapshot, and they are encoded
 * again as text, with a warning. The manifest records the outcome per column (`stored_as`),
 * which is the rule restore follows.
 */
import type { ColumnDefinition } from '../db/catalog.js';
import { quoteIdent } from '../db/identifiers.js';

export type StoredAs = 'native' | 'text';

interface NativeType {
  duckdbType: string;
  /** Parquet physical type and annotation, for the manifest and for readers. */
  parquetType: string;
  /** DuckDB expression from the raw COPY text field (VARCHAR), given the quoted field name. */
  fromCopy: (field: string) => string;
  /**
   * DuckDB expression over the raw field, true when the Parquet type holds the value; for types
   * whose cast would accept a value it should not store natively. Must agree with
   * `unrepresentable`.
   */
  holds?: (field: string) => string;
  /** PostgreSQL boolean expression true for a value the Parquet type cannot hold exactly. */
  unrepresentable?: (column: string) => string;
}

const cast = (type: string) => (field: string) => `CAST(${field} AS ${type})`;

/**
 * The value of a COPY text field. PostgreSQL's output escapes backslash, newline, carriage return,
 * tab, backspace, form feed and vertical tab; only values holding a backslash need decoding. A
 * doubled backslash stands in as NUL (which PostgreSQL text never contains) while the others are
 * replaced, so an escaped backslash followed by "n" stays backslash + n instead of a newline.
 */
export function unescapeCopyText(field: string): string {
  const decoded = [
    ['\\\\', 'chr(0)'],
    ['\\n', 'chr(10)'],
    ['\\r', 'chr(13)'],
    ['\\t', 'chr(9)'],
    ['\\b', 'chr(8)'],
    ['\\f', 'chr(12)'],
    ['\\v', 'chr(11)'],
  ].reduce((expression, [escape, character]) => `replace(${expression}, '${escape}', ${character})`, field);
  return `CASE WHEN contains(${field}, '\\') THEN replace(${decoded}, chr(0), '\\') ELSE ${field} END`;
}
const text = unescapeCopyText;

// Dates and timestamps go native for years 1–9999 AD: what every Parquet reader (DuckDB, pandas,
// Spark) turns back into the same instant. Anything else (BC, infinity, year 10000+) goes as text.
// In ISO DateStyle exactly those values print with a four-digit year and no " BC" suffix.
const fourDigitYearAD = (field: string) => `(substr(${field}, 5, 1) = '-' AND NOT ends_with(${field}, ' BC'))`;
const dateOutsideRange = (column: string) => `NOT (${column} BETWEEN '0001-01-01'::date AND '9999-12-31'::date)`;
const timestampOutsideRange = (type: string) => (column: string) =>
  `NOT (${column} >= '0001-01-01 00:00:00${type === 'timestamptz' ? '+00' : ''}'::${type} AND ${column} < '10000-01-01 00:00:00${type === 'timestamptz' ? '+00' : ''}'::${type})`;

const NATIVE_TYPES: Readonly<Record<string, NativeType>> = {
  bool: { duckdbType: 'BOOLEAN', parquetType: 'BOOLEAN', fromCopy: cast('BOOLEAN') },
  int2: { duckdbType: 'SMALLINT', parquetType: 'INT32 (INT(16,true))', fromCopy: cast('SMALLINT') },
  int4: { duckdbType: 'INTEGER', parquetType: 'INT32', fromCopy: cast('INTEGER') },
  int8: { duckdbType: 'BIGINT', parquetType: 'INT64', fromCopy: cast('BIGINT') },
  // PostgreSQL prints the shortest text that reads back to the same float4; DuckDB's cast rounds
  // it once, correctly, to the same float (the type-torture table checks the extremes).
  float4: { duckdbType: 'FLOAT', parquetType: 'FLOAT', fromCopy: cast('FLOAT') },
  float8: { duckdbType: 'DOUBLE', parquetType: 'DOUBLE', fromCopy: cast('DOUBLE') },
  text: { duckdbType: 'VARCHAR', parquetType: 'BYTE_ARRAY (STRING)', fromCopy: text },
  varchar: { duckdbType: 'VARCHAR', parquetType: 'BYTE_ARRAY (STRING)', fromCopy: text },
  bpchar: { duckdbType: 'VARCHAR', parquetType: 'BYTE_ARRAY (STRING)', fromCopy: text },
  name: { duckdbType: 'VARCHAR', parquetType: 'BYTE_ARRAY (STRING)', fromCopy: text },
  // bytea_output = hex: `\x0001ff`, whose backslash COPY doubles.
  bytea: { duckdbType: 'BLOB', parquetType: 'BYTE_ARRAY', fromCopy: (f) => `from_hex(substr(${f}, 4))` },
  uuid: { duckdbType: 'UUID', parquetType: 'FIXED_LEN_BYTE_ARRAY(16) (UUID)', fromCopy: cast('UUID') },
  json: { duckdbType: 'JSON', parquetType: 'BYTE_ARRAY (JSON)', fromCopy: (f) => `CAST(${text(f)} AS JSON)` },
  jsonb: { duckdbType: 'JSON', parquetType: 'BYTE_ARRAY (JSON)', fromCopy: (f) => `CAST(${text(f)} AS JSON)` },
  date: { duckdbType: 'DATE', parquetType: 'INT32 (DATE)', fromCopy: cast('DATE'), holds: fourDigitYearAD, unrepresentable: dateOutsideRange },
  timestamp: {
    duckdbType: 'TIMESTAMP',
    parquetType: 'INT64 (TIMESTAMP(MICROS,false))',
    fromCopy: cast('TIMESTAMP'),
    holds: fourDigitYearAD,
    unrepresentable: timestampOutsideRange('timestamp'),
  },
  timestamptz: {
    duckdbType: 'TIMESTAMP WITH TIME ZONE',
    parquetType: 'INT64 (TIMESTAMP(MICROS,true))',
    fromCopy: cast('TIMESTAMPTZ'),
    holds: fourDigitYearAD,
    unrepresentable: timestampOutsideRange('timestamptz'),
  },
};

const TEXT_FORM: NativeType = { duckdbType: 'VARCHAR', parquetType: 'BYTE_ARRAY (STRING)', fromCopy: text };

/** numeric(p,s) with 1 ≤ p ≤ 38 and 0 ≤ s ≤ p fits DECIMAL(p,s); unconstrained numeric does not. */
function decimalType(column: ColumnDefinition): NativeType | undefined {
  const match = /^numeric\((\d+),(-?\d+)\)$/.exec(column.type);
  if (!match) return undefined;
  const precision = Number(match[1]);
  const scale = Number(match[2]);
  if (precision < 1 || precision > 38 || scale < 0 || scale > precision) return undefined;
  return {
    duckdbType: `DECIMAL(${precision},${scale})`,
    parquetType: `DECIMAL(${precision},${scale})`,
    // DuckDB's cast refuses NaN and ±Infinity; every finite numeric(p,s) value fits.
    fromCopy: cast(`DECIMAL(${precision},${scale})`),
    // Every finite numeric(p≤38) value lies strictly inside ±1e38; NaN sorts above every number.
    unrepresentable: (c) => `(${c} > 1e38::numeric OR ${c} < -1e38::numeric)`,
  };
}

export interface ColumnPlan {
  column: ColumnDefinition;
  /** Column name inside the Parquet file (the PostgreSQL name unless two names differ only by case). */
  parquetName: string;
  native: NativeType | undefined;
}

/** The candidate storage of a column before its values are looked at. */
export function planColumn(column: ColumnDefinition, parquetName: string): ColumnPlan {
  const builtin = column.typeSchema === 'pg_catalog' ? NATIVE_TYPES[column.typeName] : undefined;
  const native = builtin ?? (column.typeSchema === 'pg_catalog' && column.typeName === 'numeric' ? decimalType(column) : undefined);
  return { column, parquetName, native };
}

/**
 * Parquet column names: DuckDB folds identifiers case-insensitively, so `"Name"` and `name` in
 * one table cannot both be kept as they are; the later one gets `_<attnum>` appended.
 */
export function parquetNames(columns: readonly ColumnDefinition[]): string[] {
  const taken = new Set<string>();
  return columns.map((column) => {
    let name = column.name;
    if (taken.has(name.toLowerCase())) name = `${column.name}_${column.attnum}`;
    while (taken.has(name.toLowerCase())) name = `${name}_`;
    taken.add(name.toLowerCase());
    return name;
  });
}

/** SQL that is true when a column holds a value its native Parquet type cannot carry, or null. */
export function unrepresentableSql(plan: ColumnPlan): string | null {
  return plan.native?.unrepresentable ? plan.native.unrepresentable(quoteIdent(plan.column.name)) : null;
}

export interface ColumnStorage {
  storedAs: StoredAs;
  duckdbType: string;
  parquetType: string;
  /** DuckDB expression over the raw COPY text field named `field`. */
  duckdbExpression: (field: string) => string;
}

/** The cast, behind the type's range guard: a value the type cannot hold stops the encode. */
function guardedCast(type: NativeType, columnName: string): (field: string) => string {
  const holds = type.holds;
  if (!holds) return type.fromCopy;
  const message = `backstop: column ${JSON.stringify(columnName)} holds a value its native type cannot carry`;
  return (field) => `CASE WHEN ${field} IS NULL OR ${holds(field)} THEN ${type.fromCopy(field)} ELSE error('${message.replaceAll("'", "''")}') END`;
}

/** Final storage of a column, once it is known whether its values all fit the native type. */
export function resolveStorage(plan: ColumnPlan, hasUnrepresentable: boolean): ColumnStorage {
  const type = plan.native && !hasUnrepresentable ? plan.native : undefined;
  if (!type) {
    return { storedAs: 'text', duckdbType: TEXT_FORM.duckdbType, parquetType: TEXT_FORM.parquetType, duckdbExpression: TEXT_FORM.fromCopy };
  }
  return {
    storedAs: 'native',
    duckdbType: type.duckdbType,
    parquetType: type.parquetType,
    duckdbExpression: guardedCast(type, plan.column.name),
  };
}

/** Whether the column is stored natively when its values allow (for warnings about the rest). */
export function hasNativeType(plan: ColumnPlan): boolean {
  return plan.native !== undefined;
}
