/**
 * The real agent as a child process (`node bin/backstop.js agent …`, built into dist/ by
 * `npm test` / `npm run build`): start it, wait until it is ready, read its JSON log lines, stop
 * it with a signal or kill it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BACKSTOP_BIN = path.join(REPO_ROOT, 'bin', 'backstop.js');

export interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

export interface AgentProcessOptions {
  /** --db; omitted for the embedded default. */
  db?: string;
  /** --storage; omitted for the default. */
  storage?: string;
  args?: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Leave --state out, so the agent picks its default under `cwd`/.backstop (default: a fresh temp file). */
  defaultState?: boolean;
  /** Wait for this agent to lead (default), to stand by, or only to run. */
  waitFor?: 'leader' | 'standby' | 'running';
  timeoutMs?: number;
}

export interface AgentProcess {
  child: ChildProcess;
  pid: number;
  /** Every JSON log line so far. */
  lines: LogLine[];
  /** stdout so far (the embedded default prints how to connect there). */
  stdout(): string;
  stderr(): string;
  /** The HTTP API port it logged (when --http is on). */
  httpPort: number | undefined;
  agentId: string | undefined;
  waitForLog(match: (line: LogLine) => boolean, timeoutMs?: number, what?: string): Promise<LogLine>;
  /** Send `signal` and wait for the exit code. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Poll `check` until it returns a truthy value or `timeoutMs` passes. */
export async function waitUntil<T>(check: () => Promise<T> | T, timeoutMs = 60_000, what = 'condition', intervalMs = 200): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export async function tempDir(prefix = 'backstop-agent-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

export async function startAgent(options: AgentProcessOptions = {}): Promise<AgentProcess> {
  const stateDir = await tempDir('backstop-agent-state-');
  const args = [BACKSTOP_BIN, 'agent'];
  if (options.db) args.push('--db', options.db);
  if (options.storage) args.push('--storage', options.storage);
  const extra = options.args ?? [];
  if (!extra.includes('--state') && !options.defaultState) args.push('--state', path.join(stateDir, 'agent.sqlite'));
  if (!extra.includes('--http')) args.push('--http', '127.0.0.1:0');
  args.push(...extra);
  const env: NodeJS.ProcessEnv = { ...process.env, BACKSTOP_LOG_LEVEL: 'debug', ...options.env };
  const child = spawn(process.execPath, ['--openssl-legacy-provider', ...args], { cwd: options.cwd ?? REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: LogLine[] = [];
  let stdout = '';
  let stderr = '';
  let partial = '';
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const waiter of waiters) waiter();
  };
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    notify();
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    partial += chunk;
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const part of parts) {
      try {
        lines.push(JSON.parse(part) as LogLine);
      } catch {
        lines.push({ level: 'raw', msg: part });
      }
    }
    notify();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      resolve({ code, signal });
      notify();
    });
  });
  let exitedNow = false;
  let stopRequested = false;
  void exited.then(({ code, signal }) => {
    exitedNow = true;
    // A crash would otherwise only show up as a timeout somewhere else: say so, with the log.
    if (!stopRequested) console.error(`backstop agent (pid ${child.pid}) exited unexpectedly (code ${code}, signal ${signal}):\n${stderr.slice(-6000)}`);
  });

  const waitForLog = (match: (line: LogLine) => boolean, timeoutMs = 60_000, what = 'a log line'): Promise<LogLine> =>
    new Promise((resolve, reject) => {
      const check = () => {
        const found = lines.find(match);
        if (found) {
          cleanup();
          resolve(found);
        } else if (exitedNow) {
          cleanup();
          reject(new Error(`agent exited while waiting for ${what}\n${stderr.slice(-4000)}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${stderr.slice(-4000)}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });

  const agent: AgentProcess = {
    child,
    pid: child.pid!,
    lines,
    stdout: () => stdout,
    stderr: () => stderr,
    httpPort: undefined,
    agentId: undefined,
    waitForLog,
    exited,
    async stop(signal = 'SIGTERM', timeoutMs = 60_000) {
      stopRequested = true;
      if (!exitedNow) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
  const timeout = options.timeoutMs ?? 120_000;
  try {
    const running = await waitForLog((line) => line.msg === 'agent running', timeout, 'the agent to start');
    agent.agentId = running.agent_id as string;
    const http = lines.find((line) => line.msg === 'HTTP API listening');
    agent.httpPort = http ? Number(http.port) : undefined;
    const waitFor = options.waitFor ?? 'leader';
    if (waitFor === 'leader') await waitForLog((line) => line.msg === 'this agent is the leader', timeout, 'leadership');
    if (waitFor === 'standby') await waitForLog((line) => line.msg === 'another agent is the leader; standing by', timeout, 'standby');
    if (waitFor !== 'running') await waitForLog((line) => line.msg === 'listening' || line.msg === 'listener reconnected', timeout, 'the listener');
  } catch (error) {
    await agent.stop('SIGKILL');
    throw error;
  }
  return agent;
}
