import { randomUUID } from 'node:crypto';

/**
 * What pure code may not make itself: fresh ids and the time. Machines take it through their input
 * and the shells through their options; the daemon gives the system's (`systemDeps`), tests give
 * deterministic ones, so a run is a function of its inputs.
 */
export interface Deps {
  /** A fresh id (a UUID: it becomes an envelope id). */
  newId: () => string;
  /** The time, in ms since the epoch. */
  now: () => number;
}

/** The system's ids and clock: what the daemon runs with. */
export const systemDeps: Deps = { newId: () => randomUUID(), now: () => Date.now() };
