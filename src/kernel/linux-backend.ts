import { existsSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../lib/logger.ts';
import { describeOp } from './execute.ts';
import {
  KernelOpError,
  type HostState,
  type KernelBackend,
  type KernelOp,
  type KernelScope,
  type NftCounter,
  type NftTableState,
  type PeerObservation,
  type PortMapState,
  type RouteState,
  type RuleState,
} from './host-state.ts';
import { execaRunner, type CommandRunner } from './command-runner.ts';
import { commandOf, ipBatch, ipBatchFailure, ipBatchKey, nftTableScript, portMapReplaceScript, READ, STEP } from './linux-commands.ts';
import {
  countersOf,
  nftTableDigest,
  observation,
  parseDevice,
  withWireGuard,
  parseDump,
  portMapsOf,
  splitDumpAll,
  presentTables,
  routesOf,
  rulesOf,
  sysctlValues,
  type DumpPeer,
  type IpAddrJson,
  type IpRouteJson,
  type IpRuleJson,
  type NftCountersJson,
  type NftListJson,
  type NftMapJson,
} from './linux-parse.ts';
import { canonicalHostState } from './host-text.ts';
import { parseUapiPeers, uapiGet } from './wg-uapi.ts';
import { focusedDevices, restrict, type Focus } from './focus.ts';

/** From this many devices on, their WireGuard state is read with one `wg show all dump`. */
const ALL_DUMP_FROM = 3;
/** Where wireguard-go puts its control socket: one directory for every network namespace. */
const WG_SOCKET_DIR = '/var/run/wireguard';
/** How long wireguard-go gets to notice its device is gone, exit and remove its socket. */
const SOCKET_GRACE_MS = 3_000;
/** How long a new wireguard-go daemon gets to answer on its control socket. */
const DAEMON_GRACE_MS = 5_000;

export type WireGuardImpl = 'auto' | 'kernel' | 'userspace';

export interface LinuxKernelBackendOptions {
  logger: Logger;
  /** Run every command in this network namespace (`ip netns exec NS ...`): tests and tooling. */
  netns?: string;
  /** WireGuard devices from the kernel module, from `wireguard-go`, or whichever works (default). */
  impl?: WireGuardImpl;
  /** Per command (default 10 s). */
  timeoutMs?: number;
  /** Who runs the commands (default: real processes; tests pass a fake, src/kernel/command-runner.ts). */
  runner?: CommandRunner;
}

/**
 * The only code that changes the host: `ip`, `wg`, `wireguard-go`, `sysctl` and `nft`, each run with an
 * argument array, a timeout and no shell. Private keys reach `wg` as a file path only and never appear
 * on a command line, in a log or in memory longer than one parse (`wg show dump` prints the private
 * key first; that field is dropped unread).
 *
 * Reading sees only owned devices that exist as links in this namespace: `wg show all dump` (which
 * reads the state of three devices or more in one process) also lists the wireguard-go sockets of
 * other namespaces, whose directory is shared, and those are dropped. Device names must therefore be
 * unique on the machine. The observer reads a wireguard-go device's peers from its control socket
 * (found by name in that shared directory; the device's own lines, its private key first, are skipped).
 *
 * nftables: only tables of family inet named in the scope are read or changed, never the rest of the
 * ruleset. A table is written in one `nft -f -` transaction (create if absent, delete, create with its
 * body and the comment `relay-core:<digest>`), so it is never seen half built and never missing; its
 * digest reads back from that comment alone (a table without it reads with digest '' and is replaced).
 * A table's port maps are the elements of its map `port_map` (`nft -j list map`), each added or
 * deleted with one `nft` command, or replaced in one transaction.
 */
export class LinuxKernelBackend implements KernelBackend {
  readonly kind = 'linux' as const;
  private readonly log: Logger;
  private readonly netns: string | undefined;
  private readonly timeoutMs: number;
  private readonly runner: CommandRunner;
  /** How many commands this backend ran (reads and writes alike): what a round costs the host. */
  get commands(): number {
    return this.commandsRun;
  }
  private commandsRun = 0;
  /** Becomes 'kernel' or 'userspace' once a device was created the one way or the other. */
  private impl: WireGuardImpl;

  constructor(opts: LinuxKernelBackendOptions) {
    this.log = opts.logger;
    this.netns = opts.netns;
    this.impl = opts.impl ?? 'auto';
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.runner = opts.runner ?? execaRunner;
  }

  async apply(op: KernelOp): Promise<void> {
    this.log.debug({ op: describeOp(op) }, 'kernel op');
    if (op.op === 'link.add') {
      await this.createDevice(op);
      await this.run(STEP.mtu(op.dev, op.mtu), op);
    } else if (op.op === 'link.del') {
      await this.run(STEP.deleteLink(op.dev), op);
      await this.awaitSocketGone(op);
    } else if (op.op === 'nft.table.set') {
      await this.run(STEP.nftScript, op, nftTableScript(op));
    } else if (op.op === 'portmap.replace') {
      await this.run(STEP.nftScript, op, portMapReplaceScript(op));
    } else {
      await this.run(commandOf(op), op);
    }
  }

  /** Addresses, routes, rules and links' settings: consecutive ones of one family go in one `ip -batch`. */
  batchKey(op: KernelOp): string | null {
    return ipBatchKey(op);
  }

  /**
   * One `ip -batch -` for operations of one batch key. ip stops at the first line that fails and says
   * which (`Command failed -:N`): the lines before it were applied, the rest were not run. When it does
   * not say (a timeout), nothing is counted as applied and the first operation carries the failure.
   */
  async applyBatch(ops: readonly KernelOp[]): Promise<{ applied: number; error: KernelOpError | null }> {
    const key = ipBatchKey(ops[0]!);
    if (key === null || ops.some((op) => ipBatchKey(op) !== key)) throw new Error(`not one ip batch: ${ops.map((o) => o.op).join(', ')}`);
    for (const op of ops) this.log.debug({ op: describeOp(op) }, 'kernel op');
    const { args, input } = ipBatch(key, ops);
    const r = await this.exec(args, {}, input);
    if (!r.error) return { applied: ops.length, error: null };
    const at = ipBatchFailure(r.error.stderr);
    const i = at && at.line >= 1 && at.line <= ops.length ? at.line - 1 : 0;
    const op = ops[i]!;
    const command = this.inNetns(commandOf(op as Parameters<typeof commandOf>[0]));
    const stderr = at ? at.message : r.error.stderr;
    return { applied: at ? i : 0, error: this.opError(op, { command, exitCode: r.error.exitCode, stderr }) };
  }

  /**
   * One process per kind of object, at most: the links, the WireGuard state of the devices read, routes
   * and rules (per family), the sysctls, the tables. With a focus, only the focused devices' WireGuard
   * state is read, and a kind the focus does not touch is not read at all.
   */
  async read(scope: KernelScope, focus?: Focus, known?: HostState): Promise<HostState> {
    // A device focused for its WireGuard settings alone, whose link the last round reached: `wg show` only.
    const wgOnly = focus ? [...focus.wireguard].filter((d) => d.startsWith(scope.devicePrefix) && known?.devices.has(d)) : [];
    const whole = focus ? new Set([...focus.devices, ...[...focus.wireguard].filter((d) => !wgOnly.includes(d))]) : null;
    const wanted = (dev: string) => dev.startsWith(scope.devicePrefix) && (!whole || whole.has(dev));
    const links = !whole || whole.size > 0 ? (await this.json<IpAddrJson[]>(READ.addresses)).filter((l) => wanted(l.ifname)) : [];
    const owned = (dev: string | undefined) => dev?.startsWith(scope.devicePrefix) === true;
    const needRoutes = !focus || focus.devices.size > 0 || focus.routes.size > 0;
    // A table's port maps are read with it, or when one of them is in the focus.
    const mapTables = scope.nftTables.filter((n) => !focus || focus.nftTables.has(n) || [...focus.portMaps].some((k) => k.startsWith(`${n} `)));
    const [dumps, routes, rules, sysctls, nftTables, portMaps] = await Promise.all([
      this.wgDumps([...links.map((l) => l.ifname), ...wgOnly], new Set(wgOnly)),
      needRoutes ? this.readRoutes(owned) : [],
      !focus || focus.rules.size > 0 ? this.readRules(scope.rulePriorities) : [],
      this.readSysctls(scope.sysctls.filter((k) => !focus || focus.sysctls.has(k))),
      this.readNftTables(scope.nftTables.filter((n) => !focus || focus.nftTables.has(n))),
      this.readPortMaps(mapTables),
    ]);
    // A device `wg show` could not read is not as the last round reached it: read it whole.
    if (wgOnly.some((d) => !dumps.has(d))) return this.read(scope, { ...focus!, devices: new Set(focusedDevices(focus!)), wireguard: new Set() });
    const devices = new Map(links.map((l) => [l.ifname, parseDevice(l, dumps.get(l.ifname)!)]));
    for (const dev of wgOnly) devices.set(dev, withWireGuard(known!.devices.get(dev)!, dumps.get(dev)!));
    const state = canonicalHostState({ devices, routes, rules, sysctls, nftTables, portMaps });
    return focus ? restrict(state, focus) : state;
  }

  /**
   * The peers of `devices` that exist: a wireguard-go device's from its control socket (no process),
   * the others' (kernel devices, or a socket that did not answer) as `wg show` lists them.
   */
  async observe(devices: string[]): Promise<PeerObservation[]> {
    const bySocket = new Map<string, DumpPeer[]>();
    await Promise.all(
      devices
        .filter((d) => existsSync(socketOf(d)))
        .map(async (d) => {
          try {
            bySocket.set(d, parseUapiPeers(await uapiGet(socketOf(d), this.timeoutMs)));
          } catch (e) {
            this.log.debug({ dev: d, err: String(e) }, 'the control socket did not answer: reading the device with wg');
          }
        }),
    );
    const rest = devices.filter((d) => !bySocket.has(d));
    const dumps = new Map<string, string>();
    if (rest.length > 0) {
      const present = new Set((await this.json<{ ifname: string }[]>(READ.links)).map((l) => l.ifname));
      for (const [dev, dump] of await this.wgDumps(rest.filter((d) => present.has(d)))) dumps.set(dev, dump);
    }
    return devices.flatMap((dev) => {
      const peers = bySocket.get(dev) ?? (dumps.has(dev) ? parseDump(dumps.get(dev)!).peers : []);
      return peers.map((p) => observation(dev, p));
    });
  }

  /**
   * The `wg show DEV dump` of each device: of a few, one process each; of more, all of them from one
   * `wg show all dump` (which also lists other namespaces' wireguard-go sockets: they are left out, and
   * a device it did not list is read alone, which fails as it would have). A device of `mayBeGone` that
   * does not answer is left out instead.
   */
  private async wgDumps(devs: readonly string[], mayBeGone: ReadonlySet<string> = new Set()): Promise<Map<string, string>> {
    const wanted = new Set(devs);
    const dumps = wanted.size >= ALL_DUMP_FROM ? splitDumpAll(await this.run(READ.wgDumpAll, null), wanted) : new Map<string, string>();
    await Promise.all(
      [...wanted]
        .filter((d) => !dumps.has(d))
        .map(async (d) => {
          if (!mayBeGone.has(d)) dumps.set(d, await this.run(READ.wgDump(d), null));
          else {
            const r = await this.exec(READ.wgDump(d));
            if (!r.error) dumps.set(d, r.stdout);
          }
        }),
    );
    return dumps;
  }

  /**
   * IPv6 is on when the host has it and `disable_ipv6` is 0; an exit for clients' IPv6 also needs a
   * default IPv6 route (main table).
   */
  async ipv6(): Promise<{ enabled: boolean; defaultRoute: boolean }> {
    const r = await this.exec(READ.ipv6Disabled);
    if (r.error || r.stdout.trim() !== '0') return { enabled: false, defaultRoute: false };
    const routes = await this.json<unknown[]>(READ.ipv6DefaultRoutes);
    return { enabled: true, defaultRoute: routes.length > 0 };
  }

  async counters(table: string): Promise<Record<string, NftCounter>> {
    const r = await this.exec(READ.nftCounters(table));
    // No such table (not programmed yet, or torn down): no counters.
    if (r.error) {
      if (/No such file or directory|does not exist/i.test(r.error.stderr)) return {};
      throw new Error(`${r.error.command.join(' ')} failed (exit ${r.error.exitCode}): ${r.error.stderr}`);
    }
    return countersOf(JSON.parse(r.stdout) as NftCountersJson, table);
  }

  /** `ip link add ... type wireguard` where the kernel has WireGuard, else a `wireguard-go` process. */
  private async createDevice(op: Extract<KernelOp, { op: 'link.add' }>): Promise<void> {
    if (this.impl !== 'userspace') {
      const r = await this.exec(STEP.kernelDevice(op.dev));
      if (!r.error) {
        this.impl = 'kernel';
        return;
      }
      // Only a kernel without WireGuard sends us to wireguard-go; any other failure is the answer.
      if (this.impl === 'kernel' || !/unknown device type|not supported/i.test(r.error.stderr)) throw this.opError(op, r.error);
      this.log.info({ dev: op.dev }, 'no WireGuard in this kernel: using wireguard-go');
    }
    // wireguard-go daemonises once its device and socket exist; it keeps our stdio only if LOG_LEVEL is set.
    const r = await this.exec(STEP.wireguardGo(op.dev), { LOG_LEVEL: undefined });
    // It logs its errors to stdout.
    if (r.error) throw this.opError(op, { ...r.error, stderr: [r.error.stderr, r.stdout.trim()].filter(Boolean).join('\n') });
    this.impl = 'userspace';
    await this.awaitDaemon(op);
  }

  /**
   * The wireguard-go that created a device returns before the daemon it started runs, and that daemon
   * sets the device's MTU to its default (1420) when it takes the device over: an MTU set before then
   * is lost (seen on a private device, MTU 1360, about one time in fifteen). The daemon answers on its
   * control socket only once it has the device, so a `wg show` that answers means it is done.
   */
  private async awaitDaemon(op: KernelOp & { dev: string }): Promise<void> {
    const deadline = Date.now() + DAEMON_GRACE_MS;
    for (;;) {
      const r = await this.exec(READ.wgListenPort(op.dev));
      if (!r.error) return;
      if (Date.now() > deadline)
        throw this.opError(op, {
          ...r.error,
          stderr:
            `the wireguard-go daemon of ${op.dev} did not answer on its control socket within ${DAEMON_GRACE_MS} ms: ${r.error.stderr}` +
            ' (once daemonised it logs nothing; each wireguard-go takes an inotify instance, so a host at fs.inotify.max_user_instances has it exit at once: see docs/operations.md)',
        });
      await sleep(20);
    }
  }

  /**
   * A wireguard-go device's daemon exits when its link is deleted and removes its socket. A socket that
   * lingers nobody answers on is stale and removed; one that answers means a wireguard-go for this
   * name still runs (in another namespace, or hung), which is an error.
   */
  private async awaitSocketGone(op: KernelOp & { dev: string }): Promise<void> {
    const socket = socketOf(op.dev);
    const deadline = Date.now() + SOCKET_GRACE_MS;
    while (existsSync(socket) && Date.now() < deadline) await sleep(50);
    if (!existsSync(socket)) return;
    if (await socketAnswers(socket)) throw new KernelOpError(op, `${socket} still answers after its device was deleted`, { command: STEP.deleteLink(op.dev) });
    this.log.warn({ dev: op.dev, socket }, 'removing the stale wireguard-go socket');
    rmSync(socket, { force: true });
  }

  private async readRoutes(owned: (dev: string | undefined) => boolean): Promise<RouteState[]> {
    const read = async (fam: '-4' | '-6') => routesOf(await this.json<IpRouteJson[]>(READ.routes(fam)), fam, owned);
    return (await Promise.all([read('-4'), read('-6')])).flat();
  }

  private async readRules(range: [number, number]): Promise<RuleState[]> {
    const [v4, v6] = await Promise.all([this.json<IpRuleJson[]>(READ.rules('-4')), this.json<IpRuleJson[]>(READ.rules('-6'))]);
    const { rules, strange } = rulesOf(v4, v6, range);
    if (strange.length > 0) this.log.warn({ rules: strange }, 'rules in the owned priority range with selectors relay-core does not set: left alone');
    return rules;
  }

  /** All keys in one `sysctl KEY...` (`key = value` lines, matched by key); nothing owned: not run. */
  private async readSysctls(keys: string[]): Promise<Record<string, string>> {
    if (keys.length === 0) return {};
    return sysctlValues(await this.run(READ.sysctls(keys), null), keys);
  }

  /** The owned tables of family inet, with the digest from their comment. Nothing owned: `nft` is not run. */
  private async readNftTables(names: string[]): Promise<Record<string, NftTableState>> {
    if (names.length === 0) return {};
    const present = presentTables(await this.json<NftListJson>(READ.nftTables), names);
    const texts = await Promise.all(present.map((name) => this.run(READ.nftTable(name), null)));
    return Object.fromEntries(present.map((name, i) => [name, { name, digest: nftTableDigest(name, texts[i]!) }]));
  }

  /** The elements of each table's port map; a table that is absent, or has no such map, has none. */
  private async readPortMaps(tables: string[]): Promise<PortMapState[]> {
    const read = async (table: string) => {
      const r = await this.exec(READ.portMap(table));
      if (!r.error) return portMapsOf(JSON.parse(r.stdout) as NftMapJson, table);
      if (/No such file or directory|does not exist/i.test(r.error.stderr)) return [];
      throw new Error(`${r.error.command.join(' ')} failed (exit ${r.error.exitCode}): ${r.error.stderr}`);
    };
    return (await Promise.all(tables.map(read))).flat();
  }

  private async json<T>(args: readonly string[]): Promise<T> {
    return JSON.parse(await this.run(args, null)) as T;
  }

  /** Run a command (`input` is its stdin); throw a `KernelOpError` for `op`, or a plain error while reading. Returns stdout. */
  private async run(args: readonly string[], op: KernelOp | null, input?: string): Promise<string> {
    const r = await this.exec(args, {}, input);
    if (!r.error) return r.stdout;
    if (op) throw this.opError(op, r.error);
    throw new Error(`${r.error.command.join(' ')} failed (exit ${r.error.exitCode}): ${r.error.stderr}`);
  }

  /** A command as it runs: in the backend's network namespace, if it has one. */
  private inNetns(args: readonly string[]): string[] {
    return this.netns ? ['ip', 'netns', 'exec', this.netns, ...args] : [...args];
  }

  private async exec(args: readonly string[], env: Record<string, undefined> = {}, input?: string): Promise<{ stdout: string; error: CommandFailure | null }> {
    const command = this.inNetns(args);
    this.commandsRun++;
    this.log.debug({ command }, 'run');
    const r = await this.runner.run(command, { timeoutMs: this.timeoutMs, env, ...(input === undefined ? {} : { input }) });
    if (r.exitCode === 0) return { stdout: r.stdout, error: null };
    const stderr = r.timedOut ? `timed out after ${this.timeoutMs} ms` : withoutBanner(r.stderr);
    return { stdout: r.stdout, error: { command, exitCode: r.exitCode ?? null, stderr } };
  }

  private opError(op: KernelOp, f: CommandFailure): KernelOpError {
    return new KernelOpError(op, `${describeOp(op)}: ${f.stderr || `exit ${f.exitCode}`}`, f);
  }
}

interface CommandFailure {
  command: string[];
  exitCode: number | null;
  stderr: string;
}

/** wireguard-go boxes a notice that the kernel has WireGuard (it says so on every Linux) into stderr. */
const withoutBanner = (stderr: string) =>
  stderr
    .split('\n')
    .filter((l) => !/^[┌│└]/.test(l))
    .join('\n')
    .trim();

/** A wireguard-go device's control socket. */
const socketOf = (dev: string) => `${WG_SOCKET_DIR}/${dev}.sock`;

/** Whether a process listens on a unix socket (a stale socket file refuses connections). */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1_000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => resolve(false));
  });
}
