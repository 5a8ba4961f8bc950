/**
 * CPU seconds spent by the PostgreSQL server, for the CPU-budget evidence in BENCHMARKS.md (on 2
 * cores, an operation that needs more than 2 CPU-seconds per wall-second cannot get faster by
 * overlapping). Read from /proc: the postmaster's own and reaped children's time (backends that
 * exited) plus the time of the children still running. Only for a local cluster.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

const TICKS_PER_SECOND = 100;

interface ProcStat {
  ppid: number;
  /** utime + stime (+ cutime + cstime when `withChildren`), in ticks. */
  ticks: number;
}

async function readStat(pid: number, withChildren: boolean): Promise<ProcStat | undefined> {
  try {
    const text = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(fields[1]);
    const [utime, stime, cutime, cstime] = [11, 12, 13, 14].map((index) => Number(fields[index]));
    return { ppid, ticks: utime! + stime! + (withChildren ? cutime! + cstime! : 0) };
  } catch {
    return undefined;
  }
}

export class ServerCpuMeter {
  constructor(private readonly dataDir: string) {}

  static forDataDir(dataDir: string | undefined): ServerCpuMeter | undefined {
    return dataDir && existsSync(path.join(dataDir, 'postmaster.pid')) ? new ServerCpuMeter(dataDir) : undefined;
  }

  /** Total CPU seconds of the server since it started (monotonic while it runs). */
  async seconds(): Promise<number | undefined> {
    const postmaster = Number((await readFile(path.join(this.dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    const own = await readStat(postmaster, true);
    if (!own) return undefined;
    let ticks = own.ticks;
    for (const entry of await readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const stat = await readStat(Number(entry), true);
      if (stat?.ppid === postmaster) ticks += stat.ticks;
    }
    return ticks / TICKS_PER_SECOND;
  }
}
