import type { ClientSession, RelayRecord } from '../events/topology.events.ts';
import { formatIpv4, parseCidr, parseEndpoint, parseIpv4 } from '../events/topology.events.ts';
import type { DesiredHostState, KernelScope, RuleState } from './host-state.ts';
import { meshIndex } from './mesh.ts';
import { nftDigest } from './plan.ts';

/**
 * The client side of the data path (docs/clients.md), as pure functions of the relay's record, its
 * peers and the sessions entering at it.
 *
 * Entry: clients connect to one client-facing WireGuard device `<wg-prefix><own index>c`, listening on
 * the relay's endpoint port, with the first host of the relay's pool as its address. Each session is
 * one peer (allowed-ips = the client's /32) and one policy rule `from <client> iif <device> lookup
 * <exit table>`; the exit table (`exitTableBase + exit's mesh index`, owned by the mesh scope) default-
 * routes into the link to that exit. After every client rule, `from <pool> iif <device> unreachable`:
 * a client whose exit table is empty (link gone) or whose exit is unknown is refused, never looked up
 * in the main table (fail closed).
 *
 * Every relay (entry and exit alike): forwarding on, loose reverse-path filtering (replies from the
 * internet come back on a link device, not the interface the main table names), and one nftables table
 * that filters what clients may reach, clamps TCP MSS, and masquerades client traffic leaving for the
 * internet.
 */

export interface ClientOptions {
  wgPrefix: string;
  privateKeyFile: string;
  /** MTU of the client device (and of the client configurations the control plane hands out). */
  mtu: number;
  /** The table for exit relay i is `exitTableBase + i`. */
  exitTableBase: number;
  /** Client rules take `rulePriorityBase + host offset in the pool`; the fail-closed rule the end. */
  rulePriorityBase: number;
  /** The network-wide client address space (every relay's pool lies in it). */
  clientSupernet: string;
  /** IPv4 CIDRs client traffic may never reach, besides the mesh and every client pool (100.64.0.0/10). */
  denyCidrs: string[];
}

export const DEFAULT_EXIT_TABLE_BASE = 100_000;
export const DEFAULT_RULE_PRIORITY_BASE = 20_000;
export const DEFAULT_CLIENT_SUPERNET = '100.96.0.0/11';
/** The shared address space (RFC 6598) that holds the mesh and the client pools. */
export const SHARED_SPACE = '100.64.0.0/10';
/** The kernel's own rules start here (`main`): ours must end before. */
const MAIN_RULE_PRIORITY = 32_766;

/** Sysctls the client scope sets; the relay restores their values from before its start when it stops. */
export const CLIENT_SYSCTLS = { 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.rp_filter': '2' } as const;

export const clientDevice = (wgPrefix: string, ownIndex: number) => `${wgPrefix}${ownIndex}c`;
export const nftTableName = (wgPrefix: string, ownIndex: number) => `${wgPrefix}${ownIndex}`;
export const exitTable = (exitTableBase: number, exitIndex: number) => exitTableBase + exitIndex;

function pool(self: RelayRecord): { base: number; prefix: number; size: number } {
  const p = parseCidr(self.clientPool);
  if (!p) throw new Error(`bad client pool ${self.clientPool} of relay ${self.id}`);
  return { ...p, size: 2 ** (32 - p.prefix) };
}

/** The entry's own address on its client device: the pool's first host, with the pool's prefix. */
export function gatewayAddress(self: RelayRecord): string {
  const p = pool(self);
  return `${formatIpv4(p.base + 1)}/${p.prefix}`;
}

/** The rule priority range the client scope owns for this relay's pool; throws when it does not fit. */
export function clientRulePriorities(self: RelayRecord, base: number): [number, number] {
  const end = base + pool(self).size;
  if (end >= MAIN_RULE_PRIORITY) throw new Error(`client pool ${self.clientPool} needs rule priorities ${base}..${end}, past ${MAIN_RULE_PRIORITY - 1}: lower the rule priority base`);
  return [base, end];
}

/** The priority of a client's rule: its host offset in the pool. Null when the address is not a host of the pool. */
export function clientRulePriority(self: RelayRecord, address: string, base: number): number | null {
  const p = pool(self);
  const a = parseIpv4(address);
  if (a === null) return null;
  const offset = a - p.base;
  return offset >= 2 && offset < p.size - 1 ? base + offset : null;
}

export function clientScope(self: RelayRecord, opts: Pick<ClientOptions, 'wgPrefix' | 'rulePriorityBase'>): KernelScope {
  const own = meshIndex(self.meshAddress);
  return {
    devicePrefix: clientDevice(opts.wgPrefix, own),
    rulePriorities: clientRulePriorities(self, opts.rulePriorityBase),
    sysctls: Object.keys(CLIENT_SYSCTLS),
    nftTables: [nftTableName(opts.wgPrefix, own)],
  };
}

/** The nftables table body of a relay (inside `table inet <name> { ... }`). Pure; its digest names it. */
export function clientNftBody(self: RelayRecord, opts: Pick<ClientOptions, 'wgPrefix' | 'clientSupernet' | 'denyCidrs'>): string {
  const own = meshIndex(self.meshAddress);
  const dev = clientDevice(opts.wgPrefix, own);
  const links = `${opts.wgPrefix}${own}m*`;
  const deny = [...new Set([SHARED_SPACE, ...opts.denyCidrs])].sort();
  return [
    '  set client_deny {',
    '    type ipv4_addr; flags interval;',
    `    elements = { ${deny.join(', ')} }`,
    '  }',
    '  chain input_filter {',
    '    type filter hook input priority filter; policy accept;',
    // Clients reach the internet, not the relay they enter at; client traffic an entry forwards here neither.
    `    iifname "${dev}" counter drop`,
    `    iifname "${links}" ip saddr ${opts.clientSupernet} counter drop`,
    '  }',
    '  chain forward_filter {',
    '    type filter hook forward priority filter; policy accept;',
    // The mesh adds a WireGuard layer: TCP segments are sized to the route they take.
    `    iifname "${dev}" tcp flags syn tcp option maxseg size set rt mtu`,
    `    oifname "${dev}" tcp flags syn tcp option maxseg size set rt mtu`,
    `    iifname "${dev}" ip daddr @client_deny counter drop`,
    // Fail closed: a client's packets leave the entry only into a mesh link.
    `    iifname "${dev}" oifname != "${links}" counter drop`,
    `    oifname "${dev}" ct state established,related accept`,
    `    oifname "${dev}" counter drop`,
    // At the exit: client traffic goes to the internet only.
    `    iifname "${links}" ip saddr ${opts.clientSupernet} ip daddr @client_deny counter drop`,
    '  }',
    '  chain postrouting_nat {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    oifname "${links}" return`,
    `    oifname "${dev}" return`,
    `    ip saddr ${opts.clientSupernet} masquerade`,
    '  }',
  ].join('\n');
}

/**
 * The client part of the host for `self`: device, peers, rules, sysctls, nftables. `sessions` are the
 * sessions to program (entering at `self`); a session whose exit is not in `relays` (it left, or is
 * this relay) gets its peer but no rule, so the fail-closed rule refuses its traffic.
 */
export function desiredClientState(self: RelayRecord, relays: Readonly<Record<string, RelayRecord>>, sessions: readonly ClientSession[], opts: ClientOptions): DesiredHostState {
  const own = meshIndex(self.meshAddress);
  const dev = clientDevice(opts.wgPrefix, own);
  const ep = parseEndpoint(self.endpoint);
  if (!ep) throw new Error(`bad endpoint ${self.endpoint}`);
  const [, failClosedPriority] = clientRulePriorities(self, opts.rulePriorityBase);
  const rules: RuleState[] = [{ priority: failClosedPriority, from: self.clientPool, iif: dev, table: null }];
  const peers = [];
  for (const s of [...sessions].sort((a, b) => (a.publicKey < b.publicKey ? -1 : 1))) {
    const priority = clientRulePriority(self, s.address, opts.rulePriorityBase);
    if (s.entryId !== self.id || priority === null) continue;
    peers.push({ publicKey: s.publicKey, endpoint: null, allowedIps: [`${s.address}/32`], keepaliveSeconds: 0 });
    const exit = relays[s.exitId];
    if (exit && exit.id !== self.id) rules.push({ priority, from: `${s.address}/32`, iif: dev, table: exitTable(opts.exitTableBase, meshIndex(exit.meshAddress)) });
  }
  const body = clientNftBody(self, opts);
  const table = nftTableName(opts.wgPrefix, own);
  return {
    devices: {
      [dev]: {
        name: dev,
        publicKey: self.publicKey,
        privateKeyFile: opts.privateKeyFile,
        listenPort: ep.port,
        mtu: opts.mtu,
        addresses: [gatewayAddress(self)],
        up: true,
        peers,
      },
    },
    routes: [],
    rules,
    sysctls: { ...CLIENT_SYSCTLS },
    nftTables: { [table]: { name: table, digest: nftDigest(body), body } },
  };
}

/** What the client scope leaves when the relay stops: nothing of its own, the sysctls as they were. */
export function releasedClientState(originalSysctls: Record<string, string>): DesiredHostState {
  return { devices: {}, routes: [], rules: [], sysctls: { ...originalSysctls }, nftTables: {} };
}
