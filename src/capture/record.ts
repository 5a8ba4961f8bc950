/**
 * Where a captured snapshot is recorded: backstop.snapshots (what a DBA and the readiness view
 * read, through agent_record_snapshot) and the agent's local catalog.
 */
import type pg from 'pg';
import type { AgentState } from '../agent/state.js';
import { checksumHex, type Manifest } from '../snapshot/manifest.js';

export async function recordCapturedSnapshot(pool: pg.Pool, state: AgentState | undefined, manifest: Manifest, verified: boolean): Promise<void> {
  // agent_record_snapshot reads `sha256` before `checksum`: the catalog keeps the bare hex for
  // manifests of every format, with no change to the installed SQL.
  await pool.query('SELECT backstop.agent_record_snapshot($1::jsonb)', [JSON.stringify({ ...manifest, sha256: checksumHex(manifest), verified })]);
  state?.recordSnapshot({
    snapshotId: manifest.snapshot_id,
    schema: manifest.schema,
    table: manifest.table,
    createdAt: new Date(manifest.created_at),
    source: manifest.source,
    label: manifest.label ?? undefined,
    rowCount: manifest.row_count,
    sizeBytes: manifest.size_bytes,
    manifest,
  });
}
