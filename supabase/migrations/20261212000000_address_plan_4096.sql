-- The default address plan admits 4,096 relays (issue 15): client pools of /23 (509 clients each) in
-- client_supernet 100.96.0.0/11, instead of 2,048 pools of /22. Mesh addresses (100.64.0.0/16) were
-- never the limit. A database whose relays hold no pool yet takes the new default; one that has
-- allocated pools keeps its plan (change it with an update: pools already held keep their size, and
-- new ones are allocated around them, docs/control-plane.md "Address plan").
alter table relaynet.settings alter column client_pool_prefix set default 23;
update relaynet.settings set client_pool_prefix = 23
  where client_pool_prefix = 22 and not exists (select 1 from relaynet.relays where client_pool is not null);
