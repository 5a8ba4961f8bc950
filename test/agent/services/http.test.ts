import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpServer, type HttpServerHandle } from '../../../src/agent/http.js';
import { createMetrics } from '../../../src/agent/metrics.js';
import { NotFoundError } from '../../../src/errors/index.js';

describe('agent HTTP metadata API', () => {
  let server: HttpServerHandle;
  let base: string;
  const calls: Array<[string, string | undefined]> = [];
  const metrics = createMetrics({ processMetrics: false });

  beforeAll(async () => {
    metrics.decisions.inc({ outcome: 'denied' }, 2);
    server = await startHttpServer({
      host: '127.0.0.1',
      port: 0,
      health: () => ({ agentId: 'a1', heartbeatAgeSeconds: 1.5, lastSnapshotAgeSeconds: null, role: 'standby', listening: false }),
      listSnapshots: async (table) => {
        calls.push(['snapshots', table]);
        if (table === 'public.missing') throw new NotFoundError('no table public.missing', { hint: 'check the name' });
        if (table === 'public.broken') throw new Error('catalog read failed');
        return [{ snapshot_id: 'b', table: 'users' }, { snapshot_id: 'a', table: 'users' }];
      },
      listRequests: async (status) => {
        calls.push(['requests', status]);
        return [{ id: 1, status: status ?? 'pending' }];
      },
      registry: metrics.registry,
    });
    base = `http://127.0.0.1:${server.address.port}`;
  });
  afterAll(async () => {
    await server?.close();
  });

  it('picks a free port when asked for port 0', () => {
    expect(server.address.port).toBeGreaterThan(0);
    expect(server.address.host).toBe('127.0.0.1');
  });

  it('serves health', async () => {
    const response = await fetch(`${base}/metadata/health`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/application\/json/);
    expect(await response.json()).toEqual({ agentId: 'a1', heartbeatAgeSeconds: 1.5, lastSnapshotAgeSeconds: null, role: 'standby', listening: false });
  });

  it('lists snapshots, filtered by table', async () => {
    const all = await fetch(`${base}/metadata/snapshots`);
    expect(await all.json()).toEqual([{ snapshot_id: 'b', table: 'users' }, { snapshot_id: 'a', table: 'users' }]);
    await fetch(`${base}/metadata/snapshots?table=${encodeURIComponent('"My Schema"."Odd table"')}`).then((r) => r.json());
    expect(calls).toContainEqual(['snapshots', undefined]);
    expect(calls).toContainEqual(['snapshots', '"My Schema"."Odd table"']);
  });

  it('lists requests by status and refuses an unknown status with 400', async () => {
    const approved = await fetch(`${base}/metadata/requests?status=approved`);
    expect(await approved.json()).toEqual([{ id: 1, status: 'approved' }]);
    const bad = await fetch(`${base}/metadata/requests?status=bogus`);
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as { error: string; hint: string };
    expect(body.error).toMatch(/unknown request status "bogus"/);
    expect(body.hint).toMatch(/awaiting_approval/);
  });

  it('answers unknown routes with 404, unknown parameters with 400 and writes with 405, all as JSON', async () => {
    const missing = await fetch(`${base}/nothing/here`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: 'no route /nothing/here' });

    const parameter = await fetch(`${base}/metadata/health?verbose=1`);
    expect(parameter.status).toBe(400);
    expect(await parameter.json()).toMatchObject({ error: expect.stringMatching(/unknown query parameter "verbose"/) });

    const post = await fetch(`${base}/metadata/snapshots`, { method: 'POST', body: '{}' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    expect(await post.json()).toMatchObject({ error: expect.stringMatching(/POST not allowed/), hint: expect.any(String) });
  });

  it('maps typed errors to their status and anything else to 500 with the message', async () => {
    const notFound = await fetch(`${base}/metadata/snapshots?table=public.missing`);
    expect(notFound.status).toBe(404);
    expect(await notFound.json()).toEqual({ error: 'no table public.missing', hint: 'check the name' });
    const broken = await fetch(`${base}/metadata/snapshots?table=public.broken`);
    expect(broken.status).toBe(500);
    expect(await broken.json()).toEqual({ error: 'catalog read failed' });
  });

  it('serves Prometheus text on /metrics', async () => {
    const response = await fetch(`${base}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await response.text();
    expect(text).toContain('# TYPE backstop_request_decisions_total counter');
    expect(text).toContain('backstop_request_decisions_total{outcome="denied"} 2');
    expect(text).toContain('# TYPE backstop_snapshot_duration_seconds histogram');
  });

  it('reports a busy port as a configuration error', async () => {
    await expect(
      startHttpServer({ host: '127.0.0.1', port: server.address.port, health: () => ({ heartbeatAgeSeconds: null, lastSnapshotAgeSeconds: null, role: 'leader', listening: true }), listSnapshots: async () => [], listRequests: async () => [], registry: metrics.registry }),
    ).rejects.toMatchObject({ code: 'config', hint: expect.stringMatching(/free port/) });
  });
});
