-- Relay identities (issue 14, docs/events.md "Signed relay events"): each relay's Ed25519 identity
-- public key as it registered it (base64 of 32 bytes), announced in its RelayAdmitted event (v2).
-- Null: a relay admitted before identities, or one that sent none. Never a private key.
alter table relaynet.relays
  add column identity_key text,
  add constraint relays_identity_key check (identity_key is null or identity_key ~ '^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$');
