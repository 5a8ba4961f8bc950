/** The facts about the machine and server that every figure depends on. */
import { execFile } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { BenchServer } from './server.js';
import { peakRssMethod } from './processes.js';

const run = promisify(execFile);

export interface MachineFacts {
  cores: number;
  memoryGb: number;
  cpuModel: string;
  kernel: string;
  node: string;
  server: string;
  serverSettings: Record<string, string>;
  pgDump: string;
  peakRssMethod: string;
  loadAverageAtStart: number[];
}

export async function machineFacts(server: BenchServer): Promise<MachineFacts> {
  const { stdout: pgDump } = await run(path.join(server.clientBinDir, 'pg_dump'), ['--version']);
  return {
    cores: os.cpus().length,
    memoryGb: Math.round(os.totalmem() / 1024 ** 3),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    server: server.version,
    serverSettings: server.settings,
    pgDump: pgDump.trim(),
    peakRssMethod: peakRssMethod(),
    loadAverageAtStart: os.loadavg().map((value) => Math.round(value * 100) / 100),
  };
}
