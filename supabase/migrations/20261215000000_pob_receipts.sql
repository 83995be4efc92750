-- Proof-of-Bandwidth traffic receipts (issue 17; docs/proof-of-bandwidth.md). Once per epoch each relay
-- hands in (submit-receipts) one receipt per mesh link (the bytes it sent to and received from that peer)
-- and the Merkle root of them it signed with its identity key. The control plane keeps both, so that any
-- receipt can be proved part of what the relay signed, and settles each epoch from them.
alter table relaynet.settings
  add column pob_epoch_seconds integer not null default 300,
  add constraint settings_pob_epoch check (pob_epoch_seconds between 10 and 86400);

create table relaynet.pob_roots (
  relay_id text not null references relaynet.relays (id) on delete cascade,
  epoch bigint not null check (epoch >= 0),
  epoch_seconds integer not null check (epoch_seconds > 0),
  count integer not null check (count >= 0),
  root text not null check (root ~ '^[0-9a-f]{64}$'),
  signature text not null check (length(signature) <= 200),
  received_at timestamptz not null default clock_timestamp(),
  primary key (relay_id, epoch)
);

create table relaynet.pob_receipts (
  relay_id text not null,
  epoch bigint not null,
  peer_id text not null,
  tx_bytes bigint not null check (tx_bytes >= 0),
  rx_bytes bigint not null check (rx_bytes >= 0),
  primary key (relay_id, epoch, peer_id),
  foreign key (relay_id, epoch) references relaynet.pob_roots on delete cascade
);

-- Settling an epoch reads both ends of every link: by epoch.
create index pob_receipts_epoch on relaynet.pob_receipts (epoch, peer_id);
