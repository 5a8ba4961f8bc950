/**
 * A real S3 HTTP server for tests: MinIO through testcontainers when a Docker engine answers,
 * else s3rver in-process on 127.0.0.1 with a temp folder. Either way the test talks to it over
 * HTTP with the AWS SDK, exactly as Backstop talks to S3.
 */
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import S3rver from 's3rver';
import { multipartRoutes } from './s3rver-multipart.js';
import { dockerAvailable } from './servers.js';

export interface TestS3 {
  bucket: string;
  endpoint: string;
  label: string;
  /** s3rver's folder (objects and unfinished uploads as files); undefined for MinIO. */
  directory?: string;
  /** `s3://bucket[/prefix]@endpoint`. */
  url(prefix?: string): string;
  /** Create another bucket on the same server. */
  createBucket(name: string): Promise<void>;
  stop(): Promise<void>;
}

// s3rver's fixed credentials; MinIO is started with the same pair.
const ACCESS_KEY = 'S3RVER';
const SECRET_KEY = 'S3RVER';

function useCredentials(): void {
  process.env.AWS_ACCESS_KEY_ID = ACCESS_KEY;
  process.env.AWS_SECRET_ACCESS_KEY = SECRET_KEY;
  process.env.AWS_REGION ??= 'us-east-1';
}

function bucketCreator(endpoint: string) {
  return async (name: string) => {
    const client = new S3Client({
      endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    try {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    } finally {
      client.destroy();
    }
  };
}

function urlFor(bucket: string, endpoint: string) {
  return (prefix?: string) => `s3://${bucket}${prefix ? `/${prefix}` : ''}@${endpoint}`;
}

async function startMinio(bucket: string): Promise<TestS3> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const container = await new GenericContainer('minio/minio:latest')
    .withCommand(['server', '/data'])
    .withEnvironment({ MINIO_ROOT_USER: ACCESS_KEY, MINIO_ROOT_PASSWORD: `${SECRET_KEY}-minio` })
    .withExposedPorts(9000)
    .withWaitStrategy(Wait.forHttp('/minio/health/ready', 9000))
    .start();
  const endpoint = `http://${container.getHost()}:${container.getMappedPort(9000)}`;
  process.env.AWS_ACCESS_KEY_ID = ACCESS_KEY;
  process.env.AWS_SECRET_ACCESS_KEY = `${SECRET_KEY}-minio`;
  process.env.AWS_REGION ??= 'us-east-1';
  const client = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: `${SECRET_KEY}-minio` },
  });
  const createBucket = async (name: string) => {
    await client.send(new CreateBucketCommand({ Bucket: name }));
  };
  await createBucket(bucket);
  return {
    bucket,
    endpoint,
    label: 'MinIO (testcontainers)',
    url: urlFor(bucket, endpoint),
    createBucket,
    async stop() {
      client.destroy();
      await container.stop();
    },
  };
}

async function startS3rver(bucket: string, multipart: boolean): Promise<TestS3> {
  const directory = await mkdtemp(path.join(os.tmpdir(), 'backstop-s3rver-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: [{ name: bucket }] });
  // The multipart requests s3rver lacks (see s3rver-multipart.ts), ahead of its router.
  if (multipart) server.middleware.unshift(multipartRoutes(directory) as never);
  const address = await server.run();
  const endpoint = `http://127.0.0.1:${address.port}`;
  useCredentials();
  return {
    bucket,
    endpoint,
    label: 's3rver (in-process)',
    directory,
    url: urlFor(bucket, endpoint),
    createBucket: bucketCreator(endpoint),
    async stop() {
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/**
 * Start an S3 server with one bucket (default `backstop-test`). `multipart: false` gives s3rver
 * without the multipart requests it lacks (ListMultipartUploads, ListParts, AbortMultipartUpload).
 */
export async function startTestS3(bucket = 'backstop-test', options: { multipart?: boolean; forceS3rver?: boolean } = {}): Promise<TestS3> {
  if (!options.forceS3rver && process.env.BACKSTOP_TEST_S3 !== 's3rver' && (await dockerAvailable())) return startMinio(bucket);
  return startS3rver(bucket, options.multipart ?? true);
}
