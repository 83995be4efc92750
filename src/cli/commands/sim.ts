import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { CliError, str, type Action, type Values } from '../args.ts';
import { RelayIdSchema } from '../../contract/envelope.ts';
import { parseEndpoint } from '../../contract/topology.events.ts';
import { withStateDirLock } from '../../sim/manifest.ts';
import {
  addRelay,
  down as removeSim,
  loadSim,
  moveRelay,
  observe,
  preflight,
  observeNats,
  restartNats,
  restartRelay,
  stopNats,
  stopRelay,
  up as buildSim,
  waitConverged,
  type Out,
  type Settings,
} from '../../sim/network.ts';
import { addClient, removeClient, switchClient } from '../../sim/clients.ts';
import { convergence, progressLine, progressOf, renderStatus, statusKey, type ConvergenceMode } from '../../sim/status.ts';

/**
 * The actions of `relay-core sim` and its subcommands (declared in ../declare-sim.ts). Each checks its
 * options first (bad usage: exit 2), then needs root, then works on the sim in --state-dir.
 */

const out: Out = (s) => process.stdout.write(s + '\n');

/** Runs `work` on the sim's directory as root; failures other than usage errors exit 1. */
async function asRoot(v: Values, work: (dir: string) => Promise<number>): Promise<number> {
  const dir = resolve(v.stateDir as string);
  if (process.getuid?.() !== 0) {
    process.stderr.write('relay-core sim needs root (network namespaces, WireGuard devices); run it with sudo\n');
    return 1;
  }
  try {
    return await work(dir);
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError((e as Error).message, 1);
  }
}

/** `sim` alone: up, a live table until a signal, then down. */
export const foreground: Action = async (v) => {
  const build = upSettings(v);
  const wait = waitOpts(v);
  return asRoot(v, (dir) => runForeground(dir, build, wait, out));
};

export const up: Action = async (v) => {
  const build = upSettings(v);
  const wait = waitOpts(v);
  return asRoot(v, (dir) => upAndWait(dir, build, wait, out, interruptible()));
};

export const status: Action = async (v) => asRoot(v, (dir) => showStatus(dir, v.json === true, out));

export const add: Action = async (v) => {
  const id = relayOpt(v);
  const endpoint = endpointOpt(v);
  const operator = str(v.operator);
  if (operator !== undefined && v.community !== true) throw new CliError('--operator goes with --community', 2);
  if (operator !== undefined && (operator.length > 255 || /[\u0000-\u001f\u007f]/.test(operator)))
    throw new CliError('--operator must be 1-255 characters without control characters', 2);
  const community = v.community === true ? { operator: operator ?? 'sim-operator' } : null;
  return changeAndWait(v, (dir) => addRelay(dir, id, out, endpoint, v.ipv6 !== false, community));
};

const stopWith =
  (signal: 'SIGTERM' | 'SIGKILL'): Action =>
  async (v) => {
    const target = relayOrNatsNode(v, signal === 'SIGTERM' ? 'stop' : 'kill');
    return asRoot(v, async (dir) => {
      await withStateDirLock(dir, () => ('nats' in target ? stopNats(dir, target.nats, signal, out) : stopRelay(dir, target.relay, signal, out)));
      return 0;
    });
  };
export const stop = stopWith('SIGTERM');
export const kill = stopWith('SIGKILL');

/** Change the sim under its state directory's lock, then report and wait like up (usage checked first). */
function changeAndWait(v: Values, change: (dir: string) => Promise<unknown>): Promise<number> {
  const wait = waitOpts(v);
  return asRoot(v, async (dir) => {
    await withStateDirLock(dir, () => change(dir));
    return await report(dir, wait, out, interruptible());
  });
}

/** `sim restart --relay ID`, or `--nats-node NAME`: that node again on its store (the relays carry on). */
export const restart: Action = async (v) => {
  const target = relayOrNatsNode(v, 'restart');
  return changeAndWait(v, (dir) => ('nats' in target ? restartNats(dir, target.nats, out) : restartRelay(dir, target.relay, out)));
};
export const move: Action = async (v) => {
  const id = relayOpt(v, 'move')!;
  return changeAndWait(v, (dir) => moveRelay(dir, id, out));
};

export const down: Action = async (v) =>
  asRoot(v, async (dir) => {
    if (!existsSync(dir)) {
      out(`no sim in ${dir} (no such directory): nothing to remove`);
      return 0;
    }
    await withStateDirLock(dir, () => removeSim(dir, { purge: v.purge === true, out }));
    if (v.purge) removeIfEmpty(dir);
    return 0;
  });

/** `--exit ID` or `--exit-region R`, exactly one. */
function exitOpts(v: Values, action: string): { exit: string | undefined; exitRegion: string | undefined } {
  const exit = str(v.exit);
  const exitRegion = str(v.exitRegion);
  if (!exit === !exitRegion) throw new CliError(`'sim client ${action}' needs exactly one of --exit and --exit-region`, 2);
  return { exit, exitRegion };
}

function nameOpt(v: Values, action: string): string {
  const name = str(v.name);
  if (!name) throw new CliError(`'sim client ${action}' needs --name`, 2);
  return name;
}

export const clientAdd: Action = async (v) => {
  const choice = exitOpts(v, 'add');
  return asRoot(v, async (dir) => {
    await withStateDirLock(dir, () =>
      addClient(dir, { name: str(v.name), entry: str(v.entry), ...choice, private: v.private === true, community: v.community === true }, out),
    );
    return 0;
  });
};

export const clientSwitch: Action = async (v) => {
  const choice = exitOpts(v, 'switch');
  const name = nameOpt(v, 'switch');
  return asRoot(v, async (dir) => {
    await withStateDirLock(dir, () => switchClient(dir, name, choice, out));
    return 0;
  });
};

export const clientRemove: Action = async (v) => {
  const name = nameOpt(v, 'remove');
  return asRoot(v, async (dir) => {
    await withStateDirLock(dir, () => removeClient(dir, name, out));
    return 0;
  });
};

export const clientList: Action = async (v) =>
  asRoot(v, async (dir) => {
    const m = loadSim(dir);
    if (v.json) out(JSON.stringify(m.clients, null, 2));
    else if (!m.clients.length) out('no clients');
    else
      for (const c of m.clients)
        out(`${c.name}  ${c.namespace}  ${c.address ?? '-'}  ${c.entryId ?? '-'} -> ${c.exitId ?? '-'}  ${c.mode}  session ${c.sessionId ?? '-'}`);
    return 0;
  });

/** stop, kill and restart take `--relay ID` or `--nats-node NAME`, exactly one. */
function relayOrNatsNode(v: Values, action: string): { relay: string } | { nats: string } {
  const node = str(v.natsNode);
  if (node === undefined) return { relay: relayOpt(v, action)! };
  if (v.relay !== undefined) throw new CliError(`'sim ${action}' takes --relay or --nats-node, not both`, 2);
  if (!/^nats(-[1-9])?$/.test(node)) throw new CliError(`--nats-node ${JSON.stringify(node)} is not a NATS node (nats, or nats-<i> of a cluster)`, 2);
  return { nats: node };
}

/** `--relay ID`: required to stop, kill or restart (`requiredBy`); add picks one without it. */
function relayOpt(v: Values, requiredBy?: string): string | undefined {
  const id = str(v.relay);
  if (id === undefined) {
    if (requiredBy) throw new CliError(`'sim ${requiredBy}' needs --relay ID${requiredBy === 'move' ? '' : ' (or --nats-node NAME)'}`, 2);
    return undefined;
  }
  if (!RelayIdSchema.safeParse(id).success) throw new CliError(`--relay ${JSON.stringify(id)} is not a relay id (1-63 characters of a-z, 0-9 and -)`, 2);
  return id;
}

function endpointOpt(v: Values): string | undefined {
  const ep = str(v.endpoint);
  if (ep !== undefined && !parseEndpoint(ep))
    throw new CliError(`--endpoint ${JSON.stringify(ep)} is not HOST:PORT (IPv4, [IPv6] or DNS name, port 1-65535)`, 2);
  return ep;
}

interface WaitOpts {
  mode: ConvergenceMode | 'none';
  timeoutMs: number;
}

function waitOpts(v: Values): WaitOpts {
  const mode = v.wait as string;
  if (mode !== 'mesh' && mode !== 'topology' && mode !== 'none') throw new CliError('--wait must be mesh, topology or none', 2);
  return { mode, timeoutMs: (v.timeout as number) * 1000 };
}

interface BuildOpts {
  relays: number;
  settings: Settings;
  dbUrl?: string;
}

function upSettings(v: Values): BuildOpts {
  const dbUrl = str(v.dbUrl);
  if (dbUrl !== undefined && !/^postgres(ql)?:\/\//.test(dbUrl)) throw new CliError('--db-url must be a postgres:// or postgresql:// URL', 2);
  const settings: Settings = {
    keepaliveSeconds: v.keepalive as number,
    linkStaleAfterMs: v.linkStaleAfter as number,
    linkDownAfterMs: v.linkDownAfter as number,
    observeIntervalMs: v.observeInterval as number,
    heartbeatSeconds: 5,
    ...(v.receiptEpoch !== undefined ? { receiptEpochSeconds: v.receiptEpoch as number } : {}),
    ...(v.measureEvery ? { measureEverySeconds: v.measureEvery as number } : {}),
    ...(v.settleAfter !== undefined ? { settleAfterSeconds: v.settleAfter as number } : {}),
    logLevel: v.logLevel as Settings['logLevel'],
    natsNodes: v.nats as number,
  };
  // A JetStream cluster needs a majority: 2 nodes survive no loss, 4 no more than 3 do.
  if (settings.natsNodes % 2 === 0) throw new CliError('--nats must be 1, 3 or 5 (a cluster needs a majority of its nodes up)', 2);
  if (settings.linkDownAfterMs < settings.linkStaleAfterMs) throw new CliError('--link-down-after must be at least --link-stale-after', 2);
  return { relays: v.relays as number, settings, dbUrl };
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
  await withStateDirLock(dir, () => buildSim({ dir, relays, settings, dbUrl, signal, out }));
  try {
    return await report(dir, wait, out, signal);
  } finally {
    if (signal.aborted) await withStateDirLock(dir, () => removeSim(dir, { purge: false, out }));
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
  // On a terminal, one line that says how far it is (relays serving, links up), rewritten in place.
  const tty = process.stdout.isTTY === true;
  const r = await waitConverged(
    dir,
    wait.mode,
    wait.timeoutMs,
    signal,
    tty ? (relays, ms) => process.stdout.write(`\r\x1b[K  ${progressLine(progressOf(relays), ms)}`) : undefined,
  );
  if (tty) process.stdout.write('\r\x1b[K');
  out(renderStatus(r.relays, Date.now()));
  if (r.verdict.converged) {
    out(`sim ${m.simId}: converged (${wait.mode}) after ${(r.ms / 1000).toFixed(1)} s.`);
    out(`  control plane ${m.controlPlane.url} and NATS ${m.controlPlane.natsUrl} (inside the sim); service-role key in ${m.controlPlane.serviceRoleKeyFile}`);
    out(`  logs in ${dir}: relays/<id>/relay.log, control-plane/control-plane.log, nats/${m.settings.natsNodes === 1 ? 'nats.log' : 'nats-<i>.log'}`);
    out(`  relay-core sim status --state-dir ${dir}    relay-core sim down --state-dir ${dir}`);
    return 0;
  }
  if (signal.aborted) throw new CliError('interrupted while waiting', 1);
  out(`sim ${m.simId}: not converged after ${wait.timeoutMs / 1000} s; missing:`);
  for (const line of r.verdict.missing) out(`  ${line}`);
  out(`The sim is still up, to be looked at (logs in ${dir}/relays/<id>/relay.log); 'relay-core sim down --state-dir ${dir}' removes it.`);
  return 1;
}

async function showStatus(dir: string, json: boolean, out: Out): Promise<number> {
  const m = loadSim(dir);
  const relays = await observe(m);
  const mesh = convergence(relays, 'mesh');
  const topology = convergence(relays, 'topology');
  if (json) {
    out(
      JSON.stringify(
        {
          simId: m.simId,
          wgPrefix: m.wgPrefix,
          stateDir: m.stateDir,
          converged: { topology: topology.converged, mesh: mesh.converged },
          missing: mesh.missing,
          nats: observeNats(m),
          relays,
        },
        null,
        2,
      ),
    );
    return 0;
  }
  out(`sim ${m.simId} (state ${dir}, WireGuard device prefix ${m.wgPrefix}, control plane ${m.controlPlane.url})`);
  out(renderStatus(relays, Date.now()));
  out(
    `NATS: ${observeNats(m)
      .map((n) => `${n.name} ${n.url} ${n.process}`)
      .join(', ')}`,
  );
  out(
    mesh.converged
      ? 'converged: every relay serves one topology and every link is up'
      : `not converged${topology.converged ? ' (the topology is, the mesh is not)' : ''}:\n${mesh.missing.map((l) => `  ${l}`).join('\n')}`,
  );
  return 0;
}

/** `sim` without a subcommand: up, a live table until a signal, then down. */
async function runForeground(dir: string, build: BuildOpts, wait: WaitOpts, out: Out): Promise<number> {
  const signal = interruptible();
  const teardown = () => withStateDirLock(dir, () => removeSim(dir, { purge: false, out }));
  if ((await upAndWait(dir, build, wait, out, signal)) !== 0) {
    await teardown();
    return 1;
  }
  const tty = process.stdout.isTTY === true;
  let shown = '';
  while (!signal.aborted) {
    const m = loadSim(dir);
    const relays = await observe(m);
    const verdict = convergence(relays, wait.mode === 'topology' ? 'topology' : 'mesh');
    // To a pipe or a file, a table only when something changed (a terminal is redrawn every second).
    const key = statusKey(relays, verdict);
    const quiet = !tty && key === shown;
    shown = key;
    const screen = [
      `sim ${m.simId}  ${new Date().toTimeString().slice(0, 8)}  ${verdict.converged ? 'converged' : `not converged: ${verdict.missing.length} missing`}   (Ctrl-C removes the sim)`,
      renderStatus(relays, Date.now()),
    ].join('\n');
    if (!quiet) process.stdout.write(tty ? `\x1b[H\x1b[2J${screen}\n` : `${screen}\n\n`);
    await new Promise<void>((r) => {
      const t = setTimeout(r, 1_000);
      signal.addEventListener(
        'abort',
        () => {
          clearTimeout(t);
          r();
        },
        { once: true },
      );
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
