import { randomUUID } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { currentVersion, parseEvent, type AnyEvent } from '../../src/contract/catalogue.ts';
import { envelope } from '../../src/contract/envelope.ts';
import { catalogueJsonSchemas } from '../../src/contract/json-schema.ts';
import {
  entryJson,
  entryMatches,
  formatEntry,
  fromExportLine,
  parseSince,
  decodeStored,
  toExportLine,
  typeMatcher,
  type StoredMessage,
} from '../../src/events/log.ts';
import { generateSigningKeyPair, importPrivateKey, importPublicKey, signBytes } from '../../src/events/signing.ts';
import { subjectFor } from '../../src/contract/subjects.ts';
import { encodeEvent, MAX_EVENT_BYTES } from '../../src/events/wire.ts';
import { ev, relay } from '../support/given.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const at = { now: () => new Date('2026-11-25T10:00:00Z'), newId: randomUUID };
const linkEvent = (source = 'relay-1') =>
  envelope({ source, ...at }, 'LinkStateChanged', 1, {
    peerId: 'relay-2',
    device: 'rc2m1',
    state: 'up' as const,
    reason: 'handshake',
    latestHandshakeMs: 1,
    rxBytes: 2,
    txBytes: 3,
  }) as AnyEvent;
const msg = (over: Partial<StoredMessage> & { data: Uint8Array }): StoredMessage => ({
  stream: 'relay',
  seq: 7,
  subject: 'relaynet.relay.relay-1.link.link-state-changed',
  time: '2026-11-25T10:00:00.000Z',
  signature: null,
  ...over,
});
const bytes = (s: string) => new TextEncoder().encode(s);

describe('reading stored messages', () => {
  it('decodes a relay event published under its own subject', () => {
    const e = linkEvent();
    const r = decodeStored(msg({ data: encodeEvent(e) }));
    expect(r).toMatchObject({ ok: true, seq: 7, event: { id: e.id, type: 'LinkStateChanged' } });
  });

  it.each([
    ['corrupt bytes', msg({ data: bytes('{"id": "tru') }), 'malformed'],
    ['truncated UTF-8', msg({ data: new Uint8Array([0x7b, 0xe2, 0x82]) }), 'malformed'],
    ['oversized', msg({ data: new Uint8Array(MAX_EVENT_BYTES + 1).fill(0x20) }), 'oversized'],
    ['not an event', msg({ data: bytes('{"hello":"world"}') }), 'schema'],
    ['another relay on relay-1s subject', msg({ data: encodeEvent(linkEvent('relay-2')) }), 'subject-mismatch'],
    ['a subject outside the scheme', msg({ subject: 'relaynet.relay.relay-1', data: encodeEvent(linkEvent()) }), 'foreign-subject'],
    [
      'a topology event in the relay stream',
      msg({ subject: 'relaynet.relay.relay-1.link.link-state-changed', data: encodeEvent(ev.admitted(1, relay(1))) }),
      'subject-mismatch',
    ],
  ])('reports %s with its sequence and skips it', (_, m, reason) => {
    const r = decodeStored(m);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.skipped.reason).toBe(reason);
      expect(r.seq).toBe(7);
      expect(entryJson(r)).toMatchObject({ seq: 7, skipped: { reason } });
      expect(formatEntry(r, { colour: false })).toMatch(new RegExp(`R#7 REJECTED ${reason}`));
    }
  });

  it('checks topology signatures when given the control-plane key, and subjects always', () => {
    const { seed, publicKey } = generateSigningKeyPair();
    const e = ev.admitted(1, relay(3));
    const data = encodeEvent(e);
    const subject = subjectFor('RelayAdmitted', 'relay-3');
    const m: StoredMessage = { stream: 'topology', seq: 1, subject, time: e.time, data, signature: signBytes(importPrivateKey(seed), data) };
    const key = importPublicKey(publicKey);
    expect(decodeStored(m, { controlPlaneKey: key }).ok).toBe(true);
    expect(decodeStored({ ...m, signature: null }, { controlPlaneKey: key })).toMatchObject({ ok: false, skipped: { reason: 'unsigned' } });
    expect(decodeStored({ ...m, signature: null }).ok).toBe(true);
    expect(decodeStored({ ...m, subject: subjectFor('RelayAdmitted', 'relay-4') })).toMatchObject({ ok: false, skipped: { reason: 'subject-mismatch' } });
  });
});

describe('filters and --since', () => {
  it('matches type patterns and refuses patterns that name nothing', () => {
    const m = typeMatcher(['Link*,Kernel*']);
    expect(['LinkStateChanged', 'KernelReconciled', 'KernelOperationFailed'].every(m)).toBe(true);
    expect(m('RelayAdmitted')).toBe(false);
    expect(typeMatcher([])('Anything')).toBe(true);
    expect(() => typeMatcher(['Linc*'])).toThrow(/matches no event type/);
    expect(() => typeMatcher(['Link.*'])).toThrow(/only letters, digits/);
  });

  it('filters by relay on the subject, skipped messages included', () => {
    const e = decodeStored(msg({ data: encodeEvent(linkEvent()) }));
    const bad = decodeStored(msg({ subject: 'relaynet.relay.relay-2.link.link-state-changed', data: bytes('x') }));
    const all = typeMatcher([]);
    expect(entryMatches(e, { relayId: 'relay-1' }, all)).toBe(true);
    expect(entryMatches(e, { relayId: 'relay-2' }, all)).toBe(false);
    expect(entryMatches(bad, { relayId: 'relay-2' }, typeMatcher(['Kernel*']))).toBe(true);
    expect(entryMatches(e, {}, typeMatcher(['Kernel*']))).toBe(false);
  });

  it('parses sequences, durations, times and all, and says what it accepts', () => {
    const now = new Date('2026-11-25T10:00:00Z');
    expect(parseSince('1200', now)).toEqual({ kind: 'seq', seq: 1200 });
    expect(parseSince('15m', now)).toEqual({ kind: 'time', time: new Date('2026-11-25T09:45:00Z') });
    expect(parseSince('2d', now)).toEqual({ kind: 'time', time: new Date('2026-11-23T10:00:00Z') });
    expect(parseSince('2026-11-25T08:00:00Z', now)).toEqual({ kind: 'time', time: new Date('2026-11-25T08:00:00Z') });
    expect(parseSince('all', now)).toEqual({ kind: 'all' });
    for (const bad of ['0', 'yesterday', '15 m', '-5s', '2026-13-45T99:00:00Z']) expect(() => parseSince(bad, now), bad).toThrow(/--since/);
  });
});

describe('output', () => {
  it('prints one line per event with its payload, coloured only when asked', () => {
    const e = decodeStored(msg({ data: encodeEvent(linkEvent()) }));
    const plain = formatEntry(e, { colour: false });
    expect(plain).toBe(
      '10:00:00.000 R#7 relay-1 LinkStateChanged peerId=relay-2 device=rc2m1 state=up reason=handshake latestHandshakeMs=1 rxBytes=2 txBytes=3',
    );
    expect(formatEntry(e, { colour: true })).toContain('\x1b[32mLinkStateChanged\x1b[0m');
    expect(formatEntry(e, { colour: false, width: 40 })).toHaveLength(40);
  });

  it('exports messages byte for byte, invalid UTF-8 included, and reads them back', () => {
    for (const data of [encodeEvent(linkEvent()), new Uint8Array([0xff, 0x00, 0x7b])]) {
      const m = msg({ data, signature: 'c2ln' });
      const back = fromExportLine(toExportLine(m));
      expect(back).toEqual({ ok: true, message: m });
    }
  });

  it.each([
    ['{"stream":"relay","seq":1,"subj', /not JSON/],
    ['[]', /stream/],
    ['{"stream":"other","seq":1,"subject":"s","time":"t","data":"x"}', /neither relay nor topology/],
    ['{"stream":"relay","seq":0,"subject":"s","time":"t","data":"x"}', /not a stream sequence/],
    ['{"stream":"relay","seq":1,"subject":"s","time":"t"}', /neither data nor data64/],
  ])('refuses the export line %s', (line, error) => {
    const r = fromExportLine(line);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatch(error);
  });
});

describe('versions', () => {
  it('reads a log recorded by an older relay-core: RelayStarted v1 and TopologySeeded v1 are upcast to the current versions', () => {
    const lines = readFileSync(join(ROOT, 'test/fixtures/events-v1.jsonl'), 'utf8').trim().split('\n');
    const entries = lines.map((l) => {
      const m = fromExportLine(l);
      if (!m.ok) throw new Error(m.error);
      return decodeStored(m.message);
    });
    expect(entries.every((e) => e.ok)).toBe(true);
    const started = entries.flatMap((e) => (e.ok && e.event.type === 'RelayStarted' ? [e.event] : []));
    expect(started).toHaveLength(2);
    expect(currentVersion('RelayStarted')).toBe(4);
    for (const s of started) {
      expect(s.version).toBe(4);
      expect(s.data).toMatchObject({ software: null, config: null });
      expect(lines.some((l) => l.includes(s.id) && l.includes('\\"version\\":1'))).toBe(true);
    }
    const seeded = entries.flatMap((e) => (e.ok && e.event.type === 'TopologySeeded' ? [e.event] : []));
    expect(seeded.length).toBeGreaterThan(0);
    for (const s of seeded) expect(s).toMatchObject({ version: 3, data: { digest: null, sessions: 'all' } });
  });

  it('still refuses versions it does not know and v1 data that breaks the v1 schema', () => {
    const e = envelope({ source: 'relay-1', ...at }, 'RelayStarted', 1, { name: 'r', region: 'x', publicKey: 'k' });
    expect(parseEvent(JSON.parse(JSON.stringify({ ...e, version: 5 })))).toMatchObject({ ok: false, error: expect.stringMatching(/no schema version 5/) });
    expect(parseEvent(JSON.parse(JSON.stringify({ ...e, data: { ...e.data, software: 'x' } })))).toMatchObject({
      ok: false,
      error: expect.stringMatching(/^data/),
    });
    expect(parseEvent(JSON.parse(JSON.stringify(e)))).toMatchObject({ ok: true, event: { version: 4, data: { software: null, config: null } } });
    // A v3 configuration had the control plane inside denyCidrs and knew no allowed ranges.
    const config = {
      wgPrefix: 'rc',
      keepaliveSeconds: 25,
      mtu: 1420,
      privateKeyFile: '/k',
      exitTableBase: 100_000,
      rulePriorityBase: 20_000,
      clientSupernet: '100.96.0.0/11',
      denyCidrs: ['198.18.0.2/32'],
      clientIdleAfterMs: 1,
      linkStaleAfterMs: 1,
      linkDownAfterMs: 1,
      sysctlsBefore: {},
      sysctlsAtStart: {},
    };
    const v3 = envelope({ source: 'relay-1', ...at }, 'RelayStarted', 3, { name: 'r', region: 'x', publicKey: 'k', software: 'relay-core 0.1.0', config });
    expect(parseEvent(JSON.parse(JSON.stringify(v3)))).toMatchObject({
      ok: true,
      event: { version: 4, data: { config: { ...config, allowCidrs: [], serviceCidrs: [] } } },
    });
    const reg = envelope({ source: 'relay-1', ...at }, 'RelayRegistered', 1, {
      revision: 3,
      meshAddress: '100.64.0.1',
      clientPool: '100.96.0.0/22',
      readmitted: false,
    });
    expect(parseEvent(JSON.parse(JSON.stringify(reg)))).toMatchObject({ ok: true, event: { version: 2, data: { serviceCidrs: [] } } });
  });

  it('docs/schemas holds the JSON Schema of every event version, as generated (npm run schemas)', () => {
    const want = catalogueJsonSchemas();
    const dir = join(ROOT, 'docs/schemas');
    expect(
      readdirSync(dir)
        .filter((f) => f.endsWith('.json'))
        .sort(),
    ).toEqual(Object.keys(want).sort());
    for (const [name, schema] of Object.entries(want))
      expect(JSON.parse(readFileSync(join(dir, name), 'utf8')), name).toEqual(JSON.parse(JSON.stringify(schema)));
  });
});
