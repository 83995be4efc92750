-- A relay silent for too long leaves the topology (issue 15): relay_expire_seconds is how long a relay
-- may go unheard (last_seen) before a heartbeat's sweep expires it (RelayLeft, reason "expired": the
-- sessions entering at it are closed, its addresses freed). It comes back by registering again (a relay
-- does so by itself when its heartbeat is answered 404). null: 30 x the heartbeat interval of the
-- functions (RELAYNET_HEARTBEAT_SECONDS), at least 5 minutes. It should exceed the liveness
-- window (relay_liveness_seconds), so a relay is shown down before it is expired.
alter table relaynet.settings
  add column relay_expire_seconds integer,
  add constraint settings_relay_expire check (relay_expire_seconds is null or relay_expire_seconds between 1 and 2592000);

-- The sweep looks for silent active relays on every heartbeat that finds some due.
create index relays_active_last_seen on relaynet.relays (last_seen) where status = 'active';
