import { parseEndpoint, parseIpv4, type RelayRecord } from '../contract/topology.events.ts';

/**
 * Peer endpoints given as DNS names (docs/datapath.md, "Names"): the relay resolves them itself and
 * programs WireGuard with an address, never a name. `wg set ... endpoint name:port` fails for a name
 * that does not resolve (stalling the kernel round), and the host reads back an address, so a name
 * would be planned again every round. The shell resolves (`src/daemon/resolver.ts`); these pure
 * functions decide what a result means. Both the topology actor and replay fold results with them.
 */

/** The outcome of resolving one peer's endpoint host: an address, or why not (`address` null). */
export interface PeerResolution {
  /** The name resolved (a peer's endpoint may change: a result for another host is stale). */
  host: string;
  address: string | null;
  error: string | null;
}

/** Resolutions by peer id; replaced, never mutated. */
export type Resolutions = Readonly<Record<string, PeerResolution>>;

export interface ResolveTarget {
  peerId: string;
  host: string;
}

/** Whether an endpoint host is an address literal (IPv4 dotted quad, or IPv6): no resolution needed. */
export const isIpLiteral = (host: string): boolean => host.includes(':') || parseIpv4(host) !== null;

/** Endpoint names by endpoint text: every view asks again for every peer. Bounded: cleared when full. */
const names = new Map<string, string | null>();

/** The host of a peer's endpoint when it is a name that needs resolving, else null. */
export function endpointName(peer: RelayRecord): string | null {
  let name = names.get(peer.endpoint);
  if (name === undefined) {
    const ep = parseEndpoint(peer.endpoint);
    name = ep && !isIpLiteral(ep.host) ? ep.host : null;
    if (names.size >= 65_536) names.clear();
    names.set(peer.endpoint, name);
  }
  return name;
}

/**
 * {@link resolveTargets} of `peers`, from `before` (the targets of a peers Map that differs from it in
 * `changed` ids at most): O(changed + targets), the same list. The same array when nothing changed.
 */
export function patchedTargets(before: readonly ResolveTarget[], peers: ReadonlyMap<string, RelayRecord>, changed: Iterable<string>): readonly ResolveTarget[] {
  const ids = new Set(changed);
  const added: ResolveTarget[] = [];
  for (const id of ids) {
    const p = peers.get(id);
    const host = p ? endpointName(p) : null;
    if (host !== null) added.push({ peerId: id, host });
  }
  const kept = before.filter((t) => !ids.has(t.peerId));
  const was = new Map(before.filter((t) => ids.has(t.peerId)).map((t) => [t.peerId, t.host]));
  if (added.length === was.size && added.every((t) => was.get(t.peerId) === t.host)) return before;
  return [...kept, ...added].sort((a, b) => a.peerId.localeCompare(b.peerId));
}

/** The peers whose endpoints are names, sorted by id: what the resolver is asked to resolve. */
export function resolveTargets(peers: Iterable<RelayRecord>): ResolveTarget[] {
  const out: ResolveTarget[] = [];
  for (const p of peers) {
    const host = endpointName(p);
    if (host !== null) out.push({ peerId: p.id, host });
  }
  return out.sort((a, b) => a.peerId.localeCompare(b.peerId));
}

/** The address to program for `peer`'s endpoint host: the literal itself, its resolution, or null (unresolved). */
export function resolvedHost(peer: RelayRecord, resolutions: Resolutions): string | null {
  const ep = parseEndpoint(peer.endpoint);
  if (!ep) return null;
  if (isIpLiteral(ep.host)) return ep.host;
  const r = resolutions[peer.id];
  return r && r.host === ep.host ? r.address : null;
}

/** Only the resolutions still current: of peers in the view, for the host their endpoint names now. O(resolutions). */
export function retainResolutions(resolutions: Resolutions, peers: ReadonlyMap<string, RelayRecord>): Resolutions {
  const out: Record<string, PeerResolution> = {};
  let kept = 0;
  let all = 0;
  for (const id in resolutions) {
    all++;
    const p = peers.get(id);
    const r = resolutions[id]!;
    if (p && r.host === endpointName(p)) {
      out[id] = r;
      kept++;
    }
  }
  return kept === all ? resolutions : out;
}

/**
 * Fold one result of the resolver. `recorded`: whether it changes what the relay knows (a new address,
 * the first failure after an address or none; a repeated failure or the same address again does not),
 * so an event is recorded and a line logged on change only. `desiredChanged`: whether the address to
 * program changed, so the mesh's desired state did. A result for a peer no longer in `peers` (by id),
 * or for a host its endpoint no longer names, is stale and ignored. Costs O(1), whatever the fleet.
 */
export function applyResolution(
  resolutions: Resolutions,
  peers: ReadonlyMap<string, RelayRecord>,
  result: { peerId: string } & PeerResolution,
): { resolutions: Resolutions; recorded: boolean; desiredChanged: boolean } {
  const peer = peers.get(result.peerId);
  const unchanged = { resolutions, recorded: false, desiredChanged: false };
  if (!peer || endpointName(peer) !== result.host) return unchanged;
  const before = resolutions[peer.id];
  const was = before && before.host === result.host ? before : null;
  if (was && was.address === result.address) return unchanged;
  const { peerId: _id, ...r } = result;
  return { resolutions: { ...resolutions, [peer.id]: r }, recorded: true, desiredChanged: (was?.address ?? null) !== r.address };
}

/**
 * The address to use among a lookup's answers (in the resolver's order): the first of a family this
 * relay can reach (it has a non-loopback address of that family), else null.
 */
export function chooseAddress(answers: readonly { address: string; family: number }[], usable: { v4: boolean; v6: boolean }): string | null {
  return answers.find((a) => (a.family === 4 && usable.v4) || (a.family === 6 && usable.v6))?.address ?? null;
}

/** The WireGuard endpoint text for an address and port (`[v6]:port` for IPv6). */
export const formatEndpoint = (address: string, port: number): string => `${address.includes(':') ? `[${address}]` : address}:${port}`;
