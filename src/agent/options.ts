/** The `backstop agent` flags, checked and turned into AgentOptions fields. */
import { ConfigError } from '../errors/index.js';
import type { ApprovalMode } from '../gate/settings.js';
import { DEFAULT_RETENTION, checkPolicy, describePolicy, type RetentionPolicy } from '../snapshot/retention.js';
import { DEFAULT_RECAPTURE_FACTOR } from './change-detection.js';
import { parseDuration } from './duration.js';

export interface AgentFlags {
  approval?: string;
  interval: string;
  snapshotEveryPoll?: boolean;
  keep?: string;
  keepLast?: string;
  keepHourly?: string;
  keepDaily?: string;
  keepAll?: boolean;
  recaptureFactor?: string;
  schemas?: string;
  concurrency: string;
  /** --state; undefined = one file per database under ./.backstop/ (database-identity.ts). */
  state?: string;
  http: string;
  agentId?: string;
}

export interface ParsedAgentFlags {
  approval: ApprovalMode | undefined;
  intervalMs: number;
  snapshotEveryPoll: boolean;
  /** Background snapshots kept per table; 'keep-all' = never pruned. */
  retention: RetentionPolicy | 'keep-all';
  /** A changed table is captured again no sooner than this many times its last capture's duration after that capture started. */
  recaptureFactor: number;
  schemas: string[] | undefined;
  concurrency: number;
  statePath: string | undefined;
  http: { host: string; port: number } | null;
  agentId: string | undefined;
}

function positiveInteger(text: string, flag: string, allowZero = false): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || (!allowZero && value === 0)) {
    throw new ConfigError(`${flag}: "${text}" is not a ${allowZero ? 'non-negative' : 'positive'} whole number`, { hint: `e.g. ${flag} 4` });
  }
  return value;
}

/**
 * The retention flags: none → DEFAULT_RETENTION; --keep N → the newest N (as it always was);
 * --keep-last / --keep-hourly / --keep-daily → exactly that policy, rules not named keep 0
 * (as with restic's forget); --keep-all → no pruning.
 */
export function parseRetentionFlags(flags: Pick<AgentFlags, 'keep' | 'keepLast' | 'keepHourly' | 'keepDaily' | 'keepAll'>): RetentionPolicy | 'keep-all' {
  const rules = { last: flags.keepLast, hourly: flags.keepHourly, daily: flags.keepDaily };
  const named = Object.values(rules).some((value) => value !== undefined);
  if (flags.keepAll) {
    if (named || flags.keep !== undefined) throw new ConfigError('--keep-all keeps every snapshot: leave out the other --keep flags', { hint: 'use either --keep-all or a policy such as ' + describePolicy(DEFAULT_RETENTION) });
    return 'keep-all';
  }
  if (flags.keep !== undefined) {
    if (named) throw new ConfigError('give either --keep or --keep-last / --keep-hourly / --keep-daily, not both', { hint: '--keep N is the same as --keep-last N' });
    return { last: positiveInteger(flags.keep, '--keep'), hourly: 0, daily: 0 };
  }
  if (!named) return DEFAULT_RETENTION;
  const count = (text: string | undefined, flag: string) => (text === undefined ? 0 : positiveInteger(text, flag, true));
  return checkPolicy({ last: count(rules.last, '--keep-last'), hourly: count(rules.hourly, '--keep-hourly'), daily: count(rules.daily, '--keep-daily') });
}

function parseRecaptureFactor(text: string | undefined): number {
  if (text === undefined) return DEFAULT_RECAPTURE_FACTOR;
  const value = Number(text.trim());
  if (text.trim() === '' || !Number.isFinite(value) || value < 0) {
    throw new ConfigError(`--recapture-factor: "${text}" is not a number of 0 or more`, {
      hint: `e.g. --recapture-factor ${DEFAULT_RECAPTURE_FACTOR} (a table whose capture took 30 s is captured again at most every 5 minutes); 0 turns the floor off`,
    });
  }
  return value;
}

export function parseHttpFlag(text: string): { host: string; port: number } | null {
  if (text.trim().toLowerCase() === 'off') return null;
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text.trim());
  if (!match) throw new ConfigError(`--http: "${text}" is not HOST:PORT or off`, { hint: 'e.g. --http 127.0.0.1:8080, --http 0.0.0.0:9187, --http 127.0.0.1:0 (any free port) or --http off' });
  const port = Number(match[3]);
  if (port > 65535) throw new ConfigError(`--http: port ${port} is out of range`, { hint: 'use a port from 0 (any free port) to 65535' });
  return { host: match[1] ?? (match[2] || '127.0.0.1'), port };
}

export function parseAgentFlags(flags: AgentFlags): ParsedAgentFlags {
  let approval: ApprovalMode | undefined;
  if (flags.approval !== undefined) {
    if (flags.approval !== 'auto' && flags.approval !== 'operator') {
      throw new ConfigError(`--approval: "${flags.approval}" is not auto or operator`, { hint: 'auto: grant when the gate passes; operator: a backstop_approver must approve too' });
    }
    approval = flags.approval;
  }
  // Schema names exactly as in pg_namespace (no case folding); surrounding double quotes are
  // allowed and removed, so '"Sales EU",public' works.
  const schemas = flags.schemas
    ?.split(',')
    .map((schema) => schema.trim().replace(/^"(.*)"$/, '$1').replace(/""/g, '"'))
    .filter((schema) => schema !== '');
  return {
    approval,
    intervalMs: parseDuration(flags.interval, '--interval'),
    snapshotEveryPoll: Boolean(flags.snapshotEveryPoll),
    retention: parseRetentionFlags(flags),
    recaptureFactor: parseRecaptureFactor(flags.recaptureFactor),
    schemas: schemas && schemas.length > 0 ? schemas : undefined,
    concurrency: positiveInteger(flags.concurrency, '--concurrency'),
    statePath: flags.state?.trim() || undefined,
    http: parseHttpFlag(flags.http),
    agentId: flags.agentId?.trim() || undefined,
  };
}
