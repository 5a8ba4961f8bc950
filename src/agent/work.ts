/**
 * What the agent's leader does besides answering requests, assembled from the modules that do
 * it: before-image capture, TRUNCATE image export, on-demand snapshots, continuous snapshots.
 */
import { SnapshotError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import { openStorage } from '../storage/open.js';
import type { Storage } from '../storage/storage.js';
import type { Agent, AgentWork } from './agent.js';

export async function openAgentStorage(url: string | undefined): Promise<Storage> {
  return openStorage(url);
}

export function agentWork(agent: Agent, storage: Storage, logger: Logger): AgentWork {
  void agent;
  void storage;
  void logger;
  return {
    capturer: {
      capture: async () => {
        throw new SnapshotError('before-image capture is not available in this build');
      },
    },
  };
}
