/**
 * What the agent's leader does besides deciding, assembled from the modules that do it:
 * before-image capture, TRUNCATE image export, on-demand snapshots, continuous snapshots.
 */
import type { Logger } from '../log/logger.js';
import { parseQualifiedName } from '../db/identifiers.js';
import { listSnapshots } from '../snapshot/list.js';
import { openStorage } from '../storage/open.js';
import type { Storage } from '../storage/storage.js';
import { BeforeImages, createCapturePool } from '../capture/before-image.js';
import { recordCapturedSnapshot } from '../capture/record.js';
import { TruncateExporter } from '../capture/truncate-export.js';
import { ImageCompleter } from '../capture/completion.js';
import { CaptureSlots, captureBudget } from '../capture/slots.js';
import type { Agent, AgentWork } from './agent.js';
import { SnapshotScheduler } from './scheduler.js';
import { RestoreServer } from './restores.js';
import { cleanUpUnfinishedUploads } from '../storage/unfinished-uploads.js';
import { describeError } from '../errors/index.js';

export async function openAgentStorage(url: string | undefined): Promise<Storage> {
  return openStorage(url);
}

export function agentWork(agent: Agent, storage: Storage, logger: Logger): AgentWork {
  const { options, metrics, state } = agent;
  // Captures get their own connections (with lock_timeout), so a long capture never starves
  // claims, decisions and the heartbeat of pool connections.
  const capturePool = createCapturePool(options.target, Math.max(2, options.concurrency * 2), `backstop agent ${agent.agentId} capture`);
  capturePool.on('error', (error) => logger.warn('idle capture connection failed', { error: error.message }));
  agent.onStop(() => capturePool.end());
  // Captures in one process must stay below the libuv threadpool size (see capture/slots.ts):
  // requests get most of the budget, continuous snapshots the rest.
  const budget = captureBudget();
  const requestSlots = Math.min(options.concurrency, Math.max(1, budget.captures - 1));
  const schedulerConcurrency = Math.min(options.concurrency, Math.max(1, budget.captures - requestSlots));
  if (requestSlots + schedulerConcurrency < options.concurrency * 2) {
    logger.info('captures at once limited by the libuv threadpool', {
      uv_threadpool_size: budget.threadpool, before_images: requestSlots, continuous: schedulerConcurrency,
      hint: 'start the agent with UV_THREADPOOL_SIZE=16 (or more) in its environment to allow --concurrency captures of each kind',
    });
  }
  const slots = new CaptureSlots(requestSlots);
  const record = (manifest: Parameters<typeof recordCapturedSnapshot>[2], verified: boolean) => recordCapturedSnapshot(agent.pool, state, manifest, verified);
  const beforeImages = new BeforeImages({
    pool: capturePool,
    storage,
    slots,
    logger: logger.child({ component: 'capture' }),
    record,
    observe: ({ manifest, seconds, failed }) => {
      if (failed) metrics.snapshotFailures.inc({ source: 'before-image' });
      if (manifest) {
        metrics.snapshotDuration.observe({ source: 'before-image' }, seconds);
        metrics.snapshotBytes.inc({ source: 'before-image' }, manifest.size_bytes);
      }
    },
  });
  // Continuous snapshots run on the leader only: started and stopped with leadership.
  const scheduler = new SnapshotScheduler({
    pool: capturePool,
    storage,
    state,
    metrics,
    logger: logger.child({ component: 'scheduler' }),
    options: {
      interval: options.intervalMs,
      everyPoll: options.snapshotEveryPoll,
      concurrency: schedulerConcurrency,
      ...(options.retention !== undefined ? { retention: options.retention } : {}),
      ...(options.recaptureFactor !== undefined ? { recaptureFactor: options.recaptureFactor } : {}),
      ...(options.schemas ? { schemas: options.schemas } : {}),
      stopTimeout: options.shutdownGraceMs ?? 20_000,
    },
  });
  const completer = new ImageCompleter({
    pool: capturePool,
    db: agent.pool,
    storage,
    agentId: agent.agentId,
    slots,
    logger: logger.child({ component: 'completion' }),
    record,
  });
  // Multipart uploads a killed capture left (its parts are billed until aborted): abort them now,
  // beside the start, never holding it up. Every agent may do this: an upload still running in
  // another live process is left alone (see planUploadCleanup).
  const uploadCleanup = cleanUpUnfinishedUploads(storage, { logger: logger.child({ component: 'storage' }) })
    .then((report) => {
      if (report.aborted.length > 0 || report.failed.length > 0) {
        logger.info('unfinished uploads cleaned up', { event: 'uploads.cleanup', aborted: report.aborted.length, failed: report.failed.length, left: report.left.length });
      }
    })
    .catch((error: unknown) => logger.warn('could not look for unfinished uploads; will try at the next start', { event: 'uploads.cleanup_failed', error: describeError(error) }));
  agent.onStop(() => uploadCleanup);
  const restores = new RestoreServer({ pool: agent.pool, target: options.target, storage, agentId: agent.agentId, logger: logger.child({ component: 'restore' }) });
  const truncateImages = new TruncateExporter({ pool: capturePool, storage, slots, logger: logger.child({ component: 'truncate-export' }), record });
  return {
    capturer: beforeImages,
    completer,
    exportTruncateImages: async (signal) => {
      await truncateImages.exportPending(signal);
    },
    serveSnapshotRequests: async (signal) => {
      await scheduler.handleSnapshotRequests(signal);
    },
    serveRestores: (signal) => restores.serve(signal),
    scheduler,
    // The same JSON as `backstop snapshots list --json`: snapshot summaries, newest first.
    listSnapshots: async (table) => listSnapshots(storage, { ...(table ? { table: parseQualifiedName(table) } : {}), logger }),
  };
}
