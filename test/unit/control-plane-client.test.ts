import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlPlaneClient, ControlPlaneError, retryAfterMs } from '../../src/daemon/control-plane-client.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { freePort } from '../../src/lib/ports.ts';

const log = rootLogger({ test: 'cp-client' }, 'silent');
const fast = { attempts: 4, baseMs: 5, maxMs: 20 };

/** A stand-in for the gateway: answers each request from a script (unit test of the client's error handling). */
async function fakeGateway(
  script: ((path: string) => { status: number; body: unknown; headers?: Record<string, string> })[],
): Promise<{ url: string; hits: string[]; times: number[]; server: Server }> {
  const hits: string[] = [];
  const times: number[] = [];
  const server = createServer((req, res) => {
    hits.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''}`);
    times.push(Date.now());
    const step = script[Math.min(hits.length - 1, script.length - 1)]!(req.url ?? '');
    res.writeHead(step.status, { 'content-type': 'application/json', ...step.headers });
    res.end(JSON.stringify(step.body));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits, times, server };
}

let servers: Server[] = [];
afterEach(() => {
  for (const s of servers) s.close();
  servers = [];
});

describe('control-plane client', () => {
  it('calls /functions/v1/<name> with the bearer token', async () => {
    const g = await fakeGateway([() => ({ status: 200, body: { revision: 3, revisionTime: 't', status: 'active' } })]);
    servers.push(g.server);
    const c = new ControlPlaneClient({ url: g.url, key: 'tok', logger: log, retry: fast });
    await expect(c.heartbeat('relay-1')).resolves.toEqual({ revision: 3, revisionTime: 't', status: 'active' });
    expect(g.hits[0]).toBe('POST /functions/v1/heartbeat Bearer tok');
  });

  it('retries 5xx answers with backoff and succeeds', async () => {
    const g = await fakeGateway([
      () => ({ status: 503, body: { error: 'down' } }),
      () => ({ status: 502, body: {} }),
      () => ({ status: 200, body: { revision: 1 } }),
    ]);
    servers.push(g.server);
    const c = new ControlPlaneClient({ url: g.url, key: 'k', logger: log, retry: fast });
    await expect(c.deregister('relay-1')).resolves.toEqual({ revision: 1 });
    expect(g.hits).toHaveLength(3);
  });

  it('builds a registration afresh for each attempt when given a function (a signed proof is never reused)', async () => {
    const bodies: string[] = [];
    const answers = [503, 502, 400];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        bodies.push(body);
        res.writeHead(answers[bodies.length - 1] ?? 400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'x', message: 'x' }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    servers.push(server);
    const c = new ControlPlaneClient({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, key: 'k', logger: log, retry: fast });
    let built = 0;
    const build = async () => ({ relayId: 'relay-1', name: 'r', region: 'r', publicKey: 'k', endpoint: 'e', proof: { at: ++built, signature: 's' } });
    await expect(c.register(build)).rejects.toMatchObject({ kind: 'refused', status: 400 });
    expect(bodies.map((b) => JSON.parse(b).proof.at)).toEqual([1, 2, 3]);
  });

  it('a 429 waits at least its Retry-After before the next attempt', async () => {
    const g = await fakeGateway([
      () => ({ status: 429, body: { error: 'rate_limited', retryAfterSeconds: 1 }, headers: { 'retry-after': '1' } }),
      () => ({ status: 200, body: { revision: 1 } }),
    ]);
    servers.push(g.server);
    const c = new ControlPlaneClient({ url: g.url, key: 'k', logger: log, retry: fast });
    await expect(c.deregister('relay-1')).resolves.toEqual({ revision: 1 });
    expect(g.hits).toHaveLength(2);
    // The backoff alone would wait at most 20 ms.
    expect(g.times[1]! - g.times[0]!).toBeGreaterThanOrEqual(950);
    expect(retryAfterMs('3')).toBe(3_000);
    expect(retryAfterMs('86400')).toBe(60_000);
    expect(retryAfterMs('soon')).toBeNull();
    expect(retryAfterMs(null)).toBeNull();
  });

  it('does not retry a refusal and reports status, code and field', async () => {
    const g = await fakeGateway([
      () => ({ status: 409, body: { error: 'key_mismatch', field: 'publicKey', message: 'relay-1 is registered with another key' } }),
    ]);
    servers.push(g.server);
    const c = new ControlPlaneClient({ url: g.url, key: 'k', logger: log, retry: fast });
    const err = await c.register({ relayId: 'relay-1', name: 'a', region: 'b', publicKey: 'x', endpoint: 'y' }).catch((e) => e);
    expect(err).toBeInstanceOf(ControlPlaneError);
    expect(err).toMatchObject({ kind: 'refused', status: 409, code: 'key_mismatch', field: 'publicKey' });
    expect(err.message).toMatch(/409 key_mismatch \(publicKey\): relay-1 is registered with another key/);
    expect(g.hits).toHaveLength(1);
  });

  it('says the control plane is unreachable after the attempts run out', async () => {
    const port = await freePort();
    const c = new ControlPlaneClient({ url: `http://127.0.0.1:${port}`, key: 'k', logger: log, retry: fast });
    const err = await c.heartbeat('relay-1').catch((e) => e);
    expect(err).toMatchObject({ kind: 'unreachable' });
    expect(err.message).toMatch(/unreachable after 2 attempts/);
  });

  it('rejects an answer that does not match the contract', async () => {
    const g = await fakeGateway([() => ({ status: 200, body: { revision: 'three' } })]);
    servers.push(g.server);
    const c = new ControlPlaneClient({ url: g.url, key: 'k', logger: log, retry: fast });
    await expect(c.deregister('relay-1')).rejects.toMatchObject({ kind: 'invalid-response' });
  });
});
