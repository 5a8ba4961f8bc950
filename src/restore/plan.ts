/**
 * What restoring one table does, as SQL, before anything runs: the statements that create the
 * table (without identity, so COPY can keep the captured identity values), the columns COPY
 * writes (generated columns are left out and recomputed), what runs after the load (identity,
 * sequences set past the restored values, indexes and constraints in bulk), the foreign keys,
 * the renames that swap a `--replace` build into place, what is attached to the table
 * (privileges, comments, triggers, policies…: attach.ts) and its owner. Restored as itself (an
 * undo of its drop), a table also gets back its schema and types first and, at the end, the
 * foreign keys of other tables that referenced it (undo-drop.ts). `--dry-run` prints this plan.
 */
import type pg from 'pg';
import { createTableSql, identityClause, type ColumnDefinition, type OwnedSequence, type PartitionDefinition, type TableDefinition, tableExists } from '../db/catalog.js';
import { displayName, quoteIdent, quoteLiteral, quoteQualified, type QualifiedName } from '../db/identifiers.js';
import { planAttachments, readAttachContext, requireTriggerFunctions, type AttachPlan, type AttachTargets, type SkippedAttachment } from './attach.js';
import { renameForTable, type SchemaNames } from './names.js';
import { newUndoDropRun, planPrerequisites, planReferencingKeys, undoesDrop, type NotRestored, type PlannedPrerequisites, type PlannedReferencingKey, type UndoDropRun } from './undo-drop.js';

export interface SequenceReset {
  sequence: QualifiedName;
  column: string;
  /** Captured state, as text (int8). */
  lastValue: string;
  isCalled: boolean;
  ascending: boolean;
}

export interface PlannedForeignKey {
  name: string;
  columns: string[];
  /** The referenced table under its final name (the restored table itself for a self-reference). */
  references: QualifiedName;
  referencedColumns: string[];
  /** MATCH, ON UPDATE/DELETE, DEFERRABLE, NOT VALID, as captured. */
  actions: string;
  /** COMMENT ON the constraint, run with it (a foreign key that does not hold is skipped, and its comment with it). */
  comment: string | null;
}

export interface SkippedForeignKey {
  name: string;
  references: QualifiedName;
  reason: string;
}

export interface RestorePlan {
  source: QualifiedName;
  /** Where the table ends up. */
  target: QualifiedName;
  /** Where it is built: the target, or a temporary name that the swap renames (--replace). */
  build: QualifiedName;
  create: string[];
  /** Columns COPY writes, in file order; generated columns are not among them. */
  copyColumns: ColumnDefinition[];
  afterLoad: string[];
  sequenceResets: SequenceReset[];
  /** Added once every table of the run is loaded and swapped in (see foreignKeySql). */
  foreignKeys: PlannedForeignKey[];
  skippedForeignKeys: SkippedForeignKey[];
  /** Renames run after the original is dropped (--replace only). */
  swap: string[];
  /**
   * What was attached to the table (privileges relative to the owner, comments, triggers, row-level
   * security, policies, storage parameters, replica identity: attach.ts), by final names, run by
   * the table's owner at that moment after the load, the swap and the foreign keys.
   */
  attach: string[];
  /** Attachments not recreated as captured (a grantee role missing here, …), and why. */
  skippedAttachments: SkippedAttachment[];
  /** The captured owner, given the table last (ownershipSql); null for manifests that did not capture it. */
  owner: string | null;
  /** The partitions under their final names (they are given the table's owner too). */
  partitionTargets: QualifiedName[];
  /** Undo of a drop only: the schema and types created before the table (empty otherwise). */
  prerequisites: PlannedPrerequisites;
  /** Undo of a drop only: other tables' foreign keys to this one, added after every table's own. */
  referencingKeys: PlannedReferencingKey[];
  /** What the restore leaves out, and why (foreign keys of the table itself: skippedForeignKeys). */
  notRestored: NotRestored[];
}

export interface PlanOptions {
  def: TableDefinition;
  target: QualifiedName;
  /** Temporary name to build under (--replace); defaults to the target. */
  build?: QualifiedName;
  /** Free names for the build (every relation in the schema counts as taken). */
  buildNames: SchemaNames;
  /** Free names for the final objects (the replaced table's own objects count as free). */
  finalNames: SchemaNames;
  /**
   * Where referenced tables are restored in the same run (recovery group): source
   * `schema.table` → target. A table referencing itself always points at its target.
   */
  restoredAs: Map<string, QualifiedName>;
  client: pg.ClientBase;
  /** Shared by the tables of one run, so that a schema or type they share is created once. */
  undoDrop?: UndoDropRun;
  /** Plan the schema, types and other tables' foreign keys of a table restored as itself (default true). */
  surroundings?: boolean;
}

function nextvalDefault(sequence: QualifiedName): string {
  return `nextval(${quoteLiteral(quoteQualified(sequence))}::regclass)`;
}

function sequenceOptions(sequence: OwnedSequence): string {
  return [
    `AS ${sequence.dataType}`,
    `INCREMENT BY ${sequence.increment}`,
    `MINVALUE ${sequence.min}`,
    `MAXVALUE ${sequence.max}`,
    `START WITH ${sequence.start}`,
    `CACHE ${sequence.cache}`,
    sequence.cycle ? 'CYCLE' : 'NO CYCLE',
  ].join(' ');
}

export async function planRestore(options: PlanOptions): Promise<RestorePlan> {
  const { def, target, buildNames, finalNames } = options;
  const build = options.build ?? target;
  const source = { schema: def.schema, table: def.table };
  const swapping = build.table !== target.table || build.schema !== target.schema;
  const create: string[] = [];
  const afterLoad: string[] = [];
  const swap: string[] = [];
  buildNames.reserve(build.table);
  finalNames.reserve(target.table);

  /** A build-time and a final name for an object named after the source table; the swap renames one to the other. */
  const names = (original: string, kind: 'INDEX' | 'SEQUENCE' | 'TABLE'): { build: string; final: string } => {
    const final = finalNames.claim(renameForTable(original, source.table, target.table));
    if (!swapping) return { build: final, final };
    const atBuild = buildNames.claim(renameForTable(original, source.table, build.table));
    swap.push(`ALTER ${kind} ${quoteQualified({ schema: target.schema, table: atBuild })} RENAME TO ${quoteIdent(final)}`);
    return { build: atBuild, final };
  };

  // Serial (non-identity) sequences: a new sequence per column, the default pointed at it.
  const columns = def.columns.map((column) => ({ ...column }));
  const sequenceResets: SequenceReset[] = [];
  const ownedBy: string[] = [];
  const finals: AttachTargets = { table: target, indexNames: new Map(), constraintNames: new Map(), sequenceNames: new Map() };
  for (const sequence of def.sequences) {
    const seqName = names(sequence.name, 'SEQUENCE');
    const atBuild = { schema: target.schema, table: seqName.build };
    const column = columns.find((c) => c.name === sequence.column);
    if (!column) continue;
    finals.sequenceNames.set(sequence.name, { schema: target.schema, table: seqName.final });
    if (sequence.identity) {
      afterLoad.push(`ALTER TABLE ${quoteQualified(build)} ALTER COLUMN ${quoteIdent(column.name)} ADD ${identityClause(column, sequence, atBuild)}`);
    } else {
      create.push(`CREATE SEQUENCE ${quoteQualified(atBuild)} ${sequenceOptions(sequence)}`);
      if (column.default === `nextval(${sequence.regclassLiteral}::regclass)`) column.default = nextvalDefault(atBuild);
      ownedBy.push(`ALTER SEQUENCE ${quoteQualified(atBuild)} OWNED BY ${quoteQualified(build)}.${quoteIdent(column.name)}`);
    }
    sequenceResets.push({
      sequence: atBuild,
      column: column.name,
      lastValue: sequence.lastValue,
      isCalled: sequence.isCalled,
      ascending: !sequence.increment.startsWith('-'),
    });
  }
  // Identity columns whose sequence was not captured still get their identity back.
  for (const column of columns) {
    if (column.identity && !def.sequences.some((s) => s.identity && s.column === column.name)) {
      afterLoad.unshift(`ALTER TABLE ${quoteQualified(build)} ALTER COLUMN ${quoteIdent(column.name)} ADD ${identityClause(column, undefined)}`);
    }
  }

  create.push(createTableSql({ ...def, columns }, build, { identity: false }));
  const partitionTargets: QualifiedName[] = [];
  const createPartitions = (parent: QualifiedName, partitions: PartitionDefinition[]): void => {
    for (const partition of partitions) {
      const partName = names(partition.table, 'TABLE');
      const atBuild = { schema: target.schema, table: partName.build };
      partitionTargets.push({ schema: target.schema, table: partName.final });
      const partitionBy = partition.partitionKey ? ` PARTITION BY ${partition.partitionKey}` : '';
      create.push(`CREATE TABLE ${quoteQualified(atBuild)} PARTITION OF ${quoteQualified(parent)} ${partition.bound}${partitionBy}`);
      createPartitions(atBuild, partition.partitions);
    }
  };
  createPartitions(build, def.partitions);
  create.push(...ownedBy);

  for (const index of def.indexes) {
    if (index.constraintName) continue;
    const indexName = names(index.name, 'INDEX');
    finals.indexNames.set(index.name, indexName.final);
    afterLoad.push(`CREATE ${index.unique ? 'UNIQUE ' : ''}INDEX ${quoteIdent(indexName.build)} ON ${quoteQualified(build)} USING ${index.usingClause}`);
  }
  const tableConstraints: string[] = [];
  for (const constraint of def.constraints) {
    if (constraint.type === 'f') continue;
    // Index-backed constraints name an index, which must be free in the schema.
    const name = constraint.type === 'c' ? { build: constraint.name, final: constraint.name } : names(constraint.name, 'INDEX');
    finals.constraintNames.set(constraint.name, name.final);
    // The index of a primary key, unique or exclusion constraint carries the constraint's name.
    if (constraint.type !== 'c') finals.indexNames.set(constraint.name, name.final);
    tableConstraints.push(`ADD CONSTRAINT ${quoteIdent(name.build)} ${constraint.definition}`);
  }
  // One ALTER TABLE: the checks are validated in a single pass over the table.
  if (tableConstraints.length > 0) afterLoad.push(`ALTER TABLE ${quoteQualified(build)}\n  ${tableConstraints.join(',\n  ')}`);

  const foreignKeys: PlannedForeignKey[] = [];
  const skippedForeignKeys: SkippedForeignKey[] = [];
  for (const constraint of def.constraints) {
    if (constraint.type !== 'f' || !constraint.references) continue;
    const ref = constraint.references;
    const refSource = { schema: ref.schema, table: ref.table };
    const selfReference = ref.schema === source.schema && ref.table === source.table;
    const restoredAs = options.restoredAs.get(displayName(refSource));
    const references = selfReference ? target : restoredAs ?? refSource;
    if (!selfReference && !restoredAs && !(await tableExists(options.client, references))) {
      skippedForeignKeys.push({ name: constraint.name, references, reason: `the referenced table ${quoteQualified(references)} does not exist` });
      continue;
    }
    const comment = def.attachments?.constraintComments.find((c) => c.name === constraint.name)?.comment ?? null;
    foreignKeys.push({ name: constraint.name, columns: ref.columns, references, referencedColumns: ref.referencedColumns, actions: ref.actions, comment });
  }
  const attached = await planTableAttachments(options.client, def, finals);

  if (swapping) swap.unshift(`ALTER TABLE ${quoteQualified(build)} RENAME TO ${quoteIdent(target.table)}`);

  const undo = (options.surroundings ?? true) && undoesDrop(def, target);
  const prerequisites = undo ? await planPrerequisites(options.client, def, options.undoDrop ?? newUndoDropRun()) : { statements: [], notes: [], notRestored: [] };
  // A --replace carries the original's referencing foreign keys over itself (restore.ts).
  const referencing = undo && !swapping ? await planReferencingKeys(options.client, def, target, new Set(options.restoredAs.keys())) : { keys: [], notRestored: [] };
  return {
    source,
    target,
    build,
    create,
    copyColumns: columns.filter((column) => column.generated === ''),
    afterLoad,
    sequenceResets,
    foreignKeys,
    skippedForeignKeys,
    swap,
    attach: attached.attach,
    skippedAttachments: attached.skipped,
    owner: def.attachments?.owner ?? null,
    partitionTargets,
    prerequisites,
    referencingKeys: referencing.keys,
    notRestored: [...prerequisites.notRestored, ...referencing.notRestored],
  };
}

/** planAttachments with what it needs read from the database; refuses a trigger whose function is missing. */
async function planTableAttachments(client: pg.ClientBase, def: TableDefinition, targets: AttachTargets): Promise<AttachPlan> {
  if (!def.attachments) return { attach: [], skipped: [] };
  await requireTriggerFunctions(client, def.attachments, targets.table);
  return planAttachments(def.attachments, targets, await readAttachContext(client, def.attachments, targets.table.schema));
}

/**
 * The statements that give the restored table (and its partitions) its captured owner, last:
 * owned sequences follow the table, and PostgreSQL rewrites the restoring role's entries in
 * every ACL as the new owner's. Empty when the manifest did not capture an owner.
 */
export function ownershipSql(plan: RestorePlan): string[] {
  if (plan.owner === null) return [];
  return [plan.target, ...plan.partitionTargets].map((table) => `ALTER TABLE ${quoteQualified(table)} OWNER TO ${quoteIdent(plan.owner!)}`);
}

/** COMMENT ON a restored foreign key, or null when it had none. */
export function foreignKeyCommentSql(table: QualifiedName, fk: PlannedForeignKey): string | null {
  return fk.comment === null ? null : `COMMENT ON CONSTRAINT ${quoteIdent(fk.name)} ON ${quoteQualified(table)} IS ${quoteLiteral(fk.comment)}`;
}

export function foreignKeySql(table: QualifiedName, fk: PlannedForeignKey): string {
  const columns = fk.columns.map(quoteIdent).join(', ');
  const referenced = fk.referencedColumns.map(quoteIdent).join(', ');
  return `ALTER TABLE ${quoteQualified(table)} ADD CONSTRAINT ${quoteIdent(fk.name)} FOREIGN KEY (${columns}) REFERENCES ${quoteQualified(fk.references)}(${referenced})${fk.actions}`;
}

/** The statement that sets a restored sequence past the restored values (parameters: regclass, last value, is_called). */
export function sequenceResetSql(reset: SequenceReset, table: QualifiedName): { text: string; values: unknown[] } {
  const column = quoteIdent(reset.column);
  const [agg, beyond] = reset.ascending ? ['max', '>'] : ['min', '<'];
  return {
    text: `SELECT pg_catalog.setval($1::regclass,
                   CASE WHEN m.v IS NOT NULL AND m.v ${beyond} $2::numeric THEN m.v ELSE $2::numeric END::bigint,
                   CASE WHEN m.v IS NOT NULL AND m.v ${beyond} $2::numeric THEN true ELSE $3::boolean END)
              FROM (SELECT ${agg}(${column})::numeric AS v FROM ${quoteQualified(table)}) AS m`,
    values: [quoteQualified(reset.sequence), reset.lastValue, reset.isCalled],
  };
}
