#!/usr/bin/env node
/**
 * Compile src/snapshot/row-hash/row-hash.wat to WebAssembly and write it, base64-encoded, to
 * src/snapshot/row-hash/row-hash-wasm.ts. The generated file is committed, so neither `npm ci`
 * nor the build needs wabt; test/snapshot/row-hash.test.ts fails when it is out of date.
 *
 *   npm run build:row-hash          # regenerate
 *   npm run build:row-hash -- --check   # exit 1 when the committed file differs
 */
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { compileRowHashSource, renderRowHashModule } from './row-hash-compiler.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const watPath = `${root}src/snapshot/row-hash/row-hash.wat`;
const outPath = `${root}src/snapshot/row-hash/row-hash-wasm.ts`;

const binary = await compileRowHashSource(await readFile(watPath, 'utf8'));
const rendered = renderRowHashModule(binary);
if (process.argv.includes('--check')) {
  const current = await readFile(outPath, 'utf8').catch(() => '');
  if (current !== rendered) {
    console.error(`${outPath} is out of date: run npm run build:row-hash`);
    process.exit(1);
  }
  console.log(`${outPath} is up to date (${binary.length} bytes of WebAssembly)`);
} else {
  await writeFile(outPath, rendered);
  console.log(`wrote ${outPath} (${binary.length} bytes of WebAssembly)`);
}
