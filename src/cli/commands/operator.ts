import { writeFileSync } from 'node:fs';
import { CliError, requireStr, str, type Action } from '../args.ts';
import { RelayIdSchema } from '../../contract/envelope.ts';
import { ControlPlaneError } from '../../daemon/control-plane-client.ts';
import { connect } from './client.ts';
import { parseTtl } from './token.ts';
import { status as pobStatus } from './pob.ts';

/**
 * `relay-core operator enroll|status`: a community relay's operator (docs/proof-of-bandwidth.md,
 * "Community relays"), with its own user token: no service-role key, no core relay token.
 */
export const enroll: Action = async (v) => {
  const relayId = requireStr(v.relayId, 'relay-id');
  if (!RelayIdSchema.safeParse(relayId).success)
    throw new CliError(`--relay-id ${JSON.stringify(relayId)} is not a relay id (1-63 characters of a-z, 0-9 and -, starting with a letter or digit)`, 2);
  const ttlSeconds = parseTtl(v.ttl as string);
  const outFile = str(v.tokenOut);
  let r: Awaited<ReturnType<ReturnType<typeof connect>['enrollRelay']>>;
  try {
    r = await connect(v, "the operator's user token").enrollRelay({ relayId, ttlSeconds });
  } catch (e) {
    if (e instanceof ControlPlaneError) throw new CliError(e.message, 1);
    throw e;
  }
  if (outFile) {
    try {
      writeFileSync(outFile, `${r.token}\n`, { mode: 0o600, flag: 'w' });
    } catch (e) {
      throw new CliError(`cannot write --token-out ${outFile}: ${(e as Error).message}`, 1);
    }
  }
  const what = r.reissued ? `a new token for ${relayId} (enrolled before; ${r.standing.state})` : `${relayId} enrolled: a community relay in probation`;
  process.stderr.write(
    `${what}; its relay token ${r.jti} expires ${r.expiresAt}${outFile ? `, written to ${outFile} (0600)` : ''}.\n` +
      (r.standing.state === 'probation'
        ? 'It joins the mesh and is measured; it carries clients once a measurement made it active (relay-core operator status).\n'
        : ''),
  );
  if (v.json) process.stdout.write(`${JSON.stringify(outFile ? { ...r, token: undefined } : r)}\n`);
  else if (!outFile) process.stdout.write(`${r.token}\n`);
  return 0;
};

/** The operator's relays: standing, capacity, measurements, credit (pob-status with its token). */
export const status: Action = (v, ctx) => pobStatus(v, ctx);
