/**
 * LISTEN on the Backstop channels through one dedicated connection that never gives up.
 *
 * Why not pg-listen (1.7): its liveness check is a query without a deadline (a black-holed
 * connection hangs it forever), it does not retry the first connect, it stops reconnecting for
 * good after `retryTimeout`, and it cannot tell whether the server still has the channels
 * registered. This client does exactly what the agent needs: reconnect with backoff and jitter,
 * LISTEN again, check `pg_listening_channels()` every few seconds with a short deadline, and
 * report every (re)connect so the agent sweeps the tables — a NOTIFY is only a wake-up.
 */
import type { DatabaseTarget } from '../db/connection.js';
import { describeError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import { quoteIdent } from '../db/identifiers.js';
import { reconnectDelay, sleep } from '../retry/backoff.js';
import { closeSession, openSession, queryWithin, type Session } from './session.js';

export const CHANNELS = { requests: 'backstop_requests', decisions: 'backstop_decisions', snapshots: 'backstop_snapshots', restores: 'backstop_restores' } as const;

export interface ListenerOptions {
  target: DatabaseTarget;
  channels: string[];
  logger: Logger;
  /** How often the connection and the registered channels are checked. */
  checkIntervalMs?: number;
  onNotification(channel: string, payload: string | undefined): void;
  /** After every successful (re)connect, once LISTEN is in place. */
  onConnected(): void;
}

export class NotificationListener {
  private readonly options: ListenerOptions;
  private readonly stopping = new AbortController();
  private session: Session | undefined;
  private loop: Promise<void> | undefined;
  listening = false;
  lastError: string | undefined;

  constructor(options: ListenerOptions) {
    this.options = options;
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    if (this.session) closeSession(this.session);
    await this.loop;
  }

  private async listenAll(session: Session): Promise<void> {
    for (const channel of this.options.channels) await queryWithin(session, `LISTEN ${quoteIdent(channel)}`);
  }

  private async run(): Promise<void> {
    const { logger } = this.options;
    const checkInterval = this.options.checkIntervalMs ?? 2_000;
    let attempt = 0;
    let connectedBefore = false;
    while (!this.stopping.signal.aborted) {
      let session: Session;
      try {
        session = await openSession(this.options.target, 'backstop agent listener');
        this.session = session;
        session.client.on('notification', (message) => this.options.onNotification(message.channel, message.payload));
        await this.listenAll(session);
      } catch (error) {
        this.lastError = describeError(error);
        if (this.session) closeSession(this.session);
        this.session = undefined;
        const delay = reconnectDelay(attempt++);
        logger.warn('listener cannot connect; retrying', { error: this.lastError, retry_in_ms: delay });
        await sleep(delay, this.stopping.signal);
        continue;
      }
      if (connectedBefore) logger.info('listener reconnected', { failed_attempts: attempt });
      else logger.info('listening', { channels: this.options.channels });
      connectedBefore = true;
      attempt = 0;
      this.listening = true;
      this.lastError = undefined;
      this.options.onConnected();

      const reason = await this.watch(session, checkInterval);
      this.listening = false;
      closeSession(session);
      this.session = undefined;
      if (this.stopping.signal.aborted) break;
      this.lastError = reason;
      logger.warn('listener lost its connection; reconnecting', { error: reason });
    }
    this.listening = false;
  }

  /** Returns when the session is lost (with why) or the listener stops. */
  private async watch(session: Session, checkInterval: number): Promise<string> {
    let lost: string | undefined;
    session.lost.then((error) => {
      lost ??= describeError(error);
    });
    while (!this.stopping.signal.aborted && lost === undefined) {
      await Promise.race([sleep(checkInterval, this.stopping.signal), session.lost]);
      if (this.stopping.signal.aborted || lost !== undefined) break;
      try {
        const { rows } = await queryWithin<{ channel: string }>(session, `SELECT pg_listening_channels() AS channel`);
        const registered = new Set(rows.map((row) => row.channel));
        const missing = this.options.channels.filter((channel) => !registered.has(channel));
        if (missing.length > 0) {
          this.options.logger.warn('channels were no longer registered; listening again', { channels: missing });
          await this.listenAll(session);
          this.options.onConnected();
        }
      } catch (error) {
        lost ??= describeError(error);
      }
    }
    return lost ?? 'stopped';
  }
}
