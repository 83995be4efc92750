import { randomUUID, type KeyObject } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { headers, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { createActor, fromCallback, fromPromise } from 'xstate';
import { relayMachine } from '../src/actors/relay.machine.ts';
import type { RegisterResponse } from '../src/contract/api-relays.ts';
import { topologyConsumerName } from '../src/contract/bus-auth.ts';
import { envelope } from '../src/contract/envelope.ts';
import { STREAMS, subjectFor } from '../src/contract/subjects.ts';
import type { topologyFollower } from '../src/daemon/topology-follower.ts';
import { signBytes } from '../src/events/signing.ts';
import { encodeEvent, SIGNATURE_HEADER } from '../src/events/wire.ts';
import { systemDeps } from '../src/lib/deps.ts';
import { relay } from '../test/support/given.ts';

/** What a follow actor of a benchmark relay gets: its own connection's JetStream client and manager, and its id. */
/**
 * Revision `rev` of the benchmarks' topology: a RelayAdmitted of a new peer, as the topology publisher
 * sends it (subject, exact bytes, headers), signed with the control plane's key `signer` when one is given.
 */
export function benchTopologyMessage(rev: number, signer: KeyObject | null): { subject: string; data: Uint8Array; headers: MsgHdrs; msgID: string } {
  const r = relay(2 + (rev % 200), { id: `peer-${rev}` });
  const e = envelope({ source: 'control-plane', now: () => new Date(), newId: randomUUID }, 'RelayAdmitted', 2, { revision: rev, relay: r, identityKey: null });
  const data = encodeEvent(e);
  const h = headers();
  if (signer) h.set(SIGNATURE_HEADER, signBytes(signer, data));
  return { subject: subjectFor('RelayAdmitted', r.id), data, headers: h, msgID: e.id };
}

export interface FollowDeps {
  js: JetStreamClient;
  jsm: JetStreamManager;
  relayId: string;
}

/**
 * `n` relay actors (the real relay machine; registration, heartbeat and deregistration faked) named
 * `bench-0`…, each on its own connection (`connect`), following the topology stream of `natsUrl` with
 * the follow actor `follower` makes. Returns once every relay's consumer exists; `folded` gets, for
 * each revision, the time each relay folded it. `close` stops the actors and their connections.
 * Shared by the fan-out benchmarks (fanout.ts, auth.ts).
 */
export async function startFoldingRelays(opts: {
  n: number;
  natsUrl: string;
  topologySigningKey: string;
  connect: (relayId: string) => Promise<NatsConnection>;
  follower: (deps: FollowDeps) => ReturnType<typeof topologyFollower>;
  folded: Map<number, number[]>;
}): Promise<{ close(): Promise<void> }> {
  const reg: RegisterResponse = {
    relay: relay(1),
    readmitted: false,
    revision: 0,
    revisionTime: new Date().toISOString(),
    relays: [],
    sessions: [],
    bus: {
      servers: [opts.natsUrl],
      token: null,
      credential: null,
      subjectRoot: 'relaynet',
      topologyStream: STREAMS.topology,
      relayStream: STREAMS.relay,
      topologySigningKey: opts.topologySigningKey,
    },
    heartbeatIntervalSeconds: 3600,
  };
  const conns: NatsConnection[] = [];
  const actors: { stop(): void }[] = [];
  const managers: JetStreamManager[] = [];
  const close = async () => {
    for (const a of actors) a.stop();
    for (const c of conns) await c.close();
  };
  try {
    for (let i = 0; i < opts.n; i++) {
      const relayId = `bench-${i}`;
      const nc = await opts.connect(relayId);
      conns.push(nc);
      const jsm = await jetstreamManager(nc);
      managers.push(jsm);
      const follow = opts.follower({ js: jetstream(nc), jsm, relayId });
      const actor = createActor(
        relayMachine.provide({
          actors: {
            register: fromPromise(async () => reg),
            follow,
            heartbeat: fromCallback(() => () => {}),
            deregister: fromPromise(async () => ({ revision: 0 })),
          },
          actions: { emit: () => {}, reportFatal: () => {} },
        }),
        { input: { request: { relayId, name: 'b', region: 'b', publicKey: relay(1).publicKey, endpoint: '198.51.100.1:51820' }, deps: systemDeps } },
      );
      let last = 0;
      actor.subscribe((s) => {
        const r = s.context.view.revision;
        if (r <= last) return;
        const t = performance.now();
        for (let k = last + 1; k <= r; k++) (opts.folded.get(k) ?? opts.folded.set(k, []).get(k)!).push(t);
        last = r;
      });
      actor.start();
      actors.push(actor);
    }
    // Wait until every follower's consumer exists (each relay may look up its own only).
    for (let i = 0; i < opts.n; i++) {
      for (;;) {
        try {
          await managers[i]!.consumers.info(STREAMS.topology, topologyConsumerName(`bench-${i}`));
          break;
        } catch {
          await sleep(20);
        }
      }
    }
  } catch (e) {
    await close();
    throw e;
  }
  return { close };
}
