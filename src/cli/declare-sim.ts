import type { Command } from 'commander';
import { CliError } from './args.ts';
import { MAX_NATS_NODES, MAX_RELAYS } from '../sim/layout.ts';
import { intOpt, jsonOpt, opt, stateDirOpt, withOptions } from './options.ts';
import { subcommands, type Leaf } from './program.ts';

/** `relay-core sim` and its subcommands: a live relay network from network namespaces. */

const stateDir = () => stateDirOpt('manifest.json, logs, keys, tokens, databases', { default: '.state/sim' });

/** What up, add and restart wait for. */
const waitOpts = () => [
  opt('--wait <mesh|topology|none>', 'what to wait for (topology: no links)', { default: 'mesh' }),
  intOpt('--timeout <S>', 'how long to wait once the relays run', 1, 3600, { default: 60 }),
];

/** How `sim` and `sim up` build the network. */
const upOpts = () => [
  intOpt('--relays <N>', 'number of relays', 1, MAX_RELAYS, { default: 3 }),
  intOpt('--nats <N>', 'NATS nodes: 1, or a cluster of 3 or 5 (the streams then keep 3 copies, one node may fail)', 1, MAX_NATS_NODES, {
    default: 1,
  }),
  opt(
    '--db-url <URL>',
    "a PostgreSQL for the control plane instead of the embedded one. The control plane connects from inside the service namespace, which cannot reach the host's loopback: give an address reachable from there",
  ),
  intOpt('--keepalive <S>', "relays' persistent keepalive", 0, 65535, { default: 1 }),
  intOpt('--link-stale-after <MS>', 'a link silent this long is stale', 100, Number.MAX_SAFE_INTEGER, { default: 5_000 }),
  intOpt('--link-down-after <MS>', '... and down', 100, Number.MAX_SAFE_INTEGER, { default: 10_000 }),
  intOpt('--observe-interval <MS>', 'how often relays read their devices', 100, Number.MAX_SAFE_INTEGER, { default: 1_000 }),
  intOpt('--receipt-epoch <S>', "the control plane's Proof-of-Bandwidth receipt epoch (docs/proof-of-bandwidth.md)", 10, 86_400, {
    defaultText: '300',
  }),
  intOpt('--measure-every <S>', "the control plane measures each relay's capacity this often (0: only `pob measure`)", 0, 365 * 86_400, {
    default: 0,
  }),
  intOpt('--settle-after <S>', 'the control plane settles each receipt epoch S seconds after it ends (absent: only `pob settle`)', 0, 86_400),
  opt('--log-level <LEVEL>', `the relays' and the control plane's log level (${LOG_LEVELS.join(', ')}); sim add, restart and move keep it`, {
    env: 'RELAYNET_LOG_LEVEL',
    default: 'info',
    parse: (v) => {
      if (!(LOG_LEVELS as readonly string[]).includes(v)) throw new CliError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`, 2);
      return v;
    },
  }),
  ...waitOpts(),
  stateDir(),
];

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

const relayOpt = (description: string) => opt('--relay <ID>', description);
const natsNodeOpt = (description: string) => opt('--nats-node <NAME>', `${description}: nats (one node), nats-<i> (a cluster's node i)`);
const exitOpts = () => [opt('--exit <ID>', 'the exit relay'), opt('--exit-region <R>', 'any live relay of region R as the exit')];

export function declareSim(program: Command, leaf: Leaf): void {
  const sim = program
    .command('sim')
    .summary('run a live multi-relay network from network namespaces, with WireGuard links (root)')
    .usage('[options] | <command> [options]')
    .description(`A live relay network on this machine, built from network namespaces. Each relay runs 'relay-core
run' in a namespace of its own with its own public address; a service namespace runs nats-server
(JetStream) and the control plane (Edge Functions on Deno, embedded Postgres); a bridge in a third
namespace is their "internet". Addresses come from the benchmarking range 198.18.0.0/15 on one /16:
bridge 198.18.0.1, services 198.18.0.2 (control plane :54321, NATS :4222), relay i 198.18.1.i with
its WireGuard links on UDP 51820 + the peer's mesh index. The host's own network is not touched, and
several sims can run at once, each in its own state directory: namespaces are rcs-<sim id>-inet,
-svc and -r<i>, and the relays' WireGuard devices carry a device prefix unique to the sim.

Without a subcommand: up, then a status table refreshed every second until Ctrl-C (or SIGTERM), then
down. Every form takes --state-dir DIR (default ./.state/sim) and needs root.`);
  withOptions(sim, ...upOpts());
  sim.addHelpText(
    'after',
    `
Files in DIR: manifest.json (what the sim created: namespaces, veths, processes with pids, relays,
the WireGuard device prefix), service-role.key (0600), control-plane/ (secrets, database,
control-plane.log), nats/ (nats.log; a cluster's node i in n<i>/, its log nats-<i>.log), relays/<id>/ (wg.key, token, relay.sock, relay.log),
clients/<name>/ (wg.key, wg.conf: the printed wg-quick file, 0600), web/ (the web server's log and
requests.jsonl: one line per request with the address it came from).

Examples:
  sudo relay-core sim --relays 3
  sudo relay-core sim up --relays 5 --state-dir /tmp/sim && sudo relay-core sim status --state-dir /tmp/sim
  sudo relay-core sim kill --relay relay-2 --state-dir /tmp/sim
  sudo relay-core sim up --nats 3 --state-dir /tmp/sim    # a 3-node NATS cluster, streams at 3 replicas
  sudo relay-core sim kill --nats-node nats-2 --state-dir /tmp/sim && sudo relay-core sim restart --nats-node nats-2 --state-dir /tmp/sim
  sudo relay-core sim move --relay relay-3 --state-dir /tmp/sim   # relay-3's endpoint becomes 198.18.3.3:51820
  sudo relay-core sim up --log-level debug --state-dir /tmp/sim
  sudo relay-core sim client add --entry relay-1 --exit relay-2 --state-dir /tmp/sim
  sudo ip netns exec rcs-<id>-c1 curl http://198.18.0.1:8080/   # prints relay-2's address, 198.18.1.2
  sudo ip netns exec rcs-<id>-r1 ip address     # look inside relay 1
  sudo relay-core sim down --state-dir /tmp/sim

Exit codes: 0 done; 1 failed or not converged (what is missing is printed); 2 bad usage.`,
  );

  const up = sim
    .command('up')
    .summary('build it, wait, leave it running in the background')
    .description(`Build the sim and wait until it has converged: every relay serves one topology that has every relay
and (--wait mesh) has a WireGuard link in state up to every other. Then exit 0, leaving everything
running in the background. After --timeout, exit 1 saying which relays or links are missing; the sim
stays up to be looked at. An error while building (or Ctrl-C) removes what was built.`);
  leaf(withOptions(up, ...upOpts()), 'sim up');

  const status = sim
    .command('status')
    .summary('every relay and link of the sim')
    .description(`Every relay (process, state, mesh and public address, topology) and every link (state and handshake
age as each end sees it), from the relays' status sockets. Says whether the sim has converged and if
not, what is missing (exit 0 either way).`);
  leaf(withOptions(status, jsonOpt(), stateDir()), 'sim status');

  const add = sim
    .command('add')
    .summary('a new relay; then waits like up')
    .description(`A new relay (namespace, address, scoped token, process); then waits like up. With --endpoint it
registers that endpoint instead of its address and port 51820: a DNS name tests how relays resolve
names. A relay's DNS stays in its namespace: names come from its own hosts file, which has
relay-<i>.sim.test for relay i's address, and any other name (use the reserved .invalid TLD) never
resolves: queries go to the namespace's loopback, where nothing answers. With --no-ipv6 its namespace
has no IPv6: it exits no client IPv6, and entries refuse its clients' IPv6 at once.
With --community it is a community relay (docs/proof-of-bandwidth.md, "Community relays"): an operator
(--operator, default sim-operator; its user token in STATE_DIR/operators) enrolls it with
'relay-core operator enroll', and it runs with the relay token that answer holds. It joins the mesh in
probation and carries clients once measured ('relay-core pob measure --sim --relay ID --wait'), only
those of sessions that allow community relays ('sim client add --community').`);
  withOptions(
    add,
    relayOpt('the relay to add (default relay-<lowest free i>)'),
    opt('--endpoint <HOST:PORT>', 'the endpoint the relay registers (default its address:51820)'),
    opt('--no-ipv6', "the relay's namespace gets no IPv6 (it exits no client IPv6)"),
    opt('--community', 'a community relay, enrolled by an operator (in probation until measured)'),
    opt('--operator <SUB>', 'with --community: the operator (a user id) who enrolls it', { defaultText: 'sim-operator' }),
    ...waitOpts(),
    stateDir(),
  );
  leaf(add, 'sim add');

  const stop = sim
    .command('stop')
    .summary('SIGTERM a relay (or a NATS node)')
    .description(`SIGTERM a relay: it deregisters and removes its links (SIGKILL after 15 s). With --nats-node NAME
instead, stop that NATS node (of a cluster: the others carry on).`);
  leaf(withOptions(stop, relayOpt('the relay to stop'), natsNodeOpt('the NATS node to stop'), stateDir()), 'sim stop');
  const kill = sim
    .command('kill')
    .summary('SIGKILL a relay (or a NATS node), as a crash would')
    .description(`SIGKILL a relay, as a crash would. Its WireGuard devices (wireguard-go processes) stay and keep its
links up until a restart adopts them. With --nats-node NAME instead, kill that NATS node: a cluster
(sim up --nats 3) elects new stream leaders and the relays carry on with the other nodes.`);
  leaf(withOptions(kill, relayOpt('the relay to kill'), natsNodeOpt('the NATS node to kill'), stateDir()), 'sim kill');
  const restart = sim
    .command('restart')
    .summary("start a relay's (or a NATS node's) process again; then waits like up")
    .description(`Start a relay's process again in its namespace with its state directory and key (stopping it first
if it runs); then waits like up. With --nats-node NAME instead, start that NATS node again on its own
store: in a cluster it catches up from the others.`);
  leaf(withOptions(restart, relayOpt('the relay to restart'), natsNodeOpt('the NATS node to restart'), ...waitOpts(), stateDir()), 'sim restart');
  const move = sim
    .command('move')
    .summary('give a relay a new public address (its endpoint changes); then waits like up')
    .description(`Give a relay a new public address, as when its host is given another one: SIGKILL it (it does not
deregister, so it stays in the topology), replace its address (relay i moves between 198.18.1.i and
198.18.3.i), and start it again with the new address as its endpoint, with its state directory and
keys. Its registration changes its endpoint (RelayEndpointChanged), and the other relays point their
links to it there. Then waits like up.`);
  leaf(withOptions(move, relayOpt('the relay to move (required)'), ...waitOpts(), stateDir()), 'sim move');

  const down = sim
    .command('down')
    .summary('remove everything the sim created')
    .description(`Remove everything the sim created: processes (relays, wireguard-go, nats-server, the control
plane), namespaces with their veths and the bridge, leftover WireGuard sockets in /var/run/wireguard,
and its files except logs. Works from DIR/manifest.json alone, also after the sim or a relay
crashed; does nothing when there is no sim.`);
  leaf(withOptions(down, opt('--purge', 'remove the logs too'), stateDir()), 'sim down');

  declareSimClient(sim, leaf);
  leaf(sim, 'sim');
}

function declareSimClient(sim: Command, leaf: Leaf): void {
  const client = subcommands(
    sim,
    'client',
    'clients with stock WireGuard: add, switch, remove, list',
    `Clients with stock WireGuard (docs/clients.md). 'add' makes a namespace rcs-<sim id>-c<n> on the
bridge (198.18.2.n, and 2001:db8:18::2:n with a default route), a key, and a session through the
control plane (which answers once the entry has programmed it), then brings up wireguard-go with
'wg setconf' from the printed wg-quick file (DIR/clients/NAME/wg.conf): the client reaches the relays
directly and everything else only through its tunnel (IPv6 too). The sim's "internet" web server at
http://198.18.0.1:8080 and http://[2001:db8:18:1::80]:8080 answers with the address a request comes
from: try
  sudo ip netns exec rcs-<id>-c1 curl http://198.18.0.1:8080/
'switch' steers a client to another exit (a standard client's tunnel untouched, a private one given its
new configuration); 'remove' closes its session
and removes its namespace; 'list' shows them.`,
  );
  const add = client
    .command('add')
    .summary('a client namespace with a session through the control plane')
    .description(`A client: namespace, key, session, wireguard-go. Give exactly one of --exit and --exit-region.
--private: a private session (docs/clients.md): its peer is the exit, reached through the entry,
which forwards its ciphertext and never sees its packets. --community: community relays may be on its
path (a community entry makes it private; docs/proof-of-bandwidth.md, "Community relays").`);
  withOptions(
    add,
    opt('--name <NAME>', 'its name', { defaultText: 'client-<n>' }),
    opt('--entry <ID>', 'the entry relay', { defaultText: 'the control plane picks' }),
    ...exitOpts(),
    opt('--private', 'a private session: the entry forwards ciphertext, the exit terminates the tunnel'),
    opt('--community', 'community relays may be on its path'),
    stateDir(),
  );
  leaf(add, 'sim client add');
  const sw = client
    .command('switch')
    .summary('steer a client to another exit')
    .description(`Steer a client to another exit. Give exactly one of --exit and --exit-region. A standard
client's tunnel is untouched; a private client gets the new configuration (its peer is the new exit).`);
  leaf(withOptions(sw, opt('--name <NAME>', 'the client (required)'), ...exitOpts(), stateDir()), 'sim client switch');
  const remove = client
    .command('remove')
    .summary("close a client's session, remove its namespace")
    .description("Close a client's session and remove its namespace.");
  leaf(withOptions(remove, opt('--name <NAME>', 'the client (required)'), stateDir()), 'sim client remove');
  const list = client.command('list').summary('the clients of the sim').description("The sim's clients: namespace, address, entry, exit and session.");
  leaf(withOptions(list, jsonOpt(), stateDir()), 'sim client list');
}
