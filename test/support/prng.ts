/** A seeded pseudo-random source (mulberry32) for property tests: the same seed, the same cases. */
export function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    int,
    chance: (p: number) => next() < p,
    pick: <T>(xs: readonly T[]): T => xs[int(xs.length)]!,
    subset: <T>(xs: readonly T[], p = 0.5): T[] => xs.filter(() => next() < p),
    shuffle: <T>(xs: readonly T[]): T[] =>
      xs
        .map((x) => [next(), x] as const)
        .sort((a, b) => a[0] - b[0])
        .map(([, x]) => x),
  };
}
export type Rng = ReturnType<typeof prng>;
