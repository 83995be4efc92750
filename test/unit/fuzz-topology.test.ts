import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { createActor, fromCallback, fromPromise, waitFor, type Actor } from 'xstate';
import { relayMachine, type Emission, type FollowCommand } from '../../src/actors/relay.machine.ts';
import type { RegisterResponse } from '../../src/contract/api-relays.ts';
import { envelope } from '../../src/contract/envelope.ts';
import { topologySubject } from '../../src/contract/subjects.ts';
import type { ClientSession, TopologyEvent } from '../../src/contract/topology.events.ts';
import { generateSigningKeyPair, importPrivateKey, importPublicKey, signBytes } from '../../src/events/signing.ts';
import { applyTopologyEvent, EMPTY_TOPOLOGY, evolveTopology, seedTopology, type TopologyView } from '../../src/events/topology.fold.ts';
import {
  decodeEvent,
  decodeTopologyMessage,
  decodeUnsignedTopologyMessage,
  MAX_EVENT_BYTES,
  type DecodeResult,
  type Rejection,
} from '../../src/events/wire.ts';
import { badRelayId, FUZZ_SEED, mutationOf, nastyString, runs, Tally } from '../support/fuzz.ts';
import { busDetails, key, relay } from '../support/given.ts';

/**
 * Issue 14, part 7: generated malformed, truncated, oversized, replayed and forged messages through
 * the relay's decoder (src/events/wire.ts) and fold, the way the topology follower hands them to the
 * relay actor (src/daemon/topology-follower.ts: decodeTopologyMessage, then TOPOLOGY_EVENT or
 * TOPOLOGY_REJECTED). Nothing may throw; every rejection has a reason and is counted by the relay
 * actor; a rejected message leaves the view exactly as it was; genuine sequences, whatever noise is
 * interleaved, fold to the expected view. Seed: RELAYNET_FUZZ_SEED (default 14); run counts scale
 * with RELAYNET_FUZZ_SCALE (default 1: 100,000+ messages in all). The figures are in docs/security.md.
 */

/** Generous: the counts are fixed, the machine is shared (2 cores); the runs take seconds to tens of seconds. */
const TIMEOUT = 300_000;

const REASONS: readonly Rejection['reason'][] = ['oversized', 'malformed', 'bad-signature', 'unsigned', 'schema', 'foreign-source', 'subject-mismatch'];
const enc = new TextEncoder();

// --- the genuine history: the control plane's signed log --------------------------------------------

const cpKeys = generateSigningKeyPair();
const cpPriv = importPrivateKey(cpKeys.seed);
const cpPub = importPublicKey(cpKeys.publicKey);
const forger = importPrivateKey(generateSigningKeyPair().seed);

let ids = 0;
const cp = {
  source: 'control-plane',
  now: () => new Date('2026-11-25T00:00:00Z'),
  newId: () => `00000000-0000-4000-8000-${(++ids).toString(16).padStart(12, '0')}`,
};
const session = (n: number, entryId: string, exitId: string): ClientSession => ({
  id: `5e55e55e-0000-4000-8000-${n.toString(16).padStart(12, '0')}`,
  entryId,
  exitId,
  publicKey: key(1000 + n),
  address: `100.96.${n}.2`,
  openedAt: '2026-11-25T00:00:00.000Z',
  expiresAt: '2026-11-26T00:00:00.000Z',
  mode: 'standard',
});
const s1 = session(1, 'relay-1', 'relay-2');
const s2 = session(2, 'relay-3', 'relay-4');

/** Every topology event type, revisions 1..12, about relays 2..5 and two sessions (relay-1 is self, in the snapshot). */
const HISTORY: TopologyEvent[] = [
  envelope(cp, 'RelayAdmitted', 1, { revision: 1, relay: relay(2) }),
  envelope(cp, 'RelayAdmitted', 1, { revision: 2, relay: relay(3, { exitIpv6: true }) }),
  envelope(cp, 'RelayAdmitted', 1, { revision: 3, relay: relay(4) }),
  envelope(cp, 'ClientSessionOpened', 2, { revision: 4, session: s1 }),
  envelope(cp, 'ClientSessionOpened', 2, { revision: 5, session: s2 }),
  envelope(cp, 'RelayKeyRotated', 1, { revision: 6, relayId: 'relay-2', publicKey: key(202), previousPublicKey: key(2) }),
  envelope(cp, 'RelayEndpointChanged', 1, { revision: 7, relayId: 'relay-3', endpoint: 'relay-3.example.net:51820', previousEndpoint: relay(3).endpoint }),
  envelope(cp, 'RelayCapabilitiesChanged', 1, { revision: 8, relayId: 'relay-4', exitIpv6: true }),
  envelope(cp, 'ClientSessionExitChanged', 2, {
    revision: 9,
    sessionId: s1.id,
    entryId: 'relay-1',
    exitId: 'relay-3',
    previousExitId: 'relay-2',
    session: { ...s1, exitId: 'relay-3' },
  }),
  envelope(cp, 'ClientSessionClosed', 1, { revision: 10, sessionId: s2.id, entryId: 'relay-3', reason: 'disconnected' }),
  envelope(cp, 'RelayLeft', 1, { revision: 11, relayId: 'relay-4', reason: 'deregistered' }),
  envelope(cp, 'RelayAdmitted', 1, { revision: 12, relay: relay(5) }),
] as TopologyEvent[];
const N = HISTORY.length;

interface Wire {
  subject: string;
  data: Uint8Array;
  sig: string | undefined;
}
const GENUINE: Wire[] = HISTORY.map((e) => {
  const data = enc.encode(JSON.stringify(e));
  return { subject: topologySubject(e), data, sig: signBytes(cpPriv, data) };
});

const SELF = relay(1);
/** The view after the first `i` events, seeded with self at revision 0 (keeping the sessions entering at it, as a relay does). */
const PREFIX: TopologyView[] = [seedTopology(0, [SELF], [], SELF.id)];
for (const e of HISTORY) PREFIX.push(evolveTopology(PREFIX[PREFIX.length - 1]!, e));
const FINAL = PREFIX[N]!;

// --- the relay actor, with faked I/O (as test/unit/relay-machine.test.ts) -----------------------------

function registration(view: TopologyView): RegisterResponse {
  return {
    relay: SELF,
    readmitted: false,
    revision: view.revision,
    revisionTime: '2026-11-25T00:00:00.000Z',
    relays: [...view.relays.values()].filter((r) => r.id !== SELF.id),
    sessions: Object.values(view.sessions),
    bus: busDetails(cpKeys.publicKey),
    heartbeatIntervalSeconds: 10,
  };
}

async function relayActor(seed: TopologyView): Promise<{ actor: Actor<typeof relayMachine>; emitted: Emission[]; registrations: () => number }> {
  const emitted: Emission[] = [];
  let registrations = 0;
  const machine = relayMachine.provide({
    actors: {
      register: fromPromise(async () => {
        registrations++;
        return registration(seed);
      }),
      follow: fromCallback<FollowCommand, { registration: RegisterResponse }>(() => () => {}),
      heartbeat: fromCallback(() => () => {}),
      deregister: fromPromise(async () => ({ revision: 0 })),
    },
    actions: { emit: (_, p) => void emitted.push(p), reportFatal: () => {} },
    delays: { resyncRetry: 1 },
  });
  let n = 0;
  const actor = createActor(machine, {
    input: {
      request: { relayId: SELF.id, name: SELF.name, region: SELF.region, publicKey: SELF.publicKey, endpoint: SELF.endpoint },
      deps: { newId: () => `00000000-0000-4000-9000-${(++n).toString(16).padStart(12, '0')}`, now: () => 0 },
    },
  });
  actor.start();
  await waitFor(actor, (s) => s.matches('serving'));
  return { actor, emitted, registrations: () => registrations };
}

/**
 * What the follower does with one message: decode, then hand the event or the rejection to the relay
 * actor. A mutation the control plane's key signed may be a valid event at a new revision (a byte of
 * the revision changed): the control plane did publish that, so it is not offered (`skipped`), since
 * it would rightly apply or resync; such messages are counted.
 */
function follow(actor: Actor<typeof relayMachine>, m: Wire, seq: number, decoded?: DecodeResult<TopologyEvent>, offerNew = false) {
  const r = decoded ?? decodeTopologyMessage(m.subject, m.data, m.sig, cpPub);
  if (!offerNew && r.ok && r.event.data.revision > actor.getSnapshot().context.view.revision) return { ...r, skipped: true };
  if (r.ok) actor.send({ type: 'TOPOLOGY_EVENT', event: r.event, streamSeq: seq });
  else actor.send({ type: 'TOPOLOGY_REJECTED', rejection: r.rejection, subject: m.subject, streamSeq: seq });
  return { ...r, skipped: false };
}

// --- the generators -------------------------------------------------------------------------------

type Kind = 'random-bytes' | 'truncated' | 'oversized' | 'byte-flip' | 'schema' | 'replayed' | 'forged' | 'subject' | 'foreign-source' | 'invalid-utf8';
interface Msg extends Wire {
  kind: Kind;
  /** Certain to be rejected (a valid message could not look like this). */
  mustReject: boolean;
  /** What a schema mutation changed. */
  what?: string;
  /** The genuine message it was made from, if any. */
  from: number | null;
}

const genuineIndex = (upTo = N) => fc.integer({ min: 0, max: upTo - 1 });

/** A signature for bytes: the control plane's over exactly these bytes (so deeper checks run), none, a forger's, garbage. */
const signatureFor = (data: Uint8Array, from: number | null) =>
  fc.oneof(
    { weight: 6, arbitrary: fc.constant({ sig: signBytes(cpPriv, data) as string | undefined, valid: true }) },
    { weight: 1, arbitrary: fc.constant({ sig: undefined, valid: false }) },
    { weight: 1, arbitrary: fc.constant({ sig: signBytes(forger, data) as string | undefined, valid: false }) },
    { weight: 1, arbitrary: fc.oneof(fc.base64String({ maxLength: 120 }), nastyString).map((s) => ({ sig: s as string | undefined, valid: false })) },
    // The genuine signature of the message it was made from: valid only when the bytes came out the same.
    ...(from === null ? [] : [{ weight: 1, arbitrary: fc.constant({ sig: GENUINE[from]!.sig, valid: Buffer.from(data).equals(GENUINE[from]!.data) }) }]),
  );

const subjectArb = fc.oneof(
  { weight: 4, arbitrary: genuineIndex().map((i) => GENUINE[i]!.subject) },
  { weight: 1, arbitrary: badRelayId.map((id) => `relaynet.topology.${id}.relay-admitted`) },
  { weight: 1, arbitrary: nastyString },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      'relaynet.topology.relay-2',
      'relaynet.relay.relay-2.topology.relay-admitted',
      'relaynet.topology.relay-2.relay-admitted.x',
      '>',
      '',
    ),
  },
);

const randomBytes: fc.Arbitrary<Msg> = fc
  .tuple(fc.uint8Array({ maxLength: 1024 }), subjectArb)
  .chain(([data, subject]) => signatureFor(data, null).map(({ sig }) => ({ kind: 'random-bytes' as const, subject, data, sig, mustReject: true, from: null })));

/** Random JSON text (valid JSON, any shape). */
const randomJson: fc.Arbitrary<Msg> = fc.tuple(fc.jsonValue({ maxDepth: 3 }), subjectArb).chain(([v, subject]) => {
  const data = enc.encode(JSON.stringify(v) ?? 'null');
  return signatureFor(data, null).map(({ sig }) => ({ kind: 'random-bytes' as const, subject, data, sig, mustReject: true, from: null }));
});

const truncated: fc.Arbitrary<Msg> = genuineIndex()
  .chain((i) => fc.tuple(fc.constant(i), fc.integer({ min: 0, max: GENUINE[i]!.data.byteLength - 1 })))
  .chain(([i, cut]) => {
    const data = GENUINE[i]!.data.slice(0, cut);
    return signatureFor(data, i).map(({ sig }) => ({ kind: 'truncated' as const, subject: GENUINE[i]!.subject, data, sig, mustReject: true, from: i }));
  });

const oversized: fc.Arbitrary<Msg> = fc
  .tuple(genuineIndex(), fc.integer({ min: 1, max: 8192 }), fc.constantFrom('name', 'padding', 'bytes'))
  .chain(([i, extra, how]) => {
    const e = HISTORY[i]!;
    let data: Uint8Array;
    if (how === 'bytes') data = new Uint8Array(MAX_EVENT_BYTES + extra).fill(0x20);
    else {
      const big = 'x'.repeat(MAX_EVENT_BYTES + extra);
      const v = how === 'name' && e.type === 'RelayAdmitted' ? { ...e, data: { ...e.data, relay: { ...e.data.relay, name: big } } } : { ...e, padding: big };
      data = enc.encode(JSON.stringify(v));
    }
    return signatureFor(data, i).map(({ sig }) => ({ kind: 'oversized' as const, subject: GENUINE[i]!.subject, data, sig, mustReject: true, from: i }));
  });

const byteFlip: fc.Arbitrary<Msg> = genuineIndex()
  .chain((i) => fc.tuple(fc.constant(i), fc.integer({ min: 0, max: GENUINE[i]!.data.byteLength - 1 }), fc.integer({ min: 0, max: 255 })))
  .chain(([i, at, b]) => {
    const data = GENUINE[i]!.data.slice();
    const changed = data[at] !== b;
    data[at] = b;
    // Unsigned or the genuine signature over other bytes: must be rejected; the control plane's over these bytes: may be valid.
    return signatureFor(data, i).map(({ sig, valid }) => ({
      kind: 'byte-flip' as const,
      subject: GENUINE[i]!.subject,
      data,
      sig,
      mustReject: !valid && changed,
      from: i,
    }));
  });

const invalidUtf8: fc.Arbitrary<Msg> = genuineIndex()
  .chain((i) =>
    fc.tuple(
      fc.constant(i),
      fc.integer({ min: 1, max: GENUINE[i]!.data.byteLength - 2 }),
      fc.constantFrom([0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82]),
    ),
  )
  .chain(([i, at, bad]) => {
    const g = GENUINE[i]!.data;
    const data = new Uint8Array([...g.slice(0, at), ...bad, ...g.slice(at)]);
    return signatureFor(data, i).map(({ sig }) => ({ kind: 'invalid-utf8' as const, subject: GENUINE[i]!.subject, data, sig, mustReject: true, from: i }));
  });

const MUTATIONS = HISTORY.map((e) => mutationOf(e, { optional: ['exitIpv6'] }));
const schema: fc.Arbitrary<Msg> = genuineIndex()
  .chain((i) => fc.tuple(fc.constant(i), MUTATIONS[i]!))
  .chain(([i, m]) => {
    const data = enc.encode(JSON.stringify(m.value));
    return signatureFor(data, i).map(({ sig, valid }) => ({
      kind: 'schema' as const,
      what: m.what,
      subject: GENUINE[i]!.subject,
      data,
      sig,
      mustReject: m.mustReject || !valid,
      from: i,
    }));
  });

/** A genuine message again: a duplicate of an applied revision (the view is at N). */
const replayed: fc.Arbitrary<Msg> = genuineIndex().map((i) => ({ kind: 'replayed' as const, ...GENUINE[i]!, mustReject: false, from: i }));

/** Forged: genuine bytes with a forger's or another message's signature, or a new event (the next revision) signed by a forger. */
const forged: fc.Arbitrary<Msg> = fc.oneof(
  fc.tuple(genuineIndex(), genuineIndex()).map(([i, j]) => {
    const g = GENUINE[i]!;
    return { kind: 'forged' as const, subject: g.subject, data: g.data, sig: i === j ? signBytes(forger, g.data) : GENUINE[j]!.sig, mustReject: true, from: i };
  }),
  fc.integer({ min: 6, max: 99 }).map((n) => {
    const e = envelope(cp, 'RelayAdmitted', 1, { revision: N + 1, relay: relay(n) });
    const data = enc.encode(JSON.stringify(e));
    return { kind: 'forged' as const, subject: topologySubject(e as TopologyEvent), data, sig: signBytes(forger, data), mustReject: true, from: null };
  }),
);

/** A genuine, signed message on another subject (another relay's, another event's, garbage). */
const subjectMismatch: fc.Arbitrary<Msg> = fc.tuple(genuineIndex(), subjectArb).map(([i, subject]) => ({
  kind: 'subject' as const,
  ...GENUINE[i]!,
  subject,
  mustReject: subject !== GENUINE[i]!.subject,
  from: i,
}));

/** A relay's own event dressed as the control plane's: signed with the control-plane key but another source. */
const foreignSource: fc.Arbitrary<Msg> = fc.tuple(genuineIndex(), fc.constantFrom('relay-2', 'relay-1', 'relay-99')).map(([i, source]) => {
  const data = enc.encode(JSON.stringify({ ...HISTORY[i]!, source }));
  return { kind: 'foreign-source' as const, subject: GENUINE[i]!.subject, data, sig: signBytes(cpPriv, data), mustReject: true, from: i };
});

/** Every kind of bad (or replayed) message. */
const anyMessage: fc.Arbitrary<Msg> = fc.oneof(
  { weight: 3, arbitrary: randomBytes },
  { weight: 2, arbitrary: randomJson },
  { weight: 3, arbitrary: truncated },
  { weight: 1, arbitrary: oversized },
  { weight: 3, arbitrary: byteFlip },
  { weight: 2, arbitrary: invalidUtf8 },
  { weight: 10, arbitrary: schema },
  { weight: 2, arbitrary: replayed },
  { weight: 3, arbitrary: forged },
  { weight: 2, arbitrary: subjectMismatch },
  { weight: 1, arbitrary: foreignSource },
);

// --- the figures -----------------------------------------------------------------------------------

const figures = { messages: 0, byKind: new Tally(), rejected: new Tally(), accepted: new Tally(), relayEvents: 0, relayRejected: new Tally() };
const started = Date.now();
afterAll(() => {
  // One line for docs/security.md (scripts/fuzz.sh collects it).
  console.log(
    `FUZZ-TOPOLOGY ${JSON.stringify({
      seed: FUZZ_SEED,
      messages: figures.messages,
      relayEventMessages: figures.relayEvents,
      byKind: figures.byKind.sorted(),
      rejectedByReason: figures.rejected.sorted(),
      accepted: figures.accepted.sorted(),
      relayEventsRejectedByReason: figures.relayRejected.sorted(),
      ms: Date.now() - started,
    })}`,
  );
});

function checkRejection(r: { ok: false; rejection: Rejection }): void {
  if (!REASONS.includes(r.rejection.reason)) throw new Error(`unknown rejection reason ${r.rejection.reason}`);
  if (typeof r.rejection.detail !== 'string' || r.rejection.detail.length === 0) throw new Error('a rejection without a detail');
}

/**
 * The decoders never throw, and agree: what the signed decoder accepts, the unsigned one (readers of a
 * stored log) accepts too, as the same event; what the unsigned one accepts, decodeEvent does.
 */
function decodeAll(m: Wire) {
  const signed = decodeTopologyMessage(m.subject, m.data, m.sig, cpPub);
  const unsigned = decodeUnsignedTopologyMessage(m.subject, m.data);
  if (signed.ok && !(unsigned.ok && isDeepStrictEqual(unsigned.event, signed.event))) throw new Error('signed decoder accepted what the unsigned one did not');
  if (unsigned.ok && !decodeEvent(m.data).ok) throw new Error('decodeEvent rejected a valid topology event');
  for (const r of [signed, unsigned]) if (!r.ok) checkRejection(r);
  return signed;
}

describe('fuzzing the relay decoder and fold (issue 14, part 7)', () => {
  it(
    'single bad messages against a relay at the latest revision: never thrown, each rejection counted by reason, the view untouched',
    async () => {
      const { actor, emitted } = await relayActor(FINAL);
      const view0 = actor.getSnapshot().context.view;
      expect(view0).toEqual(FINAL);
      const expected = { rejected: new Tally(), duplicates: 0 };
      let seq = 0;
      fc.assert(
        fc.property(anyMessage, (m) => {
          const before = actor.getSnapshot().context.view;
          const r = follow(actor, m, ++seq, decodeAll(m));
          figures.messages++;
          figures.byKind.add(m.kind);
          const after = actor.getSnapshot();
          if (r.ok) {
            figures.accepted.add(`${m.kind}:${applyTopologyEvent(FINAL, r.event).kind}`);
            if (m.mustReject)
              throw new Error(
                `accepted a ${m.kind} message (${m.what ?? ''}, signature ${m.sig}) that must be rejected: ${new TextDecoder().decode(m.data.slice(0, 300))}`,
              );
            // Anything valid is a duplicate here, or (signed by the control plane at a new revision) not offered.
            if (r.skipped) figures.accepted.add(`${m.kind}:valid-new-revision-not-offered`);
            else expected.duplicates++;
          } else {
            figures.rejected.add(r.rejection.reason);
            expected.rejected.add(r.rejection.reason);
          }
          // Rejected or duplicate: the view is the same object, and still the genuine one.
          if (after.context.view !== before || !after.matches('serving')) throw new Error(`the view changed on a ${m.kind} message`);
        }),
        { seed: FUZZ_SEED, numRuns: runs(55_000) },
      );
      const s = actor.getSnapshot();
      expect(s.context.view).toEqual(FINAL);
      expect(s.context.view).toBe(view0);
      expect(s.context.counters.rejected).toEqual(expected.rejected.counts);
      expect(s.context.counters.duplicates).toBe(expected.duplicates);
      expect(s.context.counters).toMatchObject({ applied: 0, gaps: 0 });
      // Every rejection is also an event (TopologyEventRejected), with its reason.
      const rejectedEvents = emitted.filter((e) => e.type === 'TopologyEventRejected');
      expect(rejectedEvents).toHaveLength(expected.rejected.total);
      expect(expected.rejected.total).toBeGreaterThan(runs(55_000) * 0.8);
      // Every reason occurs (the generators reach every check).
      expect(Object.keys(expected.rejected.counts).sort()).toEqual([...REASONS].sort());
      actor.stop();
    },
    TIMEOUT,
  );

  it(
    'genuine sequences with interleaved noise (bad messages, replays of applied revisions) fold to the expected view',
    async () => {
      // Noise for a relay at revision `at`: anything bad, or a replay of a revision it already has.
      const noise = (at: number) =>
        fc.array(
          fc.oneof(
            { weight: 4, arbitrary: anyMessage.filter((m) => m.kind !== 'replayed') },
            {
              weight: 1,
              arbitrary: at > 0 ? genuineIndex(at).map((i) => ({ kind: 'replayed' as const, ...GENUINE[i]!, mustReject: false, from: i })) : randomBytes,
            },
          ),
          { maxLength: 12 },
        );
      const sequence = fc.tuple(...HISTORY.map((_, i) => noise(i)), noise(N));
      let total = 0;
      await fc.assert(
        fc.asyncProperty(sequence, async (noises) => {
          const { actor } = await relayActor(PREFIX[0]!);
          let seq = 0;
          const rejected = new Tally();
          let duplicates = 0;
          for (let i = 0; i <= N; i++) {
            for (const m of noises[i]!) {
              const before = actor.getSnapshot().context.view;
              const r = follow(actor, m, ++seq);
              figures.messages++;
              total++;
              figures.byKind.add(m.kind);
              if (r.ok) {
                if (m.mustReject) throw new Error(`accepted a ${m.kind} message that must be rejected`);
                if (r.skipped) figures.accepted.add(`${m.kind}:valid-new-revision-not-offered`);
                else {
                  duplicates++;
                  figures.accepted.add(`${m.kind}:duplicate`);
                }
              } else {
                rejected.add(r.rejection.reason);
                figures.rejected.add(r.rejection.reason);
              }
              if (actor.getSnapshot().context.view !== before) throw new Error(`the view changed on a ${m.kind} message`);
            }
            if (i < N) {
              follow(actor, GENUINE[i]!, ++seq, undefined, true);
              figures.messages++;
              total++;
              figures.byKind.add('genuine');
              if (!isDeepStrictEqual(actor.getSnapshot().context.view, PREFIX[i + 1]))
                throw new Error(`the view after revision ${i + 1} is not the expected one`);
            }
          }
          const s = actor.getSnapshot();
          actor.stop();
          return (
            isDeepStrictEqual(s.context.view, FINAL) &&
            s.context.counters.applied === N &&
            s.context.counters.duplicates === duplicates &&
            s.context.counters.gaps === 0 &&
            isDeepStrictEqual(s.context.counters.rejected, rejected.counts)
          );
        }),
        { seed: FUZZ_SEED, numRuns: runs(300) },
      );
      expect(total).toBeGreaterThan(runs(300) * N);
      // The final view, by hand: relays 1, 2, 3, 5; relay-2's key rotated, relay-3 moved; session 1 leaves at relay-3.
      expect([...FINAL.relays.keys()].sort()).toEqual(['relay-1', 'relay-2', 'relay-3', 'relay-5']);
      expect(FINAL.relays.get('relay-2')!.publicKey).toBe(key(202));
      expect(FINAL.relays.get('relay-3')!.endpoint).toBe('relay-3.example.net:51820');
      expect(Object.values(FINAL.sessions)).toEqual([{ ...s1, exitId: 'relay-3' }]);
    },
    TIMEOUT,
  );

  it(
    'replayed and out-of-order genuine events: duplicates and gaps never change the view; in-order ones apply exactly once',
    () => {
      // A consumer that sees the genuine log shuffled with replays: the fold applies only the next revision.
      const DECODED = GENUINE.map((g) => {
        const r = decodeTopologyMessage(g.subject, g.data, g.sig, cpPub);
        if (!r.ok) throw new Error('a genuine message was rejected');
        return r.event;
      });
      const order = fc.array(genuineIndex(), { minLength: 1, maxLength: 60 });
      fc.assert(
        fc.property(order, (idx) => {
          let view: TopologyView = PREFIX[0]!;
          for (const i of idx) {
            const out = applyTopologyEvent(view, DECODED[i]!);
            figures.messages++;
            figures.byKind.add('reordered');
            const rev = i + 1;
            if (rev <= view.revision) {
              if (out.kind !== 'duplicate') throw new Error(`revision ${rev} at ${view.revision}: ${out.kind}`);
            } else if (rev > view.revision + 1) {
              if (out.kind !== 'gap' || out.expected !== view.revision + 1 || out.got !== rev)
                throw new Error(`revision ${rev} at ${view.revision}: ${out.kind}`);
            } else {
              if (out.kind !== 'applied') throw new Error(`revision ${rev} at ${view.revision}: ${out.kind}`);
              view = out.state;
            }
            if (!isDeepStrictEqual(view, PREFIX[view.revision])) throw new Error(`view at ${view.revision} differs from the genuine prefix`);
          }
          return view === PREFIX[0] || isDeepStrictEqual(view, PREFIX[view.revision]);
        }),
        { seed: FUZZ_SEED, numRuns: runs(1_500) },
      );
      // The genuine log in order folds to the expected view.
      expect(HISTORY.reduce(evolveTopology, PREFIX[0]!)).toEqual(FINAL);
      expect(EMPTY_TOPOLOGY.revision).toBe(0);
    },
    TIMEOUT,
  );

  it(
    'relay events (any catalogue event, as events tail, export and replay read them): never thrown, every rejection with a reason',
    () => {
      const corpus = readFileSync(new URL('../fixtures/replay-sim.jsonl', import.meta.url), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { stream: string; data: string })
        .filter((l) => l.stream === 'relay')
        .map((l) => JSON.parse(l.data) as Record<string, unknown>);
      expect(corpus.length).toBeGreaterThan(20);
      for (const e of corpus) expect(decodeEvent(enc.encode(JSON.stringify(e))).ok).toBe(true);
      const ENVELOPE_KEYS = new Set(['id', 'type', 'version', 'source', 'time', 'causationId', 'correlationId']);
      const mutations = corpus.map((e) => mutationOf(e));
      const message = fc.integer({ min: 0, max: corpus.length - 1 }).chain((i) =>
        fc.oneof(
          {
            weight: 6,
            arbitrary: mutations[i]!.map((m) => ({
              data: enc.encode(JSON.stringify(m.value)),
              mustReject: m.mustReject && ENVELOPE_KEYS.has(m.what.split(/[.=+ ]/)[0]!) && !m.what.includes('.'),
            })),
          },
          {
            weight: 2,
            arbitrary: fc.integer({ min: 0, max: 400 }).map((cut) => {
              const b = enc.encode(JSON.stringify(corpus[i]));
              return { data: b.slice(0, Math.min(cut, b.byteLength - 1)), mustReject: true };
            }),
          },
          { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }).map((data) => ({ data, mustReject: true })) },
          { weight: 1, arbitrary: fc.integer({ min: 1, max: 4096 }).map((n) => ({ data: new Uint8Array(MAX_EVENT_BYTES + n).fill(0x7b), mustReject: true })) },
        ),
      );
      fc.assert(
        fc.property(message, (m) => {
          const r = decodeEvent(m.data);
          figures.relayEvents++;
          if (r.ok) {
            if (m.mustReject) throw new Error(`accepted a relay event that must be rejected: ${new TextDecoder().decode(m.data.slice(0, 300))}`);
            return;
          }
          checkRejection(r);
          if (!['oversized', 'malformed', 'schema'].includes(r.rejection.reason)) throw new Error(`decodeEvent: reason ${r.rejection.reason}`);
          figures.relayRejected.add(r.rejection.reason);
        }),
        { seed: FUZZ_SEED, numRuns: runs(20_000) },
      );
      expect(figures.relayRejected.total).toBeGreaterThan(runs(20_000) * 0.5);
    },
    TIMEOUT,
  );
});
