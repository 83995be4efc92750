-- The control plane's epoch (docs/control-plane.md, "Epochs"): a random id of this database's
-- topology history. Every topology event, registration answer and heartbeat answer carries it. A
-- database restored from a backup rolls revisions back; the topology publisher notices that the bus
-- holds a revision of this epoch that the outbox does not (src/control-plane/topology-publisher.ts)
-- and starts a new epoch, so relays resync instead of taking the restored history's new revisions
-- for ones they already have.
alter table relaynet.topology
  add column epoch uuid not null default gen_random_uuid(),
  add column epoch_started_at timestamptz not null default clock_timestamp(),
  -- 'created': with the database; 'restored': the publisher found the bus ahead of the outbox.
  add column epoch_reason text not null default 'created' check (epoch_reason in ('created', 'restored'));

-- Every epoch this database has had, current one included: the publisher tells a bus that is merely
-- behind the current epoch (its last message is of an earlier epoch of this database) from a bus that
-- is ahead of a restored database.
create table relaynet.epochs (
  epoch uuid primary key,
  started_at timestamptz not null default clock_timestamp(),
  reason text not null check (reason in ('created', 'restored')),
  -- The revision the epoch started at (its snapshot's; its first event has the next one).
  revision bigint not null check (revision >= 0)
);
insert into relaynet.epochs (epoch, started_at, reason, revision)
  select epoch, epoch_started_at, epoch_reason, revision from relaynet.topology;
