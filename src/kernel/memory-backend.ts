import { focusedDevices, portMapInFocus, restrict, routeInFocus, type Focus } from './focus.ts';
import { describeOp } from './execute.ts';
import {
  KernelOpError,
  PORT_MAP,
  emptyHostState,
  type HostState,
  type HostStateDraft,
  type KernelBackend,
  type KernelOp,
  type KernelScope,
  type NftCounter,
  type PeerObservation,
  type PortMapState,
  type RouteState,
  type WgDeviceState,
  type WgPeerState,
} from './host-state.ts';
import { isIpv6 } from './ip.ts';
import { canonicalHostState, nftDigest, renderHostState } from './host-text.ts';

/** Linux refuses interface names longer than this (IFNAMSIZ - 1). */
const MAX_IFNAME = 15;

export interface MemoryKernelBackendOptions {
  /**
   * The host before any operation: owned and foreign devices, routes, rules, sysctls and nftables tables
   * alike. A sysctl not given here reads as `'0'`.
   */
  initial?: HostState;
  /** Make `apply` throw a `KernelOpError` for these operations (nothing is applied). */
  failOn?: (op: KernelOp) => boolean;
  /**
   * Keep every applied operation in `ops` (default true, for tests; replay of long logs and the
   * `--kernel memory` daemon turn it off: the log grows with every round).
   */
  recordOps?: boolean;
  /** What `ipv6()` answers (default: IPv6 on, no default IPv6 route). */
  ipv6?: { enabled: boolean; defaultRoute: boolean };
}

/**
 * An in-memory model of one host (one network namespace), for unit tests, dry runs and replay. It
 * applies each operation as Linux would, including what the kernel does by itself, and refuses what
 * Linux refuses, so a plan that works here works on the host:
 *
 * - routes need their device up and a `src` that is an address of the host; (table, dst) is the key;
 * - link down drops the device's routes and IPv6 addresses; link del its routes (rules stay);
 * - a device without IPv4 addresses has no IPv4 routes; an address gone from the host takes the IPv4
 *   routes preferring it as source with it, while IPv6 routes merely forget the source;
 * - an allowed-ip belongs to one peer of a device: setting it on one peer takes it from the other;
 * - two devices cannot listen on one port; `wg.peer.set` without an endpoint keeps the current one;
 * - every sysctl exists (one never set reads as `'0'`); an nftables table is replaced as a whole, and
 *   deleting an absent one is refused.
 *
 * It also refuses an `nft.table.set` whose digest is not `nftDigest(body)`: the planner trusts digests,
 * so such a table would be replaced on every plan, or a changed body never reach the host.
 *
 * Unlike Linux it also refuses duplicates and deletions of what is absent, which Linux partly lets
 * pass (`wg set ... remove` of an unknown peer): a plan that does either is wrong.
 */
export class MemoryKernelBackend implements KernelBackend {
  readonly kind = 'memory' as const;
  /** Every applied operation, in order. */
  readonly ops: KernelOp[] = [];
  private readonly state: HostStateDraft;
  private readonly failOn: ((op: KernelOp) => boolean) | undefined;
  private readonly observations = new Map<string, PeerObservation>();
  /** The body each table was last set with (for the names of its counters). */
  private readonly nftBodies = new Map<string, string>();

  private readonly hostIpv6: { enabled: boolean; defaultRoute: boolean };

  constructor(opts: MemoryKernelBackendOptions = {}) {
    this.hostIpv6 = opts.ipv6 ?? { enabled: true, defaultRoute: false };
    this.state = canonicalHostState(opts.initial ?? emptyHostState());
    this.failOn = opts.failOn;
    this.recordOps = opts.recordOps ?? true;
  }
  private readonly recordOps: boolean;

  /** How many operations were applied. */
  get mutations(): number {
    return this.applied;
  }
  private applied = 0;

  async read(scope: KernelScope, focus?: Focus): Promise<HostState> {
    return this.readSync(scope, focus);
  }

  /** `read`, synchronously (replay). */
  readSync(scope: KernelScope, focus?: Focus): HostState {
    const [lo, hi] = scope.rulePriorities;
    const owned = (dev: string) => dev.startsWith(scope.devicePrefix);
    // With a focus, only the focused devices are looked at (no walk over the whole host's devices).
    const devices = new Map<string, WgDeviceState>();
    for (const n of focus ? focusedDevices(focus) : this.state.devices.keys()) {
      const d = owned(n) ? this.state.devices.get(n) : undefined;
      if (d) devices.set(n, d);
    }
    const state: HostState = {
      devices,
      routes: this.state.routes.filter((r) => owned(r.dev) && (!focus || routeInFocus(focus, r))),
      rules: this.state.rules.filter((r) => r.priority >= lo && r.priority <= hi),
      sysctls: Object.fromEntries(scope.sysctls.map((k) => [k, this.state.sysctls[k] ?? UNSET_SYSCTL])),
      nftTables: Object.fromEntries(scope.nftTables.filter((n) => n in this.state.nftTables).map((n) => [n, { ...this.state.nftTables[n]! }])),
      portMaps: this.state.portMaps.filter((m) => scope.nftTables.includes(m.table) && (!focus || portMapInFocus(focus, m))),
    };
    return canonicalHostState(focus ? restrict(state, focus) : state);
  }

  /** The whole host, owned or not. */
  render(): string {
    return renderHostState(this.state);
  }

  async apply(op: KernelOp): Promise<void> {
    this.applySync(op);
  }

  /** `apply`, synchronously (replay). */
  applySync(op: KernelOp): void {
    if (this.failOn?.(op)) throw new KernelOpError(op, `injected failure: ${describeOp(op)}`);
    this.mutate(op);
    this.applied++;
    if (this.recordOps) this.ops.push(op);
  }

  /** Set sysctls as the host has them (replay: the values a relay read at its start). */
  setSysctls(values: Record<string, string>): void {
    Object.assign(this.state.sysctls, values);
  }

  /** The whole host, owned or not. */
  snapshot(): HostState {
    return canonicalHostState(structuredClone(this.state));
  }

  /** What `observe` reports for this peer, as long as it is configured. */
  setObservation(obs: PeerObservation): void {
    this.observations.set(`${obs.dev} ${obs.publicKey}`, obs);
  }

  /** The model holds no packets: every counter of a table it has reads as zero, by the names its body declares. */
  /** The modelled host: IPv6 on, no default IPv6 route (an in-memory relay is no exit), unless told otherwise. */
  async ipv6(): Promise<{ enabled: boolean; defaultRoute: boolean }> {
    return { ...this.hostIpv6 };
  }

  async counters(table: string): Promise<Record<string, NftCounter>> {
    const body = this.nftBodies.get(table);
    if (body === undefined) return {};
    return Object.fromEntries([...body.matchAll(/^\s*counter ([a-z0-9_]+) \{/gm)].map((m) => [m[1]!, { packets: 0, bytes: 0 }]));
  }

  async observe(devices: string[]): Promise<PeerObservation[]> {
    // One loop, no key built unless an observation was set: receipts read every link every 30 s.
    const out: PeerObservation[] = [];
    const set = this.observations.size > 0;
    for (const name of devices)
      for (const p of this.state.devices.get(name)?.peers ?? [])
        out.push(
          (set ? this.observations.get(`${name} ${p.publicKey}`) : undefined) ?? {
            dev: name,
            publicKey: p.publicKey,
            endpoint: p.endpoint,
            latestHandshakeMs: null,
            rxBytes: 0,
            txBytes: 0,
          },
        );
    return out;
  }

  private mutate(op: KernelOp): void {
    const s = this.state;
    switch (op.op) {
      case 'link.add':
        if (s.devices.has(op.dev)) throw new KernelOpError(op, `device ${op.dev} exists`);
        if (op.dev.length > MAX_IFNAME) throw new KernelOpError(op, `device name ${op.dev} is longer than ${MAX_IFNAME} characters`);
        s.devices.set(op.dev, { name: op.dev, publicKey: '', listenPort: 0, mtu: op.mtu, addresses: [], up: false, peers: [] });
        return;
      case 'link.del': {
        const d = this.device(op);
        s.devices.delete(op.dev);
        for (const a of d.addresses) this.countAddress(a, -1);
        s.routes = s.routes.filter((r) => r.dev !== op.dev);
        for (const a of d.addresses) this.afterAddressGone(a.split('/')[0]!);
        return;
      }
      case 'link.mtu':
        this.update(op, { mtu: op.mtu });
        return;
      case 'link.up':
        this.update(op, { up: true });
        return;
      case 'link.down': {
        const d = this.device(op);
        const dropped = d.addresses.filter(isIpv6);
        this.update(op, { up: false, addresses: d.addresses.filter((a) => !isIpv6(a)) });
        for (const a of dropped) this.countAddress(a, -1);
        s.routes = s.routes.filter((r) => r.dev !== op.dev);
        for (const a of dropped) this.afterAddressGone(a.split('/')[0]!);
        return;
      }
      case 'wg.device':
        this.setWgDevice(op);
        return;
      case 'wg.peer.set':
        this.setPeer(op, op.peer);
        return;
      case 'wg.peer.del': {
        const d = this.device(op);
        if (!d.peers.some((p) => p.publicKey === op.publicKey)) throw new KernelOpError(op, `no peer ${op.publicKey} on ${op.dev}`);
        this.update(op, { peers: d.peers.filter((p) => p.publicKey !== op.publicKey) });
        return;
      }
      case 'addr.add': {
        const d = this.device(op);
        if (d.addresses.includes(op.cidr)) throw new KernelOpError(op, `${op.cidr} is already on ${op.dev}`);
        this.update(op, { addresses: [...d.addresses, op.cidr] });
        this.countAddress(op.cidr, 1);
        return;
      }
      case 'addr.del': {
        const d = this.device(op);
        if (!d.addresses.includes(op.cidr)) throw new KernelOpError(op, `${op.cidr} is not on ${op.dev}`);
        const after = this.update(op, { addresses: d.addresses.filter((a) => a !== op.cidr) });
        this.countAddress(op.cidr, -1);
        this.afterAddressRemoved(after, op.cidr);
        return;
      }
      case 'route.add':
        this.checkRoutable(op, op.route);
        if (s.routes.some((r) => sameRouteKey(r, op.route))) throw new KernelOpError(op, `a route to ${op.route.dst} exists in table ${op.route.table}`);
        s.routes.push({ ...op.route });
        return;
      case 'route.replace':
        this.checkRoutable(op, op.route);
        s.routes = [...s.routes.filter((r) => !sameRouteKey(r, op.route)), { ...op.route }];
        return;
      case 'route.del': {
        const i = s.routes.findIndex((r) => sameRouteKey(r, op.route) && r.dev === op.route.dev && r.src === op.route.src);
        if (i < 0) throw new KernelOpError(op, `no route ${describeOp(op)}`);
        s.routes.splice(i, 1);
        return;
      }
      case 'rule.add':
        if (s.rules.some((r) => sameRule(r, op.rule))) throw new KernelOpError(op, 'the rule exists');
        s.rules.push({ ...op.rule });
        return;
      case 'rule.del': {
        const i = s.rules.findIndex((r) => sameRule(r, op.rule));
        if (i < 0) throw new KernelOpError(op, 'no such rule');
        s.rules.splice(i, 1);
        return;
      }
      case 'sysctl.set':
        s.sysctls[op.key] = op.value;
        return;
      case 'nft.table.set':
        if (nftDigest(op.body) !== op.digest) throw new KernelOpError(op, `table ${op.name}: digest ${op.digest} is not the body's (${nftDigest(op.body)})`);
        s.nftTables[op.name] = { name: op.name, digest: op.digest };
        this.nftBodies.set(op.name, op.body);
        s.portMaps = s.portMaps.filter((m) => m.table !== op.name);
        return;
      case 'nft.table.del':
        if (!s.nftTables[op.name]) throw new KernelOpError(op, `no table inet ${op.name}`);
        delete s.nftTables[op.name];
        this.nftBodies.delete(op.name);
        s.portMaps = s.portMaps.filter((m) => m.table !== op.name);
        return;
      case 'portmap.add':
        this.portMapTable(op, op.map);
        if (s.portMaps.some((m) => samePort(m, op.map))) throw new KernelOpError(op, `port ${op.map.port} is mapped in ${op.map.table} already`);
        s.portMaps.push({ ...op.map });
        return;
      case 'portmap.replace':
        this.portMapTable(op, op.map);
        if (!s.portMaps.some((m) => samePort(m, op.map))) throw new KernelOpError(op, `port ${op.map.port} is not mapped in ${op.map.table}`);
        s.portMaps = [...s.portMaps.filter((m) => !samePort(m, op.map)), { ...op.map }];
        return;
      case 'portmap.del':
        if (!s.portMaps.some((m) => samePort(m, op.map) && m.to === op.map.to)) throw new KernelOpError(op, `no port map ${describeOp(op)}`);
        s.portMaps = s.portMaps.filter((m) => !samePort(m, op.map));
        return;
      default:
        throw new KernelOpError(op, `unknown operation ${JSON.stringify((op as { op?: unknown }).op)}`);
    }
  }

  /** A port map needs its table, and the table's body its map (nft refuses an element of a map that is not there). */
  private portMapTable(op: KernelOp, m: PortMapState): void {
    const body = this.nftBodies.get(m.table);
    if (!this.state.nftTables[m.table]) throw new KernelOpError(op, `no table inet ${m.table}`);
    if (body !== undefined && !body.includes(`map ${PORT_MAP} {`)) throw new KernelOpError(op, `table inet ${m.table} has no map ${PORT_MAP}`);
    if (!/^\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/.test(m.to) || m.port < 1 || m.port > 65535) throw new KernelOpError(op, `bad port map ${m.port} to ${m.to}`);
  }

  private device(op: KernelOp & { dev: string }): WgDeviceState {
    const d = this.state.devices.get(op.dev);
    if (!d) throw new KernelOpError(op, `no device ${op.dev}`);
    return d;
  }

  private setWgDevice(op: Extract<KernelOp, { op: 'wg.device' }>): void {
    const d = this.device(op);
    const clash = [...this.state.devices.values()].find((o) => o !== d && op.listenPort !== 0 && o.listenPort === op.listenPort);
    if (clash) throw new KernelOpError(op, `port ${op.listenPort} is in use by ${clash.name}`);
    this.update(op, { publicKey: op.publicKey, listenPort: op.listenPort });
  }

  /**
   * A device with some settings changed: a new object, never the old one changed in place, so what a
   * reader holds of the host stays as it was read (and canonical forms can be kept by object).
   */
  private update(op: KernelOp & { dev: string }, change: Partial<WgDeviceState>): WgDeviceState {
    const d = { ...this.device(op), ...change };
    this.state.devices.set(op.dev, d);
    return d;
  }

  private setPeer(op: KernelOp & { dev: string }, peer: WgPeerState): void {
    const d = this.device(op);
    // Peers are replaced, never changed in place: readers may keep them (canonical forms are cached by object).
    const old = d.peers.find((p) => p.publicKey === peer.publicKey);
    const next = { ...peer, allowedIps: [...peer.allowedIps], endpoint: peer.endpoint ?? old?.endpoint ?? null };
    const others = d.peers.flatMap((p) => {
      if (p === old) return [];
      if (!p.allowedIps.some((c) => peer.allowedIps.includes(c))) return [p];
      return [{ ...p, allowedIps: p.allowedIps.filter((c) => !peer.allowedIps.includes(c)) }];
    });
    this.update(op, { peers: [...others, next] });
  }

  private checkRoutable(op: KernelOp, route: RouteState): void {
    const d = this.state.devices.get(route.dev);
    if (!d) throw new KernelOpError(op, `no device ${route.dev}`);
    if (!d.up) throw new KernelOpError(op, `device ${route.dev} is not up`);
    if (route.src !== null && !this.isLocal(route.src)) throw new KernelOpError(op, `invalid source address ${route.src}`);
  }

  /** How many devices hold each address of the host (without prefix length); built on first use, then kept by `mutate`. */
  private local: Map<string, number> | null = null;

  private localAddresses(): Map<string, number> {
    if (this.local === null) {
      this.local = new Map();
      for (const d of this.state.devices.values()) for (const a of d.addresses) this.countAddress(a, 1);
    }
    return this.local;
  }

  private countAddress(cidr: string, by: 1 | -1): void {
    if (this.local === null) return;
    const ip = cidr.split('/')[0]!;
    const n = (this.local.get(ip) ?? 0) + by;
    if (n > 0) this.local.set(ip, n);
    else this.local.delete(ip);
  }

  private isLocal(ip: string): boolean {
    return this.localAddresses().has(ip);
  }

  /** What the kernel does to routes when `cidr` leaves `d` (see the class comment). */
  private afterAddressRemoved(d: WgDeviceState, cidr: string): void {
    if (!isIpv6(cidr) && !d.addresses.some((a) => !isIpv6(a))) this.state.routes = this.state.routes.filter((r) => r.dev !== d.name || isIpv6(r.dst));
    this.afterAddressGone(cidr.split('/')[0]!);
  }

  /** Routes preferring `ip` as source once no device has it any more. */
  private afterAddressGone(ip: string): void {
    if (this.isLocal(ip)) return;
    this.state.routes = this.state.routes.flatMap((r) => (r.src !== ip ? [r] : isIpv6(ip) ? [{ ...r, src: null }] : []));
  }
}

/** What a sysctl reads as before anything set it (the model knows no kernel defaults). */
const UNSET_SYSCTL = '0';

const samePort = (a: PortMapState, b: PortMapState) => a.table === b.table && a.port === b.port;
const sameRouteKey = (a: RouteState, b: RouteState) => a.table === b.table && a.dst === b.dst;
const sameRule = (a: HostState['rules'][number], b: HostState['rules'][number]) =>
  a.priority === b.priority && a.from === b.from && a.iif === b.iif && a.table === b.table;
