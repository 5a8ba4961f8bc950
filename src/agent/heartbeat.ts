/**
 * The agent's heartbeat: every few seconds `backstop.agent_heartbeat(agent_id, info)`, which is
 * what the guard's fail-closed check reads. Standbys beat too. Each beat also checks that the
 * storage is reachable, so `storage_ok` in backstop.agents (and the gate) reflect it.
 */
import os from 'node:os';
import type pg from 'pg';
import { describeError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import { sleep } from '../retry/backoff.js';

export interface HeartbeatInfo {
  hostname: string;
  pid: number;
  version: string;
  leader: boolean;
  listening: boolean;
  storage_url: string;
  storage_ok: boolean;
  storage_error: string | null;
}

export interface StorageStatus {
  ok: boolean;
  error: string | null;
  checkedAt: Date;
}

export interface HeartbeatOptions {
  pool: pg.Pool;
  agentId: string;
  version: string;
  storageUrl: string;
  intervalMs?: number;
  logger: Logger;
  /** Throws when the storage cannot be reached. */
  checkStorage(): Promise<void>;
  status(): { leader: boolean; listening: boolean };
  /** Called after each successful beat (mirrors it into the local state). */
  onBeat?(at: Date, info: HeartbeatInfo): void;
}

export class Heartbeat {
  private readonly options: HeartbeatOptions;
  private readonly stopping = new AbortController();
  private loop: Promise<void> | undefined;
  storage: StorageStatus = { ok: false, error: 'not checked yet', checkedAt: new Date(0) };
  lastBeatAt: Date | undefined;
  lastError: string | undefined;

  constructor(options: HeartbeatOptions) {
    this.options = options;
  }

  async checkStorage(): Promise<StorageStatus> {
    try {
      await this.options.checkStorage();
      this.storage = { ok: true, error: null, checkedAt: new Date() };
    } catch (error) {
      if (this.storage.ok || this.storage.error !== describeError(error)) {
        this.options.logger.warn('storage unreachable', { error: describeError(error) });
      }
      this.storage = { ok: false, error: describeError(error), checkedAt: new Date() };
    }
    return this.storage;
  }

  /** One beat: check storage, write the heartbeat row. Never throws. */
  async beat(): Promise<void> {
    await this.checkStorage();
    const { leader, listening } = this.options.status();
    const info: HeartbeatInfo = {
      hostname: os.hostname(),
      pid: process.pid,
      version: this.options.version,
      leader,
      listening,
      storage_url: this.options.storageUrl,
      storage_ok: this.storage.ok,
      storage_error: this.storage.error,
    };
    try {
      await this.options.pool.query('SELECT backstop.agent_heartbeat($1, $2::jsonb)', [this.options.agentId, JSON.stringify(info)]);
      const at = new Date();
      if (this.lastError) this.options.logger.info('heartbeat written again');
      this.lastBeatAt = at;
      this.lastError = undefined;
      this.options.onBeat?.(at, info);
    } catch (error) {
      if (this.lastError === undefined) this.options.logger.warn('heartbeat failed', { error: describeError(error) });
      this.lastError = describeError(error);
    }
  }

  /** Beat every interval; `beatNow: false` when a beat was just written. */
  start(beatNow = true): void {
    this.loop ??= (async () => {
      let due = beatNow;
      while (!this.stopping.signal.aborted) {
        if (due) await this.beat();
        due = true;
        await sleep(this.options.intervalMs ?? 5_000, this.stopping.signal);
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    await this.loop;
  }
}
