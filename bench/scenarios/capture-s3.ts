/**
 * Capture to S3 (s3rver, in its own process on 127.0.0.1) side by side with the same capture to
 * a local folder: the target is the S3 capture's wall time over the local one's.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { ScenarioContext } from '../context.js';
import { BENCH_DATABASE, type BenchTable } from '../dataset.js';
import { sideBySide } from '../measure.js';
import type { ScenarioResult } from '../results.js';
import { startS3 } from '../s3.js';
import { newRunStats, processContender, resourceSummary } from '../contenders.js';

const TARGET_RATIO = 1.3;

export async function captureS3(context: ScenarioContext, table: BenchTable): Promise<ScenarioResult[]> {
  const { server, options, workDir, cli, log } = context;
  const id = `capture-s3@${table.size}`;
  const title = `capture ${table.name} to S3 (s3rver)`;
  const unavailable = context.buildError ? `the CLI does not build: ${context.buildError}` : await cli.unavailable('snapshot');
  if (unavailable) return [{ scenario: 'capture-s3', id, title, size: table.size, status: 'not-measured', reason: unavailable }];

  const db = server.urlFor(BENCH_DATABASE);
  const s3 = await startS3(workDir);
  try {
    const localStorage = (iteration: number) => path.join(workDir, `s3cmp-local-${iteration}`);
    const stats = { s3: newRunStats(), local: newRunStats() };
    log(`capture ${table.name}: S3 at ${s3.endpoint} | local folder`);
    const summaries = await sideBySide(
      [
        processContender(server, 'backstop snapshot (S3)', (i) => cli.snapshot(db, s3.storageUrl(`run-${i}`), table.name, s3.env), stats.s3),
        processContender(server, 'backstop snapshot (local)', (i) => cli.snapshot(db, localStorage(i), table.name), stats.local, {
          cleanup: (i) => rm(localStorage(i), { recursive: true, force: true }),
        }),
      ],
      { warmup: options.warmup, runs: options.runs, log },
    );
    const viaS3 = summaries.get('backstop snapshot (S3)')!;
    const local = summaries.get('backstop snapshot (local)')!;
    const ratio = viaS3.median / local.median;
    return [{
      scenario: 'capture-s3', id, title, size: table.size, status: 'measured',
      backstop: { label: 'backstop snapshot → S3 (s3rver)', unit: 'ms', summary: viaS3 },
      anchor: { label: 'backstop snapshot → local folder', unit: 'ms', summary: local },
      ratio,
      target: { text: `≤ ${TARGET_RATIO}× the local capture`, met: ratio <= TARGET_RATIO },
      extra: { s3: resourceSummary(stats.s3, options.warmup), local: resourceSummary(stats.local, options.warmup), endpoint: s3.endpoint },
    }];
  } finally {
    await s3.stop();
  }
}
