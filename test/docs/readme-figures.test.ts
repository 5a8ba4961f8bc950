/**
 * Every performance figure in the README comes from the benchmark results: the README's figures
 * block and BENCHMARKS.md's table are both generated from bench/results (the latest run of each
 * row) and must equal what those files give now; no ratio is written by hand elsewhere in the
 * README. `npm run bench` regenerates both, `npm run bench:docs` without measuring (after a merge
 * that brought a new result file); editing one by hand fails here.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { README_END_MARKER, README_START_MARKER, benchmarksBlock, readRunRecords, readmeFiguresBlock, renderReadmeFigures, renderSummary } from '../../bench/report.js';
import { REPO_ROOT } from '../support/agent-process.js';

describe('README and BENCHMARKS.md figures', () => {
  it('the README figures are those of the latest benchmark results', async () => {
    const readme = await readFile(path.join(REPO_ROOT, 'README.md'), 'utf8');
    expect(readmeFiguresBlock(readme)).toBe(renderReadmeFigures(await readRunRecords(REPO_ROOT)));
  });

  it('BENCHMARKS.md shows the latest benchmark results', async () => {
    const benchmarks = await readFile(path.join(REPO_ROOT, 'BENCHMARKS.md'), 'utf8');
    expect(benchmarksBlock(benchmarks)).toBe(renderSummary(await readRunRecords(REPO_ROOT)));
  });

  it('the README states no ratio outside the generated block', async () => {
    const readme = await readFile(path.join(REPO_ROOT, 'README.md'), 'utf8');
    const outside = readme.slice(0, readme.indexOf(README_START_MARKER)) + readme.slice(readme.indexOf(README_END_MARKER));
    expect(outside.match(/\d(\.\d+)?\s*×/g) ?? []).toEqual([]);
  });
});
