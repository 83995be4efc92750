import { DEFAULT_CLIENT_PREFIX6 } from '../../kernel/ipv6.ts';
import { lookup } from 'node:dns/promises';
import { resolve } from 'node:path';
import { CliError, intOpt, str, tokenOpt, type Command } from '../args.ts';
import { RelayConfigSchema } from '../../daemon/config.ts';
import { controlPlaneDenyCidrs } from '../../daemon/control-plane-deny.ts';
import { startRelayDaemon } from '../../daemon/relay-daemon.ts';
import { formatIssues } from '../../contract/catalogue.ts';
import { rootLogger } from '../../lib/logger.ts';

const usage = `Usage: relay-core run [options]

Run the relay daemon: load or generate the WireGuard key (STATE_DIR/wg.key, mode 0600, never sent
anywhere), register with the control plane, seed the topology from the snapshot, follow topology
events on NATS JetStream, heartbeat, and serve status on STATE_DIR/relay.sock. On SIGTERM or SIGINT
it deregisters and exits 0. Logs are JSON lines on stderr.

Options (flags override environment variables):
  --relay-id ID              this relay's id, [a-z0-9-]            RELAYNET_RELAY_ID   (required)
  --name NAME                display name (default: the id)         RELAYNET_NAME
  --region REGION            region, [a-z0-9-] (default: local)     RELAYNET_REGION
  --endpoint HOST:PORT       public WireGuard endpoint              RELAYNET_ENDPOINT   (required)
  --state-dir DIR            key, status socket (default: ./.state/relay-ID)   RELAYNET_STATE_DIR
  --control-plane-url URL    Supabase project URL                   SUPABASE_URL        (required)
  --token TOKEN              relay token or service-role key        RELAYNET_TOKEN
  --token-file FILE          read the token from FILE               RELAYNET_TOKEN_FILE
  --topology-key KEY         pin the control plane's Ed25519 key    RELAYNET_TOPOLOGY_KEY
  --nats-url URL[,URL]       override the NATS servers handed out   RELAYNET_NATS_SERVERS
  --start-margin-ms MS       consumer start before snapshot time (default 60000)
  --rotate-key               generate a new WireGuard key and register it with rotateKey

Mesh (one point-to-point WireGuard device per other relay; see docs/datapath.md):
  --wg-prefix P              device name prefix, 1-3 letters a-z (default rc)  RELAYNET_WG_PREFIX
                             the link to relay j is P<own index>m<j>; relays sharing a machine need distinct P
  --keepalive S              persistent keepalive seconds on each link (default 25)
  --mtu N                    mesh device MTU (default 1420)
  --link-stale-after MS      peer silent this long: link stale (default 180000, WireGuard's reject window)
  --link-down-after MS       peer silent this long: link down (default 540000)
  --observe-interval MS      how often handshakes and counters are read (default 5000)
  --resolve-interval MS      how often peer endpoints given as DNS names are looked up again
                             (default 60000; a failed lookup is retried after 2 s, doubling)
  --kernel linux|memory      program this host (default) or only an in-memory model of it (dry run)
  --wg-impl auto|kernel|userspace   kernel WireGuard, wireguard-go, or whichever works (default auto)

Each link listens on UDP port (endpoint port + peer's mesh index): open that range. On SIGTERM the
relay also removes its mesh devices; after a crash (SIGKILL) they stay up and a restart adopts them.
A peer endpoint given as a DNS name is programmed as the address it resolves to (IPv4 or IPv6,
whichever this host has); until it resolves, the peer's WireGuard endpoint is left unset and learned
from the peer's handshakes. Each change is logged and published (PeerEndpointResolved).

Clients (stock WireGuard clients enter here and leave at the exit they chose; see docs/clients.md):
  --client-idle-after MS     a client not heard this long is idle (default 180000)
  --exit-table-base N        routing table of exit relay i is N + i (default 100000)
  --client-rule-priority N   first policy-rule priority of the client rules (default 20000)
  --client-supernet CIDR     the network's client address space (default 100.96.0.0/11)
  --client-deny CIDR[,CIDR]  refuse client traffic to these too (IPv4 or IPv6)  RELAYNET_CLIENT_DENY
  --client-allow CIDR[,CIDR] take these out of the default refused ranges         RELAYNET_CLIENT_ALLOW
  --client-prefix6 P|off     the clients' IPv6 /96 (default fd64::/96; the control plane's
                             client_prefix6 must agree); off: clients get IPv4 only   RELAYNET_CLIENT_PREFIX6
  --exit-ipv6 auto|on|off    let clients' IPv6 leave here, NAT66 (default auto: when this host
                             has a default IPv6 route)                                RELAYNET_EXIT_IPV6

Egress policy (docs/security.md): as an exit, the relay refuses client traffic (TCP reset, ICMP
administratively prohibited) to private, loopback, link-local (cloud metadata: 169.254.169.254),
shared, reserved, benchmarking (198.18.0.0/15), documentation and multicast ranges of both
families; --client-allow takes ranges out of those defaults only. Always refused, whatever
--client-allow says: 100.64.0.0/10 (the network itself), --client-deny, and the control plane's and
NATS's addresses (the URL's address or what its name resolves to at start; the NATS servers of every
registration). \`relay-core status\` shows the ranges and a refusal counter per reason.

IPv6: a client's IPv6 address is its IPv4 address in the /96 (100.96.4.7 -> fd64::6460:407); its
configuration routes ::/0 into the tunnel too. An exit without IPv6 takes none: the entry refuses
those clients' IPv6 at once (ICMPv6 unreachable). A host with IPv6 disabled runs IPv4 only.

The client device P<own index>c listens on the endpoint port. The relay turns on IPv4 (and IPv6)
forwarding and loose reverse-path filtering, and owns the nftables table inet P<own index>; on SIGTERM
it removes them and puts the sysctls back as they were before its first start.
  -h, --help                 show this help

Exit codes: 0 stopped cleanly; 1 registration refused or failed (the reason is printed); 2 bad usage.`;

export const command: Command = {
  name: 'run',
  summary: 'run the relay daemon',
  usage,
  options: {
    'relay-id': { type: 'string' },
    name: { type: 'string' },
    region: { type: 'string' },
    endpoint: { type: 'string' },
    'state-dir': { type: 'string' },
    'control-plane-url': { type: 'string' },
    token: { type: 'string' },
    'token-file': { type: 'string' },
    'topology-key': { type: 'string' },
    'nats-url': { type: 'string' },
    'start-margin-ms': { type: 'string' },
    'rotate-key': { type: 'boolean' },
    'wg-prefix': { type: 'string' },
    keepalive: { type: 'string' },
    mtu: { type: 'string' },
    'link-stale-after': { type: 'string' },
    'link-down-after': { type: 'string' },
    'observe-interval': { type: 'string' },
    'resolve-interval': { type: 'string' },
    kernel: { type: 'string' },
    'wg-impl': { type: 'string' },
    'client-idle-after': { type: 'string' },
    'exit-table-base': { type: 'string' },
    'client-rule-priority': { type: 'string' },
    'client-supernet': { type: 'string' },
    'client-deny': { type: 'string' },
    'client-allow': { type: 'string' },
    'client-prefix6': { type: 'string' },
    'exit-ipv6': { type: 'string' },
  },
  async run(v) {
    const relayId = str(v['relay-id'], 'relay-id', 'RELAYNET_RELAY_ID') ?? '';
    const token = tokenOpt(v);
    const nats = str(v['nats-url'], 'nats-url', 'RELAYNET_NATS_SERVERS');
    const controlPlaneUrl = str(v['control-plane-url'], 'control-plane-url', 'SUPABASE_URL') ?? '';
    const list = (flag: string, env: string) => (str(v[flag], flag, env) ?? '').split(',').map((s) => s.trim()).filter(Boolean);
    const deny = list('client-deny', 'RELAYNET_CLIENT_DENY');
    const allow = list('client-allow', 'RELAYNET_CLIENT_ALLOW');
    const prefix6 = str(v['client-prefix6'], 'client-prefix6', 'RELAYNET_CLIENT_PREFIX6') ?? DEFAULT_CLIENT_PREFIX6;
    const cpDeny = await controlPlaneDenyCidrs(controlPlaneUrl, async (host) => (await lookup(host, { all: true })).map((a) => a.address));
    const parsed = RelayConfigSchema.safeParse({
      relayId,
      name: str(v.name, 'name', 'RELAYNET_NAME') ?? relayId,
      region: str(v.region, 'region', 'RELAYNET_REGION') ?? 'local',
      endpoint: str(v.endpoint, 'endpoint', 'RELAYNET_ENDPOINT') ?? '',
      stateDir: resolve(str(v['state-dir'], 'state-dir', 'RELAYNET_STATE_DIR') ?? `.state/relay-${relayId}`),
      controlPlaneUrl,
      token: token ?? '',
      topologyKey: str(v['topology-key'], 'topology-key', 'RELAYNET_TOPOLOGY_KEY') ?? null,
      natsServers: nats ? nats.split(',').map((s) => s.trim()).filter(Boolean) : null,
      rotateKey: v['rotate-key'] === true,
      startMarginMs: intOpt(v['start-margin-ms'], 'start-margin-ms', 60_000, 0, 3_600_000),
      wgPrefix: str(v['wg-prefix'], 'wg-prefix', 'RELAYNET_WG_PREFIX') ?? 'rc',
      keepaliveSeconds: intOpt(v.keepalive, 'keepalive', 25, 0, 65535),
      mtu: intOpt(v.mtu, 'mtu', 1420, 1280, 9000),
      linkStaleAfterMs: intOpt(v['link-stale-after'], 'link-stale-after', 180_000, 100, 86_400_000),
      linkDownAfterMs: intOpt(v['link-down-after'], 'link-down-after', 540_000, 100, 86_400_000),
      observeIntervalMs: intOpt(v['observe-interval'], 'observe-interval', 5_000, 100, 3_600_000),
      resolveIntervalMs: intOpt(v['resolve-interval'], 'resolve-interval', 60_000, 1_000, 86_400_000),
      kernel: str(v.kernel, 'kernel') ?? 'linux',
      wgImpl: str(v['wg-impl'], 'wg-impl') ?? 'auto',
      clientIdleAfterMs: intOpt(v['client-idle-after'], 'client-idle-after', 180_000, 1_000, 86_400_000),
      exitTableBase: intOpt(v['exit-table-base'], 'exit-table-base', 100_000, 256, 4_000_000_000),
      clientRulePriority: intOpt(v['client-rule-priority'], 'client-rule-priority', 20_000, 1, 32_000),
      clientSupernet: str(v['client-supernet'], 'client-supernet') ?? '100.96.0.0/11',
      clientDeny: [...new Set(deny)],
      clientAllow: [...new Set(allow)],
      serviceCidrs: cpDeny.cidrs,
      clientPrefix6: prefix6 === 'off' ? null : prefix6,
      exitIpv6: str(v['exit-ipv6'], 'exit-ipv6', 'RELAYNET_EXIT_IPV6') ?? 'auto',
    });
    if (!parsed.success) throw new CliError(`invalid configuration: ${formatIssues(parsed.error)}\n\n${usage}`, 2);
    const cfg = parsed.data;
    const logger = rootLogger({ relayId: cfg.relayId });
    if (cpDeny.warning) logger.warn({ controlPlaneUrl }, cpDeny.warning);
    let daemon;
    try {
      daemon = await startRelayDaemon(cfg, logger);
    } catch (e) {
      throw new CliError((e as Error).message, 1);
    }
    const onSignal = (sig: NodeJS.Signals) => {
      logger.info({ signal: sig }, 'signal received, draining');
      daemon.stop(sig);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    const code = await daemon.done;
    const st = daemon.status();
    if (code !== 0) process.stderr.write(`relay-core run: ${st.error ?? 'relay failed'}\n`);
    return code;
  },
};
