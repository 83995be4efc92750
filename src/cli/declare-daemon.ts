import type { Command } from 'commander';
import { DEFAULT_STREAM_LIMITS } from '../bus/stream-limits.ts';
import { DEFAULT_CLIENT_PREFIX6 } from '../kernel/ipv6.ts';
import { controlPlaneOpts, intOpt, jsonOpt, natsCredsOpt, natsTokenOpt, natsUrlOpt, opt, simOpt, stateDirOpt, withOptions } from './options.ts';
import { subcommands, type Leaf } from './program.ts';
import { CliError } from './args.ts';

/** The daemon's commands and the control plane's: run, status, control-plane, client, token, bus, devnet. */

const MESH = 'Mesh (one point-to-point WireGuard device per other relay; see docs/datapath.md):';
const CLIENTS = 'Clients (stock WireGuard clients enter here and leave at the exit they chose; see docs/clients.md):';

export function declareRun(program: Command, leaf: Leaf): void {
  const cmd = program
    .command('run')
    .summary('run the relay daemon: register, seed, follow topology, heartbeat')
    .description(`Run the relay daemon: load or generate the WireGuard key (STATE_DIR/wg.key, mode 0600, never sent
anywhere), register with the control plane, seed the topology from the snapshot, follow topology
events on NATS JetStream, heartbeat, and serve status on STATE_DIR/relay.sock. On SIGTERM or SIGINT
it deregisters and exits 0. Logs are JSON lines on stderr. Flags override environment variables.`);
  withOptions(
    cmd,
    opt('--relay-id <ID>', "this relay's id, [a-z0-9-] (required)", { env: 'RELAYNET_RELAY_ID' }),
    opt('--name <NAME>', 'display name', { env: 'RELAYNET_NAME', defaultText: 'the id' }),
    opt('--region <REGION>', 'region, [a-z0-9-]', { env: 'RELAYNET_REGION', default: 'local' }),
    opt('--endpoint <HOST:PORT>', 'public WireGuard endpoint (required)', { env: 'RELAYNET_ENDPOINT' }),
    stateDirOpt('key, status socket', { env: 'RELAYNET_STATE_DIR', defaultText: './.state/relay-ID' }),
    ...controlPlaneOpts('relay token or service-role key'),
    opt(
      '--topology-key <KEY>',
      "pin the control plane's Ed25519 topology key explicitly; without it the key first trusted is pinned in STATE_DIR/topology-key.pub and a control plane signing with another key is refused",
      { env: 'RELAYNET_TOPOLOGY_KEY' },
    ),
    opt(
      '--repin-topology-key',
      "trust the control plane's topology key at this run's first registration and pin it (after the control plane's key changed on purpose)",
    ),
    intOpt(
      '--event-queue <N>',
      'relay events waiting for the bus beyond N are dropped, oldest first (counted, reported as RelayEventsDropped)',
      1,
      10_000_000,
      {
        default: 10_000,
      },
    ),
    natsUrlOpt('override the NATS servers handed out'),
    intOpt('--start-margin-ms <MS>', 'consumer start before snapshot time', 0, 3_600_000, { default: 60_000 }),
    opt('--rotate-key', 'generate a new WireGuard key and register it with rotateKey'),
    opt('--wg-prefix <P>', 'device name prefix, 1-3 letters a-z; the link to relay j is P<own index>m<j>; relays sharing a machine need distinct P', {
      env: 'RELAYNET_WG_PREFIX',
      default: 'rc',
      group: MESH,
    }),
    intOpt('--keepalive <S>', 'persistent keepalive seconds on each link', 0, 65535, { default: 25, group: MESH }),
    intOpt('--mtu <N>', 'mesh device MTU', 1280, 9000, { default: 1420, group: MESH }),
    intOpt('--link-stale-after <MS>', "peer silent this long: link stale (WireGuard's reject window)", 100, 86_400_000, { default: 180_000, group: MESH }),
    intOpt('--link-down-after <MS>', 'peer silent this long: link down', 100, 86_400_000, { default: 540_000, group: MESH }),
    intOpt('--observe-interval <MS>', 'how often handshakes and counters are read', 100, 3_600_000, { default: 5_000, group: MESH }),
    intOpt(
      '--kernel-full-every <MS>',
      'how often the kernel reads and plans everything it owns, mending drift (other rounds look only at what changed)',
      1_000,
      86_400_000,
      { default: 300_000, group: MESH },
    ),
    intOpt(
      '--resolve-interval <MS>',
      'how often peer endpoints given as DNS names are looked up again (a failed lookup is retried after 2 s, doubling)',
      1_000,
      86_400_000,
      { default: 60_000, group: MESH },
    ),
    opt('--kernel <linux|memory>', 'program this host, or only an in-memory model of it (dry run)', { default: 'linux', group: MESH }),
    opt('--wg-impl <auto|kernel|userspace>', 'kernel WireGuard, wireguard-go, or whichever works', { default: 'auto', group: MESH }),
    intOpt('--client-idle-after <MS>', 'a client not heard this long is idle', 1_000, 86_400_000, { default: 180_000, group: CLIENTS }),
    intOpt('--exit-table-base <N>', 'routing table of exit relay i is N + i', 256, 4_000_000_000, { default: 100_000, group: CLIENTS }),
    intOpt('--client-rule-priority <N>', 'first policy-rule priority of the client rules', 1, 32_000, { default: 20_000, group: CLIENTS }),
    opt('--client-supernet <CIDR>', "the network's client address space", { default: '100.96.0.0/11', group: CLIENTS }),
    opt('--client-deny <CIDR[,CIDR]>', 'refuse client traffic to these too (IPv4 or IPv6)', { env: 'RELAYNET_CLIENT_DENY', group: CLIENTS }),
    opt('--client-allow <CIDR[,CIDR]>', 'take these out of the default refused ranges', { env: 'RELAYNET_CLIENT_ALLOW', group: CLIENTS }),
    opt('--client-prefix6 <P|off>', "the clients' IPv6 /96 (the control plane's client_prefix6 must agree); off: clients get IPv4 only", {
      env: 'RELAYNET_CLIENT_PREFIX6',
      default: DEFAULT_CLIENT_PREFIX6,
      group: CLIENTS,
    }),
    opt('--exit-ipv6 <auto|on|off>', "let clients' IPv6 leave here, NAT66 (auto: when this host has a default IPv6 route)", {
      env: 'RELAYNET_EXIT_IPV6',
      default: 'auto',
      group: CLIENTS,
    }),
    opt(
      '--metrics-listen <[ADDR:]PORT>',
      'serve Prometheus metrics at http://ADDR:PORT/metrics (ADDR 127.0.0.1 when not given; clients and mesh peers are refused whatever ADDR is; see docs/operations.md)',
      { env: 'RELAYNET_METRICS_LISTEN' },
    ),
  );
  cmd.addHelpText(
    'after',
    `
Each link listens on UDP port (endpoint port + peer's mesh index): open that range. On SIGTERM the
relay also removes its mesh devices; after a crash (SIGKILL) they stay up and a restart adopts them.
A peer endpoint given as a DNS name is programmed as the address it resolves to (IPv4 or IPv6,
whichever this host has); until it resolves, the peer's WireGuard endpoint is left unset and learned
from the peer's handshakes. Each change is logged and published (PeerEndpointResolved).

Egress policy (docs/security.md): as an exit, the relay refuses client traffic (TCP reset, ICMP
administratively prohibited) to private, loopback, link-local (cloud metadata: 169.254.169.254),
shared, reserved, benchmarking (198.18.0.0/15), documentation and multicast ranges of both
families; --client-allow takes ranges out of those defaults only. Always refused, whatever
--client-allow says: 100.64.0.0/10 (the network itself), --client-deny, and the control plane's and
NATS's addresses (the URL's address or what its name resolves to at start; the NATS servers of every
registration). \`relay-core status\` shows the ranges and a refusal counter per reason.

IPv6: a client's IPv6 address is its IPv4 address in the /96 (100.96.4.7 -> fd64::6460:407); its
configuration routes ::/0 into the tunnel too. An exit without IPv6 takes none: the entry refuses
those clients' IPv6 at once (ICMPv6 unreachable). A host with IPv6 disabled runs IPv4 only.

The client device P<own index>c listens on the endpoint port. The relay turns on IPv4 (and IPv6)
forwarding and loose reverse-path filtering, and owns the nftables table inet P<own index>; on SIGTERM
it removes them and puts the sysctls back as they were before its first start.

Exit codes: 0 stopped cleanly; 1 registration refused or failed (the reason is printed); 2 bad usage.`,
  );
  leaf(cmd, 'run');
}

/** How a command finds a running relay's status socket (`status`, `rotate-key`, `reconcile`), and --json. */
const relaySocketOpts = () => [
  stateDirOpt("the relay's state directory", { env: 'RELAYNET_STATE_DIR' }),
  opt('--relay-id <ID>', 'shorthand for --state-dir ./.state/relay-ID', { env: 'RELAYNET_RELAY_ID' }),
  jsonOpt('print the raw JSON'),
];

export function declareStatus(program: Command, leaf: Leaf): void {
  const cmd = program
    .command('status')
    .summary("show a running relay's topology view and counters")
    .description(`Show what a running relay believes: its state, registration, topology revision, every relay it
knows, its counters (applied, duplicate and rejected topology events, gaps, resyncs), its bus, its
mesh links, the client sessions entering at it, its egress policy and filters with the packets each
refused or dropped (the refused ranges by reason with --json), and any kernel operation that keeps
failing (retried with backoff).
Reads the relay's status socket DIR/relay.sock (default DIR: ./.state/relay-ID).`);
  withOptions(cmd, ...relaySocketOpts());
  leaf(cmd, 'status');
}

export function declareRotateKey(program: Command, leaf: Leaf): void {
  const cmd = program
    .command('rotate-key')
    .summary("rotate a running relay's WireGuard key, keeping its links up")
    .description(`Ask a running relay, over its status socket, to rotate its WireGuard key: it makes a new key,
registers it (signed with its identity key, so a token alone cannot), puts it on its devices and
keeps the old one on disk until the control plane has the new one. Every relay follows the
RelayKeyRotated event; the links re-handshake and stay up (docs/security.md, "Rotation"). Stock
clients entering at the relay (and private clients leaving there) need a new configuration: their peer key changed.
Reads the relay's status socket DIR/relay.sock (default DIR: ./.state/relay-ID).`);
  withOptions(cmd, ...relaySocketOpts());
  leaf(cmd, 'rotate-key');
}

export function declareReconcile(program: Command, leaf: Leaf): void {
  const cmd = program
    .command('reconcile')
    .summary('make a running relay check everything it owns on the host now')
    .description(`Ask a running relay, over its status socket, for a whole-scope kernel round: it reads every
device, route, rule, sysctl and nftables table it owns, and puts back whatever differs from what it
desires (drift: something changed behind its back). Other rounds read and plan only what changed;
this one runs on its own every --kernel-full-every. The round's operations are published as
KernelReconciled events, as every round's are.
Reads the relay's status socket DIR/relay.sock (default DIR: ./.state/relay-ID).`);
  withOptions(cmd, ...relaySocketOpts());
  leaf(cmd, 'reconcile');
}

export function declareControlPlane(program: Command, leaf: Leaf): void {
  const cmd = program
    .command('control-plane')
    .summary('run the local control plane (Edge Functions on Deno, gateway, Postgres, publisher)')
    .description(`Run the control plane on this machine as Supabase runs it: every Edge Function of supabase/functions
on the Deno runtime (one process each), behind a gateway that routes /functions/v1/<name> and
verifies JWTs like Supabase's verify_jwt, on an embedded Postgres (PGlite, data in STATE_DIR/pgdata)
or on a real PostgreSQL given by --db-url. Applies supabase/migrations on start. With --nats-url it
also runs the topology publisher (outbox to JetStream). Prints the URL, where the service-role key
is (never the key: this output often ends up in logs), the topology public key and the environment a
relay needs; runs until SIGINT or SIGTERM, then stops everything and exits 0.

Secrets (JWT secret, Ed25519 topology signing key) are generated on first start into
STATE_DIR/secrets.json (mode 0600) and reused; STATE_DIR/control-plane.json (0600) has the URL, the
service-role key, the topology public key, the database URL and the NATS servers;
STATE_DIR/service-role.key (0600) the service-role key alone, for relays' --token-file.

The event bus (docs/security.md, "The bus"): NATS decentralized auth. On first start the control
plane makes an operator, a system account and the RELAYNET account (nkeys, STATE_DIR/bus/authority.json,
0600) and writes STATE_DIR/bus/nats-auth.conf, which nats-server's configuration must include (with a
resolver: see docs/control-plane.md). Each relay presents an nkey at admission and gets a user JWT
that may publish only its own events; the operator's credentials are STATE_DIR/bus/reader.creds
(events, replay) and admin.creds (bus bootstrap). --nats-token chooses token mode instead.`);
  withOptions(
    cmd,
    intOpt('--port <P>', 'gateway port (0 = any free port)', 0, 65535, { default: 54321 }),
    opt('--host <ADDR>', 'IPv4 address the gateway listens on (0.0.0.0 for every address, as in a container)', { default: '127.0.0.1' }),
    stateDirOpt('secrets, embedded database, control-plane.json', { default: '.state/control-plane' }),
    opt('--db-url <URL>', 'real PostgreSQL, e.g. postgres://user:pw@127.0.0.1:5432/db', { env: 'SUPABASE_DB_URL', defaultText: 'embedded PGlite' }),
    natsUrlOpt('NATS servers handed to relays; starts the topology publisher (without it relays are told nats://127.0.0.1:4222 and no publisher runs)'),
    natsTokenOpt('token mode: one NATS token for the publisher, handed to every relay (default: NATS decentralized auth, STATE_DIR/bus)'),
    opt('--nats-auth-out <FILE>', "also write nats-auth.conf (for nats-server's configuration) to FILE, mode 0644 (e.g. a volume nats-server mounts)"),
    intOpt('--nats-user-ttl <S>', "lifetime of a relay's NATS user JWT; relays renew it through the heartbeat", 60, 30 * 24 * 3600, { default: 3600 }),
    intOpt('--heartbeat-seconds <N>', 'heartbeat interval handed to relays', 1, 3600, { default: 10 }),
    intOpt(
      '--receipt-epoch <S>',
      "length of a Proof-of-Bandwidth receipt epoch, handed to relays at registration (sets the database's setting; see docs/proof-of-bandwidth.md)",
      10,
      86_400,
      { defaultText: "the database's, 300 at first" },
    ),
    intOpt(
      '--measure-every <S>',
      "measure each relay's capacity this often, one at a time, the one measured longest ago first (docs/proof-of-bandwidth.md); 0: only `pob measure`",
      0,
      365 * 86_400,
      { default: 0 },
    ),
    intOpt(
      '--settle-after <S>',
      'settle each receipt epoch S seconds after it ends (late receipts count until then), once, oldest first after an outage; absent: only `pob settle`',
      0,
      86_400,
    ),
    intOpt('--stream-replicas <N>', 'copies of each JetStream stream it creates (3 on a 3-node NATS cluster)', 1, 5, { default: 1 }),
    opt(
      '--metrics-listen <[ADDR:]PORT>',
      "serve Prometheus metrics at http://ADDR:PORT/metrics (ADDR 127.0.0.1 when not given): requests by function, admissions, heartbeats, the publisher's lag; see docs/operations.md",
      { env: 'RELAYNET_METRICS_LISTEN' },
    ),
  );
  cmd.addHelpText(
    'after',
    `
Examples:
  relay-core control-plane --nats-url nats://127.0.0.1:4222
  relay-core control-plane --port 0 --db-url postgres://postgres@127.0.0.1:5432/postgres
  relay-core token mint --relay-id relay-a          # a scoped token for one relay`,
  );
  leaf(cmd, 'control-plane');
}

const CLIENT_EXIT_CODES = "\nExit codes: 0 done; 1 refused or failed (the control plane's reason is printed); 2 bad usage.";

export function declareClient(program: Command, leaf: Leaf): void {
  const client = subcommands(
    program,
    'client',
    'open, switch, list and close client sessions (stock WireGuard clients)',
    `Client sessions of stock WireGuard clients (docs/clients.md). A client enters the network at an entry
relay and leaves it at the exit it chose; the control plane picks what is not given. Every subcommand
takes --control-plane-url and --token or --token-file: the service-role key (an operator) or a user's JWT.`,
  );
  client.addHelpText('after', CLIENT_EXIT_CODES);
  const access = () => controlPlaneOpts("the service-role key (an operator) or a user's JWT");
  const exit = () => [opt('--exit <ID>', 'the exit relay'), opt('--exit-region <R>', 'any live relay of region R as the exit (the least loaded)')];
  const json = () => jsonOpt("print the control plane's answer as JSON");
  const add = client
    .command('add')
    .summary("open a session and print the client's wg-quick configuration")
    .description(`Open a session and print the client's wg-quick configuration once the entry relay has programmed
it (the control plane waits for the entry's confirmation). The client's key: --key-file FILE reads a
private key from FILE, or creates one there (mode 0600) when it does not exist; --public-key KEY uses
a key whose private half stays elsewhere (the configuration then has a PrivateKey placeholder); with
neither, a fresh key is made and printed in the configuration only. The private key never goes to
the control plane. Give exactly one of --exit and --exit-region.

--private opens a private session (docs/clients.md, "Private sessions"): the client's peer is the exit
relay, reached at the entry's address on a port of the session's own; the entry forwards the client's
ciphertext to the exit in its kernel and never sees its packets, and the exit never sees the client's
address. Its MTU is 60 bytes smaller (the client's datagrams travel inside the mesh link).

--community allows community relays (run by operators the network does not control; docs/proof-of-
bandwidth.md, "Community relays") on the session's path. A session entering at a community relay is
always private; one leaving at a community relay is private unless --standard is given. Without
either flag the mode is standard, or private where a community relay is on the path.`);
  withOptions(
    add,
    ...exit(),
    opt('--entry <ID>', 'the entry relay', { defaultText: 'the least loaded live relay' }),
    opt('--key-file <FILE>', "the client's private key file (created, mode 0600, if missing)"),
    opt('--public-key <KEY>', "the client's public key (its private key stays elsewhere)"),
    intOpt('--ttl <S>', "session lifetime in seconds (default: the control plane's, 24 h)", 60, 30 * 86_400),
    opt('--private', 'a private session: the entry forwards ciphertext, the exit terminates the tunnel'),
    opt('--standard', 'a standard session, even with a community exit (refused with a community entry)'),
    opt('--community', 'community relays may be on the path (entry or exit)'),
    json(),
    ...access(),
  );
  leaf(add.addHelpText('after', CLIENT_EXIT_CODES), 'client add');
  const sw = client
    .command('switch')
    .summary('steer a session to another exit')
    .description(`Steer a session to another exit. A standard session's tunnel is untouched (no new handshake).
A private session's client needs a new configuration (its peer is the exit: another key), which is
printed as add prints one; --key-file fills in the client's private key.`);
  withOptions(
    sw,
    opt('--session <ID>', 'the session'),
    ...exit(),
    opt('--key-file <FILE>', "a private session: the client's private key file, put into the new configuration"),
    json(),
    ...access(),
  );
  leaf(sw.addHelpText('after', CLIENT_EXIT_CODES), 'client switch');
  const list = client.command('list').summary('list open sessions').description('Open sessions (--all: also closed ones), one per line, or JSON.');
  withOptions(list, opt('--entry <ID>', 'only the sessions entering at this relay'), opt('--all', 'also closed sessions'), json(), ...access());
  leaf(list.addHelpText('after', CLIENT_EXIT_CODES), 'client list');
  const remove = client
    .command('remove')
    .summary('close a session')
    .description("Close a session: the entry removes the client's peer and rules. Give --session or --public-key.");
  withOptions(remove, opt('--session <ID>', 'the session'), opt('--public-key <KEY>', 'the session of this key'), json(), ...access());
  leaf(remove.addHelpText('after', CLIENT_EXIT_CODES), 'client remove');
}

export function declareRelay(program: Command, leaf: Leaf): void {
  const relay = subcommands(
    program,
    'relay',
    "ban, unban, suspend and resume relays (the operator's)",
    `The operator's relay administration (docs/security.md, "Bans"; docs/proof-of-bandwidth.md,
"Community relays"). Each subcommand takes --control-plane-url and --token or --token-file with the
service-role key.`,
  );
  const access = () => controlPlaneOpts('the service-role key');
  const ban = relay
    .command('ban')
    .summary('ban a relay: out of the topology, its tokens and NATS credentials stopped')
    .description(`Ban a relay. At once: it leaves the topology (RelayLeft, reason "banned": every relay removes its links
and routes; the sessions entering at it are closed), every function refuses its tokens and its
re-registration (403 banned), and the control plane revokes its NATS nkey on nats-server, which closes
its connection. Idempotent.`);
  withOptions(
    ban,
    opt('--relay <ID>', 'the relay (required)'),
    opt('--reason <TEXT>', 'why (kept with the ban, at most 200 characters)'),
    jsonOpt(),
    ...access(),
  );
  leaf(ban, 'relay ban');
  const unban = relay
    .command('unban')
    .summary('lift a ban: the relay may register again')
    .description(`Lift a ban: the relay registers again by itself (its heartbeat is told it is unknown) and gets fresh credentials.
With --forget-identity the relay's recorded identity key is forgotten too, so that it may come back
with a new one: the way back for a relay that lost its identity.key (every registration by a relay
token must be signed by the recorded identity key, docs/security.md "Rotation").`);
  withOptions(
    unban,
    opt('--relay <ID>', 'the relay (required)'),
    opt('--forget-identity', "also forget the relay's identity key (it must be banned)"),
    jsonOpt(),
    ...access(),
  );
  leaf(unban, 'relay unban');
  const suspend = relay
    .command('suspend')
    .summary('suspend a relay: it stays in the mesh but carries no client traffic')
    .description(`Suspend a relay (core or community): it stays in the mesh (links, measurements) but carries no
client traffic; its open client sessions, entering or leaving there, are closed at once (reason
"removed"), and connect-client and switch-exit refuse it (409 relay_not_active). RelayStateChanged
says it to every relay. Idempotent.`);
  withOptions(suspend, opt('--relay <ID>', 'the relay (required)'), opt('--reason <TEXT>', 'why (at most 200 characters)'), jsonOpt(), ...access());
  leaf(suspend, 'relay suspend');
  const resume = relay
    .command('resume')
    .summary('resume a suspended relay')
    .description(`Resume a suspended relay: a core relay, or a community relay measured at community_min_capacity
or more, is active again; a community relay not measured enough goes back to probation (its next
measurement decides). Idempotent.`);
  withOptions(resume, opt('--relay <ID>', 'the relay (required)'), opt('--reason <TEXT>', 'why (at most 200 characters)'), jsonOpt(), ...access());
  leaf(resume, 'relay resume');
}

export function declareOperator(program: Command, leaf: Leaf): void {
  const operator = subcommands(
    program,
    'operator',
    "a community relay operator's commands: enroll a relay, see its standing",
    `A community relay's operator (docs/proof-of-bandwidth.md, "Community relays"): a user of the
network's Supabase project whose app_metadata.relaynet_role is "operator" (the network's operator sets
it; locally, 'relay-core token mint --role user --sub ID --operator'). Each subcommand takes
--control-plane-url and --token or --token-file with that operator's user token: no service-role key,
no core relay token.`,
  );
  const access = () => controlPlaneOpts("the operator's user token");
  const enroll = operator
    .command('enroll')
    .summary('enroll a community relay and get its relay token')
    .description(`Enroll a community relay: the control plane records the relay id as yours, in probation, and
answers with a relay token bound to it (printed on stdout, or written 0600 to --token-out). Run the
relay with that token ('relay-core run --relay-id ID --token-file FILE ...'): it joins the mesh and is
measured (docs/proof-of-bandwidth.md, "Measuring"); a measured capacity of community_min_capacity or
more (10 Mbit/s by default) makes it active, and only then does it carry clients, and only those of
sessions that allow community relays. Enrolling a relay of yours again gives a new token for it.
Refused: a relay id that is taken (409 relay_exists), more relays than community_max_relays (409
operator_limit), a banned relay id (403 banned), a user token without the operator role (403
not_operator).`);
  withOptions(
    enroll,
    opt('--relay-id <ID>', 'the relay id (required; 1-63 chars of a-z, 0-9, -)'),
    opt('--ttl <DURATION>', "the relay token's lifetime: N followed by s, m, h or d (60s to 366d)", { default: '30d' }),
    opt('--token-out <FILE>', 'write the relay token to FILE (mode 0600) instead of stdout'),
    jsonOpt(),
    ...access(),
  );
  leaf(enroll, 'operator enroll');
  const status = operator
    .command('status')
    .summary('your relays: class, state, capacity, measurements, credit')
    .description(`Your enrolled relays as Proof-of-Bandwidth knows them: state (probation, active, rejected,
suspended), measured capacity, latest measurement, credit in the latest settled epoch, disputes (the
same table as 'relay-core pob status').`);
  withOptions(status, opt('--relay <ID>', 'only this relay'), jsonOpt(), ...access());
  leaf(status, 'operator status');
}

export function declarePob(program: Command, leaf: Leaf): void {
  const pob = subcommands(
    program,
    'pob',
    'Proof-of-Bandwidth: the traffic receipts relays signed, and checking them',
    `Proof-of-Bandwidth (docs/proof-of-bandwidth.md). Once per receipt epoch every relay hands in one
receipt per mesh link (the bytes it sent to and received from that peer) under a Merkle root it
signs with its identity key. Each subcommand takes --control-plane-url and --token or --token-file:
the service-role key (any relay), or a relay token (that relay's own); or --sim [DIR] for a running
sim (its control plane and service-role key).`,
  );
  const access = () => [...controlPlaneOpts('the service-role key, or a relay token'), simPobOpt()];
  const receipts = pob
    .command('receipts')
    .summary("an epoch's signed roots, and one relay's receipts")
    .description(`Show an epoch's roots (one per relay that handed in: receipts, root, when) and, with --relay,
that relay's receipts. Without --epoch: the latest epoch handed in.`);
  withOptions(
    receipts,
    intOpt('--epoch <N>', 'the epoch (Unix seconds / epoch length)', 0, Number.MAX_SAFE_INTEGER),
    opt('--relay <ID>', 'the relay'),
    jsonOpt(),
    ...access(),
  );
  leaf(receipts, 'pob receipts');
  const verify = pob
    .command('verify')
    .summary("check a relay's receipts against the root it signed, and prove one receipt's inclusion")
    .description(`Fetch a relay's root and receipts for an epoch and check, here, that the root is signed by
the relay's identity key (the registry's, or the one given with --identity-key) and that the
receipts are exactly those under it. With --peer, print that receipt with its inclusion proof (the
siblings from its leaf to the root) and check the proof. Exits 0 when every check holds, 1 when one
fails (saying which).`);
  withOptions(
    verify,
    opt('--relay <ID>', 'the relay (required)'),
    intOpt('--epoch <N>', 'the epoch (default: the latest the relay handed in)', 0, Number.MAX_SAFE_INTEGER),
    opt('--peer <ID>', 'the peer whose receipt to prove'),
    opt('--identity-key <KEY>', "the relay's Ed25519 identity public key (base64) to check against, instead of the registry's"),
    jsonOpt(),
    ...access(),
  );
  leaf(verify, 'pob verify');
  const settle = pob
    .command('settle')
    .summary('settle a closed epoch: credit per relay, disputes')
    .description(`Settle a closed epoch from the receipts handed in (service-role key). Each direction of each
link is credited with the smaller of the sender's and the receiver's signed counts; each relay with
what it sent and received, capped by its measured capacity (a relay never measured gets none).
Disputes: counts that disagree by more than 2 %, counts only one end signed, claims over capacity.
Settling again replaces the epoch's settlement (late receipts count).`);
  withOptions(
    settle,
    intOpt('--epoch <N>', 'the epoch (required)', 0, Number.MAX_SAFE_INTEGER),
    jsonOpt(),
    ...controlPlaneOpts('the service-role key'),
    simPobOpt(),
  );
  leaf(settle, 'pob settle');
  const measure = pob
    .command('measure')
    .summary("measure a relay's capacity: measurers send over their mesh links, the relay echoes")
    .description(`Have a relay's capacity measured (service-role key; docs/proof-of-bandwidth.md, "Measuring").
From a few seconds on, for --seconds, each measurer opens --streams TCP streams over its mesh link to
the relay's echo service, which must send every byte back; the measurers check every byte and count
those that came back intact, second by second. The relay may carry at most a share --r of other
traffic meanwhile. Each party then hands in its signed counts, and the control plane concludes: the
capacity (the median second, as goodput and as the line rate it implies), or why none (echoes
corrupted, streams broken, nothing echoed: rejected; a measurer that did not report: incomplete).
RelayMeasured says it to every relay. With --wait, waits for the outcome and prints it; exit 1 when
the relay was rejected or the measurement incomplete.`);
  withOptions(
    measure,
    opt('--relay <ID>', 'the relay to measure (required)'),
    opt('--measurers <IDS>', 'the measuring relays, comma-separated (default: --count other active relays, at random)'),
    intOpt('--count <N>', 'how many measurers to choose when --measurers is not given', 1, 8, { default: 2 }),
    intOpt('--seconds <S>', 'how long the measurers send', 2, 120, { default: 10 }),
    intOpt('--streams <N>', 'TCP streams per measurer', 1, 8, { default: 2 }),
    opt('--r <SHARE>', 'the share of other traffic the relay may carry meanwhile, 0-0.5', { default: 0.1, parse: shareIn('r') }),
    intOpt('--starts-in <S>', 'seconds from now to the start (every party must have learned of it)', 1, 600, { default: 3 }),
    opt('--wait', 'wait for the outcome (up to the end plus the grace for reports)'),
    jsonOpt(),
    ...controlPlaneOpts('the service-role key'),
    simPobOpt(),
  );
  leaf(measure, 'pob measure');
  const status = pob
    .command('status')
    .summary('capacity, latest measurement, credit and disputes per relay')
    .description(`What Proof-of-Bandwidth knows of each relay: its class and state (core or community; probation,
active, rejected or suspended), its measured capacity (the line rate, each way) and when, its latest
measurement and how it ended, its credit in the latest settled epoch (carried, cap, credit) and the
disputes naming it there. With the service-role key: every active relay and every enrolled one; with
an operator's user token: the relays that operator enrolled (as 'relay-core operator status').`);
  withOptions(status, opt('--relay <ID>', 'only this relay'), jsonOpt(), ...controlPlaneOpts("the service-role key, or an operator's user token"), simPobOpt());
  leaf(status, 'pob status');
}

/** `--sim [DIR]` of the pob commands: a running sim's control plane, with its service-role key. */
const simPobOpt = () =>
  simOpt(
    'a running sim (default ./.state/sim): runs this command again inside its network namespace, at its control plane with its service-role key (needs root)',
  );

/** A share in [0, 0.5]. */
function shareIn(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^\d*\.?\d+$/.test(v) || !(n >= 0 && n <= 0.5)) throw new CliError(`--${name} must be a number in [0, 0.5]`, 2);
    return n;
  };
}

const SECRET_SOURCE = 'Secret source (the first that is given):';

export function declareToken(program: Command, leaf: Leaf): void {
  const token = subcommands(
    program,
    'token',
    'mint scoped tokens (relay tokens bound to one relay id, user tokens) and revoke relay tokens',
    "Scoped tokens of the control plane: 'mint' makes one, 'revoke' stops a relay token by its id (jti).",
  );
  const mint = token
    .command('mint')
    .summary('mint a relay token (--relay-id) or a user token (--role user --sub ID)')
    .usage('--relay-id ID [--ttl DURATION] [secret source]\n       relay-core token mint --role user --sub ID [--ttl DURATION] [secret source]')
    .description(`Mint an HS256 JWT signed with the project's JWT secret. Prints the token on stdout.

  relay token (default, --role relay): {role: "relay", relay_id, jti, iss: "relay-core", iat, exp}. The
    control plane lets it register, heartbeat and deregister only that relay id, confirm the client
    sessions entering there (client-ready) and list or close them, so community-operated relays never
    hold the service-role key. Give it to the relay as RELAYNET_TOKEN (or --token-file). Its id (jti)
    is printed on stderr: 'relay-core token revoke --jti ID' stops that token alone.
  user token (--role user): {role: "authenticated", aud: "authenticated", sub, iss, iat, exp}, the
    shape of a Supabase Auth user's JWT. It may open, switch, list and close only the client sessions
    it opened itself (relay-core client ...), and nothing else. With --operator it also carries
    app_metadata: {relaynet_role: "operator"} and may enroll community relays (relay-core operator).`);
  withOptions(
    mint,
    opt('--role <relay|user>', 'which kind of token', { default: 'relay' }),
    opt('--relay-id <ID>', 'relay tokens: the relay the token is bound to (required; 1-63 chars of a-z, 0-9, -)'),
    opt('--sub <ID>', "user tokens: the user's id (required; 1-255 characters, e.g. a Supabase user UUID)"),
    opt('--operator', 'user tokens: with app_metadata.relaynet_role "operator" (may enroll community relays)'),
    opt('--ttl <DURATION>', 'lifetime: N followed by s, m, h or d, e.g. 12h, 30d (at most 3650d)', { default: '30d' }),
    opt('--jwt-secret-file <FILE>', 'a file holding the JWT secret (Supabase: Settings > API > JWT secret)', { group: SECRET_SOURCE }),
    stateDirOpt("a local control plane's state directory (its secrets.json)", { group: SECRET_SOURCE }),
  );
  leaf(mint, 'token mint');
  const revoke = token
    .command('revoke')
    .summary('revoke one relay token by its id (jti)')
    .description(`Revoke one relay token: every function refuses it from now on (401 token_revoked), while the
relay's other tokens keep working ('relay-core relay ban' stops them all). Takes --control-plane-url
and the service-role key. Idempotent.`);
  withOptions(
    revoke,
    opt('--jti <ID>', "the token's id (a UUID; token mint prints it)"),
    opt('--reason <TEXT>', 'why (kept with the revocation, at most 200 characters)'),
    jsonOpt(),
    ...controlPlaneOpts('the service-role key'),
  );
  leaf(revoke, 'token revoke');
  mint.addHelpText(
    'after',
    `  RELAYNET_JWT_SECRET      environment variable with the secret
  (default)                ./.state/control-plane, the local control plane's default state directory

Examples:
  RELAYNET_TOKEN=$(relay-core token mint --relay-id relay-a --ttl 90d) relay-core run --relay-id relay-a ...
  RELAYNET_TOKEN=$(relay-core token mint --role user --sub alice --ttl 1d) relay-core client add --exit relay-b ...`,
  );
}

export function declareBus(program: Command, leaf: Leaf): void {
  const bus = subcommands(
    program,
    'bus',
    'event-bus administration: the streams and their copies',
    "Event-bus administration: 'bootstrap' creates or updates the streams, 'status' shows them and their copies.",
  );
  const L = DEFAULT_STREAM_LIMITS;
  const cmd = bus
    .command('bootstrap')
    .summary('create or update the JetStream streams (idempotent)')
    .description(`Create the JetStream streams RELAYNET_TOPOLOGY (relaynet.topology.>) and RELAYNET_RELAY
(relaynet.relay.>), or update their limits. Idempotent: running it again changes nothing.
The control plane creates missing streams at start and never changes existing ones; relays never
touch them, so the limits set here stay. Needs the administrator's credentials (a control plane's
STATE_DIR/bus/admin.creds), or the token in token mode.`);
  withOptions(
    cmd,
    natsUrlOpt('NATS servers (required)'),
    natsCredsOpt("the administrator's credentials (STATE_DIR/bus/admin.creds of the control plane)"),
    natsTokenOpt('NATS token (token mode)'),
    intOpt('--topology-max-age <S>', 'seconds', 1, Number.MAX_SAFE_INTEGER, { default: L.topologyMaxAgeSeconds }),
    intOpt('--topology-max-bytes <B>', 'bytes', 1024, Number.MAX_SAFE_INTEGER, { default: L.topologyMaxBytes }),
    intOpt('--relay-max-age <S>', 'seconds', 1, Number.MAX_SAFE_INTEGER, { default: L.relayMaxAgeSeconds }),
    intOpt('--relay-max-bytes <B>', 'bytes', 1024, Number.MAX_SAFE_INTEGER, { default: L.relayMaxBytes }),
    intOpt('--replicas <N>', 'copies of each stream in a NATS cluster (3 survives the loss of one node of three)', 1, 5, { default: L.replicas }),
  );
  leaf(cmd, 'bus bootstrap');

  const st = bus
    .command('status')
    .summary('the streams: copies, leader, messages, and whether every copy is current')
    .description(`The streams RELAYNET_TOPOLOGY and RELAYNET_RELAY: how many copies each keeps (3 on a 3-node NATS
cluster), the node that leads it, its messages and sequences, and each other copy's state (current,
n messages behind, or unreachable: not heard from for over 5 s). Exit 0 when both streams exist and every copy is current, 1 otherwise
(the problems are named). Reads with the operator's credentials (a control plane's
STATE_DIR/bus/reader.creds), or a running sim's NATS with --sim [DIR].`);
  withOptions(
    st,
    natsUrlOpt('NATS servers'),
    natsCredsOpt("the operator's credentials (STATE_DIR/bus/reader.creds of the control plane)"),
    natsTokenOpt('NATS token (token mode)'),
    simOpt("read a running sim's NATS (default ./.state/sim): runs this command again inside the sim's network namespace (needs root)"),
    jsonOpt('one JSON object: {streams: [...], missing: [...]}'),
  );
  leaf(st, 'bus status');
}

export function declareDevnet(program: Command, leaf: Leaf): void {
  const cmd = program
    .command('devnet')
    .summary('run a live multi-relay network on loopback (NATS, control plane, N relays)')
    .description(`Run a live relay network on this machine's loopback: a real nats-server with JetStream, the local
control plane (Edge Functions on Deno behind the gateway, embedded Postgres unless --db-url), and
N 'relay-core run' processes, each with its own scoped relay token. Waits until every relay serves
the same topology, prints it, then shows live status until Ctrl-C, when relays deregister and
everything it started is stopped. Relays program only an in-memory model of the host (--kernel
memory); real WireGuard links between network namespaces come with 'relay-core sim'.`);
  withOptions(
    cmd,
    intOpt('--relays <N>', 'number of relays', 1, 50, { default: 3 }),
    stateDirOpt('where keys, logs and data go', { default: '.state/devnet' }),
    intOpt('--port <P>', 'control-plane gateway port', 0, 65535, { default: 0, defaultText: 'a free one' }),
    opt('--db-url <URL>', 'use this PostgreSQL instead of the embedded one'),
    opt('--once', 'exit (cleaning up) as soon as the network has converged'),
  );
  leaf(cmd, 'devnet');
}

export function declareDoctor(program: Command, leaf: Leaf): void {
  const cmd = program
    .command('doctor')
    .summary('check that this host can run a relay: one pass/fail line per check')
    .description(`Check this host for a relay, one line each (PASS, FAIL, or SKIP when a check needs a setting not
given): privileges (root or CAP_NET_ADMIN), WireGuard (the kernel module, or wireguard-go with
/dev/net/tun), wg, ip and nft, nftables usable, forwarding on or settable, the WireGuard and metrics
ports free, the clock against the control plane's, the control plane reachable and the token accepted
(a heartbeat: a relay not admitted yet is told so, nothing changes), NATS reachable (with the relay's
credentials once it has them), and the state directory. It reads the settings 'relay-core run' reads
(flags or the same environment variables), so it checks what the daemon will use. Changes nothing.
Exit codes: 0 every check passed or was skipped; 1 a check failed; 2 bad usage.`);
  withOptions(
    cmd,
    opt('--relay-id <ID>', "this relay's id (for the control plane check)", { env: 'RELAYNET_RELAY_ID' }),
    opt('--endpoint <HOST:PORT>', 'public WireGuard endpoint: its UDP port must be free', { env: 'RELAYNET_ENDPOINT' }),
    stateDirOpt('checked: writable, key files 0600', { env: 'RELAYNET_STATE_DIR', defaultText: './.state/relay-ID' }),
    ...controlPlaneOpts('relay token (or the service-role key)'),
    natsUrlOpt('NATS servers to check (the control plane hands relays theirs at admission)'),
    opt('--metrics-listen <[ADDR:]PORT>', 'its port must be free', { env: 'RELAYNET_METRICS_LISTEN' }),
    jsonOpt('{ready, checks: [{name, status, detail}]} instead of lines'),
  );
  cmd.addHelpText(
    'after',
    `
Example (as the systemd unit's settings would have it):
  set -a; . /etc/relay-core/relay.env; set +a; relay-core doctor --token-file /etc/relay-core/token`,
  );
  leaf(cmd, 'doctor');
}
