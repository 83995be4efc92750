// The Edge Functions for clients' sessions: connect-client, switch-exit, disconnect-client and
// list-clients (docs/control-plane.md, "Client sessions"). Requests as the functions check them (their
// refusals: request.ts), answers as the CLI checks them. Pure.
import { z } from 'zod';
import { RelayIdSchema } from './envelope.ts';
import { exactlyOne, flag, oneOf, regionField, relayIdField, requestObject, sessionIdField, wgKeyField } from './request.ts';
import { CLIENT_SESSION_CLOSE_REASONS, ClientSessionSchema, EndpointSchema, SESSION_MODES, WgKeySchema } from './topology.events.ts';

/** The shortest session a caller may ask for; the longest is `max_session_ttl_seconds`. */
export const MIN_SESSION_TTL_SECONDS = 60;
/** The hard upper bound of any TTL (the settings cannot allow more either). */
export const MAX_SESSION_TTL_SECONDS = 315_360_000;

const TTL_MESSAGE = `ttlSeconds must be an integer number of seconds, at least ${MIN_SESSION_TTL_SECONDS}`;

/** Where the client leaves the network: a relay (`exit`), or any live relay of a region (`exitRegion`); exactly one. */
const exitChoice = { exit: relayIdField('exit').optional(), exitRegion: regionField('exitRegion').optional() };
const oneExit = exactlyOne('exit', 'exitRegion', {
  both: 'give exactly one of exit (a relay id) and exitRegion (a region), not both',
  neither: 'exit (a relay id) or exitRegion (a region) is required',
});

/**
 * connect-client: the client's public key (never its private key), the exit, optionally the entry,
 * lifetime and mode (`private`: the entry forwards the client's ciphertext to the exit, which
 * terminates its tunnel; docs/clients.md, "Private sessions").
 */
export const ConnectClientRequestSchema = requestObject({
  publicKey: wgKeyField(),
  ...exitChoice,
  entry: relayIdField('entry').optional(),
  /**
   * Absent: standard, or private where a community relay is on the path (a community entry takes
   * private sessions only).
   */
  mode: oneOf('mode', SESSION_MODES).optional(),
  /** Community relays may be on the session's path (entry or exit); absent: false, core relays only. */
  community: flag('community').default(false),
  ttlSeconds: z
    .number({ error: TTL_MESSAGE })
    .refine(Number.isInteger, TTL_MESSAGE)
    .min(MIN_SESSION_TTL_SECONDS, TTL_MESSAGE)
    .max(MAX_SESSION_TTL_SECONDS, TTL_MESSAGE)
    .optional(),
}).check(...oneExit);
export type ConnectClientRequest = z.input<typeof ConnectClientRequestSchema>;
export type ValidConnectClientRequest = z.output<typeof ConnectClientRequestSchema>;
export type ExitChoice = Pick<ValidConnectClientRequest, 'exit' | 'exitRegion'>;

export const SwitchExitRequestSchema = requestObject({ sessionId: sessionIdField(), ...exitChoice }).check(...oneExit);
export type SwitchExitRequest = z.input<typeof SwitchExitRequestSchema>;

/** disconnect-client: by session id or by the client's public key; `removed` only with the service role. */
export const DisconnectClientRequestSchema = requestObject(
  {
    reason: z
      .enum(['disconnected', 'removed'], {
        error: (i) => (typeof i.input === 'string' ? 'reason must be "disconnected" or "removed"' : 'reason must be a string'),
      })
      .default('disconnected'),
    sessionId: sessionIdField().optional(),
    publicKey: wgKeyField().optional(),
  },
  ['sessionId', 'publicKey', 'reason'],
).check(
  ...exactlyOne('sessionId', 'publicKey', { both: 'give exactly one of sessionId and publicKey, not both', neither: 'sessionId or publicKey is required' }),
);
export type DisconnectClientRequest = z.input<typeof DisconnectClientRequestSchema>;

export const ListClientsRequestSchema = requestObject({ entry: relayIdField('entry').optional(), includeClosed: flag('includeClosed').default(false) });
export type ListClientsRequest = z.input<typeof ListClientsRequestSchema>;

export const ClientConfigSchema = z.object({
  /** `a.b.c.d/32` */
  address: z.string(),
  /** The client's IPv6 address, `x::y/128`; null (or absent, from control planes before IPv6) when it has none. */
  address6: z.string().nullable().default(null),
  dns: z.array(z.string()),
  mtu: z.number().int().min(576).max(9000),
  keepaliveSeconds: z.number().int().min(0),
  peer: z.object({ publicKey: WgKeySchema, endpoint: EndpointSchema, allowedIps: z.array(z.string()).min(1) }),
});
export type ClientConfig = z.infer<typeof ClientConfigSchema>;

export const ConnectClientResponseSchema = z.object({
  session: ClientSessionSchema,
  entry: z.object({ id: RelayIdSchema, name: z.string(), region: z.string(), publicKey: WgKeySchema, endpoint: EndpointSchema }),
  exit: z.object({ id: RelayIdSchema, name: z.string(), region: z.string() }),
  config: ClientConfigSchema,
  /** A wg-quick file with a `# PrivateKey = <your private key>` placeholder line. */
  wgQuick: z.string().min(1),
});
export type ConnectClientResponse = z.infer<typeof ConnectClientResponseSchema>;

/**
 * A standard session's tunnel is untouched by a switch: no configuration. A private session's client
 * needs a new one (its peer is the exit: another key, another port at the entry).
 */
export const SwitchExitResponseSchema = z.object({
  session: ClientSessionSchema,
  config: ClientConfigSchema.nullable().default(null),
  wgQuick: z.string().min(1).nullable().default(null),
});
export type SwitchExitResponse = z.infer<typeof SwitchExitResponseSchema>;

export const DisconnectClientResponseSchema = z.object({ sessionId: z.string(), revision: z.number().int().min(1) });
export type DisconnectClientResponse = z.infer<typeof DisconnectClientResponseSchema>;

export const ClientSessionListItemSchema = ClientSessionSchema.extend({
  status: z.enum(['open', 'closed']),
  /** The entry (and a private session's exit) confirmed the session's current exit. */
  confirmed: z.boolean(),
  /** The user (JWT `sub`) that opened it; null for the service role. Absent in a relay token's list. */
  owner: z.string().nullable().optional(),
  closedAt: z.string().nullable(),
  closeReason: z.enum(CLIENT_SESSION_CLOSE_REASONS).nullable(),
});
export type ClientSessionListItem = z.infer<typeof ClientSessionListItemSchema>;

export const ListClientsResponseSchema = z.object({ sessions: z.array(ClientSessionListItemSchema) });
export type ListClientsResponse = z.infer<typeof ListClientsResponseSchema>;
