import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RelayEventPublisher } from '../../src/bus/relay-event-publisher.ts';
import { bootstrapStreams } from '../../src/bus/streams.ts';
import type { AnyEvent } from '../../src/contract/catalogue.ts';
import { envelope } from '../../src/contract/envelope.ts';
import type { RelayEvent } from '../../src/contract/relay.events.ts';
import { eventually, RELAY_CORE_BIN } from '../../src/devnet/relay-process.ts';
import { generateSigningKeyPair, importPrivateKey, signBytes } from '../../src/events/signing.ts';
import { encodeEvent, SIGNATURE_HEADER } from '../../src/events/wire.ts';
import { loadOrCreateIdentityKey } from '../../src/lib/identity-key.ts';
import { rootLogger } from '../../src/lib/logger.ts';
import type { ReplayResult } from '../../src/replay/replay.ts';
import { type AuthedNats, type BusParty, startAuthedNats } from '../support/authed-nats.ts';
import { relay } from '../support/given.ts';
import { tempDir } from '../support/temp.ts';

const log = rootLogger({ test: 'signed-events' }, 'warn');
/** Anything a terminal would act on: C0 but newline, DEL, C1, bidi controls. */
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;
const CLEAR = '\u001b[2J\u001b]0;owned\u0007';

/**
 * `events tail`, `events export` and `replay` as a user runs them (bin/relay-core) against a real
 * nats-server holding genuine, forged and unsigned topology and relay messages side by side: every
 * forged or unsigned one is shown as rejected with its sequence and reason, the genuine ones win, and
 * no control character from the stored data reaches the output. The bus runs with decentralized auth:
 * the forger holds NATS credentials (the publisher's, a relay's: a stolen `nats.creds`) but not the
 * signing keys; the commands read with the operator's reader credentials.
 */
describe('signed events on a real nats-server', () => {
  let nats: AuthedNats;
  let tmp: ReturnType<typeof tempDir>;
  const conns = new Map<string, Promise<NatsConnection>>();
  /** One connection per party, made on first use. */
  const as = (party: BusParty) => {
    const key = party.kind === 'relay' ? party.relayId : party.kind;
    if (!conns.has(key)) conns.set(key, nats.connect(party));
    return conns.get(key)!;
  };
  /** Who may publish on `subject`: the topology publisher, or the relay it names. */
  const publisherOf = (subject: string): BusParty => {
    const relayId = /^relaynet\.relay\.([^.]+)\./.exec(subject)?.[1];
    return relayId ? { kind: 'relay', relayId } : { kind: 'publisher' };
  };
  const cp = generateSigningKeyPair();
  const r2 = generateSigningKeyPair();
  const attacker = generateSigningKeyPair();
  let r1Key = '';
  const seq: Record<string, number> = {};
  const cli = (args: string[], timeout = 60_000) => execa(RELAY_CORE_BIN, args, { reject: false, timeout, env: { NO_COLOR: '1' } });

  const publish = async (name: string, subject: string, data: Uint8Array, signer: { seed: string } | null) => {
    const h = headers();
    if (signer) h.set(SIGNATURE_HEADER, signBytes(importPrivateKey(signer.seed), data));
    const ack = await jetstream(await as(publisherOf(subject))).publish(subject, data, { headers: h });
    seq[name] = ack.seq;
  };
  const cpSource = { source: 'control-plane', now: () => new Date(), newId: randomUUID };
  const admitted = (revision: number, n: number, identityKey: string | null, endpoint: string) =>
    encodeEvent(envelope(cpSource, 'RelayAdmitted', 2, { revision, relay: relay(n, { endpoint }), identityKey }) as AnyEvent);
  const linkEvent = (source: string, reason: string) =>
    encodeEvent(
      envelope({ source, now: () => new Date(), newId: randomUUID }, 'LinkStateChanged', 1, {
        peerId: 'relay-2',
        device: 'rc1m2',
        state: 'up' as const,
        reason,
        latestHandshakeMs: 1,
        rxBytes: 0,
        txBytes: 0,
      }) as AnyEvent,
    );

  beforeAll(async () => {
    tmp = tempDir('signed-events');
    nats = await startAuthedNats(join(tmp.dir, 'nats'), join(tmp.dir, 'cp'));
    await bootstrapStreams(await jetstreamManager(await as({ kind: 'admin' })));
    // relay-1 as the daemon runs it: its identity key file, and the publisher signing with it.
    const id1 = loadOrCreateIdentityKey(join(tmp.dir, 'relay-1', 'identity.key'));
    r1Key = id1.publicKey;

    // The topology stream: genuine admissions, a forged copy of revision 2 that would move relay-2 and
    // announce the attacker's identity key, and an unsigned admission of a relay that does not exist.
    await publish('admit1', 'relaynet.topology.relay-1.relay-admitted', admitted(1, 1, r1Key, '198.51.100.1:51820'), cp);
    await publish('admit2', 'relaynet.topology.relay-2.relay-admitted', admitted(2, 2, r2.publicKey, '198.51.100.2:51820'), cp);
    await publish('forgedAdmit2', 'relaynet.topology.relay-2.relay-admitted', admitted(2, 2, attacker.publicKey, '203.0.113.66:51820'), attacker);
    await publish('unsignedAdmit9', 'relaynet.topology.relay-9.relay-admitted', admitted(3, 9, attacker.publicKey, '203.0.113.9:51820'), null);

    // relay-1's own stream: genuine events through the real publisher (one with an escape sequence in
    // a free-text field), then an unsigned copy, one signed by the attacker, one in relay-2's name
    // signed with the attacker's key (which the forged admission announced), and a subject with ESC.
    const pub = new RelayEventPublisher({
      js: jetstream(await as({ kind: 'relay', relayId: 'relay-1' })),
      relayId: 'relay-1',
      logger: log,
      identity: id1.privateKey,
    });
    const mk = (type: string, data: unknown) =>
      envelope({ source: 'relay-1', now: () => new Date(), newId: randomUUID }, type as never, type === 'TopologySeeded' ? 2 : 1, data as never) as RelayEvent;
    pub.publish(mk('TopologySeeded', { revision: 2, relays: 2, reason: 'boot', digest: null }));
    pub.publish(
      mk('LinkStateChanged', { peerId: 'relay-2', device: 'rc1m2', state: 'up', reason: `handshake${CLEAR}`, latestHandshakeMs: 1, rxBytes: 0, txBytes: 0 }),
    );
    await pub.close(5_000);
    expect(pub.published).toBe(2);
    await publish('unsigned', 'relaynet.relay.relay-1.link.link-state-changed', linkEvent('relay-1', 'forged-unsigned'), null);
    await publish('forged', 'relaynet.relay.relay-1.link.link-state-changed', linkEvent('relay-1', 'forged-signed'), attacker);
    await publish('forgedRelay2', 'relaynet.relay.relay-2.link.link-state-changed', linkEvent('relay-2', 'forged-relay-2'), attacker);
    await publish('evilSubject', `relaynet.relay.relay-1.link.x${CLEAR}`, new TextEncoder().encode(`{"id":"${CLEAR}`), null);
  }, 60_000);

  afterAll(async () => {
    for (const c of conns.values()) await (await c).close();
    await nats?.server.stop();
    if (!process.env.KEEP_TMP) tmp?.remove();
  });

  const reader = () => ['--nats-url', nats.url, '--nats-creds', nats.bus.creds.reader];
  const base = () => [...reader(), '--topology-key', cp.publicKey];

  it('events tail shows forged and unsigned messages as rejected lines with sequence and reason, and no raw control character', async () => {
    for (const json of [false, true]) {
      const p = execa(RELAY_CORE_BIN, ['events', 'tail', '--since', 'all', ...base(), ...(json ? ['--json'] : [])], {
        reject: false,
        timeout: 60_000,
        env: { NO_COLOR: '1' },
        buffer: false,
      });
      let out = '';
      p.stdout!.on('data', (b: Buffer) => (out += b.toString('utf8')));
      await eventually('every message in the tail', async () => out.split('\n').filter(Boolean).length >= 10, 30_000);
      p.kill('SIGINT');
      const r = await p;
      expect(r.exitCode).toBe(0);
      expect(RAW_CONTROL.test(out), JSON.stringify(out)).toBe(false);
      const lines = out.trim().split('\n');
      if (!json) {
        const line = (stream: 'T' | 'R', n: number) => lines.find((l) => l.includes(` ${stream}#${n} `)) ?? '';
        expect(line('T', seq.forgedAdmit2!)).toMatch(/REJECTED bad-signature relaynet\.topology\.relay-2\.relay-admitted/);
        expect(line('T', seq.unsignedAdmit9!)).toMatch(/REJECTED unsigned/);
        expect(line('T', seq.admit2!)).toMatch(/control-plane RelayAdmitted .*relay\.endpoint=198\.51\.100\.2:51820/);
        expect(line('R', seq.unsigned!)).toMatch(/REJECTED unsigned relaynet\.relay\.relay-1\./);
        expect(line('R', seq.forged!)).toMatch(/REJECTED bad-signature .*identity key of relay-1/);
        expect(line('R', seq.forgedRelay2!)).toMatch(/REJECTED bad-signature .*identity key of relay-2/);
        expect(line('R', seq.evilSubject!)).toMatch(/REJECTED unsigned relaynet\.relay\.relay-1\.link\.x\\e\[2J\\e\]0;owned\\x07/);
        const genuine = lines.find((l) => / R#\d+ relay-1 LinkStateChanged /.test(l));
        expect(genuine).toContain('reason="handshake\\u001b[2J\\u001b]0;owned\\u0007"');
      } else {
        const parsed = lines.map((l) => JSON.parse(l) as { stream: string; seq: number; event?: { data: { reason?: string } }; skipped?: { reason: string } });
        const at = (stream: string, n: number) => parsed.find((l) => l.stream === stream && l.seq === n);
        expect(at('topology', seq.forgedAdmit2!)).toMatchObject({ skipped: { reason: 'bad-signature' } });
        expect(at('relay', seq.unsigned!)).toMatchObject({ skipped: { reason: 'unsigned' } });
        expect(at('relay', seq.forged!)).toMatchObject({ skipped: { reason: 'bad-signature' } });
        // The JSON is lossless: the genuine event's text comes back exactly.
        expect(parsed.some((l) => l.event?.data.reason === `handshake${CLEAR}`)).toBe(true);
        expect(parsed.filter((l) => l.event).length).toBe(4);
      }
    }
  }, 120_000);

  it('live, a relay event stored before the admission of its relay is shown verified once the admission arrives; an unknown key stays rejected', async () => {
    const p = execa(RELAY_CORE_BIN, ['events', 'tail', '--json', '--stream', 'relay', ...base()], {
      reject: false,
      timeout: 60_000,
      buffer: false,
    });
    let out = '';
    p.stdout!.on('data', (b: Buffer) => (out += b.toString('utf8')));
    await new Promise((r) => setTimeout(r, 1_500)); // the tail is following
    const r8 = generateSigningKeyPair();
    // relay-8's first event, then (a second later) the control plane's admission announcing its key.
    await publish('early8', 'relaynet.relay.relay-8.link.link-state-changed', linkEvent('relay-8', 'first-event'), r8);
    await publish('unknown7', 'relaynet.relay.relay-7.link.link-state-changed', linkEvent('relay-7', 'nobody-knows-me'), attacker);
    await new Promise((r) => setTimeout(r, 1_000));
    await publish('admit8', 'relaynet.topology.relay-8.relay-admitted', admitted(4, 8, r8.publicKey, '198.51.100.8:51820'), cp);
    await eventually('both relay messages in the tail', async () => out.includes(`"seq":${seq.early8},`) && out.includes(`"seq":${seq.unknown7},`), 20_000);
    p.kill('SIGINT');
    expect((await p).exitCode).toBe(0);
    const lines = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { seq: number; event?: unknown; skipped?: { reason: string } });
    expect(lines.find((l) => l.seq === seq.early8)).toMatchObject({ event: { source: 'relay-8', data: { reason: 'first-event' } } });
    expect(lines.find((l) => l.seq === seq.unknown7)).toMatchObject({ skipped: { reason: 'unknown-key' } });
  }, 60_000);

  it('events export keeps rejected messages marked, reports them to stderr, and replay of the file keeps the genuine revision', async () => {
    const file = join(tmp.dir, 'export.jsonl');
    const ex = await cli(['events', 'export', ...base(), '--out', file]);
    expect(ex.exitCode, ex.stderr).toBe(0);
    expect(RAW_CONTROL.test(ex.stderr)).toBe(false);
    expect(ex.stderr).toMatch(new RegExp(`rejected T#${seq.forgedAdmit2} bad-signature`));
    expect(ex.stderr).toMatch(new RegExp(`rejected R#${seq.unsigned} unsigned`));
    expect(ex.stderr).toMatch(new RegExp(`rejected R#${seq.forged} bad-signature`));
    expect(ex.stderr).toMatch(/exported 13 messages \(7 of them rejected/);
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    expect(lines.every((l) => !RAW_CONTROL.test(l))).toBe(true);
    const marked = lines.map((l) => JSON.parse(l) as { stream: string; seq: number; rejected?: { reason: string } }).filter((l) => l.rejected);
    expect(marked.map((l) => `${l.stream}#${l.seq}:${l.rejected!.reason}`).sort()).toEqual(
      [
        `topology#${seq.forgedAdmit2}:bad-signature`,
        `topology#${seq.unsignedAdmit9}:unsigned`,
        `relay#${seq.unsigned}:unsigned`,
        `relay#${seq.forged}:bad-signature`,
        `relay#${seq.forgedRelay2}:bad-signature`,
        `relay#${seq.evilSubject}:unsigned`,
        `relay#${seq.unknown7}:unknown-key`,
      ].sort(),
    );

    // Replay of the file verifies every line again: the forged revision 2 is skipped, the genuine one counts.
    const rp = await cli(['replay', '--relay', 'relay-1', '--file', file, '--topology-key', cp.publicKey, '--json']);
    expect(rp.exitCode, rp.stderr).toBe(0);
    const res = JSON.parse(rp.stdout) as ReplayResult;
    expect(res.topology.relays.find((r) => r.id === 'relay-2')?.endpoint).toBe('198.51.100.2:51820');
    expect(res.topology.view).toBe('rebuilt');
    expect(res.skipped.map((s) => `${s.stream}#${s.seq}:${s.reason}`)).toEqual(
      expect.arrayContaining([`topology#${seq.forgedAdmit2}:bad-signature`, `relay#${seq.unsigned}:unsigned`, `relay#${seq.forged}:bad-signature`]),
    );
    expect(res.links.map((l) => l.reason)).toEqual([`handshake${CLEAR}`]);
    expect(res.events.relay).toBe(2);
  }, 120_000);

  it('replay from NATS prints rejected messages with sequence and reason and nothing raw; no key is a usage error', async () => {
    const rp = await cli(['replay', '--relay', 'relay-1', ...base()]);
    expect(rp.exitCode, rp.stderr).toBe(0);
    expect(RAW_CONTROL.test(rp.stdout), JSON.stringify(rp.stdout)).toBe(false);
    expect(rp.stdout).toContain(`REJECTED topology seq ${seq.forgedAdmit2}: bad-signature`);
    expect(rp.stdout).toContain(`REJECTED relay seq ${seq.forged}: bad-signature`);
    expect(rp.stdout).toMatch(/relay-2\s+100\.64\.0\.2\s+198\.51\.100\.2:51820/);
    expect(rp.stdout).not.toContain('203.0.113.66');
    expect(rp.stdout).toContain('handshake\\e[2J\\e]0;owned\\x07');

    // The topology key signs nothing for an attacker: with the attacker's key as the "control plane", relay-1's genuine admission is rejected.
    const wrong = await cli(['replay', '--relay', 'relay-1', ...reader(), '--topology-key', attacker.publicKey, '--json']);
    const w = JSON.parse(wrong.stdout) as ReplayResult;
    expect(w.skipped.find((s) => s.stream === 'topology' && s.seq === seq.admit1)).toMatchObject({ reason: 'bad-signature' });
    expect(w.events.relay).toBe(0);

    for (const cmd of [
      ['events', 'export'],
      ['replay', '--relay', 'relay-1'],
    ]) {
      const r = await execa(RELAY_CORE_BIN, [...cmd, ...reader()], { reject: false, timeout: 30_000, env: { RELAYNET_TOPOLOGY_KEY: '' } });
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(/--topology-key .*--no-verify/);
    }
    const unchecked = await cli(['events', 'export', ...reader(), '--no-verify']);
    expect(unchecked.exitCode).toBe(0);
    expect(unchecked.stderr).toMatch(/signatures are not checked/);
  }, 120_000);
});
