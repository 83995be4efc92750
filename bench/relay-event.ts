/**
 * What one relay's actors spend on a topology event as the network grows: the real relay machine
 * (fold, topology, peer links, clients, kernel actor on the in-memory host), seeded with a network of
 * N relays, then fed joins and leaves of one more relay until the kernel is idle after each. No bus,
 * no signatures, no control plane (bench:fleet has those): this is the part of a relay's work per
 * event that depends on N. Reference, in the same run: the smallest N given.
 *
 *   node bench/relay-event.ts [N ...] [--events 200] [--profile DIR]      (default 100 1000)
 *
 * Prints CPU ms per event at each N and the ratio of each N to the first.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { waitFor, type AnyActorRef } from 'xstate';
import { withCpuProfile } from './cpu-profile.ts';
import type { RegisterResponse } from '../src/contract/api-relays.ts';
import { systemDeps } from '../src/lib/deps.ts';
import { busDetails, ev, relay } from '../test/support/given.ts';
import { relayOnMemoryHost } from '../test/support/relay-harness.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { events: { type: 'string', default: '200' }, profile: { type: 'string' } },
});
const sizes = positionals.length ? positionals.map(Number) : [100, 1000];
const EVENTS = Number(values.events);
if (sizes.some((n) => !Number.isInteger(n) || n < 2) || !(EVENTS >= 2))
  throw new Error('usage: node bench/relay-event.ts [N ...] [--events 200] [--profile DIR]');

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** A relay of a network of n, fed `events` joins and leaves; CPU ms per event. */
async function measure(n: number): Promise<{ cpuPerEvent: number; emitted: number }> {
  let emitted = 0;
  const self = relay(1);
  const peers = Array.from({ length: n - 1 }, (_, i) => relay(i + 2));
  const registration: RegisterResponse = {
    relay: self,
    readmitted: false,
    revision: 1,
    revisionTime: new Date().toISOString(),
    relays: peers,
    sessions: [],
    bus: busDetails(),
    heartbeatIntervalSeconds: 10,
  };
  const { actor: created, follow: followOf } = relayOnMemoryHost({
    self,
    registration,
    deps: systemDeps,
    emit: () => {
      emitted++;
    },
    timing: { staleAfterMs: 86_400_000, downAfterMs: 86_400_000 },
  });
  const actor = created.start();
  await waitFor(actor, (s) => s.matches('serving') && followOf() !== null, { timeout: 120_000 });
  const follow = followOf()!;
  const kernel = () => actor.getSnapshot().children.kernel as AnyActorRef;
  // Idle: the kernel actor waits for nothing and no message is pending (a round starts on a 0 ms timer).
  const idle = async () => {
    for (let quiet = 0; quiet < 3; ) {
      await new Promise((r) => setImmediate(r));
      quiet = kernel().getSnapshot().value === 'idle' ? quiet + 1 : 0;
    }
  };
  await idle();

  const probe = relay(n + 1, { id: 'probe' });
  const run = async (k: number, rev: number) => {
    for (let i = 0; i < k; i++, rev++) {
      follow({ type: 'TOPOLOGY_EVENT', event: i % 2 === 0 ? ev.admitted(rev, probe) : ev.left(rev, probe.id), streamSeq: rev });
      await idle();
    }
    return rev;
  };
  // Warm up (the JIT), then measure.
  let rev = await run(20, 2);
  if (actor.getSnapshot().context.view.revision !== rev - 1)
    throw new Error(`the relay folded revision ${actor.getSnapshot().context.view.revision}, not ${rev - 1}`);
  const c0 = cpuMs();
  const e0 = emitted;
  rev = await withCpuProfile(values.profile && join(values.profile, `relay-event-${n}.cpuprofile`), () => run(EVENTS, rev));
  const cpu = cpuMs() - c0;
  if (actor.getSnapshot().context.view.revision !== rev - 1) throw new Error('the relay did not fold every event');
  const out = { cpuPerEvent: cpu / EVENTS, emitted: (emitted - e0) / EVENTS };
  actor.stop();
  return out;
}

const rows: string[] = [];
let first: number | null = null;
for (const n of sizes) {
  const r = await measure(n);
  first ??= r.cpuPerEvent;
  rows.push(`| ${n} | ${r.cpuPerEvent.toFixed(3)} | ${(r.cpuPerEvent / first).toFixed(2)} | ${r.emitted.toFixed(1)} |`);
}
console.log(`| N | CPU ms per topology event | ratio to N=${sizes[0]} | relay events per topology event |`);
console.log('|---|---|---|---|');
for (const r of rows) console.log(r);
