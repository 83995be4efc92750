/**
 * Writes a long, consistent relay log for the replay benchmark, as `relay-core events export` writes
 * it (topology and relay-1's lines, interleaved as they happen). Relay-1 is the entry of a 4-relay network; client
 * sessions open and close in a sliding window (`--window` open at once). Each session costs what it
 * costs a live relay: two topology events, two applied events, its state changes, a steer, and two
 * kernel rounds whose operations come from the relay's own planner on an in-memory host, so replay
 * re-derives every round and must find them all equal (the benchmark checks it).
 *
 *   node bench/replay-log.ts --out FILE [--events 1000000] [--window 50]
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { currentVersion, type EventType } from '../src/contract/catalogue.ts';
import { envelope } from '../src/contract/envelope.ts';
import { toExportLine } from '../src/events/log.ts';
import { subjectFor } from '../src/contract/subjects.ts';
import { applyTopologyEvent, EMPTY_TOPOLOGY, topologyDigest, type TopologyView } from '../src/events/topology.fold.ts';
import { formatIpv4, parseIpv4, type ClientSession, type RelayRecord, type TopologyEvent } from '../src/contract/topology.events.ts';
import type { ClientOptions } from '../src/kernel/clients.ts';
import type { DesiredHostState, KernelScope } from '../src/kernel/host-state.ts';
import { scopeDigest } from '../src/kernel/host-text.ts';
import { MemoryKernelBackend } from '../src/kernel/memory-backend.ts';
import type { MeshOptions } from '../src/kernel/mesh.ts';
import { clientsOwner, initialClientsState } from '../src/kernel/owners/clients.ts';
import { initialMeshState, meshOwner, meshPeers } from '../src/kernel/owners/mesh.ts';
import { planKernel } from '../src/kernel/plan.ts';

const { values } = parseArgs({ options: { out: { type: 'string' }, events: { type: 'string' }, window: { type: 'string' } } });
if (!values.out) {
  process.stderr.write('usage: replay-log.ts --out FILE [--events N] [--window N]\n');
  process.exit(2);
}
const target = Number(values.events ?? 1_000_000);
const window = Number(values.window ?? 50);

const SELF = 'relay-1';
const key = (seed: string) => createHash('sha256').update(seed).digest('base64');
const uuid = (n: number, kind: number) => `00000000-0000-4000-8${kind.toString(16).padStart(3, '0')}-${n.toString(16).padStart(12, '0')}`;
let ids = 0;
const newId = (kind: number) => uuid(++ids, kind);
let clock = Date.parse('2026-11-25T00:00:00Z');
const now = () => {
  clock += 3;
  return new Date(clock);
};

const relay = (n: number): RelayRecord => ({
  id: `relay-${n}`,
  name: `Relay ${n}`,
  region: `region-${n}`,
  publicKey: key(`relay-${n}`),
  endpoint: `198.18.1.${n}:51820`,
  meshAddress: formatIpv4(parseIpv4('100.64.0.0')! + n),
  clientPool: `${formatIpv4(parseIpv4('100.96.0.0')! + (n - 1) * 1024)}/22`,
});
const mesh: MeshOptions = {
  wgPrefix: 'rb',
  keepaliveSeconds: 25,
  mtu: 1420,
  privateKeyFile: '/var/lib/relay-core/wg.key',
  exitTableBase: 100_000,
  clientPrefix6: null,
};
const clients: ClientOptions = {
  ...mesh,
  rulePriorityBase: 20_000,
  clientSupernet: '100.96.0.0/11',
  denyCidrs: [],
  allowCidrs: [],
  serviceCidrs: [],
  privateSessions: true,
  echoService: true,
};
const sysctls = { 'net.ipv4.ip_forward': '0', 'net.ipv4.conf.all.rp_filter': '1' };

const fd = openSync(values.out, 'w', 0o600);
const seqs = { topology: 0, relay: 0 };
let written = 0;
function write(stream: 'topology' | 'relay', subject: string, event: unknown): void {
  const data = new TextEncoder().encode(JSON.stringify(event));
  writeSync(fd, toExportLine({ stream, seq: ++seqs[stream], subject, time: (event as { time: string }).time, data, signature: null }) + '\n');
  written++;
}

// Lines of both streams interleave as they happen; replay reads a file's topology lines first anyway.
const cp = (type: EventType, data: unknown): TopologyEvent =>
  envelope({ source: 'control-plane', now, newId: () => newId(1) }, type, currentVersion(type), data) as TopologyEvent;
const rel = (type: EventType, data: unknown, id: string | null = null, causationId: string | null = null) => {
  const e = envelope({ source: SELF, now, newId: () => id ?? newId(2), causationId }, type, currentVersion(type), data);
  write('relay', subjectFor(type, SELF), e);
  return e;
};

const host = new MemoryKernelBackend({ recordOps: false, initial: { devices: new Map(), routes: [], rules: [], sysctls, nftTables: {}, portMaps: [] } });
let rounds = 0;
/** One kernel round of an owner, recorded as the kernel actor records it (one part: a round here is a few operations). */
const round = (owner: 'mesh' | 'clients', scope: KernelScope, desired: DesiredHostState, cause: string) => {
  const ops = planKernel(host.readSync(scope), desired);
  for (const op of ops) host.applySync(op);
  rounds++;
  if (ops.length)
    rel(
      'KernelReconciled',
      {
        owner,
        round: rounds,
        part: 1,
        parts: 1,
        planned: ops.length,
        applied: ops.length,
        failed: false,
        focused: false,
        ops,
        reached: scopeDigest(host.readSync(scope)),
      },
      null,
      cause,
    );
};

let view: TopologyView = EMPTY_TOPOLOGY;
const publishTopology = (type: EventType, data: Record<string, unknown>, subjectRelay: string) => {
  const e = cp(type, { revision: view.revision + 1, ...data });
  const r = applyTopologyEvent(view, e);
  if (r.kind !== 'applied') throw new Error('generator: topology event did not apply');
  view = r.state;
  write('topology', subjectFor(type, subjectRelay), e);
  return e;
};

// Boot: four relays admitted, relay-1 starts, seeds, programs its mesh and its client scope.
for (let n = 1; n <= 4; n++) publishTopology('RelayAdmitted', { relay: relay(n), identityKey: null }, `relay-${n}`);
const self = view.relays.get(SELF)!;
rel('RelayStarted', {
  name: self.name,
  region: self.region,
  publicKey: self.publicKey,
  software: 'relay-core 0.1.0',
  config: { ...clients, clientIdleAfterMs: 180_000, linkStaleAfterMs: 180_000, linkDownAfterMs: 300_000, sysctlsBefore: sysctls, sysctlsAtStart: sysctls },
});
rel('RelayRegistered', { revision: view.revision, meshAddress: self.meshAddress, clientPool: self.clientPool, readmitted: false, serviceCidrs: [] });
const seedId = newId(3);
rel('TopologySeeded', { revision: view.revision, relays: 4, reason: 'boot', digest: topologyDigest(view), sessions: 'entry' }, seedId);
for (const p of meshPeers(view, SELF).values())
  rel('LinkStateChanged', {
    peerId: p.id,
    device: `rb1m${p.id.slice(6)}`,
    state: 'desired',
    reason: 'in topology',
    latestHandshakeMs: null,
    rxBytes: 0,
    txBytes: 0,
  });
const meshState = meshOwner.view(initialMeshState(SELF), { view });
round('mesh', meshOwner.scope(meshState, mesh), meshOwner.desire(meshState, mesh), seedId);
/** The clients owner's round for the current view, as the clients actor asks for it. */
const clientsRound = (cause: string) => {
  const o = { clients, originalSysctls: sysctls };
  const s = clientsOwner.view(initialClientsState(SELF), { view, services: [] });
  round('clients', clientsOwner.scope(s, o), clientsOwner.desire(s, o), cause);
};
clientsRound(seedId);
for (const p of meshPeers(view, SELF).values())
  rel('LinkStateChanged', {
    peerId: p.id,
    device: `rb1m${p.id.slice(6)}`,
    state: 'up',
    reason: 'handshake',
    latestHandshakeMs: clock,
    rxBytes: 92,
    txBytes: 148,
  });

// Sessions: open one, and once `window` are open close the oldest, until the log is long enough.
const open: ClientSession[] = [];
let n = 0;
const poolBase = parseIpv4('100.96.0.0')!;
const stateChanged = (s: ClientSession, state: string, reason: string) =>
  rel('ClientSessionStateChanged', {
    sessionId: s.id,
    publicKey: s.publicKey,
    address: s.address,
    exitId: s.exitId,
    mode: s.mode,
    role: 'entry',
    state,
    reason,
    latestHandshakeMs: null,
    rxBytes: 0,
    txBytes: 0,
  });
const applied = (e: TopologyEvent) => {
  const id = newId(4);
  rel('TopologyEventApplied', { revision: e.data.revision, eventId: e.id, eventType: e.type }, id, e.id);
  return id;
};
while (written < target) {
  n++;
  const address = formatIpv4(poolBase + 2 + ((n - 1) % 1000));
  const session: ClientSession = {
    id: uuid(n, 5),
    entryId: SELF,
    exitId: `relay-${2 + (n % 3)}`,
    publicKey: key(`client-${n}`),
    address,
    openedAt: now().toISOString(),
    expiresAt: '2027-11-25T00:00:00.000Z',
    mode: 'standard',
  };
  const opened = publishTopology('ClientSessionOpened', { session }, SELF);
  const cause = applied(opened);
  stateChanged(session, 'requested', 'session opened');
  stateChanged(session, 'configuring', 'session opened');
  clientsRound(cause);
  stateChanged(session, 'ready', 'programmed');
  rel('ClientSessionSteered', { sessionId: session.id, exitId: session.exitId, previousExitId: null });
  stateChanged(session, 'active', 'client handshake');
  open.push(session);
  if (open.length > window) {
    const gone = open.shift()!;
    const closed = publishTopology('ClientSessionClosed', { sessionId: gone.id, entryId: SELF, reason: 'disconnected' }, SELF);
    const c = applied(closed);
    stateChanged(gone, 'closing', 'session closed');
    clientsRound(c);
    stateChanged(gone, 'closed', 'unprogrammed');
  }
}
closeSync(fd);
process.stdout.write(JSON.stringify({ out: values.out, lines: written, topology: seqs.topology, relay: seqs.relay, sessions: n }) + '\n');
