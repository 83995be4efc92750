import { parseIpv4 } from '../events/topology.events.ts';

/** Resolves a host name to its IPv4 addresses (node:dns lookup in the daemon, a table in tests). */
export type LookupIpv4 = (host: string) => Promise<string[]>;

/**
 * The /32s that keep clients from the control plane: the address of SUPABASE_URL's host, or every
 * IPv4 address its name resolves to at start (a container network or a DNS name). Loopback is left
 * out (clients cannot reach a relay's loopback anyway). A name that does not resolve gives no entry
 * and a reason to log: registration will fail with its own clear error if it stays unresolvable.
 */
export async function controlPlaneDenyCidrs(controlPlaneUrl: string, lookup: LookupIpv4): Promise<{ cidrs: string[]; warning: string | null }> {
  let host: string;
  try {
    host = new URL(controlPlaneUrl).hostname;
  } catch {
    return { cidrs: [], warning: null }; // the config check reports a bad URL
  }
  if (!host || host === 'localhost' || host.startsWith('[')) return { cidrs: [], warning: null };
  let addresses: string[];
  if (parseIpv4(host) !== null) addresses = [host];
  else {
    try {
      addresses = await lookup(host);
    } catch (e) {
      return { cidrs: [], warning: `cannot resolve the control plane's host ${host} (${(e as Error).message}): clients are not kept from it until a restart resolves it; --client-deny does it by address` };
    }
  }
  const cidrs = [...new Set(addresses.filter((a) => parseIpv4(a) !== null && !a.startsWith('127.')).map((a) => `${a}/32`))];
  return { cidrs, warning: null };
}
