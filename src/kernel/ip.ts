import { formatCidr, formatIp, isIpv6Text, parseCidr, parseIp } from '../contract/ip.ts';

/**
 * IP addresses and CIDRs in the canonical text iproute2 and wg print (IPv6 compressed as in RFC 5952),
 * as the planner compares them. Parsing and text are src/contract/ip.ts; this module reads leniently
 * (octets with leading zeros), as the host's own text never has them, and caches.
 */

export const isIpv6 = isIpv6Text;

/** How the kernel reads addresses: IPv4 octets and prefix lengths may carry leading zeros. */
export const KERNEL_IP = { leadingZeros: true } as const;

/**
 * Canonical texts by input, one cache per kind (keyed by the input itself: a string V8 has hashed once
 * is looked up without hashing or flattening it again): a relay (and replay) canonicalises the same few
 * hundred addresses on every plan. Bounded: cleared when full.
 */
const CANONICAL_CACHE_MAX = 65_536;
const ipCache = new Map<string, string>();
const hostCidrCache = new Map<string, string>();
const netCidrCache = new Map<string, string>();
function cached(cache: Map<string, string>, key: string, compute: (key: string) => string): string {
  let v = cache.get(key);
  if (v === undefined) {
    v = compute(key);
    if (cache.size >= CANONICAL_CACHE_MAX) cache.clear();
    cache.set(key, v);
  }
  return v;
}

const ipText = (s: string): string => {
  const ip = parseIp(s, KERNEL_IP);
  return ip ? formatIp(ip) : s;
};

/** An IP address in canonical text; unparseable input is returned as is (the host will refuse it). */
export function canonicalIp(s: string): string {
  return cached(ipCache, s, ipText);
}

const cidrText =
  (hostBits: 'keep' | 'mask') =>
  (s: string): string => {
    const c = parseCidr(s, { ...KERNEL_IP, bareAddress: true, hostBits });
    return c ? formatCidr(c) : s;
  };
const hostCidrText = cidrText('keep');
const netCidrText = cidrText('mask');

/**
 * A CIDR in canonical text with an explicit prefix length. `keepHostBits` for an interface address
 * (`100.64.0.1/24` is that address), otherwise the network (`100.96.0.1/22` is `100.96.0.0/22`, as
 * WireGuard and the routing table store it).
 */
export function canonicalCidr(s: string, keepHostBits = false): string {
  return keepHostBits ? cached(hostCidrCache, s, hostCidrText) : cached(netCidrCache, s, netCidrText);
}
