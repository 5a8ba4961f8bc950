/**
 * s3rver 3.7 creates multipart uploads, takes their parts and completes them, but answers
 * ListMultipartUploads with NotImplemented and ListParts / AbortMultipartUpload with
 * MethodNotAllowed. These three requests are added here, over s3rver's own store of unfinished
 * uploads (`<directory>/<bucket>/._S3rver_uploads/<upload id>/`: a `key` file and one file per
 * part), answering with the XML S3 documents, so that Backstop's cleanup of what killed captures
 * leave can be tested against uploads a real S3 server holds. Nothing else of s3rver changes;
 * `startTestS3({ multipart: false })` leaves the three out, as a service without them would.
 */
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';

interface KoaContext {
  method: string;
  path: string;
  query: Record<string, string | string[] | undefined>;
  status: number;
  body: unknown;
  type: string;
}
type Middleware = (ctx: KoaContext, next: () => Promise<unknown>) => Promise<unknown>;

const UPLOADS_DIR = '._S3rver_uploads';

function xmlEscape(text: string): string {
  return text.replace(/[<>&'"]/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

function first(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function xml(ctx: KoaContext, status: number, body: string): void {
  ctx.status = status;
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n${body}`;
}

function noSuchUpload(ctx: KoaContext, uploadId: string): void {
  xml(ctx, 404, `<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message><UploadId>${xmlEscape(uploadId)}</UploadId></Error>`);
}

async function uploadsOf(directory: string, bucket: string): Promise<Array<{ id: string; key: string; initiated: Date; dir: string }>> {
  const root = path.join(directory, bucket, UPLOADS_DIR);
  const ids = await readdir(root).catch(() => [] as string[]);
  const uploads = [];
  for (const id of ids) {
    const dir = path.join(root, id);
    const key = await readFile(path.join(dir, 'key'), 'utf8').catch(() => undefined);
    if (key === undefined) continue;
    uploads.push({ id, key, initiated: (await stat(dir)).mtime, dir });
  }
  return uploads.sort((a, b) => a.key.localeCompare(b.key) || a.id.localeCompare(b.id));
}

export function multipartRoutes(directory: string): Middleware {
  return async (ctx, next) => {
    const [bucket, ...keyParts] = ctx.path.split('/').slice(1).map((part) => decodeURIComponent(part));
    const key = keyParts.join('/');
    const uploadId = first(ctx.query.uploadId);
    if (!bucket) return next();
    if (ctx.method === 'GET' && key === '' && 'uploads' in ctx.query) {
      const prefix = first(ctx.query.prefix) ?? '';
      const uploads = (await uploadsOf(directory, bucket)).filter((upload) => upload.key.startsWith(prefix));
      const items = uploads
        .map((upload) => `<Upload><Key>${xmlEscape(upload.key)}</Key><UploadId>${upload.id}</UploadId><Initiated>${upload.initiated.toISOString()}</Initiated><StorageClass>STANDARD</StorageClass></Upload>`)
        .join('');
      xml(ctx, 200, `<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${xmlEscape(bucket)}</Bucket><Prefix>${xmlEscape(prefix)}</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>${items}</ListMultipartUploadsResult>`);
      return undefined;
    }
    if ((ctx.method === 'GET' || ctx.method === 'DELETE') && key !== '' && uploadId !== undefined) {
      const upload = (await uploadsOf(directory, bucket)).find((candidate) => candidate.id === uploadId && candidate.key === key);
      if (!upload) {
        noSuchUpload(ctx, uploadId);
        return undefined;
      }
      if (ctx.method === 'DELETE') {
        await rm(upload.dir, { recursive: true, force: true });
        ctx.status = 204;
        ctx.body = null;
        return undefined;
      }
      const parts = [];
      for (const name of await readdir(upload.dir)) {
        if (!/^\d+$/.test(name)) continue;
        const info = await stat(path.join(upload.dir, name));
        const md5 = await readFile(path.join(upload.dir, `${name}.md5`), 'utf8').catch(() => '');
        parts.push({ number: Number(name), size: info.size, md5, modified: info.mtime });
      }
      parts.sort((a, b) => a.number - b.number);
      const items = parts
        .map((part) => `<Part><PartNumber>${part.number}</PartNumber><LastModified>${part.modified.toISOString()}</LastModified><ETag>"${part.md5}"</ETag><Size>${part.size}</Size></Part>`)
        .join('');
      xml(ctx, 200, `<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${xmlEscape(bucket)}</Bucket><Key>${xmlEscape(key)}</Key><UploadId>${uploadId}</UploadId><IsTruncated>false</IsTruncated>${items}</ListPartsResult>`);
      return undefined;
    }
    return next();
  };
}

/** Where s3rver keeps a bucket's unfinished uploads, for tests that look at them directly. */
export function uploadsFolder(directory: string, bucket: string): string {
  return path.join(directory, bucket, UPLOADS_DIR);
}
