/**
 * Command-line options of `npm run bench -- …`. Kept apart from run.ts so the scenario list and
 * the defaults are written down in one place.
 */
/**
 * Peak RSS is not a scenario of its own: it is read from the capture and restore runs, and the
 * RSS rows appear whenever those run.
 */
export const SCENARIO_NAMES = [
  'ddl-overhead', 'capture', 'capture-s3', 'restore', 'drop-approval', 'poll', 'concurrent-captures', 'catalog', 'writers-blocked', 'writers-blocked-operator',
  'undo',
] as const;
export type ScenarioName = (typeof SCENARIO_NAMES)[number];

export const ROW_SIZES = { '1m': 1_000_000, '5m': 5_000_000 } as const;
export type RowSize = keyof typeof ROW_SIZES;

export interface BenchOptions {
  scenarios: ScenarioName[];
  rows: RowSize[];
  /** Measured runs per scenario (after the warm-up runs). */
  runs: number;
  warmup: number;
  /** Iterations per statement kind in the DDL-overhead scenario. */
  ddlIterations: number;
  /** An existing server to use instead of a temporary cluster. */
  db: string | undefined;
  /** Leave the temporary cluster (and its loaded tables) running for the next run. */
  keepServer: boolean;
  /** Skip rewriting BENCHMARKS.md (results JSON is still written). */
  noReport: boolean;
  /** Use dist/ as it is instead of building it first. */
  noBuild: boolean;
  /** SQL run after every install() (to measure a proposed guard change). */
  afterInstallSql: string | undefined;
  /** Another build's bin/backstop.js, measured beside this one in the catalog scenario (e.g. the code before a change). */
  catalogBaseline: string | undefined;
  /** writers-blocked-operator: how long the approver takes, in seconds (issue 9: 30 s). */
  humanWaitS: number;
  /** writers-blocked-operator: runs of each of its two cases (each lasts the human wait plus ~12 s). */
  operatorRuns: number;
  /**
   * drop-approval: a built checkout of earlier code whose DROP is measured beside the current
   * one, interleaved, in a database of its own (installed and answered by that checkout's CLI).
   * restore: that checkout's restores run in every pair too, against the same anchor run.
   */
  baseline: string | undefined;
}

export const USAGE = `usage: npm run bench -- [options]
  --scenarios LIST   comma-separated, any of: ${SCENARIO_NAMES.join(', ')} (default: all)
  --rows LIST        table sizes for capture/restore/rss: 1m, 5m (default: 1m,5m)
  --runs N           measured runs per scenario, after warm-up (default: 3)
  --warmup N         warm-up runs, discarded (default: 1)
  --ddl-iterations N iterations per DDL kind in ddl-overhead (default: 300)
  --db URL           use this server (its postgres database or the URL's) instead of a temp cluster
  --keep-server      leave the temp cluster running with its tables loaded; the next run reuses it
  --no-report        do not rewrite BENCHMARKS.md
  --no-build         use dist/ as it is (default: build it with tsc first)
  --after-install-sql FILE  run this SQL after each install (to measure a proposed guard change;
                     results are labelled with the file)
  --catalog-baseline BIN  another build's bin/backstop.js, run beside this one on the same
                     snapshots in the catalog scenario (the anchor of its rows)
  --human-wait S     writers-blocked-operator: seconds before the approver approves (default: 30)
  --operator-runs N  writers-blocked-operator: measured runs of each of its two cases (default: 3;
                     each run takes the human wait plus ~12 s)
  --baseline DIR     drop-approval, restore: also measure the DROP / the restores of this built
                     checkout of earlier code (git archive COMMIT | tar -x -C DIR; link
                     node_modules; npm run build), interleaved with the current code's
  --help`;

function parseList<T extends string>(value: string, allowed: readonly T[], flag: string): T[] {
  const items = value.split(',').map((item) => item.trim()).filter(Boolean);
  for (const item of items) {
    if (!allowed.includes(item as T)) throw new Error(`${flag}: unknown value "${item}" (allowed: ${allowed.join(', ')})`);
  }
  return items as T[];
}

function parsePositive(value: string | undefined, flag: string, allowZero = false): number {
  const number = Number(value);
  if (!Number.isInteger(number) || number < (allowZero ? 0 : 1)) throw new Error(`${flag} needs a ${allowZero ? 'non-negative' : 'positive'} integer, got "${value}"`);
  return number;
}

export function parseOptions(argv: string[]): BenchOptions | 'help' {
  const options: BenchOptions = {
    scenarios: [...SCENARIO_NAMES],
    rows: ['1m', '5m'],
    runs: 3,
    warmup: 1,
    ddlIterations: 300,
    db: undefined,
    keepServer: false,
    noReport: false,
    noBuild: false,
    afterInstallSql: undefined,
    catalogBaseline: undefined,
    humanWaitS: 30,
    operatorRuns: 3,
    baseline: undefined,
  };
  for (let index = 0; index < argv.length; index += 1) {
    const flag = argv[index]!;
    const value = (): string => {
      const next = argv[index + 1];
      if (next === undefined) throw new Error(`${flag} needs a value`);
      index += 1;
      return next;
    };
    switch (flag) {
      case '--scenarios': options.scenarios = parseList(value(), SCENARIO_NAMES, flag); break;
      case '--rows': options.rows = parseList(value(), Object.keys(ROW_SIZES) as RowSize[], flag); break;
      case '--runs': options.runs = parsePositive(value(), flag); break;
      case '--warmup': options.warmup = parsePositive(value(), flag, true); break;
      case '--ddl-iterations': options.ddlIterations = parsePositive(value(), flag); break;
      case '--db': options.db = value(); break;
      case '--keep-server': options.keepServer = true; break;
      case '--no-report': options.noReport = true; break;
      case '--no-build': options.noBuild = true; break;
      case '--after-install-sql': options.afterInstallSql = value(); break;
      case '--catalog-baseline': options.catalogBaseline = value(); break;
      case '--human-wait': options.humanWaitS = parsePositive(value(), flag, true); break;
      case '--operator-runs': options.operatorRuns = parsePositive(value(), flag); break;
      case '--baseline': options.baseline = value(); break;
      case '--help': case '-h': return 'help';
      default: throw new Error(`unknown option "${flag}"\n${USAGE}`);
    }
  }
  return options;
}
