import { embedCidr6 as embedCidr6In, embedIpv4In6 } from '../contract/ip.ts';
import { KERNEL_IP } from './ip.ts';

/**
 * Clients' IPv6 inside the tunnel (docs/clients.md, "IPv6"). The network's client IPv6 space is one
 * /96 (`--client-prefix6`, default fd64::/96, a unique local prefix); a client's IPv6 address is its
 * IPv4 address in the low 32 bits of that prefix, so a relay's IPv6 pool is its IPv4 pool there
 * (100.96.4.0/22 → fd64::6460:400/118). Nothing new is allocated, stored or sent: the control plane,
 * the entry and the exit all derive the same address from the session's IPv4 one (src/contract/ip.ts).
 */

export const DEFAULT_CLIENT_PREFIX6 = 'fd64::/96';

/** Null when `prefix6` is a valid /96, else why not (for option and settings validation). */
export { prefix6Problem } from '../contract/ip.ts';

/** The IPv6 address of the client (or gateway) with IPv4 address `v4`. */
export const embed6 = (prefix6: string, v4: string): string => embedIpv4In6(prefix6, v4, KERNEL_IP);

/** The IPv6 counterpart of an IPv4 CIDR (a relay's pool): the same addresses in the /96. */
export const embedCidr6 = (prefix6: string, cidr4: string): string => embedCidr6In(prefix6, cidr4, KERNEL_IP);
