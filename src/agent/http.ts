/**
 * The agent's HTTP metadata API (node:http, read-only):
 *   GET /metadata/health              heartbeat age, last snapshot age, leader or standby, listening
 *   GET /metadata/snapshots?table=    manifests newest first (same JSON as `backstop snapshots list --json`)
 *   GET /metadata/requests?status=    rows of backstop.requests
 *   GET /metrics                      Prometheus text
 * Errors are JSON `{ "error": "...", "hint": "..." }` with a matching status code.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { BackstopError, ConfigError, describeError } from '../errors/index.js';
import { silentLogger, type Logger } from '../log/logger.js';

export interface HealthInfo {
  agentId?: string;
  /** Seconds since this agent's last heartbeat reached the database; null before the first. */
  heartbeatAgeSeconds: number | null;
  /** Seconds since the newest snapshot of any table; null when there is none. */
  lastSnapshotAgeSeconds: number | null;
  role: 'leader' | 'standby';
  /** Whether the request listener holds a live LISTEN connection. */
  listening: boolean;
  [key: string]: unknown;
}

export interface HttpServerOptions {
  host: string;
  port: number;
  health: () => Promise<HealthInfo> | HealthInfo;
  listSnapshots: (table?: string) => Promise<unknown[]>;
  listRequests: (status?: string) => Promise<unknown[]>;
  registry: Registry;
  logger?: Logger;
}

export interface HttpServerHandle {
  address: { host: string; port: number };
  close(): Promise<void>;
}

/** The statuses a request can have (`backstop.requests.status`). */
export const REQUEST_STATUSES = ['pending', 'capturing', 'awaiting_approval', 'approved', 'denied', 'expired', 'consumed'] as const;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly hint?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const ROUTES = {
  '/metadata/health': [] as string[],
  '/metadata/snapshots': ['table'],
  '/metadata/requests': ['status'],
  '/metrics': [] as string[],
} satisfies Record<string, string[]>;

type Route = keyof typeof ROUTES;

function isRoute(pathname: string): pathname is Route {
  return Object.hasOwn(ROUTES, pathname);
}

/** The single value of an optional query parameter; unknown or repeated parameters are refused. */
function queryParameter(url: URL, route: Route): string | undefined {
  const allowed = ROUTES[route];
  for (const key of new Set(url.searchParams.keys())) {
    if (!allowed.includes(key)) {
      throw new HttpError(400, `unknown query parameter "${key}" for ${route}`, allowed.length > 0 ? `this route accepts: ${allowed.join(', ')}` : 'this route takes no query parameters');
    }
    if (url.searchParams.getAll(key).length > 1) throw new HttpError(400, `query parameter "${key}" given more than once`, `pass ${key} once`);
  }
  const name = allowed[0];
  if (name === undefined) return undefined;
  const value = url.searchParams.get(name);
  if (value === null) return undefined;
  if (value === '') throw new HttpError(400, `query parameter "${name}" is empty`, `leave ${name} out to list everything`);
  return value;
}

function statusOf(error: BackstopError): number {
  switch (error.code) {
    case 'config':
      return 400;
    case 'not_found':
      return 404;
    default:
      return 500;
  }
}

function sendJson(response: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  response.end(text);
}

async function route(options: HttpServerOptions, request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
  const url = new URL(request.url ?? '/', 'http://agent');
  const pathname = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, '') : url.pathname;
  if (!isRoute(pathname)) {
    throw new HttpError(404, `no route ${pathname}`, `routes: ${Object.keys(ROUTES).join(', ')}`);
  }
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    throw new HttpError(405, `method ${request.method ?? '?'} not allowed on ${pathname}`, 'this API is read-only: use GET', { allow: 'GET, HEAD' });
  }
  const parameter = queryParameter(url, pathname);
  switch (pathname) {
    case '/metadata/health':
      sendJson(response, 200, await options.health());
      return;
    case '/metadata/snapshots':
      sendJson(response, 200, await options.listSnapshots(parameter));
      return;
    case '/metadata/requests': {
      if (parameter !== undefined && !(REQUEST_STATUSES as readonly string[]).includes(parameter)) {
        throw new HttpError(400, `unknown request status "${parameter}"`, `use one of: ${REQUEST_STATUSES.join(', ')}`);
      }
      sendJson(response, 200, await options.listRequests(parameter));
      return;
    }
    case '/metrics': {
      const text = await options.registry.metrics();
      response.writeHead(200, { 'content-type': options.registry.contentType, 'content-length': Buffer.byteLength(text) });
      response.end(text);
      return;
    }
  }
}

export async function startHttpServer(options: HttpServerOptions): Promise<HttpServerHandle> {
  const logger = options.logger ?? silentLogger;
  const server = http.createServer((request, response) => {
    route(options, request, response).catch((error: unknown) => {
      let status = 500;
      let body: { error: string; hint?: string } = { error: describeError(error) };
      let headers: Record<string, string> = {};
      if (error instanceof HttpError) {
        status = error.status;
        body = { error: error.message, ...(error.hint ? { hint: error.hint } : {}) };
        headers = error.headers;
      } else if (error instanceof BackstopError) {
        status = statusOf(error);
        body = { error: error.message, ...(error.hint ? { hint: error.hint } : {}) };
      }
      if (status >= 500) logger.error('HTTP request failed', { method: request.method, url: request.url, error: body.error });
      if (response.headersSent) {
        response.destroy();
        return;
      }
      sendJson(response, status, body, headers);
    });
  });
  // Idle keep-alive sockets must not hold close() open.
  server.keepAliveTimeout = 5_000;

  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      reject(
        new ConfigError(`cannot listen on ${options.host}:${options.port}: ${error.message}`, {
          cause: error,
          hint: error.code === 'EADDRINUSE' ? 'another process uses that port: pass --http HOST:PORT with a free port (0 picks one), or --http off' : 'check --http HOST:PORT',
        }),
      );
    };
    server.once('error', onError);
    server.listen(options.port, options.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  return {
    address: { host: address.address, port: address.port },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeIdleConnections();
      }),
  };
}
