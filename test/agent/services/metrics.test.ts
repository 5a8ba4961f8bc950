import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../../src/agent/metrics.js';

describe('agent metrics', () => {
  it('keeps each agent on its own registry', async () => {
    const a = createMetrics();
    const b = createMetrics({ processMetrics: false });
    a.snapshotDuration.observe({ source: 'sidecar' }, 0.2);
    a.snapshotBytes.inc({ source: 'sidecar' }, 1234);
    a.snapshotFailures.inc({ source: 'on-demand' });
    a.decisions.inc({ outcome: 'approved' });
    a.decisionLatency.observe(0.07);
    a.alerts.inc({ kind: 'table_vanished' });
    const text = await a.registry.metrics();
    expect(text).toContain('backstop_snapshot_duration_seconds_count{source="sidecar"} 1');
    expect(text).toContain('backstop_snapshot_bytes_total{source="sidecar"} 1234');
    expect(text).toContain('backstop_snapshot_failures_total{source="on-demand"} 1');
    expect(text).toContain('backstop_request_decisions_total{outcome="approved"} 1');
    expect(text).toContain('backstop_request_decision_latency_seconds_count 1');
    expect(text).toContain('backstop_alerts_total{kind="table_vanished"} 1');
    expect(text).toContain('backstop_process_cpu_user_seconds_total');
    const other = await b.registry.metrics();
    expect(other).not.toContain('backstop_alerts_total{kind="table_vanished"} 1');
    expect(other).not.toContain('process_cpu');
  });
});
