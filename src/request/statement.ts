/**
 * Which critical operations a request's statement performs, found with the real PostgreSQL
 * parser (libpg-query). The guard files the whole client string (current_query()), so a request
 * may hold several statements: every critical statement contributes. Statements Backstop cannot
 * see into (DO blocks, function calls that run dynamic SQL) are reported so the agent can deny
 * with a reason a DBA can act on instead of guessing.
 */
import { loadModule, parseSync } from 'libpg-query';
import { BackstopError, describeError } from '../errors/index.js';

/** A table as written in the statement; `schema` is absent when the name is unqualified. */
export interface RelationName {
  schema?: string;
  name: string;
}

export type CriticalOperation =
  | { kind: 'drop_table'; relation: RelationName; missingOk: boolean; cascade: boolean }
  | { kind: 'drop_schema'; schema: string; missingOk: boolean; cascade: boolean }
  | { kind: 'drop_column'; relation: RelationName; column: string; missingOk: boolean; includeChildren: boolean }
  | { kind: 'alter_column_type'; relation: RelationName; column: string; missingOk: boolean; includeChildren: boolean }
  | { kind: 'truncate'; relation: RelationName; includeChildren: boolean; cascade: boolean };

export interface ParsedStatement {
  operations: CriticalOperation[];
  /** Statements whose effect is hidden from the parser, e.g. `DO block`. */
  opaque: string[];
}

/** The statement text cannot be parsed; the agent denies with this message. */
export class StatementParseError extends BackstopError {
  constructor(message: string, options: { cause?: unknown; hint?: string } = {}) {
    super('statement_parse', message, options);
  }
}

let loaded: Promise<void> | undefined;

/** libpg-query is WASM: it must be loaded once before parseSync works. */
export function loadParser(): Promise<void> {
  loaded ??= loadModule();
  return loaded;
}

type Node = Record<string, any>;

function stringValue(node: Node | undefined): string {
  const value = node?.String?.sval;
  if (typeof value !== 'string') throw new StatementParseError('unexpected name in statement');
  return value;
}

/** DROP TABLE objects are lists of name parts: [table], [schema, table] or [db, schema, table]. */
function relationFromParts(parts: Node[]): RelationName {
  const names = parts.map(stringValue);
  const name = names[names.length - 1]!;
  return names.length >= 2 ? { schema: names[names.length - 2]!, name } : { name };
}

function relationFromRangeVar(rangeVar: Node): RelationName {
  return rangeVar.schemaname ? { schema: rangeVar.schemaname, name: rangeVar.relname } : { name: rangeVar.relname };
}

function dropOperations(stmt: Node): CriticalOperation[] {
  const missingOk = Boolean(stmt.missing_ok);
  const cascade = stmt.behavior === 'DROP_CASCADE';
  const objects: Node[] = stmt.objects ?? [];
  if (stmt.removeType === 'OBJECT_TABLE') {
    return objects.map((object) => ({ kind: 'drop_table', relation: relationFromParts(object.List?.items ?? []), missingOk, cascade }));
  }
  if (stmt.removeType === 'OBJECT_SCHEMA') {
    return objects.map((object) => ({ kind: 'drop_schema', schema: stringValue(object), missingOk, cascade }));
  }
  return [];
}

function alterTableOperations(stmt: Node): CriticalOperation[] {
  if (stmt.objtype !== 'OBJECT_TABLE') return [];
  const relation = relationFromRangeVar(stmt.relation);
  const includeChildren = Boolean(stmt.relation.inh);
  const missingOk = Boolean(stmt.missing_ok);
  const operations: CriticalOperation[] = [];
  for (const command of stmt.cmds ?? []) {
    const cmd: Node = command.AlterTableCmd;
    if (cmd?.subtype === 'AT_DropColumn') operations.push({ kind: 'drop_column', relation, column: cmd.name, missingOk, includeChildren });
    if (cmd?.subtype === 'AT_AlterColumnType') operations.push({ kind: 'alter_column_type', relation, column: cmd.name, missingOk, includeChildren });
  }
  return operations;
}

function truncateOperations(stmt: Node): CriticalOperation[] {
  const cascade = stmt.behavior === 'DROP_CASCADE';
  return (stmt.relations ?? []).map((entry: Node) => ({
    kind: 'truncate' as const,
    relation: relationFromRangeVar(entry.RangeVar),
    includeChildren: Boolean(entry.RangeVar.inh),
    cascade,
  }));
}

/** Parse `sql` (one or several statements). Throws StatementParseError on a syntax error. */
export async function parseStatement(sql: string): Promise<ParsedStatement> {
  await loadParser();
  let tree: { stmts?: { stmt: Node }[] };
  try {
    tree = parseSync(sql);
  } catch (error) {
    throw new StatementParseError(`the statement could not be parsed: ${describeError(error)}`, { cause: error });
  }
  const operations: CriticalOperation[] = [];
  const opaque: string[] = [];
  for (const { stmt } of tree.stmts ?? []) {
    if (stmt.DropStmt) operations.push(...dropOperations(stmt.DropStmt));
    else if (stmt.AlterTableStmt) operations.push(...alterTableOperations(stmt.AlterTableStmt));
    else if (stmt.TruncateStmt) operations.push(...truncateOperations(stmt.TruncateStmt));
    else if (stmt.DoStmt) opaque.push('DO block');
  }
  return { operations, opaque };
}
