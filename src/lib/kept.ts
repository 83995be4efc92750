/**
 * What `make` gives for `key`, made once per key object and kept in `map` (a WeakMap: it goes with the
 * key). For values derived from objects nobody changes in place.
 */
export function kept<K extends object, V>(map: WeakMap<K, V>, key: K, make: (key: K) => V): V {
  let v = map.get(key);
  if (v === undefined) {
    v = make(key);
    map.set(key, v);
  }
  return v;
}
