import type { ClientSession, RelayRecord } from '../../contract/topology.events.ts';
import { sessionsOfRelay } from '../../events/topology.fold.ts';
import { privateEntryPort } from '../../contract/private-sessions.ts';
import {
  clientDevice,
  clientScope,
  desiredClientState,
  exitTable,
  nftTableName,
  privateDevice,
  privateTarget,
  releasedClientState,
  type ClientOptions,
} from '../clients.ts';
import type { HostState } from '../host-state.ts';
import { embed6 } from '../ipv6.ts';
import { meshIndex } from '../mesh.ts';
import type { KernelOwner, OwnerState } from './owner.ts';

/**
 * The clients owner (the clients actor, src/actors/clients.machine.ts): the client part of the host
 * (src/kernel/clients.ts) for the open sessions that concern this relay (entering here, or private
 * ones leaving here) but the expired ones, or, tearing down, nothing but the client sysctls as they
 * were before the relay set them.
 */

export interface ClientsOwnerState extends OwnerState {
  self: RelayRecord | null;
  /** Every relay of the view, by id (the view's own Map). */
  relays: ReadonlyMap<string, RelayRecord>;
  /** Open sessions that concern this relay, by id (from the view). */
  sessions: Record<string, ClientSession>;
  /** Sessions past their expiry: unprogrammed while the control plane has not closed them yet. */
  expired: string[];
  /** NATS addresses of the latest registration: refused to clients like the configured service ranges. */
  services: string[];
}

/** The clients owner's settings: the client options, and the sysctls' values to restore on teardown. */
export interface ClientsOwnerOptions {
  clients: ClientOptions;
  originalSysctls: Record<string, string>;
}

/**
 * The last desired client state made for a relay record, with its inputs (by reference): the clients
 * owner's desire is pure, and this only hands back the same objects for the same inputs.
 */
const lastDesired = new WeakMap<
  RelayRecord,
  {
    opts: ClientOptions;
    services: readonly string[];
    sessions: readonly ClientSession[];
    exits: readonly (RelayRecord | undefined)[];
    out: ReturnType<typeof desiredClientState>;
  }
>();

const sameItems = <T>(a: readonly T[], b: readonly T[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * What the kernel reached for one session: its peer is programmed, and the exit its rules steer to. A
 * private session at its entry: its port map is there (`peer`), and the exit it forwards to; at its
 * exit: its peer on the private device, and (with the route of its address into it) this relay.
 */
export interface SessionReached {
  peer: boolean;
  exitId: string | null;
}

export const initialClientsState = (selfId: string): ClientsOwnerState => ({
  selfId,
  tearingDown: false,
  self: null,
  relays: new Map(),
  sessions: {},
  expired: [],
  services: [],
});

/** The service addresses the relay keeps clients from: the configured ones and those of the latest registration. */
export const serviceCidrsOf = (c: { clients: Pick<ClientOptions, 'serviceCidrs'>; services: readonly string[] }): string[] =>
  [...new Set([...c.clients.serviceCidrs, ...c.services])].sort();

/** The state once a session passed its expiry: it is unprogrammed (until the view closes it). Pure. */
export function expireSession<T extends ClientsOwnerState>(s: T, sessionId: string): T {
  return { ...s, expired: [...new Set([...s.expired, sessionId])] };
}

/**
 * Which relay each exit table leads to, and which relay each private target (`mesh address:private
 * port`) is; built once per relays map (views replace it, never change it in place) and base.
 */
const exitTables = new WeakMap<ReadonlyMap<string, RelayRecord>, { base: number; exits: Map<number, string>; targets: Map<string, string> }>();
function exitsOf(relays: ReadonlyMap<string, RelayRecord>, exitTableBase: number): { exits: Map<number, string>; targets: Map<string, string> } {
  const known = exitTables.get(relays);
  if (known?.base === exitTableBase) return known;
  const exits = new Map([...relays.values()].map((r) => [exitTable(exitTableBase, meshIndex(r.meshAddress)), r.id]));
  const targets = new Map<string, string>();
  for (const r of relays.values()) {
    const t = privateTarget(r);
    if (t !== null) targets.set(t, r.id);
  }
  const out = { base: exitTableBase, exits, targets };
  exitTables.set(relays, out);
  return out;
}

/**
 * What the kernel reached for one session: its peer on the device (with the client's addresses, the
 * IPv6 one too with `clientPrefix6`), and the exit its rules steer to (null unless every family's rule
 * steers to the same exit table).
 */
export function sessionReached(
  actual: HostState,
  device: string,
  session: ClientSession,
  exits: ReadonlyMap<number, string>,
  clientPrefix6: string | null,
): SessionReached {
  const cidrs = sessionCidrs(session, clientPrefix6);
  const peer = hasPeer(actual, device, session, cidrs);
  const tables = cidrs.map((c) => actual.rules.find((r) => r.from === c && r.iif === device && r.table !== null)?.table ?? null);
  const table = tables[0] ?? null;
  return { peer, exitId: table !== null && tables.every((t) => t === table) ? (exits.get(table) ?? null) : null };
}

const sessionCidrs = (session: ClientSession, clientPrefix6: string | null): string[] => [
  `${session.address}/32`,
  ...(clientPrefix6 ? [`${embed6(clientPrefix6, session.address)}/128`] : []),
];

const hasPeer = (actual: HostState, device: string, session: ClientSession, cidrs: string[]): boolean =>
  actual.devices
    .get(device)
    ?.peers.some((p) => p.publicKey === session.publicKey && p.allowedIps.length === cidrs.length && cidrs.every((c) => p.allowedIps.includes(c))) ?? false;

/** A private session at its entry: its port map, and the relay it forwards to. */
export function privateEntryReached(
  actual: HostState,
  self: RelayRecord,
  table: string,
  session: ClientSession,
  targets: ReadonlyMap<string, string>,
): SessionReached {
  const port = privateEntryPort(self, session.address);
  const map = 'port' in port ? actual.portMaps.find((m) => m.table === table && m.port === port.port) : undefined;
  return { peer: map !== undefined, exitId: map ? (targets.get(map.to) ?? null) : null };
}

/** A private session at its exit: its peer on the private device, and this relay once its addresses route into it. */
export function privateExitReached(actual: HostState, selfId: string, device: string, session: ClientSession, clientPrefix6: string | null): SessionReached {
  const cidrs = sessionCidrs(session, clientPrefix6);
  const peer = hasPeer(actual, device, session, cidrs);
  const routed = cidrs.every((c) => actual.routes.some((r) => r.dst === c && r.dev === device));
  return { peer, exitId: peer && routed ? selfId : null };
}

/**
 * The clients owner. `reached` gives, per session (open or closing), what the kernel reached for it; a
 * closed session's key may already belong to a new session of the same client: then its peer is that one's.
 */
export const clientsOwner: KernelOwner<ClientsOwnerState, ClientsOwnerOptions, ClientSession, SessionReached> = {
  owner: 'clients',
  view: (s, { view, services }) => {
    const sessions = Object.fromEntries(sessionsOfRelay(view, s.selfId).map((x) => [x.id, x]));
    return {
      ...s,
      self: view.relays.get(s.selfId)!,
      relays: view.relays,
      sessions,
      expired: s.expired.filter((id) => sessions[id]),
      services: services ?? s.services,
    };
  },
  teardown: (s) => ({ ...s, tearingDown: true, sessions: {} }),
  scope: (s, o) => clientScope(s.self!, o.clients),
  desire: (s, o) => {
    if (s.tearingDown) return releasedClientState(o.originalSysctls);
    const self = s.self!;
    const live = Object.values(s.sessions).filter((x) => !s.expired.includes(x.id));
    const exits = live.map((x) => s.relays.get(x.exitId));
    // A topology event that changes none of what the clients' host state is made of (a relay joining
    // elsewhere, most of them) gets the very objects of the last one: nothing in the round's focus, no
    // read, and no egress policy or nftables body built again.
    const last = lastDesired.get(self);
    if (last && last.opts === o.clients && sameItems(last.services, s.services) && sameItems(last.sessions, live) && sameItems(last.exits, exits))
      return last.out;
    // Only the exits of the sessions matter to their host state: a record of those, not of every relay.
    const byExit = Object.fromEntries(exits.flatMap((x) => (x ? [[x.id, x]] : [])));
    const out = desiredClientState(self, byExit, live, { ...o.clients, serviceCidrs: serviceCidrsOf({ clients: o.clients, services: s.services }) });
    lastDesired.set(self, { opts: o.clients, services: s.services, sessions: live, exits, out });
    return out;
  },
  reached: (s, o, actual, sessions) => {
    const self = s.self!;
    const own = meshIndex(self.meshAddress);
    const device = clientDevice(o.clients.wgPrefix, own);
    if (sessions.length === 0) return { members: [], tornDown: clientsTornDown(s, actual) };
    const { exits, targets } = exitsOf(s.relays, o.clients.exitTableBase);
    const open = Object.values(s.sessions);
    const openKeys = new Set(open.map((x) => x.publicKey));
    const openAddresses = new Set(open.map((x) => x.address));
    return {
      members: sessions.map((session) => {
        const closed = !s.sessions[session.id];
        if (session.mode === 'private' && session.entryId === s.selfId) {
          // A closed session's port may already be a new session's (the same address, taken again).
          const r = privateEntryReached(actual, self, nftTableName(o.clients.wgPrefix, own), session, targets);
          return { peer: r.peer && !(closed && openAddresses.has(session.address)), exitId: r.exitId };
        }
        const r =
          session.mode === 'private'
            ? privateExitReached(actual, s.selfId, privateDevice(o.clients.wgPrefix, own), session, o.clients.clientPrefix6)
            : sessionReached(actual, device, session, exits, o.clients.clientPrefix6);
        return { peer: r.peer && !(closed && openKeys.has(session.publicKey)), exitId: r.exitId };
      }),
      tornDown: clientsTornDown(s, actual),
    };
  },
};

const clientsTornDown = (s: ClientsOwnerState, actual: HostState): boolean =>
  s.tearingDown && actual.devices.size === 0 && actual.rules.length === 0 && Object.keys(actual.nftTables).length === 0 && actual.portMaps.length === 0;
