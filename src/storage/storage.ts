/**
 * The one interface every snapshot store implements: a local folder or an S3 bucket. Keys are
 * `/`-separated paths relative to the store's root (the URL's prefix). Bodies are streams, never
 * whole buffers, so a 50 GB data file moves with bounded memory.
 */
import type { Readable } from 'node:stream';
import type { UnfinishedUpload, UnfinishedUploadsListing } from './unfinished-uploads.js';

export interface StoredObject {
  key: string;
  size: number;
  modified: Date;
}

export interface PutOptions {
  /** Aborting removes whatever was partly written (temp file, multipart upload). */
  signal?: AbortSignal;
  contentType?: string;
  /** Size in bytes when known in advance; lets S3 choose a part size for very large bodies. */
  size?: number;
}

export interface Storage {
  /** The store's URL as the user would write it (no credentials). */
  readonly url: string;
  /**
   * Write `body` under `key` atomically: readers see either nothing or the whole object (local:
   * temp name renamed into place; S3: single PUT or multipart upload completed at the end).
   * Resolves with the number of bytes written.
   */
  put(key: string, body: Readable, options?: PutOptions): Promise<{ size: number }>;
  /** A stream of the object's bytes; NotFoundError when it does not exist. */
  get(key: string): Promise<Readable>;
  /** Size and modification time, or undefined when the object does not exist. */
  head(key: string): Promise<StoredObject | undefined>;
  /** Every object whose key starts with `prefix`, in no particular order. */
  list(prefix: string): Promise<StoredObject[]>;
  /**
   * The names of the folders directly under `prefix` (which ends with `/`): `snapshots/` gives
   * `public.users`, …. Lets a caller list a large store folder by folder, in parallel.
   */
  listFolders?(prefix: string): Promise<string[]>;
  /** Remove the object; removing a missing object is not an error. */
  delete(key: string): Promise<void>;
  /** Cheap reachability and permission check; throws StorageError with a hint when unusable. */
  check(): Promise<void>;
  /** Where the object lies on this machine, when the storage is a local folder (so it can be read in place). */
  localFile?(key: string): string;
  /**
   * Multipart uploads under the snapshots prefix that were started and neither completed nor
   * aborted, from Backstop's upload records and, where permitted, ListMultipartUploads
   * (storage with multipart uploads only: S3). `sizes` asks for the bytes of their parts too.
   */
  unfinishedUploads?(options?: { sizes?: boolean }): Promise<UnfinishedUploadsListing>;
  /** Abort one (its parts are freed) and remove its record; an upload already gone is not an error. */
  abortUpload?(upload: UnfinishedUpload): Promise<void>;
}
