import { join, resolve } from 'node:path';
import { CliError, str, type Command } from '../args.ts';
import { fetchStatus } from '../../daemon/status-server.ts';
import type { RelayStatus } from '../../daemon/relay-status.ts';

const usage = `Usage: relay-core status [--state-dir DIR | --relay-id ID] [--json]

Show what a running relay believes: its state, registration, topology revision, every relay it
knows, its counters (applied, duplicate and rejected topology events, gaps, resyncs), its bus, its
mesh links, the client sessions entering at it, its egress policy and filters with the packets each
refused or dropped (the refused ranges by reason with --json), and any kernel operation that keeps
failing (retried with backoff).
Reads the relay's status socket DIR/relay.sock (default DIR: ./.state/relay-ID).

Options:
  --state-dir DIR   the relay's state directory            RELAYNET_STATE_DIR
  --relay-id ID     shorthand for --state-dir ./.state/relay-ID
  --json            print the raw JSON
  -h, --help        show this help`;

export const command: Command = {
  name: 'status',
  summary: "show a running relay's view",
  usage,
  options: { 'state-dir': { type: 'string' }, 'relay-id': { type: 'string' }, json: { type: 'boolean' } },
  async run(v) {
    const id = str(v['relay-id'], 'relay-id', 'RELAYNET_RELAY_ID');
    const dir = str(v['state-dir'], 'state-dir', 'RELAYNET_STATE_DIR') ?? (id ? `.state/relay-${id}` : undefined);
    if (!dir) throw new CliError(`give --state-dir or --relay-id\n\n${usage}`, 2);
    let st: RelayStatus;
    try {
      st = (await fetchStatus(join(resolve(dir), 'relay.sock'))) as RelayStatus;
    } catch (e) {
      throw new CliError((e as Error).message, 1);
    }
    if (v.json) {
      process.stdout.write(JSON.stringify(st, null, 2) + '\n');
      return 0;
    }
    const c = st.counters;
    const rejected = Object.entries(c.rejected).map(([k, n]) => `${k}=${n}`).join(' ') || '0';
    const lines = [
      `relay ${st.relayId}  state ${st.state}  mesh ${st.meshAddress ?? '-'}  pool ${st.clientPool ?? '-'}`,
      `topology revision ${st.revision}, ${st.relays.length} relays; applied ${c.applied}, duplicates ${c.duplicates}, gaps ${c.gaps}, resyncs ${c.resyncs}, rejected ${rejected}`,
      `bus ${st.bus.connected ? `connected to ${st.bus.server}` : 'disconnected'}; events published ${st.bus.published}, pending ${st.bus.pending}, dropped ${st.bus.dropped}`,
      '',
      `${'ID'.padEnd(20)} ${'REGION'.padEnd(12)} ${'MESH'.padEnd(15)} ${'POOL'.padEnd(18)} ENDPOINT`,
      ...st.relays.map((r) => `${r.id.padEnd(20)} ${r.region.padEnd(12)} ${r.meshAddress.padEnd(15)} ${r.clientPool.padEnd(18)} ${r.endpoint}`),
    ];
    const age = (ms: number | null) => (ms === null ? 'never' : `${Math.max(0, Math.round((Date.now() - ms) / 1000))}s ago`);
    if (st.links.length) {
      lines.push('', `${'LINK TO'.padEnd(20)} ${'DEVICE'.padEnd(10)} ${'STATE'.padEnd(12)} HANDSHAKE`);
      for (const l of st.links) lines.push(`${l.peerId.padEnd(20)} ${l.device.padEnd(10)} ${l.state.padEnd(12)} ${age(l.latestHandshakeMs)}`);
    }
    lines.push('', st.clients.length ? `${'CLIENT'.padEnd(15)} ${'EXIT'.padEnd(20)} ${'STATE'.padEnd(12)} ${'HANDSHAKE'.padEnd(12)} SESSION` : 'no client sessions enter here');
    for (const c of st.clients) {
      const exit = c.confirmedExitId === c.exitId ? c.exitId : `${c.exitId} (steering)`;
      lines.push(`${c.address.padEnd(15)} ${exit.padEnd(20)} ${c.state.padEnd(12)} ${age(c.latestHandshakeMs).padEnd(12)} ${c.sessionId}`);
    }
    if (st.policy) {
      const p = st.policy;
      const refused = p.egress.map((r) => `${r.reason} ${r.packets}`).join(', ');
      const dropped = p.filters.map((f) => `${f.name} ${f.packets}`).join(', ');
      lines.push('', `policy (nft table inet ${p.table}${p.countersAt ? `, counters read ${age(Date.parse(p.countersAt))}` : ''}; ranges: --json)`, `  refused by reason: ${refused}`, `  dropped: ${dropped}`);
    }
    for (const f of st.kernel.failing) lines.push(`kernel: ${f.owner} cannot ${f.op} (${f.attempts} attempts since ${age(f.sinceMs)}): ${f.message}`);
    if (st.error) lines.push('', `error: ${st.error}`);
    process.stdout.write(lines.join('\n') + '\n');
    return 0;
  },
};
