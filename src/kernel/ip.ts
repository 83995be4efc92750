/**
 * IP addresses and CIDRs in the canonical text iproute2 and wg print (IPv6 compressed as in RFC 5952),
 * as the planner compares them.
 */


export interface IpValue {
  v6: boolean;
  n: bigint;
}

export const isIpv6 = (addressOrCidr: string): boolean => addressOrCidr.includes(':');

export function parseIpv4(s: string): IpValue | null {
  const parts = s.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return null;
  return { v6: false, n: parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n) };
}

/** Hex groups with at most one `::`. Embedded IPv4 (`::ffff:1.2.3.4`) is not supported: left as given. */
export function parseIpv6(s: string): IpValue | null {
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groups = (h: string) => (h === '' ? [] : h.split(':'));
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail];
  if (!all.every((g) => /^[0-9a-f]{1,4}$/i.test(g))) return null;
  return { v6: true, n: all.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n) };
}

export function formatIp({ v6, n }: IpValue): string {
  if (!v6) return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 0xffn)).join('.');
  const groups = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(112 - 16 * i)) & 0xffffn));
  // The longest run of two or more zero groups (the first of equals) becomes `::`.
  let best = { at: -1, len: 1 };
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = Math.max(j, i + 1);
  }
  const hex = groups.map((g) => g.toString(16));
  if (best.at < 0) return hex.join(':');
  return `${hex.slice(0, best.at).join(':')}::${hex.slice(best.at + best.len).join(':')}`;
}

/**
 * Canonical texts by input: a relay (and replay) canonicalises the same few hundred addresses on every
 * plan, and the parse goes through BigInt. Bounded: cleared when full.
 */
const canonicalCache = new Map<string, string>();
const CANONICAL_CACHE_MAX = 65_536;
function cached(key: string, compute: () => string): string {
  let v = canonicalCache.get(key);
  if (v === undefined) {
    v = compute();
    if (canonicalCache.size >= CANONICAL_CACHE_MAX) canonicalCache.clear();
    canonicalCache.set(key, v);
  }
  return v;
}

/** An IP address in canonical text; unparseable input is returned as is (the host will refuse it). */
export function canonicalIp(s: string): string {
  return cached(`i${s}`, () => {
    const ip = isIpv6(s) ? parseIpv6(s) : parseIpv4(s);
    return ip ? formatIp(ip) : s;
  });
}

/**
 * A CIDR in canonical text with an explicit prefix length. `keepHostBits` for an interface address
 * (`100.64.0.1/24` is that address), otherwise the network (`100.96.0.1/22` is `100.96.0.0/22`, as
 * WireGuard and the routing table store it).
 */
export function canonicalCidr(s: string, keepHostBits = false): string {
  return cached(`${keepHostBits ? 'h' : 'n'}${s}`, () => computeCanonicalCidr(s, keepHostBits));
}

function computeCanonicalCidr(s: string, keepHostBits: boolean): string {
  const [addr = '', len, extra] = s.split('/');
  const ip = isIpv6(addr) ? parseIpv6(addr) : parseIpv4(addr);
  const bits = ip?.v6 ? 128 : 32;
  const prefix = len === undefined ? bits : Number(len);
  if (!ip || extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > bits) return s;
  const hostMask = (1n << BigInt(bits - prefix)) - 1n;
  return `${formatIp(keepHostBits ? ip : { v6: ip.v6, n: ip.n & ~hostMask })}/${prefix}`;
}

