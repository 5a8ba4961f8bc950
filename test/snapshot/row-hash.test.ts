/**
 * The streaming row hash (src/snapshot/row-hash): against an independent reference written here
 * from its definition (parse the rows, then hash the fields with BigInt arithmetic), across CSV
 * quoting styles, the COPY text format, every chunk boundary, row order, and rows PostgreSQL
 * itself wrote in both formats.
 */
import { readFile } from 'node:fs/promises';
import type pg from 'pg';
import copyStreams from 'pg-copy-streams';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RowHasher } from '../../src/snapshot/row-hash/row-hasher.js';
import { ROW_HASH_WASM_BASE64 } from '../../src/snapshot/row-hash/row-hash-wasm.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { compileRowHashSource } from '../../scripts/row-hash-compiler.mjs';

type Field = string | null;
type Row = Field[];

const MASK = (1n << 64n) - 1n;
const SEED = 0x243f6a8885a308d3n;

function mix(h: bigint, word: bigint): bigint {
  const x = ((h ^ word) * 0x9e3779b97f4a7c15n) & MASK;
  return x ^ (x >> 32n);
}

function fmix64(k: bigint): bigint {
  k = ((k ^ (k >> 33n)) * 0xff51afd7ed558ccdn) & MASK;
  k = ((k ^ (k >> 33n)) * 0xc4ceb9fe1a85ec53n) & MASK;
  return k ^ (k >> 33n);
}

/** The definition in row-hash.wat, spelled out. */
function referenceRowHash(row: Row): bigint {
  let h = SEED;
  for (const field of row) {
    const bytes = field === null ? Buffer.alloc(0) : Buffer.from(field, 'utf8');
    let word = 0n;
    let n = 0;
    for (const byte of bytes) {
      word = (word << 8n) | BigInt(byte);
      n += 1;
      if (n === 8) {
        h = mix(h, word);
        word = 0n;
        n = 0;
      }
    }
    if (n > 0) h = mix(h, word);
    h = mix(h, 0xff00000000000000n | BigInt(n) | (field === null ? 1n << 8n : 0n));
  }
  return fmix64(h);
}

function referenceHash(rows: Row[]): string {
  let sum = 0n;
  for (const row of rows) sum += referenceRowHash(row);
  return (sum & ((1n << 128n) - 1n)).toString();
}

/** PostgreSQL's CSV output rules: quote a value that is empty or holds , " CR or LF. */
function csvLine(row: Row, quoteAll = false): string {
  return row
    .map((field) => {
      if (field === null) return '';
      if (quoteAll || field === '' || /[,"\r\n]/.test(field)) return `"${field.replaceAll('"', '""')}"`;
      return field;
    })
    .join(',');
}

/** COPY text format, escaped as PostgreSQL's output does. */
function textLine(row: Row): string {
  return row
    .map((field) => {
      if (field === null) return '\\N';
      return field.replace(/[\\\n\r\t\b\f\v]/g, (c) => ({ '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f', '\v': '\\v' })[c]!);
    })
    .join('\t');
}

function hashOf(format: 'csv' | 'text', data: string | Buffer, chunkSize = 65536) {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const hasher = new RowHasher(format);
  for (let at = 0; at < bytes.length; at += chunkSize) hasher.update(bytes.subarray(at, at + chunkSize));
  return hasher.result();
}

/** Deterministic pseudo-random rows with every awkward value. */
function awkwardRows(count: number, seed = 7): Row[] {
  let state = seed;
  const next = () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state / 2 ** 32;
  };
  const pieces = ['', 'a', ',', '"', '""', '\n', '\r', '\t', '\\', '\\N', 'N', 'é', '表', '✓', ' ', 'x'.repeat(8), 'y'.repeat(7), '\\.', '\b\f\v'];
  const rows: Row[] = [];
  for (let r = 0; r < count; r++) {
    const width = 1 + Math.floor(next() * 5);
    const row: Row = [];
    for (let f = 0; f < width; f++) {
      if (next() < 0.15) {
        row.push(null);
        continue;
      }
      let value = '';
      const parts = Math.floor(next() * 4);
      for (let p = 0; p < parts; p++) value += pieces[Math.floor(next() * pieces.length)]!;
      row.push(value);
    }
    rows.push(row);
  }
  return rows;
}

describe('row hash', () => {
  const rows = awkwardRows(400);
  const expected = referenceHash(rows);
  const csv = rows.map((row) => `${csvLine(row)}\n`).join('');

  it('matches the reference definition for CSV, however it is quoted, and for COPY text', () => {
    expect(hashOf('csv', csv)).toMatchObject({ rows: 400, value: expected, conclusive: true });
    expect(hashOf('csv', rows.map((row) => `${csvLine(row, true)}\n`).join('')).value).toBe(expected);
    expect(hashOf('text', rows.map((row) => `${textLine(row)}\n`).join(''))).toMatchObject({ rows: 400, value: expected, conclusive: true });
  });

  it('gives the same result wherever the chunks are cut', () => {
    const sample = awkwardRows(12, 99);
    const want = referenceHash(sample);
    const csvBytes = Buffer.from(sample.map((row) => `${csvLine(row)}\n`).join(''));
    const textBytes = Buffer.from(sample.map((row) => `${textLine(row)}\n`).join(''));
    for (let size = 1; size <= 17; size++) {
      expect(hashOf('csv', csvBytes, size).value).toBe(want);
      expect(hashOf('text', textBytes, size).value).toBe(want);
    }
  });

  it('ignores row order and tells apart what differs', () => {
    const shuffled = [...rows].reverse();
    expect(hashOf('csv', shuffled.map((row) => `${csvLine(row)}\n`).join('')).value).toBe(expected);
    const pairs: Array<[string, string]> = [
      ['\n', '""\n'], // NULL vs empty string
      ['a,b\n', '"a,b"\n'], // two fields vs one
      ['ab,\n', 'a,b\n'],
      ['abcdefgh,\n', 'abcdefg,h\n'],
      ['1,2\n3,4\n', '1,4\n3,2\n'], // same multiset of values, different rows
    ];
    for (const [a, b] of pairs) expect(hashOf('csv', a).value, `${JSON.stringify(a)} vs ${JSON.stringify(b)}`).not.toBe(hashOf('csv', b).value);
    expect(hashOf('text', '\\N\n').value).toBe(hashOf('csv', '\n').value);
    expect(hashOf('text', '\n').value).toBe(hashOf('csv', '""\n').value);
  });

  it('refuses a stream cut inside a row, and flags what it cannot decode exactly', () => {
    expect(() => hashOf('csv', '1,2\n3,')).toThrow(/ended in the middle of a row/);
    expect(() => hashOf('csv', '1,"open\n')).toThrow(/ended in the middle of a row/);
    expect(hashOf('csv', '').rows).toBe(0);
    expect(hashOf('csv', '').value).toBe('0');
    for (const inconclusive of ['\\101\n', '\\x41\n', '\\.\n', 'a\\Nb\n', '\\Nb\n', 'a\rb\n']) {
      expect(hashOf('text', inconclusive).conclusive, JSON.stringify(inconclusive)).toBe(false);
    }
    expect(hashOf('csv', 'a\r\n').conclusive).toBe(false);
    expect(hashOf('csv', '"a\rb"\n').conclusive).toBe(true);
  });

  it('measures the longest row', () => {
    // "bbbb,"c⏎c"⏎" is 11 bytes.
    expect(hashOf('csv', 'a\nbbbb,"c\nc"\n\n').maxRowBytes).toBe(11);
  });

  it('is built from the committed WebAssembly source', async () => {
    const wat = await readFile(new URL('../../src/snapshot/row-hash/row-hash.wat', import.meta.url), 'utf8');
    const binary = await compileRowHashSource(wat);
    expect(binary.toString('base64'), 'row-hash-wasm.ts is stale: run npm run build:row-hash').toBe(ROW_HASH_WASM_BASE64);
  });
});

describe('row hash of rows PostgreSQL wrote', () => {
  let db: TestDatabase;
  let client: pg.Client;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await db.client();
    await client.query(`SET TimeZone = 'UTC'`);
    await client.query(`
      CREATE TABLE mixed AS
      SELECT g AS id, CASE WHEN g % 7 = 0 THEN NULL ELSE 'v' || g || repeat(E'\\t,"\\\\\\n\\r', g % 3) END AS t,
             CASE WHEN g % 5 = 0 THEN '' ELSE 'é表' END AS u, jsonb_build_object('k', g, 'q', 'a"b') AS j,
             '\\N'::text AS backslash_n, E'\\\\.'::text AS end_marker, now() - g * interval '1 hour' AS at
        FROM generate_series(1, 3000) AS g`);
  });

  afterAll(async () => {
    await db?.drop();
  });

  async function copyOut(format: 'csv' | 'text'): Promise<Buffer> {
    const chunks: Buffer[] = [];
    await pipeline(
      client.query(copyStreams.to(`COPY mixed TO STDOUT${format === 'csv' ? ' (FORMAT csv)' : ''}`)),
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          chunks.push(chunk);
          callback();
        },
      }),
    );
    return Buffer.concat(chunks);
  }

  it('hashes the CSV and the text format of the same rows alike', async () => {
    const csv = hashOf('csv', await copyOut('csv'), 4096);
    const text = hashOf('text', await copyOut('text'), 4093);
    expect(csv).toMatchObject({ rows: 3000, conclusive: true });
    expect(text).toMatchObject({ rows: 3000, conclusive: true, value: csv.value });
    await client.query(`UPDATE mixed SET u = u || 'x' WHERE id = 1500`);
    expect(hashOf('csv', await copyOut('csv')).value).not.toBe(csv.value);
  });
});
