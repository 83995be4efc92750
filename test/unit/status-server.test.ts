import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fetchStatus, startStatusServer } from '../../src/daemon/status-server.ts';
import { cli } from '../support/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'status-server-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function get(socketPath: string, path: string): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET' }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => {
        text += c.toString('utf8');
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('status server', () => {
  it('answers /status with the snapshot and /healthz without calling it; 0600 socket', async () => {
    const socket = join(dir, 'relay.sock');
    let snapshots = 0;
    const srv = await startStatusServer(
      socket,
      async () => ({ n: ++snapshots }),
      () => ({ state: 'serving' }),
    );
    try {
      expect(statSync(socket).mode & 0o777).toBe(0o600);
      expect(await get(socket, '/healthz')).toEqual({ status: 200, body: { state: 'serving' } });
      expect(snapshots).toBe(0);
      expect(await fetchStatus(socket)).toEqual({ n: 1 });
      expect((await get(socket, '/nope')).status).toBe(404);
    } finally {
      srv.close();
    }
  });

  it('a failing snapshot is a 500 with its message, and the server keeps answering', async () => {
    const socket = join(dir, 'failing.sock');
    const srv = await startStatusServer(socket, () => {
      throw new Error('kernel unreadable');
    });
    try {
      expect(await get(socket, '/status')).toEqual({ status: 500, body: { error: 'status_failed', message: 'kernel unreadable' } });
      expect((await get(socket, '/healthz')).status).toBe(200);
      // The readers (status, sim status) get the relay's message, not the error body as a status.
      await expect(fetchStatus(socket)).rejects.toThrow(/500 kernel unreadable/);
    } finally {
      srv.close();
    }
  });

  it('no relay on the socket: a clear error', async () => {
    await expect(fetchStatus(join(dir, 'absent.sock'))).rejects.toThrow(/no relay is running/);
  });

  it('asks for a whole-scope kernel round on POST /reconcile (`relay-core reconcile`)', async () => {
    const stateDir = mkdtempSync(join(dir, 'relay-'));
    let asked = 0;
    const srv = await startStatusServer(
      join(stateDir, 'relay.sock'),
      () => ({}),
      () => ({}),
      { reconcile: () => ({ relayId: 'relay-a', asked: ++asked > 0 }) },
    );
    try {
      const plain = await cli('reconcile', '--state-dir', stateDir);
      expect(plain.code).toBe(0);
      expect(plain.out).toBe('relay relay-a reads and plans everything it owns in its next kernel round (its KernelReconciled events show what it mended)\n');
      expect(JSON.parse((await cli('reconcile', '--state-dir', stateDir, '--json')).out)).toEqual({ relayId: 'relay-a', asked: true });
      expect(asked).toBe(2);
    } finally {
      srv.close();
    }
    // No relay there: a clear error, exit 1.
    const none = await cli('reconcile', '--state-dir', mkdtempSync(join(dir, 'none-')));
    expect(none.code).toBe(1);
    expect(none.err).toMatch(/no relay is running/);
  });

  it('runs an operator action on POST (rotate-key), and GET or an unknown action does not', async () => {
    const stateDir = mkdtempSync(join(dir, 'relay-'));
    const socket = join(stateDir, 'relay.sock');
    let rotations = 0;
    let clients = 0;
    const srv = await startStatusServer(
      socket,
      () => ({}),
      () => ({}),
      { 'rotate-key': () => ({ relayId: 'relay-a', publicKey: `key-${++rotations}`, registering: true, clients }) },
    );
    try {
      expect((await get(socket, '/rotate-key')).status).toBe(404);
      expect(rotations).toBe(0);
      const plain = await cli('rotate-key', '--state-dir', stateDir);
      expect(plain).toEqual({ code: 0, out: 'relay relay-a rotates its WireGuard key to key-1: registering it now\n', err: '' });
      // Clients naming its key (entering there, or private ones leaving there): the operator is told to re-issue their configurations.
      clients = 2;
      const warned = await cli('rotate-key', '--state-dir', stateDir);
      expect(warned.out).toContain("warning: 2 client session(s) name relay-a's key as their peer");
      expect(JSON.parse((await cli('rotate-key', '--state-dir', stateDir, '--json')).out)).toEqual({
        relayId: 'relay-a',
        publicKey: 'key-3',
        registering: true,
        clients: 2,
      });
      // An action that fails is a 500 with its message, which the CLI reports (exit 1); the server goes on.
      const failingDir = mkdtempSync(join(dir, 'failing-'));
      const failing = await startStatusServer(
        join(failingDir, 'relay.sock'),
        () => ({}),
        () => ({}),
        {
          'rotate-key': () => {
            throw new Error('no entropy');
          },
        },
      );
      try {
        const r = await cli('rotate-key', '--state-dir', failingDir);
        expect([r.code, r.out]).toEqual([1, '']);
        expect(r.err).toContain('500 no entropy');
        expect((await get(join(failingDir, 'relay.sock'), '/healthz')).status).toBe(200);
      } finally {
        failing.close();
      }
      const none = await cli('rotate-key', '--state-dir', join(dir, 'nowhere'));
      expect(none.code).toBe(1);
      expect(none.err).toContain('no relay is running');
    } finally {
      srv.close();
    }
  });
});
