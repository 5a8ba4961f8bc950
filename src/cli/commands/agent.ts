/**
 * `backstop agent`: the long-running process beside the database. With no database configured
 * it starts an embedded PostgreSQL under ./.backstop/pg with a demo table (see agent/embedded.ts).
 * SIGTERM / SIGINT stop it cleanly with exit code 0; a second signal exits at once.
 */
import type { Command } from 'commander';
import { databaseConfigured, resolveDatabase, withClient, type DatabaseTarget } from '../../db/connection.js';
import { createLogger, type Logger } from '../../log/logger.js';
import { Agent } from '../../agent/agent.js';
import path from 'node:path';
import { DEMO_TABLE, startEmbeddedDatabase, type EmbeddedDatabase } from '../../agent/embedded.js';
import { DEFAULT_STORAGE_FOLDER } from '../../storage/url.js';
import { cliCommand } from '../invocation.js';
import { parseAgentFlags, type AgentFlags } from '../../agent/options.js';
import { readDatabaseIdentity, statePathFor } from '../../agent/database-identity.js';
import { openAgentStorage, agentWork } from '../../agent/work.js';
import { formatDuration } from '../../agent/duration.js';
import { withDatabaseOption, withStorageOption } from '../program.js';

interface AgentCommandOptions extends AgentFlags {
  db?: string;
  storage?: string;
}

function waitForSignal(logger: Logger): Promise<string> {
  return new Promise((resolve) => {
    let received: string | undefined;
    const onSignal = (signal: NodeJS.Signals) => {
      if (received) {
        logger.warn(`second ${signal}: exiting now`);
        process.exit(130);
      }
      received = signal;
      resolve(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

/** A path inside the current folder as ./relative, anything else as it is. */
function shown(location: string): string {
  if (!path.isAbsolute(location)) return location;
  const relative = path.relative(process.cwd(), location);
  return relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? `./${relative}` : location;
}

function printTryIt(embedded: EmbeddedDatabase, storageUrl: string): void {
  const backstop = cliCommand();
  const storage = storageUrl === path.resolve(DEFAULT_STORAGE_FOLDER) ? '' : ` --storage ${JSON.stringify(storageUrl)}`;
  process.stdout.write(
    [
      '',
      `Backstop is guarding an embedded PostgreSQL with a demo table public.${DEMO_TABLE} (300 rows).`,
      `Connect:   ${embedded.psqlCommand}`,
      `Try:       DROP TABLE ${DEMO_TABLE};`,
      '           -- the DROP pauses while the agent captures a before-image, then completes;',
      '           SELECT id, status, snapshot_ids FROM backstop.requests;',
      '           SELECT * FROM backstop.snapshots;',
      `Restore:   ${backstop} recover --table public.${DEMO_TABLE}${storage}`,
      `           ${backstop} restore --snapshot-id <id> --table public.${DEMO_TABLE}${storage}`,
      `Check:     ${backstop} doctor${storage}`,
      '           (run from this folder, commands find this server by themselves; elsewhere add --db with the URL above)',
      `Stop with Ctrl-C. Data stays in ${shown(embedded.dataDir)} and snapshots in ${shown(storageUrl)}.`,
      '',
    ].join('\n'),
  );
}

export function registerAgentCommand(program: Command): void {
  withStorageOption(withDatabaseOption(program.command('agent')))
    .description('run the agent: answer guarded requests, keep snapshots fresh, heartbeat, serve the HTTP metadata API')
    .option('--approval <mode>', 'auto | operator: overrides backstop.settings.approval_mode for this agent (operator is stricter)')
    .option('--interval <duration>', 'continuous snapshot poll interval, e.g. 500ms, 2s, 5m', '60s')
    .option('--snapshot-every-poll', 'capture every table on every poll, changed or not')
    .option('--keep-last <n>', 'background snapshots to keep per table: the newest N (default policy: --keep-last 5 --keep-hourly 24 --keep-daily 7)')
    .option('--keep-hourly <n>', 'keep the newest background snapshot of each of the N most recent hours (UTC) that have one')
    .option('--keep-daily <n>', 'keep the newest background snapshot of each of the N most recent days (UTC) that have one')
    .option('--keep <n>', 'keep the newest N background snapshots per table (the same as --keep-last N alone)')
    .option('--keep-all', 'never prune background snapshots')
    .option('--recapture-factor <x>', 'capture a changed table again no sooner than x times its last capture\'s duration after that capture started (0: no floor)', '10')
    .option('--schemas <list>', 'comma-separated schemas to snapshot, names as in the catalog (default: every user schema)')
    .option('--concurrency <n>', 'tables captured at once', '4')
    .option('--state <path>', 'agent state file (SQLite; default: one per database, .backstop/agent-<database>-<id>.sqlite)')
    .option('--http <host:port|off>', 'HTTP metadata API address; port 0 picks a free port', '127.0.0.1:8080')
    .option('--agent-id <id>', 'name of this agent in backstop.agents (default: generated once, kept in the state file)')
    .action(async (options: AgentCommandOptions) => {
      const logger = createLogger({ fields: { component: 'agent' } }).child({});
      const flags = parseAgentFlags(options);
      let embedded: EmbeddedDatabase | undefined;
      let target: DatabaseTarget;
      if (databaseConfigured(options.db)) {
        target = resolveDatabase(options.db);
      } else {
        logger.info('no --db, DATABASE_URL or PGHOST: starting an embedded PostgreSQL in ./.backstop/pg');
        embedded = await startEmbeddedDatabase({ cwd: process.cwd(), logger });
        target = resolveDatabase(embedded.url);
      }
      const signal = waitForSignal(logger);
      let agent: Agent | undefined;
      try {
        const storage = await openAgentStorage(options.storage);
        // The state file belongs to the database: ask the server which one this is first.
        const databaseIdentity = await withClient(target, readDatabaseIdentity, 'backstop agent (identity)');
        const statePath = statePathFor(databaseIdentity, flags.statePath);
        agent = new Agent({
          target,
          storage,
          ...(flags.approval ? { approval: flags.approval } : {}),
          intervalMs: flags.intervalMs,
          snapshotEveryPoll: flags.snapshotEveryPoll,
          retention: flags.retention,
          recaptureFactor: flags.recaptureFactor,
          ...(flags.schemas ? { schemas: flags.schemas } : {}),
          concurrency: flags.concurrency,
          statePath,
          databaseIdentity,
          http: flags.http,
          ...(flags.agentId ? { agentId: flags.agentId } : {}),
          logger,
        });
        await agent.start(agentWork(agent, storage, logger));
        logger.info('agent running', { agent_id: agent.agentId, snapshot_interval: formatDuration(flags.intervalMs), state: statePath, database: databaseIdentity.label });
        if (embedded) printTryIt(embedded, storage.url);
        const received = await signal;
        logger.info(`received ${received}: shutting down`);
      } finally {
        await agent?.stop();
        if (embedded) {
          await embedded.stop().catch((error) => logger.warn('stopping the embedded PostgreSQL failed', { error: String(error) }));
          logger.info('embedded PostgreSQL stopped');
        }
      }
    });
}
