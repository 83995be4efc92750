-- NATS decentralized auth (docs/security.md, "The bus"): the nkey public key (U...) a relay presented
-- at its last admission. register-server and heartbeat issue the relay's NATS user JWTs for this key
-- only; a ban revokes it. Null: the relay registered in token mode.
alter table relaynet.relays add column bus_key text check (bus_key is null or bus_key ~ '^U[A-Z2-7]{55}$');
