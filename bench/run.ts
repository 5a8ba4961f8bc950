/**
 * `npm run bench [-- options]`: Backstop against what a DBA would run instead, on the same
 * server in the same run (see BENCHMARKS.md and `npm run bench -- --help`).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BackstopCli } from './backstop-cli.js';
import type { Artifacts, ScenarioContext } from './context.js';
import { ensureBenchTables } from './dataset.js';
import { machineFacts } from './machine.js';
import { parseOptions, USAGE, type ScenarioName } from './options.js';
import { updateBenchmarksMd, updateReadme, writeRunRecord } from './report.js';
import type { ScenarioResult } from './results.js';
import { captureLocal } from './scenarios/capture.js';
import { captureS3 } from './scenarios/capture-s3.js';
import { catalog } from './scenarios/catalog.js';
import { concurrentCaptures } from './scenarios/concurrent-captures.js';
import { ddlOverhead } from './scenarios/ddl-overhead.js';
import { dropApproval } from './scenarios/drop-approval.js';
import { undo } from './scenarios/undo.js';
import { pollUnchanged } from './scenarios/poll.js';
import { restore } from './scenarios/restore.js';
import { writersBlocked, writersBlockedOperator } from './scenarios/writers-blocked.js';
import { rssRows } from './scenarios/rss.js';
import { startBenchServer } from './server.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TABLE_SCENARIOS: ScenarioName[] = ['capture', 'capture-s3', 'restore'];
const CLI_SCENARIOS: ScenarioName[] = ['capture', 'capture-s3', 'restore', 'drop-approval', 'catalog', 'writers-blocked', 'writers-blocked-operator', 'undo'];

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
}

async function runScenario(name: ScenarioName, context: ScenarioContext): Promise<ScenarioResult[]> {
  switch (name) {
    case 'ddl-overhead':
      return ddlOverhead(context);
    case 'capture': {
      const results: ScenarioResult[] = [];
      for (const table of context.tables) results.push(...(await captureLocal(context, table)));
      return results;
    }
    case 'capture-s3':
      return captureS3(context, context.tables.find((table) => table.size === '1m') ?? context.tables[0]!);
    case 'restore': {
      const results: ScenarioResult[] = [];
      for (const table of context.tables) results.push(...(await restore(context, table)));
      return results;
    }
    case 'drop-approval':
      return dropApproval(context);
    case 'undo':
      return undo(context);
    case 'poll':
      return pollUnchanged(context);
    case 'concurrent-captures':
      return concurrentCaptures(context);
    case 'catalog':
      return catalog(context);
    case 'writers-blocked':
      return writersBlocked(context);
    case 'writers-blocked-operator':
      return writersBlockedOperator(context);
  }
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  if (options === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const startedAt = new Date().toISOString();
  const server = await startBenchServer(options);
  const workDir = await mkdtemp(path.join(os.tmpdir(), 'backstop-bench-work-'));
  try {
    log(`server: ${server.version} (${server.label})`);
    const machine = await machineFacts(server);
    log(`machine: ${machine.cores} cores, ${machine.memoryGb} GB, ${machine.cpuModel}, load ${machine.loadAverageAtStart.join(' ')}`);
    const cli = new BackstopCli(repoRoot);
    let buildError: string | undefined;
    if (!options.noBuild && options.scenarios.some((name) => CLI_SCENARIOS.includes(name))) {
      log('building dist/ (tsc -p tsconfig.build.json)…');
      buildError = await cli.build();
      if (buildError) log(`build failed: ${buildError}`);
    }
    const tables = options.scenarios.some((name) => TABLE_SCENARIOS.includes(name)) ? await ensureBenchTables(server, options.rows, log) : [];
    const artifacts: Artifacts = { dumps: new Map(), localSnapshots: new Map() };
    const context: ScenarioContext = { server, options, tables, workDir, repoRoot, cli, buildError, artifacts, log };

    const results: ScenarioResult[] = [];
    for (const name of options.scenarios) {
      log(`— scenario ${name}`);
      try {
        results.push(...(await runScenario(name, context)));
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        log(`scenario ${name} failed: ${reason}`);
        results.push({ scenario: name, id: `${name}:failed`, title: `${name} (failed)`, status: 'failed', reason });
      }
    }
    results.push(...rssRows(results));

    const file = await writeRunRecord(repoRoot, { startedAt, finishedAt: new Date().toISOString(), options, server: server.label, machine, results });
    log(`results: ${path.relative(repoRoot, file)}`);
    if (!options.noReport) {
      await updateBenchmarksMd(repoRoot);
      await updateReadme(repoRoot);
      log('BENCHMARKS.md updated');
    }
    for (const result of results) {
      const ratio = result.ratio !== undefined ? ` ratio ${result.ratio.toFixed(2)}×` : '';
      const delta = result.delta !== undefined ? ` added ${result.delta.toFixed(3)}` : '';
      log(`${result.id}: ${result.status}${ratio}${delta}${result.target ? ` — target ${result.target.text}: ${result.target.met === undefined ? 'n/a' : result.target.met ? 'met' : 'MISSED'}` : ''}${result.reason ? ` (${result.reason})` : ''}`);
    }
    return 0;
  } finally {
    await rm(workDir, { recursive: true, force: true });
    await server.release();
    if (options.keepServer) log(`server kept running: ${server.adminUrl}`);
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
