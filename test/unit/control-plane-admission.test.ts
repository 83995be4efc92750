import { describe, expect, it } from 'vitest';
import { decide, decideDeregister, decideExpiry, decideHeartbeat, expireSeconds, type StoredRelay } from '../../supabase/functions/_shared/admission.ts';
import {
  allocate,
  clientPool,
  DEFAULT_PLAN,
  lowestFree,
  meshAddress,
  meshSlotOf,
  meshSlots,
  poolSlots,
  poolSlotsOverlapping,
} from '../../supabase/functions/_shared/addresses.ts';
import type { ValidRegisterRequest as RegisterRequest } from '../../src/contract/api-relays.ts';

const K1 = Buffer.alloc(32, 1).toString('base64');
const K2 = Buffer.alloc(32, 2).toString('base64');
const stored = (over: Partial<StoredRelay> = {}): StoredRelay => ({
  id: 'relay-a',
  name: 'A',
  region: 'eu',
  publicKey: K1,
  endpoint: '198.51.100.1:51820',
  status: 'active',
  ...over,
});
const I1 = Buffer.alloc(32, 0x11).toString('base64');
const I2 = Buffer.alloc(32, 0x22).toString('base64');
const req = (over: Partial<RegisterRequest> = {}): RegisterRequest => ({
  relayId: 'relay-a',
  name: 'A',
  region: 'eu',
  publicKey: K1,
  endpoint: '198.51.100.1:51820',
  rotateKey: false,
  exitIpv6: false,
  ...over,
});

describe('register-server decision table', () => {
  it.each<[string, StoredRelay | null, Partial<RegisterRequest>, string, string[]]>([
    ['unknown relay', null, {}, 'admit', ['RelayAdmitted']],
    ['relay that left', stored({ status: 'left' }), { publicKey: K2 }, 'admit', ['RelayAdmitted']],
    ['same key, same endpoint', stored(), {}, 'readmit', []],
    ['same key, new name and region', stored(), { name: 'B', region: 'us' }, 'readmit', []],
    ['same key, rotateKey set anyway', stored(), { rotateKey: true }, 'readmit', []],
    ['other key, no rotateKey', stored(), { publicKey: K2 }, 'reject', []],
    ['other key, rotateKey', stored(), { publicKey: K2, rotateKey: true }, 'readmit', ['RelayKeyRotated']],
    ['other endpoint', stored(), { endpoint: '[2001:db8::1]:51820' }, 'readmit', ['RelayEndpointChanged']],
    [
      'other key and endpoint, rotateKey',
      stored(),
      { publicKey: K2, endpoint: 'a.example:1', rotateKey: true },
      'readmit',
      ['RelayKeyRotated', 'RelayEndpointChanged'],
    ],
    ['other key and endpoint, no rotateKey', stored(), { publicKey: K2, endpoint: 'a.example:1' }, 'reject', []],
    ['now exits IPv6', stored(), { exitIpv6: true }, 'readmit', ['RelayCapabilitiesChanged']],
    ['no longer exits IPv6', stored({ exitIpv6: true }), { exitIpv6: false }, 'readmit', ['RelayCapabilitiesChanged']],
    ['still exits IPv6', stored({ exitIpv6: true }), { exitIpv6: true }, 'readmit', []],
    ['row from before IPv6, no IPv6 exit', stored({ exitIpv6: undefined }), {}, 'readmit', []],
    ['unknown relay with an identity key', null, { identityKey: I1 }, 'admit', ['RelayAdmitted']],
    ['same identity key', stored({ identityKey: I1 }), { identityKey: I1 }, 'readmit', []],
    ['no identity key sent: the recorded one stays', stored({ identityKey: I1 }), {}, 'readmit', []],
    ['first identity key of a relay admitted before identities', stored(), { identityKey: I1 }, 'readmit', ['RelayAdmitted']],
    [
      'another identity key, and another endpoint',
      stored({ identityKey: I1 }),
      { identityKey: I2, endpoint: 'a.example:1' },
      'readmit',
      ['RelayEndpointChanged', 'RelayAdmitted'],
    ],
  ])('%s', (_what, existing, over, action, events) => {
    const d = decide(existing, req(over));
    expect(d.action).toBe(action);
    expect(d.events.map((e) => e.type)).toEqual(events);
  });

  it('announces the identity key in RelayAdmitted, at admission and when it changes', () => {
    expect(decide(null, req({ identityKey: I1 })).events).toEqual([{ type: 'RelayAdmitted', identityKey: I1 }]);
    expect(decide(stored({ identityKey: I1 }), req({ identityKey: I2 })).events).toEqual([{ type: 'RelayAdmitted', identityKey: I2 }]);
  });

  it('refuses another key with 409 key_mismatch naming publicKey', () => {
    const d = decide(stored(), req({ publicKey: K2 }));
    expect(d).toMatchObject({ action: 'reject', refusal: { status: 409, error: 'key_mismatch', field: 'publicKey' } });
  });

  it('carries the previous key and endpoint in the events', () => {
    const d = decide(stored(), req({ publicKey: K2, endpoint: 'a.example:1', rotateKey: true }));
    expect(d.events).toEqual([
      { type: 'RelayKeyRotated', relayId: 'relay-a', publicKey: K2, previousPublicKey: K1 },
      { type: 'RelayEndpointChanged', relayId: 'relay-a', endpoint: 'a.example:1', previousEndpoint: '198.51.100.1:51820' },
    ]);
    expect(d).toMatchObject({ keyRotated: true });
  });

  it('refuses a key another active relay holds (409 key_in_use), whatever else', () => {
    for (const existing of [null, stored(), stored({ status: 'left' })]) {
      expect(decide(existing, req({ publicKey: K2, rotateKey: true }), 'relay-b')).toMatchObject({
        action: 'reject',
        refusal: { status: 409, error: 'key_in_use', field: 'publicKey' },
      });
    }
  });

  it('deregister: only an active relay leaves; otherwise 404 not_registered', () => {
    expect(decideDeregister(stored(), 'relay-a')).toEqual({ action: 'leave', events: [{ type: 'RelayLeft', relayId: 'relay-a', reason: 'deregistered' }] });
    for (const s of [null, stored({ status: 'left' })])
      expect(decideDeregister(s, 'relay-a')).toMatchObject({ action: 'reject', refusal: { status: 404, error: 'not_registered' } });
  });

  it('heartbeat: an active relay is touched; otherwise 404 not_registered', () => {
    expect(decideHeartbeat(true, 'relay-a')).toEqual({ action: 'touch' });
    expect(decideHeartbeat(false, 'relay-a')).toMatchObject({ action: 'reject', refusal: { status: 404, error: 'not_registered' } });
  });

  it('expiry: a silent relay leaves with reason expired, after the setting or 30 heartbeat intervals (at least 5 minutes)', () => {
    expect(decideExpiry('relay-a')).toEqual([{ type: 'RelayLeft', relayId: 'relay-a', reason: 'expired' }]);
    expect(expireSeconds(null, 10)).toBe(300);
    expect(expireSeconds(null, 1)).toBe(300);
    expect(expireSeconds(null, 60)).toBe(1800);
    expect(expireSeconds(45, 10)).toBe(45);
  });
});

describe('address plan slot math', () => {
  /** The plan before the default admitted 4,096 relays: /22 pools. */
  const P22 = { ...DEFAULT_PLAN, clientPoolPrefix: 22 };

  it('admits 4,096 relays by default, and allocates the last pool and then refuses', () => {
    expect(DEFAULT_PLAN).toEqual({ meshCidr: '100.64.0.0/16', clientSupernet: '100.96.0.0/11', clientPoolPrefix: 23 });
    expect(poolSlots(DEFAULT_PLAN)).toBe(4096);
    expect(meshSlots(DEFAULT_PLAN)).toBeGreaterThanOrEqual(4096);
    expect(clientPool(DEFAULT_PLAN, 4095)).toBe('100.127.254.0/23');
    const mesh = Array.from({ length: 4095 }, (_, i) => meshAddress(DEFAULT_PLAN, i + 1));
    const pools = Array.from({ length: 4096 }, (_, k) => clientPool(DEFAULT_PLAN, k));
    expect(new Set(pools).size).toBe(4096);
    expect(
      allocate(
        DEFAULT_PLAN,
        mesh,
        pools.filter((_, k) => k !== 4095),
      ),
    ).toEqual({ ok: true, meshAddress: '100.64.16.0', clientPool: '100.127.254.0/23' });
    expect(allocate(DEFAULT_PLAN, mesh, pools)).toEqual({ ok: false, exhausted: 'client pool' });
  });

  it('allocates around pools of another size after the plan changed', () => {
    // Held under the old /22 plan: slots 0 and 1 of the /23 plan are both taken by 100.96.0.0/22.
    expect(allocate(DEFAULT_PLAN, ['100.64.0.1'], ['100.96.0.0/22'])).toEqual({ ok: true, meshAddress: '100.64.0.2', clientPool: '100.96.4.0/23' });
    expect(allocate(P22, ['100.64.0.1'], ['100.96.0.0/23'])).toEqual({ ok: true, meshAddress: '100.64.0.2', clientPool: '100.96.4.0/22' });
  });

  it('numbers mesh addresses from network + 1 and pools from the supernet base', () => {
    expect(meshSlots(P22)).toBe(65534);
    expect(poolSlots(P22)).toBe(2048);
    expect(meshAddress(P22, 1)).toBe('100.64.0.1');
    expect(meshAddress(P22, 256)).toBe('100.64.1.0');
    expect(meshAddress(P22, 65534)).toBe('100.64.255.254');
    expect(clientPool(P22, 0)).toBe('100.96.0.0/22');
    expect(clientPool(P22, 1)).toBe('100.96.4.0/22');
    expect(clientPool(P22, 2047)).toBe('100.127.252.0/22');
    expect(() => meshAddress(P22, 0)).toThrow(RangeError);
    expect(() => meshAddress(P22, 65535)).toThrow(RangeError);
    expect(() => clientPool(P22, 2048)).toThrow(RangeError);
  });

  it('maps addresses back to slots, ignoring the network, broadcast and foreign addresses', () => {
    expect(meshSlotOf(P22, '100.64.0.1')).toBe(1);
    expect(meshSlotOf(P22, '100.64.1.0/32')).toBe(256);
    for (const a of ['100.64.0.0', '100.64.255.255', '100.65.0.1', 'nonsense']) expect(meshSlotOf(P22, a)).toBeNull();
    expect(poolSlotsOverlapping(P22, '100.96.4.0/22')).toEqual([1]);
    expect(poolSlotsOverlapping(P22, '100.96.0.0/20')).toEqual([0, 1, 2, 3]);
    expect(poolSlotsOverlapping(P22, '100.96.5.0/24')).toEqual([1]);
    expect(poolSlotsOverlapping(P22, '198.51.100.0/24')).toEqual([]);
  });

  it('allocates the lowest free slot, reusing freed ones', () => {
    expect(lowestFree([], 1, 3)).toBe(1);
    expect(lowestFree([1, 3], 1, 3)).toBe(2);
    expect(lowestFree([1, 2, 3], 1, 3)).toBeNull();
    expect(allocate(P22, [], [])).toEqual({ ok: true, meshAddress: '100.64.0.1', clientPool: '100.96.0.0/22' });
    expect(allocate(P22, ['100.64.0.1', '100.64.0.3'], ['100.96.0.0/22', '100.96.8.0/22'])).toEqual({
      ok: true,
      meshAddress: '100.64.0.2',
      clientPool: '100.96.4.0/22',
    });
  });

  it('reports which part of the plan is exhausted', () => {
    const tiny = { meshCidr: '100.64.0.0/30', clientSupernet: '100.96.0.0/21', clientPoolPrefix: 22 };
    expect(allocate(tiny, ['100.64.0.1', '100.64.0.2'], [])).toEqual({ ok: false, exhausted: 'mesh address' });
    expect(allocate(tiny, ['100.64.0.1'], ['100.96.0.0/22', '100.96.4.0/22'])).toEqual({ ok: false, exhausted: 'client pool' });
    expect(allocate(tiny, ['100.64.0.1'], ['100.96.0.0/22'])).toEqual({ ok: true, meshAddress: '100.64.0.2', clientPool: '100.96.4.0/22' });
  });

  it('rejects plans that cannot work', () => {
    expect(() => meshSlots({ ...P22, meshCidr: '100.64.0.0/31' })).toThrow(/mesh_cidr/);
    expect(() => poolSlots({ ...P22, clientPoolPrefix: 10 })).toThrow(/client_pool_prefix/);
    expect(() => poolSlots({ ...P22, clientSupernet: '100.96.0.1/11' })).toThrow(/client_supernet/);
  });
});
