/**
 * Leader election among agents on one database: the leader holds a session-level advisory lock
 * on a dedicated connection. When that connection dies (the leader crashed, was killed, or lost
 * the network) the server releases the lock and a standby, retrying every couple of seconds,
 * takes over. The leader checks its own connection just as often and steps down at once when it
 * is gone. Decisions stay exactly-once regardless: agent_claim is the real guard.
 *
 * Every agent, leader or standby, keeps this connection for its whole life, so it is also the
 * agent's presence (`onSession` registers it with backstop.agent_hello): the guard reads from the
 * server whether it is still connected. A lost connection is therefore replaced at once rather
 * than at the next retry, so a blip does not look like a dead agent to statements waiting.
 */
import { createHash } from 'node:crypto';
import type { DatabaseTarget } from '../db/connection.js';
import { describeError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import { sleep } from '../retry/backoff.js';
import { closeSession, openSession, queryWithin, type Session } from './session.js';

/** Advisory lock key: the first 8 bytes of sha256('backstop agent leader'), as a signed bigint. */
export const LEADER_LOCK_KEY = createHash('sha256').update('backstop agent leader').digest().readBigInt64BE(0).toString();

export interface LeaderElectionOptions {
  target: DatabaseTarget;
  logger: Logger;
  retryIntervalMs?: number;
  onChange(leader: boolean): void;
  /** Run on every new session before it competes (registers the agent's presence); a failure drops the session and retries. */
  onSession?(session: Session): Promise<void>;
}

/** After a lost session the first reconnect is quick: the session is the agent's presence. */
const RECONNECT_AFTER_LOSS_MS = 200;

export class LeaderElection {
  private readonly options: LeaderElectionOptions;
  private readonly stopping = new AbortController();
  private session: Session | undefined;
  private loop: Promise<void> | undefined;
  /** Aborted when the session is lost, to cut the wait before the next attempt short. */
  private lost = new AbortController();
  leader = false;

  constructor(options: LeaderElectionOptions) {
    this.options = options;
  }

  start(): void {
    this.loop ??= this.run();
  }

  private setLeader(leader: boolean): void {
    if (this.leader === leader) return;
    this.leader = leader;
    this.options.logger.info(leader ? 'this agent is the leader' : 'this agent is a standby');
    this.options.onChange(leader);
  }

  private async run(): Promise<void> {
    const interval = this.options.retryIntervalMs ?? 2_000;
    let announcedStandby = false;
    let failures = 0;
    while (!this.stopping.signal.aborted) {
      try {
        if (!this.session) {
          const session = await openSession(this.options.target, 'backstop agent leader');
          this.session = session;
          session.lost.then(() => {
            if (this.session === session) this.lostSession();
          });
          await this.options.onSession?.(session);
        }
        if (this.leader) {
          await queryWithin(this.session, 'SELECT 1');
        } else {
          const { rows } = await queryWithin<{ locked: boolean }>(this.session, 'SELECT pg_try_advisory_lock($1::bigint) AS locked', [LEADER_LOCK_KEY]);
          if (rows[0]?.locked) this.setLeader(true);
          else if (!announcedStandby) {
            announcedStandby = true;
            this.options.logger.info('another agent is the leader; standing by');
          }
        }
        failures = 0;
      } catch (error) {
        failures += 1;
        this.options.logger.warn('leader election connection failed', { error: describeError(error) });
        this.lostSession();
      }
      // A session lost while waiting ends the wait: the next turn reconnects at once. A failed
      // attempt is retried quickly once, then every interval.
      const delay = !this.session && failures <= 1 ? RECONNECT_AFTER_LOSS_MS : interval;
      this.lost = new AbortController();
      await sleep(delay, AbortSignal.any([this.stopping.signal, this.lost.signal]));
    }
  }

  private lostSession(): void {
    if (this.session) closeSession(this.session);
    this.session = undefined;
    this.setLeader(false);
    this.lost.abort();
  }

  /** Stop competing; a leader releases the lock so a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.loop;
    const session = this.session;
    if (session && this.leader) {
      await queryWithin(session, 'SELECT pg_advisory_unlock($1::bigint)', [LEADER_LOCK_KEY]).catch(() => {});
    }
    this.leader = false;
    if (session) {
      await session.client.end().catch(() => {});
      this.session = undefined;
    }
  }
}
