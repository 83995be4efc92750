-- Capacity measurements of Proof-of-Bandwidth (issue 17; docs/proof-of-bandwidth.md, "Measuring").
-- schedule-measurement (the operator) records a measurement and appends MeasurementScheduled; for its
-- seconds the measurers send traffic over their mesh links to the target's echo service, and each party
-- hands in its signed counts (submit-measurement). Once every party has reported, or the grace after the
-- end has passed, the control plane concludes it: the capacity (pob_capacity: the line rate, bytes per
-- second each way) and RelayMeasured.
alter table relaynet.settings
  -- The mesh links' MTU: what turns the measured goodput into the line rate a link's cap counts.
  add column pob_mesh_mtu integer not null default 1420,
  add constraint settings_pob_mesh_mtu check (pob_mesh_mtu between 576 and 9000);

create table relaynet.pob_measurements (
  id uuid primary key,
  target_id text not null references relaynet.relays (id) on delete cascade,
  measurer_ids text[] not null check (cardinality(measurer_ids) between 1 and 8),
  starts_at timestamptz not null,
  seconds integer not null check (seconds between 2 and 120),
  streams integer not null check (streams between 1 and 8),
  r double precision not null check (r >= 0 and r <= 0.5),
  state text not null default 'scheduled' check (state in ('scheduled', 'measured', 'rejected', 'incomplete')),
  capacity bigint check (capacity >= 0),
  line_rate bigint check (line_rate >= 0),
  reason text check (length(reason) <= 512),
  scheduled_at timestamptz not null default clock_timestamp(),
  concluded_at timestamptz
);

-- The open ones, by when they end (the conclusion of overdue ones).
create index pob_measurements_open on relaynet.pob_measurements (starts_at) where state = 'scheduled';
create index pob_measurements_target on relaynet.pob_measurements (target_id, scheduled_at desc);

create table relaynet.pob_measurement_reports (
  measurement_id uuid not null references relaynet.pob_measurements on delete cascade,
  relay_id text not null,
  role text not null check (role in ('measurer', 'target')),
  report jsonb not null,
  signature text not null check (length(signature) <= 200),
  received_at timestamptz not null default clock_timestamp(),
  primary key (measurement_id, relay_id)
);

-- The topology events of measurements and settlements.
alter table relaynet.topology_events drop constraint topology_events_type_check;
alter table relaynet.topology_events add constraint topology_events_type_check check (type in (
  'RelayAdmitted', 'RelayLeft', 'RelayKeyRotated', 'RelayEndpointChanged', 'RelayCapabilitiesChanged',
  'ClientSessionOpened', 'ClientSessionExitChanged', 'ClientSessionClosed',
  'MeasurementScheduled', 'RelayMeasured', 'EpochSettled', 'ReceiptDisputed'));
