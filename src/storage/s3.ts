/**
 * S3 (and S3-compatible services) as snapshot storage. Uploads are streamed multipart uploads
 * (lib-storage), completed only once the whole body went up, so a failed or aborted upload leaves
 * no object. Credentials come from the standard AWS chain.
 *
 * Custom endpoints get `forcePathStyle` and the `WHEN_REQUIRED` checksum settings: with the SDK's
 * default checksums, services such as s3rver store streamed PUTs with their aws-chunked framing
 * still in the body (silent corruption). AWS_REQUEST_CHECKSUM_CALCULATION /
 * AWS_RESPONSE_CHECKSUM_VALIDATION in the environment override that default.
 */
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { PassThrough, Readable } from 'node:stream';
import { NotFoundError, StorageError, describeError } from '../errors/index.js';
import { checkKey } from './keys.js';
import type { PutOptions, Storage, StoredObject } from './storage.js';
import { formatStorageLocation, type S3Location } from './url.js';

const MIN_PART_SIZE = 8 * 1024 * 1024;
// S3 allows 10,000 parts per upload; keep a margin for a body that grows past its announced size.
const MAX_PARTS = 9_000;
const QUEUE_SIZE = 4;

export function s3ClientConfig(location: S3Location, env: NodeJS.ProcessEnv = process.env): S3ClientConfig {
  const custom = location.endpoint !== undefined;
  const region = env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? (custom ? 'us-east-1' : undefined);
  return {
    ...(region ? { region } : {}),
    ...(custom
      ? {
          endpoint: location.endpoint,
          forcePathStyle: true,
          ...(env.AWS_REQUEST_CHECKSUM_CALCULATION ? {} : { requestChecksumCalculation: 'WHEN_REQUIRED' as const }),
          ...(env.AWS_RESPONSE_CHECKSUM_VALIDATION ? {} : { responseChecksumValidation: 'WHEN_REQUIRED' as const }),
        }
      : { followRegionRedirects: true }),
  };
}

function errorName(error: unknown): string {
  if (error && typeof error === 'object') {
    const named = error as { name?: unknown; Code?: unknown; code?: unknown };
    if (typeof named.Code === 'string') return named.Code;
    if (typeof named.code === 'string') return named.code;
    if (typeof named.name === 'string') return named.name;
  }
  return '';
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

function hintFor(error: unknown, bucket: string): string {
  const name = errorName(error);
  const message = describeError(error);
  if (name === 'NoSuchBucket') return `create the bucket "${bucket}" or fix the bucket name in --storage`;
  if (name === 'AccessDenied' || httpStatus(error) === 403) return `grant this identity s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on "${bucket}"`;
  if (name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch' || name === 'CredentialsProviderError' || /credential/i.test(message)) {
    return 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an instance role) for this process';
  }
  if (/region is missing/i.test(message)) return 'set AWS_REGION (or AWS_DEFAULT_REGION) for this process';
  if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET|socket hang up/.test(`${name} ${message}`)) {
    return 'check that the S3 endpoint in --storage is reachable from this host';
  }
  return 'check --storage, the credentials in the environment and the network path to S3';
}

export class S3Storage implements Storage {
  readonly url: string;
  readonly client: S3Client;

  constructor(readonly location: S3Location, client?: S3Client) {
    this.url = formatStorageLocation(location);
    this.client = client ?? new S3Client(s3ClientConfig(location));
  }

  private objectKey(key: string): string {
    checkKey(key);
    return this.location.prefix ? `${this.location.prefix}/${key}` : key;
  }

  private fail(action: string, key: string, error: unknown): StorageError {
    return new StorageError(`cannot ${action} s3://${this.location.bucket}/${key}: ${describeError(error) || errorName(error)}`, {
      cause: error,
      hint: hintFor(error, this.location.bucket),
    });
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<{ size: number }> {
    const objectKey = this.objectKey(key);
    let size = 0;
    const counted = new PassThrough();
    counted.on('data', (chunk: Buffer) => {
      size += chunk.length;
    });
    body.on('error', (error) => counted.destroy(error));
    body.pipe(counted);
    const abortController = new AbortController();
    const onAbort = () => {
      abortController.abort();
      body.destroy();
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const partSize = Math.max(MIN_PART_SIZE, Math.ceil((options.size ?? 0) / MAX_PARTS));
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.location.bucket, Key: objectKey, Body: counted, ContentType: options.contentType ?? 'application/octet-stream' },
      partSize,
      queueSize: QUEUE_SIZE,
      leavePartsOnError: false,
      abortController,
    });
    try {
      await upload.done();
      return { size };
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason ?? error;
      throw this.fail('upload', objectKey, error);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  async get(key: string): Promise<Readable> {
    const objectKey = this.objectKey(key);
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.location.bucket, Key: objectKey }));
      if (!(response.Body instanceof Readable)) throw new Error('the response has no readable body');
      return response.Body;
    } catch (error) {
      if (errorName(error) === 'NoSuchKey' || httpStatus(error) === 404) {
        throw new NotFoundError(`s3://${this.location.bucket}/${objectKey} does not exist`, { cause: error, hint: 'check --storage and the snapshot id (backstop snapshots list)' });
      }
      throw this.fail('read', objectKey, error);
    }
  }

  async head(key: string): Promise<StoredObject | undefined> {
    const objectKey = this.objectKey(key);
    try {
      const response = await this.client.send(new HeadObjectCommand({ Bucket: this.location.bucket, Key: objectKey }));
      return { key, size: response.ContentLength ?? 0, modified: response.LastModified ?? new Date(0) };
    } catch (error) {
      if (errorName(error) === 'NotFound' || errorName(error) === 'NoSuchKey' || httpStatus(error) === 404) return undefined;
      throw this.fail('inspect', objectKey, error);
    }
  }

  async list(prefix: string): Promise<StoredObject[]> {
    const root = this.location.prefix ? `${this.location.prefix}/` : '';
    const objects: StoredObject[] = [];
    let token: string | undefined;
    try {
      do {
        const response = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.location.bucket, Prefix: `${root}${prefix}`, ContinuationToken: token }),
        );
        for (const item of response.Contents ?? []) {
          if (!item.Key) continue;
          objects.push({ key: item.Key.slice(root.length), size: item.Size ?? 0, modified: item.LastModified ?? new Date(0) });
        }
        token = response.IsTruncated ? response.NextContinuationToken : undefined;
      } while (token);
    } catch (error) {
      throw this.fail('list', `${root}${prefix}`, error);
    }
    return objects;
  }

  async delete(key: string): Promise<void> {
    const objectKey = this.objectKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.location.bucket, Key: objectKey }));
    } catch (error) {
      if (errorName(error) === 'NoSuchKey' || httpStatus(error) === 404) return;
      throw this.fail('remove', objectKey, error);
    }
  }

  async check(): Promise<void> {
    const root = this.location.prefix ? `${this.location.prefix}/` : '';
    try {
      await this.client.send(new ListObjectsV2Command({ Bucket: this.location.bucket, Prefix: root, MaxKeys: 1 }));
    } catch (error) {
      throw new StorageError(`storage ${this.url} is not reachable: ${describeError(error) || errorName(error)}`, {
        cause: error,
        hint: hintFor(error, this.location.bucket),
      });
    }
  }
}
