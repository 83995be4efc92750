-- Community relays (issue 17; docs/proof-of-bandwidth.md, "Community relays"). An operator (a user whose
-- token carries app_metadata.relaynet_role = "operator") enrolls a relay with enroll-relay and gets a
-- relay token for it. The relay's standing: its class (core: ours; community: an operator's) and its
-- state. A community relay starts in probation: it joins the mesh and is measured, but carries no
-- client traffic. Its first concluded measurement makes it active (a capacity of at least
-- settings.community_min_capacity) or rejected; the service role may suspend a relay and resume it.
-- A relay without a row here is a core relay, active.
create table relaynet.relay_standing (
  relay_id text primary key check (relay_id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  class text not null check (class in ('core', 'community')),
  -- The enrolling user's id (the token's sub); community relays only.
  operator_id text check (char_length(operator_id) between 1 and 255),
  state text not null check (state in ('probation', 'active', 'rejected', 'suspended')),
  reason text check (char_length(reason) <= 512),
  enrolled_at timestamptz not null default clock_timestamp(),
  changed_at timestamptz not null default clock_timestamp(),
  constraint relay_standing_operator check ((class = 'community') = (operator_id is not null))
);
create index relay_standing_operator_idx on relaynet.relay_standing (operator_id) where operator_id is not null;

alter table relaynet.settings
  -- The least capacity (bytes per second, as a line rate) that makes a community relay active: 10 Mbit/s.
  add column community_min_capacity bigint not null default 1250000,
  -- How many relays one operator may enroll.
  add column community_max_relays integer not null default 16,
  add constraint settings_community_min_capacity check (community_min_capacity >= 0),
  add constraint settings_community_max_relays check (community_max_relays between 0 and 100000);

alter table relaynet.topology_events drop constraint topology_events_type_check;
alter table relaynet.topology_events add constraint topology_events_type_check check (type in (
  'RelayAdmitted', 'RelayLeft', 'RelayKeyRotated', 'RelayEndpointChanged', 'RelayCapabilitiesChanged',
  'ClientSessionOpened', 'ClientSessionExitChanged', 'ClientSessionClosed',
  'MeasurementScheduled', 'RelayMeasured', 'EpochSettled', 'ReceiptDisputed', 'RelayStateChanged'));

-- A session may have community relays on its path only when it asked for it (connect-client's
-- `community`); switch-exit keeps to what it asked.
alter table relaynet.client_sessions add column community boolean not null default false;
