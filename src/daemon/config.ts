import { z } from 'zod';
import { RelayIdSchema } from '../events/envelope.ts';
import { EndpointSchema } from '../events/topology.events.ts';

/** Everything `relay-core run` needs; flags override environment variables (see README, configuration). */
export const RelayConfigSchema = z.object({
  relayId: RelayIdSchema,
  name: z.string().min(1).max(128),
  region: z.string().regex(/^[a-z0-9-]{1,64}$/, 'region must be 1-64 chars of a-z, 0-9 and -'),
  endpoint: EndpointSchema,
  stateDir: z.string().min(1),
  controlPlaneUrl: z.string().url('control-plane URL must be an http(s) URL'),
  token: z.string().min(1, 'a token is required (RELAYNET_TOKEN: a relay token or the service-role key)'),
  /** Pinned control-plane topology key; when unset the key from registration is used. */
  topologyKey: z.string().nullable(),
  /** Override of the NATS servers the control plane hands out (simulations behind NAT, tests). */
  natsServers: z.array(z.string()).nullable(),
  rotateKey: z.boolean(),
  /** Consumer start margin before the snapshot's revision time. */
  startMarginMs: z.number().int().min(0),
});
export type RelayConfig = z.infer<typeof RelayConfigSchema>;
