-- Private sessions (docs/clients.md, "Private sessions"): the client's tunnel ends at the exit, and the
-- entry forwards its ciphertext there, so the entry never sees its packets and the exit never sees the
-- client's address. The client's address still comes from the entry's pool (unique network-wide).
--
-- mode                 'standard' (the entry terminates the tunnel) or 'private'
-- exit_confirmed_id    a private session's exit that confirmed (client-ready) that it carries the
--                      session's peer; the session is confirmed once both its entry (confirmed_exit_id)
--                      and, when private, its exit confirmed its current exit. Null for standard ones.
alter table relaynet.client_sessions
  add column mode text not null default 'standard' check (mode in ('standard', 'private')),
  add column exit_confirmed_id text,
  add constraint client_sessions_exit_confirmed check (mode = 'private' or exit_confirmed_id is null);

-- Relays keep the sessions that concern them: entering there, or private ones leaving there.
create index client_sessions_open_private_exit on relaynet.client_sessions (exit_id) where status = 'open' and mode = 'private';

-- A waiting connect-client or switch-exit is woken by the exit's confirmation too.
create or replace function relaynet.notify_client_session() returns trigger
language plpgsql as $$
begin
  if new.confirmed_exit_id is distinct from old.confirmed_exit_id or new.status is distinct from old.status
     or new.exit_confirmed_id is distinct from old.exit_confirmed_id then
    perform pg_notify('relaynet_client_session', new.id::text);
  end if;
  return null;
end;
$$;
