-- relay-core control plane (docs/control-plane.md, "Tables"): the relay registry, the address plan,
-- the topology revision and the signed topology-event outbox, in schema relaynet.
-- Runs unchanged on PostgreSQL 15+ (Supabase) and on PGlite. Applied once, in one transaction, by
-- `supabase db push` or by relay-core's own runner (src/control-plane/migrate.ts).
--
-- The schema is not exposed through PostgREST (only the Edge Functions, connecting as the database
-- owner through SUPABASE_DB_URL, use it), so anon/authenticated get no privileges on it.

create schema if not exists relaynet;

-- Address plan, one row. Mesh slot n >= 1 is network(mesh_cidr) + n (never the network or broadcast
-- address); client pool slot k >= 0 is the k-th /client_pool_prefix block of client_supernet. The
-- lowest free slot is allocated (supabase/functions/_shared/addresses.ts) under the topology lock.
create table relaynet.settings (
  id boolean primary key default true check (id),
  mesh_cidr cidr not null default '100.64.0.0/16',
  client_supernet cidr not null default '100.96.0.0/11',
  client_pool_prefix integer not null default 22,
  constraint settings_ipv4 check (family(mesh_cidr) = 4 and family(client_supernet) = 4),
  constraint settings_mesh_size check (masklen(mesh_cidr) <= 30),
  constraint settings_pool_prefix check (client_pool_prefix between masklen(client_supernet) and 30),
  constraint settings_disjoint check (not (mesh_cidr && client_supernet))
);
insert into relaynet.settings default values;

-- Topology revision, one row. Every mutating call locks this row first (select ... for update), which
-- serialises all changes; each topology event bumps revision by one. updated_at is the time of the
-- latest revision (clock_timestamp(), i.e. when it was made inside its transaction).
create table relaynet.topology (
  id boolean primary key default true check (id),
  revision bigint not null default 0 check (revision >= 0),
  updated_at timestamptz not null default clock_timestamp()
);
insert into relaynet.topology default values;

create table relaynet.relays (
  id text primary key check (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  name text not null check (char_length(name) between 1 and 128),
  region text not null check (region ~ '^[a-z0-9-]{1,64}$'),
  public_key text not null check (public_key ~ '^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$'),
  endpoint text not null check (char_length(endpoint) between 3 and 261),
  mesh_address inet check (family(mesh_address) = 4 and masklen(mesh_address) = 32),
  client_pool cidr check (family(client_pool) = 4),
  status text not null check (status in ('active', 'left')),
  admitted_at timestamptz not null default clock_timestamp(),
  last_seen timestamptz not null default clock_timestamp(),
  left_at timestamptz,
  -- An active relay holds its addresses; a relay that left holds none (they are free again).
  constraint relays_addresses_held check ((status = 'active') = (mesh_address is not null and client_pool is not null)),
  constraint relays_addresses_freed check (status = 'active' or (mesh_address is null and client_pool is null)),
  constraint relays_left_at check ((status = 'left') = (left_at is not null))
);
-- Never allocated twice (safety net under the allocation, which runs with the topology locked).
create unique index relays_mesh_address_key on relaynet.relays (mesh_address) where mesh_address is not null;
create unique index relays_client_pool_key on relaynet.relays (client_pool) where client_pool is not null;
-- WireGuard tells peers apart by key: two active relays never share one.
create unique index relays_active_public_key on relaynet.relays (public_key) where status = 'active';
create index relays_status_idx on relaynet.relays (status, id);

-- Key history: every key a relay has used; valid_to is null for its current key.
create table relaynet.relay_keys (
  relay_id text not null references relaynet.relays (id) on delete cascade,
  public_key text not null,
  valid_from timestamptz not null default clock_timestamp(),
  valid_to timestamptz,
  primary key (relay_id, public_key, valid_from),
  check (valid_to is null or valid_to >= valid_from)
);
create unique index relay_keys_current on relaynet.relay_keys (relay_id) where valid_to is null;

-- The outbox: one signed topology event per revision, no gaps. payload holds the exact JSON text that
-- was signed; signature is base64 Ed25519 over its UTF-8 bytes. The topology publisher copies rows to
-- JetStream in revision order.
create table relaynet.topology_events (
  revision bigint primary key check (revision >= 1),
  event_id uuid not null unique,
  type text not null check (type in ('RelayAdmitted', 'RelayLeft', 'RelayKeyRotated', 'RelayEndpointChanged')),
  subject text not null check (subject ~ '^relaynet\.topology\.[a-z0-9][a-z0-9-]{0,62}\.[a-z-]+$'),
  payload text not null,
  signature text not null,
  created_at timestamptz not null default clock_timestamp()
);

-- The last revision the topology publisher has had acknowledged by JetStream, one row.
create table relaynet.publisher_cursor (
  id boolean primary key default true check (id),
  published_revision bigint not null default 0 check (published_revision >= 0)
);
insert into relaynet.publisher_cursor default values;
