import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeUser, fromPublic, fromSeed } from '@nats-io/jwt';
import { connect, credsAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import { type BusAuth, credsFileAuth } from '../../src/bus/connection.ts';
import { type BusAuthorityFiles, loadOrCreateBusAuthority } from '../../src/control-plane/bus-authority.ts';
import { type BusRole, createUserKey, credsText, inboxPrefixFor, issuerFor, mintUserJwt } from '../../src/contract/bus-auth.ts';
import { type NatsServer, startNatsCluster, startNatsServer } from '../../src/devnet/nats-server.ts';
import { writePrivate } from '../../src/control-plane/secrets.ts';

/**
 * A party on a test's or benchmark's bus: a role of the network (docs/security.md, "The bus"), or an
 * observer that may only subscribe to `subjects` with core NATS. No party of the network holds such a
 * credential (operators read through consumers); it exists for benchmarks' core-NATS references.
 */
export type BusParty = BusRole | { kind: 'observer'; subjects: string[] };

/** nats-server under NATS decentralized auth, and credentials for any party. */
export interface AuthedNats {
  /** The server (of a cluster: its first node). */
  server: NatsServer;
  /** Every node (one without `nodes`). */
  servers: NatsServer[];
  url: string;
  /** Every node's URL. */
  urls: string[];
  /** The control plane's authority files (its publisher, reader, admin and system credentials). */
  bus: BusAuthorityFiles;
  /** A party's credentials as `connectBus` takes them (a relay's or an observer's are minted once, without expiry). */
  auth(party: BusParty): Promise<BusAuth>;
  /** A party's `.creds` file, for child processes (`--nats-creds`). */
  credsFile(party: BusParty): Promise<string>;
  /** A plain nats.js connection as `party` (its inbox prefix set, as its permissions require). */
  connect(party: BusParty): Promise<NatsConnection>;
}

const partyName = (p: BusParty) => (p.kind === 'relay' ? `relay-${p.relayId}` : p.kind === 'observer' ? `observer-${p.subjects.join(',')}` : p.kind);

/**
 * Start nats-server in `dir` trusting the bus authority of the control plane state directory
 * `stateDir` (STATE_DIR/bus: made if absent, reused if present). A control plane later started on the
 * same `stateDir` holds the same authority, also across its restarts, so the server keeps trusting it.
 * Stopping is the caller's (`server.stop()`), as with {@link startNatsServer}.
 */
export async function startAuthedNats(
  dir: string,
  stateDir: string,
  opts: { onLog?: (line: string) => void; port?: number; nodes?: number } = {},
): Promise<AuthedNats> {
  const bus = await loadOrCreateBusAuthority(stateDir);
  const nodes = opts.nodes ?? 1;
  const cluster =
    nodes > 1 ? await startNatsCluster(dir, nodes, { authConf: bus.authConf, ...(opts.onLog ? { onLog: (_n, l) => opts.onLog!(l) } : {}) }) : null;
  const server = cluster ? cluster.nodes[0]! : await startNatsServer(dir, { ...opts, authConf: bus.authConf });
  const servers = cluster ? cluster.nodes : [server];
  const credsDir = join(dir, 'creds');
  mkdirSync(credsDir, { recursive: true, mode: 0o700 });
  const minted = new Map<string, string>();

  const credsFile = async (party: BusParty): Promise<string> => {
    if (party.kind !== 'relay' && party.kind !== 'observer') return bus.creds[party.kind];
    const name = partyName(party);
    const known = minted.get(name);
    if (known) return known;
    const user = createUserKey();
    let jwt: string;
    if (party.kind === 'relay') {
      jwt = await mintUserJwt(issuerFor(bus.authority, party), party, user.publicKey, { nowSeconds: Math.floor(Date.now() / 1000), ttlSeconds: 0 });
    } else {
      const issuer = issuerFor(bus.authority, { kind: 'reader' });
      const signer = fromSeed(new TextEncoder().encode(issuer.signingSeed));
      jwt = await encodeUser(
        `relay-core test ${name}`,
        fromPublic(user.publicKey),
        fromPublic(issuer.account),
        { pub: { deny: ['>'] }, sub: { allow: party.subjects }, bearer_token: false },
        { signer },
      );
    }
    const file = join(credsDir, `${name.replace(/[^A-Za-z0-9_-]/g, '_')}.creds`);
    writePrivate(file, credsText(jwt, user.seed));
    minted.set(name, file);
    return file;
  };
  const inboxPrefix = (party: BusParty) => (party.kind === 'observer' ? undefined : inboxPrefixFor(party));

  return {
    server,
    servers,
    url: server.url,
    urls: servers.map((x) => x.url),
    bus,
    credsFile,
    auth: async (party) => credsFileAuth(await credsFile(party), inboxPrefix(party)),
    connect: async (party) => {
      const file = await credsFile(party);
      const prefix = inboxPrefix(party);
      return connect({ servers: servers.map((x) => x.url), authenticator: credsAuthenticator(readFileSync(file)), ...(prefix ? { inboxPrefix: prefix } : {}) });
    },
  };
}
