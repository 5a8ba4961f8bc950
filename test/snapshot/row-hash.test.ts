/**
 * The streaming row hash (src/snapshot/row-hash): against an independent reference written here
 * from its definition (hash the fields with BigInt arithmetic), across every chunk boundary, row
 * order, escapes, and rows PostgreSQL itself wrote.
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
      word |= BigInt(byte) << BigInt(8 * n);
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

/** COPY text format, escaped as PostgreSQL's output does. */
function textLine(row: Row): string {
  return row
    .map((field) => {
      if (field === null) return '\\N';
      return field.replace(/[\\\n\r\t\b\f\v]/g, (c) => ({ '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f', '\v': '\\v' })[c]!);
    })
    .join('\t');
}

function hashOf(data: string | Buffer, chunkSize = 65536) {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const hasher = new RowHasher();
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
  const text = rows.map((row) => `${textLine(row)}\n`).join('');

  it('matches the reference definition', () => {
    expect(hashOf(text)).toMatchObject({ rows: 400, value: expected, conclusive: true });
    // Escapes PostgreSQL does not print but reads the same way decode alike.
    expect(hashOf('a\\\\b\n').value).toBe(referenceHash([['a\\b']]));
  });

  it('gives the same result wherever the chunks are cut', () => {
    const sample = awkwardRows(12, 99);
    const want = referenceHash(sample);
    const bytes = Buffer.from(sample.map((row) => `${textLine(row)}\n`).join(''));
    for (let size = 1; size <= 17; size++) expect(hashOf(bytes, size).value).toBe(want);
  });

  it('ignores row order and tells apart what differs', () => {
    expect(hashOf([...rows].reverse().map((row) => `${textLine(row)}\n`).join('')).value).toBe(expected);
    const pairs: Array<[string, string]> = [
      ['\\N\n', '\n'], // NULL vs empty string
      ['a\tb\n', 'a\\tb\n'], // two fields vs one with a tab
      ['ab\t\n', 'a\tb\n'],
      ['abcdefgh\t\n', 'abcdefg\th\n'],
      ['abcdefghijklmnop\n', 'abcdefghijklmnoq\n'],
      ['1\t2\n3\t4\n', '1\t4\n3\t2\n'], // same multiset of values, different rows
      ['\\N\n', '\\\\N\n'], // NULL vs the text \N
    ];
    for (const [a, b] of pairs) expect(hashOf(a).value, `${JSON.stringify(a)} vs ${JSON.stringify(b)}`).not.toBe(hashOf(b).value);
  });

  it('refuses a stream cut inside a row, and flags what it cannot decode exactly', () => {
    expect(() => hashOf('1\t2\n3\t')).toThrow(/ended in the middle of a row/);
    expect(() => hashOf('1\t2\\')).toThrow(/ended in the middle of a row/);
    expect(hashOf('')).toMatchObject({ rows: 0, value: '0', conclusive: true });
    for (const inconclusive of ['\\101\n', '\\x41\n', '\\.\n', 'a\\Nb\n', '\\Nb\n', '\\N\\N\n', 'a\rb\n', 'a\r\n']) {
      expect(hashOf(inconclusive).conclusive, JSON.stringify(inconclusive)).toBe(false);
    }
  });

  it('measures the longest row', () => {
    // "bbbb\tc\\nc⏎" is 10 bytes.
    expect(hashOf('a\nbbbb\tc\\nc\n\n').maxRowBytes).toBe(10);
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

  async function copyOut(sql = 'COPY mixed TO STDOUT'): Promise<Buffer> {
    const chunks: Buffer[] = [];
    await pipeline(
      client.query(copyStreams.to(sql)),
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          chunks.push(chunk);
          callback();
        },
      }),
    );
    return Buffer.concat(chunks);
  }

  it('decodes what COPY prints: the hash of a table equals the reference over its values', async () => {
    const copied = hashOf(await copyOut(), 4093);
    expect(copied).toMatchObject({ rows: 3000, conclusive: true });
    // The same values, fetched as text through the protocol (NULL as null), hashed by the reference.
    const { rows } = await client.query<Record<string, string | null>>({ text: `SELECT id::text, t, u, j::text, backslash_n, end_marker, at::text FROM mixed`, rowMode: 'array' } as never);
    expect(copied.value).toBe(referenceHash(rows as unknown as Row[]));
    await client.query(`UPDATE mixed SET u = u || 'x' WHERE id = 1500`);
    expect(hashOf(await copyOut()).value).not.toBe(copied.value);
  });
});
