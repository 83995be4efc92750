-- Banned relays (docs/security.md, "Bans"): `relay-core relay ban` (the ban-relay function, service
-- role) records one; every function refuses a banned relay id (403 banned) whoever calls, so its
-- tokens stop working and it cannot register again; the control plane revokes its NATS nkey (the
-- account JWT's revocations) while the row exists. `relay unban` deletes it.
create table relaynet.relay_bans (
  relay_id text primary key check (relay_id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  reason text not null default '' check (length(reason) <= 200),
  banned_at timestamptz not null default clock_timestamp()
);
