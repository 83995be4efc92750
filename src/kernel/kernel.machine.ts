import { assign, enqueueActions, fromCallback, fromPromise, setup, type AnyActorRef } from 'xstate';
import { describeOp } from './execute.ts';
import { sameScope } from './focus.ts';
import type { DesiredHostState, HostState, KernelOp, KernelScope, PeerObservation } from './host-state.ts';
import type { ScopeDigest } from './host-text.ts';
import { MAX_OP_BYTES_PER_KERNEL_EVENT, MAX_OPS_PER_KERNEL_EVENT } from '../contract/relay.events.ts';

/**
 * The kernel actor: the one place host mutations are decided and serialised. Owners (the topology
 * actor for mesh links, the clients actor for client sessions) each send their desired part of the host with the
 * scope they own. The actor reconciles one round at a time; desired states that arrive meanwhile
 * replace each other (only the latest counts) and trigger one more round. Each round reads the
 * actual state, plans a pure diff and applies it (the `reconcile` actor, provided by the shell with
 * a backend), then tells every owner the state actually reached, also after failures: a failed
 * operation fails alone with what depends on it, is listed in the stats (`failing`) until a round
 * reaches it, and is retried after a pause that doubles with each failed round (2 s to a minute). Observations of the devices (handshakes, counters) are read by the
 * `observer` child and forwarded to the owners. The machine itself touches nothing.
 *
 * Causation: each desired state names its cause, the id of the relay event whose change produced it
 * (a `TopologySeeded`, `TopologyEventApplied`, `WireGuardKeyStaged`, `RelayDraining`, or a session's `expired`
 * `ClientSessionStateChanged`). A round's events carry the cause of the desired state it applied as
 * their causation id, so replay knows which state a recorded round was planned for.
 */

export interface OwnerDesire {
  scope: KernelScope;
  state: DesiredHostState;
  cause: string | null;
  replyTo: AnyActorRef;
}

export interface ReconcileInput {
  owners: { owner: string; scope: KernelScope; state: DesiredHostState; cause: string | null }[];
  /** Read and plan every owner's whole scope (the drift check), not only what changed (src/kernel/reconcile.ts). */
  full: boolean;
}

/** One failed operation: the op, and what the command said (never key material). */
export interface OpFailure {
  op: KernelOp;
  message: string;
  command: string[] | null;
  exitCode: number | null;
  stderr: string;
}

/**
 * What one round did, per owner. A failed op fails alone with the ops that depend on it (`skipped`,
 * see `dependsOn` in execute.ts); every other op ran.
 */
export interface ReconcileOutcome {
  owner: string;
  /** The cause of the desired state this round applied. */
  cause: string | null;
  planned: KernelOp[];
  applied: KernelOp[];
  failures: OpFailure[];
  skipped: KernelOp[];
  reached: HostState;
  /** The digest of `reached` (host-text.ts, `scopeDigest`): what the round's events record of the state. */
  digest: ScopeDigest;
  /** The round read and planned only the objects whose desired state changed (false: the whole scope). */
  focused: boolean;
}

export interface ReconcileOutput {
  outcomes: ReconcileOutcome[];
  nowMs: number;
}

export type KernelEvent =
  | { type: 'DESIRED'; owner: string; scope: KernelScope; state: DesiredHostState; cause: string | null; replyTo: AnyActorRef }
  /** Run a whole-scope round (the slow timer, or an operator): it also finds and mends drift. */
  | { type: 'RECONCILE_FULL' }
  | { type: 'OBSERVED'; observations: PeerObservation[]; nowMs: number };

/** What owners receive. */
export type KernelNotice =
  | { type: 'KERNEL_APPLYING' }
  | { type: 'KERNEL_REACHED'; actual: HostState; nowMs: number; failures: OpFailure[] }
  | { type: 'KERNEL_OBSERVED'; observations: PeerObservation[]; nowMs: number };

/** `causationId`: the cause of the desired state the round applied (the envelope's causation id). */
export type KernelEmission =
  | {
      type: 'KernelReconciled';
      causationId: string | null;
      data: {
        owner: string;
        round: number;
        part: number;
        parts: number;
        planned: number;
        applied: number;
        failed: boolean;
        focused: boolean;
        ops: KernelOp[];
        reached: ScopeDigest;
      };
    }
  | {
      type: 'KernelOperationFailed';
      causationId: string | null;
      data: { owner: string; op: KernelOp; message: string; command: string[] | null; exitCode: number | null; stderr: string };
    };

/**
 * Sent to the observer after each round: the devices whose peers it should read, as the owners' reached
 * device Maps (the observer lists their names when it reads, every few seconds, not on every round).
 */
export interface ObserverEvent {
  type: 'DEVICES';
  scopes: readonly ReadonlyMap<string, unknown>[];
}

/** The names of the devices an {@link ObserverEvent} gives. */
export const observedDevices = (e: ObserverEvent): string[] => e.scopes.flatMap((m) => [...m.keys()]);

/** An object the kernel cannot program right now: shown in status until a round succeeds with it. */
export interface FailingOp {
  owner: string;
  /** `describeOp` of the operation (public keys only). */
  op: string;
  message: string;
  /** When it first failed in the current run of failures (ms since the epoch). */
  sinceMs: number;
  /** Rounds it has failed in a row. */
  attempts: number;
}

export interface KernelStats {
  rounds: number;
  /** Mutating operations applied since start. */
  mutations: number;
  /** Failed operations since start. */
  failures: number;
  lastError: string | null;
  /** What failed in each owner's latest round: cleared when a round reaches it. */
  failing: FailingOp[];
  /** Rounds in a row with a failure: the retry waits 2 s doubled per such round, at most a minute. */
  failedRounds: number;
}

export const initialKernelStats = (): KernelStats => ({ rounds: 0, mutations: 0, failures: 0, lastError: null, failing: [], failedRounds: 0 });

/** The wait before retrying after `failedRounds` rounds in a row had a failure. */
export const retryDelayMs = (failedRounds: number): number => Math.min(2_000 * 2 ** Math.max(0, failedRounds - 1), 60_000);

/**
 * The failing list after a round: each owner's entries replaced by its outcome's failures, an op that
 * failed before keeping its first time and counting its attempts. Pure.
 */
export function nextFailing(before: readonly FailingOp[], out: ReconcileOutput, describe: (op: KernelOp) => string): FailingOp[] {
  const owners = new Set(out.outcomes.map((o) => o.owner));
  const kept = before.filter((f) => !owners.has(f.owner));
  const now = out.outcomes.flatMap((o) =>
    o.failures.map((f): FailingOp => {
      const op = describe(f.op);
      const prev = before.find((b) => b.owner === o.owner && b.op === op);
      return { owner: o.owner, op, message: f.message, sinceMs: prev?.sinceMs ?? out.nowMs, attempts: (prev?.attempts ?? 0) + 1 };
    }),
  );
  return [...kept, ...now];
}

export interface KernelContext {
  owners: Record<string, OwnerDesire>;
  /** A desired state arrived during a round: run another one. */
  dirty: boolean;
  /** The next round reads and plans the whole scope (asked for, or the last round threw). */
  fullDue: boolean;
  /** The running round does. */
  fullRound: boolean;
  stats: KernelStats;
}

/**
 * The applied operations of a round in parts that each fit one event: at most
 * MAX_OPS_PER_KERNEL_EVENT operations and MAX_OP_BYTES_PER_KERNEL_EVENT bytes of them (an operation
 * larger than that alone is a part of its own). At least one part, empty for a round that applied nothing.
 */
export function opParts(ops: readonly KernelOp[]): KernelOp[][] {
  const parts: KernelOp[][] = [[]];
  let bytes = 0;
  for (const op of ops) {
    const size = JSON.stringify(op).length;
    const last = parts[parts.length - 1]!;
    if (last.length > 0 && (last.length >= MAX_OPS_PER_KERNEL_EVENT || bytes + size > MAX_OP_BYTES_PER_KERNEL_EVENT)) {
      parts.push([op]);
      bytes = size;
    } else {
      last.push(op);
      bytes += size;
    }
  }
  return parts;
}

/**
 * The events one round (number `round`) produces: per owner that changed anything, its summary in as
 * many parts as its operations need (never the state: its digest), and each failure. Pure.
 */
export function roundEmissions(out: ReconcileOutput, round: number): KernelEmission[] {
  const ems: KernelEmission[] = [];
  for (const o of out.outcomes) {
    const failed = o.failures.length > 0;
    if (o.planned.length > 0 || failed) {
      const parts = opParts(o.applied);
      for (const [i, ops] of parts.entries()) {
        ems.push({
          type: 'KernelReconciled',
          causationId: o.cause,
          data: {
            owner: o.owner,
            round,
            part: i + 1,
            parts: parts.length,
            planned: o.planned.length,
            applied: o.applied.length,
            failed,
            focused: o.focused,
            ops,
            reached: o.digest,
          },
        });
      }
    }
    for (const f of o.failures) ems.push({ type: 'KernelOperationFailed', causationId: o.cause, data: { owner: o.owner, ...f } });
  }
  return ems;
}

/** The owners with `event`'s owner's desire replaced by the one it carries. */
const withDesired = (owners: KernelContext['owners'], event: Extract<KernelEvent, { type: 'DESIRED' }>): KernelContext['owners'] => ({
  ...owners,
  [event.owner]: { scope: event.scope, state: event.state, cause: event.cause, replyTo: event.replyTo },
});

export const kernelMachine = setup({
  types: {
    context: {} as KernelContext,
    events: {} as KernelEvent,
  },
  actors: {
    reconcile: fromPromise<ReconcileOutput, ReconcileInput>(async () => {
      throw new Error('reconcile not provided');
    }),
    observer: fromCallback<ObserverEvent, Record<string, never>>(() => () => {}),
    /** Provided by the shell: sends `RECONCILE_FULL` on a slow timer (none by default). */
    fullTimer: fromCallback<{ type: 'never' }, Record<string, never>>(() => () => {}),
  },
  actions: {
    /** Provided by the shell: publish these events. */
    emit: (_, _params: KernelEmission[]) => {},
    askFull: assign({ fullDue: true, dirty: true }),
    /** The owner's new cause and reply address, its desired state being the one the last round reached. */
    rememberReached: assign(({ context, event }) => (event.type === 'DESIRED' ? { owners: withDesired(context.owners, event) } : {})),
    remember: assign(({ context, event }) => (event.type === 'DESIRED' ? { owners: withDesired(context.owners, event), dirty: true } : {})),
    // One round's bookkeeping: stats, events, each owner told what its scope reached, observer told the devices.
    reached: enqueueActions(({ context, enqueue }, out: ReconcileOutput) => {
      const applied = out.outcomes.reduce((n, o) => n + o.applied.length, 0);
      const failures = out.outcomes.flatMap((o) => o.failures);
      enqueue.assign({
        stats: {
          rounds: context.stats.rounds + 1,
          mutations: context.stats.mutations + applied,
          failures: context.stats.failures + failures.length,
          lastError: failures.length > 0 ? failures[failures.length - 1]!.message : context.stats.lastError,
          failing: nextFailing(context.stats.failing, out, describeOp),
          failedRounds: failures.length > 0 ? context.stats.failedRounds + 1 : 0,
        },
      });
      for (const o of out.outcomes) {
        const owner = context.owners[o.owner];
        if (owner) enqueue.sendTo(owner.replyTo, { type: 'KERNEL_REACHED', actual: o.reached, nowMs: out.nowMs, failures: o.failures } satisfies KernelNotice);
      }
      enqueue.sendTo('observer', { type: 'DEVICES', scopes: out.outcomes.map((o) => o.reached.devices) } satisfies ObserverEvent);
    }),
    tellOwners: enqueueActions(({ context, enqueue }, notice: KernelNotice) => {
      for (const o of Object.values(context.owners)) enqueue.sendTo(o.replyTo, notice);
    }),
  },
  delays: {
    retry: ({ context }) => retryDelayMs(context.stats.failedRounds),
  },
  guards: {
    /**
     * Idle, so the last round reached every desired state it holds without a failure: a DESIRED with
     * the same state object (owners hand back the very same one when nothing of theirs changed) and
     * the same scope needs no round.
     */
    alreadyReached: ({ context, event }) => {
      if (event.type !== 'DESIRED') return false;
      const known = context.owners[event.owner];
      return known !== undefined && known.state === event.state && known.replyTo === event.replyTo && sameScope(known.scope, event.scope);
    },
  },
}).createMachine({
  id: 'kernel',
  context: () => ({ owners: {}, dirty: false, fullDue: false, fullRound: false, stats: initialKernelStats() }),
  invoke: [
    { id: 'observer', src: 'observer', input: {} },
    { id: 'fullTimer', src: 'fullTimer', input: {} },
  ],
  on: {
    RECONCILE_FULL: { actions: 'askFull' },
    OBSERVED: { actions: { type: 'tellOwners', params: ({ event }) => ({ type: 'KERNEL_OBSERVED', observations: event.observations, nowMs: event.nowMs }) } },
  },
  initial: 'idle',
  states: {
    idle: {
      always: { guard: ({ context }) => context.dirty, target: 'settling' },
      on: {
        DESIRED: [
          // What the last round reached already (a topology event that changes nothing of this owner's,
          // a session entering elsewhere): no round. The next one, or the slow full round, takes it.
          { guard: 'alreadyReached', actions: 'rememberReached' },
          { actions: 'remember', target: 'settling' },
        ],
        RECONCILE_FULL: { actions: 'askFull', target: 'settling' },
      },
    },
    // The owners answer one relay event together (a view reaches the mesh and the clients owner at
    // once): what they send before the next turn of the event loop goes into one round.
    settling: {
      on: { DESIRED: { actions: 'remember' } },
      after: { 0: 'reconciling' },
    },
    reconciling: {
      // Entry actions run before the invoked round takes its input: a full round asked for meanwhile is the next one.
      entry: [
        assign(({ context }) => ({ dirty: false, fullRound: context.fullDue, fullDue: false })),
        { type: 'tellOwners', params: { type: 'KERNEL_APPLYING' } },
      ],
      on: { DESIRED: { actions: 'remember' } },
      invoke: {
        src: 'reconcile',
        input: ({ context }) => ({
          owners: Object.entries(context.owners).map(([owner, o]) => ({ owner, scope: o.scope, state: o.state, cause: o.cause })),
          full: context.fullRound,
        }),
        onDone: [
          {
            guard: ({ event }) => event.output.outcomes.some((o) => o.failures.length > 0),
            target: 'backoff',
            actions: [
              { type: 'reached', params: ({ event }) => event.output },
              { type: 'emit', params: ({ context, event }) => roundEmissions(event.output, context.stats.rounds) },
            ],
          },
          {
            target: 'idle',
            actions: [
              { type: 'reached', params: ({ event }) => event.output },
              { type: 'emit', params: ({ context, event }) => roundEmissions(event.output, context.stats.rounds) },
            ],
          },
        ],
        onError: {
          target: 'backoff',
          actions: assign({
            // What the round did is unknown: the retry starts from the whole scope.
            fullDue: true,
            stats: ({ context, event }) => ({
              ...context.stats,
              rounds: context.stats.rounds + 1,
              failures: context.stats.failures + 1,
              lastError: String(event.error),
              failedRounds: context.stats.failedRounds + 1,
            }),
          }),
        },
      },
    },
    backoff: {
      on: { DESIRED: { actions: 'remember' } },
      after: { retry: 'reconciling' },
    },
  },
});
