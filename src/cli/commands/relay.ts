import { CliError, requireStr, str, type Action } from '../args.ts';
import { type ControlPlaneClient, ControlPlaneError } from '../../daemon/control-plane-client.ts';
import { connect } from './client.ts';

/**
 * `relay-core relay ban|unban|suspend|resume`: the operator's relay administration (docs/security.md,
 * "Bans"; docs/proof-of-bandwidth.md, "Community relays").
 */

const setBan =
  (banned: boolean): Action =>
  async (v) => {
    const relayId = requireStr(v.relay, 'relay');
    const reason = str(v.reason) ?? '';
    const forgetIdentity = !banned && v.forgetIdentity === true;
    let r: Awaited<ReturnType<ControlPlaneClient['banRelay']>>;
    try {
      r = await connect(v, 'the service-role key').banRelay({ relayId, banned, ...(banned ? { reason } : {}), ...(forgetIdentity ? { forgetIdentity } : {}) });
    } catch (e) {
      if (e instanceof ControlPlaneError) throw new CliError(e.message, 1);
      throw e;
    }
    if (v.json) process.stdout.write(`${JSON.stringify(r)}\n`);
    else {
      const what = banned
        ? r.changed
          ? 'banned'
          : 'was banned already'
        : r.changed
          ? `unbanned${forgetIdentity ? ', its identity key forgotten' : ''}`
          : 'was not banned';
      process.stdout.write(`relay ${r.relayId} ${what} (topology revision ${r.revision})\n`);
    }
    return 0;
  };

export const ban = setBan(true);
export const unban = setBan(false);

const setState =
  (state: 'suspended' | 'active'): Action =>
  async (v) => {
    const relayId = requireStr(v.relay, 'relay');
    const reason = str(v.reason) ?? '';
    let r: Awaited<ReturnType<ControlPlaneClient['setRelayState']>>;
    try {
      r = await connect(v, 'the service-role key').setRelayState({ relayId, state, reason });
    } catch (e) {
      if (e instanceof ControlPlaneError) throw new CliError(e.message, 1);
      throw e;
    }
    if (v.json) process.stdout.write(`${JSON.stringify(r)}\n`);
    else {
      const now = `${r.standing.class} relay ${r.standing.relayId}`;
      const closed = r.sessionsClosed ? `; ${r.sessionsClosed} client session${r.sessionsClosed === 1 ? '' : 's'} closed` : '';
      process.stdout.write(
        r.changed ? `${now}: ${r.previousState} -> ${r.standing.state}${closed}\n` : `${now} is ${r.standing.state} already (nothing changed)\n`,
      );
    }
    return 0;
  };

export const suspend = setState('suspended');
export const resume = setState('active');
