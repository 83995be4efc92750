-- connect-client and switch-exit wait for the entry's confirmation of a session (client-ready). On a
-- PostgreSQL where the functions may LISTEN (RELAYNET_DB_LISTEN=1: a direct or session-mode connection,
-- not a transaction pooler), they are woken by this notification, sent when the transaction that
-- confirms or closes the session commits, instead of finding it by reading the row every 100 ms. The
-- payload is the session id. Without listeners a notification costs nothing.
create function relaynet.notify_client_session() returns trigger
language plpgsql as $$
begin
  if new.confirmed_exit_id is distinct from old.confirmed_exit_id or new.status is distinct from old.status then
    perform pg_notify('relaynet_client_session', new.id::text);
  end if;
  return null;
end;
$$;

create trigger client_sessions_notify
  after update on relaynet.client_sessions
  for each row execute function relaynet.notify_client_session();
