import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { execa, type ResultPromise } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { connectBus } from '../../src/bus/connection.ts';
import { bootstrapStreams } from '../../src/bus/streams.ts';
import { STREAMS } from '../../src/contract/subjects.ts';
import { busSession } from '../../src/daemon/bus-session.ts';
import { eventually } from '../../src/devnet/relay-process.ts';
import { startNatsServer, type NatsServer } from '../../src/devnet/nats-server.ts';
import { generateSigningKeyPair } from '../../src/events/signing.ts';
import { systemDeps } from '../../src/lib/deps.ts';
import { freePort, waitForPort } from '../../src/lib/ports.ts';
import { pino } from 'pino';
import { busDetails, relay } from '../support/given.ts';
import { inMemoryRelayConfig } from '../support/relay-config.ts';
import { tempDir } from '../support/temp.ts';

const TOKEN = 'bus-setup-test-token';

describe("a relay's event bus setup", () => {
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it('is retried until it works: a NATS without JetStream at first, then with it, and the events queued meanwhile reach the stream', async () => {
    const tmp = tempDir('bus-setup');
    cleanups.push(() => tmp.remove());
    const port = await freePort();
    // A server that takes the connection but has no JetStream: the relay's JetStream check fails.
    const plain: ResultPromise = execa('nats-server', ['-a', '127.0.0.1', '-p', String(port), '--auth', TOKEN], { reject: false });
    cleanups.push(() => plain.kill('SIGKILL'));
    await waitForPort(port);

    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const stateDir = join(tmp.dir, 'relay');
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const self = relay(1);
    const cfg = inMemoryRelayConfig({
      relayId: self.id,
      name: self.name,
      region: self.region,
      endpoint: self.endpoint,
      stateDir,
      controlPlaneUrl: 'http://127.0.0.1:9',
      token: 'unused',
      topologyKey: null,
      natsServers: [`nats://127.0.0.1:${port}`],
    });
    const session = busSession(cfg, log, systemDeps);
    cleanups.push(() => session.close());
    session.emit({ type: 'TopologyEventApplied', id: randomUUID(), data: { revision: 1, eventId: 'e1', eventType: 'RelayAdmitted' } });
    session.connect(
      {
        relay: self,
        readmitted: false,
        revision: 1,
        revisionTime: new Date().toISOString(),
        relays: [],
        sessions: [],
        bus: busDetails(generateSigningKeyPair().publicKey),
        heartbeatIntervalSeconds: 10,
      },
      { kind: 'token', token: TOKEN },
    );
    await eventually('a failed setup, logged', async () => lines.some((l) => l.includes('event bus setup failed, retrying')), 20_000, 50);
    expect(session.pending()).toBe(1);

    // JetStream arrives on the same address: the relay's connection reconnects and the next attempt works.
    plain.kill('SIGTERM');
    await plain;
    let server: NatsServer | null = null;
    server = await startNatsServer(join(tmp.dir, 'nats'), { port, token: TOKEN });
    cleanups.push(() => server?.stop());
    const admin = await connectBus({ servers: [server.url], auth: { kind: 'token', token: TOKEN }, name: 'admin', logger: log });
    cleanups.push(() => admin.close());
    const jsm = await jetstreamManager(admin);
    await bootstrapStreams(jsm);
    await eventually('the queued event published', async () => session.pending() === 0, 30_000, 50);
    expect((await jsm.streams.info(STREAMS.relay)).state.messages).toBe(1);
    expect(lines.some((l) => l.includes('event bus set up'))).toBe(true);
    expect(session.status().connected).toBe(true);
  });
});
