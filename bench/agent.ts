/**
 * The real agent for the scenarios that need one (`backstop agent` as a child process, the built
 * CLI): started, waited for until it leads and listens, stopped with SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { ScenarioContext } from './context.js';

export interface AgentChild {
  child: ChildProcess;
  stderr(): string;
  stop(): Promise<void>;
}

export interface AgentStart {
  url: string;
  storage: string;
  /** The agent's SQLite state file. */
  state: string;
  concurrency: number;
  /** --approval; omitted: the agent follows backstop.settings.approval_mode. */
  approval?: 'auto' | 'operator';
  /** --schemas for background snapshots (omitted: every user schema). */
  schemas?: string;
  /** Another build's bin/backstop.js (drop-approval --baseline); default: this repository's. */
  bin?: string;
  /**
   * Also wait for the start-up snapshot poll (default). Off when the watched schemas are empty:
   * a poll that captured nothing logs at debug level only.
   */
  waitForStartupSnapshots?: boolean;
}

/** Start `backstop agent` and wait until it leads and listens, and has taken its start-up snapshots (its JSON log says so). */
export async function startAgent(context: ScenarioContext, start: AgentStart): Promise<AgentChild> {
  const args = ['--openssl-legacy-provider', start.bin ?? context.cli.bin, 'agent', '--db', start.url, '--storage', start.storage,
    '--http', 'off', '--interval', '1h', '--state', start.state, '--concurrency', String(start.concurrency),
    ...(start.approval ? ['--approval', start.approval] : []), ...(start.schemas ? ['--schemas', start.schemas] : [])];
  const child = spawn(process.execPath, args, { cwd: context.repoRoot, env: { ...process.env, BACKSTOP_LOG_LEVEL: 'info' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const seen = new Set<string>();
  const wanted = ['this agent is the leader', 'listening', ...(start.waitForStartupSnapshots === false ? [] : ['snapshot poll done'])];
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the agent did not get ready in 120 s: ${stderr.slice(-2000)}`)), 120_000);
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      // Keep the tail only: an agent answering hundreds of requests logs a lot.
      if (stderr.length > 1_000_000) stderr = stderr.slice(-500_000);
      for (const line of chunk.split('\n')) {
        try {
          const msg = (JSON.parse(line) as { msg?: string }).msg;
          if (msg) seen.add(msg);
        } catch {
          // not a JSON log line
        }
      }
      if (wanted.every((msg) => seen.has(msg))) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the agent exited with ${code}: ${stderr.slice(-2000)}`));
    });
  });
  await ready;
  return {
    child,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
