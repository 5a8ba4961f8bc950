/**
 * Completing a request's before-images, the last step before its statement takes effect.
 *
 * The bulk image was read while the statement waited, with nobody blocked; writes committed after
 * it are not in it. Once the request is otherwise approved, the waiting session locks the tables
 * IN EXCLUSIVE MODE (writers wait, this agent can still read) and files a completion
 * (backstop.image_completions). Under that lock, in a snapshot taken after it was granted, each
 * image is either
 *   - proven current: a census of the row versions equals the one taken with the bulk image
 *     (capture/census.ts) — one scan of system columns, the manifest records the proof; or
 *   - captured again (a new snapshot id replaces the bulk image's in the request).
 * Only then is the completion `done` and the statement goes on. Anything else fails the
 * completion with a reason, and the statement is refused: it never proceeds on a stale image.
 */
import pg from 'pg';
import { quoteQualified } from '../db/identifiers.js';
import { describeError, SnapshotError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import { verifyStoredChecksum } from '../gate/checksum.js';
import type { Queryable } from '../request/targets.js';
import { capturePart, captureTable } from '../snapshot/capture.js';
import { addContentHashes } from '../snapshot/content-hash.js';
import { inSnapshotTransaction } from '../snapshot/database-session.js';
import { manifestKeyForData } from '../snapshot/layout.js';
import { MANIFEST_FORMAT_WITH_PARTS, readManifest, writeManifest, type Manifest } from '../snapshot/manifest.js';
import type { Storage } from '../storage/storage.js';
import { addedRowsCondition, compareCensus, currentSnapshot, takeCensus, type CensusVerdict, type RowCensus } from './census.js';
import type { CaptureSlots } from './slots.js';

/** A completion as the agent reads it from backstop.image_completions. */
export interface CompletionRow {
  id: string;
  request_id: string;
  pid: number;
  status: string;
  agent_id: string | null;
}

/** How one image was completed, recorded in image_completions.detail and request_log.image_completion. */
export interface CompletedImage {
  table: string;
  snapshot_id: string;
  how: 'proof' | 'delta' | 'recapture';
  reason?: string;
  rows: number;
  ms: number;
}

export interface ImageCompleterOptions {
  /** Connections for reading the tables (captures' pool). */
  pool: pg.Pool;
  /** Connections for the agent API. */
  db: Queryable;
  storage: Storage;
  agentId: string;
  slots: CaptureSlots;
  logger: Logger;
  record(manifest: Manifest, verified: boolean): Promise<void>;
}

/** Completions waiting for an agent: requested, or left completing by an agent that is gone. */
export async function openCompletions(db: Queryable): Promise<CompletionRow[]> {
  const { rows } = await db.query<CompletionRow>(
    `SELECT id::text, request_id::text, pid, status, agent_id FROM backstop.image_completions
      WHERE status IN ('requested', 'completing') ORDER BY id`,
  );
  return rows;
}

async function claimCompletion(db: Queryable, id: string, agentId: string): Promise<boolean> {
  const { rows } = await db.query<{ claimed: boolean }>('SELECT backstop.agent_claim_completion($1::bigint, $2) AS claimed', [id, agentId]);
  return rows[0]?.claimed === true;
}

async function finishCompletion(db: Queryable, id: string, agentId: string, outcome: { snapshotIds?: string[]; detail?: unknown; error?: string }): Promise<string> {
  const { rows } = await db.query<{ status: string }>('SELECT backstop.agent_finish_completion($1::bigint, $2, $3::text[], $4::jsonb, $5) AS status', [
    id, agentId, outcome.snapshotIds ?? null, outcome.detail === undefined ? null : JSON.stringify(outcome.detail), outcome.error ?? null,
  ]);
  return rows[0]?.status ?? 'failed';
}

/**
 * Tables (with their partitions and inheritance children) that session `pid` does not hold IN
 * EXCLUSIVE MODE: while any is left, a writer could still commit after the completion's snapshot.
 * A table the session holds ACCESS EXCLUSIVE cannot be read at all.
 */
async function unlockedTables(db: Queryable, pid: number, tables: string[]): Promise<{ unlocked: string[]; exclusive: string[] }> {
  const { rows } = await db.query<{ name: string; mode: string | null }>(
    `WITH RECURSIVE tree(relid) AS (
        SELECT pg_catalog.to_regclass(name)::oid FROM unnest($2::text[]) AS name
        UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.relid)
     SELECT tree.relid::regclass::text AS name,
            (SELECT l.mode FROM pg_catalog.pg_locks l
              WHERE l.pid = $1 AND l.locktype = 'relation' AND l.granted AND l.relation = tree.relid
                AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
                AND l.mode IN ('ExclusiveLock', 'AccessExclusiveLock')
              ORDER BY l.mode = 'AccessExclusiveLock' DESC LIMIT 1) AS mode
       FROM tree WHERE tree.relid IS NOT NULL`,
    [pid, tables],
  );
  return {
    unlocked: rows.filter((row) => row.mode === null).map((row) => row.name),
    exclusive: rows.filter((row) => row.mode === 'AccessExclusiveLock').map((row) => row.name),
  };
}

/**
 * Tables the request covers (for anything but TRUNCATE) whose rows are in none of its images: an
 * image of a partitioned table holds its partitions as they are now (under the requester's lock,
 * none can be detached any more), any other image only its own table.
 */
async function coveredWithoutImage(db: Queryable, requestId: string, imaged: string[]): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    `WITH RECURSIVE held(relid) AS (
        SELECT pg_catalog.to_regclass(name)::oid FROM unnest($2::text[]) AS name
        UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN held ON i.inhparent = held.relid
                JOIN pg_catalog.pg_class c ON c.oid = held.relid WHERE c.relkind = 'p')
     SELECT DISTINCT item.relid::regclass::text AS name
       FROM backstop.request_log r, jsonb_to_recordset(r.coverage) AS item(kind text, relid oid)
      WHERE r.id = $1::bigint AND item.kind <> 'truncate'
        AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = item.relid)
        AND item.relid NOT IN (SELECT relid FROM held WHERE relid IS NOT NULL)`,
    [requestId, imaged],
  );
  return rows.map((row) => row.name);
}

export class ImageCompleter {
  private readonly options: ImageCompleterOptions;

  constructor(options: ImageCompleterOptions) {
    this.options = options;
  }

  /** Claim and answer one completion; false when another agent has it. Never throws for a failed completion: it is recorded as failed. */
  async complete(completion: CompletionRow, signal: AbortSignal): Promise<boolean> {
    const { db, agentId, logger } = this.options;
    if (!(await claimCompletion(db, completion.id, agentId))) return false;
    const log = logger.child({ request_id: completion.request_id, completion_id: completion.id });
    const started = performance.now();
    let status: string;
    try {
      const images = await this.completeImages(completion, signal, log);
      status = await finishCompletion(db, completion.id, agentId, { snapshotIds: images.map((image) => image.snapshot_id), detail: images });
      log.info('before-images completed', { status, images, ms: Math.round(performance.now() - started) });
    } catch (error) {
      const reason = describeError(error);
      status = await finishCompletion(db, completion.id, agentId, { error: reason });
      log.warn('before-images could not be completed; the statement is refused', { status, error: reason });
    }
    return true;
  }

  private async completeImages(completion: CompletionRow, signal: AbortSignal, log: Logger): Promise<CompletedImage[]> {
    const { db } = this.options;
    const { rows: [request] } = await db.query<{ snapshot_ids: string[] }>(
      'SELECT snapshot_ids FROM backstop.request_log WHERE id = $1::bigint',
      [completion.request_id],
    );
    if (!request) throw new SnapshotError(`request ${completion.request_id} does not exist`);
    const { rows: catalog } = await db.query<{ snapshot_id: string; manifest: Manifest }>(
      'SELECT snapshot_id, manifest FROM backstop.snapshot_catalog WHERE snapshot_id = ANY($1::text[])',
      [request.snapshot_ids],
    );
    // The catalog says where each image is; the stored manifest is what is read and rewritten.
    const manifests: Manifest[] = [];
    for (const id of request.snapshot_ids) {
      const found = catalog.find((row) => row.snapshot_id === id);
      const key = found ? manifestKeyForData(found.manifest.parquet_path) : undefined;
      if (!key) throw new SnapshotError(`before-image ${id} of request ${completion.request_id} is no longer in backstop.snapshots`);
      manifests.push(await readManifest(this.options.storage, key));
    }
    const tables = manifests.map((manifest) => quoted(manifest));
    const { unlocked, exclusive } = await unlockedTables(db, completion.pid, tables);
    if (exclusive.length > 0) {
      throw new SnapshotError(`the requesting transaction holds ${exclusive.join(', ')} exclusively, so its before-image cannot be read`);
    }
    if (unlocked.length > 0) {
      throw new SnapshotError(`the requesting session (pid ${completion.pid}) does not hold ${unlocked.join(', ')} IN EXCLUSIVE MODE, so writes could still follow`);
    }
    const completed: CompletedImage[] = [];
    for (const manifest of manifests) {
      signal.throwIfAborted();
      completed.push(await this.completeImage(manifest, completion, signal, log));
    }
    const unimaged = await coveredWithoutImage(db, completion.request_id, tables);
    if (unimaged.length > 0) {
      throw new SnapshotError(`the request covers ${unimaged.join(', ')}, whose rows no before-image holds (detached from a partitioned table since the request was filed?); file the statement again`);
    }
    return completed;
  }

  private async completeImage(manifest: Manifest, completion: CompletionRow, signal: AbortSignal, log: Logger): Promise<CompletedImage> {
    const started = performance.now();
    const table = { schema: manifest.schema, table: manifest.table };
    const census = manifest.as_of?.census;
    let verdict: CensusVerdict = { unchanged: false, added: false, reason: 'the bulk image has no row-version census' };
    let snapshot = '';
    let later: RowCensus | undefined;
    if (census) {
      ({ verdict, snapshot, later } = await inSnapshotTransaction(this.options.pool, undefined, async (client) => {
        const now = await takeCensus(client, quoted(manifest), census);
        return { verdict: compareCensus(census, now), snapshot: await currentSnapshot(client), later: now };
      }, signal));
    }
    const completedAt = new Date().toISOString();
    if (verdict.unchanged) {
      const proven: Manifest = {
        ...manifest,
        as_of: { ...manifest.as_of!, completion: { how: 'proof', snapshot, at: completedAt, request_id: Number(completion.request_id), completion_id: Number(completion.id) } },
      };
      const key = manifestKeyForData(manifest.parquet_path);
      if (!key) throw new SnapshotError(`before-image ${manifest.snapshot_id} has an unexpected data file name ${manifest.parquet_path}`);
      await writeManifest(this.options.storage, key, proven);
      await this.options.record(proven, true);
      return { table: quoted(manifest), snapshot_id: manifest.snapshot_id, how: 'proof', rows: manifest.row_count, ms: Math.round(performance.now() - started) };
    }
    if (!verdict.unchanged && verdict.added && census && later) {
      const added = await this.addRows(manifest, census, later, snapshot, completion, signal, log).catch((error: unknown) => {
        log.info('the rows written since could not be added as a part; capturing the table again', { table: quoted(manifest), error: describeError(error) });
        return undefined;
      });
      if (added) {
        return {
          table: quoted(manifest), snapshot_id: manifest.snapshot_id, how: 'delta', reason: verdict.reason, rows: added.row_count,
          ms: Math.round(performance.now() - started),
        };
      }
    }
    log.info('before-image is not current; capturing it again under the lock', { table: quoted(manifest), reason: verdict.reason });
    const recaptured = await this.options.slots.run(() => captureTable({
      pool: this.options.pool,
      storage: this.options.storage,
      table,
      source: 'before-image',
      requestId: Number(completion.request_id),
      label: `before-image of request ${completion.request_id}`,
      census: true,
      completion: { how: 'recapture', at: completedAt, request_id: Number(completion.request_id), completion_id: Number(completion.id), reason: verdict.reason },
      logger: log,
      signal,
    }));
    await verifyStoredChecksum(this.options.storage, recaptured);
    await this.options.record(recaptured, true);
    return {
      table: quoted(manifest), snapshot_id: recaptured.snapshot_id, how: 'recapture', reason: verdict.reason, rows: recaptured.row_count,
      ms: Math.round(performance.now() - started),
    };
  }
  /**
   * Only rows were added since the bulk image (the census proved every row it holds is still
   * there, unchanged): store just those as a further part of the same snapshot, and rewrite its
   * manifest (format 3) — the commit point. Writers wait for the added rows only, not for a
   * second read of the whole table.
   */
  private async addRows(
    manifest: Manifest,
    census: RowCensus,
    later: RowCensus,
    snapshot: string,
    completion: CompletionRow,
    signal: AbortSignal,
    log: Logger,
  ): Promise<Manifest> {
    const key = partKey(manifest);
    const storedAs = Object.fromEntries(manifest.columns.map((column) => [column.name, column.stored_as === 'text' ? 'text' as const : 'native' as const]));
    const part = await this.options.slots.run(() => capturePart({
      pool: this.options.pool,
      storage: this.options.storage,
      table: { schema: manifest.schema, table: manifest.table },
      key,
      rowFilter: addedRowsCondition(census, later, (value) => pg.Client.prototype.escapeLiteral(value)),
      storedAs,
      census: false,
      logger: log,
      signal,
    }));
    // The census that found the added rows was taken under the same lock: nothing has been
    // written since, so it is the census of the completed image (and `snapshot` its instant).
    const completed: Manifest = {
      ...manifest,
      format_version: MANIFEST_FORMAT_WITH_PARTS,
      parts: [...(manifest.parts ?? []), part],
      row_count: manifest.row_count + part.row_count,
      content_hash: addContentHashes(manifest.content_hash, part.content_hash),
      as_of: {
        ...manifest.as_of!,
        census: later,
        completion: { how: 'delta', snapshot, at: new Date().toISOString(), request_id: Number(completion.request_id), completion_id: Number(completion.id) },
      },
    };
    const manifestKey = manifestKeyForData(manifest.parquet_path)!;
    try {
      await writeManifest(this.options.storage, manifestKey, completed);
    } catch (error) {
      await this.options.storage.delete(key).catch(() => {});
      throw error;
    }
    await this.options.record(completed, true);
    log.info('rows written since the bulk image added to it', { table: quoted(manifest), rows: part.row_count, part: key });
    return completed;
  }
}

/** The key of a snapshot's next part: beside its main data file. */
function partKey(manifest: Manifest): string {
  const base = manifest.parquet_path.replace(/\.parquet$/, '');
  return `${base}.part-${(manifest.parts?.length ?? 0) + 1}.parquet`;
}

function quoted(manifest: Pick<Manifest, 'schema' | 'table'>): string {
  return quoteQualified({ schema: manifest.schema, table: manifest.table });
}
