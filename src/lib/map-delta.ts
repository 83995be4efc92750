/**
 * Maps made from another by a few changes remember which keys those were, so that a reader holding the
 * older Map follows the change in O(changed) instead of comparing every entry (at a thousand relays a
 * walk over a Map is ~30 µs, a copy ~70 µs, and each topology event used to pay a dozen of them).
 *
 * Only for Maps nobody changes after handing them out (the fold's and the owners' convention). A Map
 * remembers its last {@link MAX_STEPS} steps by its predecessors' serial numbers, never the
 * predecessors themselves: an old Map is not kept alive by its successors. A reader that asks about a
 * Map too many steps back, or not derived this way, gets null and compares the whole Maps.
 */

const MAX_STEPS = 32;

interface Step {
  /** The serial of the Map this step started from. */
  from: number;
  /** Deleted keys, then keys set that the Map did not hold (appended, in order), then keys whose value was replaced in place. */
  deleted: readonly unknown[];
  added: readonly unknown[];
  replaced: readonly unknown[];
}

const serials = new WeakMap<object, number>();
const histories = new WeakMap<object, readonly Step[]>();
let nextSerial = 1;

function serialOf(m: object): number {
  let s = serials.get(m);
  if (s === undefined) {
    s = nextSerial++;
    serials.set(m, s);
  }
  return s;
}

/**
 * `from` with `del` deleted, then `set` set, recorded as derived (a key deleted and set again goes to
 * the end, as in any Map). Not a copy: an {@link OverlayMap} over the last Map copied, holding the
 * changes since; once those pass {@link MAX_OVERLAY} it is copied into a Map again (the copy of a
 * thousand entries, ~70 µs, paid once per 64 changes instead of on every one).
 */
export function derivedMap<K, V>(from: ReadonlyMap<K, V>, set: readonly (readonly [K, V])[], del: readonly K[] = []): ReadonlyMap<K, V> {
  const deleted: K[] = [];
  const added: K[] = [];
  const replaced: K[] = [];
  const o = OverlayMap.over(from);
  for (const k of del) if (o.delete(k)) deleted.push(k);
  for (const [k, v] of set) (o.set(k, v) ? replaced : added).push(k);
  if (deleted.length + added.length + replaced.length === 0) return from;
  // Always a new object, even when the changes cancel out (a join, then a leave): a Map handed out
  // again would take a second history, and a reader holding one of its successors would lose its way back.
  const to: ReadonlyMap<K, V> = o;
  const before = histories.get(from) ?? [];
  const kept = before.length >= MAX_STEPS ? before.slice(before.length - MAX_STEPS + 1) : before;
  histories.set(to, [...kept, { from: serialOf(from), deleted, added, replaced }]);
  return to;
}

/** How many changes an {@link OverlayMap} holds before it is copied into a Map. */
const MAX_OVERLAY = 64;

/**
 * A read-only Map made of a base Map and the changes since: keys gone from the base (deleted, or
 * deleted and set again: then at the end), values replaced in place, and keys appended. It reads,
 * iterates (in the order the copied Map would have) and sizes as that Map. Built by {@link derivedMap}
 * only; the base is never changed.
 */
export class OverlayMap<K, V> implements ReadonlyMap<K, V> {
  private readonly base: ReadonlyMap<K, V>;
  private readonly gone: Set<K>;
  private readonly over: Map<K, V>;
  private readonly tail: Map<K, V>;
  private constructor(base: ReadonlyMap<K, V>, gone: Set<K>, over: Map<K, V>, tail: Map<K, V>) {
    this.base = base;
    this.gone = gone;
    this.over = over;
    this.tail = tail;
  }

  /** A draft over `m` to change (its own copies of the changes), a Map's copy when they are many. */
  static over<K, V>(m: ReadonlyMap<K, V>): OverlayMap<K, V> {
    if (m instanceof OverlayMap && m.gone.size + m.over.size + m.tail.size < MAX_OVERLAY)
      return new OverlayMap(m.base, new Set(m.gone), new Map(m.over), new Map(m.tail));
    return new OverlayMap(m instanceof OverlayMap || m instanceof MapWithout ? new Map(m) : m, new Set(), new Map(), new Map());
  }
  /** Draft only: delete `k`; whether it was there. */
  delete(k: K): boolean {
    if (this.tail.delete(k)) return true;
    if (this.gone.has(k) || !this.base.has(k)) return false;
    this.gone.add(k);
    this.over.delete(k);
    return true;
  }
  /** Draft only: set `k`; whether it replaced a value in place (else it is appended). */
  set(k: K, v: V): boolean {
    if (this.tail.has(k)) {
      this.tail.set(k, v);
      return true;
    }
    if (!this.gone.has(k) && this.base.has(k)) {
      this.over.set(k, v);
      return true;
    }
    this.tail.set(k, v);
    return false;
  }
  get size(): number {
    return this.base.size - this.gone.size + this.tail.size;
  }
  get(k: K): V | undefined {
    const t = this.tail.get(k);
    if (t !== undefined || this.gone.has(k)) return t;
    const o = this.over.get(k);
    return o !== undefined ? o : this.base.get(k);
  }
  has(k: K): boolean {
    return this.tail.has(k) || (!this.gone.has(k) && this.base.has(k));
  }
  *entries(): MapIterator<[K, V]> {
    const { gone, over } = this;
    for (const [k, v] of this.base) {
      if (gone.size > 0 && gone.has(k)) continue;
      const o = over.size > 0 ? over.get(k) : undefined;
      yield [k, o !== undefined ? o : v];
    }
    yield* this.tail;
  }
  *keys(): MapIterator<K> {
    for (const [k] of this.entries()) yield k;
  }
  *values(): MapIterator<V> {
    for (const [, v] of this.entries()) yield v;
  }
  [Symbol.iterator](): MapIterator<[K, V]> {
    return this.entries();
  }
  forEach(f: (v: V, k: K, m: ReadonlyMap<K, V>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) f.call(thisArg, v, k, this);
  }
}

/** The steps from `from` to `to`, or null when not known. */
function stepsSince(to: object, from: object): readonly Step[] | null {
  const steps = histories.get(to);
  const s = serials.get(from);
  if (!steps || s === undefined) return null;
  let i = steps.length - 1;
  while (i >= 0 && steps[i]!.from !== s) i--;
  return i < 0 ? null : steps.slice(i);
}

const NONE: ReadonlySet<never> = new Set();

/**
 * The keys whose entries may differ between `from` and `to` (a superset: each one must still be
 * compared), or null when `to` was not derived from `from` within the steps remembered.
 */
export function keysChangedSince<K>(to: ReadonlyMap<K, unknown>, from: ReadonlyMap<K, unknown>): ReadonlySet<K> | null {
  if (to === from) return NONE;
  const steps = stepsSince(to, from);
  if (!steps) return null;
  const out = new Set<K>();
  for (const st of steps) for (const keys of [st.deleted, st.added, st.replaced]) for (const k of keys) out.add(k as K);
  return out;
}

/** How a Map's order changed: see {@link orderedChangesSince}. */
export interface OrderedChanges<K> {
  /** Keys gone from their place: deleted (some perhaps set again, then among `appended`). */
  removed: ReadonlySet<K>;
  /** Keys now at the end, in order, that were not there in the older Map or were deleted since. */
  appended: readonly K[];
  /** Keys in their old place whose value may have been replaced. */
  replaced: ReadonlySet<K>;
}

/**
 * How `to` differs from `from` in order as well as in keys: its keys are `from`'s in their order less
 * `removed`, then `appended`. Null when not known.
 */
export function orderedChangesSince<K>(to: ReadonlyMap<K, unknown>, from: ReadonlyMap<K, unknown>): OrderedChanges<K> | null {
  const steps = to === from ? [] : stepsSince(to, from);
  if (!steps) return null;
  const removed = new Set<K>();
  const appended: K[] = [];
  const replaced = new Set<K>();
  for (const st of steps) {
    for (const k of st.deleted as K[]) {
      const i = appended.indexOf(k);
      if (i >= 0) appended.splice(i, 1);
      else removed.add(k);
      replaced.delete(k);
    }
    for (const k of st.added as K[]) appended.push(k);
    for (const k of st.replaced as K[]) if (!appended.includes(k)) replaced.add(k);
  }
  return { removed, appended, replaced };
}

/** {@link orderedChangesSince} for two views of Maps without the same key, through their bases. */
export function orderedChangesBetween<K>(from: ReadonlyMap<K, unknown>, to: ReadonlyMap<K, unknown>): OrderedChanges<K> | null {
  if (from instanceof MapWithout && to instanceof MapWithout) {
    if (from.without !== to.without) return null;
    const c = orderedChangesSince(to.base, from.base);
    if (!c) return null;
    const w = from.without;
    return { removed: without(c.removed, w), appended: c.appended.filter((k) => k !== w), replaced: without(c.replaced, w) };
  }
  return orderedChangesSince(to, from);
}

function without<K>(s: ReadonlySet<K>, k: K): ReadonlySet<K> {
  if (!s.has(k)) return s;
  const out = new Set(s);
  out.delete(k);
  return out;
}

/**
 * The keys whose values are not the same object in `a` and `b` (or that only one has; values are never
 * undefined), in O(changed) when one was derived from the other, else by walking both.
 */
export function changedEntries<K, V>(a: ReadonlyMap<K, V>, b: ReadonlyMap<K, V>): K[] {
  if (a === b) return [];
  const known = keysChangedSince(b, a) ?? keysChangedSince(a, b);
  const out: K[] = [];
  if (known) {
    for (const k of known) if (a.get(k) !== b.get(k)) out.push(k);
    return out;
  }
  for (const [k, v] of a) if (b.get(k) !== v) out.push(k);
  for (const k of b.keys()) if (!a.has(k)) out.push(k);
  return out;
}

/**
 * A Map without one key, as a read-only view of it (no copy): the mesh's peers are the relays
 * without this relay. Two views of the same Map without the same key are the same object.
 */
export class MapWithout<K, V> implements ReadonlyMap<K, V> {
  readonly base: ReadonlyMap<K, V>;
  readonly without: K;
  private constructor(base: ReadonlyMap<K, V>, without: K) {
    this.base = base;
    this.without = without;
  }
  private static readonly views = new WeakMap<object, MapWithout<unknown, unknown>>();
  static of<K, V>(base: ReadonlyMap<K, V>, without: K): MapWithout<K, V> {
    const known = MapWithout.views.get(base) as MapWithout<K, V> | undefined;
    if (known?.without === without) return known;
    const v = new MapWithout(base, without);
    MapWithout.views.set(base, v as MapWithout<unknown, unknown>);
    return v;
  }
  get size(): number {
    return this.base.size - (this.base.has(this.without) ? 1 : 0);
  }
  get(k: K): V | undefined {
    return k === this.without ? undefined : this.base.get(k);
  }
  has(k: K): boolean {
    return k !== this.without && this.base.has(k);
  }
  *entries(): MapIterator<[K, V]> {
    for (const e of this.base) if (e[0] !== this.without) yield e;
  }
  *keys(): MapIterator<K> {
    for (const k of this.base.keys()) if (k !== this.without) yield k;
  }
  *values(): MapIterator<V> {
    for (const [k, v] of this.base) if (k !== this.without) yield v;
  }
  [Symbol.iterator](): MapIterator<[K, V]> {
    return this.entries();
  }
  forEach(f: (v: V, k: K, m: ReadonlyMap<K, V>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) f.call(thisArg, v, k, this);
  }
}

/**
 * The keys whose entries may differ between two Maps (a superset), through their recorded steps (a
 * {@link MapWithout} through its base's): null when unknown.
 */
export function keysChangedBetween<K>(from: ReadonlyMap<K, unknown>, to: ReadonlyMap<K, unknown>): ReadonlySet<K> | null {
  if (from === to) return NONE;
  if (from instanceof MapWithout && to instanceof MapWithout) {
    if (from.without !== to.without) return null;
    return keysChangedSince(to.base, from.base);
  }
  return keysChangedSince(to, from);
}

/** Whether `v` is a Map or one of this module's read-only Maps (what a Map-valued field may hold). */
export const isMapLike = (v: unknown): v is ReadonlyMap<unknown, unknown> => v instanceof Map || v instanceof OverlayMap || v instanceof MapWithout;
