import type { ClientSession, RelayRecord } from '../../contract/topology.events.ts';
import { sessionsOfRelay } from '../../events/topology.fold.ts';
import { clientDevice, clientScope, desiredClientState, exitTable, releasedClientState, type ClientOptions } from '../clients.ts';
import type { HostState } from '../host-state.ts';
import { embed6 } from '../ipv6.ts';
import { meshIndex } from '../mesh.ts';
import type { KernelOwner, OwnerState } from './owner.ts';

/**
 * The clients owner (the clients actor, src/actors/clients.machine.ts): the client part of the host
 * (src/kernel/clients.ts) for the open sessions entering at this relay but the expired ones, or,
 * tearing down, nothing but the client sysctls as they were before the relay set them.
 */

export interface ClientsOwnerState extends OwnerState {
  self: RelayRecord | null;
  /** Every relay of the view, by id (the view's own Map). */
  relays: ReadonlyMap<string, RelayRecord>;
  /** Open sessions entering here, by id (from the view). */
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

/** What the kernel reached for one session: its peer is programmed, and the exit its rules steer to. */
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

/** Which relay each exit table leads to; built once per relays map (views replace it, never change it in place) and base. */
const exitTables = new WeakMap<ReadonlyMap<string, RelayRecord>, { base: number; exits: Map<number, string> }>();
function exitsByTable(relays: ReadonlyMap<string, RelayRecord>, exitTableBase: number): Map<number, string> {
  const known = exitTables.get(relays);
  if (known?.base === exitTableBase) return known.exits;
  const exits = new Map([...relays.values()].map((r) => [exitTable(exitTableBase, meshIndex(r.meshAddress)), r.id]));
  exitTables.set(relays, { base: exitTableBase, exits });
  return exits;
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
  const cidrs = [`${session.address}/32`, ...(clientPrefix6 ? [`${embed6(clientPrefix6, session.address)}/128`] : [])];
  const peer =
    actual.devices
      .get(device)
      ?.peers.some((p) => p.publicKey === session.publicKey && p.allowedIps.length === cidrs.length && cidrs.every((c) => p.allowedIps.includes(c))) ?? false;
  const tables = cidrs.map((c) => actual.rules.find((r) => r.from === c && r.iif === device && r.table !== null)?.table ?? null);
  const table = tables[0] ?? null;
  return { peer, exitId: table !== null && tables.every((t) => t === table) ? (exits.get(table) ?? null) : null };
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
    const device = clientDevice(o.clients.wgPrefix, meshIndex(s.self!.meshAddress));
    if (sessions.length === 0) return { members: [], tornDown: clientsTornDown(s, actual) };
    const exits = exitsByTable(s.relays, o.clients.exitTableBase);
    const openKeys = new Set(Object.values(s.sessions).map((x) => x.publicKey));
    return {
      members: sessions.map((session) => {
        const r = sessionReached(actual, device, session, exits, o.clients.clientPrefix6);
        return { peer: r.peer && !(!s.sessions[session.id] && openKeys.has(session.publicKey)), exitId: r.exitId };
      }),
      tornDown: clientsTornDown(s, actual),
    };
  },
};

const clientsTornDown = (s: ClientsOwnerState, actual: HostState): boolean =>
  s.tearingDown && actual.devices.size === 0 && actual.rules.length === 0 && Object.keys(actual.nftTables).length === 0;
