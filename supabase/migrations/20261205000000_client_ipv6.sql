-- Clients' IPv6 (docs/clients.md, "IPv6"). A client's IPv6 address is its IPv4 address in the low
-- 32 bits of client_prefix6 (a /96): nothing new is allocated. Null: clients get IPv4 only. Relays
-- must be started with the same prefix (`relay-core run --client-prefix6`).
alter table relaynet.settings
  add column client_prefix6 cidr default 'fd64::/96',
  add constraint settings_client_prefix6 check (client_prefix6 is null or (family(client_prefix6) = 6 and masklen(client_prefix6) = 96));

-- Whether clients' IPv6 may leave at a relay (it has IPv6 to the internet), as it registered.
alter table relaynet.relays add column exit_ipv6 boolean not null default false;

alter table relaynet.topology_events drop constraint topology_events_type_check;
alter table relaynet.topology_events add constraint topology_events_type_check check (type in (
  'RelayAdmitted', 'RelayLeft', 'RelayKeyRotated', 'RelayEndpointChanged', 'RelayCapabilitiesChanged',
  'ClientSessionOpened', 'ClientSessionExitChanged', 'ClientSessionClosed'
));
