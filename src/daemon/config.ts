import { z } from 'zod';
import { prefix6Problem } from '../kernel/ipv6.ts';
import { RelayIdSchema } from '../contract/envelope.ts';
import { EndpointSchema, Ipv4CidrSchema } from '../contract/topology.events.ts';
import { cidrToRange } from '../kernel/egress.ts';
import { parseListen } from '../lib/metrics-server.ts';

const isListenAddress = (s: string): boolean => {
  try {
    parseListen(s);
    return true;
  } catch {
    return false;
  }
};

/** An IPv4 or IPv6 CIDR (or a bare address, read as /32 or /128). */
export const IpCidrSchema = z
  .string()
  .max(64)
  .refine((s) => cidrToRange(s) !== null, 'must be an IPv4 or IPv6 CIDR such as 203.0.113.0/24 or 2001:db8::/32');

/** Everything `relay-core run` needs; flags override environment variables (see README, configuration). */
export const RelayConfigSchema = z
  .object({
    relayId: RelayIdSchema,
    name: z.string().min(1).max(128),
    region: z.string().regex(/^[a-z0-9-]{1,64}$/, 'region must be 1-64 chars of a-z, 0-9 and -'),
    endpoint: EndpointSchema,
    stateDir: z.string().min(1),
    controlPlaneUrl: z.string().url('control-plane URL must be an http(s) URL'),
    token: z.string().min(1, 'a token is required (RELAYNET_TOKEN: a relay token or the service-role key)'),
    /** Pinned control-plane topology key; when unset the key the relay first trusted (STATE_DIR/topology-key.pub) is. */
    topologyKey: z.string().nullable(),
    /** Trust the key the control plane hands out at this run's first registration and pin it (replacing the saved one). */
    repinTopologyKey: z.boolean().optional(),
    /** Relay events waiting for the bus beyond this many are dropped, oldest first (counted and reported). */
    eventQueue: z.number().int().min(1).max(10_000_000).optional(),
    /** Override of the NATS servers the control plane hands out (simulations behind NAT, tests). */
    natsServers: z.array(z.string()).nullable(),
    rotateKey: z.boolean(),
    /** Consumer start margin before the snapshot's revision time. */
    startMarginMs: z.number().int().min(0),
    /** Mesh link devices are named <wgPrefix><own index>m<peer index>; distinct per relay sharing a machine. */
    wgPrefix: z.string().regex(/^[a-z]{1,3}$/, 'wg-prefix must be 1-3 lowercase letters'),
    keepaliveSeconds: z.number().int().min(0).max(65535),
    mtu: z.number().int().min(1280).max(9000),
    linkStaleAfterMs: z.number().int().min(100),
    linkDownAfterMs: z.number().int().min(100),
    observeIntervalMs: z.number().int().min(100),
    /** How often the kernel reads and plans its whole scope (the drift check); other rounds look only at what changed. */
    kernelFullEveryMs: z.number().int().min(1000),
    /** How often peer endpoints given as DNS names are looked up again (failures are retried sooner). */
    resolveIntervalMs: z.number().int().min(1000),
    /** `linux` programs this host; `memory` keeps an in-memory model of it (dry runs, tests). */
    kernel: z.enum(['linux', 'memory']),
    /** WireGuard implementation on Linux: the kernel module, `wireguard-go`, or whichever works. */
    wgImpl: z.enum(['auto', 'kernel', 'userspace']),
    /**
     * Linux only: run every kernel command in this network namespace (`ip netns exec`), the daemon
     * itself (its bus, control plane and status socket) staying where it runs. For benchmarks and
     * tests that host many relays in one process (bench:fleet's real relays); no CLI flag sets it.
     */
    kernelNetns: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'a network namespace name: 1-64 of A-Z, a-z, 0-9, _ . -')
      .optional(),
    /** Clients (docs/clients.md): a session not heard from for this long is idle. */
    clientIdleAfterMs: z.number().int().min(1000),
    /** The table of exit relay i is exitTableBase + i. */
    exitTableBase: z.number().int().min(256).max(4_000_000_000),
    /** Client steering rules take priorities from here on (one per pool address, then the fail-closed rule). */
    clientRulePriority: z.number().int().min(1).max(32_000),
    /** The network-wide client address space (every relay's pool lies inside). */
    clientSupernet: Ipv4CidrSchema,
    /** The egress policy (docs/security.md): refused besides the default ranges (`--client-deny`). */
    clientDeny: z.array(IpCidrSchema).max(256),
    /** Taken out of the default ranges (`--client-allow`); never out of the network, service or operator ones. */
    clientAllow: z.array(IpCidrSchema).max(256),
    /** The control plane's addresses, resolved at start: always refused to clients (NATS's join at registration). */
    serviceCidrs: z.array(IpCidrSchema).max(256),
    /** The clients' IPv6 /96 (src/kernel/ipv6.ts; the control plane's `client_prefix6` must agree), or null: IPv4 only. */
    clientPrefix6: z
      .string()
      .refine((p) => prefix6Problem(p) === null, 'must be an IPv6 /96 with no host bits set (or off)')
      .nullable(),
    /** Whether clients' IPv6 may leave here: `auto` when this host has a default IPv6 route. */
    exitIpv6: z.enum(['auto', 'on', 'off']),
    /** Serve Prometheus metrics here (`--metrics-listen`); null: not at all. */
    metricsListen: z
      .string()
      .refine((s) => isListenAddress(s), 'metrics-listen must be PORT, ADDR:PORT or [IPV6]:PORT, ADDR an IP address')
      .nullable()
      .optional(),
  })
  .refine((c) => c.linkDownAfterMs >= c.linkStaleAfterMs, { message: 'link-down-after must be at least link-stale-after', path: ['linkDownAfterMs'] });
export type RelayConfig = z.infer<typeof RelayConfigSchema>;
