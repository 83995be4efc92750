import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseEvent, parseTopologyEvent, CATALOGUE, currentVersion } from '../../src/contract/catalogue.ts';
import { envelope } from '../../src/contract/envelope.ts';
import { kebab, parseSubject, subjectFor } from '../../src/contract/subjects.ts';
import { parseCidr, parseEndpoint, parseIpv4 } from '../../src/contract/topology.events.ts';
import { generateSigningKeyPair, importPrivateKey, importPublicKey, signBytes } from '../../src/events/signing.ts';
import { decodeTopologyMessage, encodeEvent, MAX_EVENT_BYTES } from '../../src/events/wire.ts';
import { ev, key, relay } from '../support/given.ts';

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

describe('event schemas', () => {
  it('accepts every topology event the builders make', () => {
    for (const e of [
      ev.admitted(1, relay(1)),
      ev.left(2, 'relay-1'),
      ev.rotated(3, 'relay-1', key(2), key(1)),
      ev.moved(4, 'relay-1', 'relay.example.net:51820', '198.51.100.1:51820'),
    ]) {
      const r = parseTopologyEvent(clone(e));
      expect(r.ok, JSON.stringify(r)).toBe(true);
    }
  });

  it.each([
    ['unknown type', (e: any) => (e.type = 'RelayExploded'), /type: unknown event type/],
    ['unknown version', (e: any) => (e.version = 9), /version: RelayAdmitted has no schema version 9/],
    ['bad id', (e: any) => (e.id = 'nope'), /envelope: id/],
    ['extra envelope field', (e: any) => (e.extra = 1), /envelope/],
    ['bad time', (e: any) => (e.time = 'yesterday'), /envelope: time/],
    ['short key', (e: any) => (e.data.relay.publicKey = Buffer.alloc(31).toString('base64')), /data: relay.publicKey/],
    ['non-base64 key', (e: any) => (e.data.relay.publicKey = '!'.repeat(44)), /data: relay.publicKey/],
    ['bad endpoint port', (e: any) => (e.data.relay.endpoint = '198.51.100.1:70000'), /data: relay.endpoint/],
    ['bad endpoint host', (e: any) => (e.data.relay.endpoint = '198.51.100.300:51820'), /data: relay.endpoint/],
    ['cidr with host bits', (e: any) => (e.data.relay.clientPool = '100.96.0.1/22'), /data: relay.clientPool/],
    ['bad relay id', (e: any) => (e.data.relay.id = 'Relay_1'), /data: relay.id/],
    ['revision 0', (e: any) => (e.data.revision = 0), /data: revision/],
    ['unknown data field', (e: any) => (e.data.surprise = true), /data/],
  ])('rejects %s', (_, mutate, message) => {
    const e = clone(ev.admitted(1, relay(1)));
    mutate(e);
    const r = parseEvent(e);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatch(message);
  });

  it('rejects a relay event where a topology event is required', () => {
    const e = envelope({ source: 'relay-1', now: () => new Date(), newId: randomUUID }, 'RelayStopped', 1, { deregistered: true });
    expect(parseEvent(clone(e)).ok).toBe(true);
    expect(parseTopologyEvent(clone(e))).toMatchObject({ ok: false, error: expect.stringMatching(/not a topology event/) });
  });

  it('knows a current version for every type', () => {
    for (const t of Object.keys(CATALOGUE) as (keyof typeof CATALOGUE)[]) expect(currentVersion(t)).toBeGreaterThanOrEqual(1);
  });
});

describe('addresses', () => {
  it('parses IPv4, CIDR and endpoints strictly', () => {
    expect(parseIpv4('100.64.0.1')).toBe(0x64400001);
    expect(parseIpv4('100.64.0.01')).toBeNull();
    expect(parseIpv4('256.1.1.1')).toBeNull();
    expect(parseCidr('100.96.4.0/22')).toEqual({ base: parseIpv4('100.96.4.0'), prefix: 22 });
    expect(parseCidr('100.96.4.1/22')).toBeNull();
    expect(parseCidr('100.96.4.0/33')).toBeNull();
    expect(parseEndpoint('[2001:db8::1]:51820')).toEqual({ host: '2001:db8::1', port: 51820 });
    expect(parseEndpoint('relay-1.example.net:1')).toEqual({ host: 'relay-1.example.net', port: 1 });
    expect(parseEndpoint('198.51.100.1')).toBeNull();
    expect(parseEndpoint('198.51.100.1:0')).toBeNull();
    expect(parseEndpoint(':51820')).toBeNull();
  });
});

describe('subjects', () => {
  it('follows the documented scheme', () => {
    expect(kebab('RelayEndpointChanged')).toBe('relay-endpoint-changed');
    expect(subjectFor('RelayAdmitted', 'relay-1')).toBe('relaynet.topology.relay-1.relay-admitted');
    expect(subjectFor('TopologySeeded', 'relay-1')).toBe('relaynet.relay.relay-1.topology.topology-seeded');
    expect(parseSubject('relaynet.relay.relay-1.topology.topology-seeded')).toEqual({
      stream: 'relay',
      relayId: 'relay-1',
      aggregate: 'topology',
      event: 'topology-seeded',
    });
    expect(parseSubject('relaynet.topology.relay-1')).toBeNull();
    expect(parseSubject('other.topology.a.b')).toBeNull();
  });
});

describe('signed topology messages', () => {
  const cp = generateSigningKeyPair();
  const priv = importPrivateKey(cp.seed);
  const pub = importPublicKey(cp.publicKey);
  const e = ev.admitted(1, relay(1));
  const data = encodeEvent(e);
  const subject = 'relaynet.topology.relay-1.relay-admitted';

  it('accepts what the control plane signed', () => {
    const r = decodeTopologyMessage(subject, data, signBytes(priv, data), pub);
    expect(r.ok && r.event.data.revision).toBe(1);
  });

  it('rejects an unsigned message', () => {
    expect(decodeTopologyMessage(subject, data, undefined, pub)).toMatchObject({ ok: false, rejection: { reason: 'unsigned' } });
  });

  it('rejects a message signed by another key (a relay forging an admission)', () => {
    const forger = importPrivateKey(generateSigningKeyPair().seed);
    expect(decodeTopologyMessage(subject, data, signBytes(forger, data), pub)).toMatchObject({ ok: false, rejection: { reason: 'bad-signature' } });
  });

  it('rejects a signed message whose bytes were altered', () => {
    const sig = signBytes(priv, data);
    const altered = encodeEvent({ ...e, data: { ...e.data, revision: 2 } } as typeof e);
    expect(decodeTopologyMessage(subject, altered, sig, pub)).toMatchObject({ ok: false, rejection: { reason: 'bad-signature' } });
  });

  it('rejects garbage signatures without throwing', () => {
    for (const s of ['', 'not base64!', 'AAAA', 'A'.repeat(5000)]) {
      expect(decodeTopologyMessage(subject, data, s, pub).ok).toBe(false);
    }
  });

  it('rejects a genuine event replayed on another subject', () => {
    const r = decodeTopologyMessage('relaynet.topology.relay-2.relay-admitted', data, signBytes(priv, data), pub);
    expect(r).toMatchObject({ ok: false, rejection: { reason: 'subject-mismatch' } });
  });

  it('rejects oversized and malformed payloads before parsing', () => {
    const big = new Uint8Array(MAX_EVENT_BYTES + 1);
    expect(decodeTopologyMessage(subject, big, signBytes(priv, big), pub)).toMatchObject({ ok: false, rejection: { reason: 'oversized' } });
    const junk = new TextEncoder().encode('{"not json');
    expect(decodeTopologyMessage(subject, junk, signBytes(priv, junk), pub)).toMatchObject({ ok: false, rejection: { reason: 'malformed' } });
    const invalidUtf8 = new Uint8Array([0xff, 0xfe, 0x7b]);
    expect(decodeTopologyMessage(subject, invalidUtf8, signBytes(priv, invalidUtf8), pub)).toMatchObject({ ok: false, rejection: { reason: 'malformed' } });
  });

  it('rejects a signed topology event that claims a relay as source', () => {
    const forged = encodeEvent({ ...e, source: 'relay-1' } as typeof e);
    expect(decodeTopologyMessage(subject, forged, signBytes(priv, forged), pub)).toMatchObject({ ok: false, rejection: { reason: 'foreign-source' } });
  });
});
