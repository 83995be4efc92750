import { Option } from 'commander';
import { RelayKeyRegistry, parseRelayKeyPins } from '../events/identity.ts';
import type { Verification } from '../events/log.ts';
import { importPublicKey } from '../events/signing.ts';
import { CliError, str, type Values } from './args.ts';

/**
 * The signature options of the commands that read the event streams (`events tail|export`, `replay`):
 * the control plane's topology key, relays' identity keys pinned, or no checks at all. The checks
 * themselves are pure (src/events/identity.ts, src/events/log.ts).
 */

const GROUP = 'Signatures (docs/events.md, "Signed events"):';

export const verifyOpts = () => [
  new Option(
    '--topology-key <KEY>',
    "the control plane's Ed25519 public key (base64; `relay-core control-plane` prints it): every topology message must be signed with it; with --sim, the sim's",
  )
    .env('RELAYNET_TOPOLOGY_KEY')
    .helpGroup(GROUP),
  new Option(
    '--relay-key <ID=KEY>',
    "pin relay ID's identity key (base64 Ed25519 public key) instead of the one its RelayAdmitted announces in the topology stream; repeatable",
  )
    .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .helpGroup(GROUP),
  new Option('--no-verify', 'read without checking any signature (every message is shown as stored, forged ones too)').helpGroup(GROUP),
];

/**
 * The verification the options ask for, or null with `--no-verify`. Without a topology key and without
 * `--no-verify` this is a usage error: a reader that cannot tell forged messages from genuine ones
 * must say so rather than print them as genuine.
 */
export function verificationOf(v: Values): Verification | null {
  if (v.verify === false) return null;
  const key = str(v.topologyKey);
  if (!key) {
    throw new CliError(
      "give --topology-key KEY (RELAYNET_TOPOLOGY_KEY: the control plane's public key, printed by `relay-core control-plane`), or --no-verify to read without checking signatures",
      2,
    );
  }
  let controlPlaneKey: Verification['controlPlaneKey'];
  try {
    controlPlaneKey = importPublicKey(key);
  } catch {
    throw new CliError('--topology-key: not a base64 Ed25519 public key of 32 bytes', 2);
  }
  const pins = parseRelayKeyPins(Array.isArray(v.relayKey) ? (v.relayKey as string[]) : []);
  if (!pins.ok) throw new CliError(pins.error, 2);
  return { controlPlaneKey, relayKeys: new RelayKeyRegistry(pins.pins) };
}

/** With `--sim`: the sim's topology key for the command run again inside it, unless one is given or checks are off. */
export function simVerifyArgs(v: Values, argv: readonly string[], simTopologyKey: string): string[] {
  if (v.verify === false || argv.some((a) => a === '--topology-key' || a.startsWith('--topology-key='))) return [];
  return simTopologyKey ? ['--topology-key', simTopologyKey] : [];
}
