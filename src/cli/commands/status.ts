import { join, resolve } from 'node:path';
import { CliError, str, type Action, type Values } from '../args.ts';
import { callStatusSocket, fetchStatus } from '../../daemon/status-server.ts';
import type { RelayStatus } from '../../daemon/relay-status.ts';
import { table } from '../../lib/table.ts';

const RELAY_COLUMNS = [{ width: 20 }, { width: 12 }, { width: 15 }, { width: 18 }, {}];
const LINK_COLUMNS = [{ width: 20 }, { width: 10 }, { width: 12 }, {}];
const CLIENT_COLUMNS = [{ width: 15 }, { width: 20 }, { width: 13 }, { width: 12 }, { width: 12 }, {}];

/** The status socket of the relay `--state-dir` or `--relay-id` names. */
function socketOf(v: Values): string {
  const id = str(v.relayId);
  const dir = str(v.stateDir) ?? (id ? `.state/relay-${id}` : undefined);
  if (!dir) throw new CliError('give --state-dir or --relay-id', 2);
  return join(resolve(dir), 'relay.sock');
}

/** POST an operator action to a running relay's status socket; what it answers, or exit 1 with why not. */
async function action<T>(v: Parameters<Action>[0], path: string): Promise<T> {
  try {
    return (await callStatusSocket(socketOf(v), 'POST', path)) as T;
  } catch (e) {
    throw new CliError((e as Error).message, 1);
  }
}

/** `relay-core rotate-key`: ask a running relay to rotate its WireGuard key. */
export const rotateKey: Action = async (v) => {
  const r = await action<{ relayId: string; publicKey: string; registering: boolean; clients: number }>(v, '/rotate-key');
  if (v.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  else
    process.stdout.write(
      `relay ${r.relayId} rotates its WireGuard key to ${r.publicKey}: ${r.registering ? 'registering it now' : 'it registers at its next registration'}\n` +
        (r.clients > 0
          ? `warning: ${r.clients} client session(s) name ${r.relayId}'s key as their peer (standard ones entering there, private ones leaving there); their wg-quick configurations have the old key: issue them new ones\n`
          : ''),
    );
  return 0;
};

/** `relay-core reconcile`: ask a running relay for a whole-scope kernel round (the drift check) now. */
export const reconcile: Action = async (v) => {
  const r = await action<{ relayId: string; asked: boolean }>(v, '/reconcile');
  if (v.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  else
    process.stdout.write(`relay ${r.relayId} reads and plans everything it owns in its next kernel round (its KernelReconciled events show what it mended)\n`);
  return 0;
};

/** `relay-core status`: a running relay's view, from its status socket. */
export const status: Action = async (v) => {
  let st: RelayStatus;
  try {
    st = (await fetchStatus(socketOf(v))) as RelayStatus;
  } catch (e) {
    throw new CliError((e as Error).message, 1);
  }
  if (v.json) {
    process.stdout.write(JSON.stringify(st, null, 2) + '\n');
    return 0;
  }
  const c = st.counters;
  const rejected =
    Object.entries(c.rejected)
      .map(([k, n]) => `${k}=${n}`)
      .join(' ') || '0';
  const lines = [
    `relay ${st.relayId}  state ${st.state}  mesh ${st.meshAddress ?? '-'}  pool ${st.clientPool ?? '-'}`,
    `topology revision ${st.revision}, ${st.relays.length} relays; applied ${c.applied}, duplicates ${c.duplicates}, gaps ${c.gaps}, resyncs ${c.resyncs}, rejected ${rejected}, other epoch ${c.otherEpoch ?? 0}`,
    `control plane epoch ${st.bus.epoch ?? '-'}; topology key ${st.bus.topologyKey ?? '-'}` +
      (st.bus.topologyKeyRefused ? `; REFUSED key ${st.bus.topologyKeyRefused} (not the pinned one; not following: see --repin-topology-key)` : ''),
    `bus ${st.bus.connected ? `connected to ${st.bus.server}` : 'disconnected'}; events published ${st.bus.published}, pending ${st.bus.pending}, dropped ${st.bus.dropped}, sent again ${st.bus.resent} (window ${st.bus.window})`,
    '',
    ...table(
      RELAY_COLUMNS,
      [['ID', 'REGION', 'MESH', 'POOL', 'ENDPOINT'], ...st.relays.map((r) => [r.id, r.region, r.meshAddress, r.clientPool, r.endpoint])],
      { gap: ' ' },
    ),
  ];
  const age = (ms: number | null) => (ms === null ? 'never' : `${Math.max(0, Math.round((Date.now() - ms) / 1000))}s ago`);
  if (st.links.length) {
    lines.push(
      '',
      ...table(LINK_COLUMNS, [['LINK TO', 'DEVICE', 'STATE', 'HANDSHAKE'], ...st.links.map((l) => [l.peerId, l.device, l.state, age(l.latestHandshakeMs)])], {
        gap: ' ',
      }),
    );
  }
  const clientRows = st.clients.map((c) => [
    c.address,
    c.confirmedExitId === c.exitId ? c.exitId : `${c.exitId} (steering)`,
    c.mode === 'private' ? `private ${c.role}` : 'standard',
    c.state,
    age(c.latestHandshakeMs),
    c.sessionId,
  ]);
  lines.push(
    '',
    ...(clientRows.length
      ? table(CLIENT_COLUMNS, [['CLIENT', 'EXIT', 'MODE', 'STATE', 'HANDSHAKE', 'SESSION'], ...clientRows], { gap: ' ' })
      : ['no client sessions enter here']),
  );
  if (st.policy) {
    const p = st.policy;
    const refused = p.egress.map((r) => `${r.reason} ${r.packets}`).join(', ');
    const dropped = p.filters.map((f) => `${f.name} ${f.packets}`).join(', ');
    lines.push(
      '',
      `policy (nft table inet ${p.table}${p.countersAt ? `, counters read ${age(Date.parse(p.countersAt))}` : ''}; ranges: --json)`,
      `  refused by reason: ${refused}`,
      `  dropped: ${dropped}`,
    );
  }
  for (const f of st.kernel.failing) lines.push(`kernel: ${f.owner} cannot ${f.op} (${f.attempts} attempts since ${age(f.sinceMs)}): ${f.message}`);
  if (st.error) lines.push('', `error: ${st.error}`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
};
