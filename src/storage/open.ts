/** Open the storage a URL names (see url.ts for the forms). */
import type { Readable } from 'node:stream';
import { LocalStorage } from './local.js';
import type { PutOptions, Storage, StoredObject } from './storage.js';
import type { UnfinishedUpload, UnfinishedUploadsListing } from './unfinished-uploads.js';
import { formatStorageLocation, parseStorageUrl, type S3Location } from './url.js';

/**
 * S3 storage whose SDK is loaded on first use: the AWS SDK takes about 70 ms to import, which
 * every command working on a local folder (and every start of the CLI) would otherwise pay.
 */
class DeferredS3Storage implements Storage {
  readonly url: string;
  readonly #location: S3Location;
  #storage: Promise<Storage> | undefined;

  constructor(location: S3Location) {
    this.#location = location;
    this.url = formatStorageLocation(location);
  }

  #open(): Promise<Storage> {
    this.#storage ??= import('./s3.js').then(({ S3Storage }) => new S3Storage(this.#location));
    return this.#storage;
  }

  async put(key: string, body: Readable, options?: PutOptions): Promise<{ size: number }> {
    return (await this.#open()).put(key, body, options);
  }
  async get(key: string): Promise<Readable> {
    return (await this.#open()).get(key);
  }
  async head(key: string): Promise<StoredObject | undefined> {
    return (await this.#open()).head(key);
  }
  async list(prefix: string): Promise<StoredObject[]> {
    return (await this.#open()).list(prefix);
  }
  async listFolders(prefix: string): Promise<string[]> {
    return (await this.#open()).listFolders!(prefix);
  }
  async delete(key: string): Promise<void> {
    return (await this.#open()).delete(key);
  }
  async check(): Promise<void> {
    return (await this.#open()).check();
  }
  async unfinishedUploads(options?: { sizes?: boolean }): Promise<UnfinishedUploadsListing> {
    return (await this.#open()).unfinishedUploads!(options);
  }
  async abortUpload(upload: UnfinishedUpload): Promise<void> {
    return (await this.#open()).abortUpload!(upload);
  }
}

export function openStorage(url?: string): Storage {
  const location = parseStorageUrl(url);
  return location.kind === 'local' ? new LocalStorage(location.root) : new DeferredS3Storage(location);
}
