import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { withPrivateKey } from '../../src/cli/commands/client.ts';
import { mintUserToken, signJwt, verifyJwt } from '../../src/control-plane/jwt.ts';
import { ConnectClientResponseSchema, ListClientsResponseSchema } from '../../src/contract/api-clients.ts';
import { ControlPlaneClient, ControlPlaneError } from '../../src/daemon/control-plane-client.ts';
import { currentVersion, parseTopologyEvent } from '../../src/contract/catalogue.ts';
import { privateEntryPort, privatePortRange } from '../../src/contract/private-sessions.ts';
import { subjectFor } from '../../src/contract/subjects.ts';
import { topologySubjectRelay } from '../../src/contract/topology.events.ts';
import { evolveTopology, seedTopology } from '../../src/events/topology.fold.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { embed6 } from '../../src/kernel/ipv6.ts';
import { embedIpv4In6 } from '../../supabase/functions/_shared/addresses.ts';
import {
  allocateClientAddress,
  chooseNewExit,
  chooseRoute,
  clientCapacity,
  clientConfig,
  clientHostRange,
  DEFAULT_CLIENT_SETTINGS,
  entryClientAddress,
  isConfirmed,
  listItem,
  livenessSeconds,
  maySee,
  ownerOf,
  renderWgQuick,
  sessionTtl,
  type StoredSession,
} from '../../supabase/functions/_shared/clients.ts';
import { HttpError, parseRequest } from '../../supabase/functions/_shared/http.ts';
import { ClientReadyRequestSchema } from '../../src/contract/api-relays.ts';
import {
  ConnectClientRequestSchema,
  DisconnectClientRequestSchema,
  ListClientsRequestSchema,
  SwitchExitRequestSchema,
} from '../../src/contract/api-clients.ts';
import { authenticate, authorizeRelay, requireRole } from '../../supabase/functions/_shared/jwt.ts';
import { buildTopologyEvent, eventData, type EventSpec } from '../../supabase/functions/_shared/topology-events.ts';
import { kebab } from '../../src/contract/subjects.ts';
import type { ClientSession } from '../../src/contract/topology.events.ts';
import { candidate } from '../support/given.ts';
import { tempDir } from '../support/temp.ts';
import { cli } from '../support/cli.ts';

const key = (n: number, len = 32) => Buffer.alloc(len, n).toString('base64');
const SID = '3f2b8c1e-9d4a-4e6b-8f1c-2a7d5e9b0c11';

type Body = Record<string, unknown>;
// The functions' parsing of their requests: the contract's schemas, refusals as 400 invalid_request.
const parseConnectRequest = (b: Body) => parseRequest(ConnectClientRequestSchema, b);
const parseSwitchExitRequest = (b: Body) => parseRequest(SwitchExitRequestSchema, b);
const parseDisconnectRequest = (b: Body) => parseRequest(DisconnectClientRequestSchema, b);
const parseClientReadyRequest = (b: Body) => parseRequest(ClientReadyRequestSchema, b);
const parseListClientsRequest = (b: Body) => parseRequest(ListClientsRequestSchema, b);

/** The field of the 400 invalid_request a parser throws (undefined when it accepts). */
function fieldOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof HttpError) {
      expect([e.status, e.code]).toEqual([400, 'invalid_request']);
      expect(e.message.length).toBeGreaterThan(0);
      return e.field;
    }
    throw e;
  }
  return undefined;
}

describe('client request validation', () => {
  it('accepts connect requests with an exit or an exit region, an optional entry, lifetime and mode', () => {
    // No mode: the function decides (standard, or private with a community relay on the path).
    expect(parseConnectRequest({ publicKey: key(1), exit: 'relay-b' })).toEqual({ publicKey: key(1), exit: 'relay-b', community: false });
    expect(parseConnectRequest({ publicKey: key(1), exitRegion: 'eu-west', entry: 'relay-a', ttlSeconds: 3600, mode: 'private', community: true })).toEqual({
      publicKey: key(1),
      exitRegion: 'eu-west',
      entry: 'relay-a',
      ttlSeconds: 3600,
      mode: 'private',
      community: true,
    });
  });

  it.each<[string | undefined, Record<string, unknown>]>([
    ['publicKey', { exit: 'relay-b' }],
    ['publicKey', { publicKey: 'not base64!!', exit: 'relay-b' }],
    ['publicKey', { publicKey: key(1, 31), exit: 'relay-b' }],
    ['publicKey', { publicKey: key(1, 33), exit: 'relay-b' }],
    ['publicKey', { publicKey: 42, exit: 'relay-b' }],
    ['exit', { publicKey: key(1) }],
    ['exit', { publicKey: key(1), exit: 'Relay B' }],
    ['exit', { publicKey: key(1), exit: null }],
    ['exitRegion', { publicKey: key(1), exit: 'relay-b', exitRegion: 'eu' }],
    ['exitRegion', { publicKey: key(1), exitRegion: 'EU West' }],
    ['entry', { publicKey: key(1), exit: 'relay-b', entry: '-a' }],
    ['ttlSeconds', { publicKey: key(1), exit: 'relay-b', ttlSeconds: 59 }],
    ['mode', { publicKey: key(1), exit: 'relay-b', mode: 'secret' }],
    ['mode', { publicKey: key(1), exit: 'relay-b', mode: true }],
    ['ttlSeconds', { publicKey: key(1), exit: 'relay-b', ttlSeconds: 3600.5 }],
    ['ttlSeconds', { publicKey: key(1), exit: 'relay-b', ttlSeconds: '3600' }],
    ['privateKey', { publicKey: key(1), exit: 'relay-b', privateKey: key(2) }],
  ])('connect-client: 400 naming %s', (field, body) => {
    expect(fieldOf(() => parseConnectRequest(body))).toBe(field);
  });

  it('validates switch-exit, disconnect-client, client-ready and list-clients requests', () => {
    expect(parseSwitchExitRequest({ sessionId: SID.toUpperCase(), exit: 'relay-c' })).toEqual({ sessionId: SID, exit: 'relay-c' });
    expect(fieldOf(() => parseSwitchExitRequest({ sessionId: 'nope', exit: 'relay-c' }))).toBe('sessionId');
    expect(fieldOf(() => parseSwitchExitRequest({ sessionId: SID }))).toBe('exit');
    expect(parseDisconnectRequest({ sessionId: SID })).toEqual({ sessionId: SID, reason: 'disconnected' });
    expect(parseDisconnectRequest({ publicKey: key(1), reason: 'removed' })).toEqual({ publicKey: key(1), reason: 'removed' });
    expect(fieldOf(() => parseDisconnectRequest({}))).toBe('sessionId');
    expect(fieldOf(() => parseDisconnectRequest({ sessionId: SID, publicKey: key(1) }))).toBe('publicKey');
    expect(fieldOf(() => parseDisconnectRequest({ sessionId: SID, reason: 'expired' }))).toBe('reason');
    expect(parseClientReadyRequest({ relayId: 'relay-a', sessionId: SID, exitId: 'relay-b' })).toEqual({
      relayId: 'relay-a',
      sessionId: SID,
      exitId: 'relay-b',
    });
    expect(fieldOf(() => parseClientReadyRequest({ relayId: 'relay-a', sessionId: SID }))).toBe('exitId');
    expect(parseListClientsRequest({})).toEqual({ includeClosed: false });
    expect(parseListClientsRequest({ entry: 'relay-a', includeClosed: true })).toEqual({ entry: 'relay-a', includeClosed: true });
    expect(fieldOf(() => parseListClientsRequest({ includeClosed: 1 }))).toBe('includeClosed');
    expect(fieldOf(() => parseListClientsRequest({ owner: 'x' }))).toBe('owner');
  });

  it('bounds the lifetime by the settings, and derives the liveness window from the heartbeat', () => {
    expect(sessionTtl(undefined, DEFAULT_CLIENT_SETTINGS)).toBe(86400);
    expect(sessionTtl(2592000, DEFAULT_CLIENT_SETTINGS)).toBe(2592000);
    expect(fieldOf(() => sessionTtl(2592001, DEFAULT_CLIENT_SETTINGS))).toBe('ttlSeconds');
    expect(livenessSeconds({ relayLivenessSeconds: null }, 10)).toBe(30);
    expect(livenessSeconds({ relayLivenessSeconds: 7 }, 10)).toBe(7);
  });
});

describe("client addresses from the entry's pool", () => {
  it('never hands out the network, broadcast or first address', () => {
    expect(clientHostRange('100.96.0.0/29')).toEqual({ first: 0x64600002, last: 0x64600006 });
    expect(entryClientAddress('100.96.0.0/29')).toBe('100.96.0.1');
    expect(clientCapacity('100.96.0.0/29')).toBe(5);
    expect(clientCapacity('100.96.0.0/22')).toBe(1021);
    expect(clientCapacity('100.96.0.0/30')).toBe(1);
    expect(clientHostRange('100.96.0.0/31')).toBeNull();
    expect(clientHostRange('100.96.0.1/29')).toBeNull();
    expect(allocateClientAddress('100.96.0.0/29', [])).toBe('100.96.0.2');
  });

  it('takes the lowest free host, reuses freed ones and says when the pool is full', () => {
    const pool = '100.96.0.8/29';
    const taken: string[] = [];
    for (let i = 0; i < 5; i++) {
      const a = allocateClientAddress(pool, taken)!;
      taken.push(a);
    }
    expect(taken).toEqual(['100.96.0.10', '100.96.0.11', '100.96.0.12', '100.96.0.13', '100.96.0.14']);
    expect(allocateClientAddress(pool, taken)).toBeNull();
    expect(
      allocateClientAddress(
        pool,
        taken.filter((a) => a !== '100.96.0.12'),
      ),
    ).toBe('100.96.0.12');
    // Addresses outside the pool (or with a /32) do not confuse it.
    expect(allocateClientAddress(pool, ['100.96.0.10/32', '100.96.0.2', 'garbage'])).toBe('100.96.0.11');
  });
});

const cand = candidate;

describe('choosing the entry and the exit', () => {
  const relays = [
    cand('relay-a', { entrySessions: 2, exitSessions: 1 }),
    cand('relay-b', { entrySessions: 1, exitSessions: 3 }),
    cand('relay-c', { region: 'us', entrySessions: 1 }),
    cand('relay-d', { region: 'us', live: false }),
  ];
  const route = (req: Parameters<typeof chooseRoute>[0], rs = relays) => {
    const r = chooseRoute(req, rs);
    return r.ok ? [r.value.entry.id, r.value.exit.id] : [r.refusal.status, r.refusal.error, r.refusal.field];
  };

  it('takes what is given and picks the rest by load (ties by id)', () => {
    expect(route({ exit: 'relay-c', entry: 'relay-a' })).toEqual(['relay-a', 'relay-c']);
    // Entry: fewest sessions entering among the live relays but the exit (relay-b and relay-c tie at 1).
    expect(route({ exit: 'relay-a' })).toEqual(['relay-b', 'relay-a']);
    // Exit of a region: its live relays but the entry, fewest sessions leaving (relay-d is down).
    expect(route({ exitRegion: 'us' })).toEqual(['relay-b', 'relay-c']);
    expect(route({ exitRegion: 'eu' })).toEqual(['relay-b', 'relay-a']);
    expect(route({ exitRegion: 'eu', entry: 'relay-a' })).toEqual(['relay-a', 'relay-b']);
  });

  it('refuses unknown, down and one-hop choices with the field to blame', () => {
    expect(route({ exit: 'relay-z' })).toEqual([404, 'unknown_relay', 'exit']);
    expect(route({ exit: 'relay-a', entry: 'relay-z' })).toEqual([404, 'unknown_relay', 'entry']);
    expect(route({ exit: 'relay-d' })).toEqual([409, 'relay_unavailable', 'exit']);
    expect(route({ exit: 'relay-a', entry: 'relay-d' })).toEqual([409, 'relay_unavailable', 'entry']);
    expect(route({ exit: 'relay-a', entry: 'relay-a' })).toEqual([422, 'entry_is_exit', 'entry']);
    expect(route({ exitRegion: 'us', entry: 'relay-c' })).toEqual([422, 'entry_is_exit', 'exitRegion']);
    expect(route({ exitRegion: 'ap' })).toEqual([404, 'no_relay_in_region', 'exitRegion']);
    expect(
      route(
        { exitRegion: 'us' },
        relays.filter((r) => r.id !== 'relay-c'),
      ),
    ).toEqual([404, 'no_relay_in_region', 'exitRegion']);
    expect(route({ exit: 'relay-a' }, [relays[0]!, relays[3]!])).toEqual([409, 'relay_unavailable', 'entry']);
    expect(route({ exit: 'relay-a' }, [relays[0]!])).toEqual([409, 'relay_unavailable', 'entry']);
  });

  it('switches exits: the same exit (or a region holding it) is unchanged, others are checked like connect', () => {
    const s = { entryId: 'relay-a', exitId: 'relay-b' };
    const sw = (want: Parameters<typeof chooseNewExit>[1]) => {
      const r = chooseNewExit(s, want, relays);
      return r.ok ? [r.value.exit?.id, r.value.unchanged] : [r.refusal.status, r.refusal.error, r.refusal.field];
    };
    expect(sw({ exit: 'relay-b' })).toEqual(['relay-b', true]);
    expect(sw({ exitRegion: 'eu' })).toEqual(['relay-b', true]);
    expect(sw({ exit: 'relay-c' })).toEqual(['relay-c', false]);
    expect(sw({ exitRegion: 'us' })).toEqual(['relay-c', false]);
    expect(sw({ exit: 'relay-a' })).toEqual([422, 'entry_is_exit', 'exit']);
    expect(sw({ exit: 'relay-d' })).toEqual([409, 'relay_unavailable', 'exit']);
    expect(sw({ exit: 'relay-z' })).toEqual([404, 'unknown_relay', 'exit']);
    expect(sw({ exitRegion: 'ap' })).toEqual([404, 'no_relay_in_region', 'exitRegion']);
  });
});

describe('what a client gets', () => {
  it('renders a wg-quick file with a private-key placeholder; the CLI fills it in', () => {
    const c = clientConfig(
      { address: '100.96.0.2', mode: 'standard' },
      { entry: { publicKey: key(1), endpoint: '[2001:db8::1]:51820', clientPool: '100.96.0.0/22' }, exit: { publicKey: key(2) } },
      { dns: ['9.9.9.9', '2620:fe::fe'], mtu: 1380, keepaliveSeconds: 25, prefix6: 'fd64::/96' },
    );
    expect(c).toEqual({
      address: '100.96.0.2/32',
      address6: 'fd64::6460:2/128',
      dns: ['9.9.9.9', '2620:fe::fe'],
      mtu: 1380,
      keepaliveSeconds: 25,
      peer: { publicKey: key(1), endpoint: '[2001:db8::1]:51820', allowedIps: ['0.0.0.0/0', '::/0'] },
    });
    const text = renderWgQuick(c);
    expect(text).toBe(
      `[Interface]\n# PrivateKey = <your private key>\nAddress = 100.96.0.2/32, fd64::6460:2/128\nDNS = 9.9.9.9, 2620:fe::fe\nMTU = 1380\n\n` +
        `[Peer]\nPublicKey = ${key(1)}\nEndpoint = [2001:db8::1]:51820\nAllowedIPs = 0.0.0.0/0, ::/0\nPersistentKeepalive = 25\n`,
    );
    expect(withPrivateKey(text, key(9))).toContain(`\nPrivateKey = ${key(9)}\nAddress`);
    const bare = renderWgQuick(
      clientConfig(
        { address: '100.96.0.3', mode: 'standard' },
        { entry: { publicKey: key(1), endpoint: 'relay.example.net:51820', clientPool: '100.96.0.0/22' }, exit: { publicKey: key(2) } },
        { dns: [], mtu: 1420, keepaliveSeconds: 0, prefix6: null },
      ),
    );
    expect(bare).not.toMatch(/DNS|PersistentKeepalive/);
    expect(bare).toContain('Endpoint = relay.example.net:51820');
    // Without client IPv6 the client still routes IPv6 into the tunnel (where it ends), never around it.
    expect(bare).toContain('Address = 100.96.0.3/32\n');
    expect(bare).toContain('AllowedIPs = 0.0.0.0/0, ::/0');
  });

  it('gives a private client its exit as peer, at the entry on the port of its address, with room for the second WireGuard layer', () => {
    const entry = { publicKey: key(1), endpoint: '198.51.100.1:51820', clientPool: '100.96.4.0/22' };
    const settings = { dns: [], mtu: 1420, keepaliveSeconds: 25, prefix6: null };
    const c = clientConfig({ address: '100.96.4.7', mode: 'private' }, { entry, exit: { publicKey: key(2) } }, settings);
    // 1420 - (20 IPv4 + 8 UDP + 32 WireGuard); port 51820 - host offset 7.
    expect(c).toMatchObject({ address: '100.96.4.7/32', mtu: 1360, peer: { publicKey: key(2), endpoint: '198.51.100.1:51813' } });
    const named = clientConfig(
      { address: '100.96.7.254', mode: 'private' },
      { entry: { ...entry, endpoint: 'relay.example.net:51820' }, exit: { publicKey: key(2) } },
      settings,
    );
    expect(named.peer.endpoint).toBe('relay.example.net:50798');
    expect(privateEntryPort({ ...entry, endpoint: '[2001:db8::1]:51820' }, '100.96.4.7')).toEqual({ error: expect.stringMatching(/IPv6/) });
    // The host's well-known ports stay its own: a relay on 443 takes no private sessions; one on 2000, those that fit above 1023.
    expect(privateEntryPort({ ...entry, endpoint: '198.51.100.1:443' }, '100.96.4.7')).toEqual({ error: expect.stringMatching(/no room above 1023/) });
    expect(privateEntryPort({ ...entry, endpoint: '198.51.100.1:2000' }, '100.96.4.7')).toEqual({ port: 1993 });
    expect(privateEntryPort({ ...entry, endpoint: '198.51.100.1:2000' }, '100.96.7.250')).toEqual({ error: expect.stringMatching(/no room above 1023/) });
    expect(privatePortRange(2000, '100.96.4.0/22')).toEqual([1024, 1998]);
    expect(privatePortRange(51820, '100.96.4.0/22')).toEqual([50798, 51818]);
    expect(privatePortRange(443, '100.96.4.0/22')).toBeNull();
    expect(privateEntryPort(entry, '100.96.4.1')).toEqual({ error: expect.stringMatching(/not a client address/) });
    expect(privateEntryPort(entry, '100.96.8.2')).toEqual({ error: expect.stringMatching(/not a client address/) });
    expect(() =>
      clientConfig({ address: '100.96.4.7', mode: 'private' }, { entry: { ...entry, endpoint: '[2001:db8::1]:51820' }, exit: { publicKey: key(2) } }, settings),
    ).toThrow(/IPv6/);
  });

  it('embeds the IPv4 address in the /96 exactly as the relays do', () => {
    for (const [prefix, v4] of [
      ['fd64::/96', '100.96.4.7'],
      ['2001:db8:0:1::/96', '100.127.255.254'],
      ['fd00:0:0:0:0:0::/96', '100.96.0.0'],
      ['fd64:1:2:3:4:5::/96', '0.0.0.1'],
    ] as const) {
      expect(embedIpv4In6(prefix, v4)).toBe(embed6(prefix, v4));
    }
    expect(embedIpv4In6('fd64::/96', '100.96.4.7')).toBe('fd64::6460:407');
    expect(() => embedIpv4In6('fd64::/64', '100.96.4.7')).toThrow(/\/96/);
  });
});

/** One session as the functions record it (and, with its bookkeeping, as the store returns it). */
const SESSION: ClientSession = {
  id: SID,
  entryId: 'relay-a',
  exitId: 'relay-b',
  publicKey: key(5),
  address: '100.96.0.2',
  openedAt: '2026-11-26T10:00:00.000Z',
  expiresAt: '2026-11-27T10:00:00.000Z',
  mode: 'standard',
};

describe('who sees a session', () => {
  const s: StoredSession = {
    ...SESSION,
    owner: 'alice',
    status: 'open',
    confirmedExitId: 'relay-b',
    confirmedAt: '2026-11-26T10:00:01.000Z',
    exitConfirmedId: null,
    closedAt: null,
    closeReason: null,
    expired: false,
    community: false,
  };
  it('the service role all, a user its own, a relay those that concern it', () => {
    const relay = (relayId: string) => ({ role: 'relay' as const, relayId, jti: '6f1c1e2a-4b7d-4c1e-9a51-3d2f0b8e7c11' });
    expect(maySee(relay('relay-b'), { ...s, mode: 'private' })).toBe(true);
    expect(maySee(relay('relay-c'), { ...s, mode: 'private' })).toBe(false);
    expect(maySee({ role: 'service_role' }, s)).toBe(true);
    expect(maySee({ role: 'user', userId: 'alice', anonymous: false, operator: false }, s)).toBe(true);
    expect(maySee({ role: 'user', userId: 'bob', anonymous: false, operator: false }, s)).toBe(false);
    expect(maySee({ role: 'relay', relayId: 'relay-a', jti: '6f1c1e2a-4b7d-4c1e-9a51-3d2f0b8e7c11' }, s)).toBe(true);
    expect(maySee({ role: 'relay', relayId: 'relay-b', jti: '6f1c1e2a-4b7d-4c1e-9a51-3d2f0b8e7c11' }, s)).toBe(false);
    expect(maySee({ role: 'service_role' }, { ...s, owner: null })).toBe(true);
    expect(maySee({ role: 'user', userId: 'alice', anonymous: false, operator: false }, { ...s, owner: null })).toBe(false);
    expect(ownerOf({ role: 'user', userId: 'alice', anonymous: false, operator: false })).toBe('alice');
    expect(ownerOf({ role: 'service_role' })).toBeNull();
  });
  it('lists a session with its bookkeeping, in the shape the client schema takes', () => {
    const item = listItem(s, { role: 'service_role' });
    expect(item).toMatchObject({ confirmed: true, status: 'open', owner: 'alice', closedAt: null, closeReason: null });
    expect(listItem(s, { role: 'user', userId: 'alice', anonymous: false, operator: false }).owner).toBe('alice');
    expect(listItem({ ...s, exitId: 'relay-c' }, { role: 'service_role' }).confirmed).toBe(false);
    // A private session is confirmed once its exit confirmed too, for its current exit.
    const p: StoredSession = { ...s, mode: 'private' };
    expect(isConfirmed(p)).toBe(false);
    expect(isConfirmed({ ...p, exitConfirmedId: 'relay-c' })).toBe(false);
    expect(listItem({ ...p, exitConfirmedId: 'relay-b' }, { role: 'service_role' })).toMatchObject({ mode: 'private', confirmed: true });
    expect(ListClientsResponseSchema.parse({ sessions: [item] }).sessions[0]).toEqual(item);
  });

  it('never shows a relay token who owns a session (no user id in its list)', () => {
    const item = listItem(s, { role: 'relay', relayId: 'relay-a', jti: '6f1c1e2a-4b7d-4c1e-9a51-3d2f0b8e7c11' });
    expect('owner' in item).toBe(false);
    expect(JSON.stringify(item)).not.toContain('alice');
    expect(item).toMatchObject({ id: SID, entryId: 'relay-a', confirmed: true, status: 'open' });
    expect(ListClientsResponseSchema.parse({ sessions: [item] }).sessions[0]).toEqual(item);
  });
});

describe('client session events built by the functions', () => {
  const session = SESSION;
  const specs: EventSpec[] = [
    { type: 'ClientSessionOpened', session },
    { type: 'ClientSessionExitChanged', session: { ...session, exitId: 'relay-c' }, previousExitId: 'relay-b' },
    { type: 'ClientSessionClosed', sessionId: SID, entryId: 'relay-a', reason: 'not-confirmed' },
  ];

  it.each(specs.map((s, i) => [s.type, s, i + 10] as const))('%s parses as the relays parse it, on the entry relay subject', (type, spec, revision) => {
    const built = buildTopologyEvent(eventData(spec, revision, null), { id: crypto.randomUUID(), time: '2026-11-26T10:00:00.5Z', causationId: 'req-7' });
    const parsed = parseTopologyEvent(JSON.parse(built.payload));
    if (!parsed.ok) throw new Error(parsed.error);
    expect(parsed.event).toMatchObject({
      type,
      version: currentVersion(type),
      source: 'control-plane',
      causationId: 'req-7',
      correlationId: null,
      data: { revision },
    });
    expect(topologySubjectRelay(parsed.event)).toBe('relay-a');
    expect(built.subject).toBe(subjectFor(type, 'relay-a'));
    expect(built.subject).toBe(`relaynet.topology.relay-a.${kebab(type)}`);
    expect(built.revision).toBe(revision);
  });

  it('folds into the view the relays keep: opened, steered, closed', () => {
    let view = seedTopology(9, []);
    const events = specs.map((s, i) => {
      const p = parseTopologyEvent(
        JSON.parse(buildTopologyEvent(eventData(s, 10 + i, null), { id: crypto.randomUUID(), time: new Date(), causationId: null }).payload),
      );
      if (!p.ok) throw new Error(p.error);
      return p.event;
    });
    view = evolveTopology(view, events[0]!);
    expect(view.sessions).toEqual({ [SID]: session });
    view = evolveTopology(view, events[1]!);
    expect(view.sessions[SID]!.exitId).toBe('relay-c');
    view = evolveTopology(view, events[2]!);
    expect(view.sessions).toEqual({});
    expect(view.revision).toBe(12);
  });

  it('refuses to build RelayAdmitted without the relay record', () => {
    expect(() => eventData({ type: 'RelayAdmitted' }, 1, null)).toThrow(/needs the relay record/);
  });
});

describe('user tokens', () => {
  const SECRET = 'a-test-secret-that-is-long-enough-for-hs256';
  const NOW = 1_800_000_000;
  const bearer = async (claims: Record<string, unknown>) => `Bearer ${await signJwt(claims, SECRET)}`;

  it('are Supabase user JWTs (role authenticated, sub, exp) and become the user principal', async () => {
    const t = await mintUserToken('alice', 600, SECRET, NOW);
    expect(await verifyJwt(t, SECRET, NOW)).toEqual({
      ok: true,
      claims: { role: 'authenticated', aud: 'authenticated', sub: 'alice', iss: 'relay-core', iat: NOW, exp: NOW + 600 },
    });
    expect(await authenticate(`Bearer ${t}`, SECRET, NOW, 'relay-core')).toEqual({ role: 'user', userId: 'alice', anonymous: false, operator: false });
    // An operator: app_metadata.relaynet_role "operator" (never an anonymous user; user_metadata, which users set themselves, counts for nothing).
    const op = await mintUserToken('olga', 600, SECRET, NOW, { operator: true });
    expect(await authenticate(`Bearer ${op}`, SECRET, NOW, 'relay-core')).toEqual({ role: 'user', userId: 'olga', anonymous: false, operator: true });
    const base = { role: 'authenticated', aud: 'authenticated', sub: 'olga', iss: 'relay-core', exp: NOW + 60 };
    expect(await authenticate(await bearer({ ...base, user_metadata: { relaynet_role: 'operator' } }), SECRET, NOW, 'relay-core')).toMatchObject({
      operator: false,
    });
    expect(
      await authenticate(await bearer({ ...base, is_anonymous: true, app_metadata: { relaynet_role: 'operator' } }), SECRET, NOW, 'relay-core'),
    ).toMatchObject({ operator: false });
    for (const app_metadata of [null, 'operator', ['operator']])
      await expect(authenticate(await bearer({ ...base, app_metadata }), SECRET, NOW, 'relay-core')).rejects.toMatchObject({ status: 401 });
    for (const claims of [
      { role: 'authenticated', sub: 'alice' },
      { role: 'authenticated', exp: NOW + 5 },
      { role: 'authenticated', sub: '', exp: NOW + 5 },
      { role: 'authenticated', sub: 7, exp: NOW + 5 },
    ]) {
      await expect(authenticate(await bearer(claims), SECRET, NOW, 'relay-core')).rejects.toMatchObject({ status: 401, code: 'unauthorized' });
    }
    expect(() => mintUserToken('', 600, SECRET)).toThrow();
  });

  it('may not act for relays, and each function names the roles it takes', () => {
    const user = { role: 'user', userId: 'alice', anonymous: false, operator: false } as const;
    expect(() => authorizeRelay(user, 'relay-a')).toThrow(
      expect.objectContaining({ status: 403, code: 'forbidden', message: expect.stringMatching(/user token cannot act for a relay/) }),
    );
    expect(() =>
      requireRole({ role: 'relay', relayId: 'relay-a', jti: '6f1c1e2a-4b7d-4c1e-9a51-3d2f0b8e7c11' }, ['service_role', 'user'], 'connect-client'),
    ).toThrow(expect.objectContaining({ status: 403, code: 'forbidden', message: 'connect-client takes the service role or user tokens, not a relay token' }));
    expect(() => requireRole(user, ['service_role', 'relay'], 'client-ready')).toThrow(expect.objectContaining({ status: 403 }));
    expect(() => requireRole(user, ['service_role', 'user'], 'connect-client')).not.toThrow();
  });
});

describe('relay-core token mint --role user', () => {
  it('mints a user token, refuses mixed options, and says so in its help', async () => {
    const tmp = tempDir('user-token');
    try {
      const secret = 'user-secret-user-secret-user-secret-123456';
      const file = `${tmp.dir}/secret`;
      (await import('node:fs')).writeFileSync(file, secret);
      const r = await cli('token', 'mint', '--role', 'user', '--sub', 'alice', '--ttl', '1h', '--jwt-secret-file', file);
      expect(r.code, r.err).toBe(0);
      const check = await verifyJwt(r.out.trim(), secret);
      expect(check).toMatchObject({ ok: true, claims: { role: 'authenticated', sub: 'alice' } });
      if (check.ok) expect((check.claims.exp as number) - (check.claims.iat as number)).toBe(3600);
      for (const [argv, re] of [
        [['--role', 'user'], /missing --sub/],
        [['--role', 'user', '--sub', 'a', '--relay-id', 'relay-a'], /--relay-id is for relay tokens/],
        [['--relay-id', 'relay-a', '--sub', 'a'], /--sub is for user tokens/],
        [['--role', 'admin', '--sub', 'a'], /--role must be relay or user/],
      ] as const) {
        const bad = await cli('token', 'mint', ...argv, '--jwt-secret-file', file);
        expect([bad.code, bad.out]).toEqual([2, '']);
        expect(bad.err).toMatch(re);
      }
      const help = await cli('token', 'mint', '--help');
      expect(help.code).toBe(0);
      for (const s of ['--role relay|user', '--sub ID', 'authenticated', '--relay-id']) expect(help.out).toContain(s);
    } finally {
      tmp.remove();
    }
  });
});

describe('control-plane client: client sessions', () => {
  const log = rootLogger({ test: 'cp-client-sessions' }, 'silent');
  let servers: Server[] = [];
  afterEach(() => {
    for (const s of servers) s.close();
    servers = [];
  });
  async function gateway(answer: (path: string, body: unknown) => { status: number; body: unknown }) {
    const hits: { path: string; body: unknown }[] = [];
    const server = createServer((req, res) => {
      let data = '';
      req.on('data', (c: Buffer) => (data += c.toString()));
      req.on('end', () => {
        const body = data ? JSON.parse(data) : null;
        hits.push({ path: req.url ?? '', body });
        const a = answer(req.url ?? '', body);
        res.writeHead(a.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(a.body));
      });
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits };
  }
  const answer = {
    session: SESSION,
    entry: { id: 'relay-a', name: 'A', region: 'eu', publicKey: key(1), endpoint: '198.51.100.1:51820' },
    exit: { id: 'relay-b', name: 'B', region: 'us' },
    config: {
      address: '100.96.0.2/32',
      dns: ['9.9.9.9'],
      mtu: 1420,
      keepaliveSeconds: 25,
      peer: { publicKey: key(1), endpoint: '198.51.100.1:51820', allowedIps: ['0.0.0.0/0'] },
    },
    wgQuick: '[Interface]\n',
  };

  it('connects once (never re-POSTs) and surfaces a 504 entry_not_ready with its code and message', async () => {
    const g = await gateway(() => ({ status: 504, body: { error: 'entry_not_ready', message: 'entry relay relay-a did not confirm; nothing was kept' } }));
    const c = new ControlPlaneClient({ url: g.url, key: 'k', logger: log, retry: { attempts: 5, baseMs: 1, maxMs: 2 } });
    const err = await c.connectClient({ publicKey: key(5), exit: 'relay-b' }).catch((e) => e);
    expect(err).toBeInstanceOf(ControlPlaneError);
    expect(err).toMatchObject({ status: 504, code: 'entry_not_ready' });
    expect(err.message).toBe('connect-client: 504 entry_not_ready: entry relay relay-a did not confirm; nothing was kept');
    expect(g.hits).toHaveLength(1);
    expect(g.hits[0]).toEqual({ path: '/functions/v1/connect-client', body: { publicKey: key(5), exit: 'relay-b' } });
  });

  it('parses the answers and reports refusals with code and field', async () => {
    const g = await gateway((path, body) => {
      if (path.endsWith('/connect-client')) return { status: 200, body: answer };
      if (path.endsWith('/switch-exit')) return { status: 409, body: { error: 'relay_unavailable', field: 'exit', message: 'exit relay relay-c is down' } };
      if (path.endsWith('/client-ready')) return { status: 200, body: { ...(body as object), confirmed: true } };
      if (path.endsWith('/disconnect-client')) return { status: 200, body: { sessionId: SID, revision: 9 } };
      return { status: 200, body: { sessions: [{ ...answer.session, status: 'open', confirmed: true, owner: null, closedAt: null, closeReason: null }] } };
    });
    const c = new ControlPlaneClient({ url: g.url, key: 'k', logger: log });
    expect(await c.connectClient({ publicKey: key(5), exitRegion: 'us', entry: 'relay-a', ttlSeconds: 600 })).toEqual(
      ConnectClientResponseSchema.parse(answer),
    );
    await expect(c.switchExit({ sessionId: SID, exit: 'relay-c' })).rejects.toMatchObject({
      kind: 'refused',
      status: 409,
      code: 'relay_unavailable',
      field: 'exit',
    });
    expect(await c.clientReady('relay-a', SID, 'relay-b')).toMatchObject({ confirmed: true });
    expect(g.hits.find((h) => h.path.endsWith('/client-ready'))!.body).toEqual({ relayId: 'relay-a', sessionId: SID, exitId: 'relay-b' });
    expect(await c.disconnectClient({ publicKey: key(5) })).toEqual({ sessionId: SID, revision: 9 });
    expect((await c.listClients({ includeClosed: true })).sessions[0]).toMatchObject({ id: SID, confirmed: true });
  });
});
