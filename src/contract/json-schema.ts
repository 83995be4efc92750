import { z } from 'zod';
import { CATALOGUE, type EventType } from './catalogue.ts';
import { EnvelopeSchema } from './envelope.ts';

/**
 * JSON Schema (draft 2020-12) for the envelope and for every version of every event payload, so any
 * NATS client can validate what it reads. Written to docs/schemas by `npm run schemas`; a unit test
 * fails when the files there differ from what this returns. Pure.
 */
export function catalogueJsonSchemas(): Record<string, unknown> {
  const out: Record<string, unknown> = {
    'envelope.json': { title: 'relay-core event envelope', ...z.toJSONSchema(EnvelopeSchema, { io: 'input', unrepresentable: 'any' }) },
  };
  for (const [type, entry] of Object.entries(CATALOGUE) as [EventType, (typeof CATALOGUE)[EventType]][]) {
    for (const [version, schema] of Object.entries(entry.versions as Record<string, z.ZodType>)) {
      const subject = entry.kind.stream === 'topology' ? 'relaynet.topology.<relayId>.' : `relaynet.relay.<relayId>.${entry.kind.aggregate}.`;
      out[`${type}.v${version}.json`] = {
        title: `${type} version ${version}: the envelope's data`,
        description: `Published on ${subject}<kebab-case type>, in the envelope (envelope.json) with type "${type}" and version ${version}.`,
        ...z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }),
      };
    }
  }
  return out;
}
