/**
 * Denial reasons for requests the agent cannot answer from the statement alone. Each says what
 * happened and what the DBA can do next.
 */
import { BackstopError, describeError } from '../errors/index.js';

const GUARDED_TAGS = new Set(['DROP TABLE', 'DROP SCHEMA', 'ALTER TABLE', 'TRUNCATE TABLE']);

function example(commandTag: string | null): string {
  return commandTag && GUARDED_TAGS.has(commandTag) ? `${commandTag} …` : 'DROP TABLE …';
}

export function fileAheadHint(commandTag: string | null): string {
  return `file the plain statement first with SELECT backstop.request($$${example(commandTag)}$$), wait for its approval, then run it`;
}

export function unparseableReason(error: string, commandTag: string | null): string {
  return `the statement could not be parsed (${error}): ${fileAheadHint(commandTag)}`;
}

export function opaqueReason(opaque: string[], commandTag: string | null): string {
  const what = commandTag && GUARDED_TAGS.has(commandTag) ? `the ${commandTag}` : 'the statement';
  return `${what} runs inside a ${opaque.join(', ')}, which Backstop cannot see into: ${fileAheadHint(commandTag)}`;
}

export function notFoundReason(commandTag: string | null): string {
  return `no ${commandTag ?? 'guarded operation'} found in the statement text (it runs inside a function or dynamic SQL): ${fileAheadHint(commandTag)}`;
}

export function lockedByRequesterReason(table: string, commandTag: string | null): string {
  return `the requesting transaction holds an exclusive lock on ${table}, so no before-image can be read: ${fileAheadHint(commandTag)} before the transaction that touches ${table}`;
}

/**
 * Why a target's before-image failed. A capture error names its table itself (its `subject`,
 * e.g. `snapshot of public.big failed: …`); anything else is prefixed with that, once.
 */
export function captureFailedReason(table: string, error: unknown): string {
  if (error instanceof BackstopError && error.subject !== undefined) return error.message;
  return `snapshot of ${table} failed: ${describeError(error)}`;
}
