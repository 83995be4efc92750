import { randomUUID } from 'node:crypto';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { JetStreamClient } from '@nats-io/jetstream';
import { RelayEventPublisher } from '../../src/bus/relay-event-publisher.ts';
import type { AnyEvent } from '../../src/contract/catalogue.ts';
import { envelope } from '../../src/contract/envelope.ts';
import type { RelayEvent } from '../../src/contract/relay.events.ts';
import { ANNOUNCEMENT_GRACE_MS, parseRelayKeyPins, RelayKeyRegistry } from '../../src/events/identity.ts';
import { decodeStored, formatEntry, type LogEntry, type StoredMessage, type Verification } from '../../src/events/log.ts';
import { generateSigningKeyPair, importPrivateKey, importPublicKey, signBytes, verifyBytes } from '../../src/events/signing.ts';
import { encodeEvent, SIGNATURE_HEADER } from '../../src/events/wire.ts';
import { loadOrCreateIdentityKey } from '../../src/lib/identity-key.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import { hasUnsafeTerminalText } from '../../src/lib/terminal.ts';
import { RelayReplay } from '../../src/replay/replay.ts';
import { relay } from '../support/given.ts';
import { tempDir } from '../support/temp.ts';

const cpKeys = generateSigningKeyPair();
const cpPriv = importPrivateKey(cpKeys.seed);
const r1 = generateSigningKeyPair();
const r1b = generateSigningKeyPair();
const attacker = generateSigningKeyPair();
const priv = (k: { seed: string }) => importPrivateKey(k.seed);

const T0 = Date.parse('2026-11-30T10:00:00Z');
const iso = (ms: number) => new Date(T0 + ms).toISOString();
const cp = (ms = 0) => ({ source: 'control-plane', now: () => new Date(T0 + ms), newId: randomUUID });

function admitted(revision: number, id: string, identityKey: string | null, over = {}) {
  return envelope(cp(), 'RelayAdmitted', 2, { revision, relay: relay(Number(id.split('-')[1]), { id, ...over }), identityKey }) as AnyEvent;
}

function topo(seq: number, e: AnyEvent, key: ReturnType<typeof priv> | null, ms = 0, subject?: string): StoredMessage {
  const data = encodeEvent(e);
  const id = (e.data as { relay: { id: string } }).relay.id;
  return {
    stream: 'topology',
    seq,
    subject: subject ?? `relaynet.topology.${id}.relay-admitted`,
    time: iso(ms),
    data,
    signature: key ? signBytes(key, data) : null,
  };
}

function relayMsg(seq: number, source: string, key: ReturnType<typeof priv> | null, ms = 0, reason = 'handshake'): StoredMessage {
  const e = envelope({ source, now: () => new Date(T0 + ms), newId: randomUUID }, 'LinkStateChanged', 1, {
    peerId: 'relay-2',
    device: 'rc1m2',
    state: 'up' as const,
    reason,
    latestHandshakeMs: 1,
    rxBytes: 0,
    txBytes: 0,
  });
  const data = encodeEvent(e as AnyEvent);
  return {
    stream: 'relay',
    seq,
    subject: `relaynet.relay.${source}.link.link-state-changed`,
    time: iso(ms),
    data,
    signature: key ? signBytes(key, data) : null,
  };
}

const verification = (pins: Record<string, string> = {}): Verification => ({
  controlPlaneKey: importPublicKey(cpKeys.publicKey),
  relayKeys: new RelayKeyRegistry(pins),
});
const reasonOf = (e: LogEntry) => (e.ok ? 'ok' : e.skipped.reason);

describe('signed relay events', () => {
  it('verifies a relay event with the identity key its verified RelayAdmitted announced', () => {
    const v = verification();
    expect(reasonOf(decodeStored(topo(1, admitted(1, 'relay-1', r1.publicKey), cpPriv), { verify: v }))).toBe('ok');
    const e = decodeStored(relayMsg(1, 'relay-1', priv(r1), 1000), { verify: v });
    expect(e).toMatchObject({ ok: true, verified: true });
  });

  it('rejects unsigned, forged and unknown-key relay events with their sequence', () => {
    const v = verification();
    decodeStored(topo(1, admitted(1, 'relay-1', r1.publicKey), cpPriv), { verify: v });
    const unsigned = decodeStored(relayMsg(5, 'relay-1', null, 1000), { verify: v });
    expect(unsigned).toMatchObject({ ok: false, seq: 5, skipped: { reason: 'unsigned' } });
    expect(reasonOf(decodeStored(relayMsg(6, 'relay-1', priv(attacker), 1000), { verify: v }))).toBe('bad-signature');
    expect(reasonOf(decodeStored(relayMsg(7, 'relay-2', priv(attacker), 1000), { verify: v }))).toBe('unknown-key');
    // Signed by relay-1 with its own key, but on relay-2's subject: no key of relay-2 is known.
    const m = relayMsg(8, 'relay-1', priv(r1), 1000);
    expect(reasonOf(decodeStored({ ...m, subject: 'relaynet.relay.relay-2.link.link-state-changed' }, { verify: v }))).toBe('unknown-key');
    // Bytes changed after signing.
    const tampered = relayMsg(9, 'relay-1', priv(r1), 1000, 'handshake');
    const data = new TextEncoder().encode(new TextDecoder().decode(tampered.data).replace('handshake', 'handshakE'));
    expect(reasonOf(decodeStored({ ...tampered, data }, { verify: v }))).toBe('bad-signature');
  });

  it('learns keys only from topology messages the control plane signed', () => {
    const v = verification();
    // A forged RelayAdmitted announcing the attacker's key for relay-1: rejected, and it teaches nothing.
    expect(reasonOf(decodeStored(topo(1, admitted(1, 'relay-1', attacker.publicKey), priv(attacker)), { verify: v }))).toBe('bad-signature');
    expect(reasonOf(decodeStored(topo(2, admitted(1, 'relay-1', attacker.publicKey), null), { verify: v }))).toBe('unsigned');
    expect(v.relayKeys.knows('relay-1')).toBe(false);
    expect(reasonOf(decodeStored(relayMsg(1, 'relay-1', priv(attacker), 1000), { verify: v }))).toBe('unknown-key');
  });

  it('uses the key in force when the message was stored, the first one before it, a new one within the grace', () => {
    const reg = new RelayKeyRegistry();
    reg.observe(1, iso(10_000), admitted(1, 'relay-1', r1.publicKey));
    reg.observe(9, iso(600_000), admitted(9, 'relay-1', r1b.publicKey));
    reg.observe(9, iso(600_000), admitted(9, 'relay-1', attacker.publicKey)); // same sequence again: ignored
    const sign = (k: { seed: string }, ms: number) => relayMsg(1, 'relay-1', priv(k), ms);
    const check = (m: StoredMessage) => reg.verify('relay-1', m.time, m.data, m.signature).ok;
    expect(check(sign(r1, 0))).toBe(true); // before the first announcement (RelayStarted before admission)
    expect(check(sign(r1, 300_000))).toBe(true);
    expect(check(sign(r1b, 300_000))).toBe(false); // the new key does not cover messages long before it
    expect(check(sign(r1b, 600_000 - ANNOUNCEMENT_GRACE_MS + 1))).toBe(true); // ... but the registration race
    expect(check(sign(r1b, 700_000))).toBe(true);
    expect(check(sign(r1, 700_000))).toBe(false); // the old key no longer counts
    expect(reg.candidates('relay-1', iso(700_000))).toEqual([r1b.publicKey]);
  });

  it('a pinned key replaces what the topology stream announces for that relay', () => {
    const v = verification({ 'relay-1': r1b.publicKey });
    decodeStored(topo(1, admitted(1, 'relay-1', r1.publicKey), cpPriv), { verify: v });
    expect(reasonOf(decodeStored(relayMsg(1, 'relay-1', priv(r1), 1000), { verify: v }))).toBe('bad-signature');
    expect(reasonOf(decodeStored(relayMsg(2, 'relay-1', priv(r1b), 1000), { verify: v }))).toBe('ok');
    expect(parseRelayKeyPins(['relay-1=' + r1.publicKey])).toEqual({ ok: true, pins: { 'relay-1': r1.publicKey } });
    expect(parseRelayKeyPins(['relay-1']).ok).toBe(false);
    expect(parseRelayKeyPins(['Relay_1=' + r1.publicKey]).ok).toBe(false);
    expect(parseRelayKeyPins([`relay-1=${r1.publicKey}`, `relay-1=${r1b.publicKey}`]).ok).toBe(false);
  });

  it('reads older logs: a v1 RelayAdmitted announces no key, and unsigned events are rejected, not a crash', () => {
    const v = verification();
    const v1 = envelope(cp(), 'RelayAdmitted', 1, { revision: 1, relay: relay(1) }) as AnyEvent;
    expect(decodeStored(topo(1, v1, cpPriv), { verify: v })).toMatchObject({ ok: true, event: { version: 2, data: { identityKey: null } } });
    expect(reasonOf(decodeStored(relayMsg(1, 'relay-1', null), { verify: v }))).toBe('unsigned');
  });

  it('prints a rejection and stored strings with no raw control characters', () => {
    const v = verification();
    decodeStored(topo(1, admitted(1, 'relay-1', r1.publicKey), cpPriv), { verify: v });
    const evil = '\u001b[2J\u001b]0;owned\u0007\u009b31m\u202e';
    const shown = decodeStored(relayMsg(1, 'relay-1', priv(r1), 0, evil), { verify: v });
    expect(shown.ok).toBe(true);
    const corrupt: StoredMessage = {
      ...relayMsg(2, 'relay-1', null),
      subject: `relaynet.relay.relay-1.x\u001b[2J`,
      data: new TextEncoder().encode(`{"a":"${evil}`),
    };
    for (const e of [shown, decodeStored(corrupt, { verify: v }), decodeStored(corrupt)]) {
      for (const colour of [false, true]) {
        const line = formatEntry(e, { colour });
        expect(hasUnsafeTerminalText(line.replace(/\u001b\[\d+m/g, ''))).toBe(false);
      }
    }
  });
});

describe('replay keeps the genuine revision', () => {
  const genuine = admitted(2, 'relay-2', null, { endpoint: '198.51.100.2:51820' });
  const forged = admitted(2, 'relay-2', null, { endpoint: '203.0.113.66:51820' });
  const endpointOf = (r: RelayReplay) => {
    r.add(decodeStored(relayMsg(1, 'relay-1', null)));
    return r;
  };
  const replayed = (entries: LogEntry[]) => {
    const r = new RelayReplay({ relayId: 'relay-1' });
    for (const e of entries) r.addTopology(e);
    return endpointOf(r).result();
  };

  it('a forged copy of a revision, stored after the genuine one or before it, is rejected and skipped', () => {
    for (const order of [
      [topo(2, genuine, cpPriv), topo(3, forged, priv(attacker))],
      [topo(2, forged, null), topo(3, genuine, cpPriv)],
    ]) {
      const v = verification();
      const res = replayed(order.map((m) => decodeStored(m, { verify: v })));
      expect(res.events.skipped).toBe(1);
      expect(res.skipped[0]).toMatchObject({ stream: 'topology', reason: expect.stringMatching(/bad-signature|unsigned/) });
      expect(res.topology.duplicates).toBe(0);
    }
  });

  it('of valid copies the first verified one counts; an unverified one never displaces it', () => {
    const verifiedGenuine: LogEntry = { ...decodeStored(topo(2, genuine, cpPriv)), verified: true } as LogEntry;
    const unverifiedForged = decodeStored(topo(3, forged, null));
    const keep = (entries: LogEntry[]) => {
      const r = new RelayReplay({ relayId: 'relay-1' });
      for (const e of entries) r.addTopology(e);
      // The kept text of revision 2, as replay folds it.
      return (r as unknown as { topo: Map<number, string> }).topo.get(2)!;
    };
    expect(keep([verifiedGenuine, unverifiedForged])).toContain('198.51.100.2');
    expect(keep([unverifiedForged, verifiedGenuine])).toContain('198.51.100.2');
    expect(keep([decodeStored(topo(2, genuine, null)), unverifiedForged])).toContain('198.51.100.2');
  });
});

describe('the identity key file and the publisher', () => {
  const tmp = tempDir('identity');
  afterAll(() => tmp.remove());

  it('is made at first start with mode 0600, then loaded; a readable one is refused', () => {
    const file = join(tmp.dir, 'state', 'identity.key');
    const a = loadOrCreateIdentityKey(file);
    expect(a.created).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(tmp.dir, 'state')).mode & 0o777).toBe(0o700);
    const b = loadOrCreateIdentityKey(file);
    expect(b).toMatchObject({ created: false, publicKey: a.publicKey });
    expect(readFileSync(file, 'utf8')).not.toContain(a.publicKey);
    chmodSync(file, 0o644);
    expect(() => loadOrCreateIdentityKey(file)).toThrow(/readable by others/);
  });

  it('signs every event over the exact bytes it publishes', async () => {
    const id = loadOrCreateIdentityKey(join(tmp.dir, 'pub', 'identity.key'));
    const sent: { subject: string; data: Uint8Array; sig: string | undefined }[] = [];
    const js = {
      publish: async (subject: string, data: Uint8Array, o: { headers: { get(k: string): string } }) => {
        sent.push({ subject, data, sig: o.headers.get(SIGNATURE_HEADER) });
        return { seq: sent.length };
      },
    } as unknown as JetStreamClient;
    const p = new RelayEventPublisher({ js, relayId: 'relay-1', logger: rootLogger({}, 'silent'), identity: id.privateKey });
    const e = envelope({ source: 'relay-1', now: () => new Date(T0), newId: randomUUID }, 'RelayDraining', 1, { signal: 'SIGTERM' }) as RelayEvent;
    p.publish(e);
    await p.close(1_000);
    expect(sent).toHaveLength(1);
    // The event as built, numbered by the publisher (its place among the relay's events).
    const text = new TextDecoder().decode(sent[0]!.data);
    expect(JSON.parse(text)).toEqual({ ...e, sourceSeq: expect.any(Number) });
    expect(verifyBytes(importPublicKey(id.publicKey), sent[0]!.data, sent[0]!.sig!)).toBe(true);
    const reg = new RelayKeyRegistry({ 'relay-1': id.publicKey });
    expect(reg.verify('relay-1', iso(0), sent[0]!.data, sent[0]!.sig!)).toMatchObject({ ok: true });
  });
});

describe('the readers refuse to read unchecked by accident', () => {
  it('events export, events tail and replay without a topology key: exit 2 naming --topology-key and --no-verify', async () => {
    const { cli } = await import('../support/cli.ts');
    const prev = process.env.RELAYNET_TOPOLOGY_KEY;
    delete process.env.RELAYNET_TOPOLOGY_KEY;
    try {
      for (const argv of [
        ['events', 'export', '--nats-url', 'nats://127.0.0.1:9'],
        ['events', 'tail', '--nats-url', 'nats://127.0.0.1:9'],
        ['replay', '--relay', 'relay-1', '--file', '/nonexistent'],
      ]) {
        const r = await cli(...argv);
        expect(r.code, r.err).toBe(2);
        expect(r.err).toMatch(/--topology-key .*--no-verify/);
      }
      const bad = await cli('replay', '--relay', 'relay-1', '--file', '/nonexistent', '--topology-key', 'x', '--relay-key', 'relay-1=y');
      expect(bad.code).toBe(2);
      expect(bad.err).toMatch(/--topology-key: not a base64 Ed25519 public key/);
      const pin = await cli('replay', '--relay', 'relay-1', '--file', '/nonexistent', '--topology-key', cpKeys.publicKey, '--relay-key', 'relay-1=y');
      expect(pin.err).toMatch(/--relay-key "relay-1=y": give RELAY-ID=KEY/);
    } finally {
      if (prev !== undefined) process.env.RELAYNET_TOPOLOGY_KEY = prev;
    }
  });
});
