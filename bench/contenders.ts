/**
 * Contenders that run a child process (Backstop's CLI, pg_dump, psql, pg_restore) and keep, per
 * run, the process's peak RSS and CPU seconds and the server's CPU seconds over the same run.
 */
import { ServerCpuMeter } from './cpu.js';
import type { Contender } from './measure.js';
import type { MeasuredRun } from './processes.js';
import type { BenchServer } from './server.js';
import { round, summarize, type Summary } from './stats.js';

export interface RunStats {
  rssMb: number[];
  clientCpuS: number[];
  serverCpuS: number[];
}

export function newRunStats(): RunStats {
  return { rssMb: [], clientCpuS: [], serverCpuS: [] };
}

export interface ResourceSummary {
  peakRssMb: Summary | undefined;
  clientCpuS: Summary | undefined;
  serverCpuS: Summary | undefined;
}

/** Summaries of measured runs only: the first `warmup` entries belong to warm-up runs. */
export function resourceSummary(stats: RunStats, warmup: number): ResourceSummary {
  const of = (values: number[]) => (values.length > warmup ? summarize(values.slice(warmup).map((value) => round(value, 2))) : undefined);
  return { peakRssMb: of(stats.rssMb), clientCpuS: of(stats.clientCpuS), serverCpuS: of(stats.serverCpuS) };
}

/** Let exited backends be reaped by the postmaster, so their CPU time is counted. */
const REAP_WAIT_MS = 100;

export function processContender(
  server: BenchServer,
  name: string,
  start: (iteration: number) => Promise<MeasuredRun>,
  stats: RunStats,
  hooks: Pick<Contender, 'prepare' | 'cleanup'> = {},
): Contender {
  const meter = ServerCpuMeter.forDataDir(server.dataDir);
  return {
    name,
    ...hooks,
    async run(iteration) {
      const before = await meter?.seconds();
      const result = await start(iteration);
      if (meter && before !== undefined) {
        await new Promise((resolve) => setTimeout(resolve, REAP_WAIT_MS));
        const after = await meter.seconds();
        if (after !== undefined) stats.serverCpuS.push(after - before);
      }
      if (result.peakRssKb !== undefined) stats.rssMb.push(result.peakRssKb / 1024);
      if (result.cpuSeconds !== undefined) stats.clientCpuS.push(result.cpuSeconds);
      return result.wallMs;
    },
  };
}
