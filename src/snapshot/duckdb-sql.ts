/** Quoting for the SQL Backstop sends to DuckDB (capture's encoder, restore's reader). */

export function duckdbString(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

export function duckdbIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
