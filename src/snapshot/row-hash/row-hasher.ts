/**
 * The content hash of rows as they stream through COPY (text format): a WebAssembly
 * decoder/hasher (row-hash.wat) fed chunk by chunk. Capture hashes what PostgreSQL's COPY sends
 * on its way to DuckDB; restore hashes the COPY text it sends to PostgreSQL, and can read the
 * loaded rows back to hash them again. A row is hashed as its decoded fields, so two streams
 * agree exactly when they carry the same text for every value.
 *
 * Why WebAssembly: a JavaScript loop over the bytes cost 0.6–1.2 s per 150 MB (per-row md5 via
 * node:crypto 1.5–2.3 s); this costs about 0.15 s, beside the COPY rather than after it.
 */
import { Transform } from 'node:stream';
import { SnapshotError } from '../../errors/index.js';
import { ROW_HASH_WASM_BASE64 } from './row-hash-wasm.js';

/** The manifest's name for this hash; an older one (sum-md5-int64/v1) is still verified on restore. */
export const ROW_HASH_ALGORITHM = 'row-fields-sum128/v2';

export interface RowHashResult {
  rows: number;
  /** Decimal text of the 128-bit sum of the row hashes. */
  value: string;
  /** Bytes of the longest row, its newline included. */
  maxRowBytes: number;
  /** Bytes hashed. */
  bytes: number;
  /** False when the stream held something the decoder does not read exactly as PostgreSQL does. */
  conclusive: boolean;
}

interface WasmGlobal<T> {
  value: T;
}

interface RowHashExports {
  memory: { buffer: ArrayBuffer };
  reset(): void;
  update(length: number): void;
  atRowBoundary(): number;
  rows: WasmGlobal<bigint>;
  sumLo: WasmGlobal<bigint>;
  sumHi: WasmGlobal<bigint>;
  maxRowBytes: WasmGlobal<bigint>;
  inconclusive: WasmGlobal<number>;
}

/** The slice of the WebAssembly JS API used here (the project's lib settings carry no DOM types). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

let compiled: object | undefined;
function rowHashModule(): object {
  compiled ??= new wasm.Module(Buffer.from(ROW_HASH_WASM_BASE64, 'base64'));
  return compiled;
}

/** Bytes copied into the module per call: its one 64 KiB page. */
const SLICE_BYTES = 64 * 1024;

export class RowHasher {
  #exports: RowHashExports;
  #memory: Uint8Array;
  #bytes = 0;

  constructor() {
    // One instance per stream: the state of a stream lives in the instance's globals.
    this.#exports = new wasm.Instance(rowHashModule()).exports as RowHashExports;
    this.#memory = new Uint8Array(this.#exports.memory.buffer);
    this.#exports.reset();
  }

  update(chunk: Uint8Array): void {
    for (let offset = 0; offset < chunk.length; offset += SLICE_BYTES) {
      const slice = chunk.subarray(offset, Math.min(chunk.length, offset + SLICE_BYTES));
      this.#memory.set(slice, 0);
      this.#exports.update(slice.length);
    }
    this.#bytes += chunk.length;
  }

  /** Rows completed so far (for progress). */
  get rows(): number {
    return Number(this.#exports.rows.value);
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** The hash of the whole stream; it must end right after a row. */
  result(): RowHashResult {
    if (this.#exports.atRowBoundary() !== 1) {
      throw new SnapshotError(`the COPY stream ended in the middle of a row (${this.#bytes} bytes read)`, {
        hint: 'the connection or the file was cut short; run the operation again',
      });
    }
    const lo = this.#exports.sumLo.value;
    const hi = this.#exports.sumHi.value;
    return {
      rows: this.rows,
      value: ((BigInt.asUintN(64, hi) << 64n) | BigInt.asUintN(64, lo)).toString(),
      maxRowBytes: Number(this.#exports.maxRowBytes.value),
      bytes: this.#bytes,
      conclusive: this.#exports.inconclusive.value === 0,
    };
  }
}

/** A pass-through stream that feeds every chunk to `hasher` (and reports progress). */
export function hashingStream(hasher: RowHasher, onProgress?: (rows: number, bytes: number) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      try {
        hasher.update(chunk);
      } catch (error) {
        callback(error as Error);
        return;
      }
      onProgress?.(hasher.rows, hasher.bytes);
      callback(null, chunk);
    },
  });
}
