import type { Focus } from './focus.ts';

/**
 * The host state the kernel actor manages, and the operations that change it. Pure data: the planner
 * diffs two of these, both backends (Linux, in-memory) apply the same operations, and replay renders
 * them. Private keys never appear here: a device names the file its key is in and its public key.
 *
 * Scope: each owner of the kernel actor manages only what it owns: WireGuard devices whose name starts
 * with its `devicePrefix`, routes on those devices, policy rules in its priority range, the sysctls it
 * names and the nftables tables it names (with their port maps). Everything else on the host is invisible to the planner and
 * never touched.
 */

export interface WgPeerState {
  publicKey: string;
  /** `host:port`, or null for a peer we only answer (no initiation). */
  endpoint: string | null;
  /** CIDRs, canonical (network address, explicit prefix length), sorted. */
  allowedIps: string[];
  /** Persistent keepalive in seconds; 0 = off. */
  keepaliveSeconds: number;
}

export interface WgDeviceState {
  name: string;
  /** Public key of the device's private key (what `wg show <dev> public-key` prints). */
  publicKey: string;
  listenPort: number;
  mtu: number;
  /** CIDRs assigned to the device (e.g. the relay's mesh address as /32), sorted. */
  addresses: string[];
  up: boolean;
  /** Sorted by public key. */
  peers: WgPeerState[];
}

export interface RouteState {
  /** Destination CIDR (`0.0.0.0/0` for a default route). */
  dst: string;
  dev: string;
  /** Routing table id; 254 is `main`. */
  table: number;
  /** Preferred source address, or null. */
  src: string | null;
}

export interface RuleState {
  priority: number;
  /** Source CIDR selector, or null for any. */
  from: string | null;
  /** Input interface selector, or null for any. */
  iif: string | null;
  /**
   * The table to look up, or null for the action `unreachable`: the packet is refused there and
   * never looked up in later rules (the fail-closed end of the client steering rules).
   */
  table: number | null;
}

/**
 * One nftables table of family `inet` that the relay owns outright. The host keeps its whole ruleset;
 * the state holds only its digest, which the table carries in its comment (`relay-core:<digest>`), so
 * a table is compared by digest and replaced as a whole in one nft transaction.
 */
export interface NftTableState {
  name: string;
  /** `nftDigest(body)` of the body the table was created from. */
  digest: string;
}

/**
 * A UDP port of this host whose datagrams go on to another address (DNAT): an element of the map
 * {@link PORT_MAP} in one of the owned nftables tables (a private session's port at its entry,
 * docs/clients.md "Private sessions"). The table's body declares the map and the rules that use it;
 * the elements are the state, added and removed one by one, and gone with the table when it is
 * replaced or deleted.
 */
export interface PortMapState {
  /** The owned nftables table (family inet) whose map holds it. */
  table: string;
  port: number;
  /** Where its datagrams go: `a.b.c.d:port`. */
  to: string;
}

/** The map of an owned table that holds its port maps (`type inet_service : ipv4_addr . inet_service`). */
export const PORT_MAP = 'port_map';

export interface HostState {
  /**
   * Keyed by device name. A Map, not a record: a mesh of a thousand relays has a thousand devices, and
   * a round copies and compares them (a Map copies in a sixth of the time; bench:relay-event). Read
   * only: a round's states are derived from the last ones (src/lib/map-delta.ts), never changed.
   */
  devices: ReadonlyMap<string, WgDeviceState>;
  /** Sorted canonically (table, dst, dev). */
  routes: RouteState[];
  /** Sorted by priority, then from, iif, table. */
  rules: RuleState[];
  /** Owned sysctls by key (`net.ipv4.ip_forward`), values as `sysctl -n` prints them. */
  sysctls: Record<string, string>;
  /** Owned nftables tables (family inet), keyed by name. */
  nftTables: Record<string, NftTableState>;
  /** The port maps of the owned tables, sorted by table, then port. */
  portMaps: PortMapState[];
}

/** Desired devices also say where their private key is; actual devices read back only the public key. */
export interface DesiredWgDevice extends WgDeviceState {
  privateKeyFile: string;
}

/** A desired table also carries its body: the chains and rules inside `table inet <name> { ... }`. */
export interface DesiredNftTable extends NftTableState {
  body: string;
}

/**
 * Sysctls are never removed, only set: a key absent from a desired state is left as it is. An owner
 * that wants a value restored (at shutdown) desires the original value explicitly.
 */
export interface DesiredHostState extends HostState {
  devices: ReadonlyMap<string, DesiredWgDevice>;
  nftTables: Record<string, DesiredNftTable>;
}

/** One mutation of the host. Each is idempotent in intent but the in-memory model rejects duplicates. */
export type KernelOp =
  | { op: 'link.add'; dev: string; mtu: number }
  | { op: 'link.del'; dev: string }
  | { op: 'link.mtu'; dev: string; mtu: number }
  | { op: 'link.up'; dev: string }
  /** Also drops every route via the device and its IPv6 addresses (the kernel does that on link down). */
  | { op: 'link.down'; dev: string }
  | { op: 'wg.device'; dev: string; privateKeyFile: string; publicKey: string; listenPort: number }
  | { op: 'wg.peer.set'; dev: string; peer: WgPeerState }
  | { op: 'wg.peer.del'; dev: string; publicKey: string }
  | { op: 'addr.add'; dev: string; cidr: string }
  | { op: 'addr.del'; dev: string; cidr: string }
  | { op: 'route.add'; route: RouteState }
  | { op: 'route.del'; route: RouteState }
  /**
   * The kernel keys a route by (table, dst): a second route to the same destination in the same table is
   * refused, whatever its device. Moving a route to another device or source is therefore one atomic
   * `ip route replace`, never a delete and an add (which would let packets fall through meanwhile).
   */
  | { op: 'route.replace'; route: RouteState }
  | { op: 'rule.add'; rule: RuleState }
  | { op: 'rule.del'; rule: RuleState }
  | { op: 'sysctl.set'; key: string; value: string }
  /** Create or replace a table atomically (one `nft -f` transaction: add, delete, add with the body). */
  | { op: 'nft.table.set'; name: string; digest: string; body: string }
  | { op: 'nft.table.del'; name: string }
  /** Add an element to a table's port map; the port must have none. */
  | { op: 'portmap.add'; map: PortMapState }
  /** Point a port elsewhere: its element deleted and added again in one nft transaction (no gap). */
  | { op: 'portmap.replace'; map: PortMapState }
  | { op: 'portmap.del'; map: PortMapState };

/** What a kernel actor owns on the host (see the module comment). */
export interface KernelScope {
  /** Device names this actor owns start with this (e.g. `rc3m` for relay mesh index 3). */
  devicePrefix: string;
  /** Inclusive priority range of the policy rules this actor owns. */
  rulePriorities: [number, number];
  /** Sysctl keys this owner reads and sets. */
  sysctls: string[];
  /** Names of the nftables tables (family inet) this owner owns, with their port maps. */
  nftTables: string[];
}

/** Per-peer liveness as read from the device (`wg show <dev> dump`). */
export interface PeerObservation {
  dev: string;
  publicKey: string;
  endpoint: string | null;
  /** Milliseconds since the epoch of the latest handshake, or null if none yet. */
  latestHandshakeMs: number | null;
  rxBytes: number;
  txBytes: number;
}

/** The one interface both backends implement. Only the Linux backend touches the world. */
export interface KernelBackend {
  readonly kind: 'linux' | 'memory';
  /**
   * Read the owned part of the host's actual state; with a focus, only the focused objects of it
   * (src/kernel/focus.ts: a round reads what its change touches, not the whole scope). `known` is the
   * scope as the last round reached it: a device focused for its WireGuard settings alone
   * (`focus.wireguard`) may take its link's settings from there and have only its WireGuard state read.
   */
  read(scope: KernelScope, focus?: Focus, known?: HostState): Promise<HostState>;
  /** Apply one operation; throws a `KernelOpError` on failure. */
  apply(op: KernelOp): Promise<void>;
  /**
   * Optional: the key under which consecutive operations can be applied together by `applyBatch`
   * (null: this one alone).
   */
  batchKey?(op: KernelOp): string | null;
  /**
   * Optional: apply operations of one batch key in order, stopping at the first that fails. Resolves
   * to how many were applied and, when one failed, its error (the rest were not run).
   */
  applyBatch?(ops: readonly KernelOp[]): Promise<{ applied: number; error: KernelOpError | null }>;
  /** Handshake times and counters of every peer of the given devices (read only). */
  observe(devices: string[]): Promise<PeerObservation[]>;
  /** The named counters of an owned nftables table (family inet), by name; {} when the table is absent. Read only. */
  counters(table: string): Promise<Record<string, NftCounter>>;
  /** Whether this host has IPv6 at all (`enabled`) and a default IPv6 route (`defaultRoute`: an exit for clients' IPv6). Read only. */
  ipv6(): Promise<{ enabled: boolean; defaultRoute: boolean }>;
}

/** One named nftables counter. */
export interface NftCounter {
  packets: number;
  bytes: number;
}

/** A failed operation: which one, the command that ran (never key material), and what it said. */
export class KernelOpError extends Error {
  readonly op: KernelOp;
  readonly command: string[] | null;
  readonly exitCode: number | null;
  readonly stderr: string;
  constructor(op: KernelOp, message: string, detail: { command?: string[] | null; exitCode?: number | null; stderr?: string } = {}) {
    super(message);
    this.name = 'KernelOpError';
    this.op = op;
    this.command = detail.command ?? null;
    this.exitCode = detail.exitCode ?? null;
    this.stderr = detail.stderr ?? '';
  }
}

/** The `main` routing table. */
export const MAIN_TABLE = 254;

/** A host state being built: its devices a Map of its own. */
export type HostStateDraft = HostState & { devices: Map<string, WgDeviceState> };

export const emptyHostState = (): HostStateDraft => ({ devices: new Map(), routes: [], rules: [], sysctls: {}, nftTables: {}, portMaps: [] });
