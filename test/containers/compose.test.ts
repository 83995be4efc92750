/**
 * docker-compose.yml, as an operator runs it: `docker-compose up -d` with the locally built images
 * brings up a 3-node NATS cluster, the control plane, three relays and a demo client; the mesh converges
 * and the client's traffic leaves at relay-2; a NATS node is stopped and started again. Removed with
 * `down -v` afterwards, whatever happened.
 */
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../../src/devnet/relay-process.ts';
import type { RelayStatus } from '../../src/daemon/relay-status.ts';
import type { StreamStatus } from '../../src/bus/stream-status.ts';
import { STREAMS } from '../../src/contract/subjects.ts';
import { callFunctionWithRelayToken, jwtClaims, RELAY_TOKEN_FILE, requireImages, RUN, SECRET_FILE_SEARCH } from '../support/containers.ts';

const ROOT = join(import.meta.dirname, '../..');
const PROJECT = `${RUN}-compose`;
const IDS = ['relay-1', 'relay-2', 'relay-3'];
const NATS_URLS = 'nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222';
const READER_CREDS = '/var/lib/relay-core-cp/bus/reader.creds';

/** Debian's docker-compose, or the Compose plugin of a newer engine. */
async function composeCommand(): Promise<string[]> {
  if ((await execa('docker-compose', ['version'], { reject: false })).exitCode === 0) return ['docker-compose'];
  if ((await execa('docker', ['compose', 'version'], { reject: false })).exitCode === 0) return ['docker', 'compose'];
  throw new Error('neither docker-compose nor docker compose is installed: run scripts/docker-engine.sh start');
}

describe('docker-compose.yml', () => {
  let compose: string[];
  const run = (args: string[], timeout = 120_000) =>
    execa(compose[0]!, [...compose.slice(1), '-p', PROJECT, '-f', join(ROOT, 'docker-compose.yml'), ...args], { cwd: ROOT, reject: false, timeout });
  const status = async (id: string) => {
    const r = await run(['exec', '-T', id, 'relay-core', 'status', '--json'], 20_000);
    if (r.exitCode !== 0) throw new Error(`${id}: status exited ${r.exitCode}: ${r.stderr}`);
    return JSON.parse(r.stdout) as RelayStatus;
  };
  /** argv run inside a service's container: its stdout. */
  const inside = (id: string) => async (argv: string[]) => {
    const r = await run(['exec', '-T', id, ...argv], 30_000);
    if (r.exitCode !== 0) throw new Error(`${id}: ${argv.join(' ')} exited ${r.exitCode}: ${r.stderr}`);
    return r.stdout;
  };

  beforeAll(async () => {
    await requireImages();
    compose = await composeCommand();
  }, 60_000);

  afterAll(async () => {
    if (!compose) return;
    const down = await run(['down', '-v', '--remove-orphans']);
    expect(down.exitCode, down.stderr).toBe(0);
    const left = await execa('docker', ['ps', '-aq', '--filter', `label=com.docker.compose.project=${PROJECT}`]);
    expect(left.stdout.trim(), 'containers left behind').toBe('');
  }, 180_000);

  it('up: the mesh converges and the demo client leaves at relay-2', async () => {
    const up = await run(['up', '-d'], 240_000);
    expect(up.exitCode, up.stderr).toBe(0);
    await eventually(
      'every relay with 2 links up',
      async () => {
        for (const id of IDS) {
          const s = await status(id);
          if (s.links.length !== 2 || !s.links.every((l) => l.state === 'up')) return false;
        }
        return true;
      },
      120_000,
      1000,
    ).catch(async (e: Error) => {
      // What the relays said, so a failure here can be explained afterwards (the project is removed).
      const logs = await run(['logs', '--no-color', '--tail', '60', ...IDS]);
      throw new Error(`${e.message}\n--- relay logs (last 60 lines each) ---\n${logs.stdout.slice(-12_000)}`);
    });
    // Each relay runs with a scoped relay token for its own id, and nothing holding the service-role key.
    for (const id of IDS) {
      const claims = jwtClaims(await inside(id)(['cat', RELAY_TOKEN_FILE]));
      expect([claims.role, claims.relay_id], id).toEqual(['relay', id]);
      expect((await inside(id)(['stat', '-c', '%a', RELAY_TOKEN_FILE])).trim(), `${id}: token file mode`).toBe('600');
      expect((await inside(id)(SECRET_FILE_SEARCH)).trim(), `${id}: secret files`).toBe('');
    }
    const cpId = (await run(['ps', '-q', 'control-plane'])).stdout.trim();
    const cpAddress = (await execa('docker', ['inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}', cpId])).stdout
      .trim()
      .split(' ')[0]!;
    expect(await callFunctionWithRelayToken(inside('relay-1'), 'heartbeat', { relayId: 'relay-2' }, cpAddress), "relay-1's token for relay-2").toBe(403);
    const s1 = await status('relay-1');
    expect(s1.relays.map((r) => r.id).sort()).toEqual(IDS);
    const exit = s1.relays.find((r) => r.id === 'relay-2')!.endpoint.split(':')[0]!;
    const entry = s1.relays.find((r) => r.id === 'relay-1')!.endpoint.split(':')[0]!;
    const seen = await eventually(
      'the demo client reporting the address the web server saw',
      async () => /web sees me as: (\S+)/.exec((await run(['logs', '--no-color', 'client'])).stdout)?.[1],
      90_000,
      1000,
    );
    expect(seen).toBe(exit);
    expect(seen).not.toBe(entry);
    expect(s1.clients.map((c) => c.exitId)).toEqual(['relay-2']);
  }, 400_000);

  it('runs a 3-node NATS cluster: both streams keep 3 copies; a node stopped is named by bus status, the relays carry on, and it catches up when started', async () => {
    /** `relay-core bus status --json` in the control plane's container, with the operator's reader credentials. */
    const busStatus = async () => {
      const r = await run(
        ['exec', '-T', 'control-plane', 'relay-core', 'bus', 'status', '--json', '--nats-url', NATS_URLS, '--nats-creds', READER_CREDS],
        30_000,
      );
      return { code: r.exitCode, out: r.exitCode === 0 || r.exitCode === 1 ? (JSON.parse(r.stdout) as { streams: StreamStatus[] }) : null };
    };
    const healthy = () =>
      eventually(
        'both streams at 3 copies, every copy current',
        async () => {
          const r = await busStatus();
          return r.code === 0 && r.out!.streams.length === 2 && r.out!.streams.every((x) => x.replicas === 3 && x.peers.length === 2) ? r.out! : null;
        },
        90_000,
        1000,
      );
    const leader = (await healthy()).streams.find((x) => x.stream === STREAMS.topology)!.leader!;
    expect(leader).toMatch(/^nats-[123]$/);
    const stopped = await run(['stop', leader], 60_000);
    expect(stopped.exitCode, stopped.stderr).toBe(0);
    try {
      await eventually(
        `bus status to name ${leader} unreachable`,
        async () => {
          const r = await busStatus();
          return r.code === 1 && r.out?.streams.some((x) => x.problems.some((p) => p.startsWith(`${leader} unreachable`))) ? true : null;
        },
        60_000,
        1000,
      );
      // The relays are on the other nodes, serving.
      await eventually(
        'every relay serving, connected to NATS',
        async () => {
          for (const id of IDS) {
            const s = await status(id);
            if (s.state !== 'serving' || !s.bus.connected) return null;
          }
          return true;
        },
        60_000,
        1000,
      );
    } finally {
      const started = await run(['start', leader], 60_000);
      expect(started.exitCode, started.stderr).toBe(0);
    }
    await healthy();
  }, 300_000);
});
