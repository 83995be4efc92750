/**
 * Tries, with one party's NATS credentials, what that party may and may not do on the bus, and prints
 * one JSON object: each attempt's outcome ("ok", or the server's refusal). Run where the bus is
 * reachable (in a sim: `ip netns exec <relay namespace> node test/support/bus-probe.ts ...`).
 *
 *   node test/support/bus-probe.ts --url nats://198.18.0.2:4222 --creds STATE/nats.creds --relay relay-1 --other relay-2
 *   BUS_PROBE_SEED=SU... node test/support/bus-probe.ts --url ... --jwt JWT     (connect only: "ok" or the refusal)
 */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, credsAuthenticator, jwtAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import { inboxPrefixFor, topologyConsumerName } from '../../src/contract/bus-auth.ts';
import { STREAMS } from '../../src/contract/subjects.ts';

const { values: v } = parseArgs({
  options: { url: { type: 'string' }, creds: { type: 'string' }, relay: { type: 'string' }, other: { type: 'string' }, jwt: { type: 'string' } },
});
const outcome = async (f: () => Promise<unknown>): Promise<string> => {
  try {
    await f();
    return 'ok';
  } catch (e) {
    return String((e as Error).message ?? e).slice(0, 300);
  }
};

const out: Record<string, string> = {};
if (v.jwt) {
  out.connect = await outcome(async () => {
    const nc = await connect({
      servers: v.url!,
      authenticator: jwtAuthenticator(v.jwt!, new TextEncoder().encode(process.env.BUS_PROBE_SEED ?? '')),
      reconnect: false,
      timeout: 5_000,
    });
    await nc.flush();
    await nc.close();
  });
} else {
  const relay = v.relay!;
  const other = v.other!;
  const nc: NatsConnection = await connect({
    servers: v.url!,
    authenticator: credsAuthenticator(readFileSync(v.creds!)),
    inboxPrefix: inboxPrefixFor({ kind: 'relay', relayId: relay }),
    timeout: 5_000,
  });
  const errors: string[] = [];
  void (async () => {
    for await (const s of nc.status()) if (s.type === 'error') errors.push(String(s.error));
  })();
  const js = jetstream(nc, { timeout: 3_000 });
  const jsm = await jetstreamManager(nc, { timeout: 3_000 });
  const data = new TextEncoder().encode('{}');
  out.publishOwn = await outcome(() => js.publish(`relaynet.relay.${relay}.probe.bus-probe`, data));
  out.publishOther = await outcome(() => js.publish(`relaynet.relay.${other}.probe.bus-probe`, data));
  out.publishTopology = await outcome(() => js.publish(`relaynet.topology.${relay}.relay-admitted`, data));
  out.purgeStream = await outcome(() => jsm.streams.purge(STREAMS.topology));
  out.deleteStream = await outcome(() => jsm.streams.delete(STREAMS.relay));
  out.addStream = await outcome(() => jsm.streams.add({ name: 'PROBE', subjects: ['probe.>'] }));
  out.ownConsumerInfo = await outcome(() => jsm.consumers.info(STREAMS.topology, topologyConsumerName(relay)));
  out.otherConsumerInfo = await outcome(() => jsm.consumers.info(STREAMS.topology, topologyConsumerName(other)));
  out.otherConsumerDelete = await outcome(() => jsm.consumers.delete(STREAMS.topology, topologyConsumerName(other)));
  out.otherConsumerNext = await outcome(async () => {
    const c = await js.consumers.get(STREAMS.topology, topologyConsumerName(other));
    await c.next({ expires: 1_000 });
  });
  // A subscription the server refuses is reported asynchronously, as a permissions error.
  out.subscribeAll = await outcome(async () => {
    nc.subscribe('relaynet.>');
    await nc.flush();
    await new Promise((r) => setTimeout(r, 500));
    const refused = errors.find((e) => /subscription/i.test(e));
    if (refused) throw new Error(refused);
  });
  await nc.close();
}
process.stdout.write(`${JSON.stringify(out)}\n`);
