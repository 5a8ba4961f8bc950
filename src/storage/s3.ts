/**
 * S3 (and S3-compatible services) as snapshot storage. Uploads are streamed multipart uploads
 * (lib-storage), completed only once the whole body went up, so a failed or aborted upload leaves
 * no object. Credentials come from the standard AWS chain.
 *
 * Multipart uploads are recorded (`uploads/…json`, see unfinished-uploads.ts) before their first
 * part is sent, and the record is removed when the upload is completed or aborted: a middleware on
 * the client sees CreateMultipartUpload's answer (the upload id) before lib-storage can send a
 * part, since every part needs that id. What a killed capture leaves is then found and aborted.
 *
 * Custom endpoints get `forcePathStyle` and the `WHEN_REQUIRED` checksum settings: with the SDK's
 * default checksums, services such as s3rver store streamed PUTs with their aws-chunked framing
 * still in the body (silent corruption). AWS_REQUEST_CHECKSUM_CALCULATION /
 * AWS_RESPONSE_CHECKSUM_VALIDATION in the environment override that default.
 */
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { createHash } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { NotFoundError, StorageError, describeError } from '../errors/index.js';
import { checkKey } from './keys.js';
import type { PutOptions, Storage, StoredObject } from './storage.js';
import {
  RECORD_RENEW_MS,
  THIS_PROCESS,
  UPLOAD_RECORDS_PREFIX,
  type UnfinishedUpload,
  type UnfinishedUploadsListing,
  type UploadRecord,
} from './unfinished-uploads.js';
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
  if (name === 'AccessDenied' || httpStatus(error) === 403) {
    return `grant this identity s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject, s3:AbortMultipartUpload and s3:ListBucketMultipartUploads on "${bucket}"`;
  }
  if (name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch' || name === 'CredentialsProviderError' || /credential/i.test(message)) {
    return 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an instance role) for this process';
  }
  if (/region is missing/i.test(message)) return 'set AWS_REGION (or AWS_DEFAULT_REGION) for this process';
  if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET|socket hang up/.test(`${name} ${message}`)) {
    return 'check that the S3 endpoint in --storage is reachable from this host';
  }
  return 'check --storage, the credentials in the environment and the network path to S3';
}

function isNoSuchUpload(error: unknown): boolean {
  return errorName(error) === 'NoSuchUpload' || httpStatus(error) === 404;
}

/** Parts listed per upload at most when sizes are asked for (a report, not an inventory). */
const SIZED_UPLOADS = 200;

export class S3Storage implements Storage {
  readonly url: string;
  readonly client: S3Client;
  /** Renewal timers of this process's upload records, by upload id. */
  readonly #renewals = new Map<string, NodeJS.Timeout>();

  constructor(readonly location: S3Location, client?: S3Client) {
    this.url = formatStorageLocation(location);
    this.client = client ?? new S3Client(s3ClientConfig(location));
    this.client.middlewareStack.add(
      (next, context) => async (args) => {
        const input = args.input as { Key?: string; UploadId?: string };
        const key = input.Key === undefined ? undefined : this.storageKey(input.Key);
        switch (context.commandName) {
          case 'CreateMultipartUploadCommand': {
            const result = await next(args);
            const uploadId = (result.output as { UploadId?: string }).UploadId;
            if (key !== undefined && uploadId) await this.startRecord(key, uploadId);
            return result;
          }
          case 'CompleteMultipartUploadCommand': {
            const result = await next(args);
            if (key !== undefined && input.UploadId) await this.endRecord(key, input.UploadId);
            return result;
          }
          case 'AbortMultipartUploadCommand':
            try {
              const result = await next(args);
              if (key !== undefined && input.UploadId) await this.endRecord(key, input.UploadId);
              return result;
            } catch (error) {
              // Gone already: nothing left to abort. Any other failure keeps the record, so the
              // upload is tried again at the next start or prune.
              if (key !== undefined && input.UploadId) {
                if (isNoSuchUpload(error)) await this.endRecord(key, input.UploadId);
                else this.stopRenewing(input.UploadId);
              }
              throw error;
            }
          default:
            return next(args);
        }
      },
      { step: 'initialize', name: 'backstopUploadRecords' },
    );
  }

  private objectKey(key: string): string {
    checkKey(key);
    return this.location.prefix ? `${this.location.prefix}/${key}` : key;
  }

  /** The storage key of an object key under this store's prefix, or undefined for other keys. */
  private storageKey(objectKey: string): string | undefined {
    if (!this.location.prefix) return objectKey;
    const root = `${this.location.prefix}/`;
    return objectKey.startsWith(root) ? objectKey.slice(root.length) : undefined;
  }

  private recordKey(key: string, uploadId: string): string {
    return `${UPLOAD_RECORDS_PREFIX}${createHash('sha256').update(`${key}\n${uploadId}`).digest('hex').slice(0, 32)}.json`;
  }

  private async writeRecord(record: UploadRecord): Promise<void> {
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.location.bucket,
        Key: this.objectKey(this.recordKey(record.key, record.upload_id)),
        Body: JSON.stringify(record),
        ContentType: 'application/json',
      }),
    );
  }

  /**
   * Record an upload before its first part goes up, and keep the record fresh while it runs. A
   * record that cannot be written fails the upload (and aborts it): an unrecorded upload could
   * be left behind unseen.
   */
  private async startRecord(key: string, uploadId: string): Promise<void> {
    const now = new Date().toISOString();
    const record: UploadRecord = { format: 'backstop-upload/v1', key, upload_id: uploadId, owner: THIS_PROCESS, started_at: now, renewed_at: now };
    try {
      await this.writeRecord(record);
    } catch (error) {
      await this.client
        .send(new AbortMultipartUploadCommand({ Bucket: this.location.bucket, Key: this.objectKey(key), UploadId: uploadId }))
        .catch(() => {});
      throw this.fail('record the upload of', this.objectKey(key), error);
    }
    const timer = setInterval(() => {
      this.writeRecord({ ...record, renewed_at: new Date().toISOString() }).catch(() => {
        // The next renewal tries again; a record that goes stale only gets its upload aborted.
      });
    }, RECORD_RENEW_MS);
    timer.unref();
    this.#renewals.set(uploadId, timer);
  }

  private stopRenewing(uploadId: string): void {
    clearInterval(this.#renewals.get(uploadId));
    this.#renewals.delete(uploadId);
  }

  /** The upload is finished (completed or aborted): its record goes. Best effort: a record left over is tidied by the next cleanup. */
  private async endRecord(key: string, uploadId: string): Promise<void> {
    this.stopRenewing(uploadId);
    await this.delete(this.recordKey(key, uploadId)).catch(() => {});
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

  async listFolders(prefix: string): Promise<string[]> {
    const root = this.location.prefix ? `${this.location.prefix}/` : '';
    const folders: string[] = [];
    let token: string | undefined;
    try {
      do {
        const response = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.location.bucket, Prefix: `${root}${prefix}`, Delimiter: '/', ContinuationToken: token }),
        );
        for (const common of response.CommonPrefixes ?? []) {
          if (common.Prefix) folders.push(common.Prefix.slice(`${root}${prefix}`.length).replace(/\/$/, ''));
        }
        token = response.IsTruncated ? response.NextContinuationToken : undefined;
      } while (token);
    } catch (error) {
      throw this.fail('list', `${root}${prefix}`, error);
    }
    return folders;
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

  async unfinishedUploads(options: { sizes?: boolean } = {}): Promise<UnfinishedUploadsListing> {
    const found = new Map<string, UnfinishedUpload>();
    const id = (key: string, uploadId: string) => `${key}\n${uploadId}`;
    // Records first, then the listing: a record read here was written after its upload was
    // created, so the listing that follows shows that upload if it still exists.
    for (const object of await this.list(UPLOAD_RECORDS_PREFIX)) {
      const record = await this.readRecord(object.key);
      if (record) found.set(id(record.key, record.upload_id), { key: record.key, uploadId: record.upload_id, record: { ...record, recordKey: object.key } });
    }
    let listingError: string | undefined;
    const root = this.location.prefix ? `${this.location.prefix}/` : '';
    try {
      let keyMarker: string | undefined;
      let uploadIdMarker: string | undefined;
      do {
        const response = await this.client.send(
          new ListMultipartUploadsCommand({ Bucket: this.location.bucket, Prefix: `${root}snapshots/`, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
        );
        for (const upload of response.Uploads ?? []) {
          const key = upload.Key === undefined ? undefined : this.storageKey(upload.Key);
          if (key === undefined || !upload.UploadId) continue;
          const known = found.get(id(key, upload.UploadId));
          found.set(id(key, upload.UploadId), { ...known, key, uploadId: upload.UploadId, ...(upload.Initiated ? { initiated: upload.Initiated } : {}) });
        }
        const more = response.IsTruncated === true;
        keyMarker = more ? response.NextKeyMarker : undefined;
        uploadIdMarker = more ? response.NextUploadIdMarker : undefined;
      } while (keyMarker !== undefined);
    } catch (error) {
      listingError = `${errorName(error) || 'error'}: ${describeError(error)}`;
    }
    const uploads = [...found.values()];
    if (options.sizes) {
      for (const upload of uploads.slice(0, SIZED_UPLOADS)) {
        const bytes = await this.partBytes(upload).catch(() => undefined);
        if (bytes !== undefined) upload.bytes = bytes;
      }
    }
    return { uploads, ...(listingError ? { listingError } : {}) };
  }

  private async readRecord(recordKey: string): Promise<UploadRecord | undefined> {
    try {
      const chunks: Buffer[] = [];
      for await (const chunk of await this.get(recordKey)) chunks.push(chunk as Buffer);
      const record = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Partial<UploadRecord>;
      if (record.format !== 'backstop-upload/v1' || typeof record.key !== 'string' || typeof record.upload_id !== 'string' || !record.owner) return undefined;
      return record as UploadRecord;
    } catch {
      // Removed meanwhile (its upload finished) or damaged: nothing to act on.
      return undefined;
    }
  }

  private async partBytes(upload: UnfinishedUpload): Promise<number> {
    let bytes = 0;
    let marker: string | undefined;
    do {
      const response = await this.client.send(
        new ListPartsCommand({ Bucket: this.location.bucket, Key: this.objectKey(upload.key), UploadId: upload.uploadId, PartNumberMarker: marker }),
      );
      for (const part of response.Parts ?? []) bytes += part.Size ?? 0;
      marker = response.IsTruncated ? response.NextPartNumberMarker : undefined;
    } while (marker !== undefined);
    return bytes;
  }

  async abortUpload(upload: UnfinishedUpload): Promise<void> {
    const objectKey = this.objectKey(upload.key);
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.location.bucket, Key: objectKey, UploadId: upload.uploadId }));
    } catch (error) {
      if (!isNoSuchUpload(error)) {
        throw new StorageError(`cannot abort the unfinished upload ${upload.uploadId} of s3://${this.location.bucket}/${objectKey}: ${describeError(error) || errorName(error)}`, {
          cause: error,
          hint: `${hintFor(error, this.location.bucket)}; an S3 lifecycle rule (AbortIncompleteMultipartUpload) aborts such uploads without Backstop`,
        });
      }
    }
    if (upload.record) await this.delete(upload.record.recordKey);
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
