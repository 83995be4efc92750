import { isIpv6 } from '../kernel/ip.ts';
import { cidrToRange } from '../kernel/egress.ts';

/** Resolves a host name to its addresses, IPv4 and IPv6 (node:dns lookup in the daemon, a table in tests). */
export type LookupAddresses = (host: string) => Promise<string[]>;

/**
 * The /32s and /128s that keep clients from one of the network's services: the address in its URL
 * (`http://198.18.0.2:54321`, `nats://[2001:db8::2]:4222`, `nats://nats:4222`), or every address its
 * name resolves to. `what` names the service in the warning. Loopback is left out (clients cannot
 * reach a relay's loopback anyway). A name that does not resolve gives no entry and a reason to log.
 */
export async function serviceDenyCidrs(url: string, what: string, lookup: LookupAddresses): Promise<{ cidrs: string[]; warning: string | null }> {
  let host: string;
  try {
    host = new URL(url.includes('://') ? url : `nats://${url}`).hostname;
  } catch {
    return { cidrs: [], warning: null }; // the config check reports a bad URL
  }
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (!host || host === 'localhost') return { cidrs: [], warning: null };
  let addresses: string[];
  if (cidrToRange(host) !== null && !host.includes('/')) addresses = [host];
  else {
    try {
      addresses = await lookup(host);
    } catch (e) {
      return {
        cidrs: [],
        warning: `cannot resolve ${what} host ${host} (${(e as Error).message}): clients are not kept from it until it resolves; --client-deny does it by address`,
      };
    }
  }
  const cidrs = addresses.filter((a) => cidrToRange(a) !== null && !a.startsWith('127.') && a !== '::1').map((a) => (isIpv6(a) ? `${a}/128` : `${a}/32`));
  return { cidrs: [...new Set(cidrs)], warning: null };
}

/** The control plane's addresses (SUPABASE_URL), resolved at start. */
export const controlPlaneDenyCidrs = (controlPlaneUrl: string, lookup: LookupAddresses) => serviceDenyCidrs(controlPlaneUrl, "the control plane's", lookup);

/** Every NATS server's addresses (`nats://host:port` or `host:port`), as handed out at registration. */
export async function natsDenyCidrs(servers: readonly string[], lookup: LookupAddresses): Promise<{ cidrs: string[]; warnings: string[] }> {
  const rs = await Promise.all(servers.map((s) => serviceDenyCidrs(s, `the NATS server ${s}`, lookup)));
  return { cidrs: [...new Set(rs.flatMap((r) => r.cidrs))], warnings: rs.flatMap((r) => (r.warning ? [r.warning] : [])) };
}
