-- relay-core control plane: client sessions (docs/control-plane.md, "Client sessions"; docs/clients.md).
-- A stock WireGuard client (its public key) enters the network at an entry relay, with an address from
-- that relay's client pool, and leaves it at the exit relay it chose. Sessions ride the topology log:
-- ClientSessionOpened / ClientSessionExitChanged / ClientSessionClosed, signed, in the same outbox and
-- revision sequence as the relay events. Runs unchanged on PostgreSQL 15+ and on PGlite.

-- What clients are handed, and the session timing.
--   client_mtu                 MTU of the client's tunnel (at most the relays' mesh MTU; default 1420)
--   client_dns                 DNS servers in the client's configuration (may be empty)
--   client_keepalive_seconds   PersistentKeepalive of the client's peer (0: off)
--   session_ttl_seconds        lifetime of a session when the caller gives none
--   max_session_ttl_seconds    the longest lifetime a caller may ask for
--   confirm_timeout_seconds    how long connect-client / switch-exit wait for the entry's confirmation
--   relay_liveness_seconds     a relay is live when heard from (last_seen) within this many seconds;
--                              null: 3 x the heartbeat interval of the functions (RELAYNET_HEARTBEAT_SECONDS)
alter table relaynet.settings
  add column client_mtu integer not null default 1420,
  add column client_dns text[] not null default '{9.9.9.9}',
  add column client_keepalive_seconds integer not null default 25,
  add column session_ttl_seconds integer not null default 86400,
  add column max_session_ttl_seconds integer not null default 2592000,
  add column confirm_timeout_seconds integer not null default 20,
  add column relay_liveness_seconds integer,
  add constraint settings_client_mtu check (client_mtu between 576 and 9000),
  -- Every entry an address (the cast fails on anything else), at most 8 of them.
  add constraint settings_client_dns check (cardinality(client_dns) <= 8 and array_position(client_dns, null) is null and client_dns::inet[] is not null),
  add constraint settings_client_keepalive check (client_keepalive_seconds between 0 and 3600),
  add constraint settings_session_ttl check (session_ttl_seconds between 60 and max_session_ttl_seconds),
  add constraint settings_max_session_ttl check (max_session_ttl_seconds between 60 and 315360000),
  add constraint settings_confirm_timeout check (confirm_timeout_seconds between 1 and 120),
  add constraint settings_relay_liveness check (relay_liveness_seconds is null or relay_liveness_seconds between 1 and 86400);

-- One row per session, open or closed (closed rows are kept as history). owner is the user's JWT
-- `sub` (null when the service role opened it). address is the client's /32 from the entry's pool;
-- confirmed_exit_id is the exit the entry relay last confirmed (client-ready) and equals exit_id once
-- the entry steers the session to its current exit.
create table relaynet.client_sessions (
  id uuid primary key,
  owner text check (owner is null or char_length(owner) between 1 and 255),
  entry_id text not null references relaynet.relays (id),
  exit_id text not null references relaynet.relays (id),
  public_key text not null check (public_key ~ '^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$'),
  address inet not null check (family(address) = 4 and masklen(address) = 32),
  status text not null check (status in ('open', 'closed')),
  opened_at timestamptz not null,
  expires_at timestamptz not null,
  confirmed_exit_id text,
  confirmed_at timestamptz,
  closed_at timestamptz,
  close_reason text check (close_reason in ('disconnected', 'expired', 'entry-left', 'not-confirmed', 'removed')),
  -- One-hop sessions (entry = exit) are not supported.
  constraint client_sessions_two_hops check (entry_id <> exit_id),
  constraint client_sessions_lifetime check (expires_at > opened_at),
  constraint client_sessions_closed check ((status = 'closed') = (closed_at is not null) and (status = 'closed') = (close_reason is not null)),
  constraint client_sessions_closed_after check (closed_at is null or closed_at >= opened_at),
  constraint client_sessions_confirmed check ((confirmed_exit_id is null) = (confirmed_at is null))
);
-- WireGuard tells peers apart by key: one open session per client key.
create unique index client_sessions_open_public_key on relaynet.client_sessions (public_key) where status = 'open';
-- Never allocated twice (safety net under the allocation, which runs with the topology locked).
create unique index client_sessions_open_address on relaynet.client_sessions (address) where status = 'open';
create index client_sessions_open_entry on relaynet.client_sessions (entry_id) where status = 'open';
create index client_sessions_open_expiry on relaynet.client_sessions (expires_at) where status = 'open';
create index client_sessions_owner on relaynet.client_sessions (owner, opened_at);
create index client_sessions_opened on relaynet.client_sessions (opened_at, id);

-- The outbox carries the session events too.
alter table relaynet.topology_events drop constraint topology_events_type_check;
alter table relaynet.topology_events add constraint topology_events_type_check check (type in (
  'RelayAdmitted', 'RelayLeft', 'RelayKeyRotated', 'RelayEndpointChanged',
  'ClientSessionOpened', 'ClientSessionExitChanged', 'ClientSessionClosed'
));
