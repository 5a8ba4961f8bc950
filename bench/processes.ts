/**
 * Run one command as a child process and measure it: wall time from spawn to exit, and the peak
 * resident set size of the process. Peak RSS comes from GNU time (`/usr/bin/time -f %M`, Debian
 * package `time`); without it, VmHWM is read from /proc/<pid>/status while the child runs.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { open, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const GNU_TIME = '/usr/bin/time';

export interface MeasuredRun {
  wallMs: number;
  /** Peak RSS in kilobytes, or undefined when it could not be read. */
  peakRssKb: number | undefined;
  /** User + system CPU seconds of the process (GNU time only). */
  cpuSeconds: number | undefined;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Send stdout to /dev/null instead of collecting it (for bulk output such as COPY). */
  discardStdout?: boolean;
}

export class CommandFailed extends Error {
  constructor(readonly command: string, readonly exitCode: number | null, readonly stderr: string) {
    super(`${command} exited with ${exitCode}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`);
  }
}

export function peakRssMethod(): string {
  return existsSync(GNU_TIME) ? `${GNU_TIME} -f '%M %U %S'` : 'VmHWM from /proc/<pid>/status, sampled every 20 ms';
}

async function readVmHwmKb(pid: number): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const match = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

export async function runMeasured(command: string, args: string[], options: RunOptions = {}): Promise<MeasuredRun> {
  const useGnuTime = existsSync(GNU_TIME);
  const rssFile = path.join(os.tmpdir(), `backstop-bench-rss-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const [file, argv] = useGnuTime ? [GNU_TIME, ['-f', '%M %U %S', '-o', rssFile, command, ...args]] : [command, args];
  const devNull = options.discardStdout ? await open('/dev/null', 'w') : undefined;
  try {
    const started = performance.now();
    const child = spawn(file, argv, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: ['ignore', devNull ? devNull.fd : 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk; });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
    let sampledPeak: number | undefined;
    const sampler = useGnuTime
      ? undefined
      : setInterval(() => {
          void readVmHwmKb(child.pid!).then((kb) => {
            if (kb !== undefined) sampledPeak = Math.max(sampledPeak ?? 0, kb);
          });
        }, 20);
    const exitCode = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code) => resolve(code));
    });
    const wallMs = performance.now() - started;
    if (sampler) clearInterval(sampler);
    if (exitCode !== 0) throw new CommandFailed([command, ...args].join(' '), exitCode, stderr);
    let peakRssKb = sampledPeak;
    let cpuSeconds: number | undefined;
    if (useGnuTime) {
      const text = await readFile(rssFile, 'utf8').catch(() => '');
      const [kb, user, system] = (text.trim().split('\n').pop() ?? '').split(' ').map(Number);
      peakRssKb = kb !== undefined && Number.isFinite(kb) && kb > 0 ? kb : undefined;
      cpuSeconds = user !== undefined && system !== undefined && Number.isFinite(user + system) ? user + system : undefined;
    }
    return { wallMs, peakRssKb, cpuSeconds, stdout, stderr };
  } finally {
    await devNull?.close();
    await rm(rssFile, { force: true });
  }
}
