import type { KeyObject } from 'node:crypto';
import { parseTopologyEvent, parseEvent, type AnyEvent } from '../contract/catalogue.ts';
import { parseSubject } from '../contract/subjects.ts';
import { CONTROL_PLANE_SOURCE } from '../contract/envelope.ts';
import { topologySubjectRelay, type TopologyEvent } from '../contract/topology.events.ts';
import { verifyBytes } from './signing.ts';
import { kebab } from '../contract/subjects.ts';

/** Events larger than this are rejected before parsing. */
export const MAX_EVENT_BYTES = 64 * 1024;

/** NATS header carrying the control plane's Ed25519 signature over the message data. */
export const SIGNATURE_HEADER = 'Relaynet-Signature';

export type Rejection = {
  reason: 'oversized' | 'malformed' | 'bad-signature' | 'unsigned' | 'schema' | 'foreign-source' | 'subject-mismatch';
  detail: string;
};

export type DecodeResult<E> = { ok: true; event: E } | { ok: false; rejection: Rejection };

const decoder = new TextDecoder('utf-8', { fatal: true });

function decodeJson(data: Uint8Array): DecodeResult<unknown> {
  if (data.byteLength > MAX_EVENT_BYTES) {
    return { ok: false, rejection: { reason: 'oversized', detail: `${data.byteLength} bytes > ${MAX_EVENT_BYTES}` } };
  }
  try {
    return { ok: true, event: JSON.parse(decoder.decode(data)) };
  } catch (e) {
    return { ok: false, rejection: { reason: 'malformed', detail: String((e as Error).message).slice(0, 200) } };
  }
}

/** Encode an event for the wire (UTF-8 JSON). */
export function encodeEvent(e: AnyEvent): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(e));
}

/** Decode and validate any catalogue event (relay streams, exported logs). */
export function decodeEvent(data: Uint8Array): DecodeResult<AnyEvent> {
  const j = decodeJson(data);
  if (!j.ok) return j;
  const p = parseEvent(j.event);
  return p.ok ? p : { ok: false, rejection: { reason: 'schema', detail: p.error.slice(0, 500) } };
}

/**
 * Decode a message from the topology stream and check that the control plane signed exactly these
 * bytes, that it claims the control plane as source, and that it arrived on the subject its payload
 * names. Order: size, signature, JSON, schema, subject; the first failure is the rejection. Never throws.
 */
export function decodeTopologyMessage(
  subject: string,
  data: Uint8Array,
  signature: string | undefined,
  controlPlaneKey: KeyObject,
): DecodeResult<TopologyEvent> {
  if (data.byteLength > MAX_EVENT_BYTES) {
    return { ok: false, rejection: { reason: 'oversized', detail: `${data.byteLength} bytes > ${MAX_EVENT_BYTES}` } };
  }
  if (!signature) return { ok: false, rejection: { reason: 'unsigned', detail: `no ${SIGNATURE_HEADER} header` } };
  if (!verifyBytes(controlPlaneKey, data, signature)) {
    return { ok: false, rejection: { reason: 'bad-signature', detail: 'Ed25519 signature does not verify with the control-plane key' } };
  }
  return decodeUnsignedTopologyMessage(subject, data);
}

/**
 * The checks of {@link decodeTopologyMessage} after the signature: size, JSON, a topology event of the
 * catalogue, source control plane, on the subject its payload names. For readers of a stored log that
 * do not hold the control plane's key.
 */
export function decodeUnsignedTopologyMessage(subject: string, data: Uint8Array): DecodeResult<TopologyEvent> {
  const j = decodeJson(data);
  if (!j.ok) return j;
  const p = parseTopologyEvent(j.event);
  if (!p.ok) return { ok: false, rejection: { reason: 'schema', detail: p.error.slice(0, 500) } };
  if (p.event.source !== CONTROL_PLANE_SOURCE) {
    return { ok: false, rejection: { reason: 'foreign-source', detail: `source ${p.event.source}` } };
  }
  const s = parseSubject(subject);
  if (s?.stream !== 'topology' || s.relayId !== topologySubjectRelay(p.event) || s.event !== kebab(p.event.type)) {
    return { ok: false, rejection: { reason: 'subject-mismatch', detail: `${p.event.type} for ${topologySubjectRelay(p.event)} on ${subject}` } };
  }
  return p;
}
