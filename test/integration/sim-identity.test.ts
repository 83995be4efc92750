import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { readManifest, type Manifest, type SimRelay } from '../../src/sim/manifest.ts';
import { tempDir } from '../support/temp.ts';
import { simCli, simStatus as readSimStatus, statusUntil as untilStatus } from '../support/sim-cli.ts';

/**
 * A relay's identity in a live sim (`relay-core sim`, through the real CLI), one sim for the whole
 * file, at debug log level: a relay whose endpoint changes keeps its keys and its links, and no
 * secret the run created ever reaches a log. Tests that need the sim go between the first and the
 * last; the last one tears the sim down (its logs must cover the whole run) and must stay last.
 */

const RELAYS = ['relay-1', 'relay-2', 'relay-3'];

interface LinkView {
  peerId: string;
  device: string;
  state: string;
  peerMeshAddress: string;
  peerEndpoint: string;
}

interface RelayView {
  id: string;
  pid: number | null;
  process: string;
  status: null | {
    state: string;
    publicKey: string;
    meshAddress: string | null;
    relays: { id: string; endpoint: string; publicKey: string }[];
    bus: { connected: boolean; follower: string };
    links: LinkView[];
  };
}

interface SimStatus {
  converged: { topology: boolean; mesh: boolean };
  missing: string[];
  relays: RelayView[];
}

const simStatus = (dir: string) => readSimStatus<SimStatus>(dir);
const statusUntil = (dir: string, what: string, ok: (s: SimStatus) => boolean, timeoutMs?: number) => untilStatus<SimStatus>(dir, what, ok, timeoutMs);

const view = (s: SimStatus, id: string) => s.relays.find((r) => r.id === id)?.status ?? null;

/** A command inside a namespace, bounded. */
const inNs = (ns: string, argv: string[], timeoutMs = 20_000) => execa('ip', ['netns', 'exec', ns, ...argv], { reject: false, timeout: timeoutMs });

/**
 * What each other relay's WireGuard device for its link to `relayId` has as that peer's endpoint
 * right now (`wg show <dev> endpoints` in the peer's namespace): peer id -> "address:port" (or
 * "(none)"). The devices are found from each peer's status.
 */
async function peerEndpoints(m: Manifest, s: SimStatus, relayId: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const peer of m.relays.filter((r) => r.id !== relayId)) {
    const link = view(s, peer.id)?.links.find((l) => l.peerId === relayId);
    if (!link) throw new Error(`${peer.id} has no link to ${relayId}`);
    const r = await inNs(peer.namespace, ['wg', 'show', link.device, 'endpoints']);
    if (r.exitCode !== 0) throw new Error(`wg show ${link.device} endpoints in ${peer.namespace}: ${r.stderr}`);
    const lines = r.stdout.trim().split('\n').filter(Boolean);
    if (lines.length !== 1) throw new Error(`${link.device} in ${peer.namespace} has ${lines.length} peers: ${r.stdout}`);
    out.set(peer.id, lines[0]!.split('\t')[1]!);
  }
  return out;
}

/** The host part of "a.b.c.d:port". */
const hostOf = (endpoint: string) => endpoint.replace(/:\d+$/, '');

/**
 * Ping over the mesh, both ways, between `relayId` and every other relay (by the mesh addresses their
 * statuses report): 3 echoes, 10 s deadline each. Returns "from -> to: exit code" for each pair that
 * did not get all 3 replies (empty: all answered).
 */
async function pingEveryPeer(m: Manifest, s: SimStatus, relayId: string): Promise<string[]> {
  const me = m.relays.find((r) => r.id === relayId)!;
  const meshOf = (id: string) => {
    const a = view(s, id)?.meshAddress;
    if (!a) throw new Error(`${id} reports no mesh address`);
    return a;
  };
  const pairs: [SimRelay, string][] = [];
  for (const peer of m.relays.filter((r) => r.id !== relayId)) pairs.push([me, peer.id], [peer, relayId]);
  const failed: string[] = [];
  for (const [from, to] of pairs) {
    const r = await inNs(from.namespace, ['ping', '-n', '-q', '-c', '3', '-i', '0.2', '-W', '2', '-w', '10', meshOf(to)], 15_000);
    if (r.exitCode !== 0) failed.push(`${from.id} -> ${to} (${meshOf(to)}): exit ${r.exitCode} ${r.stdout.split('\n').slice(-2).join(' ')}`);
  }
  return failed;
}

/** The topology stream's stored events of `type` (verified against the sim's topology key). */
const topologyEvents = (dir: string, type: string) => exported(dir, ['--stream', 'topology', '--type', type]);
/** A relay's own events of a type, as stored. */
const relayEvents = (dir: string, relayId: string, type: string) => exported(dir, ['--stream', 'relay', '--relay', relayId, '--type', type]);

async function exported(dir: string, args: string[]): Promise<{ type: string; data: Record<string, unknown> }[]> {
  const r = await execa(RELAY_CORE_BIN, ['events', 'export', '--sim', dir, ...args], { reject: false, timeout: 60_000 });
  if (r.exitCode !== 0) throw new Error(`events export: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { data: string; rejected?: unknown })
    .filter((l) => !l.rejected)
    .map((l) => JSON.parse(l.data) as { type: string; data: Record<string, unknown> });
}

/** Every file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? filesUnder(p) : e.isFile() ? [p] : [];
  });
}

const text = (file: string) => readFileSync(file, 'utf8').trim();

/**
 * Every secret of the sim's files, by name: the relays' WireGuard keys, identity keys, NATS nkey seeds
 * and tokens, the nkey seed of every .creds file, and the control plane's JWT secret, service-role key,
 * topology signing seed and bus authority seeds. A JWT counts with its signature too (header and
 * claims are not secret). Read while the sim runs (`down` removes them).
 */
function collectSecrets(m: Manifest): Map<string, string> {
  const secrets = new Map<string, string>();
  const add = (name: string, value: unknown) => {
    if (typeof value !== 'string' || value.length < 16) throw new Error(`${name}: not a secret (${JSON.stringify(value)})`);
    secrets.set(name, value);
  };
  const addJwt = (name: string, jwt: string) => {
    add(name, jwt);
    add(`${name} (its signature)`, jwt.split('.')[2]);
  };
  for (const r of m.relays) {
    add(`${r.id} wg.key`, text(join(r.stateDir, 'wg.key')));
    add(`${r.id} identity.key`, text(join(r.stateDir, 'identity.key')));
    add(`${r.id} nats.nk`, text(join(r.stateDir, 'nats.nk')));
    addJwt(`${r.id} token`, text(r.tokenFile));
  }
  for (const f of filesUnder(m.stateDir).filter((f) => f.endsWith('.creds'))) {
    const seed = /-----BEGIN USER NKEY SEED-----\s+(\S+)/.exec(readFileSync(f, 'utf8'))?.[1];
    add(`${relative(m.stateDir, f)} seed`, seed);
  }
  const cp = m.controlPlane.stateDir;
  const s = JSON.parse(readFileSync(join(cp, 'secrets.json'), 'utf8')) as Record<string, unknown>;
  add('control plane jwtSecret', s.jwtSecret);
  add('control plane topologySigningSeed', s.topologySigningSeed);
  // Two service-role keys (one secret, two JWTs): the sim's file, and the control plane's own (its
  // STATE_DIR/service-role.key and control-plane.json), minted at its start.
  addJwt("service-role key (the sim's)", text(m.controlPlane.serviceRoleKeyFile));
  addJwt("service-role key (the control plane's)", text(join(cp, 'service-role.key')));
  const info = JSON.parse(readFileSync(join(cp, 'control-plane.json'), 'utf8')) as Record<string, unknown>;
  if (info.serviceRoleKey !== secrets.get("service-role key (the control plane's)"))
    addJwt('service-role key (control-plane.json)', String(info.serviceRoleKey));
  const authority = JSON.parse(readFileSync(join(cp, 'bus', 'authority.json'), 'utf8')) as Record<string, unknown>;
  for (const [k, v] of Object.entries(authority)) add(`bus authority ${k}`, v);
  return secrets;
}

describe('relay-core sim: relay identity (endpoint change, secrets never in logs)', () => {
  const tmp = tempDir('sim-identity');
  const dir = join(tmp.dir, 'state');
  const sim = simCli(dir);
  let m: Manifest;
  let down: Promise<void> | null = null;

  /** `sim down` once (the last test's, or afterAll's when a test failed before it); logs stay. */
  const teardown = () =>
    (down ??= (async () => {
      const r = await sim(['down'], 120_000);
      if (r.exitCode !== 0) throw new Error(`sim down failed:\n${r.stdout}\n${r.stderr}`);
    })());

  beforeAll(async () => {
    try {
      const r = await sim(['up', '--relays', String(RELAYS.length), '--log-level', 'debug', '--wait', 'mesh', '--timeout', '90'], 240_000);
      if (r.exitCode !== 0) throw new Error(`sim up failed:\n${r.stdout}\n${r.stderr}`);
      m = readManifest(dir)!;
    } catch (e) {
      await teardown().catch(() => {});
      throw e;
    }
  }, 300_000);

  afterAll(async () => {
    try {
      await teardown();
    } finally {
      if (!process.env.KEEP_TMP) tmp.remove();
    }
  }, 180_000);

  it('a relay whose endpoint changes: re-registered at its new address, it keeps its keys, and every peer follows it there', async () => {
    const moved = 'relay-3';
    const r3 = m.relays.find((r) => r.id === moved)!;
    const before = await simStatus(dir);
    const key = view(before, moved)!.publicKey;
    const identity = text(join(r3.stateDir, 'identity.key'));
    const oldEndpoint = r3.endpoint;
    // Every peer reaches it at its old address to begin with.
    for (const [peer, ep] of await peerEndpoints(m, before, moved)) expect(hostOf(ep), peer).toBe(r3.publicAddress);

    // SIGKILL (it stays in the topology), a new address on its namespace, started again with it.
    const r = await sim(['move', '--relay', moved, '--wait', 'mesh', '--timeout', '90'], 180_000);
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    m = readManifest(dir)!;
    const after = m.relays.find((x) => x.id === moved)!;
    expect(after.publicAddress).toBe('198.18.3.3');
    expect(after.endpoint).toBe('198.18.3.3:51820');
    const addrs = await inNs(after.namespace, ['ip', '-4', '-o', 'address', 'show', 'dev', 'pub0']);
    expect(addrs.stdout).toContain('198.18.3.3/16');
    expect(addrs.stdout).not.toContain('198.18.1.3/');
    expect(r.stdout).toMatch(/relay-3 .*killed/);

    // The control plane recorded the change, signed, as an endpoint change and nothing else.
    const changed = await topologyEvents(dir, 'RelayEndpointChanged');
    expect(changed.map((e) => e.data)).toEqual([expect.objectContaining({ relayId: moved, endpoint: after.endpoint, previousEndpoint: oldEndpoint })]);
    expect((await topologyEvents(dir, 'RelayKeyRotated,RelayLeft')).filter((e) => e.data.relayId === moved)).toEqual([]);

    // Same keys: its WireGuard key (status) and its identity key (file) did not change.
    const s = await statusUntil(dir, 'every relay to know relay-3 at its new endpoint', (x) =>
      RELAYS.every((id) => view(x, id)?.relays.find((y) => y.id === moved)?.endpoint === after.endpoint),
    );
    expect(view(s, moved)!.publicKey).toBe(key);
    expect(text(join(after.stateDir, 'identity.key'))).toBe(identity);

    // Every peer's live WireGuard endpoint for it is the new address.
    const live = await eventually(
      "every peer's WireGuard endpoint for relay-3 at 198.18.3.3",
      async () => {
        const eps = await peerEndpoints(m, await simStatus(dir), moved);
        return [...eps.values()].every((ep) => hostOf(ep) === after.publicAddress) ? eps : null;
      },
      30_000,
      500,
    );
    expect([...live.keys()].sort()).toEqual(['relay-1', 'relay-2']);

    // And traffic over the mesh flows again both ways between it and every peer.
    expect(await pingEveryPeer(m, await simStatus(dir), moved)).toEqual([]);
  });

  it('a WireGuard key rotation: refused without the identity signature (403), and with it the links stay up (longest ping gap measured)', async () => {
    const rotating = 'relay-2';
    const r2 = m.relays.find((r) => r.id === rotating)!;
    const before = await simStatus(dir);
    const oldKey = view(before, rotating)!.publicKey;
    const mesh = view(before, rotating)!.meshAddress!;

    // The relay's own token, without the identity's signature, cannot rotate its key (or touch anything).
    const token = text(r2.tokenFile);
    const forged = JSON.stringify({
      relayId: rotating,
      name: rotating,
      region: 'sim',
      publicKey: Buffer.alloc(32, 9).toString('base64'),
      endpoint: r2.endpoint,
      rotateKey: true,
    });
    const refused = await inNs(r2.namespace, [
      'curl',
      '-sS',
      '-m',
      '10',
      '-o',
      '-',
      '-w',
      '\\n%{http_code}',
      '-X',
      'POST',
      '-H',
      `authorization: Bearer ${token}`,
      '-H',
      'content-type: application/json',
      '--data',
      forged,
      `${m.controlPlane.url}/functions/v1/register-server`,
    ]);
    const [body, code] = [refused.stdout.slice(0, refused.stdout.lastIndexOf('\n')), refused.stdout.slice(refused.stdout.lastIndexOf('\n') + 1)];
    expect(code, refused.stderr).toBe('403');
    expect(JSON.parse(body)).toMatchObject({ error: 'identity_proof', field: 'proof' });
    expect(view(await simStatus(dir), rotating)!.publicKey).toBe(oldKey);

    // Pings from every peer to the rotating relay, 10 a second for 20 s, with timestamps, while it rotates.
    const peers = m.relays.filter((r) => r.id !== rotating);
    const pings = peers.map((p) => inNs(p.namespace, ['ping', '-n', '-D', '-O', '-i', '0.1', '-c', '200', '-W', '1', '-w', '30', mesh], 40_000));
    await new Promise((r) => setTimeout(r, 3_000));
    const rotate = await execa(RELAY_CORE_BIN, ['rotate-key', '--state-dir', r2.stateDir, '--json'], { reject: false, timeout: 20_000 });
    expect(rotate.exitCode, rotate.stderr).toBe(0);
    const { publicKey: newKey, registering, clients } = JSON.parse(rotate.stdout) as { publicKey: string; registering: boolean; clients: number };
    expect([registering, clients]).toEqual([true, 0]);
    expect(newKey).not.toBe(oldKey);

    // Its devices carry the new key, every peer has it for the link, the stream has the rotation.
    await statusUntil(dir, 'every relay to know relay-2 by its new key', (x) =>
      RELAYS.every((id) => (id === rotating ? view(x, id)?.publicKey : view(x, id)?.relays.find((y) => y.id === rotating)?.publicKey) === newKey),
    );
    await eventually(
      "every peer's WireGuard peer for relay-2 holding the new key",
      async () => {
        const s = await simStatus(dir);
        for (const p of peers) {
          const link = view(s, p.id)?.links.find((l) => l.peerId === rotating);
          const wg = link && (await inNs(p.namespace, ['wg', 'show', link.device, 'peers']));
          if (wg?.stdout.trim() !== newKey) return null;
        }
        return true;
      },
      30_000,
      500,
    );
    expect(text(join(r2.stateDir, 'wg.key'))).not.toBe('');
    const rotated = (await topologyEvents(dir, 'RelayKeyRotated')).map((e) => e.data);
    expect(rotated).toEqual([expect.objectContaining({ relayId: rotating, publicKey: newKey, previousPublicKey: oldKey })]);

    // The longest silence of each ping across the rotation: below WireGuard's handshake timeout (REKEY_TIMEOUT, 5 s).
    const gaps: Record<string, number> = {};
    for (const [i, run] of (await Promise.all(pings)).entries()) {
      const times = run.stdout
        .split('\n')
        .map((l) => /^\[(\d+\.\d+)\] \d+ bytes from/.exec(l)?.[1])
        .filter((t): t is string => t !== undefined)
        .map(Number);
      expect(times.length, `${peers[i]!.id}: ${run.stdout.slice(-300)}`).toBeGreaterThan(150);
      gaps[peers[i]!.id] = Math.max(...times.slice(1).map((t, j) => t - times[j]!));
    }
    console.log(`ROTATION-GAP ${JSON.stringify({ relay: rotating, longestReplyGapSeconds: gaps })}`);
    // Below WireGuard's handshake retry (REKEY_TIMEOUT, 5 s): no handshake is lost. A peer may re-key
    // before the rotating relay has its new key, and its initiation is then dropped; the rotating relay
    // starts a handshake on each link as soon as its key is on the device (docs/security.md, "Rotation").
    for (const [peer, gap] of Object.entries(gaps)) expect(gap, peer).toBeLessThan(5);
    // And the links are still up afterwards, both ways.
    expect(await pingEveryPeer(m, await simStatus(dir), rotating)).toEqual([]);

    // The rotating relay staged its key (WireGuardKeyStaged, before the registration that announced it),
    // and replay re-plans and matches every kernel round of it and of a peer, the staged key's round included.
    const staged = (await relayEvents(dir, rotating, 'WireGuardKeyStaged')).map((e) => e.data);
    expect(staged).toEqual([{ publicKey: newKey, previousPublicKey: oldKey }]);
    for (const id of [rotating, peers[0]!.id]) {
      const r = await execa(RELAY_CORE_BIN, ['replay', '--relay', id, '--sim', dir, '--json'], { reject: false, timeout: 60_000 });
      expect(r.exitCode, r.stderr).toBe(0);
      const checks = (JSON.parse(r.stdout) as { checks: { rounds: number; matched: number; mismatched: number; unchecked: number; inconsistent: number } })
        .checks;
      expect(checks.rounds, id).toBeGreaterThan(0);
      expect(checks, id).toMatchObject({ matched: checks.rounds, mismatched: 0, unchecked: 0, inconsistent: 0 });
    }
  });

  // Other tests on the shared sim go here, above the secrets test (which tears the sim down).

  it('secrets never reach logs: no log of the run (relays, control plane, functions, nats-server) holds any secret it created', async () => {
    const secrets = collectSecrets(m);
    // 3 relays x (wg, identity, nkey, token + its signature) + their creds, the operator's creds,
    // jwt secret, signing seed, 2 service-role keys + their signatures, 4 authority seeds.
    expect(secrets.size).toBeGreaterThanOrEqual(RELAYS.length * 6 + 4 + 2 + 4 + 4);
    for (const r of m.relays) expect(secrets.has(`${relative(m.stateDir, join(r.stateDir, 'nats.creds'))} seed`), r.id).toBe(true);

    // The whole run: after `down`, what is left of the sim's files is its logs.
    await teardown();
    const logs = filesUnder(dir).filter((f) => statSync(f).size > 0);
    const names = logs.map((f) => relative(dir, f));
    expect(names).toEqual(expect.arrayContaining([...RELAYS.map((id) => `relays/${id}/relay.log`), 'control-plane/control-plane.log', 'nats/nats.log']));

    const contents = new Map(logs.map((f) => [relative(dir, f), readFileSync(f, 'utf8')]));
    // Not vacuous: the relays and the control plane logged at debug level, the functions through it.
    const debugLines = (log: string) => log.split('\n').filter((l) => l.includes('"level":20')).length;
    for (const id of RELAYS) expect(debugLines(contents.get(`relays/${id}/relay.log`)!), id).toBeGreaterThan(0);
    const cpLog = contents.get('control-plane/control-plane.log')!;
    expect(debugLines(cpLog)).toBeGreaterThan(0);
    expect(cpLog).toContain('"component":"edge-functions"');

    const leaks: string[] = [];
    for (const [name, secret] of secrets) {
      for (const [log, content] of contents) if (content.includes(secret)) leaks.push(`${name} in ${log}`);
    }
    expect(leaks).toEqual([]);
  });
});
