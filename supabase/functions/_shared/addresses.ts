import { embedIpv4In6, formatIpv4, parseIpv4, parseIpv4Cidr } from '../../../src/contract/ip.ts';

// Address plan arithmetic: mesh addresses and client pools by slot, and the lowest free slot. Pure.
//
// Mesh slot n (n >= 1) is network(mesh_cidr) + n; the network and broadcast addresses are never
// handed out. Client pool slot k (k >= 0) is the k-th /client_pool_prefix block of client_supernet.

export interface AddressPlan {
  meshCidr: string;
  clientSupernet: string;
  clientPoolPrefix: number;
}

/** The migrations' default (4,096 relays; supabase/migrations/20261212000000_address_plan_4096.sql). */
export const DEFAULT_PLAN: AddressPlan = { meshCidr: '100.64.0.0/16', clientSupernet: '100.96.0.0/11', clientPoolPrefix: 23 };

export interface Cidr {
  base: number;
  prefix: number;
}

export { formatIpv4, parseIpv4 };

/** `a.b.c.d/n` with no host bits set (a bare address is /32). */
export function parseCidr(s: string): Cidr | null {
  return parseIpv4Cidr(s, { bareAddress: true });
}

export function formatCidr(c: Cidr): string {
  return `${formatIpv4(c.base)}/${c.prefix}`;
}

type ParsedPlan = { mesh: Cidr; supernet: Cidr; poolPrefix: number };
/** Plans parsed, by their text: `allocate` asks for the plan once per held address (O(N) per admission, under the topology lock). */
const parsedPlans = new Map<string, ParsedPlan>();

function plan(p: AddressPlan): ParsedPlan {
  const key = `${p.meshCidr} ${p.clientSupernet} ${p.clientPoolPrefix}`;
  const known = parsedPlans.get(key);
  if (known) return known;
  const parsed = parsePlan(p);
  if (parsedPlans.size >= 16) parsedPlans.clear();
  parsedPlans.set(key, parsed);
  return parsed;
}

function parsePlan(p: AddressPlan): ParsedPlan {
  const mesh = parseCidr(p.meshCidr);
  const supernet = parseCidr(p.clientSupernet);
  if (!mesh || mesh.prefix > 30) throw new Error(`mesh_cidr ${p.meshCidr} must be an IPv4 network of /30 or larger`);
  if (!supernet) throw new Error(`client_supernet ${p.clientSupernet} must be an IPv4 network`);
  if (!Number.isInteger(p.clientPoolPrefix) || p.clientPoolPrefix < supernet.prefix || p.clientPoolPrefix > 30) {
    throw new Error(`client_pool_prefix ${p.clientPoolPrefix} must be between ${supernet.prefix} and 30`);
  }
  return { mesh, supernet, poolPrefix: p.clientPoolPrefix };
}

/** How many mesh addresses the plan has (slots 1..meshSlots). */
export function meshSlots(p: AddressPlan): number {
  return 2 ** (32 - plan(p).mesh.prefix) - 2;
}

/** How many client pools the plan has (slots 0..poolSlots-1). */
export function poolSlots(p: AddressPlan): number {
  const { supernet, poolPrefix } = plan(p);
  return 2 ** (poolPrefix - supernet.prefix);
}

export function meshAddress(p: AddressPlan, slot: number): string {
  if (!Number.isInteger(slot) || slot < 1 || slot > meshSlots(p)) throw new RangeError(`mesh slot ${slot} is outside 1..${meshSlots(p)}`);
  return formatIpv4(plan(p).mesh.base + slot);
}

export function clientPool(p: AddressPlan, slot: number): string {
  if (!Number.isInteger(slot) || slot < 0 || slot >= poolSlots(p)) throw new RangeError(`pool slot ${slot} is outside 0..${poolSlots(p) - 1}`);
  const { supernet, poolPrefix } = plan(p);
  return formatCidr({ base: supernet.base + slot * 2 ** (32 - poolPrefix), prefix: poolPrefix });
}

/** The mesh slot an address occupies, or null when it is not a usable address of the plan. */
export function meshSlotOf(p: AddressPlan, address: string): number | null {
  const a = parseIpv4(address.replace(/\/32$/, ''));
  if (a === null) return null;
  const slot = a - plan(p).mesh.base;
  return slot >= 1 && slot <= meshSlots(p) ? slot : null;
}

/** Every pool slot a CIDR overlaps (a pool of another size, after the plan changed, blocks several). */
export function poolSlotsOverlapping(p: AddressPlan, cidr: string): number[] {
  const c = parseCidr(cidr);
  if (!c) return [];
  const { supernet, poolPrefix } = plan(p);
  const start = Math.max(c.base, supernet.base);
  const end = Math.min(c.base + 2 ** (32 - c.prefix), supernet.base + 2 ** (32 - supernet.prefix)) - 1;
  if (end < start) return [];
  const size = 2 ** (32 - poolPrefix);
  const out: number[] = [];
  for (let s = Math.floor((start - supernet.base) / size); s <= Math.floor((end - supernet.base) / size); s++) out.push(s);
  return out;
}

/** The lowest integer in first..last not in `taken`, or null. */
export function lowestFree(taken: Iterable<number>, first: number, last: number): number | null {
  const set = new Set(taken);
  for (let s = first; s <= last; s++) if (!set.has(s)) return s;
  return null;
}

export type Allocation = { ok: true; meshAddress: string; clientPool: string } | { ok: false; exhausted: 'mesh address' | 'client pool' };

/** Lowest free mesh address and client pool, given those held by active relays. */
export function allocate(p: AddressPlan, heldMesh: string[], heldPools: string[]): Allocation {
  const m = lowestFree(
    heldMesh.map((a) => meshSlotOf(p, a)).filter((s): s is number => s !== null),
    1,
    meshSlots(p),
  );
  if (m === null) return { ok: false, exhausted: 'mesh address' };
  const k = lowestFree(
    heldPools.flatMap((c) => poolSlotsOverlapping(p, c)),
    0,
    poolSlots(p) - 1,
  );
  if (k === null) return { ok: false, exhausted: 'client pool' };
  return { ok: true, meshAddress: meshAddress(p, m), clientPool: clientPool(p, k) };
}

/**
 * A client's IPv6 address: its IPv4 address in the low 32 bits of the network's client /96
 * (relaynet.settings.client_prefix6; the relays derive the same with the same module). RFC 5952 text.
 */
export { embedIpv4In6 };
