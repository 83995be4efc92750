-- relay-core control plane: limits of the client API (docs/control-plane.md, "Limits"). Runs unchanged
-- on PostgreSQL 15+ and on PGlite.

-- The limits, in the settings row.
--   max_sessions_per_user      open sessions one user (JWT `sub`) may hold at once; the service role has no cap
--   allow_anonymous_users      accept Supabase anonymous users (`is_anonymous: true`) on connect-client / switch-exit
--   rate_limit_window_seconds  the window of the rate limits below
--   connect_rate_limit         connect-client calls per user per window
--   switch_rate_limit          switch-exit calls per user per window
--   register_rate_limit        register-server calls per relay (relay token) per window
-- A rate limit is a token bucket: it holds up to <limit> calls and refills at <limit> per window.
alter table relaynet.settings
  add column max_sessions_per_user integer not null default 5,
  add column allow_anonymous_users boolean not null default false,
  add column rate_limit_window_seconds integer not null default 60,
  add column connect_rate_limit integer not null default 10,
  add column switch_rate_limit integer not null default 30,
  add column register_rate_limit integer not null default 10,
  add constraint settings_max_sessions_per_user check (max_sessions_per_user between 1 and 1000000),
  add constraint settings_rate_limit_window check (rate_limit_window_seconds between 1 and 86400),
  add constraint settings_rate_limits check (
    connect_rate_limit between 1 and 1000000 and switch_rate_limit between 1 and 1000000 and register_rate_limit between 1 and 1000000
  );

-- One token bucket per subject (`user:<sub>`, `relay:<relay id>`) and action. tokens is what the
-- bucket held at updated_at; it refills with time (supabase/functions/_shared/limit-store.ts takes a
-- token in one statement). A row untouched for a window is full again, the same as no row: the
-- heartbeat sweep deletes those.
create table relaynet.rate_limits (
  subject text not null check (char_length(subject) between 1 and 300),
  action text not null check (action in ('connect', 'switch', 'register')),
  tokens double precision not null check (tokens >= 0),
  updated_at timestamptz not null,
  primary key (subject, action)
);
create index rate_limits_updated on relaynet.rate_limits (updated_at);

-- The sessions of an owner that are open (the per-user cap counts them).
create index client_sessions_open_owner on relaynet.client_sessions (owner) where status = 'open';
