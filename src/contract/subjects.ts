import type { EventType } from './catalogue.ts';
import { CATALOGUE } from './catalogue.ts';
import { topologySubjectRelay, type TopologyEventData } from './topology.events.ts';

/**
 * The NATS subject scheme (documented in docs/events.md):
 *
 *   relaynet.topology.<relayId>.<event>               topology events, published only by the control plane, signed
 *   relaynet.relay.<relayId>.<aggregate>.<event>      a relay's own events (actor state changes, kernel operations)
 *
 * `<event>` is the kebab-case event type (RelayAdmitted -> relay-admitted).
 */
export const SUBJECT_ROOT = 'relaynet';
export const TOPOLOGY_SUBJECTS = `${SUBJECT_ROOT}.topology.>`;
export const RELAY_SUBJECTS = `${SUBJECT_ROOT}.relay.>`;

export const STREAMS = {
  topology: 'RELAYNET_TOPOLOGY',
  relay: 'RELAYNET_RELAY',
} as const;

export function kebab(type: string): string {
  return type.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();
}

/** The subject an event is published on. */
export function subjectFor(type: EventType, relayId: string): string {
  const kind = CATALOGUE[type].kind;
  if (kind.stream === 'topology') return `${SUBJECT_ROOT}.topology.${relayId}.${kebab(type)}`;
  return `${SUBJECT_ROOT}.relay.${relayId}.${kind.aggregate}.${kebab(type)}`;
}

/** Parse a subject back into its parts; null when it does not follow the scheme. */
export function parseSubject(
  subject: string,
): { stream: 'topology'; relayId: string; event: string } | { stream: 'relay'; relayId: string; aggregate: string; event: string } | null {
  const p = subject.split('.');
  if (p[0] !== SUBJECT_ROOT) return null;
  if (p[1] === 'topology' && p.length === 4) return { stream: 'topology', relayId: p[2]!, event: p[3]! };
  if (p[1] === 'relay' && p.length === 5) return { stream: 'relay', relayId: p[2]!, aggregate: p[3]!, event: p[4]! };
  return null;
}

/** `relaynet.topology.<relayId>.<kebab-type>`: the subject of a topology event, about its relay (a session's entry). */
export function topologySubject(e: TopologyEventData): string {
  return subjectFor(e.type, topologySubjectRelay(e));
}
