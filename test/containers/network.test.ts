/**
 * A relay network in containers (testcontainers): NATS, the control plane and 3 relays on a Docker
 * network this test creates, a stock WireGuard client and an HTTP server standing for the internet.
 * Needs a Docker engine and the images: scripts/test-containers.sh provides both.
 */
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedNetwork } from 'testcontainers';
import { eventually } from '../../src/devnet/relay-process.ts';
import {
  ControlPlaneContainer,
  NatsContainer,
  RelayContainer,
  removeLabelled,
  requireImages,
  RUN,
  SECRET_FILE_SEARCH,
  testBusAuthority,
  testNetwork,
  WhoamiContainer,
  WireGuardClientContainer,
  type StartedControlPlaneContainer,
  type StartedNatsContainer,
  type StartedRelayContainer,
  type StartedWhoamiContainer,
} from '../support/containers.ts';

const IDS = ['relay-1', 'relay-2', 'relay-3'];
// Short link timing so a silent relay is seen down within the test (keepalives every 2 s).
const LINK_FLAGS = ['--keepalive', '2', '--link-stale-after', '8000', '--link-down-after', '15000'];

describe('a relay network in containers', () => {
  let net: StartedNetwork;
  let nats: StartedNatsContainer;
  let cp: StartedControlPlaneContainer;
  let web: StartedWhoamiContainer;
  const relays = new Map<string, StartedRelayContainer>();
  const relay = (id: string) => relays.get(id)!;
  const linksOf = async (id: string) => Object.fromEntries((await relay(id).status()).links.map((l) => [l.peerId, l.state]));
  /** Wait until every relay has a link to each other one, all up. */
  const fullMesh = (what: string, timeoutMs: number) =>
    eventually(
      what,
      async () => {
        for (const id of IDS) {
          const links = await linksOf(id);
          if (Object.keys(links).length !== IDS.length - 1 || !Object.values(links).every((st) => st === 'up')) return false;
        }
        return true;
      },
      timeoutMs,
      1000,
    );

  beforeAll(async () => {
    await requireImages();
    net = await testNetwork();
    // NATS decentralized auth, as a control plane sets it up on first start.
    const auth = await testBusAuthority();
    nats = await new NatsContainer().withNetwork(net).withAuth(auth).start();
    cp = await new ControlPlaneContainer().withNetwork(net).withNats(nats).withAuth(auth).start();
    web = await new WhoamiContainer().withNetwork(net).start();
    const started = await Promise.all(
      IDS.map((id) =>
        new RelayContainer(id)
          .withNetwork(net)
          .withControlPlane(cp)
          .withRunFlags(...LINK_FLAGS)
          .start(),
      ),
    );
    for (const r of started) relays.set(r.relayId, r);
  }, 300_000);

  afterAll(async () => {
    const left = await removeLabelled(RUN);
    // Nothing of this run may stay behind, whatever happened above.
    const ps = await execa('docker', ['ps', '-aq', '--filter', `label=relay-core.test=${RUN}`]);
    const nets = await execa('docker', ['network', 'ls', '-q', '--filter', `label=relay-core.test=${RUN}`]);
    expect(ps.stdout.trim(), `containers left: ${ps.stdout}`).toBe('');
    expect(nets.stdout.trim(), `networks left: ${nets.stdout}`).toBe('');
    console.log(`removed ${left.containers} containers and ${left.networks} networks of run ${RUN}`);
  }, 120_000);

  it('3 relays form a full mesh: every link up with a handshake, every mesh address answers through its tunnel', async () => {
    await fullMesh('every link up', 90_000);
    for (const id of IDS) {
      const s = await relay(id).status();
      expect(s.relays.map((r) => r.id).sort()).toEqual(IDS);
      const peers = await relay(id).wgPeers();
      // One device per other relay, one peer each, each with a handshake.
      expect(peers).toHaveLength(2);
      for (const p of peers) expect(Number(p[5]), `${id}: ${p.join(' ')}`).toBeGreaterThan(0);
      for (const other of s.relays.filter((r) => r.id !== id)) {
        expect(await relay(id).ping(other.meshAddress), `${id} -> ${other.id} ${other.meshAddress}`).toBe(true);
      }
    }
  }, 180_000);

  it('each relay holds only its own scoped relay token: no service-role key, and its token is refused for another relay (403)', async () => {
    for (const id of IDS) {
      const claims = await relay(id).tokenClaims();
      expect(claims.role, id).toBe('relay');
      expect(claims.relay_id, id).toBe(id);
      expect(typeof claims.exp, id).toBe('number');
      // Neither the service-role key nor the control plane's secrets (the JWT secret) anywhere in the container.
      const found = await relay(id).exec(SECRET_FILE_SEARCH);
      expect(found.exitCode, found.stderr).toBe(0);
      expect(found.stdout.trim(), `${id}: secret files`).toBe('');
      expect((await relay(id).exec(['sh', '-c', 'env | grep -ci service'])).stdout.trim(), `${id}: environment`).toBe('0');
    }
    // The same token speaks for its own relay, and for no other.
    const at = cp.getIpAddress(net.getName());
    expect(await relay('relay-1').callFunction('heartbeat', { relayId: 'relay-1' }, at)).toBe(200);
    expect(await relay('relay-1').callFunction('heartbeat', { relayId: 'relay-2' }, at)).toBe(403);
    expect(await relay('relay-3').callFunction('deregister', { relayId: 'relay-2' }, at)).toBe(403);
  }, 60_000);

  it("a stock WireGuard client enters at relay-1, leaves at relay-2, and is seen with relay-2's address", async () => {
    const client = await new WireGuardClientContainer('client-1').withNetwork(net).start();
    const add = await cp.client(['add', '--entry', 'relay-1', '--exit', 'relay-2']);
    expect(add.exitCode, add.stderr).toBe(0);
    expect(add.stdout).toMatch(/^\[Interface\]/m);
    expect(add.stdout).toMatch(/^AllowedIPs = 0\.0\.0\.0\/0/m);
    await client.up(add.stdout, 'relay-1');
    const webAddress = await web.address();
    const r = await eventually('a page through the tunnel', async () => (await client.fetch(`http://${webAddress}:8080/`)).body, 30_000, 1000);
    const exitAddress = await relay('relay-2').address();
    expect(r.trim()).toContain(exitAddress);
    const remotes = await web.remotes();
    // The server saw the client only as the exit; never the entry, never the client itself.
    expect(remotes.filter((a) => a !== '127.0.0.1')).toEqual(remotes.filter((a) => a !== '127.0.0.1').map(() => exitAddress));
    expect(remotes).not.toContain(await relay('relay-1').address());
    // Only the internet: the control plane (a host name in the relays' URL, resolved at their start) is not reachable.
    const cpAddress = (await cp.exec(['sh', '-c', "getent ahostsv4 control-plane | awk '{ print $1; exit }'"])).stdout.trim();
    expect(cpAddress).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect((await client.fetch(`http://${cpAddress}:54321/functions/v1/`, 3)).error).not.toBeNull();
  }, 180_000);

  it('a relay container killed is marked down by the others; started again, it rejoins', async () => {
    const r3 = relay('relay-3');
    await r3.crash();
    await eventually(
      'relay-3 down on relay-1 and relay-2',
      async () => (await linksOf('relay-1'))['relay-3'] === 'down' && (await linksOf('relay-2'))['relay-3'] === 'down',
      90_000,
      1000,
    );
    // Killed, not deregistered: the others keep it in their topology, its link configured but down.
    expect((await relay('relay-1').status()).relays.map((r) => r.id)).toContain('relay-3');
    await r3.startAgain();
    await eventually(
      'relay-3 up again everywhere',
      async () => {
        const a = await linksOf('relay-1');
        const b = await linksOf('relay-2');
        const c = await linksOf('relay-3');
        return a['relay-3'] === 'up' && b['relay-3'] === 'up' && c['relay-1'] === 'up' && c['relay-2'] === 'up';
      },
      120_000,
      1000,
    );
    const s = await relay('relay-3').status();
    expect(s.error).toBeNull();
    expect(await relay('relay-3').ping((await relay('relay-1').status()).meshAddress!)).toBe(true);
  }, 300_000);

  it('a relay container stopped gracefully deregisters: the others remove its link; started again, it rejoins', async () => {
    const r2 = relay('relay-2');
    expect(await r2.stopGracefully()).toBe(0);
    await eventually(
      'relay-2 gone from relay-1 and relay-3',
      async () => {
        for (const id of ['relay-1', 'relay-3']) {
          const s = await relay(id).status();
          if (s.relays.some((r) => r.id === 'relay-2') || s.links.some((l) => l.peerId === 'relay-2')) return false;
          // Its device is gone too: one mesh device left (P<i>m<j>; the client device P<i>c is not one).
          if ((await relay(id).wgPeers()).filter((p) => /m\d+$/.test(p[0]!)).length !== 1) return false;
        }
        return true;
      },
      60_000,
      1000,
    );
    await r2.startAgain();
    await fullMesh('relay-2 up again everywhere', 120_000);
  }, 300_000);
});
