/**
 * Storage URLs: `s3://bucket`, `s3://bucket/prefix`, `s3://bucket@http://host:9000`,
 * `s3://bucket/prefix@https://host`, `file:///path`, or a plain folder path. Nothing configured
 * means the local folder `./backstop-data`.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../errors/index.js';

export const DEFAULT_STORAGE_FOLDER = './backstop-data';

export interface LocalLocation {
  kind: 'local';
  /** Absolute folder. */
  root: string;
}

export interface S3Location {
  kind: 's3';
  bucket: string;
  /** Key prefix without leading or trailing slashes; '' for the bucket root. */
  prefix: string;
  /** Custom endpoint (MinIO, s3rver, R2, …); undefined for AWS itself. */
  endpoint: string | undefined;
}

export type StorageLocation = LocalLocation | S3Location;

const S3_URL_HINT = 'write s3://bucket, s3://bucket/prefix, s3://bucket@http://host:9000 or s3://bucket/prefix@https://host';
// S3 bucket naming rules (lower case, digits, dots, hyphens; 3–63 characters).
const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

function parseS3(url: string): S3Location {
  const rest = url.slice('s3://'.length);
  const at = rest.indexOf('@');
  const location = at === -1 ? rest : rest.slice(0, at);
  const endpointText = at === -1 ? undefined : rest.slice(at + 1);
  const slash = location.indexOf('/');
  const bucket = slash === -1 ? location : location.slice(0, slash);
  const prefix = slash === -1 ? '' : location.slice(slash + 1).replace(/^\/+|\/+$/g, '');
  if (!BUCKET_NAME.test(bucket)) {
    throw new ConfigError(`"${bucket}" in storage URL "${url}" is not a valid S3 bucket name`, { hint: S3_URL_HINT });
  }
  if (prefix !== '' && prefix.split('/').some((part) => part === '' || part === '.' || part === '..')) {
    throw new ConfigError(`storage URL "${url}" has an empty, "." or ".." part in its prefix`, { hint: S3_URL_HINT });
  }
  let endpoint: string | undefined;
  if (endpointText !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(endpointText);
    } catch (error) {
      throw new ConfigError(`endpoint "${endpointText}" in storage URL "${url}" is not a URL`, { hint: S3_URL_HINT, cause: error });
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new ConfigError(`endpoint "${endpointText}" in storage URL "${url}" must start with http:// or https://`, { hint: S3_URL_HINT });
    }
    if (parsed.username || parsed.password) {
      throw new ConfigError(`storage URL "${url}" must not carry credentials`, {
        hint: 'credentials come from the standard AWS chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles',
      });
    }
    endpoint = parsed.origin + parsed.pathname.replace(/\/+$/, '');
  }
  return { kind: 's3', bucket, prefix, endpoint };
}

/** Parse a storage URL; `undefined` or '' means the default local folder. */
export function parseStorageUrl(url: string | undefined, cwd = process.cwd()): StorageLocation {
  const text = (url ?? '').trim();
  if (text === '') return { kind: 'local', root: path.resolve(cwd, DEFAULT_STORAGE_FOLDER) };
  // Schemes are case-insensitive (RFC 3986): S3://bucket is s3://bucket.
  if (/^s3:\/\//i.test(text)) return parseS3(text);
  if (/^file:\/\//i.test(text)) {
    let root: string;
    try {
      root = fileURLToPath(text);
    } catch (error) {
      throw new ConfigError(`"${text}" is not a usable file URL`, { hint: 'write file:///absolute/path or a plain folder path', cause: error });
    }
    return { kind: 'local', root };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  if (scheme) {
    throw new ConfigError(`storage URL scheme "${scheme[1]}://" is not supported`, {
      hint: `use s3://bucket[/prefix][@http(s)://endpoint], file:///path or a folder path`,
    });
  }
  refuseMisspeltUrl(text);
  return { kind: 'local', root: path.resolve(cwd, text) };
}

/**
 * A URL with a slash or colon missing (`s3:/bkt`, `s3//bkt`, `file:/srv/x`) is a valid relative
 * path, and taking it as one sends snapshots to a local folder nobody looks at, with exit 0.
 * Such text is refused; a folder really named like a scheme is written `./s3/…`.
 */
function refuseMisspeltUrl(text: string): void {
  const colon = /^([a-z][a-z0-9+.-]+):\/*(.*)$/i.exec(text);
  const slashes = /^(s3|file)\/+(.*)$/i.exec(text);
  const typo = colon ?? slashes;
  if (!typo) return;
  const scheme = typo[1]!.toLowerCase();
  const rest = typo[2]!;
  const meant = scheme === 'file' ? `file:///${rest.replace(/^\/+/, '')}` : `${scheme}://${rest}`;
  throw new ConfigError(`storage URL "${text}" is misspelt (a URL needs "${scheme}://")`, {
    hint: `did you mean ${meant}? A local folder whose name starts like that is written ./${text}`,
  });
}

/** The location written back as a URL, for logs and manifests. */
export function formatStorageLocation(location: StorageLocation): string {
  if (location.kind === 'local') return location.root;
  const base = `s3://${location.bucket}${location.prefix ? `/${location.prefix}` : ''}`;
  return location.endpoint ? `${base}@${location.endpoint}` : base;
}
