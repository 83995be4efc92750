import type { Command } from 'commander';
import { busOpts, jsonOpt, opt, simOpt, withOptions } from './options.ts';
import { subcommands, type Leaf } from './program.ts';
import { verifyOpts } from './verify-options.ts';

/** The commands that read the event streams: events tail, events export, replay. */

const BUS = 'Bus (a deployment, or a running sim):';

/** `--nats-url`, `--nats-token` or `--sim [DIR]`, under their own heading. */
const readerOpts = (simDescription: string) => [...busOpts(), simOpt(simDescription)].map((o) => o.helpGroup(BUS));

/** Which events: `--relay`, `--type`, `--since`, `--stream`. */
const filterOpts = () => [
  opt('--relay <ID>', "only this relay's own events and the topology events addressed to it"),
  opt('--type <PATTERN>', 'event types, * and ? as wildcards, comma-separated (Link*,Kernel*)'),
  opt('--since <X>', "a stream sequence (with one --stream), a duration back (90s, 15m, 2h, 7d), an ISO time, or 'all'"),
  opt('--stream <S>', 'relay, topology or all', { default: 'all' }),
];

const SIM_READ = "read a running sim's NATS (default ./.state/sim): runs this command again inside the sim's network namespace (needs root)";

export function declareEvents(program: Command, leaf: Leaf): void {
  const events = subcommands(
    program,
    'events',
    'tail the event streams live, or export them to a file (JSON lines)',
    `The event streams of a relay network, as any NATS client can read them (subjects and schemas:
docs/events.md, docs/schemas/). Nothing is left on the server: each reader is an ordered, ephemeral
consumer. Every subcommand reads NATS given by --nats-url [--nats-token], or a running
'relay-core sim' with --sim [DIR].

Signatures are checked: a topology message must be signed with the control plane's key
(--topology-key, or the sim's), a relay's event with the identity key its RelayAdmitted announces in
the topology stream (or one pinned with --relay-key ID=KEY). Unsigned, forged and invalid messages are
shown as rejected, with their sequence and reason, and never as events. --no-verify turns the checks off.
Text from the stored messages is printed with control characters escaped.`,
  );
  const tail = events
    .command('tail')
    .summary('print events as they are stored')
    .description(`Print events as they are stored, one line each (coloured on a terminal; NO_COLOR turns it off), or
with --json one JSON object per line: {stream, seq, subject, time, event} or, for a rejected message
(unsigned, bad-signature, unknown-key, malformed, schema, subject-mismatch, ...),
{stream, seq, subject, time, skipped: {reason, detail}}; as text, 'REJECTED <reason>'. Runs until
Ctrl-C (exit 0). Without --since only new events are shown.`);
  withOptions(tail, ...filterOpts(), jsonOpt('JSON lines instead of text'), ...readerOpts(SIM_READ), ...verifyOpts());
  leaf(tail, 'events tail');
  const exp = events
    .command('export')
    .summary('write what is stored as JSON lines')
    .description(`Write what is stored now (from --since, default all) as JSON lines with the message bytes kept as
stored, corrupt ones included, to be read elsewhere or later. A rejected message (unsigned, forged,
invalid) is kept as stored with a 'rejected' mark and reported to stderr with its sequence and reason;
readers of the file check every line again and never trust the mark. Ends when it has caught up;
prints the count to stderr. 'relay-core replay --file' reads such a file: it needs the whole topology stream, so
export without --relay and --type for it.`);
  withOptions(exp, ...filterOpts(), opt('--out <FILE>', 'write here, mode 0600, instead of stdout'), ...readerOpts(SIM_READ), ...verifyOpts());
  leaf(exp, 'events export');
}

export function declareReplay(program: Command, leaf: Leaf): void {
  const cmd = program
    .command('replay')
    .summary("rebuild a relay's actors and programmed host from its event log; timeline; drift")
    .usage('--relay ID [--to SEQ|TIME] [--json] [--timeline [--link PEER | --session ID]] [--diff [--netns NS]] [source]')
    .description(`Rebuilds what relay ID believed and did, from its own event stream and the topology stream: the state
of every actor (relay, topology view, links, client sessions, kernel) and the host the kernel actor
programmed, rendered by the in-memory kernel. The view is folded from the topology stream with the
relay's own functions; every recorded kernel round is planned again from the desired state its
causation id names and compared with the operations recorded. Replaying the same log always gives
the same result. Messages that are not valid, verified events (unsigned, forged, corrupt) are reported
with their sequence and reason and skipped; of two copies of a topology revision the first verified
one counts, so a forged copy never replaces the genuine one.

Source: --file FILE (an 'events export' or 'replay --save' file), --nats-url URL[,URL] [--nats-token
TOKEN] [--save FILE], or --sim [DIR] [--save FILE] (a running 'relay-core sim').`);
  withOptions(
    cmd,
    opt('--relay <ID>', 'the relay to replay (required)'),
    opt('--to <X>', 'stop after relay-stream sequence X, or at the first event after ISO time X'),
    jsonOpt('the result as one JSON object (with --timeline: one JSON object per line)'),
    opt('--rounds', 'also every kernel round: its cause, the operations recorded and those derived'),
    opt('--timeline', 'the state changes of links and sessions with times and causes, and the kernel rounds that touched them with the event behind each'),
    opt('--link <PEER>', '(timeline) only the link to relay PEER'),
    opt('--session <ID>', '(timeline) only this client session'),
    opt(
      '--diff',
      "compare the replayed host with the host as it is now (this machine, or the relay's namespace with --netns or --sim): exit 0 if equal, 1 if they drift",
    ),
    opt('--netns <NS>', '(diff) read the live host inside network namespace NS'),
    opt('--file <FILE>', 'read an exported log instead of NATS (topology lines first, or anywhere)').helpGroup(BUS),
    opt('--save <FILE>', 'also write what was read from NATS to FILE (mode 0600) for a later --file').helpGroup(BUS),
    ...readerOpts(`${SIM_READ}; with --diff, the live host is the relay's namespace`),
    ...verifyOpts(),
  );
  leaf(cmd, 'replay');
}

export function declareDashboard(program: Command, leaf: Leaf): void {
  const cmd = program
    .command('dashboard')
    .summary('a live web page of the mesh for operators, fed from the event streams')
    .description(`Serve a web page that shows the network live, folded from the event streams (docs/operations.md,
"Dashboard"): the relay x relay matrix of link states with handshake ages, as each relay reports its
links; each relay's state and topology revision; the events as they arrive, with filters; and for a
selected relay its latest kernel rounds, each with a link that replays the relay to that round
(relay-core replay --to SEQ). The topology stream is read from its start, the relay stream from
--since. Signatures are checked as by 'events tail'; rejected messages are counted and shown.
Read only; runs until Ctrl-C (exit 0).`);
  withOptions(
    cmd,
    opt('--listen <[ADDR:]PORT>', 'where the page is served (ADDR 127.0.0.1 when not given)', { default: '127.0.0.1:8090' }),
    opt('--since <X>', "the relay stream from: a duration back (90s, 15m, 2h), an ISO time, or 'all'", { default: '1h' }),
    opt('--socket <PATH>', 'serve on this unix socket instead of --listen (how --sim serves from inside the sim)'),
    ...readerOpts(
      "read a running sim's NATS (default ./.state/sim): the dashboard runs inside the sim's network namespace (needs root) and is served here on --listen",
    ),
    ...verifyOpts(),
  );
  cmd.addHelpText(
    'after',
    `
Examples:
  relay-core dashboard --sim                       # a running sim, at http://127.0.0.1:8090/
  relay-core dashboard --nats-url nats://203.0.113.10:4222 --nats-creds cp/bus/reader.creds --topology-key KEY`,
  );
  leaf(cmd, 'dashboard');
}
