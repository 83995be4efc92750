import { describe, expect, it } from 'vitest';
import { waitFor } from 'xstate';
import type { RegisterResponse } from '../../src/contract/api-relays.ts';
import type { Deps } from '../../src/lib/deps.ts';
import { session } from '../support/clients-harness.ts';
import { busDetails, ev, relay } from '../support/given.ts';
import { relayOnMemoryHost } from '../support/relay-harness.ts';

/** Ids 00000000-0000-4000-8000-000000000001, ...2, ... and a clock that never moves. */
function fixedDeps(): Deps {
  let n = 0;
  return { newId: () => `00000000-0000-4000-8000-${(++n).toString(16).padStart(12, '0')}`, now: () => Date.parse('2030-01-01T00:00:00Z') };
}

// relay-2's endpoint is a name (its resolution is a `PeerEndpointResolved` event with an id of the
// topology actor's); session 1 expired before the fixed clock (its `expired` event's id is the
// session actor's); the seed, the applied event and the drain take the relay actor's ids.
const self = relay(1);
const peer = relay(2, { endpoint: 'relay-2.test:51820' });
const registration: RegisterResponse = {
  relay: self,
  readmitted: false,
  revision: 4,
  revisionTime: '2029-12-31T00:00:00.000Z',
  relays: [peer],
  sessions: [session(1, self, 'relay-2', { expiresAt: '2029-12-31T12:00:00.000Z' }), session(2, self, 'relay-2')],
  bus: busDetails(),
  heartbeatIntervalSeconds: 10,
};
const joined = ev.admitted(5, relay(3));

/** One whole run of the relay actor and its children on the in-memory host: boot, a join, a stop. Returns every emission in order. */
async function run(deps: Deps): Promise<unknown[]> {
  const emitted: unknown[] = [];
  const { actor: created, follow } = relayOnMemoryHost({
    self,
    registration,
    deps,
    emit: (e) => void emitted.push(e),
    resolve: () => ({ address: '198.51.100.2', error: null }),
    deregisteredAt: 6,
  });
  const actor = created.start();
  await waitFor(actor, (s) => s.matches('serving') && follow() !== null);
  await settle();
  follow()!({ type: 'TOPOLOGY_EVENT', event: joined, streamSeq: 5 });
  await settle();
  actor.send({ type: 'STOP', signal: 'SIGTERM' });
  await waitFor(actor, (s) => s.status === 'done', { timeout: 5_000 });
  expect(actor.getSnapshot().value).toBe('stopped');
  return emitted;
}

/** Let the kernel rounds (each starts on a timer of 0 ms: the turn of the event loop they settle in) and the messages they cause run out. */
const settle = async () => {
  for (let i = 0; i < 30; i++) await new Promise((r) => setTimeout(r, 2));
};

describe('machines take their ids and clock from their deps', () => {
  it('two runs with the same id source and clock emit the same events', async () => {
    const first = await run(fixedDeps());
    const second = await run(fixedDeps());
    expect(second).toEqual(first);
  });

  it('every id a machine chooses comes from the id source', async () => {
    const emitted = (await run(fixedDeps())) as { type: string; id?: string; causationId?: string | null }[];
    const types = new Set(emitted.map((e) => e.type));
    for (const t of [
      'TopologySeeded',
      'TopologyEventApplied',
      'PeerEndpointResolved',
      'ClientSessionStateChanged',
      'RelayDraining',
      'KernelReconciled',
      'RelayStopped',
    ])
      expect(types).toContain(t);
    const ids = emitted.flatMap((e) => [e.id, e.causationId]).filter((id): id is string => typeof id === 'string');
    // The seed, the session's expiry, the resolution, the applied event and the drain.
    expect(new Set(ids).size).toBeGreaterThanOrEqual(5);
    for (const id of ids) expect(id).toMatch(/^00000000-0000-4000-8000-0000000000[0-9a-f]{2}$/);
  });
});
