import { describe, expect, it } from 'vitest';
import type { RelayStanding } from '../../src/contract/api-community.ts';
import { EnrollRelayRequestSchema, SetRelayStateRequestSchema } from '../../src/contract/api-community.ts';
import { ConnectClientRequestSchema } from '../../src/contract/api-clients.ts';
import { parseTopologyEvent } from '../../src/contract/catalogue.ts';
import { evolveTopology, seedTopology } from '../../src/events/topology.fold.ts';
import { capacityWeights, chooseNewExit, chooseRoute, sessionMode } from '../../supabase/functions/_shared/clients.ts';
import { carriesClients, decideEnroll, decideSetState, stateAfterMeasurement, standingOrCore } from '../../supabase/functions/_shared/community.ts';
import { parseRequest } from '../../supabase/functions/_shared/http.ts';
import { eventData } from '../../supabase/functions/_shared/topology-events.ts';
import { candidate, relay } from '../support/given.ts';

/** Community relays: enrollment, standing, and which sessions they may carry (docs/proof-of-bandwidth.md, "Community relays"). */
const community = (relayId: string, state: RelayStanding['state'], operatorId = 'olga'): RelayStanding => ({
  relayId,
  class: 'community',
  state,
  operatorId,
  reason: null,
});

describe('enrolling a community relay', () => {
  it('records a new relay id in probation, gives its operator a new token for it again, and refuses the rest', () => {
    const d = decideEnroll('relay-c1', 'olga', null, false, 0, 16);
    expect(d).toMatchObject({ action: 'enroll', standing: { ...community('relay-c1', 'probation'), reason: 'enrolled' } });
    expect(d.action === 'enroll' && d.events).toEqual([
      { type: 'RelayStateChanged', relayId: 'relay-c1', class: 'community', state: 'probation', previousState: null, reason: 'enrolled' },
    ]);
    // Its own relay again: a new token, the state as it is.
    expect(decideEnroll('relay-c1', 'olga', community('relay-c1', 'active'), true, 1, 16)).toMatchObject({ action: 'reissue', standing: { state: 'active' } });
    // A core relay's id, another operator's relay, a core relay with a standing row: 409 relay_exists.
    for (const [stored, known] of [
      [null, true],
      [community('relay-c1', 'probation', 'mallory'), true],
      [{ ...community('relay-c1', 'suspended'), class: 'core', operatorId: null }, true],
    ] as const)
      expect(decideEnroll('relay-c1', 'olga', stored, known, 0, 16)).toMatchObject({ action: 'reject', refusal: { status: 409, error: 'relay_exists' } });
    expect(decideEnroll('relay-c9', 'olga', null, false, 16, 16)).toMatchObject({ action: 'reject', refusal: { status: 409, error: 'operator_limit' } });
  });

  it('checks its requests: a relay id, a token lifetime of 60 s to a year', () => {
    expect(parseRequest(EnrollRelayRequestSchema, { relayId: 'relay-c1' })).toEqual({ relayId: 'relay-c1', ttlSeconds: 30 * 24 * 3600 });
    for (const body of [
      {},
      { relayId: 'Relay C' },
      { relayId: 'relay-c1', ttlSeconds: 5 },
      { relayId: 'relay-c1', ttlSeconds: 1e9 },
      { relayId: 'relay-c1', extra: 1 },
    ])
      expect(() => parseRequest(EnrollRelayRequestSchema, body)).toThrow();
    expect(parseRequest(SetRelayStateRequestSchema, { relayId: 'relay-c1', state: 'suspended' })).toEqual({
      relayId: 'relay-c1',
      state: 'suspended',
      reason: '',
    });
    for (const body of [
      { relayId: 'relay-c1', state: 'probation' },
      { relayId: 'relay-c1', state: 'active', reason: 'a\nb' },
    ])
      expect(() => parseRequest(SetRelayStateRequestSchema, body)).toThrow();
  });
});

describe('a community relay’s standing', () => {
  const MIN = 1_250_000;
  it('is made active by a measurement of at least the minimum, rejected by less or by a rejection; nothing else moves it', () => {
    expect(stateAfterMeasurement(community('c', 'probation'), 'measured', 2_500_000, MIN)).toEqual({ state: 'active', reason: 'measured 20.0 Mbit/s' });
    expect(stateAfterMeasurement(community('c', 'probation'), 'measured', 1_000_000, MIN)).toMatchObject({ state: 'rejected' });
    expect(stateAfterMeasurement(community('c', 'probation'), 'rejected', null, MIN)).toMatchObject({ state: 'rejected' });
    expect(stateAfterMeasurement(community('c', 'probation'), 'incomplete', null, MIN)).toBeNull();
    // A rejected relay measured again may become active; an active or suspended one is not moved by measurements.
    expect(stateAfterMeasurement(community('c', 'rejected'), 'measured', 2_500_000, MIN)).toMatchObject({ state: 'active' });
    expect(stateAfterMeasurement(community('c', 'active'), 'rejected', null, MIN)).toBeNull();
    expect(stateAfterMeasurement(community('c', 'suspended'), 'measured', 9e9, MIN)).toBeNull();
  });

  it('is suspended and resumed by the network’s operator: resumed to active with a capacity (or as a core relay), else to probation', () => {
    const s = decideSetState('c', 'suspended', community('c', 'active'), true, 2_500_000, MIN, '');
    expect(s).toMatchObject({ action: 'change', previousState: 'active', closeSessions: true, standing: { state: 'suspended', reason: 'suspended' } });
    expect(decideSetState('c', 'active', community('c', 'suspended'), true, 2_500_000, MIN, 'ok')).toMatchObject({
      action: 'change',
      standing: { state: 'active', reason: 'ok' },
      closeSessions: false,
    });
    expect(decideSetState('c', 'active', community('c', 'suspended'), true, null, MIN, '')).toMatchObject({ standing: { state: 'probation' } });
    // A core relay (no row) can be suspended too, and comes back active.
    const core = decideSetState('relay-1', 'suspended', null, true, null, MIN, 'abuse');
    expect(core).toMatchObject({ action: 'change', standing: { class: 'core', state: 'suspended', operatorId: null } });
    expect(decideSetState('relay-1', 'active', { ...standingOrCore('relay-1', null), state: 'suspended' }, true, null, MIN, '')).toMatchObject({
      standing: { state: 'active' },
    });
    // Resuming a relay that is not suspended, or suspending a suspended one: unchanged. Unknown: 404.
    expect(decideSetState('c', 'active', community('c', 'probation'), true, null, MIN, '')).toMatchObject({ action: 'unchanged' });
    expect(decideSetState('c', 'suspended', community('c', 'suspended'), true, null, MIN, '')).toMatchObject({ action: 'unchanged' });
    expect(decideSetState('z', 'suspended', null, false, null, MIN, '')).toMatchObject({ action: 'reject', refusal: { status: 404 } });
  });

  it('says who carries clients: active relays, community ones only when the session allows them', () => {
    expect(carriesClients({ class: 'core', state: 'active' }, false)).toBe(true);
    expect(carriesClients({ class: 'community', state: 'active' }, false)).toBe(false);
    expect(carriesClients({ class: 'community', state: 'active' }, true)).toBe(true);
    for (const state of ['probation', 'rejected', 'suspended'] as const) expect(carriesClients({ class: 'community', state }, true)).toBe(false);
  });

  it('is a signed topology event every relay folds (only its revision moves)', () => {
    const data = eventData(
      { type: 'RelayStateChanged', relayId: 'relay-c1', class: 'community', state: 'active', previousState: 'probation', reason: 'measured 20.0 Mbit/s' },
      8,
      null,
    );
    const parsed = parseTopologyEvent({
      id: '00000000-0000-4000-8000-000000000001',
      type: data.type,
      version: 1,
      source: 'control-plane',
      time: '2026-12-02T00:00:00.000Z',
      causationId: null,
      correlationId: null,
      data: data.data,
    });
    expect(parsed.ok, JSON.stringify(parsed)).toBe(true);
    const view = seedTopology(7, [relay(1), relay(2)], [], 'relay-1');
    const next = parsed.ok ? evolveTopology(view, parsed.event) : view;
    expect([next.revision, next.relays.size]).toEqual([8, 2]);
  });
});

const cand = candidate;

describe('sessions and community relays', () => {
  const relays = [
    cand('core-1'),
    cand('core-2', { region: 'us' }),
    cand('comm-1', { class: 'community', region: 'us' }),
    cand('comm-2', { class: 'community', state: 'probation', region: 'ap' }),
    cand('comm-3', { class: 'community', state: 'suspended' }),
  ];
  const route = (req: Parameters<typeof chooseRoute>[0], rs = relays) => {
    const r = chooseRoute(req, rs);
    return r.ok ? [r.value.entry.id, r.value.exit.id] : [r.refusal.status, r.refusal.error, r.refusal.field];
  };

  it('keeps community relays off a session’s path unless it allows them, and relays not active off every path', () => {
    expect(route({ exit: 'comm-1' })).toEqual([409, 'community_not_allowed', 'exit']);
    expect(route({ exit: 'core-2', entry: 'comm-1' })).toEqual([409, 'community_not_allowed', 'entry']);
    expect(route({ exit: 'comm-1', community: true })).toEqual(['core-1', 'comm-1']);
    expect(route({ exit: 'comm-2', community: true })).toEqual([409, 'relay_not_active', 'exit']);
    expect(route({ exit: 'core-1', entry: 'comm-3', community: true })).toEqual([409, 'relay_not_active', 'entry']);
    // A region: its core relays only, unless allowed; a region of probation relays only: 409, not 404.
    expect(route({ exitRegion: 'us' })).toEqual(['core-1', 'core-2']);
    expect(route({ exitRegion: 'ap', community: true })).toEqual([409, 'relay_not_active', 'exitRegion']);
    expect(
      route(
        { exitRegion: 'us' },
        relays.filter((r) => r.id !== 'core-2'),
      ),
    ).toEqual([409, 'community_not_allowed', 'exitRegion']);
    // The entry picked is never one the session may not have.
    expect(route({ exit: 'core-1' })).toEqual(['core-2', 'core-1']);
    expect(route({ exit: 'core-1' }, [relays[0]!, relays[2]!, relays[3]!])).toEqual([409, 'relay_unavailable', 'entry']);
    expect(route({ exit: 'core-1', community: true }, [relays[0]!, relays[2]!, relays[3]!])).toEqual(['comm-1', 'core-1']);
    // A standard session is never given a community entry it did not name (that entry takes private sessions only).
    expect(route({ exit: 'core-1', community: true, mode: 'standard' }, [relays[0]!, relays[2]!, relays[3]!])).toEqual([409, 'relay_unavailable', 'entry']);
    expect(route({ exit: 'comm-1', community: true, mode: 'standard' })).toEqual(['core-1', 'comm-1']);
  });

  it('makes a session entering at a community relay private (standard is refused), and private the default with a community exit', () => {
    const [core, comm] = [relays[0]!, relays[2]!];
    expect(sessionMode(undefined, comm, core)).toEqual({ ok: true, value: 'private' });
    expect(sessionMode('private', comm, core)).toEqual({ ok: true, value: 'private' });
    expect(sessionMode('standard', comm, core)).toMatchObject({ ok: false, refusal: { status: 422, error: 'private_required', field: 'mode' } });
    expect(sessionMode(undefined, core, comm)).toEqual({ ok: true, value: 'private' });
    expect(sessionMode('standard', core, comm)).toEqual({ ok: true, value: 'standard' });
    expect(sessionMode(undefined, core, relays[1]!)).toEqual({ ok: true, value: 'standard' });
    // The request leaves the mode open, and allows community relays only when asked.
    expect(parseRequest(ConnectClientRequestSchema, { publicKey: relays[0]!.publicKey, exit: 'core-1' })).toMatchObject({ community: false });
    expect(parseRequest(ConnectClientRequestSchema, { publicKey: relays[0]!.publicKey, exit: 'core-1' }).mode).toBeUndefined();
  });

  it('weighs a region’s exits by measured capacity: sessions per unit of capacity, the unmeasured as the median', () => {
    const eu = [
      cand('a', { capacity: 10_000_000, exitSessions: 10 }),
      cand('b', { capacity: 1_000_000, exitSessions: 1 }),
      cand('c', { capacity: null, exitSessions: 6 }),
    ];
    const weight = capacityWeights(eu);
    expect(eu.map(weight)).toEqual([10_000_000, 1_000_000, 5_500_000]);
    // a: 11/10M, b: 2/1M, c: 7/5.5M: a takes the next session although it carries the most.
    expect(route({ exitRegion: 'eu', entry: 'e' }, [...eu, cand('e', { region: 'x' })])).toEqual(['e', 'a']);
    // None measured: the least loaded, as before.
    expect(route({ exitRegion: 'eu', entry: 'e' }, [...eu.map((r) => ({ ...r, capacity: null })), cand('e', { region: 'x' })])).toEqual(['e', 'b']);
  });

  it('switches a session’s exit only to relays it may have', () => {
    const s = { entryId: 'core-1', exitId: 'core-2' };
    expect(chooseNewExit(s, { exit: 'comm-1' }, relays)).toMatchObject({ ok: false, refusal: { error: 'community_not_allowed' } });
    expect(chooseNewExit({ ...s, community: true }, { exit: 'comm-1' }, relays)).toMatchObject({ ok: true, value: { exit: { id: 'comm-1' } } });
    expect(chooseNewExit({ ...s, community: true }, { exit: 'comm-2' }, relays)).toMatchObject({ ok: false, refusal: { error: 'relay_not_active' } });
  });
});
