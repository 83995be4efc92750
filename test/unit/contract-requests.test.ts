import { describe, expect, it } from 'vitest';
import {
  BanRequestSchema,
  ClientReadyRequestSchema,
  HeartbeatRequestSchema,
  RegisterRequestSchema,
  RelayIdRequestSchema,
} from '../../src/contract/api-relays.ts';
import {
  ConnectClientRequestSchema,
  DisconnectClientRequestSchema,
  ListClientsRequestSchema,
  SwitchExitRequestSchema,
} from '../../src/contract/api-clients.ts';
import { checkRequest } from '../../src/contract/request.ts';
import { RelayRecordSchema } from '../../src/contract/topology.events.ts';

const key = (n: number, len = 32) => Buffer.alloc(len, n).toString('base64');
const SID = '3f2b8c1e-9d4a-4e6b-8f1c-2a7d5e9b0c11';
const register = { relayId: 'relay-a', name: 'Relay A', region: 'eu-west', publicKey: key(1), endpoint: '198.51.100.1:51820' };

/** The refusal a schema gives: [field, message]; null when it accepts. */
function refusal(schema: Parameters<typeof checkRequest>[0], body: Record<string, unknown>): [string, string] | null {
  const r = checkRequest(schema, body);
  return r.ok ? null : [r.field, r.message];
}

describe('the request contract refuses as the functions always have', () => {
  it('names an unknown field first, with the fields a request takes', () => {
    expect(refusal(RegisterRequestSchema, { ...register, relayId: 7, extra: 1 })).toEqual([
      'extra',
      'unknown field "extra"; allowed: relayId, name, region, publicKey, endpoint, rotateKey, exitIpv6, busKey, identityKey, proof',
    ]);
    expect(refusal(DisconnectClientRequestSchema, { sessionId: SID, owner: 'x' })).toEqual([
      'owner',
      'unknown field "owner"; allowed: sessionId, publicKey, reason',
    ]);
    expect(refusal(RelayIdRequestSchema, { relayId: 'relay-a', [`${'k'.repeat(80)}`]: 1 })?.[0]).toBe('k'.repeat(64));
  });

  it('takes a NATS user key, a heartbeat renewal flag and a ban, refusing malformed ones', () => {
    const busKey = `U${'A'.repeat(55)}`;
    expect(refusal(RegisterRequestSchema, { ...register, busKey })).toBeNull();
    expect(refusal(RegisterRequestSchema, { ...register, busKey: `A${'A'.repeat(55)}` })).toEqual([
      'busKey',
      'busKey must be a NATS user public key (U followed by 55 base32 characters)',
    ]);
    expect(refusal(HeartbeatRequestSchema, { relayId: 'relay-a', renewBus: true })).toBeNull();
    expect(refusal(HeartbeatRequestSchema, { relayId: 'relay-a', renewBus: 'yes' })).toEqual(['renewBus', 'renewBus must be true or false']);
    expect(refusal(BanRequestSchema, { relayId: 'relay-a', banned: true, reason: 'abuse' })).toBeNull();
    expect(refusal(BanRequestSchema, { relayId: 'relay-a' })).toEqual(['banned', 'banned must be true or false']);
    expect(refusal(BanRequestSchema, { relayId: 'relay-a', banned: true, reason: 'x\u001b[2J' })).toEqual([
      'reason',
      'reason must not contain control characters',
    ]);
  });

  it('says what is wrong with a field, in the order the fields are checked', () => {
    expect(refusal(RegisterRequestSchema, { ...register, endpoint: undefined })).toEqual(['endpoint', 'endpoint is required']);
    expect(refusal(RegisterRequestSchema, { ...register, name: 5 })).toEqual(['name', 'name must be a string']);
    expect(refusal(RegisterRequestSchema, { ...register, name: `${'x'.repeat(129)}\u0007` })).toEqual(['name', 'name must be 1-128 characters']);
    expect(refusal(RegisterRequestSchema, { ...register, publicKey: key(1, 31) })).toEqual(['publicKey', 'publicKey must decode to exactly 32 bytes, not 31']);
    expect(refusal(RegisterRequestSchema, { ...register, endpoint: '2001:db8::1:51820' })).toEqual([
      'endpoint',
      'endpoint: put an IPv6 address in brackets, [addr]:port',
    ]);
    expect(refusal(RegisterRequestSchema, { ...register, region: 'EU', endpoint: 'x' })?.[0]).toBe('region');
    expect(refusal(ClientReadyRequestSchema, { relayId: 'relay-a', sessionId: 'nope' })).toEqual(['sessionId', 'sessionId must be a UUID']);
    expect(refusal(ListClientsRequestSchema, { includeClosed: 'yes' })).toEqual(['includeClosed', 'includeClosed must be true or false']);
    expect(refusal(DisconnectClientRequestSchema, { sessionId: SID, reason: 5 })).toEqual(['reason', 'reason must be a string']);
    expect(refusal(DisconnectClientRequestSchema, { sessionId: SID, reason: 'bored' })).toEqual(['reason', 'reason must be "disconnected" or "removed"']);
  });

  it('checks exactly one exit (or session) where it always did among the fields', () => {
    const both = ['exitRegion', 'give exactly one of exit (a relay id) and exitRegion (a region), not both'];
    const neither = ['exit', 'exit (a relay id) or exitRegion (a region) is required'];
    // After the key, before the exit's own checks, and before entry and ttlSeconds.
    expect(refusal(ConnectClientRequestSchema, { publicKey: 'bad', exit: 'relay-b', exitRegion: 'eu' })?.[0]).toBe('publicKey');
    expect(refusal(ConnectClientRequestSchema, { publicKey: key(1), exit: 'Relay B', exitRegion: 'EU', entry: 3 })).toEqual(both);
    expect(refusal(ConnectClientRequestSchema, { publicKey: key(1), entry: '-a', ttlSeconds: 3600.5 })).toEqual(neither);
    expect(refusal(SwitchExitRequestSchema, { sessionId: SID })).toEqual(neither);
    expect(refusal(DisconnectClientRequestSchema, { sessionId: 'x', publicKey: 'y' })).toEqual([
      'publicKey',
      'give exactly one of sessionId and publicKey, not both',
    ]);
    expect(refusal(DisconnectClientRequestSchema, { reason: 'removed' })).toEqual(['sessionId', 'sessionId or publicKey is required']);
    expect(refusal(DisconnectClientRequestSchema, { reason: 'expired' })?.[0]).toBe('reason');
  });

  it('gives the functions what they work with: defaults said, session ids lower-cased', () => {
    expect(checkRequest(RegisterRequestSchema, register)).toEqual({ ok: true, value: { ...register, rotateKey: false, exitIpv6: false } });
    expect(checkRequest(SwitchExitRequestSchema, { sessionId: SID.toUpperCase(), exitRegion: 'eu' })).toEqual({
      ok: true,
      value: { sessionId: SID, exitRegion: 'eu' },
    });
    expect(checkRequest(DisconnectClientRequestSchema, { publicKey: key(2) })).toEqual({ ok: true, value: { publicKey: key(2), reason: 'disconnected' } });
  });

  it('takes only relays the relays take: a registered relay is a valid topology record', () => {
    for (const endpoint of ['198.51.100.1:1', '[2001:db8::1]:51820', '[::ffff:192.0.2.1]:443', 'relay-a.example.net:65535']) {
      const r = checkRequest(RegisterRequestSchema, { ...register, endpoint, name: 'n'.repeat(128), region: 'r'.repeat(64), relayId: 'a'.repeat(63) });
      if (!r.ok) throw new Error(r.message);
      const { rotateKey: _rotate, relayId, ...rest } = r.value;
      expect(RelayRecordSchema.safeParse({ ...rest, id: relayId, meshAddress: '100.64.0.1', clientPool: '100.96.0.0/22' }).success).toBe(true);
    }
  });
});
