import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseTopologyEvent } from '../../src/contract/catalogue.ts';
import { decodeTopologyMessage } from '../../src/events/wire.ts';
import { generateSigningKeyPair, importPublicKey, verifyBytes } from '../../src/events/signing.ts';
import { kebab, subjectFor } from '../../src/contract/subjects.ts';
import { importSigningKey, signPayload } from '../../supabase/functions/_shared/sign.ts';
import { buildTopologyEvent, causation, eventData, type EventSpec, type RelayRecord } from '../../supabase/functions/_shared/topology-events.ts';

const relay: RelayRecord = {
  id: 'relay-a',
  name: 'Relay A',
  region: 'eu-west',
  publicKey: Buffer.alloc(32, 1).toString('base64'),
  endpoint: '198.51.100.1:51820',
  meshAddress: '100.64.0.1',
  clientPool: '100.96.0.0/22',
  exitIpv6: true,
};
const K2 = Buffer.alloc(32, 2).toString('base64');
const specs: EventSpec[] = [
  { type: 'RelayAdmitted', identityKey: Buffer.alloc(32, 7).toString('base64') },
  { type: 'RelayKeyRotated', relayId: 'relay-a', publicKey: K2, previousPublicKey: relay.publicKey },
  { type: 'RelayEndpointChanged', relayId: 'relay-a', endpoint: '[2001:db8::1]:51820', previousEndpoint: relay.endpoint },
  { type: 'RelayCapabilitiesChanged', relayId: 'relay-a', exitIpv6: false },
  { type: 'RelayLeft', relayId: 'relay-a', reason: 'deregistered' },
];

describe('topology event envelopes built by the functions', () => {
  it.each(specs.map((s, i) => [s.type, s, i + 1] as const))('%s parses as the relays parse it, on its subject', (type, spec, revision) => {
    const id = randomUUID();
    const built = buildTopologyEvent(eventData(spec, revision, relay), { id, time: new Date('2026-11-25T10:00:00.123Z'), causationId: 'req-1' });
    expect(built.subject).toBe(subjectFor(type, 'relay-a'));
    expect(built.subject).toBe(`relaynet.topology.relay-a.${kebab(type)}`);
    const parsed = parseTopologyEvent(JSON.parse(built.payload));
    if (!parsed.ok) throw new Error(parsed.error);
    expect(parsed.event).toEqual({
      id,
      type,
      version: type === 'RelayAdmitted' ? 2 : 1,
      source: 'control-plane',
      time: '2026-11-25T10:00:00.123Z',
      causationId: 'req-1',
      correlationId: null,
      data: expect.objectContaining({ revision }),
    });
    expect(built.payload).toBe(JSON.stringify(built.envelope));
  });

  it('keeps causation ids within the envelope schema', () => {
    expect(causation('x'.repeat(128))).toBe('x'.repeat(128));
    expect(causation('x'.repeat(129))).toBeNull();
    expect(causation('')).toBeNull();
    expect(causation(undefined)).toBeNull();
  });

  it('signs with WebCrypto what node:crypto verifies, and the relays accept the signed message', async () => {
    const kp = generateSigningKeyPair();
    const key = await importSigningKey(kp.seed);
    expect(key.publicKey).toBe(kp.publicKey);
    const built = buildTopologyEvent(eventData(specs[0]!, 1, relay), { id: randomUUID(), time: new Date(), causationId: null });
    const sig = await signPayload(key, built.payload);
    const bytes = new TextEncoder().encode(built.payload);
    const pub = importPublicKey(kp.publicKey);
    expect(verifyBytes(pub, bytes, sig)).toBe(true);
    const decoded = decodeTopologyMessage(built.subject, bytes, sig, pub);
    expect(decoded.ok).toBe(true);
    // Another key's signature, or another subject, is rejected downstream.
    expect(decodeTopologyMessage(built.subject, bytes, await signPayload(await importSigningKey(generateSigningKeyPair().seed), built.payload), pub).ok).toBe(
      false,
    );
    expect(decodeTopologyMessage('relaynet.topology.relay-b.relay-admitted', bytes, sig, pub).ok).toBe(false);
  });

  it('refuses a malformed signing seed without echoing it', async () => {
    for (const seed of ['', 'short', Buffer.alloc(31).toString('base64'), Buffer.alloc(33).toString('base64')]) {
      await expect(importSigningKey(seed)).rejects.toThrow(/^RELAYNET_TOPOLOGY_SIGNING_KEY must be base64 of a 32-byte Ed25519 seed$/);
    }
  });
});
