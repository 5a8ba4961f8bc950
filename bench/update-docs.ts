/**
 * `npm run bench:docs`: regenerate BENCHMARKS.md's table and the README's figures from the result
 * files in bench/results, without measuring anything (e.g. after merging a branch that added a
 * result file). test/docs/readme-figures.test.ts fails until this has run.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { updateBenchmarksMd, updateReadme } from './report.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
await updateBenchmarksMd(repoRoot);
await updateReadme(repoRoot);
console.log('BENCHMARKS.md and README.md regenerated from bench/results');
