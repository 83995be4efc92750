import { escapeForTerminal } from '../lib/terminal.ts';
import type { LogEntry } from '../events/log.ts';
import type { RelayEvent } from '../contract/relay.events.ts';
import { assertNever } from '../contract/topology.events.ts';
import { describeOp } from '../kernel/execute.ts';
import type { KernelOp } from '../kernel/host-state.ts';

/**
 * The timeline view of replay: the state changes of one link (`peer`) or one client session
 * (`session`), or of all of them, with their times and causes, and the kernel rounds that changed
 * that link's device or that session's peer, each with the event that caused it. Pure.
 */

export interface TimelineSelector {
  relayId: string;
  /** A peer relay id: that link only. */
  link?: string;
  /** A session id: that session only. */
  session?: string;
}

export interface TimelineItem {
  seq: number;
  time: string;
  /** `link relay-2`, `session <id>` or `kernel mesh`/`kernel clients`. */
  subject: string;
  /** The state entered, or the operations of a kernel round. */
  what: string;
  /** Why: the actor's reason, or for a kernel round the event that caused it. */
  cause: string;
}

/** The events a kernel round can name as its cause, described in a few words. */
function describeCause(ev: RelayEvent): string | null {
  switch (ev.type) {
    case 'TopologySeeded':
      return `TopologySeeded revision ${ev.data.revision} (${ev.data.reason})`;
    case 'TopologyEventApplied':
      return `${ev.data.eventType} (revision ${ev.data.revision})`;
    case 'RelayDraining':
      return `RelayDraining (${ev.data.signal})`;
    case 'WireGuardKeyStaged':
      return `WireGuard key staged (${ev.data.publicKey.slice(0, 8)}…, was ${ev.data.previousPublicKey.slice(0, 8)}…)`;
    case 'ClientSessionStateChanged':
      return ev.data.state === 'expired' ? `session ${ev.data.sessionId} expired` : null;
    case 'PeerEndpointResolved':
      return `${ev.data.peerId}'s endpoint ${ev.data.host} ${ev.data.address ? `resolved to ${ev.data.address}` : `unresolved (${ev.data.error})`}`;
    // Events that cause no kernel round.
    case 'RelayStarted':
    case 'RelayRegistered':
    case 'TopologyResyncRequested':
    case 'TopologyEventRejected':
    case 'TopologyKeyRefused':
    case 'RelayEventsDropped':
    case 'ReceiptsSigned':
    case 'ReceiptsRefused':
    case 'MeasurementReported':
    case 'RelayStopped':
    case 'LinkStateChanged':
    case 'ClientSessionSteered':
    case 'KernelReconciled':
    case 'KernelOperationFailed':
      return null;
    default:
      return assertNever(ev);
  }
}

const MAX_CAUSES = 100_000;

export class TimelineBuilder {
  private readonly sel: TimelineSelector;
  private readonly items: TimelineItem[] = [];
  private readonly causes = new Map<string, string>();
  /** The link's device(s) and the session's key and address, learned from their events. */
  private readonly devices = new Set<string>();
  private readonly sessionKeys = new Set<string>();

  constructor(sel: TimelineSelector) {
    this.sel = sel;
  }

  add(e: LogEntry): void {
    if (!e.ok) return;
    const ev = e.event as RelayEvent;
    if (ev.source !== this.sel.relayId) return;
    const cause = describeCause(ev);
    if (cause) {
      this.causes.set(ev.id, cause);
      if (this.causes.size > MAX_CAUSES) this.causes.delete(this.causes.keys().next().value!);
    }
    const at = { seq: e.seq, time: e.time };
    switch (ev.type) {
      case 'LinkStateChanged':
        if (this.sel.session || (this.sel.link && ev.data.peerId !== this.sel.link)) return;
        this.devices.add(ev.data.device);
        this.items.push({ ...at, subject: `link ${ev.data.peerId}`, what: ev.data.state, cause: ev.data.reason });
        return;
      case 'PeerEndpointResolved':
        if (this.sel.session || (this.sel.link && ev.data.peerId !== this.sel.link)) return;
        this.items.push({
          ...at,
          subject: `link ${ev.data.peerId}`,
          what: ev.data.address ? `endpoint ${ev.data.host} is ${ev.data.address}` : `endpoint ${ev.data.host} unresolved`,
          cause: ev.data.error ?? 'name resolved',
        });
        return;
      case 'ClientSessionStateChanged':
        if (this.sel.link || (this.sel.session && ev.data.sessionId !== this.sel.session)) return;
        this.sessionKeys.add(ev.data.publicKey);
        this.sessionKeys.add(`${ev.data.address}/32`);
        this.items.push({ ...at, subject: `session ${ev.data.sessionId}`, what: `${ev.data.state} (exit ${ev.data.exitId})`, cause: ev.data.reason });
        return;
      case 'ClientSessionSteered':
        if (this.sel.link || (this.sel.session && ev.data.sessionId !== this.sel.session)) return;
        this.items.push({
          ...at,
          subject: `session ${ev.data.sessionId}`,
          what: `steered to ${ev.data.exitId}`,
          cause: `entry programmed exit ${ev.data.exitId}${ev.data.previousExitId ? ` (was ${ev.data.previousExitId})` : ''}`,
        });
        return;
      case 'KernelReconciled': {
        const ops = (ev.data.ops as unknown as KernelOp[]).filter((op) => this.concerns(op));
        if (ops.length === 0 && (this.sel.link || this.sel.session)) return;
        const shown = ops.length ? ops : (ev.data.ops as unknown as KernelOp[]);
        const caused = ev.causationId ? (this.causes.get(ev.causationId) ?? `event ${ev.causationId}`) : 'no causation recorded';
        this.items.push({
          ...at,
          subject: `kernel ${ev.data.owner}`,
          what: `${shown.length} op${shown.length === 1 ? '' : 's'}: ${shown.map(describeOp).join('; ')}${ev.data.failed ? ' (round failed)' : ''}`,
          cause: caused,
        });
        return;
      }
      case 'RelayStarted':
        if (this.sel.link || this.sel.session) return;
        this.items.push({ ...at, subject: 'relay', what: 'started', cause: ev.data.software ?? 'relay-core' });
        return;
      case 'RelayStopped':
        if (this.sel.link || this.sel.session) return;
        this.items.push({ ...at, subject: 'relay', what: 'stopped', cause: ev.data.deregistered ? 'deregistered' : 'not deregistered' });
        return;
      // Not part of a link's or session's story (the causes above name some of them).
      case 'RelayRegistered':
      case 'TopologySeeded':
      case 'TopologyResyncRequested':
      case 'TopologyEventApplied':
      case 'TopologyEventRejected':
      case 'TopologyKeyRefused':
      case 'RelayDraining':
      case 'KernelOperationFailed':
      case 'ReceiptsSigned':
      case 'ReceiptsRefused':
      case 'WireGuardKeyStaged':
      case 'MeasurementReported':
        return;
      case 'RelayEventsDropped':
        // The log has a hole here: say so in every story.
        this.items.push({
          ...at,
          subject: 'relay',
          what: `${ev.data.count} events dropped while the bus was away`,
          cause: `${ev.data.since} to ${ev.data.until}`,
        });
        return;
      default:
        assertNever(ev);
    }
  }

  /** Whether a kernel operation touches the selected link or session. */
  private concerns(op: KernelOp): boolean {
    if (this.sel.link) {
      const dev = 'dev' in op ? op.dev : 'route' in op ? op.route.dev : null;
      return dev !== null && this.devices.has(dev);
    }
    if (this.sel.session) {
      if (op.op === 'wg.peer.set') return this.sessionKeys.has(op.peer.publicKey);
      if (op.op === 'wg.peer.del') return this.sessionKeys.has(op.publicKey);
      if (op.op === 'rule.add' || op.op === 'rule.del') return op.rule.from !== null && this.sessionKeys.has(op.rule.from);
      return false;
    }
    return true;
  }

  result(): TimelineItem[] {
    return [...this.items];
  }
}

/** One line per item: time, sequence, subject, what, and why. */
export function formatTimeline(items: readonly TimelineItem[]): string {
  if (items.length === 0) return '(no state changes in the log for this selection)\n';
  const w = Math.max(...items.map((i) => i.subject.length));
  return items.map((i) => `${escapeForTerminal(`${i.time}  #${String(i.seq).padEnd(6)} ${i.subject.padEnd(w)}  ${i.what}  <- ${i.cause}`)}\n`).join('');
}
