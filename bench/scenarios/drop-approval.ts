/**
 * DROP TABLE of a 10k-row table in auto mode with the agent running: the statement's wall time
 * (request, gate, before-image capture, decision) against the before-image capture alone.
 * Plugged in once `backstop agent` exists.
 */
import type { ScenarioContext } from '../context.js';
import { notMeasured, type ScenarioResult } from '../results.js';

export async function dropApproval(_context: ScenarioContext): Promise<ScenarioResult[]> {
  return [notMeasured('drop-approval', 'drop-approval', 'DROP TABLE (10k rows) in auto mode vs before-image capture alone', 'the agent (src/agent, src/capture, src/decision) has not landed yet')];
}
