/**
 * The order in which a recovery group's tables are restored: referenced tables before the
 * tables that reference them (a table referencing itself does not count). Tables caught in a
 * reference cycle keep their capture order after everything else; their foreign keys are added
 * once every table of the group is loaded, so a cycle still restores.
 */
import type { TableDefinition } from '../db/catalog.js';
import { displayName } from '../db/identifiers.js';

export function foreignKeyOrder<T>(items: readonly T[], definitionOf: (item: T) => TableDefinition): T[] {
  const keyOf = (def: TableDefinition) => displayName({ schema: def.schema, table: def.table });
  const keys = items.map((item) => keyOf(definitionOf(item)));
  const present = new Set(keys);
  // references[i]: keys of group tables that item i references (other than itself).
  const references = items.map((item, i) => {
    const refs = new Set<string>();
    for (const constraint of definitionOf(item).constraints) {
      if (constraint.type !== 'f' || !constraint.references) continue;
      const ref = displayName({ schema: constraint.references.schema, table: constraint.references.table });
      if (ref !== keys[i] && present.has(ref)) refs.add(ref);
    }
    return refs;
  });
  const ordered: T[] = [];
  const placed = new Set<string>();
  const remaining = items.map((_, i) => i);
  for (;;) {
    const ready = remaining.filter((i) => [...references[i]!].every((ref) => placed.has(ref)));
    if (ready.length === 0) break;
    for (const i of ready) {
      ordered.push(items[i]!);
      placed.add(keys[i]!);
      remaining.splice(remaining.indexOf(i), 1);
    }
  }
  for (const i of remaining) ordered.push(items[i]!);
  return ordered;
}
