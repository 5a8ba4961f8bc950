/** The `backstop agent` flags, checked and turned into AgentOptions fields. */
import { ConfigError } from '../errors/index.js';
import type { ApprovalMode } from '../gate/settings.js';
import { parseDuration } from './duration.js';

export interface AgentFlags {
  approval?: string;
  interval: string;
  snapshotEveryPoll?: boolean;
  keep?: string;
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
  keep: number | undefined;
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
    keep: flags.keep === undefined ? undefined : positiveInteger(flags.keep, '--keep'),
    schemas: schemas && schemas.length > 0 ? schemas : undefined,
    concurrency: positiveInteger(flags.concurrency, '--concurrency'),
    statePath: flags.state?.trim() || undefined,
    http: parseHttpFlag(flags.http),
    agentId: flags.agentId?.trim() || undefined,
  };
}
