import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { RELAY_CORE_BIN } from '../devnet/relay-process.ts';
import { generateWgKeyPair } from '../lib/wg-keys.ts';
import { writePrivate } from '../control-plane/secrets.ts';
import {
  BRIDGE_ADDRESS6,
  BRIDGE_IF,
  clientNamespace,
  clientPublicAddress,
  clientPublicAddress6,
  clientWgDevice,
  CONTROL_PLANE_PORT,
  inetNamespace,
  MAX_CLIENTS,
  PREFIX_LEN6,
  PUBLIC_IF,
  RELAYS_CIDRS,
  svcNamespace,
  vethName,
} from './layout.ts';
import type { SimClient } from './manifest.ts';
import * as host from './netns.ts';
import { loadSim, Sim, type Out } from './network.ts';

/**
 * Clients of a sim: each a namespace of its own on the sim's "internet" bridge, with a stock
 * WireGuard device (wireguard-go, configured with `wg setconf` from the wg-quick file the control
 * plane printed; nothing of relay-core runs inside). The client reaches the relays' public addresses
 * (its entry's endpoint) directly and everything else through its tunnel, so a request to the sim's
 * web server can only leave through the relay network.
 */

const TIMEOUT_MS = 30_000;

async function run(argv: string[], input?: string): Promise<string> {
  const r = await execa(argv[0]!, argv.slice(1), { timeout: TIMEOUT_MS, reject: false, input });
  if (r.exitCode !== 0 || r.timedOut) throw new Error(`${argv.join(' ')}: ${r.timedOut ? 'timed out' : (r.stderr || r.stdout || `exit ${r.exitCode}`).trim()}`);
  return r.stdout;
}

/** The relay-core CLI inside the service namespace, talking to the control plane on its loopback. */
async function controlPlaneCli(sim: Sim, args: string[]): Promise<string> {
  const url = `http://127.0.0.1:${CONTROL_PLANE_PORT}`;
  return run([
    'ip',
    'netns',
    'exec',
    svcNamespace(sim.m.simId),
    RELAY_CORE_BIN,
    'client',
    ...args,
    '--control-plane-url',
    url,
    '--token-file',
    sim.m.controlPlane.serviceRoleKeyFile,
  ]);
}

/** The fields of a wg-quick file a client needs besides what `wg setconf` takes: addresses, MTU, the peer's allowed IPs. */
export function wgQuickInterface(conf: string): { addresses: string[]; mtu: number | null; allowedIps: string[] } {
  const section = (name: string) => new RegExp(`\\[${name}\\]([\\s\\S]*?)(?=\\n\\[|$)`).exec(conf)?.[1] ?? '';
  const field = (text: string, k: string) => new RegExp(`^\\s*${k}\\s*=\\s*(.+?)\\s*$`, 'mi').exec(text)?.[1] ?? null;
  const list = (v: string | null) =>
    (v ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  const iface = section('Interface');
  const addresses = list(field(iface, 'Address'));
  if (addresses.length === 0) throw new Error('the configuration has no [Interface] Address');
  const mtu = field(iface, 'MTU');
  return { addresses, mtu: mtu ? Number(mtu) : null, allowedIps: list(field(section('Peer'), 'AllowedIPs')) };
}

/**
 * Bring up a stock WireGuard client in `ns` from a wg-quick file, the way wg-quick would (wireguard-go,
 * `wg-quick strip` + `wg setconf`, addresses, MTU, a route into the tunnel for each allowed IP). A
 * default route of the tunnel (0.0.0.0/0, ::/0) takes metric 1, ahead of the namespace's own default
 * routes (metric 1024 and up), as wg-quick's policy routing puts the tunnel ahead of the main table.
 */
export async function startWgQuickClient(ns: string, device: string, configFile: string): Promise<void> {
  const conf = readFileSync(configFile, 'utf8');
  const { addresses, mtu, allowedIps } = wgQuickInterface(conf);
  const inNs = (argv: string[], input?: string) => run(['ip', 'netns', 'exec', ns, ...argv], input);
  await inNs(['wireguard-go', device]);
  await setWgConf(ns, device, configFile);
  for (const a of addresses) await inNs(['ip', ...(a.includes(':') ? ['-6'] : []), 'address', 'add', a, 'dev', device, ...(a.includes(':') ? ['nodad'] : [])]);
  if (mtu) await inNs(['ip', 'link', 'set', 'dev', device, 'mtu', String(mtu)]);
  await inNs(['ip', 'link', 'set', 'dev', device, 'up']);
  for (const cidr of allowedIps) {
    const v6 = cidr.includes(':');
    await inNs(['ip', ...(v6 ? ['-6'] : []), 'route', 'add', cidr, 'dev', device, 'metric', '1']);
  }
}

/**
 * `wg setconf` of a wg-quick file (`wg-quick strip`): the device's key and its one peer, replacing
 * the peer it had (a private client's new exit). Its private key only ever in a 0600 file.
 */
async function setWgConf(ns: string, device: string, configFile: string): Promise<void> {
  // `wg setconf` opens its file with fopen, which refuses the socket Node makes of a child's stdin.
  const stripped = `${configFile}.setconf`;
  writePrivate(stripped, await run(['wg-quick', 'strip', configFile]));
  try {
    await run(['ip', 'netns', 'exec', ns, 'wg', 'setconf', device, stripped]);
  } finally {
    rmSync(stripped, { force: true });
  }
}

export interface AddClientOptions {
  name?: string;
  entry?: string;
  exit?: string;
  exitRegion?: string;
  /** A private session (docs/clients.md, "Private sessions"). */
  private?: boolean;
  /** Community relays may be on its path (then it is private by default). */
  community?: boolean;
}

/** A new client: namespace, key, session (the control plane waits for the entry), stock WireGuard up. */
export async function addClient(dir: string, o: AddClientOptions, out: Out): Promise<SimClient> {
  const sim = new Sim(loadSim(dir));
  const taken = new Set(sim.m.clients.map((c) => c.index));
  let index = 1;
  while (taken.has(index) && index <= MAX_CLIENTS) index++;
  if (index > MAX_CLIENTS) throw new Error(`the sim has no room for another client (${MAX_CLIENTS} at most)`);
  const name = o.name ?? `client-${index}`;
  if (sim.m.clients.some((c) => c.name === name)) throw new Error(`the sim already has a client ${name}`);
  const cdir = join(sim.m.stateDir, 'clients', name);
  const client: SimClient = {
    name,
    index,
    namespace: clientNamespace(sim.m.simId, index),
    device: clientWgDevice(sim.m.wgPrefix, index),
    publicAddress: clientPublicAddress(index),
    keyFile: join(cdir, 'wg.key'),
    configFile: join(cdir, 'wg.conf'),
    sessionId: null,
    entryId: null,
    exitId: null,
    address: null,
    mode: o.private ? 'private' : 'standard',
  };
  sim.record((m) => {
    m.clients.push(client);
    m.namespaces.push(client.namespace);
  });
  mkdirSync(cdir, { recursive: true, mode: 0o700 });
  const kp = generateWgKeyPair();
  writePrivate(client.keyFile, kp.privateKey + '\n');

  // The namespace: a /32 on its public interface, the relays on-link, nothing else until the tunnel is up.
  await host.addNetns(client.namespace);
  const veth = { name: vethName(sim.m.simId, { client: index }), namespace: inetNamespace(sim.m.simId), peer: PUBLIC_IF, peerNamespace: client.namespace };
  sim.record((m) => m.veths.push(veth));
  await host.attachToBridge({
    bridgeNs: veth.namespace,
    bridge: BRIDGE_IF,
    outer: veth.name,
    ns: client.namespace,
    inner: PUBLIC_IF,
    cidr: `${client.publicAddress}/32`,
    gateway: null,
    onLink: RELAYS_CIDRS,
  });
  // And IPv6 with a default route of its own, as on a dual-stack home network: whatever of the client's
  // IPv6 the tunnel did not take would leave here, around it (the capture test watches this link).
  await host.addAddress6(client.namespace, PUBLIC_IF, `${clientPublicAddress6(index)}/${PREFIX_LEN6}`, BRIDGE_ADDRESS6, 2048);

  const args = [
    'add',
    '--json',
    '--key-file',
    client.keyFile,
    ...(o.entry ? ['--entry', o.entry] : []),
    ...(o.exit ? ['--exit', o.exit] : []),
    ...(o.exitRegion ? ['--exit-region', o.exitRegion] : []),
    ...(o.private ? ['--private'] : []),
    ...(o.community ? ['--community'] : []),
  ];
  const answer = JSON.parse(await controlPlaneCli(sim, args)) as {
    session: { id: string; entryId: string; exitId: string; address: string; mode: SimClient['mode'] };
    wgQuick: string;
  };
  writePrivate(client.configFile, answer.wgQuick.endsWith('\n') ? answer.wgQuick : `${answer.wgQuick}\n`);
  // The mode the control plane chose (private where a community relay is on the path).
  sim.record(() =>
    Object.assign(client, {
      sessionId: answer.session.id,
      entryId: answer.session.entryId,
      exitId: answer.session.exitId,
      address: answer.session.address,
      mode: answer.session.mode,
    }),
  );
  await startWgQuickClient(client.namespace, client.device, client.configFile);
  out(
    `client ${name}: ${answer.session.address} in ${client.namespace}, enters at ${answer.session.entryId}, leaves at ${answer.session.exitId}${client.mode === 'private' ? ', private' : ''} (session ${answer.session.id})`,
  );
  return client;
}

function findClient(sim: Sim, name: string): SimClient {
  const c = sim.m.clients.find((x) => x.name === name);
  if (!c) throw new Error(`the sim has no client ${name} (it has: ${sim.m.clients.map((x) => x.name).join(', ') || 'none'})`);
  return c;
}

/**
 * Steer a client to another exit. A standard client's tunnel stays as it is; a private client takes
 * the new configuration the control plane answers with (its peer is the new exit), as its user would.
 */
export async function switchClient(dir: string, name: string, to: { exit?: string; exitRegion?: string }, out: Out): Promise<SimClient> {
  const sim = new Sim(loadSim(dir));
  const c = findClient(sim, name);
  if (!c.sessionId) throw new Error(`client ${name} has no session`);
  const answer = JSON.parse(
    await controlPlaneCli(sim, [
      'switch',
      '--json',
      '--session',
      c.sessionId,
      '--key-file',
      c.keyFile,
      ...(to.exit ? ['--exit', to.exit] : ['--exit-region', to.exitRegion!]),
    ]),
  ) as { session: { exitId: string }; wgQuick: string | null };
  if (answer.wgQuick !== null) {
    writePrivate(c.configFile, answer.wgQuick.endsWith('\n') ? answer.wgQuick : `${answer.wgQuick}\n`);
    await setWgConf(c.namespace, c.device, c.configFile);
  }
  sim.record(() => (c.exitId = answer.session.exitId));
  out(`client ${name}: now leaves at ${answer.session.exitId}${answer.wgQuick !== null ? ' (private: new configuration applied)' : ''}`);
  return c;
}

/** Close the client's session and remove its namespace, WireGuard device and files. */
export async function removeClient(dir: string, name: string, out: Out): Promise<void> {
  const sim = new Sim(loadSim(dir));
  const c = findClient(sim, name);
  if (c.sessionId) {
    try {
      await controlPlaneCli(sim, ['remove', '--session', c.sessionId]);
    } catch (e) {
      // Already closed (the entry left, it expired): nothing to close.
      if (!/session_closed|unknown_session/.test(String((e as Error).message))) throw e;
    }
  }
  for (const pid of await host.netnsPids(c.namespace)) host.signal(pid, 'SIGTERM');
  await host.deleteNetns(c.namespace);
  rmSync(join(host.WG_SOCKET_DIR, `${c.device}.sock`), { force: true });
  rmSync(join(sim.m.stateDir, 'clients', c.name), { recursive: true, force: true });
  sim.record((m) => {
    m.clients = m.clients.filter((x) => x.name !== name);
    m.namespaces = m.namespaces.filter((n) => n !== c.namespace);
    m.veths = m.veths.filter((v) => v.peerNamespace !== c.namespace);
  });
  out(`client ${name}: session closed, namespace ${c.namespace} removed`);
}
