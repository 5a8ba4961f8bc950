/** What every scenario receives from the runner. */
import type { BackstopCli } from './backstop-cli.js';
import type { BenchTable } from './dataset.js';
import type { RowSize } from './options.js';
import type { BenchOptions } from './options.js';
import type { BenchServer } from './server.js';

export interface ScenarioContext {
  server: BenchServer;
  options: BenchOptions;
  /** Loaded benchmark tables, in the order of --rows. */
  tables: BenchTable[];
  /** A scratch folder for dumps and snapshots, removed at the end of the run. */
  workDir: string;
  /** The repository root (where bin/backstop.js is). */
  repoRoot: string;
  cli: BackstopCli;
  /** Why the CLI could not be built, if it could not. */
  buildError: string | undefined;
  /** Files one scenario leaves for the next (the dump for the pg_restore anchor, a snapshot to restore). */
  artifacts: Artifacts;
  log(line: string): void;
}

export interface Artifacts {
  dumps: Map<RowSize, string>;
  localSnapshots: Map<RowSize, { storageDir: string; snapshotId: string }>;
}
