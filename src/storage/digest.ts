/** SHA-256 and byte count of a stream, computed as the bytes pass through. */
import { createHash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export interface Digest {
  sha256: string;
  size: number;
}

/** A pass-through stream; `result()` is valid once the stream has ended. */
export function digestingStream(): Transform & { result(): Digest } {
  const hash = createHash('sha256');
  let size = 0;
  let final: Digest | undefined;
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      size += chunk.length;
      callback(null, chunk);
    },
    flush(callback) {
      final = { sha256: hash.digest('hex'), size };
      callback();
    },
  });
  return Object.assign(stream, {
    result(): Digest {
      if (!final) throw new Error('digest read before the stream ended');
      return final;
    },
  });
}

/** Read a whole stream, returning its digest. */
export async function digestOf(stream: Readable): Promise<Digest> {
  const hash = createHash('sha256');
  let size = 0;
  await pipeline(stream, async function* (source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      hash.update(chunk);
      size += chunk.length;
    }
  });
  return { sha256: hash.digest('hex'), size };
}
