import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { CliError, intOpt, str, type Command } from '../args.ts';
import { RelayIdSchema } from '../../contract/envelope.ts';
import { parseEndpoint } from '../../contract/topology.events.ts';
import { MAX_RELAYS } from '../../sim/layout.ts';
import { withStateDirLock } from '../../sim/manifest.ts';
import { addRelay, down, loadSim, observe, preflight, restartRelay, stopRelay, up, waitConverged, type Out, type Settings } from '../../sim/network.ts';
import { addClient, removeClient, switchClient } from '../../sim/clients.ts';
import { convergence, renderStatus, type ConvergenceMode } from '../../sim/status.ts';

const usage = `Usage: relay-core sim [--relays N] [up options]      the network in the foreground; Ctrl-C removes it
       relay-core sim up [--relays N] [up options]   build it, wait, leave it running in the background
       relay-core sim status [--json]
       relay-core sim add [--relay ID] [--endpoint HOST:PORT] [--no-ipv6] [wait options]
       relay-core sim stop|kill --relay ID
       relay-core sim restart --relay ID [wait options]
       relay-core sim down [--purge]
       relay-core sim client add [--name NAME] --exit ID|--exit-region R [--entry ID]
       relay-core sim client switch --name NAME --exit ID|--exit-region R
       relay-core sim client remove --name NAME
       relay-core sim client list [--json]
  Every form takes --state-dir DIR (default ./.state/sim) and needs root.

A live relay network on this machine, built from network namespaces. Each relay runs 'relay-core
run' in a namespace of its own with its own public address; a service namespace runs nats-server
(JetStream) and the control plane (Edge Functions on Deno, embedded Postgres); a bridge in a third
namespace is their "internet". Addresses come from the benchmarking range 198.18.0.0/15 on one /16:
bridge 198.18.0.1, services 198.18.0.2 (control plane :54321, NATS :4222), relay i 198.18.1.i with
its WireGuard links on UDP 51820 + the peer's mesh index. The host's own network is not touched, and
several sims can run at once, each in its own state directory: namespaces are rcs-<sim id>-inet,
-svc and -r<i>, and the relays' WireGuard devices carry a device prefix unique to the sim.

Subcommands:
  (none)    up, then a status table refreshed every second until Ctrl-C (or SIGTERM), then down.
  up        Build the sim and wait until it has converged: every relay serves one topology that
            has every relay and (--wait mesh) has a WireGuard link in state up to every other.
            Then exit 0, leaving everything running in the background. After --timeout, exit 1
            saying which relays or links are missing; the sim stays up to be looked at. An error
            while building (or Ctrl-C) removes what was built.
  status    Every relay (process, state, mesh and public address, topology) and every link (state
            and handshake age as each end sees it), from the relays' status sockets. Says whether
            the sim has converged and if not, what is missing (exit 0 either way).
  add       A new relay (namespace, address, scoped token, process); then waits like up. With
            --endpoint it registers that endpoint instead of its address and port 51820: a DNS
            name tests how relays resolve names. A relay's DNS stays in its namespace: names come
            from its own hosts file, which has relay-<i>.sim.test for relay i's address, and any
            other name (use the reserved .invalid TLD) never resolves: queries go to the
            namespace's loopback, where nothing answers. With --no-ipv6 its namespace has no IPv6:
            it exits no client IPv6, and entries refuse its clients' IPv6 at once.
  stop      SIGTERM a relay: it deregisters and removes its links (SIGKILL after 15 s).
  kill      SIGKILL a relay, as a crash would. Its WireGuard devices (wireguard-go processes) stay
            and keep its links up until a restart adopts them.
  restart   Start a relay's process again in its namespace with its state directory and key
            (stopping it first if it runs); then waits like up.
  client    Clients with stock WireGuard (docs/clients.md). 'add' makes a namespace rcs-<sim id>-c<n>
            on the bridge (198.18.2.n, and 2001:db8:18::2:n with a default route), a key, and a session through the control plane (which
            answers once the entry has programmed it), then brings up wireguard-go with 'wg setconf'
            from the printed wg-quick file (DIR/clients/NAME/wg.conf): the client reaches the relays
            directly and everything else only through its tunnel (IPv6 too). The sim's "internet"
            web server at http://198.18.0.1:8080 and http://[2001:db8:18:1::80]:8080 answers with
            the address a request comes from: try
              sudo ip netns exec rcs-<id>-c1 curl http://198.18.0.1:8080/
            'switch' steers a client to another exit without touching its tunnel; 'remove' closes
            its session and removes its namespace; 'list' shows them.
  down      Remove everything the sim created: processes (relays, wireguard-go, nats-server, the
            control plane), namespaces with their veths and the bridge, leftover WireGuard sockets
            in /var/run/wireguard, and its files except logs. Works from DIR/manifest.json alone,
            also after the sim or a relay crashed; does nothing when there is no sim.

Options:
  --state-dir DIR            manifest.json, logs, keys, tokens, databases (default ./.state/sim)
  --relays N                 number of relays, 1-${MAX_RELAYS} (default 3)
  --relay ID                 the relay to add, stop, kill or restart (add: default relay-<lowest free i>)
  --endpoint HOST:PORT       add: the endpoint the relay registers (default its address:51820)
  --no-ipv6                  add: the relay's namespace gets no IPv6 (it exits no client IPv6)
  --wait mesh|topology|none  what up, add and restart wait for (default mesh; topology: no links)
  --timeout S                how long they wait once the relays run, 1-3600 (default 60)
  --db-url URL               a PostgreSQL for the control plane instead of the embedded one. The
                             control plane connects from inside the service namespace, which cannot
                             reach this host's loopback: the server must be reachable from there.
  --keepalive S              relays' persistent keepalive on each link (default 1)
  --link-stale-after MS      a link silent this long is stale (default 5000)
  --link-down-after MS       ... and down (default 10000)
  --observe-interval MS      how often relays read their devices (default 1000)
  --name NAME                client: its name (add: default client-<n>)
  --entry ID, --exit ID      client add: the entry (default: the control plane picks) and exit relay
  --exit-region R            client add, switch: any live relay of region R as the exit
  --json                     status, client list: print JSON
  --purge                    down: remove the logs too
  -h, --help                 show this help

Files in DIR: manifest.json (what the sim created: namespaces, veths, processes with pids, relays,
the WireGuard device prefix), service-role.key (0600), control-plane/ (secrets, database,
control-plane.log), nats/ (nats.log), relays/<id>/ (wg.key, token, relay.sock, relay.log),
clients/<name>/ (wg.key, wg.conf: the printed wg-quick file, 0600), web/ (the web server's log and
requests.jsonl: one line per request with the address it came from).

Examples:
  sudo relay-core sim --relays 3
  sudo relay-core sim up --relays 5 --state-dir /tmp/sim && sudo relay-core sim status --state-dir /tmp/sim
  sudo relay-core sim kill --relay relay-2 --state-dir /tmp/sim
  sudo relay-core sim client add --entry relay-1 --exit relay-2 --state-dir /tmp/sim
  sudo ip netns exec rcs-<id>-c1 curl http://198.18.0.1:8080/   # prints relay-2's address, 198.18.1.2
  sudo ip netns exec rcs-<id>-r1 ip address     # look inside relay 1
  sudo relay-core sim down --state-dir /tmp/sim

Exit codes: 0 done; 1 failed or not converged (what is missing is printed); 2 bad usage.`;

const SUBCOMMANDS = ['up', 'status', 'add', 'stop', 'kill', 'restart', 'down', 'client'] as const;
const CLIENT_ACTIONS = ['add', 'switch', 'remove', 'list'] as const;
type Subcommand = (typeof SUBCOMMANDS)[number] | 'foreground';

const UP_OPTIONS = ['relays', 'db-url', 'keepalive', 'link-stale-after', 'link-down-after', 'observe-interval', 'wait', 'timeout'];
const WAIT_OPTIONS = ['wait', 'timeout'];
/** The options each form accepts besides --state-dir. */
const ALLOWED: Record<Subcommand, string[]> = {
  foreground: UP_OPTIONS,
  up: UP_OPTIONS,
  status: ['json'],
  add: ['relay', 'endpoint', 'no-ipv6', ...WAIT_OPTIONS],
  stop: ['relay'],
  kill: ['relay'],
  restart: ['relay', ...WAIT_OPTIONS],
  down: ['purge'],
  client: ['name', 'entry', 'exit', 'exit-region', 'json'],
};

type Values = Record<string, string | boolean | string[] | undefined>;

export const command: Command = {
  name: 'sim',
  summary: 'live multi-relay network from network namespaces',
  usage,
  options: {
    'state-dir': { type: 'string' },
    relays: { type: 'string' },
    relay: { type: 'string' },
    endpoint: { type: 'string' },
    'no-ipv6': { type: 'boolean' },
    wait: { type: 'string' },
    timeout: { type: 'string' },
    'db-url': { type: 'string' },
    keepalive: { type: 'string' },
    'link-stale-after': { type: 'string' },
    'link-down-after': { type: 'string' },
    'observe-interval': { type: 'string' },
    json: { type: 'boolean' },
    purge: { type: 'boolean' },
    name: { type: 'string' },
    entry: { type: 'string' },
    exit: { type: 'string' },
    'exit-region': { type: 'string' },
  },
  async run(v, positionals) {
    const sub = parseSubcommand(positionals.slice(0, positionals[0] === 'client' ? 1 : 2));
    const clientAction = sub === 'client' ? parseClientAction(positionals.slice(1)) : null;
    for (const k of Object.keys(v)) {
      if (k !== 'state-dir' && v[k] !== undefined && !ALLOWED[sub].includes(k)) throw usageError(`--${k} does not apply to ${sub === 'foreground' ? "'sim' without a subcommand" : `'sim ${sub}'`}`);
    }
    const dir = resolve(str(v['state-dir'], 'state-dir') ?? '.state/sim');
    const relayId = relayOpt(v, sub);
    const wait = waitOpts(v);
    const endpoint = endpointOpt(v);
    const build = sub === 'up' || sub === 'foreground' ? upSettings(v) : null;
    if (process.getuid?.() !== 0) {
      process.stderr.write('relay-core sim needs root (network namespaces, WireGuard devices); run it with sudo\n');
      return 1;
    }
    const out: Out = (s) => process.stdout.write(s + '\n');
    try {
      switch (sub) {
        case 'foreground':
          return await foreground(dir, build!, wait, out);
        case 'up':
          return await upAndWait(dir, build!, wait, out, interruptible());
        case 'status':
          return await status(dir, v.json === true, out);
        case 'add':
          await withStateDirLock(dir, () => addRelay(dir, relayId, out, endpoint, v['no-ipv6'] !== true));
          return await report(dir, wait, out, interruptible());
        case 'stop':
        case 'kill':
          await withStateDirLock(dir, () => stopRelay(dir, relayId!, sub === 'stop' ? 'SIGTERM' : 'SIGKILL', out));
          return 0;
        case 'restart':
          await withStateDirLock(dir, () => restartRelay(dir, relayId!, out));
          return await report(dir, wait, out, interruptible());
        case 'client':
          return await simClient(dir, clientAction!, v, out);
        case 'down':
          if (!existsSync(dir)) {
            out(`no sim in ${dir} (no such directory): nothing to remove`);
            return 0;
          }
          await withStateDirLock(dir, () => down(dir, { purge: v.purge === true, out }));
          if (v.purge) removeIfEmpty(dir);
          return 0;
      }
    } catch (e) {
      if (e instanceof CliError) throw e;
      throw new CliError((e as Error).message, 1);
    }
  },
};

/** Bad usage: the message, the synopsis (the usage's first lines) and where the rest is. */
const usageError = (msg: string) => new CliError(`${msg}\n\n${usage.slice(0, usage.indexOf('\n\n'))}\n\n'relay-core sim --help' explains every option.`, 2);

function parseSubcommand(positionals: string[]): Subcommand {
  const [first, extra] = positionals;
  if (extra !== undefined) throw usageError(`unexpected argument ${JSON.stringify(extra)}`);
  if (first === undefined) return 'foreground';
  if (!(SUBCOMMANDS as readonly string[]).includes(first)) throw usageError(`unknown subcommand ${JSON.stringify(first)}; one of ${SUBCOMMANDS.join(', ')}`);
  return first as Subcommand;
}

function parseClientAction(rest: string[]): (typeof CLIENT_ACTIONS)[number] {
  const [action, extra] = rest;
  if (extra !== undefined) throw usageError(`unexpected argument ${JSON.stringify(extra)}`);
  if (!action || !(CLIENT_ACTIONS as readonly string[]).includes(action)) throw usageError(`'sim client' needs one of ${CLIENT_ACTIONS.join(', ')}`);
  return action as (typeof CLIENT_ACTIONS)[number];
}

async function simClient(dir: string, action: (typeof CLIENT_ACTIONS)[number], v: Values, out: Out): Promise<number> {
  const name = str(v.name, 'name');
  const exit = str(v.exit, 'exit');
  const exitRegion = str(v['exit-region'], 'exit-region');
  if ((action === 'add' || action === 'switch') && !exit === !exitRegion) throw usageError(`'sim client ${action}' needs exactly one of --exit and --exit-region`);
  if ((action === 'switch' || action === 'remove') && !name) throw usageError(`'sim client ${action}' needs --name`);
  switch (action) {
    case 'add':
      await withStateDirLock(dir, () => addClient(dir, { name, entry: str(v.entry, 'entry'), exit, exitRegion }, out));
      return 0;
    case 'switch':
      await withStateDirLock(dir, () => switchClient(dir, name!, { exit, exitRegion }, out));
      return 0;
    case 'remove':
      await withStateDirLock(dir, () => removeClient(dir, name!, out));
      return 0;
    case 'list': {
      const m = loadSim(dir);
      if (v.json) out(JSON.stringify(m.clients, null, 2));
      else if (!m.clients.length) out('no clients');
      else for (const c of m.clients) out(`${c.name}  ${c.namespace}  ${c.address ?? '-'}  ${c.entryId ?? '-'} -> ${c.exitId ?? '-'}  session ${c.sessionId ?? '-'}`);
      return 0;
    }
  }
}

function relayOpt(v: Values, sub: Subcommand): string | undefined {
  const id = str(v.relay, 'relay');
  if (id === undefined) {
    if (sub === 'stop' || sub === 'kill' || sub === 'restart') throw usageError(`'sim ${sub}' needs --relay ID`);
    return undefined;
  }
  if (!RelayIdSchema.safeParse(id).success) throw usageError(`--relay ${JSON.stringify(id)} is not a relay id (1-63 characters of a-z, 0-9 and -)`);
  return id;
}

function endpointOpt(v: Values): string | undefined {
  const ep = str(v.endpoint, 'endpoint');
  if (ep !== undefined && !parseEndpoint(ep)) throw usageError(`--endpoint ${JSON.stringify(ep)} is not HOST:PORT (IPv4, [IPv6] or DNS name, port 1-65535)`);
  return ep;
}

interface WaitOpts {
  mode: ConvergenceMode | 'none';
  timeoutMs: number;
}

function waitOpts(v: Values): WaitOpts {
  const mode = str(v.wait, 'wait') ?? 'mesh';
  if (mode !== 'mesh' && mode !== 'topology' && mode !== 'none') throw usageError('--wait must be mesh, topology or none');
  return { mode, timeoutMs: intOpt(v.timeout, 'timeout', 60, 1, 3600) * 1000 };
}

interface BuildOpts {
  relays: number;
  settings: Settings;
  dbUrl?: string;
}

function upSettings(v: Values): BuildOpts {
  const dbUrl = str(v['db-url'], 'db-url');
  if (dbUrl !== undefined && !/^postgres(ql)?:\/\//.test(dbUrl)) throw usageError('--db-url must be a postgres:// or postgresql:// URL');
  const settings: Settings = {
    keepaliveSeconds: intOpt(v.keepalive, 'keepalive', 1, 0, 65535),
    linkStaleAfterMs: intOpt(v['link-stale-after'], 'link-stale-after', 5_000, 100),
    linkDownAfterMs: intOpt(v['link-down-after'], 'link-down-after', 10_000, 100),
    observeIntervalMs: intOpt(v['observe-interval'], 'observe-interval', 1_000, 100),
    heartbeatSeconds: 5,
  };
  if (settings.linkDownAfterMs < settings.linkStaleAfterMs) throw usageError('--link-down-after must be at least --link-stale-after');
  return { relays: intOpt(v.relays, 'relays', 3, 1, MAX_RELAYS), settings, dbUrl };
}

/**
 * An AbortSignal that SIGINT and SIGTERM abort, so that an interrupted `up` removes what it built;
 * a second signal exits at once (the manifest still lets `sim down` clean up).
 */
function interruptible(): AbortSignal {
  const ac = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (ac.signal.aborted) {
      process.stderr.write(`relay-core sim: ${sig} again, exiting now; 'relay-core sim down' removes what is left\n`);
      process.exit(130);
    }
    ac.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return ac.signal;
}

/** Build and wait; interrupted (while building or waiting), remove the sim again. */
async function upAndWait(dir: string, build: BuildOpts, wait: WaitOpts, out: Out, signal: AbortSignal): Promise<number> {
  const { relays, settings, dbUrl } = build;
  await preflight();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  await withStateDirLock(dir, () => up({ dir, relays, settings, dbUrl, signal, out }));
  try {
    return await report(dir, wait, out, signal);
  } finally {
    if (signal.aborted) await withStateDirLock(dir, () => down(dir, { purge: false, out }));
  }
}

/** Wait as asked, print the table and what is missing; 0 when converged (or not waiting). */
async function report(dir: string, wait: WaitOpts, out: Out, signal: AbortSignal): Promise<number> {
  const m = loadSim(dir);
  if (wait.mode === 'none') {
    out(renderStatus(await observe(m), Date.now()));
    return 0;
  }
  out(`sim ${m.simId}: waiting up to ${wait.timeoutMs / 1000} s for ${wait.mode === 'mesh' ? 'the mesh (every link up)' : 'one topology of every relay'} ...`);
  const r = await waitConverged(dir, wait.mode, wait.timeoutMs, signal);
  out(renderStatus(r.relays, Date.now()));
  if (r.verdict.converged) {
    out(`sim ${m.simId}: converged (${wait.mode}) after ${(r.ms / 1000).toFixed(1)} s.`);
    out(`  control plane ${m.controlPlane.url} and NATS ${m.controlPlane.natsUrl} (inside the sim); service-role key in ${m.controlPlane.serviceRoleKeyFile}`);
    out(`  logs in ${dir}: relays/<id>/relay.log, control-plane/control-plane.log, nats/nats.log`);
    out(`  relay-core sim status --state-dir ${dir}    relay-core sim down --state-dir ${dir}`);
    return 0;
  }
  if (signal.aborted) throw new CliError('interrupted while waiting', 1);
  out(`sim ${m.simId}: not converged after ${wait.timeoutMs / 1000} s; missing:`);
  for (const line of r.verdict.missing) out(`  ${line}`);
  out(`The sim is still up, to be looked at (logs in ${dir}/relays/<id>/relay.log); 'relay-core sim down --state-dir ${dir}' removes it.`);
  return 1;
}

async function status(dir: string, json: boolean, out: Out): Promise<number> {
  const m = loadSim(dir);
  const relays = await observe(m);
  const mesh = convergence(relays, 'mesh');
  const topology = convergence(relays, 'topology');
  if (json) {
    out(JSON.stringify({ simId: m.simId, wgPrefix: m.wgPrefix, stateDir: m.stateDir, converged: { topology: topology.converged, mesh: mesh.converged }, missing: mesh.missing, relays }, null, 2));
    return 0;
  }
  out(`sim ${m.simId} (state ${dir}, WireGuard device prefix ${m.wgPrefix}, control plane ${m.controlPlane.url})`);
  out(renderStatus(relays, Date.now()));
  out(mesh.converged ? 'converged: every relay serves one topology and every link is up' : `not converged${topology.converged ? ' (the topology is, the mesh is not)' : ''}:\n${mesh.missing.map((l) => `  ${l}`).join('\n')}`);
  return 0;
}

/** `sim` without a subcommand: up, a live table until a signal, then down. */
async function foreground(dir: string, build: BuildOpts, wait: WaitOpts, out: Out): Promise<number> {
  const signal = interruptible();
  const teardown = () => withStateDirLock(dir, () => down(dir, { purge: false, out }));
  if ((await upAndWait(dir, build, wait, out, signal)) !== 0) {
    await teardown();
    return 1;
  }
  const tty = process.stdout.isTTY === true;
  while (!signal.aborted) {
    const m = loadSim(dir);
    const relays = await observe(m);
    const verdict = convergence(relays, wait.mode === 'topology' ? 'topology' : 'mesh');
    const screen = [
      `sim ${m.simId}  ${new Date().toTimeString().slice(0, 8)}  ${verdict.converged ? 'converged' : `not converged: ${verdict.missing.length} missing`}   (Ctrl-C removes the sim)`,
      renderStatus(relays, Date.now()),
    ].join('\n');
    process.stdout.write(tty ? `\x1b[H\x1b[2J${screen}\n` : `${screen}\n\n`);
    await new Promise<void>((r) => {
      const t = setTimeout(r, 1_000);
      signal.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
    });
  }
  out('relay-core sim: removing the sim ...');
  await teardown();
  return 0;
}

function removeIfEmpty(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    /* not empty, or already gone: either way nothing of ours is left */
  }
}
