/**
 * One continuous-snapshot poll over 1,000 unchanged tables (SnapshotScheduler.pollOnce()):
 * wall time, and the number of captures it started (must be zero). Plugged in once the
 * scheduler exists.
 */
import type { ScenarioContext } from '../context.js';
import { notMeasured, type ScenarioResult } from '../results.js';

export async function pollUnchanged(_context: ScenarioContext): Promise<ScenarioResult[]> {
  return [notMeasured('poll', 'poll', 'continuous-snapshot poll over 1,000 unchanged tables', 'SnapshotScheduler (src/agent) has not landed yet')];
}
