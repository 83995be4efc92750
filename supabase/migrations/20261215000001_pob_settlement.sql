-- Settling Proof-of-Bandwidth epochs (issue 17; docs/proof-of-bandwidth.md). settle-epoch computes, from
-- the receipts both ends of each link handed in, what each relay is credited with (capped by its measured
-- capacity) and the disputes, and keeps them here; settling an epoch again replaces its settlement (late
-- receipts count). pob_capacity holds each relay's measured capacity: bytes per second each way.
create table relaynet.pob_capacity (
  relay_id text primary key references relaynet.relays (id) on delete cascade,
  bytes_per_second bigint not null check (bytes_per_second >= 0),
  measured_at timestamptz not null default clock_timestamp()
);

create table relaynet.pob_settlements (
  epoch bigint primary key check (epoch >= 0),
  epoch_seconds integer not null check (epoch_seconds > 0),
  relays integer not null,
  disputes integer not null,
  settled_at timestamptz not null default clock_timestamp()
);

create table relaynet.pob_credits (
  epoch bigint not null references relaynet.pob_settlements on delete cascade,
  relay_id text not null,
  carried bigint not null check (carried >= 0),
  cap bigint check (cap >= 0),
  credit bigint not null check (credit >= 0),
  primary key (epoch, relay_id)
);

create table relaynet.pob_disputes (
  epoch bigint not null references relaynet.pob_settlements on delete cascade,
  seq integer not null,
  kind text not null check (kind in ('disagree', 'unmatched', 'over-capacity')),
  detail jsonb not null,
  primary key (epoch, seq)
);
