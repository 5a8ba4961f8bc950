// Minimal types for s3rver (it ships none); only what test/support/s3.ts uses.
declare module 's3rver' {
  import type { AddressInfo } from 'node:net';
  interface S3rverOptions {
    address?: string;
    port?: number;
    silent?: boolean;
    directory?: string;
    resetOnClose?: boolean;
    allowMismatchedSignatures?: boolean;
    vhostBuckets?: boolean;
    configureBuckets?: Array<{ name: string; configs?: unknown[] }>;
  }
  export default class S3rver {
    constructor(options?: S3rverOptions);
    run(): Promise<AddressInfo>;
    /** Koa's middleware list (s3rver is a Koa application); composed when run() starts listening. */
    middleware: Array<(ctx: never, next: () => Promise<unknown>) => Promise<unknown>>;
    close(): Promise<void>;
  }
}
