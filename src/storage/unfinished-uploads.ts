/**
 * Multipart uploads that never finished. A capture killed while its data file streams to S3
 * (SIGKILL, OOM, a host that died) leaves the parts uploaded so far in the bucket: invisible to
 * listings, billed until someone aborts the upload (10 killed captures of a 1M-row table left
 * 323 MB). So before the first part of an upload is sent, S3 storage writes a small record of it,
 * `uploads/<hash>.json` beside `snapshots/` (who uploads what: host, pid, a per-process
 * instance id, renewed every 10 minutes), and removes the record once the upload is completed or
 * aborted. Whatever a record outlives is an upload to abort: at the agent's next start, at each
 * `backstop prune`, and `backstop doctor` reports it. ListMultipartUploads, where the service
 * offers and permits it, adds what has no record (uploads of older versions).
 *
 * `planUploadCleanup` decides, purely, which uploads are abandoned; the caller aborts them.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { describeError } from '../errors/index.js';
import { silentLogger, type Logger } from '../log/logger.js';
import type { Storage } from './storage.js';

export const UPLOAD_RECORDS_PREFIX = 'uploads/';
/** How often an uploading process rewrites its record. */
export const RECORD_RENEW_MS = 10 * 60_000;
/** A record not renewed for this long belongs to a process that stopped (or hangs): its upload is aborted. */
export const RECORD_STALE_MS = 60 * 60_000;
/** An upload without a record (an older Backstop's, or one whose record was lost) is aborted once this old. */
export const UNRECORDED_GRACE_MS = 24 * 60 * 60_000;

/** Who uploads: enough to tell, on the same host, whether that process still runs. */
export interface UploadOwner {
  host: string;
  pid: number;
  /** Random per process: tells a restarted process that got the same pid (pid 1 in a container) from the one before. */
  instance: string;
}

export const THIS_PROCESS: UploadOwner = { host: os.hostname(), pid: process.pid, instance: randomBytes(6).toString('hex') };

export interface UploadRecord {
  format: 'backstop-upload/v1';
  /** Storage key of the object being uploaded. */
  key: string;
  upload_id: string;
  owner: UploadOwner;
  started_at: string;
  renewed_at: string;
}

export interface UnfinishedUpload {
  /** Storage key of the object being uploaded. */
  key: string;
  uploadId: string;
  /** From ListMultipartUploads. */
  initiated?: Date;
  /** Backstop's record of it, with the record's own key. */
  record?: UploadRecord & { recordKey: string };
  /** Bytes of the parts uploaded so far (ListParts), when asked for. */
  bytes?: number;
}

export interface UnfinishedUploadsListing {
  uploads: UnfinishedUpload[];
  /**
   * Why ListMultipartUploads could not be used (the service does not offer it, or this identity
   * may not call it): uploads without a record are then invisible to Backstop.
   */
  listingError?: string;
}

export interface UploadDecision {
  upload: UnfinishedUpload;
  why: string;
}

export interface UploadCleanupPlan {
  abort: UploadDecision[];
  leave: UploadDecision[];
}

export interface PlanUploadOptions {
  now: Date;
  self?: UploadOwner;
  /** Does a process with this pid run on this host? */
  isAlive?: (pid: number) => boolean;
  staleAfterMs?: number;
  unrecordedGraceMs?: number;
}

export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, under another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function minutes(ms: number): string {
  return `${Math.round(ms / 60_000)} min`;
}

/** Which unfinished uploads were abandoned (abort them) and which may still be running (leave them). */
export function planUploadCleanup(uploads: readonly UnfinishedUpload[], options: PlanUploadOptions): UploadCleanupPlan {
  const self = options.self ?? THIS_PROCESS;
  const isAlive = options.isAlive ?? processIsAlive;
  const staleAfter = options.staleAfterMs ?? RECORD_STALE_MS;
  const grace = options.unrecordedGraceMs ?? UNRECORDED_GRACE_MS;
  const now = options.now.getTime();
  const plan: UploadCleanupPlan = { abort: [], leave: [] };
  for (const upload of uploads) {
    const { record } = upload;
    if (!record) {
      const age = upload.initiated ? now - upload.initiated.getTime() : undefined;
      if (age !== undefined && age > grace) plan.abort.push({ upload, why: `no record of it, started ${minutes(age)} ago` });
      else plan.leave.push({ upload, why: 'no record of it, started recently (a capture of an older Backstop may still be running)' });
      continue;
    }
    const { owner } = record;
    const silentFor = now - Date.parse(record.renewed_at);
    if (owner.instance === self.instance) {
      plan.leave.push({ upload, why: 'in flight in this process' });
    } else if (!(silentFor <= staleAfter)) {
      plan.abort.push({ upload, why: `its record was last renewed ${minutes(silentFor)} ago by process ${owner.pid} on ${owner.host}` });
    } else if (owner.host === self.host && (owner.pid === self.pid || !isAlive(owner.pid))) {
      plan.abort.push({ upload, why: `process ${owner.pid} on this host, which uploaded it, is gone` });
    } else {
      plan.leave.push({ upload, why: `in flight: process ${owner.pid} on ${owner.host} renewed its record ${minutes(silentFor)} ago` });
    }
  }
  return plan;
}

export interface UploadCleanupReport {
  /** Aborted (or that would be, with dryRun). */
  aborted: UploadDecision[];
  left: UploadDecision[];
  /** Abandoned uploads whose abort failed: still there. */
  failed: Array<UploadDecision & { error: string }>;
  listingError?: string;
  /** False for storage without multipart uploads (a local folder). */
  supported: boolean;
}

/**
 * Abort the multipart uploads that killed captures left behind (see planUploadCleanup). Never
 * throws for one upload: a failed abort is reported and tried again next time.
 */
export async function cleanUpUnfinishedUploads(
  storage: Storage,
  options: { dryRun?: boolean; now?: Date; logger?: Logger; sizes?: boolean } = {},
): Promise<UploadCleanupReport> {
  const logger = options.logger ?? silentLogger;
  if (!storage.unfinishedUploads || !storage.abortUpload) return { aborted: [], left: [], failed: [], supported: false };
  const listing = await storage.unfinishedUploads({ sizes: options.sizes ?? false });
  const plan = planUploadCleanup(listing.uploads, { now: options.now ?? new Date() });
  const report: UploadCleanupReport = { aborted: [], left: plan.leave, failed: [], supported: true, ...(listing.listingError ? { listingError: listing.listingError } : {}) };
  for (const decision of plan.abort) {
    const fields = { event: 'uploads.aborted', key: decision.upload.key, upload_id: decision.upload.uploadId, why: decision.why };
    if (options.dryRun) {
      report.aborted.push(decision);
      logger.info('unfinished upload would be aborted (dry run)', fields);
      continue;
    }
    try {
      await storage.abortUpload(decision.upload);
      report.aborted.push(decision);
      logger.info('unfinished upload aborted', fields);
    } catch (error) {
      report.failed.push({ ...decision, error: describeError(error) });
      logger.warn('unfinished upload could not be aborted; will try again', { ...fields, event: 'uploads.abort_failed', error: describeError(error) });
    }
  }
  return report;
}
