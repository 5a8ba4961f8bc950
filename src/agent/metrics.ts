/**
 * Prometheus metrics of one agent, on a registry of its own (not prom-client's global default) so
 * that several agents — or several tests — in one process do not collide.
 */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface AgentMetrics {
  registry: Registry;
  /** Seconds per captured snapshot, by source. */
  snapshotDuration: Histogram<'source'>;
  /** Bytes written to storage by snapshots (data files), by source. */
  snapshotBytes: Counter<'source'>;
  /** Captures that failed, by source. */
  snapshotFailures: Counter<'source'>;
  /** Request decisions, by outcome (approved, denied, awaiting_approval, expired). */
  decisions: Counter<'outcome'>;
  /** Seconds from a request being filed to the agent's decision. */
  decisionLatency: Histogram;
  /** Things that got around the guard, by kind (table_vanished, column_lost). */
  alerts: Counter<'kind'>;
}

export interface MetricsOptions {
  /** Also export Node process metrics (CPU, memory, event loop) with prefix backstop_. Default true. */
  processMetrics?: boolean;
}

export function createMetrics(options: MetricsOptions = {}): AgentMetrics {
  const registry = new Registry();
  if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'backstop_' });
  const registers = [registry];
  return {
    registry,
    snapshotDuration: new Histogram({
      name: 'backstop_snapshot_duration_seconds',
      help: 'Time to capture one table snapshot, by source',
      labelNames: ['source'] as const,
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
      registers,
    }),
    snapshotBytes: new Counter({
      name: 'backstop_snapshot_bytes_total',
      help: 'Bytes of snapshot data written to storage, by source',
      labelNames: ['source'] as const,
      registers,
    }),
    snapshotFailures: new Counter({
      name: 'backstop_snapshot_failures_total',
      help: 'Snapshot captures that failed, by source',
      labelNames: ['source'] as const,
      registers,
    }),
    decisions: new Counter({
      name: 'backstop_request_decisions_total',
      help: 'Decisions on guarded requests, by outcome',
      labelNames: ['outcome'] as const,
      registers,
    }),
    decisionLatency: new Histogram({
      name: 'backstop_request_decision_latency_seconds',
      help: 'Time from a request being filed to the agent deciding it',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    }),
    alerts: new Counter({
      name: 'backstop_alerts_total',
      help: 'Changes that got around the guard (table vanished, column lost without a consumed request), by kind',
      labelNames: ['kind'] as const,
      registers,
    }),
  };
}
