/**
 * Identifier quoting and qualified-name parsing for SQL built in TypeScript. Values always go as
 * query parameters; identifiers go through quoteIdent. Table names with quotes, spaces, capitals
 * and unicode are ordinary here.
 */
import pg from 'pg';
import { ConfigError } from '../errors/index.js';

export function quoteIdent(name: string): string {
  return pg.Client.prototype.escapeIdentifier(name);
}

/**
 * A string literal, as quote_literal writes it: backslashes make it an E'' literal, so it reads
 * back the same whatever standard_conforming_strings is. For SQL shown to people or run as a
 * script; values sent by this process go as parameters.
 */
export function quoteLiteral(text: string): string {
  const quoted = `'${text.replaceAll("'", "''")}'`;
  return text.includes('\\') ? `E${quoted.replaceAll('\\', '\\\\')}` : quoted;
}

export interface QualifiedName {
  schema: string;
  table: string;
}

export function quoteQualified(name: QualifiedName): string {
  return `${quoteIdent(name.schema)}.${quoteIdent(name.table)}`;
}

/** `schema.table` for display and storage paths, unquoted. */
export function displayName(name: QualifiedName): string {
  return `${name.schema}.${name.table}`;
}

/**
 * Parse a user-written table name the way PostgreSQL would: `users`, `public.users`,
 * `"My Schema"."Odd ""name"""`. Unquoted parts fold to lower case. The schema defaults to
 * `defaultSchema` (callers that need search_path resolution should ask the server instead).
 */
export function parseQualifiedName(input: string, defaultSchema = 'public'): QualifiedName {
  const parts: string[] = [];
  let i = 0;
  const text = input.trim();
  while (i < text.length) {
    let part = '';
    if (text[i] === '"') {
      i += 1;
      for (;;) {
        if (i >= text.length) throw new ConfigError(`unterminated quoted identifier in "${input}"`, { hint: 'close the double quote, e.g. "My Table"' });
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            part += '"';
            i += 2;
            continue;
          }
          i += 1;
          break;
        }
        part += text[i];
        i += 1;
      }
    } else {
      const start = i;
      while (i < text.length && text[i] !== '.') i += 1;
      part = text.slice(start, i).trim().toLowerCase();
    }
    if (part === '') throw new ConfigError(`"${input}" is not a valid table name`, { hint: 'write table or schema.table; quote names with capitals or dots: "My Table"' });
    parts.push(part);
    if (i < text.length) {
      if (text[i] !== '.') throw new ConfigError(`unexpected character after identifier in "${input}"`, { hint: 'write table or schema.table' });
      i += 1;
    }
  }
  if (parts.length === 1) return { schema: defaultSchema, table: parts[0]! };
  if (parts.length === 2) return { schema: parts[0]!, table: parts[1]! };
  throw new ConfigError(`"${input}" has too many dotted parts`, { hint: 'write table or schema.table' });
}
