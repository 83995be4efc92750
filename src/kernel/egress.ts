import { cidrRange, formatIp, parseCidr, parseIp } from '../contract/ip.ts';
import { KERNEL_IP } from './ip.ts';

/**
 * The exit's egress policy (docs/security.md): which destinations client traffic may never reach, each
 * range under the reason a refusal is counted by. Pure: the nftables table (src/kernel/clients.ts)
 * renders it, `relay-core status` shows it, and the planner's tests check it.
 *
 * - Default ranges: addresses that are not "the internet" (private, loopback, link-local with the
 *   cloud metadata service, shared, reserved, multicast, benchmarking and documentation nets), in both
 *   families. `--client-allow` removes ranges from these, and from these only.
 * - `operator`: `--client-deny`; wins over `--client-allow`.
 * - `service`: the control plane and NATS addresses the relay knows (at start and from each
 *   registration); never allowed, whatever `--client-allow` says.
 * - `network`: the network's own space (100.64.0.0/10: the mesh and every client pool); never allowed.
 */

export const EGRESS_REASONS = [
  'network',
  'service',
  'operator',
  'this-network',
  'private',
  'loopback',
  'link-local',
  'reserved',
  'benchmark',
  'documentation',
  'multicast',
] as const;
export type EgressReason = (typeof EGRESS_REASONS)[number];

/** The shared address space (RFC 6598) that holds the mesh and the client pools. */
export const NETWORK_SPACE = '100.64.0.0/10';

/** Ranges refused unless an operator allows them (`--client-allow`), by reason. */
export const DEFAULT_EGRESS_DENY: Readonly<Record<Exclude<EgressReason, 'network' | 'service' | 'operator'>, readonly string[]>> = {
  'this-network': ['0.0.0.0/8', '::/128'],
  private: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7', 'fec0::/10'],
  loopback: ['127.0.0.0/8', '::1/128'],
  // 169.254.169.254 is the instance metadata service of most clouds.
  'link-local': ['169.254.0.0/16', 'fe80::/10'],
  // IETF protocol assignments, class E and broadcast; IPv4-mapped, NAT64 (which reach IPv4 private
  // ranges), 6to4 (which embeds them), discard-only.
  reserved: ['192.0.0.0/24', '240.0.0.0/4', '::ffff:0:0/96', '64:ff9b::/96', '64:ff9b:1::/48', '2002::/16', '100::/64'],
  benchmark: ['198.18.0.0/15'],
  documentation: ['192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24', '2001:db8::/32'],
  multicast: ['224.0.0.0/4', 'ff00::/8'],
};

export interface EgressOptions {
  /** `--client-deny`: refused besides the defaults (IPv4 or IPv6 CIDRs). */
  denyCidrs: readonly string[];
  /** `--client-allow`: removed from the default ranges (not from operator, service or network ones). */
  allowCidrs: readonly string[];
  /** Control-plane and NATS addresses (as /32 or /128). */
  serviceCidrs: readonly string[];
  /** The clients' IPv6 space (src/kernel/ipv6.ts), refused like 100.64.0.0/10; null without IPv6. */
  clientPrefix6?: string | null;
}

export interface EgressRule {
  reason: EgressReason;
  /** Canonical, merged CIDRs of each family; either may be empty. */
  v4: string[];
  v6: string[];
}

// ---------------------------------------------------------------------------------------------------
// Range arithmetic on [lo, hi] intervals of one family.

interface Range {
  lo: bigint;
  hi: bigint;
}

/** A CIDR as an inclusive range, or null when it is not one (the config schema refuses those first). */
export function cidrToRange(cidr: string): { v6: boolean; range: Range } | null {
  const c = parseCidr(cidr, { ...KERNEL_IP, bareAddress: true, hostBits: 'mask' });
  return c && { v6: c.ip.v6, range: cidrRange(c) };
}

/** Sorted, non-overlapping, adjacent ranges joined. */
function merge(ranges: Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) => (a.lo < b.lo ? -1 : a.lo > b.lo ? 1 : 0));
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.lo <= last.hi + 1n) {
      if (r.hi > last.hi) last.hi = r.hi;
    } else out.push({ ...r });
  }
  return out;
}

/** `ranges` less every range of `minus` (both merged). */
function subtract(ranges: Range[], minus: Range[]): Range[] {
  let out = merge(ranges);
  for (const m of merge(minus)) {
    out = out.flatMap((r) => {
      if (m.hi < r.lo || m.lo > r.hi) return [r];
      const parts: Range[] = [];
      if (m.lo > r.lo) parts.push({ lo: r.lo, hi: m.lo - 1n });
      if (m.hi < r.hi) parts.push({ lo: m.hi + 1n, hi: r.hi });
      return parts;
    });
  }
  return out;
}

/** The fewest CIDRs that cover a range exactly. */
function rangeToCidrs({ lo, hi }: Range, v6: boolean): string[] {
  const bits = v6 ? 128 : 32;
  const out: string[] = [];
  let at = lo;
  while (at <= hi) {
    let size = 0;
    // The largest aligned block that starts at `at` and ends within the range.
    while (size < bits && (at & ((1n << BigInt(size + 1)) - 1n)) === 0n && at + (1n << BigInt(size + 1)) - 1n <= hi) size++;
    out.push(`${formatIp({ v6, n: at })}/${bits - size}`);
    at += 1n << BigInt(size);
  }
  return out;
}

function split(cidrs: readonly string[]): { v4: Range[]; v6: Range[] } {
  const v4: Range[] = [];
  const v6: Range[] = [];
  for (const c of cidrs) {
    const r = cidrToRange(c);
    if (r) (r.v6 ? v6 : v4).push(r.range);
  }
  return { v4, v6 };
}

const toCidrs = (ranges: Range[], v6: boolean) => merge(ranges).flatMap((r) => rangeToCidrs(r, v6));

/**
 * The policy's rules in evaluation order: the first reason whose ranges hold a destination is the one
 * its refusal is counted under. Each reason's ranges are merged; default reasons lose what is allowed.
 * Reasons left with no range are omitted.
 */
export function egressRules(opts: EgressOptions): EgressRule[] {
  const allow = split(opts.allowCidrs);
  const sources: Record<EgressReason, readonly string[]> = {
    network: [NETWORK_SPACE, ...(opts.clientPrefix6 ? [opts.clientPrefix6] : [])],
    service: opts.serviceCidrs,
    operator: opts.denyCidrs,
    ...DEFAULT_EGRESS_DENY,
  };
  const rules: EgressRule[] = [];
  for (const reason of EGRESS_REASONS) {
    const s = split(sources[reason]);
    const overridable = reason !== 'network' && reason !== 'service' && reason !== 'operator';
    const v4 = overridable ? subtract(s.v4, allow.v4) : s.v4;
    const v6 = overridable ? subtract(s.v6, allow.v6) : s.v6;
    const rule = { reason, v4: toCidrs(v4, false), v6: toCidrs(v6, true) };
    if (rule.v4.length + rule.v6.length > 0) rules.push(rule);
  }
  return rules;
}

/** Whether an address (IPv4 or IPv6) is refused by the policy, and under which reason. Pure; tests and `status`. */
export function egressVerdict(rules: readonly EgressRule[], address: string): EgressReason | null {
  const ip = parseIp(address, KERNEL_IP);
  if (!ip) return null;
  for (const r of rules) {
    for (const c of ip.v6 ? r.v6 : r.v4) {
      const range = cidrToRange(c)!.range;
      if (ip.n >= range.lo && ip.n <= range.hi) return r.reason;
    }
  }
  return null;
}

/**
 * The policy as one verdict map per family: every refused range once, under the first reason that
 * holds it (later reasons lose what earlier ones already refuse), so the intervals never overlap and a
 * packet costs one lookup whatever the number of reasons. Sorted by address.
 */
export function egressMapElements(rules: readonly EgressRule[]): {
  v4: { cidr: string; reason: EgressReason }[];
  v6: { cidr: string; reason: EgressReason }[];
} {
  const out = { v4: [] as { cidr: string; reason: EgressReason }[], v6: [] as { cidr: string; reason: EgressReason }[] };
  for (const family of ['v4', 'v6'] as const) {
    const v6 = family === 'v6';
    let taken: Range[] = [];
    const parts: { range: Range; reason: EgressReason }[] = [];
    for (const r of rules) {
      const own = r[family].map((c) => cidrToRange(c)!.range);
      for (const range of subtract(own, taken)) parts.push({ range, reason: r.reason });
      taken = merge([...taken, ...own]);
    }
    parts.sort((a, b) => (a.range.lo < b.range.lo ? -1 : 1));
    out[family] = parts.flatMap((p) => rangeToCidrs(p.range, v6).map((cidr) => ({ cidr, reason: p.reason })));
  }
  return out;
}

/** The name of a reason's nftables counter and chain (`refused_link_local`). */
export const refusedCounter = (reason: EgressReason) => `refused_${reason.replaceAll('-', '_')}`;
